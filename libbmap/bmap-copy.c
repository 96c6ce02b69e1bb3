/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-copy.h"
#include "bmap-delta.h"
#include "bmap-error.h"
#include "bmap-gpt.h"
#include "bmap-io.h"
#include "bmap-unmapped.h"

/* The pipeline: producer threads read (and decode) the image into a small
 * ring of chunks, and the calling thread writes them. Memory is N_CHUNKS *
 * CHUNK_SIZE whatever the image size. With a bmap, chunks hold mapped data
 * only, each chunk of one range; range checksums are checked where there is
 * a core to spare:
 *
 *  - an uncompressed regular file: the producers pread the mapped ranges
 *    and hash them, several ranges at once when the target does not care
 *    about the order of writes (a file or /dev/null);
 *  - a stream (compressed, or a pipe): one producer decodes, skipping what
 *    the bmap does not map, a hasher thread checks, the caller writes, so
 *    that decoding, hashing and waiting for the disk overlap. */
#define CHUNK_SIZE    ((gsize) 2 * 1024 * 1024)
#define N_CHUNKS      6
#define MAX_PRODUCERS 4
#define ZERO_BLOCK    4096
/* Unmapped bytes of a stream are skipped this much at a time between checks
 * for a cancel. */
#define SKIP_STEP ((guint64) 8 * 1024 * 1024)

typedef struct {
  guint8 *data;
  gsize len;
  guint64 offset; /* of data[0] in the image */
  gint range;     /* the bmap range the data belongs to, -1 without one */
  gboolean last;  /* the end of that range */
} Chunk;

typedef struct {
  BmapSource *source;
  BmapTarget *target;
  const BmapMap *map;
  GCancellable *cancellable;
  const char *name; /* the target's name, for messages */

  gboolean verify;
  gboolean skip_zeros;
  guint64 image_size; /* expected size, 0 when unknown */

  Chunk chunks[N_CHUNKS];
  Chunk eof;
  GAsyncQueue *free_chunks;
  GAsyncQueue *full_chunks;   /* producers to the hasher or the writer */
  GAsyncQueue *hashed_chunks; /* the hasher to the writer */
  gint abort;

  /* Producers: the first error wins. */
  GMutex lock;
  GError *producer_error;
  guint n_producers;
  gint producers_left;
  gint next_range;  /* seekable sources: the next range to claim */
  guint64 produced; /* streams: decoded bytes so far */

  GError *hasher_error;

  /* The writer */
  BmapDelta *delta; /* minimize-writes: compares before writing */
  guint64 blocks_written;
  guint64 bytes_written;
  guint64 bytes_checked;
  guint64 bytes_done;
  BmapProgressReporter reporter;
} CopyJob;

static guint64
range_start (const BmapMap *map, const BmapRange *range)
{
  return range->first * map->block_size;
}

static guint64
range_end (const BmapMap *map, const BmapRange *range)
{
  return MIN ((range->last + 1) * map->block_size, map->image_size);
}

static gboolean
range_digest_matches (CopyJob *job, guint idx, BmapHasher *hasher, GError **error)
{
  const BmapRange *range = bmap_map_get_range (job->map, idx);
  gsize len = bmap_checksum_type_get_length (job->map->range_checksum);
  guint8 got[BMAP_CHECKSUM_MAX_LEN];
  char got_hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];
  char want_hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];

  bmap_hasher_finish (hasher, got);
  if (memcmp (got, range->digest, len) == 0)
    return TRUE;

  bmap_checksum_to_hex (range->digest, len, want_hex);
  bmap_checksum_to_hex (got, len, got_hex);
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_CHECKSUM_MISMATCH,
               "%s: checksum mismatch in blocks %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT
               " of %s: expected %s, got %s; %s now holds a partial image",
               job->name, range->first, range->last, bmap_source_get_name (job->source), want_hex,
               got_hex, job->name);
  return FALSE;
}

/* Chunks of one range come in order, whoever hashes them. */
static gboolean
hash_chunk (CopyJob *job, BmapHasher *hasher, const Chunk *chunk, GError **error)
{
  bmap_hasher_update (hasher, chunk->data, chunk->len);
  return !chunk->last || range_digest_matches (job, (guint) chunk->range, hasher, error);
}

static gboolean
is_zero (const guint8 *p, gsize len)
{
  return len == 0 || (p[0] == 0 && memcmp (p, p + 1, len - 1) == 0);
}

