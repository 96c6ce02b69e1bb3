/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-target.h"

/* Dirty data on a block device is written back in windows while the copy
 * goes on, and at most two windows are in flight: the final sync is short
 * and the progress shown is the progress of the device, not of the page
 * cache. A window is about a quarter of a second of the device's measured
 * speed, so that a slow or stalled device holds little the kernel must
 * write before a cancelled copy can close it (the last close of a block
 * device waits for all of it); 32 MiB at most, as measured fastest on
 * fast devices. Regular files are left to the kernel's writeback, which
 * measured as fast or faster there. */
#define WRITEBACK_WINDOW_MAX  ((guint64) 32 * 1024 * 1024)
#define WRITEBACK_WINDOW_MIN  ((guint64) 64 * 1024)
#define WRITEBACK_WINDOW_USEC (G_USEC_PER_SEC / 4)

struct _BmapTarget {
  char *name;
  char *path; /* NULL when created for an fd */
  int fd;     /* -1 until a new regular file is created by prepare */
  /* A regular file opened again with O_DIRECT: aligned writes skip the
   * page cache, which on two cores cost as much CPU as decoding (the
   * kernel's copying and writeback); the rest goes through @fd. */
  int direct_fd;
  BmapTargetKind kind;
  guint64 size;
  gboolean exists;
  gboolean prepared;
  gboolean size_known;
  gboolean keep_content;
  /* Writeback windows on block devices: [wb_prev, wb_start) is being
   * written back, [wb_start, wb_end) is dirty. */
  guint64 wb_prev;
  guint64 wb_start;
  guint64 wb_end;
  guint64 wb_prev_bytes; /* bytes written in [wb_prev, wb_start) */
  guint64 wb_bytes;      /* bytes written in [wb_start, wb_end) */
  guint64 wb_window;     /* bytes a window holds now */
  gint64 wb_time;        /* when the last wait ended */
  GCancellable *cancellable;
};

static BmapTarget *
target_new (const char *name)
{
  BmapTarget *target = g_new0 (BmapTarget, 1);

  target->name = g_strdup (name);
  target->fd = -1;
  target->direct_fd = -1;
  target->wb_window = WRITEBACK_WINDOW_MIN;
  return target;
}

void
bmap_target_free (BmapTarget *target)
{
  if (target == NULL)
    return;
  if (target->fd >= 0)
    close (target->fd);
  if (target->direct_fd >= 0)
    close (target->direct_fd);
  g_clear_object (&target->cancellable);
  g_free (target->name);
  g_free (target->path);
  g_free (target);
}

static gboolean
setup_block_device (BmapTarget *target, GError **error)
{
  guint64 size = 0;
  int ro = 0;

  if (ioctl (target->fd, BLKGETSIZE64, &size) < 0) {
    bmap_error_set_errno (error, errno, "%s: cannot read the device size", target->name);
    return FALSE;
  }
  if (ioctl (target->fd, BLKROGET, &ro) == 0 && ro) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_READ_ONLY, "%s: device is read-only", target->name);
    return FALSE;
  }
  target->kind = BMAP_TARGET_BLOCK_DEVICE;
  target->size = size;
  return TRUE;
}

static gboolean
classify (BmapTarget *target, const struct stat *st, GError **error)
{
  if (S_ISREG (st->st_mode)) {
    target->kind = BMAP_TARGET_FILE;
    return TRUE;
  }
  if (S_ISBLK (st->st_mode)) {
    target->kind = BMAP_TARGET_BLOCK_DEVICE;
    return TRUE;
  }
  if (S_ISCHR (st->st_mode) && major (st->st_rdev) == 1 && minor (st->st_rdev) == 3) {
    target->kind = BMAP_TARGET_NULL;
    return TRUE;
  }
  if (S_ISDIR (st->st_mode)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: is a directory, not a file or a block device", target->name);
    return FALSE;
  }
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED,
               "%s: cannot write an image here: not a regular file, a block device or /dev/null",
               target->name);
  return FALSE;
}

