/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmap-copy-private.h"
#include "bmap-error.h"
#include "bmap-gpt.h"
#include "bmap-unmapped.h"

/* The writing side of the copy: one writer per target, each taking every
 * chunk of the shared ring in the order the ring hands them out. A writer
 * that fails drops out: it keeps taking chunks only to give them back at
 * once, so that the others are never held up by it. */
#define ZERO_BLOCK 4096

static gboolean
is_zero (const guint8 *p, gsize len)
{
  return len == 0 || (p[0] == 0 && memcmp (p, p + 1, len - 1) == 0);
}

/* Takes @error: the target is out of the copy from here on. When it was
 * the last one still going, the producers stop. */
static void
writer_drop (CopyWriter *writer, GError *error)
{
  g_return_if_fail (writer->error == NULL);

  writer->error = error;
  if (g_atomic_int_dec_and_test (&writer->job->live_writers))
    g_atomic_int_set (&writer->job->abort, 1);
}

static gboolean
writer_prepare (CopyWriter *writer, GError **error)
{
  CopyJob *job = writer->job;
  const BmapCopyOptions *options = job->options;
  BmapTarget *target = writer->target;
  gboolean compare = options->minimize_writes && bmap_target_get_kind (target) != BMAP_TARGET_NULL;

  writer->write_work = job->map != NULL ? bmap_map_get_mapped_bytes (job->map) : job->image_size;
  bmap_progress_reporter_init (&writer->reporter, writer->spec->progress_func,
                               writer->spec->progress_data, writer->write_work);
  /* One bar for the whole copy: the sync and the reading back are part of
   * it, each weighted by the bytes it moves. */
  bmap_progress_reporter_set_work (&writer->reporter, BMAP_PHASE_SYNCING,
                                   bmap_target_get_sync_work (target, writer->write_work));
  if (options->verify_written && job->map != NULL)
    bmap_progress_reporter_set_work (&writer->reporter, BMAP_PHASE_VERIFYING, writer->write_work);
  bmap_progress_reporter_update (&writer->reporter, BMAP_PHASE_PREPARING, 0, TRUE);

  /* Every check passed: from here on the target changes. /dev/null has
   * nothing to compare with. */
  if (compare)
    bmap_target_set_keep_content (target, TRUE);
  if (!bmap_target_prepare (target, job->image_size, error))
    return FALSE;
  if (compare) {
    writer->delta = bmap_delta_new (target, error);
    if (writer->delta == NULL)
      return FALSE;
  }
  writer->skip_zeros = job->map == NULL && bmap_target_skips_zeros (target);
  bmap_progress_reporter_update (&writer->reporter, BMAP_PHASE_WRITING, 0, TRUE);
  return TRUE;
}

void
bmap_copy_writer_prepare (CopyWriter *writer)
{
  GError *error = NULL;

  if (!writer_prepare (writer, &error))
    writer_drop (writer, error);
}

static gboolean
write_skipping_zeros (CopyWriter *writer, const Chunk *chunk, GError **error)
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
      if (!bmap_target_write (writer->target, chunk->offset + run_start, chunk->data + run_start,
                              run_end - run_start, error))
        return FALSE;
      writer->bytes_written += run_end - run_start;
    }
  }
  return TRUE;
}

/* Writes a chunk whole, or with minimize-writes only where the target
 * holds something else. */
static gboolean
write_or_delta (CopyWriter *writer, const Chunk *chunk, GError **error)
{
  if (writer->delta != NULL) {
    if (!bmap_delta_write (writer->delta, chunk->offset, chunk->data, chunk->len,
                           &writer->bytes_written, error))
      return FALSE;
    writer->bytes_checked += chunk->len;
    return TRUE;
  }
  if (!bmap_target_write (writer->target, chunk->offset, chunk->data, chunk->len, error))
    return FALSE;
  writer->bytes_written += chunk->len;
  return TRUE;
}