/* ---- producers --------------------------------------------------------- */

static gboolean
producer_stopped (CopyJob *job)
{
  return g_atomic_int_get (&job->abort) || g_cancellable_is_cancelled (job->cancellable);
}

static Chunk *
producer_get_chunk (CopyJob *job)
{
  Chunk *chunk = g_async_queue_pop (job->free_chunks);

  if (producer_stopped (job)) {
    g_async_queue_push_front (job->free_chunks, chunk);
    return NULL;
  }
  chunk->range = -1;
  chunk->last = FALSE;
  return chunk;
}

static gboolean
pread_full (CopyJob *job, guint8 *buf, gsize len, guint64 offset, GError **error)
{
  const char *name = bmap_source_get_name (job->source);
  gsize got;

  if (!bmap_pread_full (bmap_source_get_fd (job->source), buf, len, offset, name, &got, error))
    return FALSE;
  if (got < len) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                 "%s: image ends at byte %" G_GUINT64_FORMAT ", expected %" G_GUINT64_FORMAT
                 " bytes",
                 name, offset + got, job->image_size);
    return FALSE;
  }
  return TRUE;
}

/* Reads [start, end) of a seekable source into chunks: the data of range
 * @range_idx (hashed with @hasher unless it is NULL), or of no range. */
static gboolean
produce_span (CopyJob *job, guint64 start, guint64 end, gint range_idx, BmapHasher *hasher,
              GError **error)
{
  for (guint64 pos = start; pos < end;) {
    gsize len = (gsize) MIN (CHUNK_SIZE, end - pos);
    Chunk *chunk = producer_get_chunk (job);

    if (chunk == NULL)
      return TRUE;
    if (!pread_full (job, chunk->data, len, pos, error)) {
      g_async_queue_push_front (job->free_chunks, chunk);
      return FALSE;
    }
    chunk->len = len;
    chunk->offset = pos;
    chunk->range = range_idx;
    pos += len;
    chunk->last = range_idx >= 0 && pos == end;
    if (hasher != NULL && range_idx >= 0 && !hash_chunk (job, hasher, chunk, error)) {
      g_async_queue_push_front (job->free_chunks, chunk);
      return FALSE;
    }
    g_async_queue_push (job->full_chunks, chunk);
  }
  return TRUE;
}

static gboolean
produce_seekable_ranges (CopyJob *job, GError **error)
{
  g_autoptr (BmapHasher) hasher = NULL;
  guint n_ranges = bmap_map_get_n_ranges (job->map);

  if (job->verify)
    hasher = bmap_hasher_new (job->map->range_checksum);
  for (;;) {
    gint i = g_atomic_int_add (&job->next_range, 1);
    const BmapRange *range;

    if ((guint) i >= n_ranges || producer_stopped (job))
      return TRUE;
    range = bmap_map_get_range (job->map, (guint) i);
    if (!produce_span (job, range_start (job->map, range), range_end (job->map, range), i, hasher,
                       error))
      return FALSE;
  }
}

