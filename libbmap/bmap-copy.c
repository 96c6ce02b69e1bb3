/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-copy.h"
#include "bmap-error.h"

/* The pipeline: a producer thread reads (and decodes) the image into a small
 * ring of chunks; the calling thread writes them. Memory is N_CHUNKS *
 * CHUNK_SIZE whatever the image size. When the source is an uncompressed
 * regular file, the producer reads only the mapped ranges and hashes them
 * itself, so reading+hashing and writing run on two cores; otherwise
 * decoding is the producer's whole job and the writer hashes. */
#define CHUNK_SIZE ((gsize) 2 * 1024 * 1024)
#define N_CHUNKS   8
#define ZERO_BLOCK 4096

typedef struct {
  guint8 *data;
  gsize len;
  guint64 offset; /* of data[0] in the image */
} Chunk;

typedef struct {
  BmapSource *source;
  BmapTarget *target;
  const BmapMap *map;
  GCancellable *cancellable;
  const char *name; /* the target's name, for messages */

  gboolean verify;
  gboolean hash_in_producer;
  gboolean skip_zeros;
  guint64 image_size; /* expected size, 0 when unknown */

  Chunk chunks[N_CHUNKS];
  Chunk eof;
  GAsyncQueue *free_chunks;
  GAsyncQueue *full_chunks;
  gint abort;

  /* Producer side */
  GError *producer_error;
  guint64 produced;
  BmapHasher *producer_hasher;

  /* Writer side */
  guint range_idx;
  guint64 blocks_written;
  guint64 bytes_written;
  guint64 bytes_done;
  BmapHasher *writer_hasher;
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
               " of image %s: expected %s, got %s; %s now holds a partial image",
               job->name, range->first, range->last, bmap_source_get_name (job->source), want_hex,
               got_hex, job->name);
  return FALSE;
}

static gboolean
is_zero (const guint8 *p, gsize len)
{
  return len == 0 || (p[0] == 0 && memcmp (p, p + 1, len - 1) == 0);
}

/* ---- producer ---------------------------------------------------------- */

static Chunk *
producer_get_chunk (CopyJob *job)
{
  Chunk *chunk = g_async_queue_pop (job->free_chunks);

  if (g_atomic_int_get (&job->abort) || g_cancellable_is_cancelled (job->cancellable)) {
    g_async_queue_push (job->free_chunks, chunk);
    return NULL;
  }
  return chunk;
}

static gboolean
pread_full (CopyJob *job, guint8 *buf, gsize len, guint64 offset, GError **error)
{
  int fd = bmap_source_get_fd (job->source);
  gsize done = 0;

  while (done < len) {
    ssize_t n = pread (fd, buf + done, len - done, (off_t) (offset + done));

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      bmap_error_set_errno (error, errno, "%s: read error at byte %" G_GUINT64_FORMAT,
                            bmap_source_get_name (job->source), offset + done);
      return FALSE;
    }
    if (n == 0) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                   "%s: image ends at byte %" G_GUINT64_FORMAT ", expected %" G_GUINT64_FORMAT
                   " bytes",
                   bmap_source_get_name (job->source), offset + done, job->image_size);
      return FALSE;
    }
    done += (gsize) n;
  }
  return TRUE;
}

/* Reads [start, end) of a seekable source into chunks, hashing them for
 * range @range_idx when that is the producer's job. */
static gboolean
produce_span (CopyJob *job, guint64 start, guint64 end, gint range_idx, GError **error)
{
  for (guint64 pos = start; pos < end;) {
    gsize len = (gsize) MIN (CHUNK_SIZE, end - pos);
    Chunk *chunk = producer_get_chunk (job);

    if (chunk == NULL)
      return TRUE;
    if (!pread_full (job, chunk->data, len, pos, error)) {
      g_async_queue_push (job->free_chunks, chunk);
      return FALSE;
    }
    chunk->len = len;
    chunk->offset = pos;
    pos += len;
    if (job->producer_hasher != NULL && range_idx >= 0) {
      bmap_hasher_update (job->producer_hasher, chunk->data, len);
      if (pos == end
          && !range_digest_matches (job, (guint) range_idx, job->producer_hasher, error)) {
        g_async_queue_push (job->free_chunks, chunk);
        return FALSE;
      }
    }
    g_async_queue_push (job->full_chunks, chunk);
  }
  return TRUE;
}

