/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-io.h"
#include "bmap-mapping.h"

/* Room for about 4,600 extents per FIEMAP call, as the reference tool. */
#define FIEMAP_BUFFER_SIZE (256 * 1024)
/* The zero scan reads this much at a time (rounded down to whole blocks). */
#define ZERO_SCAN_CHUNK_SIZE (4 * 1024 * 1024)
#define DEFAULT_BLOCK_SIZE   4096

const char *
bmap_mapping_method_to_string (BmapMappingMethod method)
{
  switch (method) {
    case BMAP_MAPPING_AUTO:
      return "auto";
    case BMAP_MAPPING_FIEMAP:
      return "fiemap";
    case BMAP_MAPPING_SEEK:
      return "seek";
    case BMAP_MAPPING_ZERO_SCAN:
      return "zero-scan";
    default:
      return "unknown";
  }
}

gboolean
bmap_mapping_method_from_string (const char *str, BmapMappingMethod *method)
{
  static const struct {
    const char *name;
    BmapMappingMethod method;
  } names[] = {
    { "auto", BMAP_MAPPING_AUTO },           { "fiemap", BMAP_MAPPING_FIEMAP },
    { "seek", BMAP_MAPPING_SEEK },           { "zero-scan", BMAP_MAPPING_ZERO_SCAN },
    { "zero_scan", BMAP_MAPPING_ZERO_SCAN },
  };

  g_return_val_if_fail (method != NULL, FALSE);
  if (str == NULL)
    return FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS (names); i++) {
    if (g_ascii_strcasecmp (str, names[i].name) == 0) {
      *method = names[i].method;
      return TRUE;
    }
  }
  return FALSE;
}

guint32
bmap_mapping_get_block_size (int fd)
{
  int bsize = 0;

  if (ioctl (fd, FIGETBSZ, &bsize) < 0 || bsize <= 0)
    return DEFAULT_BLOCK_SIZE;
  return (guint32) bsize;
}

/* Appends blocks first..last to @ranges, merging with the previous range
 * when they touch or overlap. Callers add in increasing order of @first. */
static void
ranges_add (GArray *ranges, guint64 first, guint64 last)
{
  if (ranges->len > 0) {
    BmapBlockRange *prev = &g_array_index (ranges, BmapBlockRange, ranges->len - 1);

    if (first <= prev->last + 1) {
      prev->last = MAX (prev->last, last);
      return;
    }
  }
  g_array_append_val (ranges, ((BmapBlockRange){ .first = first, .last = last }));
}

/* Adds the bytes [start, end) of the image, rounded outward to whole blocks
 * and clamped to the image's last block. */
static void
ranges_add_bytes (GArray *ranges, guint64 start, guint64 end, guint64 image_size,
                  guint32 block_size)
{
  guint64 last_block = (image_size - 1) / block_size;

  end = MIN (end, image_size);
  if (start >= end)
    return;
  ranges_add (ranges, start / block_size, MIN ((end - 1) / block_size, last_block));
}

static gboolean
errno_means_unsupported (int errsv)
{
  return errsv == EOPNOTSUPP || errsv == ENOTTY || errsv == EINVAL || errsv == ENOSYS;
}