static gboolean
produce_seekable (CopyJob *job, GError **error)
{
  int fd = bmap_source_get_fd (job->source);

  if (job->map != NULL)
    return produce_seekable_ranges (job, error);

  posix_fadvise (fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  /* Without a bmap, holes of the source need not be read when unwritten
   * blocks of the target read as zeros anyway. */
  if (job->skip_zeros) {
    off_t pos = 0;

    while ((guint64) pos < job->image_size && !producer_stopped (job)) {
      off_t data = lseek (fd, pos, SEEK_DATA);
      off_t hole;

      if (data < 0 && errno == ENXIO)
        return TRUE;
      if (data < 0)
        break; /* SEEK_DATA not supported: read everything */
      hole = lseek (fd, data, SEEK_HOLE);
      if (hole < 0)
        break;
      if (!produce_span (job, (guint64) data, MIN ((guint64) hole, job->image_size), -1, NULL,
                         error))
        return FALSE;
      pos = hole;
    }
    if ((guint64) pos >= job->image_size || producer_stopped (job))
      return TRUE;
    return produce_span (job, (guint64) pos, job->image_size, -1, NULL, error);
  }
  return produce_span (job, 0, job->image_size, -1, NULL, error);
}

/* Reads up to @len decoded bytes into chunks, as range @range_idx (or no
 * range, -1); *@eof tells that the image ended first, which check_after()
 * judges. */
static gboolean
produce_stream_span (CopyJob *job, guint64 len, gint range_idx, gboolean *eof, GError **error)
{
  while (len > 0) {
    gsize want = (gsize) MIN (CHUNK_SIZE, len);
    Chunk *chunk = producer_get_chunk (job);
    gssize n;

    if (chunk == NULL)
      return TRUE;
    n = bmap_source_read_full (job->source, chunk->data, want, error);
    if (n <= 0) {
      g_async_queue_push_front (job->free_chunks, chunk);
      *eof = n == 0;
      return n == 0;
    }
    chunk->len = (gsize) n;
    chunk->offset = job->produced;
    chunk->range = range_idx;
    chunk->last = range_idx >= 0 && (guint64) n == len;
    job->produced += (guint64) n;
    len -= (guint64) n;
    g_async_queue_push (job->full_chunks, chunk);
    if ((gsize) n < want) {
      *eof = TRUE;
      return TRUE;
    }
  }
  return TRUE;
}

/* Decodes and drops @len bytes the bmap does not map, in steps, so that a
 * cancel or the writer's error is seen within a few MiB. */
static gboolean
produce_stream_skip (CopyJob *job, guint64 len, gboolean *eof, GError **error)
{
  while (len > 0 && !producer_stopped (job)) {
    guint64 want = MIN (SKIP_STEP, len);
    gssize n = bmap_source_skip (job->source, want, error);

    if (n < 0)
      return FALSE;
    job->produced += (guint64) n;
    len -= (guint64) n;
    if ((guint64) n < want) {
      *eof = TRUE;
      return TRUE;
    }
  }
  return TRUE;
}

static gboolean
produce_stream (CopyJob *job, GError **error)
{
  gboolean eof = FALSE;

  if (job->map == NULL)
    return produce_stream_span (job, G_MAXUINT64, -1, &eof, error);

  /* Only the mapped ranges go through the chunks; the rest is decoded (a
   * corrupt stream is an error wherever it is) and dropped. */
  for (guint i = 0; i < bmap_map_get_n_ranges (job->map) && !eof; i++) {
    const BmapRange *range = bmap_map_get_range (job->map, i);
    guint64 rs = range_start (job->map, range);

    if (!produce_stream_skip (job, rs - job->produced, &eof, error))
      return FALSE;
    if (eof || producer_stopped (job))
      return TRUE;
    if (!produce_stream_span (job, range_end (job->map, range) - rs, (gint) i, &eof, error))
      return FALSE;
  }
  /* The rest must decode cleanly and end where the bmap says: one byte
   * more is enough to tell that it does not. */
  if (!eof && !producer_stopped (job))
    return produce_stream_skip (job, job->image_size - job->produced + 1, &eof, error);
  return TRUE;
}

static gpointer
producer_thread (gpointer data)
{
  CopyJob *job = data;
  g_autoptr (GError) error = NULL;
  gboolean ok;

  if (bmap_source_is_seekable (job->source))
    ok = produce_seekable (job, &error);
  else
    ok = produce_stream (job, &error);
  if (ok && g_cancellable_is_cancelled (job->cancellable))
    bmap_error_set_if_cancelled (job->cancellable, &error);
  if (error != NULL) {
    g_mutex_lock (&job->lock);
    if (job->producer_error == NULL)
      job->producer_error = g_steal_pointer (&error);
    g_mutex_unlock (&job->lock);
    g_atomic_int_set (&job->abort, 1);
  }
  if (g_atomic_int_dec_and_test (&job->producers_left))
    g_async_queue_push (job->full_chunks, &job->eof);
  return NULL;
}

/* ---- hasher (streams) -------------------------------------------------- */

static gpointer
hasher_thread (gpointer data)
{
  CopyJob *job = data;
  g_autoptr (BmapHasher) hasher = bmap_hasher_new (job->map->range_checksum);

  for (;;) {
    Chunk *chunk = g_async_queue_pop (job->full_chunks);

    if (chunk == &job->eof)
      break;
    if (job->hasher_error == NULL && !hash_chunk (job, hasher, chunk, &job->hasher_error))
      g_atomic_int_set (&job->abort, 1);
    if (job->hasher_error != NULL || g_atomic_int_get (&job->abort))
      g_async_queue_push_front (job->free_chunks, chunk); /* not written: keep draining */
    else
      g_async_queue_push (job->hashed_chunks, chunk);
  }
  g_async_queue_push (job->hashed_chunks, &job->eof);
  return NULL;
}

/* ---- writer ------------------------------------------------------------ */

static gboolean
write_skipping_zeros (CopyJob *job, const Chunk *chunk, GError **error)
{
  gsize pos = 0;

  while (pos < chunk->len) {
    gsize run_start, run_end;

    /* Blocks are aligned to image offsets, so holes line up with the
     * target's blocks. */
    while (pos < chunk->len) {
      gsize blk = ZERO_BLOCK - ((chunk->offset + pos) % ZERO_BLOCK);
      gsize n = MIN (blk, chunk->len - pos);

      if (!is_zero (chunk->data + pos, n))
        break;
      pos += n;
    }
    run_start = pos;
    while (pos < chunk->len) {
      gsize blk = ZERO_BLOCK - ((chunk->offset + pos) % ZERO_BLOCK);
      gsize n = MIN (blk, chunk->len - pos);

      if (is_zero (chunk->data + pos, n))
        break;
      pos += n;
    }
    run_end = pos;
    if (run_end > run_start) {
      if (!bmap_target_write (job->target, chunk->offset + run_start, chunk->data + run_start,
                              run_end - run_start, error))
        return FALSE;
      job->bytes_written += run_end - run_start;
    }
  }
  return TRUE;
}

/* Writes a chunk whole, or with minimize-writes only where the target
 * holds something else. */
static gboolean
write_or_delta (CopyJob *job, const Chunk *chunk, GError **error)
{
  if (job->delta != NULL) {
    if (!bmap_delta_write (job->delta, chunk->offset, chunk->data, chunk->len, &job->bytes_written,
                           error))
      return FALSE;
    job->bytes_checked += chunk->len;
    return TRUE;
  }
  if (!bmap_target_write (job->target, chunk->offset, chunk->data, chunk->len, error))
    return FALSE;
  job->bytes_written += chunk->len;
  return TRUE;
}

static gboolean
write_chunk (CopyJob *job, const Chunk *chunk, GError **error)
{
  if (job->map != NULL) {
    /* Mapped data only, checked already when checked at all. */
    if (!write_or_delta (job, chunk, error))
      return FALSE;
    job->bytes_done += chunk->len;
    if (chunk->last) {
      const BmapRange *range = bmap_map_get_range (job->map, (guint) chunk->range);

      job->blocks_written += range->last - range->first + 1;
    }
    return TRUE;
  }

  if (job->image_size > 0 && chunk->offset + chunk->len > job->image_size) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                 "%s: image is larger than the %" G_GUINT64_FORMAT " bytes expected",
                 bmap_source_get_name (job->source), job->image_size);
    return FALSE;
  }
  if (job->skip_zeros) {
    if (!write_skipping_zeros (job, chunk, error))
      return FALSE;
  } else if (!write_or_delta (job, chunk, error)) {
    return FALSE;
  }
  job->bytes_done = chunk->offset + chunk->len;
  return TRUE;
}

