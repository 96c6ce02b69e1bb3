/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Private to libbmap: the copy pipeline's state, shared by its reading side
 * (bmap-copy.c: producers, the hasher, the dispatch) and its writing side
 * (bmap-fanout.c: one writer per target). */

#include "bmap-copy.h"
#include "bmap-delta.h"

G_BEGIN_DECLS

typedef struct _CopyJob CopyJob;

typedef struct {
  guint8 *data;
  gsize len;
  guint64 offset; /* of data[0] in the image */
  gint range;     /* the bmap range the data belongs to, -1 without one */
  gboolean last;  /* the end of that range */
  gint refs;      /* writers that have not written it yet */
} Chunk;

/* One target's writer: the calling thread for the first target, a thread
 * of its own for each other one. Only its own thread touches it once the
 * pipeline runs. */
typedef struct {
  CopyJob *job;
  BmapCopyTarget *spec;
  BmapTarget *target;
  const char *name;
  GCancellable *cancellable; /* this target's, or the copy's */
  GAsyncQueue *queue;        /* chunks to write; NULL for the first target */
  GThread *thread;
  GError *error; /* set once, when the target drops out */

  BmapDelta *delta; /* minimize-writes: compares before writing */
  gboolean skip_zeros;
  guint64 write_work; /* the bytes the writing phase moves, 0 when unknown */
  guint64 blocks_written;
  guint64 bytes_written;
  guint64 bytes_checked;
  guint64 bytes_done;
  BmapProgressReporter reporter;
} CopyWriter;

struct _CopyJob {
  BmapSource *source;
  const BmapMap *map;
  const BmapCopyOptions *options;
  GCancellable *cancellable;
  char *name; /* the targets' names, for messages about the image's data */

  gboolean verify;
  gboolean skip_zeros; /* every target reads unwritten blocks as zeros */
  guint64 image_size;  /* expected size, 0 when unknown */

  Chunk *chunks;
  guint n_chunks;
  Chunk eof;
  GAsyncQueue *free_chunks;
  GAsyncQueue *full_chunks;   /* producers to the hasher or the writers */
  GAsyncQueue *hashed_chunks; /* the hasher to the writers */
  gint abort;                 /* a producer failed, or every writer dropped out */

  /* Producers: the first error wins. */
  GMutex lock;
  GError *producer_error;
  guint n_producers;
  gint producers_left;
  gint next_range;  /* seekable sources: the next range to claim */
  guint64 produced; /* streams: decoded bytes so far */

  GError *hasher_error;
  /* Once the producers and the hasher ended: what failed for every target. */
  const GError *shared_error;

  CopyWriter *writers;
  guint n_writers;
  gint live_writers;
};

/* bmap-fanout.c */
/* Prepares the target (and its progress); a target that fails drops out
 * with its error. */
void bmap_copy_writer_prepare (CopyWriter *writer);
/* Writes @chunk unless the writer dropped out, then releases it. */
void bmap_copy_writer_take (CopyWriter *writer, Chunk *chunk);
/* After the last chunk: the checks, sync, unmapped ranges, verification
 * and GPT relocation of this target, its result, and its done_func. */
void bmap_copy_writer_finish (CopyWriter *writer);
gpointer bmap_copy_writer_thread (gpointer data);
void bmap_copy_writer_clear (CopyWriter *writer);

/* bmap-copy.c */
void bmap_copy_chunk_release (CopyJob *job, Chunk *chunk);

G_END_DECLS