BmapTarget *
bmap_target_open (const char *path, GError **error)
{
  g_autoptr (BmapTarget) target = target_new (path);
  struct stat st;

  target->path = g_strdup (path);
  if (stat (path, &st) < 0) {
    g_autofree char *dir = NULL;

    if (errno != ENOENT) {
      bmap_error_set_errno (error, errno, "%s", path);
      return NULL;
    }
    /* A new regular file: check now that it could be created, but create
     * it only once every other check has passed. */
    dir = g_path_get_dirname (path);
    if (access (dir, W_OK | X_OK) < 0) {
      bmap_error_set_errno (error, errno, "%s: cannot create a file in %s", path, dir);
      return NULL;
    }
    target->kind = BMAP_TARGET_FILE;
    return g_steal_pointer (&target);
  }

  target->exists = TRUE;
  if (!classify (target, &st, error))
    return NULL;

  switch (target->kind) {
    case BMAP_TARGET_FILE:
      /* Opened without O_TRUNC: nothing changes before prepare(). */
      target->fd = open (path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
      break;
    case BMAP_TARGET_BLOCK_DEVICE:
      /* O_EXCL on a block device fails while a filesystem on it is mounted
       * or another program holds it exclusively. */
      target->fd = open (path, O_WRONLY | O_EXCL | O_CLOEXEC | O_NOCTTY);
      if (target->fd < 0 && errno == EBUSY) {
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                     "%s: device is busy: a filesystem on it is mounted or another program "
                     "holds it open exclusively",
                     path);
        return NULL;
      }
      break;
    case BMAP_TARGET_NULL:
    default:
      target->fd = open (path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
      break;
  }
  if (target->fd < 0) {
    bmap_error_set_errno (error, errno, "%s: cannot open for writing", path);
    return NULL;
  }
  if (target->kind == BMAP_TARGET_BLOCK_DEVICE && !setup_block_device (target, error))
    return NULL;
  return g_steal_pointer (&target);
}

BmapTarget *
bmap_target_new_for_fd (int fd, const char *name, GError **error)
{
  g_autoptr (BmapTarget) target = target_new (name);
  struct stat st;

  target->fd = fd;
  target->exists = TRUE;
  if (fstat (fd, &st) < 0) {
    bmap_error_set_errno (error, errno, "%s", name);
    return NULL;
  }
  if (!classify (target, &st, error))
    return NULL;
  if (target->kind == BMAP_TARGET_BLOCK_DEVICE && !setup_block_device (target, error))
    return NULL;
  return g_steal_pointer (&target);
}

void
bmap_target_set_cancellable (BmapTarget *target, GCancellable *cancellable)
{
  g_set_object (&target->cancellable, cancellable);
}

void
bmap_target_set_keep_content (BmapTarget *target, gboolean keep_content)
{
  g_return_if_fail (!target->prepared);
  target->keep_content = keep_content;
}

BmapTargetKind
bmap_target_get_kind (BmapTarget *target)
{
  return target->kind;
}

const char *
bmap_target_get_name (BmapTarget *target)
{
  return target->name;
}

int
bmap_target_get_fd (BmapTarget *target)
{
  return target->fd;
}

guint64
bmap_target_get_size (BmapTarget *target)
{
  return target->kind == BMAP_TARGET_BLOCK_DEVICE ? target->size : 0;
}

gboolean
bmap_target_check_size (BmapTarget *target, guint64 image_size, GError **error)
{
  if (target->kind != BMAP_TARGET_BLOCK_DEVICE || image_size <= target->size)
    return TRUE;
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_TOO_SMALL,
               "%s: device is too small: it holds %" G_GUINT64_FORMAT
               " bytes, the image needs %" G_GUINT64_FORMAT,
               target->name, target->size, image_size);
  return FALSE;
}