static guint
count_producers (CopyJob *job)
{
  BmapTargetKind kind = bmap_target_get_kind (job->target);

  /* Ranges hashed side by side are written out of order: fine for a file
   * or /dev/null, but a device's writeback goes in order. */
  if (!bmap_source_is_seekable (job->source) || job->map == NULL || !job->verify
      || kind == BMAP_TARGET_BLOCK_DEVICE)
    return 1;
  return CLAMP (MIN (g_get_num_processors (), bmap_map_get_n_ranges (job->map)), 1, MAX_PRODUCERS);
}

static gboolean
run_pipeline (CopyJob *job, GError **error)
{
  g_autoptr (GError) writer_error = NULL;
  GThread *producers[MAX_PRODUCERS];
  GThread *hasher = NULL;
  GAsyncQueue *input;

  job->free_chunks = g_async_queue_new ();
  job->full_chunks = g_async_queue_new ();
  job->hashed_chunks = g_async_queue_new ();
  g_mutex_init (&job->lock);
  for (guint i = 0; i < N_CHUNKS; i++) {
    if (posix_memalign ((void **) &job->chunks[i].data, 4096, CHUNK_SIZE) != 0)
      g_error ("out of memory allocating copy buffers");
    g_async_queue_push_front (job->free_chunks, &job->chunks[i]);
  }

  job->n_producers = count_producers (job);
  job->producers_left = (gint) job->n_producers;
  for (guint i = 0; i < job->n_producers; i++)
    producers[i] = g_thread_new ("bmap-read", producer_thread, job);
  input = job->full_chunks;
  if (job->verify && !bmap_source_is_seekable (job->source)) {
    hasher = g_thread_new ("bmap-hash", hasher_thread, job);
    input = job->hashed_chunks;
  }

  for (;;) {
    Chunk *chunk = g_async_queue_pop (input);

    if (chunk == &job->eof)
      break;
    if (writer_error == NULL && !g_atomic_int_get (&job->abort)) {
      if (!bmap_error_set_if_cancelled (job->cancellable, &writer_error)
          && write_chunk (job, chunk, &writer_error)) {
        bmap_progress_reporter_set_io (&job->reporter, job->bytes_checked, job->bytes_written);
        bmap_progress_reporter_update (&job->reporter, BMAP_PHASE_WRITING, job->bytes_done, FALSE);
      }
      if (writer_error != NULL)
        g_atomic_int_set (&job->abort, 1);
    }
    /* After an error, keep returning chunks so the producers can finish. */
    g_async_queue_push_front (job->free_chunks, chunk);
  }
  for (guint i = 0; i < job->n_producers; i++)
    g_thread_join (producers[i]);
  if (hasher != NULL)
    g_thread_join (hasher);

  for (guint i = 0; i < N_CHUNKS; i++)
    free (job->chunks[i].data);
  g_async_queue_unref (job->free_chunks);
  g_async_queue_unref (job->full_chunks);
  g_async_queue_unref (job->hashed_chunks);
  g_mutex_clear (&job->lock);

  if (writer_error != NULL) {
    g_propagate_error (error, g_steal_pointer (&writer_error));
    g_clear_error (&job->hasher_error);
    g_clear_error (&job->producer_error);
    return FALSE;
  }
  if (job->hasher_error != NULL) {
    g_propagate_error (error, g_steal_pointer (&job->hasher_error));
    g_clear_error (&job->producer_error);
    return FALSE;
  }
  if (job->producer_error != NULL) {
    g_propagate_error (error, g_steal_pointer (&job->producer_error));
    return FALSE;
  }
  return TRUE;
}