static gboolean
produce_seekable (CopyJob *job, GError **error)
{
  int fd = bmap_source_get_fd (job->source);

  posix_fadvise (fd, 0, 0, POSIX_FADV_SEQUENTIAL);

  if (job->map != NULL) {
    for (guint i = 0; i < bmap_map_get_n_ranges (job->map); i++) {
      const BmapRange *range = bmap_map_get_range (job->map, i);

      if (g_atomic_int_get (&job->abort))
        return TRUE;
      if (!produce_span (job, range_start (job->map, range), range_end (job->map, range), (gint) i,
                         error))
        return FALSE;
    }
    return TRUE;
  }

  /* Without a bmap, holes of the source need not be read when unwritten
   * blocks of the target read as zeros anyway. */
  if (job->skip_zeros) {
    off_t pos = 0;

    while ((guint64) pos < job->image_size && !g_atomic_int_get (&job->abort)) {
      off_t data = lseek (fd, pos, SEEK_DATA);
      off_t hole;

      if (data < 0 && errno == ENXIO)
        return TRUE;
      if (data < 0)
        break; /* SEEK_DATA not supported: read everything */
      hole = lseek (fd, data, SEEK_HOLE);
      if (hole < 0)
        break;
      if (!produce_span (job, (guint64) data, MIN ((guint64) hole, job->image_size), -1, error))
        return FALSE;
      pos = hole;
    }
    if ((guint64) pos >= job->image_size || g_atomic_int_get (&job->abort))
      return TRUE;
    return produce_span (job, (guint64) pos, job->image_size, -1, error);
  }
  return produce_span (job, 0, job->image_size, -1, error);
}

static gboolean
produce_stream (CopyJob *job, GError **error)
{
  for (;;) {
    Chunk *chunk = producer_get_chunk (job);
    gssize n;

    if (chunk == NULL)
      return TRUE;
    n = bmap_source_read_full (job->source, chunk->data, CHUNK_SIZE, error);
    if (n <= 0) {
      g_async_queue_push (job->free_chunks, chunk);
      return n == 0;
    }
    chunk->len = (gsize) n;
    chunk->offset = job->produced;
    job->produced += (guint64) n;
    g_async_queue_push (job->full_chunks, chunk);
  }
}

static gpointer
producer_thread (gpointer data)
{
  CopyJob *job = data;
  gboolean ok;

  if (bmap_source_is_seekable (job->source))
    ok = produce_seekable (job, &job->producer_error);
  else
    ok = produce_stream (job, &job->producer_error);
  if (ok && g_cancellable_is_cancelled (job->cancellable))
    bmap_error_set_if_cancelled (job->cancellable, &job->producer_error);
  g_async_queue_push (job->full_chunks, &job->eof);
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

static gboolean
write_mapped (CopyJob *job, const Chunk *chunk, GError **error)
{
  guint64 pos = chunk->offset;
  guint64 end = chunk->offset + chunk->len;
  guint n_ranges = bmap_map_get_n_ranges (job->map);

  while (pos < end && job->range_idx < n_ranges) {
    const BmapRange *range = bmap_map_get_range (job->map, job->range_idx);
    guint64 rs = range_start (job->map, range);
    guint64 re = range_end (job->map, range);
    const guint8 *p;
    gsize n;

    if (pos < rs) {
      /* Unmapped bytes: decoded, then dropped. */
      pos = MIN (rs, end);
      continue;
    }
    n = (gsize) (MIN (end, re) - pos);
    p = chunk->data + (pos - chunk->offset);
    if (job->writer_hasher != NULL)
      bmap_hasher_update (job->writer_hasher, p, n);
    if (!bmap_target_write (job->target, pos, p, n, error))
      return FALSE;
    job->bytes_written += n;
    job->bytes_done += n;
    pos += n;
    if (pos == re) {
      if (job->writer_hasher != NULL
          && !range_digest_matches (job, job->range_idx, job->writer_hasher, error))
        return FALSE;
      job->blocks_written += range->last - range->first + 1;
      job->range_idx++;
    }
  }
  return TRUE;
}

static gboolean
write_chunk (CopyJob *job, const Chunk *chunk, GError **error)
{
  if (job->map != NULL)
    return write_mapped (job, chunk, error);

  if (job->image_size > 0 && chunk->offset + chunk->len > job->image_size) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                 "%s: image is larger than the %" G_GUINT64_FORMAT " bytes expected",
                 bmap_source_get_name (job->source), job->image_size);
    return FALSE;
  }
  if (job->skip_zeros) {
    if (!write_skipping_zeros (job, chunk, error))
      return FALSE;
  } else {
    if (!bmap_target_write (job->target, chunk->offset, chunk->data, chunk->len, error))
      return FALSE;
    job->bytes_written += chunk->len;
  }
  job->bytes_done = chunk->offset + chunk->len;
  return TRUE;
}