gboolean
bmap_target_skips_zeros (BmapTarget *target)
{
  return target->prepared && target->kind != BMAP_TARGET_BLOCK_DEVICE && !target->keep_content;
}

gboolean
bmap_target_prepare (BmapTarget *target, guint64 image_size, GError **error)
{
  g_return_val_if_fail (!target->prepared, FALSE);

  if (!bmap_target_check_size (target, image_size, error))
    return FALSE;

  if (target->kind == BMAP_TARGET_FILE) {
    if (target->fd < 0) {
      target->fd = open (target->path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0666);
      if (target->fd < 0) {
        bmap_error_set_errno (error, errno, "%s: cannot create", target->name);
        return FALSE;
      }
    }
    /* Truncating to zero first drops old blocks, so that what the image
     * does not map reads back as zeros and takes no space. A file kept
     * for comparing has its size set only (and its unmapped ranges punched
     * after the copy); an unknown size is set by finish. */
    if ((!target->keep_content && ftruncate (target->fd, 0) < 0)
        || ((!target->keep_content || image_size > 0)
            && ftruncate (target->fd, (off_t) image_size) < 0)) {
      bmap_error_set_errno (error, errno, "%s: cannot set the file size to %" G_GUINT64_FORMAT,
                            target->name, image_size);
      return FALSE;
    }
  }
  if (target->kind == BMAP_TARGET_FILE) {
    g_autofree char *proc = g_strdup_printf ("/proc/self/fd/%d", target->fd);

    target->direct_fd = open (proc, O_WRONLY | O_DIRECT | O_CLOEXEC);
  }
  target->size_known = image_size > 0;
  target->wb_time = g_get_monotonic_time ();
  target->prepared = TRUE;
  return TRUE;
}

/* Waits until [start, end) is on the device. The kernel reports a failed
 * writeback once per open file, to the first wait or fsync that asks,
 * whatever range it asked about: the error is the caller's to report,
 * or it is lost (an fsync after this wait returns 0). The bytes named are
 * all those not yet known to be written, where the error must be. */
static gboolean
wait_written (BmapTarget *target, guint64 start, guint64 end, GError **error)
{
  if (end <= start
      || sync_file_range (target->fd, (off64_t) start, (off64_t) (end - start),
                          SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE
                              | SYNC_FILE_RANGE_WAIT_AFTER)
             == 0)
    return TRUE;
  bmap_error_set_errno (error, errno,
                        "%s: write error in bytes %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT
                        ", found writing them back to the device",
                        target->name, target->wb_prev, MAX (target->wb_end, 1) - 1);
  return FALSE;
}

static gboolean
bound_writeback (BmapTarget *target, guint64 offset, gsize len, GError **error)
{
  guint64 end = offset + len;

  if (offset < target->wb_start || offset > target->wb_end + WRITEBACK_WINDOW_MAX) {
    /* Not sequential: what is dirty is written first, so that an error
     * names the bytes it hit; then a new window starts. */
    if (!wait_written (target, target->wb_prev, target->wb_end, error))
      return FALSE;
    target->wb_prev = target->wb_start = target->wb_end = offset;
    target->wb_prev_bytes = target->wb_bytes = 0;
    target->wb_time = g_get_monotonic_time ();
  }
  target->wb_end = MAX (target->wb_end, end);
  target->wb_bytes += len;
  if (target->wb_bytes < target->wb_window)
    return TRUE;

  /* Start writing this window back, then wait for the one before it. */
  sync_file_range (target->fd, (off64_t) target->wb_start,
                   (off64_t) (target->wb_end - target->wb_start), SYNC_FILE_RANGE_WRITE);
  if (!wait_written (target, target->wb_prev, target->wb_start, error))
    return FALSE;
  if (target->wb_prev_bytes > 0) {
    /* The device always has a window queued: what it wrote between two
     * waits is its speed. The window at most doubles, as a device's
     * cache can take the first bytes much faster than its medium. */
    gint64 now = g_get_monotonic_time ();
    guint64 elapsed = (guint64) MAX (now - target->wb_time, 1);
    guint64 fits = target->wb_prev_bytes * WRITEBACK_WINDOW_USEC / elapsed;

    target->wb_window
        = CLAMP (MIN (fits, target->wb_window * 2), WRITEBACK_WINDOW_MIN, WRITEBACK_WINDOW_MAX);
    target->wb_time = now;
  }
  target->wb_prev = target->wb_start;
  target->wb_start = target->wb_end;
  target->wb_prev_bytes = target->wb_bytes;
  target->wb_bytes = 0;
  return TRUE;
}

