/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Finds the bmap that belongs to @image_path as bmaptool does: IMAGE.bmap,
 * then with one extension stripped at a time (disk.img.xz -> disk.img.bmap,
 * disk.bmap). Returns NULL and sets BMAP_ERROR_NO_BMAP naming every path
 * tried when none exists. */
char *bmap_locate_for_image (const char *image_path, GError **error);

G_END_DECLS
