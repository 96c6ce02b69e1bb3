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
  /* Read what the target holds (bypassing the page cache) and write only
   * the blocks that differ: a target that holds the image, or part of it
   * (an interrupted flash), is written little. A regular file keeps its
   * content for this; its unmapped ranges are then punched. */
  gboolean minimize_writes;
  /* After writing, discard the unmapped ranges of the image (BLKDISCARD);
   * a device that refuses, or the time limit, does not fail the copy. */
  gboolean discard;
  /* After writing, make the unmapped ranges of the image read back as
   * zeros (write-zeroes, else BLKZEROOUT); failing fails the copy. */
  gboolean zero_unmapped;
  /* After writing (and verifying), move a GPT's backup header and table to
   * the end of a larger device, through libfdisk. */
  gboolean relocate_gpt;
} BmapCopyOptions;

typedef enum {
  BMAP_DISCARD_NOT_ASKED,
  BMAP_DISCARD_DONE,
  BMAP_DISCARD_REFUSED,   /* discard_errno says why */
  BMAP_DISCARD_TIMED_OUT, /* stopped by the time limit after bytes_discarded */
} BmapDiscardStatus;

typedef enum {
  BMAP_GPT_NOT_ASKED,
  BMAP_GPT_RELOCATED,
  BMAP_GPT_AT_END, /* the target is no larger than the image: nothing to move */
  BMAP_GPT_NO_GPT, /* the image has no GPT: nothing moved */
} BmapGptStatus;

typedef struct {
  guint64 image_size;
  guint64 bytes_written;
  guint64 blocks_written; /* with a bmap: equals MappedBlocksCount */
  gboolean verified;      /* range checksums were checked */
  gboolean verified_written;
  /* minimize-writes: bytes compared with the target, and of those the
   * bytes found in place and not written. */
  guint64 bytes_checked;
  guint64 bytes_skipped;
  BmapDiscardStatus discard;
  int discard_errno;
  guint64 bytes_discarded;
  guint64 bytes_zeroed; /* zero-unmapped */
  BmapGptStatus gpt;
} BmapCopyResult;

/* What the options beyond a plain copy did, in words ("4.0 MiB of 5.0 MiB
 * found in place, not written; discard: the device refused it (...)"), or
 * NULL when none was asked. */
char *bmap_copy_result_describe (const BmapCopyResult *result);

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

G_END_DECLS
