/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
  BMAP_MAPPING_AUTO,      /* FIEMAP, then SEEK_DATA/SEEK_HOLE, then zero scan */
  BMAP_MAPPING_FIEMAP,    /* FIEMAP with FIEMAP_FLAG_SYNC only */
  BMAP_MAPPING_SEEK,      /* SEEK_DATA/SEEK_HOLE only */
  BMAP_MAPPING_ZERO_SCAN, /* read everything; all-zero blocks are holes */
} BmapMappingMethod;

typedef struct {
  guint64 first; /* block, inclusive */
  guint64 last;  /* block, inclusive */
} BmapBlockRange;

const char *bmap_mapping_method_to_string (BmapMappingMethod method);
gboolean bmap_mapping_method_from_string (const char *str, BmapMappingMethod *method);

/* The filesystem's block size for @fd (FIGETBSZ), 4096 when it cannot say. */
guint32 bmap_mapping_get_block_size (int fd);

/* Lists the mapped blocks of the first @image_size bytes of @fd in blocks of
 * @block_size: sorted, merged, clamped to ceil(image_size / block_size).
 * Returns a GArray of BmapBlockRange, and in @used_method what worked. */
GArray *
bmap_mapping_get (int fd, guint64 image_size, guint32 block_size, BmapMappingMethod method,
                  BmapMappingMethod *used_method, GCancellable *cancellable, GError **error);

G_END_DECLS
