/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Finds the bmap that belongs to @image_path as bmaptool does: IMAGE.bmap,
 * then with one extension stripped at a time (disk.img.xz -> disk.img.bmap,
 * disk.bmap). Returns NULL and sets BMAP_ERROR_NO_BMAP naming every path
 * tried when none exists. */
char *bmap_locate_for_image (const char *image_path, GError **error);

/* The names bmaptool tries for the bmap of @path, in its order: @path with
 * ".bmap" appended, then with one extension stripped at a time, as Python's
 * os.path.splitext() strips them (disk.img.xz.bmap, disk.img.bmap,
 * disk.bmap). For a URL, give its path alone. */
GPtrArray *bmap_locate_candidates (const char *path);

G_END_DECLS