static gboolean
map_fiemap (int fd, guint64 image_size, guint32 block_size, GArray *ranges,
            GCancellable *cancellable, GError **error)
{
  const guint32 n_extents
      = (FIEMAP_BUFFER_SIZE - sizeof (struct fiemap)) / sizeof (struct fiemap_extent);
  g_autofree struct fiemap *fm
      = g_malloc0 (sizeof (struct fiemap) + n_extents * sizeof (struct fiemap_extent));
  guint64 pos = 0;

  while (pos < image_size) {
    gboolean done = FALSE;
    guint64 next = pos;

    if (bmap_error_set_if_cancelled (cancellable, error))
      return FALSE;

    memset (fm, 0, sizeof (struct fiemap));
    fm->fm_start = pos;
    fm->fm_length = image_size - pos;
    /* Early FIEMAP implementations missed dirty data: sync first. */
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = n_extents;
    if (ioctl (fd, FS_IOC_FIEMAP, fm) < 0) {
      int errsv = errno;

      if (errno_means_unsupported (errsv)) {
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED, "FIEMAP is not supported here: %s",
                     g_strerror (errsv));
        return FALSE;
      }
      bmap_error_set_errno (error, errsv, "FIEMAP at offset %" G_GUINT64_FORMAT, pos);
      return FALSE;
    }
    if (fm->fm_mapped_extents == 0)
      break;

    for (guint32 i = 0; i < fm->fm_mapped_extents; i++) {
      const struct fiemap_extent *ext = &fm->fm_extents[i];

      /* Unwritten and delayed extents count as mapped, as in the reference
       * tool: their blocks belong to the file. */
      if (ext->fe_logical >= image_size) {
        done = TRUE;
        break;
      }
      ranges_add_bytes (ranges, ext->fe_logical, ext->fe_logical + ext->fe_length, image_size,
                        block_size);
      next = MAX (next, ext->fe_logical + ext->fe_length);
      if (ext->fe_flags & FIEMAP_EXTENT_LAST)
        done = TRUE;
    }
    /* A kernel that does not move forward would loop forever. */
    if (done || next <= pos)
      break;
    pos = next;
  }
  return TRUE;
}

static gboolean
map_seek (int fd, guint64 image_size, guint32 block_size, GArray *ranges, GCancellable *cancellable,
          GError **error)
{
  guint64 pos = 0;

  while (pos < image_size) {
    off_t data, hole;

    if (bmap_error_set_if_cancelled (cancellable, error))
      return FALSE;

    data = lseek (fd, (off_t) pos, SEEK_DATA);
    if (data < 0) {
      int errsv = errno;

      if (errsv == ENXIO) /* no data after pos */
        break;
      if (errno_means_unsupported (errsv) || errsv == ESPIPE) {
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED,
                     "SEEK_DATA is not supported here: %s", g_strerror (errsv));
        return FALSE;
      }
      bmap_error_set_errno (error, errsv, "SEEK_DATA at offset %" G_GUINT64_FORMAT, pos);
      return FALSE;
    }
    if ((guint64) data >= image_size)
      break;

    hole = lseek (fd, data, SEEK_HOLE);
    if (hole < 0) {
      int errsv = errno;

      if (errsv != ENXIO) {
        bmap_error_set_errno (error, errsv, "SEEK_HOLE at offset %" G_GUINT64_FORMAT,
                              (guint64) data);
        return FALSE;
      }
      hole = (off_t) image_size;
    }
    if (hole <= data) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                   "SEEK_HOLE from offset %" G_GUINT64_FORMAT " went back to %" G_GUINT64_FORMAT,
                   (guint64) data, (guint64) hole);
      return FALSE;
    }
    ranges_add_bytes (ranges, (guint64) data, (guint64) hole, image_size, block_size);
    pos = (guint64) hole;
  }
  return TRUE;
}

static gboolean
buffer_is_zero (const guint8 *buf, gsize len)
{
  static const guint8 zeros[4096];

  while (len > 0) {
    gsize n = MIN (len, sizeof (zeros));

    if (memcmp (buf, zeros, n) != 0)
      return FALSE;
    buf += n;
    len -= n;
  }
  return TRUE;
}

static gboolean
map_zero_scan (int fd, guint64 image_size, guint32 block_size, GArray *ranges,
               GCancellable *cancellable, GError **error)
{
  gsize chunk_size = MAX (1, ZERO_SCAN_CHUNK_SIZE / block_size) * (gsize) block_size;
  g_autofree guint8 *buf = g_malloc (chunk_size);
  guint64 pos = 0;

  (void) posix_fadvise (fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  while (pos < image_size) {
    gsize want = (gsize) MIN ((guint64) chunk_size, image_size - pos);
    gsize got;

    if (bmap_error_set_if_cancelled (cancellable, error))
      return FALSE;

    if (!bmap_pread_full (fd, buf, want, pos, NULL, &got, error))
      return FALSE;
    if (got < want) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                   "unexpected end of file at offset %" G_GUINT64_FORMAT
                   " (image size %" G_GUINT64_FORMAT ")",
                   pos + got, image_size);
      return FALSE;
    }

    /* pos is a multiple of block_size, so blocks line up with the chunk. */
    for (gsize off = 0; off < want; off += block_size) {
      if (!buffer_is_zero (buf + off, MIN ((gsize) block_size, want - off))) {
        guint64 block = (pos + off) / block_size;

        ranges_add (ranges, block, block);
      }
    }
    pos += want;
  }
  return TRUE;
}

