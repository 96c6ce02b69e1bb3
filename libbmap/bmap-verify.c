/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "bmap-copy.h"
#include "bmap-error.h"
#include "bmap-io.h"

/* O_DIRECT wants offsets, lengths and buffers aligned to the logical block
 * size; 4096 covers every device in use. */
#define ALIGN    ((guint64) 4096)
#define BUF_SIZE ((gsize) 4 * 1024 * 1024)

gboolean
bmap_verify_fd (int fd, const char *name, const BmapMap *map, BmapProgressFunc progress_func,
                gpointer progress_data, GCancellable *cancellable, GError **error)
{
  g_autoptr (BmapHasher) hasher = NULL;
  BmapProgressReporter reporter;
  gsize digest_len = bmap_checksum_type_get_length (map->range_checksum);
  guint64 done = 0;
  guint8 *buf = NULL;
  int rfd;
  gboolean ok = TRUE;

  g_return_val_if_fail (map->range_checksum != BMAP_CHECKSUM_NONE, FALSE);

  rfd = bmap_open_uncached (fd, name, error);
  if (rfd < 0)
    return FALSE;
  if (posix_memalign ((void **) &buf, ALIGN, BUF_SIZE) != 0)
    g_error ("out of memory allocating the verify buffer");

  hasher = bmap_hasher_new (map->range_checksum);
  bmap_progress_reporter_init (&reporter, progress_func, progress_data,
                               bmap_map_get_mapped_bytes (map));
  bmap_progress_reporter_update (&reporter, BMAP_PHASE_VERIFYING, 0, TRUE);

  for (guint i = 0; ok && i < bmap_map_get_n_ranges (map); i++) {
    const BmapRange *range = bmap_map_get_range (map, i);
    guint64 start = range->first * map->block_size;
    guint64 end = MIN ((range->last + 1) * map->block_size, map->image_size);
    guint8 got[BMAP_CHECKSUM_MAX_LEN];

    for (guint64 pos = start; ok && pos < end;) {
      guint64 aligned = pos - pos % ALIGN;
      gsize skip = (gsize) (pos - aligned);
      gsize want = (gsize) MIN ((guint64) BUF_SIZE - skip, end - pos);
      gsize len = (gsize) (((skip + want + ALIGN - 1) / ALIGN) * ALIGN);
      gsize n = 0;

      if (bmap_error_set_if_cancelled (cancellable, error)) {
        ok = FALSE;
        break;
      }
      ok = bmap_pread_full (rfd, buf, len, aligned, name, &n, error);
      if (ok && n < skip + want) {
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                     "%s: reading back ended at byte %" G_GUINT64_FORMAT
                     ", before the end of the image",
                     name, aligned + n);
        ok = FALSE;
      }
      if (!ok)
        break;
      bmap_hasher_update (hasher, buf + skip, want);
      pos += want;
      done += want;
      bmap_progress_reporter_update (&reporter, BMAP_PHASE_VERIFYING, done, FALSE);
    }
    if (!ok)
      break;

    bmap_hasher_finish (hasher, got);
    if (memcmp (got, range->digest, digest_len) != 0) {
      char want_hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];
      char got_hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];

      bmap_checksum_to_hex (range->digest, digest_len, want_hex);
      bmap_checksum_to_hex (got, digest_len, got_hex);
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_CHECKSUM_MISMATCH,
                   "%s: data read back differs from the image in blocks %" G_GUINT64_FORMAT
                   "-%" G_GUINT64_FORMAT ": expected %s, got %s",
                   name, range->first, range->last, want_hex, got_hex);
      ok = FALSE;
    }
  }
  if (ok)
    bmap_progress_reporter_update (&reporter, BMAP_PHASE_VERIFYING, done, TRUE);

  free (buf);
  close (rfd);
  return ok;
}