static gboolean
write_chunk (CopyWriter *writer, const Chunk *chunk, GError **error)
{
  CopyJob *job = writer->job;

  if (job->map != NULL) {
    /* Mapped data only, checked already when checked at all. */
    if (!write_or_delta (writer, chunk, error))
      return FALSE;
    writer->bytes_done += chunk->len;
    if (chunk->last) {
      const BmapRange *range = bmap_map_get_range (job->map, (guint) chunk->range);

      writer->blocks_written += range->last - range->first + 1;
    }
    return TRUE;
  }

  if (job->image_size > 0 && chunk->offset + chunk->len > job->image_size) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                 "%s: image is larger than the %" G_GUINT64_FORMAT " bytes expected",
                 bmap_source_get_name (job->source), job->image_size);
    return FALSE;
  }
  if (writer->skip_zeros) {
    if (!write_skipping_zeros (writer, chunk, error))
      return FALSE;
  } else if (!write_or_delta (writer, chunk, error)) {
    return FALSE;
  }
  writer->bytes_done = chunk->offset + chunk->len;
  return TRUE;
}

static gboolean
set_if_cancelled (CopyWriter *writer, GError **error)
{
  return bmap_error_set_if_cancelled (writer->cancellable, error)
         || bmap_error_set_if_cancelled (writer->job->cancellable, error);
}

void
bmap_copy_writer_take (CopyWriter *writer, Chunk *chunk)
{
  if (writer->error == NULL && !g_atomic_int_get (&writer->job->abort)) {
    GError *error = NULL;

    if (!set_if_cancelled (writer, &error) && write_chunk (writer, chunk, &error)) {
      bmap_progress_reporter_set_io (&writer->reporter, writer->bytes_checked,
                                     writer->bytes_written);
      bmap_progress_reporter_update (&writer->reporter, BMAP_PHASE_WRITING, writer->bytes_done,
                                     FALSE);
    }
    if (error != NULL)
      writer_drop (writer, error);
  }
  bmap_copy_chunk_release (writer->job, chunk);
}

/* ---- after the last chunk ---------------------------------------------- */

static gboolean
check_after (CopyWriter *writer, GError **error)
{
  CopyJob *job = writer->job;
  const char *image = bmap_source_get_name (job->source);

  if (job->map == NULL)
    return TRUE;

  if (!bmap_source_is_seekable (job->source) && job->produced != job->image_size) {
    if (job->produced < job->image_size)
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                   "%s: image ends at byte %" G_GUINT64_FORMAT
                   ", but its bmap says it has %" G_GUINT64_FORMAT
                   " bytes; %s holds a partial image",
                   image, job->produced, job->image_size, writer->name);
    else
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                   "%s: image is larger than the %" G_GUINT64_FORMAT
                   " bytes its bmap describes: the bmap does not belong to this image",
                   image, job->image_size);
    return FALSE;
  }
  if (writer->blocks_written != job->map->mapped_blocks_count) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "%s: wrote %" G_GUINT64_FORMAT " blocks, but the bmap maps %" G_GUINT64_FORMAT,
                 writer->name, writer->blocks_written, job->map->mapped_blocks_count);
    return FALSE;
  }
  return TRUE;
}

/* The unmapped ranges, once the mapped ones are on the target. A regular
 * file kept for minimize-writes has them punched, so that it holds the
 * image and nothing of its old data, like a file written afresh. */
static gboolean
finish_unmapped (CopyWriter *writer, BmapCopyResult *res, GError **error)
{
  CopyJob *job = writer->job;
  const BmapCopyOptions *options = job->options;
  gboolean punch_file
      = options->minimize_writes && bmap_target_get_kind (writer->target) == BMAP_TARGET_FILE;

  if (job->map == NULL || (!options->discard && !options->zero_unmapped && !punch_file))
    return TRUE;
  if (options->discard) {
    gboolean timed_out = FALSE;

    if (!bmap_unmapped_discard (writer->target, job->map, writer->cancellable,
                                &res->bytes_discarded, &res->discard_errno, &timed_out, error))
      return FALSE;
    res->discard = res->discard_errno != 0 ? BMAP_DISCARD_REFUSED
                   : timed_out             ? BMAP_DISCARD_TIMED_OUT
                                           : BMAP_DISCARD_DONE;
  }
  if (options->zero_unmapped || punch_file) {
    guint64 zeroed = 0;

    if (!bmap_unmapped_zero (writer->target, job->map, writer->cancellable, &zeroed, error))
      return FALSE;
    if (options->zero_unmapped)
      res->bytes_zeroed = zeroed;
  }
  /* Zeros written as the last resort, and the device's cache. */
  return bmap_target_finish (writer->target, job->image_size, error);
}