/* ---- checks before and after ------------------------------------------ */

static gboolean
same_file (BmapSource *source, BmapTarget *target)
{
  struct stat s, t;

  if (bmap_target_get_fd (target) < 0 || fstat (bmap_source_get_fd (source), &s) < 0
      || fstat (bmap_target_get_fd (target), &t) < 0)
    return FALSE;
  return s.st_dev == t.st_dev && s.st_ino == t.st_ino;
}

static gboolean
check_before (CopyJob *job, const BmapCopyOptions *options, GError **error)
{
  BmapSource *source = job->source;

  if (same_file (source, job->target)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: the target is the image itself", job->name);
    return FALSE;
  }
  if (options->verify_written
      && (job->map == NULL || job->map->range_checksum == BMAP_CHECKSUM_NONE)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: verifying the written data needs a bmap with checksums", job->name);
    return FALSE;
  }

  if (job->map != NULL) {
    guint64 size = bmap_source_get_size (source);

    job->image_size = job->map->image_size;
    /* A raw file's size, or a tar member's from its header: known before
     * anything is written. */
    if ((bmap_source_is_seekable (source) || size > 0) && size != job->image_size) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                   "%s is %" G_GUINT64_FORMAT
                   " bytes, but its bmap describes an image of %" G_GUINT64_FORMAT
                   " bytes: the bmap does not belong to this image",
                   bmap_source_get_name (source), size, job->image_size);
      return FALSE;
    }
  } else {
    job->image_size = bmap_source_get_size (source);
  }
  return bmap_target_check_size (job->target, job->image_size, error);
}

static gboolean
check_after (CopyJob *job, GError **error)
{
  const char *image = bmap_source_get_name (job->source);

  if (job->map == NULL)
    return TRUE;

  if (!bmap_source_is_seekable (job->source) && job->produced != job->image_size) {
    if (job->produced < job->image_size)
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                   "%s: image ends at byte %" G_GUINT64_FORMAT
                   ", but its bmap says it has %" G_GUINT64_FORMAT
                   " bytes; %s holds a partial image",
                   image, job->produced, job->image_size, job->name);
    else
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                   "%s: image is larger than the %" G_GUINT64_FORMAT
                   " bytes its bmap describes: the bmap does not belong to this image",
                   image, job->image_size);
    return FALSE;
  }
  if (job->blocks_written != job->map->mapped_blocks_count) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "%s: wrote %" G_GUINT64_FORMAT " blocks, but the bmap maps %" G_GUINT64_FORMAT,
                 job->name, job->blocks_written, job->map->mapped_blocks_count);
    return FALSE;
  }
  return TRUE;
}