static gboolean
run_pipeline (CopyJob *job, GError **error)
{
  g_autoptr (GError) writer_error = NULL;
  GThread *thread;

  job->free_chunks = g_async_queue_new ();
  job->full_chunks = g_async_queue_new ();
  for (guint i = 0; i < N_CHUNKS; i++) {
    if (posix_memalign ((void **) &job->chunks[i].data, 4096, CHUNK_SIZE) != 0)
      g_error ("out of memory allocating copy buffers");
    g_async_queue_push (job->free_chunks, &job->chunks[i]);
  }

  thread = g_thread_new ("bmap-read", producer_thread, job);
  for (;;) {
    Chunk *chunk = g_async_queue_pop (job->full_chunks);

    if (chunk == &job->eof)
      break;
    if (writer_error == NULL) {
      if (!bmap_error_set_if_cancelled (job->cancellable, &writer_error)
          && write_chunk (job, chunk, &writer_error))
        bmap_progress_reporter_update (&job->reporter, BMAP_PHASE_WRITING, job->bytes_done, FALSE);
      if (writer_error != NULL)
        g_atomic_int_set (&job->abort, 1);
    }
    /* After an error, keep returning chunks so the producer can finish. */
    g_async_queue_push (job->free_chunks, chunk);
  }
  g_thread_join (thread);

  for (guint i = 0; i < N_CHUNKS; i++)
    free (job->chunks[i].data);
  g_async_queue_unref (job->free_chunks);
  g_async_queue_unref (job->full_chunks);

  if (writer_error != NULL) {
    g_propagate_error (error, g_steal_pointer (&writer_error));
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
    if (bmap_source_is_seekable (source) && size != job->image_size) {
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

gboolean
bmap_copy (BmapSource *source, BmapTarget *target, const BmapCopyOptions *options,
           BmapCopyResult *result, GError **error)
{
  CopyJob job = { 0 };
  g_autoptr (BmapHasher) hasher = NULL;
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
  if (bmap_error_set_if_cancelled (job.cancellable, error))
    return FALSE;

  bmap_progress_reporter_init (&job.reporter, options->progress_func, options->progress_data,
                               job.map != NULL ? bmap_map_get_mapped_bytes (job.map)
                                               : job.image_size);
  bmap_progress_reporter_update (&job.reporter, BMAP_PHASE_PREPARING, 0, TRUE);

  /* Every check passed: from here on the target changes. */
  if (!bmap_target_prepare (target, job.image_size, error))
    return FALSE;
  job.skip_zeros = job.map == NULL && bmap_target_skips_zeros (target);

  if (job.verify) {
    hasher = bmap_hasher_new (job.map->range_checksum);
    job.hash_in_producer = bmap_source_is_seekable (source);
    if (job.hash_in_producer)
      job.producer_hasher = hasher;
    else
      job.writer_hasher = hasher;
  }

  bmap_progress_reporter_update (&job.reporter, BMAP_PHASE_WRITING, 0, TRUE);
  ok = run_pipeline (&job, error) && check_after (&job, error);
  if (!ok)
    return FALSE;

  final_size = job.map != NULL || job.image_size > 0 ? job.image_size : job.produced;
  bmap_progress_reporter_update (&job.reporter, BMAP_PHASE_SYNCING, job.bytes_done, TRUE);
  if (!bmap_target_finish (target, final_size, error))
    return FALSE;

  if (options->verify_written) {
    if (!bmap_verify_fd (bmap_target_get_fd (target), job.name, job.map, options->progress_func,
                         options->progress_data, options->cancellable, error))
      return FALSE;
  }

  if (result != NULL) {
    result->image_size = final_size;
    result->bytes_written = job.bytes_written;
    result->blocks_written = job.blocks_written;
    result->verified = job.verify;
    result->verified_written = options->verify_written;
  }
  return TRUE;
}