static gboolean
write_all (BmapTarget *target, guint64 offset, const void *buf, gsize len, GError **error)
{
  const guint8 *p = buf;
  gsize left = len;
  guint64 pos = offset;
  int fd = target->fd;

  if (target->direct_fd >= 0 && offset % 4096 == 0 && len % 4096 == 0
      && ((guintptr) buf) % 4096 == 0)
    fd = target->direct_fd;
  while (left > 0) {
    ssize_t n = pwrite (fd, p, left, (off_t) pos);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EINVAL && fd == target->direct_fd) {
      /* The filesystem took O_DIRECT at open but not for this write. */
      close (target->direct_fd);
      target->direct_fd = -1;
      fd = target->fd;
      continue;
    }
    if (n == 0)
      errno = ENOSPC;
    if (n <= 0) {
      int errsv = errno;

      if (errsv == ENOSPC || errsv == EFBIG) {
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_TOO_SMALL,
                     "%s: no space left at byte %" G_GUINT64_FORMAT
                     ": the image is larger than the target",
                     target->name, pos);
        return FALSE;
      }
      bmap_error_set_errno (error, errsv, "%s: write error at byte %" G_GUINT64_FORMAT,
                            target->name, pos);
      return FALSE;
    }
    p += n;
    pos += (guint64) n;
    left -= (gsize) n;
  }
  return TRUE;
}

gboolean
bmap_target_write (BmapTarget *target, guint64 offset, const void *buf, gsize len, GError **error)
{
  const guint8 *p = buf;

  g_return_val_if_fail (target->prepared, FALSE);

  if (target->kind != BMAP_TARGET_BLOCK_DEVICE)
    return write_all (target, offset, buf, len, error);

  /* A window at a time, so that a slow device gets no more than its
   * windows' worth, and a cancel is seen between them. */
  for (gsize done = 0; done < len;) {
    gsize piece = (gsize) MIN ((guint64) (len - done), target->wb_window);

    if (bmap_error_set_if_cancelled (target->cancellable, error)
        || !write_all (target, offset + done, p + done, piece, error)
        || !bound_writeback (target, offset + done, piece, error))
      return FALSE;
    done += piece;
  }
  return TRUE;
}

gboolean
bmap_target_finish (BmapTarget *target, guint64 image_size, GError **error)
{
  g_return_val_if_fail (target->prepared, FALSE);

  if (target->kind == BMAP_TARGET_NULL)
    return TRUE;
  if (target->kind == BMAP_TARGET_FILE && !target->size_known
      && ftruncate (target->fd, (off_t) image_size) < 0) {
    bmap_error_set_errno (error, errno, "%s: cannot set the file size to %" G_GUINT64_FORMAT,
                          target->name, image_size);
    return FALSE;
  }
  /* The windows still in flight first: their error names their bytes.
   * fsync then flushes the device's cache. */
  if (target->kind == BMAP_TARGET_BLOCK_DEVICE
      && !wait_written (target, target->wb_prev, target->wb_end, error))
    return FALSE;
  if (fsync (target->fd) < 0) {
    bmap_error_set_errno (error, errno, "%s: cannot flush the written data", target->name);
    return FALSE;
  }
  return TRUE;
}