/* The unmapped ranges, once the mapped ones are on the target. A regular
 * file kept for minimize-writes has them punched, so that it holds the
 * image and nothing of its old data, like a file written afresh. */
static gboolean
finish_unmapped (CopyJob *job, const BmapCopyOptions *options, BmapCopyResult *res, GError **error)
{
  gboolean punch_file
      = options->minimize_writes && bmap_target_get_kind (job->target) == BMAP_TARGET_FILE;

  if (job->map == NULL || (!options->discard && !options->zero_unmapped && !punch_file))
    return TRUE;
  if (options->discard) {
    gboolean timed_out = FALSE;

    if (!bmap_unmapped_discard (job->target, job->map, job->cancellable, &res->bytes_discarded,
                                &res->discard_errno, &timed_out, error))
      return FALSE;
    res->discard = res->discard_errno != 0 ? BMAP_DISCARD_REFUSED
                   : timed_out             ? BMAP_DISCARD_TIMED_OUT
                                           : BMAP_DISCARD_DONE;
  }
  if (options->zero_unmapped || punch_file) {
    guint64 zeroed = 0;

    if (!bmap_unmapped_zero (job->target, job->map, job->cancellable, &zeroed, error))
      return FALSE;
    if (options->zero_unmapped)
      res->bytes_zeroed = zeroed;
  }
  /* Zeros written as the last resort, and the device's cache. */
  return bmap_target_finish (job->target, job->image_size, error);
}

/* Reports of the read-back carry the counts of the copy before it. */
typedef struct {
  BmapProgressFunc func;
  gpointer data;
  guint64 bytes_checked;
  guint64 bytes_written;
} VerifyProgress;

static void
on_verify_progress (const BmapProgress *progress, gpointer user_data)
{
  VerifyProgress *vp = user_data;
  BmapProgress p = *progress;

  p.bytes_checked = vp->bytes_checked;
  p.bytes_written = vp->bytes_written;
  vp->func (&p, vp->data);
}

gboolean
bmap_copy (BmapSource *source, BmapTarget *target, const BmapCopyOptions *options,
           BmapCopyResult *result, GError **error)
{
  CopyJob job = { 0 };
  BmapCopyResult res = { 0 };
  guint64 final_size;
  gboolean ok;

  g_return_val_if_fail (source != NULL && target != NULL && options != NULL, FALSE);

  job.source = source;
  job.target = target;
  job.map = options->map;
  job.cancellable = options->cancellable;
  job.name = bmap_target_get_name (target);
  job.verify = options->verify && job.map != NULL && job.map->range_checksum != BMAP_CHECKSUM_NONE;

  if (!check_before (&job, options, error))
    return FALSE;
  bmap_source_set_cancellable (source, job.cancellable);
  bmap_target_set_cancellable (target, job.cancellable);
  if (job.map != NULL)
    bmap_source_set_wanted (source, job.map);
  if (bmap_error_set_if_cancelled (job.cancellable, error))
    return FALSE;

  bmap_progress_reporter_init (&job.reporter, options->progress_func, options->progress_data,
                               job.map != NULL ? bmap_map_get_mapped_bytes (job.map)
                                               : job.image_size);
  bmap_progress_reporter_update (&job.reporter, BMAP_PHASE_PREPARING, 0, TRUE);

  /* Every check passed: from here on the target changes. /dev/null has
   * nothing to compare with. */
  if (options->minimize_writes && bmap_target_get_kind (target) != BMAP_TARGET_NULL)
    bmap_target_set_keep_content (target, TRUE);
  if (!bmap_target_prepare (target, job.image_size, error))
    return FALSE;
  if (options->minimize_writes && bmap_target_get_kind (target) != BMAP_TARGET_NULL) {
    job.delta = bmap_delta_new (target, error);
    if (job.delta == NULL)
      return FALSE;
  }
  job.skip_zeros = job.map == NULL && bmap_target_skips_zeros (target);

  bmap_progress_reporter_update (&job.reporter, BMAP_PHASE_WRITING, 0, TRUE);
  ok = run_pipeline (&job, error) && check_after (&job, error);
  g_clear_pointer (&job.delta, bmap_delta_free);
  if (!ok)
    return FALSE;

  final_size = job.map != NULL || job.image_size > 0 ? job.image_size : job.produced;
  bmap_progress_reporter_set_io (&job.reporter, job.bytes_checked, job.bytes_written);
  bmap_progress_reporter_update (&job.reporter, BMAP_PHASE_SYNCING, job.bytes_done, TRUE);
  if (!bmap_target_finish (target, final_size, error))
    return FALSE;
  if (!finish_unmapped (&job, options, &res, error))
    return FALSE;

  /* Verified before a relocation changes the primary GPT header: what was
   * checked is the image as its bmap describes it. */
  if (options->verify_written) {
    VerifyProgress vp
        = { options->progress_func, options->progress_data, job.bytes_checked, job.bytes_written };

    if (!bmap_verify_fd (bmap_target_get_fd (target), job.name, job.map,
                         options->progress_func != NULL ? on_verify_progress : NULL, &vp,
                         options->cancellable, error))
      return FALSE;
  }
  if (options->relocate_gpt && !bmap_gpt_relocate (target, final_size, &res.gpt, error))
    return FALSE;

  if (result != NULL) {
    res.image_size = final_size;
    res.bytes_written = job.bytes_written;
    res.blocks_written = job.blocks_written;
    res.verified = job.verify;
    res.verified_written = options->verify_written;
    res.bytes_checked = job.bytes_checked;
    res.bytes_skipped = job.bytes_checked - MIN (job.bytes_checked, job.bytes_written);
    *result = res;
  }
  return TRUE;
}

