/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

#include "bmap-format.h"
#include "bmap-progress.h"
#include "bmap-source.h"
#include "bmap-target.h"

G_BEGIN_DECLS

typedef struct {
  /* The bmap; NULL copies every block of the image (--nobmap). */
  BmapMap *map;
  /* Check each range's checksum while writing (default in callers: TRUE). */
  gboolean verify;
  /* After writing, read the mapped ranges back with O_DIRECT and compare. */
  gboolean verify_written;
  BmapProgressFunc progress_func;
  gpointer progress_data;
  /* Checked at least every few MiB; cancelling fails with Cancelled. */
  GCancellable *cancellable;
} BmapCopyOptions;

typedef struct {
  guint64 image_size;
  guint64 bytes_written;
  guint64 blocks_written; /* with a bmap: equals MappedBlocksCount */
  gboolean verified;      /* range checksums were checked */
  gboolean verified_written;
} BmapCopyResult;

/* Copies the image read from @source onto @target: with a bmap only its
 * mapped ranges, each checked against its checksum as it is written. Every
 * check that can fail without writing (sizes, the bmap against the image)
 * runs before the target is prepared. A checksum mismatch fails with
 * BMAP_ERROR_CHECKSUM_MISMATCH naming the range and both digests, and says
 * that the target holds a partial image. Memory stays bounded (a ring of a
 * few MiB) whatever the image size. */
gboolean bmap_copy (BmapSource *source, BmapTarget *target, const BmapCopyOptions *options,
                    BmapCopyResult *result, GError **error);

/* Reads the mapped ranges of @map back from @fd, bypassing the page cache
 * (O_DIRECT on a reopened descriptor when possible), and compares them
 * with the map's checksums. @name is used in messages. */
gboolean
bmap_verify_fd (int fd, const char *name, const BmapMap *map, BmapProgressFunc progress_func,
                gpointer progress_data, GCancellable *cancellable, GError **error);
/* The same, reporting through @reporter as the last phase of a copy, so
 * that the copy's progress goes on from where writing left it. */
gboolean
bmap_verify_fd_report (int fd, const char *name, const BmapMap *map, BmapProgressReporter *reporter,
                       GCancellable *cancellable, GError **error);

G_END_DECLS
