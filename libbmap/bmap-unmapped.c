/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include "bmap-error.h"
#include "bmap-unmapped.h"

/* Discard and zero-out want offsets aligned to the logical block size;
 * 4096 covers every device in use. A piece is small enough that a cancel
 * or the time limit is seen within a second or so on a slow card. */
#define ALIGN ((guint64) 4096)
#define PIECE ((guint64) 64 * 1024 * 1024)

typedef gboolean (*GapFunc) (BmapTarget *target, guint64 start, guint64 end, gpointer user_data,
                             GError **error);

/* Calls @func on every gap between mapped ranges, up to the image's end;
 * stops at the first FALSE. */
static gboolean
foreach_gap (BmapTarget *target, const BmapMap *map, GapFunc func, gpointer user_data,
             GError **error)
{
  guint64 pos = 0;

  for (guint i = 0; i <= bmap_map_get_n_ranges (map); i++) {
    guint64 start = map->image_size;
    guint64 end = map->image_size;

    if (i < bmap_map_get_n_ranges (map)) {
      const BmapRange *range = bmap_map_get_range (map, i);

      start = MIN (range->first * map->block_size, map->image_size);
      end = MIN ((range->last + 1) * map->block_size, map->image_size);
    }
    if (start > pos && !func (target, pos, start, user_data, error))
      return FALSE;
    pos = MAX (pos, end);
  }
  return TRUE;
}

/* ---- discard ----------------------------------------------------------- */

typedef struct {
  GCancellable *cancellable;
  gint64 deadline;
  guint64 done;
  int refused_errno;
  gboolean timed_out;
} DiscardState;

static int
discard_piece (BmapTarget *target, guint64 start, guint64 len)
{
  int fd = bmap_target_get_fd (target);

  if (bmap_target_get_kind (target) == BMAP_TARGET_BLOCK_DEVICE) {
    guint64 range[2] = { start, len };

    return ioctl (fd, BLKDISCARD, range) < 0 ? errno : 0;
  }
  return fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) start, (off_t) len) < 0
             ? errno
             : 0;
}

static gboolean
discard_gap (BmapTarget *target, guint64 start, guint64 end, gpointer user_data, GError **error)
{
  DiscardState *st = user_data;

  /* Only whole aligned blocks: what is left at either side stays. */
  start = (start + ALIGN - 1) / ALIGN * ALIGN;
  end = end / ALIGN * ALIGN;
  while (start < end && st->refused_errno == 0 && !st->timed_out) {
    guint64 len = MIN (PIECE, end - start);
    int errsv;

    if (bmap_error_set_if_cancelled (st->cancellable, error))
      return FALSE;
    if (g_get_monotonic_time () > st->deadline) {
      st->timed_out = TRUE;
      break;
    }
    errsv = discard_piece (target, start, len);
    if (errsv == EINTR)
      continue;
    if (errsv != 0) {
      st->refused_errno = errsv;
      break;
    }
    st->done += len;
    start += len;
  }
  return TRUE;
}

gboolean
bmap_unmapped_discard (BmapTarget *target, const BmapMap *map, GCancellable *cancellable,
                       guint64 *bytes_done, int *refused_errno, gboolean *timed_out, GError **error)
{
  DiscardState st = {
    .cancellable = cancellable,
    .deadline = g_get_monotonic_time () + BMAP_DISCARD_TIME_LIMIT_US,
  };
  gboolean ok = TRUE;

  if (bmap_target_get_kind (target) != BMAP_TARGET_NULL)
    ok = foreach_gap (target, map, discard_gap, &st, error);
  *bytes_done = st.done;
  *refused_errno = st.refused_errno;
  *timed_out = st.timed_out;
  return ok;
}

/* ---- zero-out ---------------------------------------------------------- */

typedef struct {
  GCancellable *cancellable;
  guint64 done;
  gboolean no_write_zeroes; /* the device has no write-zeroes command */
} ZeroState;

static gboolean
write_zeros (BmapTarget *target, guint64 start, guint64 end, GError **error)
{
  static const guint8 zeros[ALIGN];

  for (guint64 pos = start; pos < end;) {
    gsize n = (gsize) MIN (end - pos, ALIGN);

    if (!bmap_target_write (target, pos, zeros, n, error))
      return FALSE;
    pos += n;
  }
  return TRUE;
}

static gboolean
zero_piece (BmapTarget *target, ZeroState *st, guint64 start, guint64 len, GError **error)
{
  int fd = bmap_target_get_fd (target);

  /* On a block device a punched hole is the write-zeroes command, allowed
   * to unmap and never falling back to writing; a regular file gets a
   * hole. */
  if (!st->no_write_zeroes) {
    if (fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) start, (off_t) len) == 0)
      return TRUE;
    if (errno != EOPNOTSUPP && errno != EINVAL && errno != ENOTTY) {
      bmap_error_set_errno (error, errno,
                            "%s: cannot zero bytes %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT,
                            bmap_target_get_name (target), start, start + len - 1);
      return FALSE;
    }
    st->no_write_zeroes = TRUE;
  }
  if (bmap_target_get_kind (target) == BMAP_TARGET_BLOCK_DEVICE) {
    guint64 range[2] = { start, len };

    if (ioctl (fd, BLKZEROOUT, range) == 0)
      return TRUE;
    bmap_error_set_errno (error, errno,
                          "%s: cannot zero bytes %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT,
                          bmap_target_get_name (target), start, start + len - 1);
    return FALSE;
  }
  return write_zeros (target, start, start + len, error);
}

static gboolean
zero_gap (BmapTarget *target, guint64 start, guint64 end, gpointer user_data, GError **error)
{
  ZeroState *st = user_data;
  guint64 astart = MIN ((start + ALIGN - 1) / ALIGN * ALIGN, end);
  guint64 aend = MAX (end / ALIGN * ALIGN, astart);

  /* The unaligned bits at either side are written. */
  if (!write_zeros (target, start, astart, error) || !write_zeros (target, aend, end, error))
    return FALSE;
  for (guint64 pos = astart; pos < aend;) {
    guint64 len = MIN (PIECE, aend - pos);

    if (bmap_error_set_if_cancelled (st->cancellable, error)
        || !zero_piece (target, st, pos, len, error))
      return FALSE;
    pos += len;
  }
  st->done += end - start;
  return TRUE;
}

gboolean
bmap_unmapped_zero (BmapTarget *target, const BmapMap *map, GCancellable *cancellable,
                    guint64 *bytes_done, GError **error)
{
  ZeroState st = { .cancellable = cancellable };
  gboolean ok = TRUE;

  if (bmap_target_get_kind (target) != BMAP_TARGET_NULL)
    ok = foreach_gap (target, map, zero_gap, &st, error);
  *bytes_done = st.done;
  return ok;
}
