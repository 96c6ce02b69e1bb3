/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-copy-private.h"
#include "bmap-error.h"
#include "bmap-io.h"
#include "bmap-unmapped.h"

/* The pipeline: producer threads read (and decode) the image into a small
 * ring of chunks, and the calling thread hands each chunk to every target's
 * writer (bmap-fanout.c), writing the first target itself. Memory is
 * N_CHUNKS * CHUNK_SIZE whatever the image size, and EXTRA_CHUNKS *
 * CHUNK_SIZE more for each target after the first. With a bmap, chunks hold mapped data
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
#define EXTRA_CHUNKS  (BMAP_COPY_BYTES_PER_EXTRA_TARGET / CHUNK_SIZE)
/* Unmapped bytes of a stream are skipped this much at a time between checks
 * for a cancel. */
#define SKIP_STEP ((guint64) 8 * 1024 * 1024)

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

/* ---- the dispatch ------------------------------------------------------- */

void
bmap_copy_chunk_release (CopyJob *job, Chunk *chunk)
{
  if (g_atomic_int_dec_and_test (&chunk->refs))
    g_async_queue_push_front (job->free_chunks, chunk);
}

static guint
count_producers (CopyJob *job)
{
  /* Ranges hashed side by side are written out of order: fine for a file
   * or /dev/null, but a device's writeback goes in order. */
  if (!bmap_source_is_seekable (job->source) || job->map == NULL || !job->verify)
    return 1;
  for (guint i = 0; i < job->n_writers; i++) {
    if (bmap_target_get_kind (job->writers[i].target) == BMAP_TARGET_BLOCK_DEVICE)
      return 1;
  }
  return CLAMP (MIN (g_get_num_processors (), bmap_map_get_n_ranges (job->map)), 1, MAX_PRODUCERS);
}

/* Hands every chunk to every writer: the first target's is this thread,
 * so that one target takes no thread more than it did before there were
 * several. */