typedef gboolean (*MapFunc) (int fd, guint64 image_size, guint32 block_size, GArray *ranges,
                             GCancellable *cancellable, GError **error);

static MapFunc
map_func_for_method (BmapMappingMethod method)
{
  switch (method) {
    case BMAP_MAPPING_FIEMAP:
      return map_fiemap;
    case BMAP_MAPPING_SEEK:
      return map_seek;
    case BMAP_MAPPING_ZERO_SCAN:
      return map_zero_scan;
    case BMAP_MAPPING_AUTO:
    default:
      return NULL;
  }
}

/* Filesystems without SEEK_DATA support fall back to the VFS default, which
 * calls the whole file data. When such a "fully mapped" answer comes for a
 * file that occupies less disk space than its size, the holes were not
 * reported and only reading can find them. */
static gboolean
seek_answer_is_suspect (const struct stat *st, guint64 image_size, guint32 block_size,
                        GArray *ranges)
{
  const BmapBlockRange *r;

  if (!S_ISREG (st->st_mode) || ranges->len != 1)
    return FALSE;
  r = &g_array_index (ranges, BmapBlockRange, 0);
  if (r->first != 0 || r->last != (image_size - 1) / block_size)
    return FALSE;
  return (guint64) st->st_blocks * 512 < image_size;
}

GArray *
bmap_mapping_get (int fd, guint64 image_size, guint32 block_size, BmapMappingMethod method,
                  BmapMappingMethod *used_method, GCancellable *cancellable, GError **error)
{
  static const BmapMappingMethod auto_order[]
      = { BMAP_MAPPING_FIEMAP, BMAP_MAPPING_SEEK, BMAP_MAPPING_ZERO_SCAN };
  g_autoptr (GArray) ranges = g_array_new (FALSE, FALSE, sizeof (BmapBlockRange));
  struct stat st;

  g_return_val_if_fail (fd >= 0, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (block_size == 0) {
    g_set_error_literal (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "block size is 0");
    return NULL;
  }
  if (fstat (fd, &st) < 0) {
    bmap_error_set_errno (error, errno, "fstat");
    return NULL;
  }

  if (method != BMAP_MAPPING_AUTO) {
    MapFunc func = map_func_for_method (method);

    if (func == NULL) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "unknown mapping method %d",
                   (int) method);
      return NULL;
    }
    if (image_size > 0 && !func (fd, image_size, block_size, ranges, cancellable, error))
      return NULL;
    if (used_method != NULL)
      *used_method = method;
    return g_steal_pointer (&ranges);
  }

  /* Block devices have no extents to ask about; reading is the only way. */
  for (gsize i = S_ISBLK (st.st_mode) ? G_N_ELEMENTS (auto_order) - 1 : 0;
       i < G_N_ELEMENTS (auto_order); i++) {
    g_autoptr (GError) local_error = NULL;
    BmapMappingMethod m = auto_order[i];

    g_array_set_size (ranges, 0);
    if (image_size > 0
        && !map_func_for_method (m) (fd, image_size, block_size, ranges, cancellable,
                                     &local_error)) {
      if (g_error_matches (local_error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED)) {
        g_debug ("mapping: %s: %s, trying the next method", bmap_mapping_method_to_string (m),
                 local_error->message);
        continue;
      }
      g_propagate_error (error, g_steal_pointer (&local_error));
      return NULL;
    }
    if (m == BMAP_MAPPING_SEEK && seek_answer_is_suspect (&st, image_size, block_size, ranges)) {
      g_debug ("mapping: SEEK_DATA says fully mapped but the file is sparse, scanning");
      continue;
    }
    if (used_method != NULL)
      *used_method = m;
    return g_steal_pointer (&ranges);
  }

  /* Not reached in practice: the zero scan fails only with real errors. */
  g_set_error_literal (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED, "no mapping method works here");
  return NULL;
}
