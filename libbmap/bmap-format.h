/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

#include "bmap-checksum.h"

G_BEGIN_DECLS

/* Largest bmap file we read. Bigger files are refused with BadBmap (the
 * daemon applies a smaller limit and answers Limit). */
#define BMAP_FORMAT_MAX_FILE_SIZE (64 * 1024 * 1024)

/* One <Range>: blocks first..last, both inclusive. @digest holds
 * bmap_checksum_type_get_length (map->range_checksum) bytes of the range's
 * checksum, where the image's last block counts only up to ImageSize. */
typedef struct {
  guint64 first;
  guint64 last;
  guint8 digest[BMAP_CHECKSUM_MAX_LEN];
} BmapRange;

typedef struct {
  guint version_major;
  guint version_minor;
  guint64 image_size;
  guint32 block_size;
  guint64 blocks_count;
  guint64 mapped_blocks_count;
  /* Checksum of each range: NONE for 1.0, SHA1 for 1.1-1.3, ChecksumType
   * for 1.4 and 2.x. */
  BmapChecksumType range_checksum;
  /* Checksum of the file itself (BmapFileSHA1 / BmapFileChecksum), NONE when
   * the file carries none. Verified by the loader. */
  BmapChecksumType file_checksum;
  GArray *ranges; /* BmapRange, sorted, not overlapping */
} BmapMap;

BmapMap *bmap_map_new (guint64 image_size, guint32 block_size, BmapChecksumType range_checksum);
void bmap_map_free (BmapMap *map);

/* Appends blocks first..last (with @digest of the right length, or NULL when
 * range_checksum is NONE) and updates mapped_blocks_count. */
void bmap_map_add_range (BmapMap *map, guint64 first, guint64 last, const guint8 *digest);

/* Parses a bmap of any version from 1.0 to 2.x and checks everything it
 * says: the version, the sizes, every range, every checksum's length and
 * digits, and the file's own checksum. Errors are BMAP_ERROR_BAD_BMAP and
 * name the element, line or range at fault. @name (a path or "bmap") is
 * used in messages. */
BmapMap *bmap_map_load_data (const char *data, gsize len, const char *name, GError **error);
/* Reads @fd to its end (at most BMAP_FORMAT_MAX_FILE_SIZE) and parses it. */
BmapMap *bmap_map_load_fd (int fd, const char *name, GError **error);
BmapMap *bmap_map_load_file (const char *path, GError **error);

/* Serializes as version 2.0 in the reference tool's layout and element order
 * (comments included). Ranges carry checksums of type range_checksum; with
 * NONE (bmaptool create --no-checksum) they carry none, but the file still
 * has ChecksumType sha256 and a sha256 file checksum, as bmaptool writes. */
char *bmap_map_to_xml (const BmapMap *map, gsize *len);
gboolean bmap_map_write_fd (const BmapMap *map, int fd, GError **error);

/* Bytes of the image that the range covers (the last block may be partial). */
guint64 bmap_map_range_bytes (const BmapMap *map, const BmapRange *range);
/* Sum of bmap_map_range_bytes() over all ranges. */
guint64 bmap_map_get_mapped_bytes (const BmapMap *map);
static inline guint
bmap_map_get_n_ranges (const BmapMap *map)
{
  return map->ranges->len;
}
static inline const BmapRange *
bmap_map_get_range (const BmapMap *map, guint i)
{
  return &g_array_index (map->ranges, BmapRange, i);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapMap, bmap_map_free)

G_END_DECLS
