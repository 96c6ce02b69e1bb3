/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Private to libbmap: an xz file in a regular file, decoded block by block
 * from its index, so that blocks holding nothing the bmap maps are not
 * decoded at all and the others are decoded by several threads in bounded
 * memory. */

#include <glib.h>

#include "bmap-format.h"

G_BEGIN_DECLS

typedef struct _BmapXzBlocks BmapXzBlocks;

/* Reads the index of the xz file @fd (all its streams). NULL when the file
 * cannot be read this way (no valid index: truncated, trailing garbage,
 * too many blocks); the caller then decodes it as a stream, which reports
 * what is wrong. */
BmapXzBlocks *bmap_xz_blocks_new (int fd, const char *name);
void bmap_xz_blocks_free (BmapXzBlocks *xb);

/* Before the first read: only blocks that hold a byte of @map's ranges are
 * decoded; the others can only be skipped. Without it every block is. */
void bmap_xz_blocks_set_wanted (BmapXzBlocks *xb, const BmapMap *map);

/* As a decoder's read and skip (bmap-decoder.h). */
gssize bmap_xz_blocks_read (BmapXzBlocks *xb, guint8 *buf, gsize len, GError **error);
gssize bmap_xz_blocks_skip (BmapXzBlocks *xb, guint64 len, GError **error);

/* Compressed size of the file: what a full read consumed. */
guint64 bmap_xz_blocks_get_file_size (BmapXzBlocks *xb);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapXzBlocks, bmap_xz_blocks_free)

G_END_DECLS
