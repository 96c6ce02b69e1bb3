/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
  BMAP_TARGET_FILE,
  BMAP_TARGET_BLOCK_DEVICE,
  BMAP_TARGET_NULL, /* /dev/null and other character devices that swallow writes */
} BmapTargetKind;

/* Where an image is written. Opening checks everything that can be checked
 * without writing; the file is created or truncated only by
 * bmap_target_prepare(), once every other check has passed. */
typedef struct _BmapTarget BmapTarget;

/* A regular file (need not exist yet), a block device (opened O_EXCL, so a
 * mounted filesystem on it makes this fail with DeviceBusy) or /dev/null. */
BmapTarget *bmap_target_open (const char *path, GError **error);
/* An fd the caller opened for writing (the daemon opens devices itself).
 * The target closes it when freed. */
BmapTarget *bmap_target_new_for_fd (int fd, const char *name, GError **error);
void bmap_target_free (BmapTarget *target);

/* Writes to a block device stop with Cancelled between windows once
 * @cancellable is cancelled (a window is at most a fraction of a second of
 * the device's time). */
void bmap_target_set_cancellable (BmapTarget *target, GCancellable *cancellable);

/* Before prepare: a regular file keeps what it holds (only its size is
 * set), so that what already matches the image need not be written
 * (minimize-writes). Block devices always keep what they hold. */
void bmap_target_set_keep_content (BmapTarget *target, gboolean keep_content);

BmapTargetKind bmap_target_get_kind (BmapTarget *target);
const char *bmap_target_get_name (BmapTarget *target);
int bmap_target_get_fd (BmapTarget *target);
/* Size of a block device in bytes; 0 for files and /dev/null. */
guint64 bmap_target_get_size (BmapTarget *target);

/* Fails with DeviceTooSmall when a block device is smaller than @image_size. */
gboolean bmap_target_check_size (BmapTarget *target, guint64 image_size, GError **error);

/* Makes the target ready for writing: a regular file is created or
 * truncated and set to @image_size (sparse); with @image_size 0 (unknown) it
 * is truncated to 0 and sized by bmap_target_finish(). */
gboolean bmap_target_prepare (BmapTarget *target, guint64 image_size, GError **error);

/* Writes all of @len bytes at @offset. Keeps the dirty page cache of a block
 * device bounded by its speed, so that neither the final sync nor the
 * close after a cancel waits long. */
gboolean
bmap_target_write (BmapTarget *target, guint64 offset, const void *buf, gsize len, GError **error);

/* Sets a regular file's final size (when it was unknown at prepare time)
 * and flushes everything to stable storage. */
gboolean bmap_target_finish (BmapTarget *target, guint64 image_size, GError **error);

/* TRUE when blocks that are not written read back as zeros (a freshly
 * truncated regular file, /dev/null), so zero blocks need not be written. */
gboolean bmap_target_skips_zeros (BmapTarget *target);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapTarget, bmap_target_free)

G_END_DECLS
