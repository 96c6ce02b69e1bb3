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

/* One destination of bmap_copy_many(). */
typedef struct _BmapCopyTarget BmapCopyTarget;

/* The engine is done with @target->target (the caller may close it now);
 * @target->error is NULL when it succeeded, and @target->result says what
 * was done. Called from the thread that wrote the target. */
typedef void (*BmapCopyTargetDoneFunc) (BmapCopyTarget *target, gpointer user_data);

struct _BmapCopyTarget {
  BmapTarget *target;
  /* This target's own progress, from the thread that writes it. */
  BmapProgressFunc progress_func;
  gpointer progress_data;
  /* Stops this target only (it fails with Cancelled and the others go
   * on); NULL: only the options' cancellable stops it. */
  GCancellable *cancellable;
  BmapCopyTargetDoneFunc done_func;
  gpointer done_data;

  /* Out: set by bmap_copy_many(); the caller frees @error. */
  BmapCopyResult result;
  GError *error;
};

/* At most this many targets in one copy (memory, threads). */
#define BMAP_COPY_MAX_TARGETS 64
/* The ring grows by this much for each target after the first: what a
 * fast target may run ahead of the slowest one, the bound per extra card. */
#define BMAP_COPY_BYTES_PER_EXTRA_TARGET ((gsize) 4 * 1024 * 1024)
/* The ring of a copy onto @n targets: how far the fastest target may be
 * ahead of the slowest one, and the copy's buffer memory. */
#define BMAP_COPY_RING_BYTES(n)                                                                    \
  ((gsize) 12 * 1024 * 1024 + BMAP_COPY_BYTES_PER_EXTRA_TARGET * ((gsize) (n) -1))

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
 * few MiB) whatever the image size. bmap_copy_many() with one target. */
gboolean bmap_copy (BmapSource *source, BmapTarget *target, const BmapCopyOptions *options,
                    BmapCopyResult *result, GError **error);

/* Copies the image onto several targets from one read, decode and hash of
 * it: each target has its own writer thread taking the chunks of one
 * shared ring, and a chunk goes back to the ring once every target still
 * going has written it, so that the slowest target paces the others within
 * BMAP_COPY_BYTES_PER_EXTRA_TARGET per extra target. A target that fails
 * (its write fails, its cancellable is cancelled) drops out with its own
 * error and the others go on; each target is synced, has its unmapped
 * ranges handled, is read back (verify_written) and has its GPT relocated
 * on its own thread. @options->progress_func is not used: each target
 * reports its own progress.
 *
 * Returns FALSE, with nothing written to any target, when a check before
 * writing fails for one of them (the error names it: too small, the image
 * itself, the same target twice) or for the image and options. Otherwise
 * TRUE, and each target's @error (NULL when it succeeded) and @result say
 * how it went; an error of the image (a corrupt stream, a checksum
 * mismatch) is every target's. */
gboolean bmap_copy_many (BmapSource *source, BmapCopyTarget *targets, guint n_targets,
                         const BmapCopyOptions *options, GError **error);

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