static void
run_pipeline (CopyJob *job)
{
  GThread *producers[MAX_PRODUCERS];
  GThread *hasher = NULL;
  GAsyncQueue *input;

  job->free_chunks = g_async_queue_new ();
  job->full_chunks = g_async_queue_new ();
  job->hashed_chunks = g_async_queue_new ();
  g_mutex_init (&job->lock);
  job->n_chunks = N_CHUNKS + (guint) EXTRA_CHUNKS * (job->n_writers - 1);
  G_STATIC_ASSERT (BMAP_COPY_RING_BYTES (2) == (N_CHUNKS + EXTRA_CHUNKS) * CHUNK_SIZE);
  job->chunks = g_new0 (Chunk, job->n_chunks);
  for (guint i = 0; i < job->n_chunks; i++) {
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
  for (guint i = 1; i < job->n_writers; i++)
    job->writers[i].thread = g_thread_new ("bmap-write", bmap_copy_writer_thread, &job->writers[i]);

  for (;;) {
    Chunk *chunk = g_async_queue_pop (input);

    if (chunk == &job->eof)
      break;
    /* A writer that dropped out gives its chunks back at once. */
    g_atomic_int_set (&chunk->refs, (gint) job->n_writers);
    for (guint i = 1; i < job->n_writers; i++)
      g_async_queue_push (job->writers[i].queue, chunk);
    bmap_copy_writer_take (&job->writers[0], chunk);
  }
  for (guint i = 0; i < job->n_producers; i++)
    g_thread_join (producers[i]);
  if (hasher != NULL)
    g_thread_join (hasher);

  /* What failed for every target, in the order the data went: a chunk
   * that was wrong is what stopped a stream. */
  job->shared_error = job->hasher_error != NULL ? job->hasher_error : job->producer_error;
  for (guint i = 1; i < job->n_writers; i++)
    g_async_queue_push (job->writers[i].queue, &job->eof);
  bmap_copy_writer_finish (&job->writers[0]);
  for (guint i = 1; i < job->n_writers; i++)
    g_thread_join (job->writers[i].thread);

  for (guint i = 0; i < job->n_chunks; i++)
    free (job->chunks[i].data);
  g_free (job->chunks);
  g_async_queue_unref (job->free_chunks);
  g_async_queue_unref (job->full_chunks);
  g_async_queue_unref (job->hashed_chunks);
  g_mutex_clear (&job->lock);
  job->shared_error = NULL;
  g_clear_error (&job->hasher_error);
  g_clear_error (&job->producer_error);
}

/* ---- checks before ----------------------------------------------------- */

static gboolean
same_file (int fd_a, int fd_b)
{
  struct stat a, b;

  if (fd_a < 0 || fd_b < 0 || fstat (fd_a, &a) < 0 || fstat (fd_b, &b) < 0)
    return FALSE;
  if (S_ISBLK (a.st_mode) && S_ISBLK (b.st_mode))
    return a.st_rdev == b.st_rdev;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* The image and the options, whatever the targets. */
static gboolean
check_image (CopyJob *job, GError **error)
{
  BmapSource *source = job->source;

  if (job->options->verify_written
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
  return TRUE;
}

static gboolean
check_target (CopyJob *job, guint idx, GError **error)
{
  BmapTarget *target = job->writers[idx].target;
  const char *name = job->writers[idx].name;
  int fd = bmap_target_get_fd (target);

  if (same_file (bmap_source_get_fd (job->source), fd)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: the target is the image itself", name);
    return FALSE;
  }
  /* /dev/null may swallow the image twice. */
  for (guint i = 0; i < idx && bmap_target_get_kind (target) != BMAP_TARGET_NULL; i++) {
    if (same_file (bmap_target_get_fd (job->writers[i].target), fd)) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: the same target as %s; each target can be written once", name,
                   job->writers[i].name);
      return FALSE;
    }
  }
  return bmap_target_check_size (target, job->image_size, error);
}

static void
copy_job_clear (CopyJob *job)
{
  for (guint i = 0; i < job->n_writers; i++)
    bmap_copy_writer_clear (&job->writers[i]);
  g_clear_pointer (&job->writers, g_free);
  g_clear_pointer (&job->name, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (CopyJob, copy_job_clear)

gboolean
bmap_copy_many (BmapSource *source, BmapCopyTarget *targets, guint n_targets,
                const BmapCopyOptions *options, GError **error)
{
  g_auto (CopyJob) job = { 0 };
  g_autoptr (GString) names = g_string_new (NULL);

  g_return_val_if_fail (source != NULL && targets != NULL && options != NULL, FALSE);

  if (n_targets == 0 || n_targets > BMAP_COPY_MAX_TARGETS) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%u targets: a copy writes 1 to %u targets", n_targets, BMAP_COPY_MAX_TARGETS);
    return FALSE;
  }
  job.source = source;
  job.options = options;
  job.map = options->map;
  job.cancellable = options->cancellable;
  job.verify = options->verify && job.map != NULL && job.map->range_checksum != BMAP_CHECKSUM_NONE;
  job.n_writers = n_targets;
  job.live_writers = (gint) n_targets;
  job.writers = g_new0 (CopyWriter, n_targets);
  for (guint i = 0; i < n_targets; i++) {
    CopyWriter *writer = &job.writers[i];

    g_return_val_if_fail (targets[i].target != NULL, FALSE);
    targets[i].error = NULL;
    targets[i].result = (BmapCopyResult){ 0 };
    writer->job = &job;
    writer->spec = &targets[i];
    writer->target = targets[i].target;
    writer->name = bmap_target_get_name (targets[i].target);
    writer->cancellable
        = targets[i].cancellable != NULL ? targets[i].cancellable : options->cancellable;
    if (i > 0)
      writer->queue = g_async_queue_new ();
    g_string_append_printf (names, "%s%s", i > 0 ? ", " : "", writer->name);
  }
  job.name = g_strdup (names->str);

  /* Every check that can fail without writing, for every target, before
   * any is changed. */
  if (!check_image (&job, error))
    return FALSE;
  for (guint i = 0; i < n_targets; i++) {
    if (!check_target (&job, i, error))
      return FALSE;
  }
  bmap_source_set_cancellable (source, job.cancellable);
  for (guint i = 0; i < n_targets; i++)
    bmap_target_set_cancellable (job.writers[i].target, job.writers[i].cancellable);
  if (job.map != NULL)
    bmap_source_set_wanted (source, job.map);
  if (bmap_error_set_if_cancelled (job.cancellable, error))
    return FALSE;

  job.skip_zeros = TRUE;
  for (guint i = 0; i < n_targets; i++) {
    bmap_copy_writer_prepare (&job.writers[i]);
    job.skip_zeros = job.skip_zeros && job.writers[i].error == NULL && job.writers[i].skip_zeros;
  }
  run_pipeline (&job);
  return TRUE;
}

gboolean
bmap_copy (BmapSource *source, BmapTarget *target, const BmapCopyOptions *options,
           BmapCopyResult *result, GError **error)
{
  BmapCopyTarget one = {
    .target = target,
    .progress_func = options->progress_func,
    .progress_data = options->progress_data,
  };

  g_return_val_if_fail (target != NULL, FALSE);

  if (!bmap_copy_many (source, &one, 1, options, error))
    return FALSE;
  if (one.error != NULL) {
    g_propagate_error (error, one.error);
    return FALSE;
  }
  if (result != NULL)
    *result = one.result;
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