static void append_note (GString *notes, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
append_note (GString *notes, const char *format, ...)
{
  va_list args;

  if (notes->len > 0)
    g_string_append (notes, "; ");
  va_start (args, format);
  g_string_append_vprintf (notes, format, args);
  va_end (args);
}

/* "1.5 MiB", with a plain space: the words go to logs and D-Bus
 * properties that scripts grep. */
static char *
format_size (guint64 bytes)
{
  g_autofree char *text = g_format_size_full (bytes, G_FORMAT_SIZE_IEC_UNITS);
  GString *size = g_string_new (text);

  g_string_replace (size, "\u00a0", " ", 0);
  return g_string_free (size, FALSE);
}

char *
bmap_copy_result_describe (const BmapCopyResult *result)
{
  g_autoptr (GString) notes = g_string_new (NULL);

  if (result->bytes_checked > 0) {
    g_autofree char *skipped = format_size (result->bytes_skipped);
    g_autofree char *checked = format_size (result->bytes_checked);

    append_note (notes, "%s of %s found in place, not written", skipped, checked);
  }
  switch (result->discard) {
    case BMAP_DISCARD_DONE: {
      g_autofree char *size = format_size (result->bytes_discarded);

      append_note (notes, "%s unmapped discarded", size);
      break;
    }
    case BMAP_DISCARD_REFUSED:
      append_note (notes, "unmapped ranges not discarded: the device refused (%s)",
                   g_strerror (result->discard_errno));
      break;
    case BMAP_DISCARD_TIMED_OUT: {
      g_autofree char *size = format_size (result->bytes_discarded);

      append_note (notes, "discard stopped after %u s, %s unmapped discarded",
                   (guint) (BMAP_DISCARD_TIME_LIMIT_US / G_USEC_PER_SEC), size);
      break;
    }
    case BMAP_DISCARD_NOT_ASKED:
    default:
      break;
  }
  if (result->bytes_zeroed > 0) {
    g_autofree char *size = format_size (result->bytes_zeroed);

    append_note (notes, "%s unmapped zeroed", size);
  }
  switch (result->gpt) {
    case BMAP_GPT_RELOCATED:
      append_note (notes, "backup GPT relocated to the end of the device");
      break;
    case BMAP_GPT_AT_END:
      append_note (notes, "backup GPT already at the end of the target");
      break;
    case BMAP_GPT_NO_GPT:
      append_note (notes, "no GPT in the image: nothing relocated");
      break;
    case BMAP_GPT_NOT_ASKED:
    default:
      break;
  }
  if (notes->len == 0)
    return NULL;
  return g_string_free (g_steal_pointer (&notes), FALSE);
}