static gboolean
writer_complete (CopyWriter *writer, BmapCopyResult *res, GError **error)
{
  CopyJob *job = writer->job;
  const BmapCopyOptions *options = job->options;
  BmapProgressReporter *reporter = &writer->reporter;
  BmapTarget *target = writer->target;
  guint64 final_size;

  if (!check_after (writer, error))
    return FALSE;

  final_size = job->map != NULL || job->image_size > 0 ? job->image_size : job->produced;
  /* A stream of unknown size: now the whole is known. */
  if (writer->write_work == 0)
    bmap_progress_reporter_set_work (reporter, BMAP_PHASE_WRITING, writer->bytes_done);
  /* What the sync really has to write, no more than was planned for it:
   * the bar only moves on. Only the bytes written are dirty (with
   * minimize-writes, the blocks that differed). */
  bmap_progress_reporter_set_work (
      reporter, BMAP_PHASE_SYNCING,
      MIN (bmap_target_get_sync_work (target, writer->bytes_written),
           writer->write_work > 0 ? reporter->work[BMAP_PHASE_SYNCING] : G_MAXUINT64));
  /* The writing phase's last word: every byte it went through. */
  bmap_progress_reporter_set_io (reporter, writer->bytes_checked, writer->bytes_written);
  bmap_progress_reporter_update (reporter, BMAP_PHASE_WRITING, writer->bytes_done, TRUE);
  bmap_progress_reporter_update (reporter, BMAP_PHASE_SYNCING, 0, TRUE);
  if (!bmap_target_finish (target, final_size, error))
    return FALSE;
  /* Discarding or zeroing the unmapped ranges ends with a sync of its own. */
  if (!finish_unmapped (writer, res, error))
    return FALSE;
  bmap_progress_reporter_update (reporter, BMAP_PHASE_SYNCING, reporter->work[BMAP_PHASE_SYNCING],
                                 TRUE);

  /* Verified before a relocation changes the primary GPT header: what was
   * checked is the image as its bmap describes it. */
  if (options->verify_written) {
    if (!bmap_verify_fd_report (bmap_target_get_fd (target), writer->name, job->map, reporter,
                                writer->cancellable, error))
      return FALSE;
  }
  if (options->relocate_gpt && !bmap_gpt_relocate (target, final_size, &res->gpt, error))
    return FALSE;

  res->image_size = final_size;
  res->bytes_written = writer->bytes_written;
  res->blocks_written = writer->blocks_written;
  res->verified = job->verify;
  res->verified_written = options->verify_written;
  res->bytes_checked = writer->bytes_checked;
  res->bytes_skipped = writer->bytes_checked - MIN (writer->bytes_checked, writer->bytes_written);
  return TRUE;
}

void
bmap_copy_writer_finish (CopyWriter *writer)
{
  BmapCopyTarget *spec = writer->spec;
  BmapCopyResult res = { 0 };

  g_clear_pointer (&writer->delta, bmap_delta_free);
  if (writer->error == NULL) {
    if (writer->job->shared_error != NULL)
      writer->error = g_error_copy (writer->job->shared_error);
    else if (!writer_complete (writer, &res, &writer->error))
      g_assert (writer->error != NULL);
  }
  spec->result = writer->error == NULL ? res : (BmapCopyResult){ 0 };
  spec->error = g_steal_pointer (&writer->error);
  if (spec->done_func != NULL)
    spec->done_func (spec, spec->done_data);
}

gpointer
bmap_copy_writer_thread (gpointer data)
{
  CopyWriter *writer = data;

  for (;;) {
    Chunk *chunk = g_async_queue_pop (writer->queue);

    if (chunk == &writer->job->eof)
      break;
    bmap_copy_writer_take (writer, chunk);
  }
  bmap_copy_writer_finish (writer);
  return NULL;
}

void
bmap_copy_writer_clear (CopyWriter *writer)
{
  g_clear_pointer (&writer->delta, bmap_delta_free);
  g_clear_pointer (&writer->queue, g_async_queue_unref);
  g_clear_error (&writer->error);
}
