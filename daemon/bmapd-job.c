/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmapd-fd.h"
#include "bmapd-job.h"
#include "bmapd-log.h"
#include "bmapd-polkit.h"
#include "bmapd-sd.h"
#include "bmapd-source.h"

/* Progress signals at most this often; the engine reports about as often. */
#define PROGRESS_SIGNAL_INTERVAL_USEC (100 * 1000)
/* PropertiesChanged for the progress properties at most this often. */
#define PROGRESS_PROPERTIES_INTERVAL_USEC (1000 * 1000)

typedef struct {
  BmapdJob *job;
  sd_bus_message *call;
  BmapdPolkitCheck *check;
} CancelRequest;

/* The cards of one FlashMany call: one worker thread reads, decodes and
 * hashes the image once and writes every card (bmap_copy_many()); each
 * card keeps its own job, progress, result and cancel. The set's worker
 * starts once every card still in it was started by the manager's queue:
 * the cards start together. Loop thread, except @targets (the worker's
 * from its start) and @refs. */
typedef struct {
  gint refs;
  guint n;
  BmapdJob **members; /* NULL for a card that ended before the start */
  guint n_started;
  guint n_left; /* cards in the copy whose end the loop has not heard */
  GThread *thread;
  BmapdSource *source;
  BmapMap *map;
  /* The worker's, set at the start: the cards in the copy. */
  BmapCopyTarget *targets;
  GCancellable **cancellables; /* the cards', to stop them at exit */
  guint n_targets;
  GCancellable *cancellable; /* every card stopped: stop reading the image */
  BmapCopyOptions options;
} JobGroup;

struct _BmapdJob {
  /* Exported properties, read by the vtable by offset; loop thread only. */
  guint32 id;
  const char *operation_str;
  char *device_path;
  char *description;
  const char *state_str;
  guint64 bytes_total;
  guint64 bytes_done;
  double progress;
  guint64 rate;
  guint64 start_time;
  guint64 expected_end_time;
  guint32 uid;
  char *error_name;
  char *error_message;
  guint64 bytes_checked; /* minimize-writes */
  guint64 bytes_written;
  char *result; /* what the flash options did, in words, once done */

  BmapdJobOperation operation;
  BmapdJobState state;
  char *path;
  char *device_node;
  sd_bus *bus;
  sd_event *event;
  sd_bus_slot *slot;
  sd_bus_track *track;
  sd_event_source *expire_source;

  BmapdJobFunc finished_func;
  BmapdJobFunc expired_func;
  gpointer handlers_data;
  BmapdJobAbortFunc abort_func;
  gpointer abort_data;

  gboolean stop_requested;
  BmapdJobStopReason stop_reason;
  char *stopped_by;
  char *caller;               /* unique name, with bind-to-caller */
  GPtrArray *cancel_requests; /* CancelRequest, replied when the job ends */

  /* The writing phase's own bytes, for messages: BytesDone and BytesTotal
   * cover the whole job. */
  guint64 write_done;
  guint64 write_total;

  gint64 last_signal_usec;
  gint64 last_properties_usec;
  gboolean properties_dirty;
  sd_event_source *flush_source; /* emits held-back progress properties */

  /* The work, set before the worker starts and owned by it until it ends. */
  BmapdSource *source;
  int image_fd; /* create */
  BmapMap *map;
  BmapTarget *target;
  guint64 diskseq; /* of the medium checked, 0 when none */
  gboolean verify;
  gboolean verify_written;
  BmapdFlashFlags flash_flags;
  int out_fd;
  BmapChecksumType checksum;
  GCancellable *cancellable;
  GThread *thread;

  /* Mailbox from the worker, under mailbox_lock. */
  GMutex mailbox_lock;
  BmapProgress mailbox_progress;
  gboolean mailbox_progress_pending;
  guint mailbox_phases;         /* 1 << BmapPhase of every phase reported since the last read */
  BmapProgress mailbox_writing; /* the last report of the writing phase */
  gboolean mailbox_done;
  GError *mailbox_error;
  BmapCopyResult mailbox_result; /* with mailbox_done and no error */
  char *mailbox_after;           /* what eject or power-off did, in words */
  int event_fd;
  sd_event_source *event_source;

  /* FlashMany: the set this job is one card of (see JobGroup). */
  JobGroup *group;
  gboolean group_waiting; /* started, waiting for the rest of its set to start */
  gboolean group_running; /* its card is in the set's copy, not ended yet */
};

/* Jobs whose worker thread runs, for bmapd_job_abandon_running(); loop
 * thread only. */
static GList *running_jobs;

static void cancel_request_free (CancelRequest *request);
static void group_unref (JobGroup *group);
static void group_stop_and_join (JobGroup *group);
static void group_card_ended (JobGroup *group);
static void group_card_gone (BmapdJob *job);
static void
finish (BmapdJob *job, BmapdJobState state, const char *error_name, const char *error_message);

static int job_method_cancel (sd_bus_message *m, void *userdata, sd_bus_error *error);

static const sd_bus_vtable job_vtable[] = {
  SD_BUS_VTABLE_START (0),
  SD_BUS_METHOD_WITH_ARGS ("Cancel", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, job_method_cancel,
                           SD_BUS_VTABLE_UNPRIVILEGED),
  SD_BUS_SIGNAL_WITH_ARGS ("Progress", SD_BUS_ARGS ("t", bytes_done, "t", bytes_total, "t", rate),
                           0),
  SD_BUS_SIGNAL_WITH_ARGS ("Finished",
                           SD_BUS_ARGS ("s", state, "s", error_name, "s", error_message), 0),
  SD_BUS_PROPERTY ("Id", "u", NULL, offsetof (BmapdJob, id), SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Operation", "s", NULL, offsetof (BmapdJob, operation_str),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Device", "o", NULL, offsetof (BmapdJob, device_path),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Description", "s", NULL, offsetof (BmapdJob, description),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("State", "s", NULL, offsetof (BmapdJob, state_str),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("BytesTotal", "t", NULL, offsetof (BmapdJob, bytes_total),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("BytesDone", "t", NULL, offsetof (BmapdJob, bytes_done),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Progress", "d", NULL, offsetof (BmapdJob, progress),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Rate", "t", NULL, offsetof (BmapdJob, rate),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("BytesChecked", "t", NULL, offsetof (BmapdJob, bytes_checked),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("BytesWritten", "t", NULL, offsetof (BmapdJob, bytes_written),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Result", "s", NULL, offsetof (BmapdJob, result),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("StartTime", "t", NULL, offsetof (BmapdJob, start_time),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("ExpectedEndTime", "t", NULL, offsetof (BmapdJob, expected_end_time),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("StartedByUid", "u", NULL, offsetof (BmapdJob, uid),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("ErrorName", "s", NULL, offsetof (BmapdJob, error_name),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("ErrorMessage", "s", NULL, offsetof (BmapdJob, error_message),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_VTABLE_END,
};

const char *
bmapd_job_state_to_string (BmapdJobState state)
{
  static const char *const names[] = {
    [BMAPD_JOB_QUEUED] = "queued",       [BMAPD_JOB_PREPARING] = "preparing",
    [BMAPD_JOB_WRITING] = "writing",     [BMAPD_JOB_SYNCING] = "syncing",
    [BMAPD_JOB_VERIFYING] = "verifying", [BMAPD_JOB_DONE] = "done",
    [BMAPD_JOB_FAILED] = "failed",       [BMAPD_JOB_CANCELED] = "canceled",
  };
  return names[state];
}

static gboolean
state_is_final (BmapdJobState state)
{
  return state == BMAPD_JOB_DONE || state == BMAPD_JOB_FAILED || state == BMAPD_JOB_CANCELED;
}

static void
emit_properties (BmapdJob *job, const char *const *names)
{
  int r = sd_bus_emit_properties_changed_strv (job->bus, job->path, BMAPD_JOB_INTERFACE,
                                               (char **) names);
  if (r < 0)
    bmapd_log (LOG_WARNING, "PropertiesChanged for %s: %s", job->path, g_strerror (-r));
}

static void
emit_progress_properties (BmapdJob *job, gboolean with_state)
{
  static const char *const with[]
      = { "State",           "BytesTotal",   "BytesDone",    "Progress", "Rate",
          "ExpectedEndTime", "BytesChecked", "BytesWritten", NULL };
  static const char *const without[] = { "BytesTotal",      "BytesDone",    "Progress",     "Rate",
                                         "ExpectedEndTime", "BytesChecked", "BytesWritten", NULL };

  emit_properties (job, with_state ? with : without);
  job->last_properties_usec = g_get_monotonic_time ();
  job->properties_dirty = FALSE;
}

static void
set_state (BmapdJob *job, BmapdJobState state)
{
  job->state = state;
  job->state_str = bmapd_job_state_to_string (state);
}

/* ---- the worker thread ---- */

static void
mailbox_post (BmapdJob *job)
{
  /* Adds to the eventfd's counter; never blocks (EFD_NONBLOCK), and a
   * full counter already means "something is pending". */
  eventfd_write (job->event_fd, 1);
}

static void
on_engine_progress (const BmapProgress *progress, gpointer user_data)
{
  BmapdJob *job = user_data;

  g_mutex_lock (&job->mailbox_lock);
  job->mailbox_progress = *progress;
  job->mailbox_progress_pending = TRUE;
  job->mailbox_phases |= 1u << progress->phase;
  if (progress->phase == BMAP_PHASE_WRITING)
    job->mailbox_writing = *progress;
  g_mutex_unlock (&job->mailbox_lock);
  mailbox_post (job);
}

static void
close_target (gpointer user_data)
{
  BmapdJob *job = user_data;

  g_clear_pointer (&job->target, bmap_target_free);
}

/* eject or power-off, on the job's descriptor: what was done, in words for
 * Result. A device that can do neither does not fail the flash. */
static char *
worker_eject (BmapdJob *job)
{
  g_autoptr (BmapEjectPlan) plan = NULL;
  BmapEjectFlags flags = 0;
  char *words;
  int fd = bmap_target_get_fd (job->target);
  struct stat st;

  if (job->flash_flags & BMAPD_FLASH_EJECT)
    flags |= BMAP_EJECT_FLAG_EJECT;
  if (job->flash_flags & BMAPD_FLASH_POWER_OFF)
    flags |= BMAP_EJECT_FLAG_POWER_OFF;
  if (fstat (fd, &st) < 0 || !S_ISBLK (st.st_mode))
    return g_strdup_printf ("not %s: %s is not a block device",
                            flags & BMAP_EJECT_FLAG_POWER_OFF ? "powered off" : "ejected",
                            job->device_node);
  plan = bmap_eject_plan_new ("/sys", st.st_rdev, job->device_node);
  words = bmap_eject_run (plan, flags, fd, close_target, job);
  bmapd_log (LOG_INFO, "job %u: %s: %s", job->id, job->device_node, words);
  return words;
}

static gboolean
worker_flash (BmapdJob *job, GError **error)
{
  BmapCopyOptions options = {
    .map = job->map,
    .verify = job->verify,
    .verify_written = job->verify_written,
    .minimize_writes = (job->flash_flags & BMAPD_FLASH_MINIMIZE_WRITES) != 0,
    .discard = (job->flash_flags & BMAPD_FLASH_DISCARD) != 0,
    .zero_unmapped = (job->flash_flags & BMAPD_FLASH_ZERO_UNMAPPED) != 0,
    .relocate_gpt = (job->flash_flags & BMAPD_FLASH_RELOCATE_GPT) != 0,
    .progress_func = on_engine_progress,
    .progress_data = job,
    .cancellable = job->cancellable,
  };
  BmapCopyResult result = { 0 };
  g_autofree char *after = NULL;
  BmapSource *source;
  gboolean ok;

  /* Queued for a while: still the medium that was checked? */
  if (!bmapd_fd_check_diskseq (bmap_target_get_fd (job->target), job->device_node, job->diskseq,
                               error))
    return FALSE;
  /* A pipe is read from here on: its writer may have waited for the job. */
  source = bmapd_source_open (job->source, job->cancellable, error);
  if (source == NULL)
    return FALSE;
  ok = bmap_copy (source, job->target, &options, &result, error);
  /* After the last step (sync, verify, discard, GPT), of a job that
   * succeeded and was not canceled meanwhile. */
  if (ok && (job->flash_flags & (BMAPD_FLASH_EJECT | BMAPD_FLASH_POWER_OFF)))
    ok = !bmap_error_set_if_cancelled (job->cancellable, error);
  if (ok && (job->flash_flags & (BMAPD_FLASH_EJECT | BMAPD_FLASH_POWER_OFF)))
    after = worker_eject (job);
  if (ok) {
    g_mutex_lock (&job->mailbox_lock);
    job->mailbox_result = result;
    job->mailbox_after = g_steal_pointer (&after);
    g_mutex_unlock (&job->mailbox_lock);
  }
  /* Close the device here, so that it is closed when the loop hears that
   * the job ended. */
  g_clear_pointer (&job->target, bmap_target_free);
  g_clear_pointer (&job->source, bmapd_source_free);
  return ok;
}

/* The caller's pipe opened again, write-only and non-blocking: a
 * descriptor of our own, whose flags the caller cannot change under us (it
 * shares O_NONBLOCK of the one it passed), so that a write to a full pipe
 * returns and the wait for room can also wait for Cancel. */
static int
open_pipe_nonblocking (int fd, const struct stat *st, GError **error)
{
  g_autofree char *proc_path = g_strdup_printf ("/proc/self/fd/%d", fd);
  struct stat new_st;
  int new_fd;

  new_fd = open (proc_path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (new_fd < 0 && errno == ENXIO) {
    /* A FIFO opened for writing without a reader. */
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "bmap_out: the reader closed the pipe before the bmap was written (EPIPE)");
    return -1;
  }
  if (new_fd < 0) {
    bmap_error_set_errno (error, errno, "bmap_out: opening the pipe again through %s", proc_path);
    return -1;
  }
  if (fstat (new_fd, &new_st) < 0 || new_st.st_dev != st->st_dev || new_st.st_ino != st->st_ino) {
    close (new_fd);
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "bmap_out: %s is not the pipe that was passed any more", proc_path);
    return -1;
  }
  return new_fd;
}

static gboolean
worker_create (BmapdJob *job, GError **error)
{
  BmapCreateOptions options;
  g_autoptr (BmapMap) map = NULL;
  int pipe_fd;
  gboolean ok;
  struct stat st;

  bmap_create_options_init (&options);
  options.checksum = job->checksum;
  options.progress_func = on_engine_progress;
  options.progress_data = job;
  options.cancellable = job->cancellable;
  map = bmap_create (job->image_fd, "image", &options, NULL, error);
  if (map == NULL)
    return FALSE;
  if (fstat (job->out_fd, &st) < 0) {
    bmap_error_set_errno (error, errno, "bmap_out: fstat");
    return FALSE;
  }
  if (!S_ISFIFO (st.st_mode))
    return bmap_create_write_bmap (map, job->out_fd, "bmap_out", job->cancellable, error);
  pipe_fd = open_pipe_nonblocking (job->out_fd, &st, error);
  if (pipe_fd < 0)
    return FALSE;
  ok = bmap_create_write_bmap (map, pipe_fd, "bmap_out", job->cancellable, error);
  close (pipe_fd);
  return ok;
}

static gpointer
worker_main (gpointer data)
{
  BmapdJob *job = data;
  GError *error = NULL;
  gboolean ok;

  if (job->operation == BMAPD_JOB_FLASH)
    ok = worker_flash (job, &error);
  else
    ok = worker_create (job, &error);
  if (ok)
    g_clear_error (&error);
  else if (error == NULL)
    g_set_error_literal (&error, BMAP_ERROR, BMAP_ERROR_IO, "the engine failed without saying why");
  bmap_error_normalize (&error);

  if (job->image_fd >= 0) {
    close (job->image_fd);
    job->image_fd = -1;
  }
  if (job->out_fd >= 0) {
    close (job->out_fd);
    job->out_fd = -1;
  }

  g_mutex_lock (&job->mailbox_lock);
  job->mailbox_done = TRUE;
  job->mailbox_error = error;
  g_mutex_unlock (&job->mailbox_lock);
  mailbox_post (job);
  return NULL;
}

/* ---- the worker of a set of cards ---- */

/* A card's end, from the worker: its device closed first, so that it is
 * closed when the loop hears of it. Takes @error. */
static void
card_post_done (BmapdJob *job, GError *error, const BmapCopyResult *result)
{
  g_clear_pointer (&job->target, bmap_target_free);
  if (error != NULL)
    bmap_error_normalize (&error);
  g_mutex_lock (&job->mailbox_lock);
  if (error == NULL && result != NULL)
    job->mailbox_result = *result;
  job->mailbox_done = TRUE;
  job->mailbox_error = error;
  g_mutex_unlock (&job->mailbox_lock);
  mailbox_post (job);
}

/* The engine is done with this card: the others may still be written. */
static void
on_card_done (BmapCopyTarget *target, gpointer user_data)
{
  BmapdJob *job = user_data;
  g_autofree char *after = NULL;

  /* eject or power-off: this card's last step, as for a lone flash. */
  if (target->error == NULL && (job->flash_flags & (BMAPD_FLASH_EJECT | BMAPD_FLASH_POWER_OFF))
      && !g_cancellable_is_cancelled (job->cancellable)) {
    after = worker_eject (job);
    g_mutex_lock (&job->mailbox_lock);
    job->mailbox_after = g_steal_pointer (&after);
    g_mutex_unlock (&job->mailbox_lock);
  }
  card_post_done (job, target->error != NULL ? g_error_copy (target->error) : NULL,
                  &target->result);
}

static gpointer
group_main (gpointer data)
{
  JobGroup *group = data;
  g_autoptr (GError) error = NULL;
  g_autofree BmapCopyTarget *cards = g_new0 (BmapCopyTarget, group->n_targets);
  BmapSource *source = NULL;
  guint n = 0;

  /* Queued for a while: still the media that were checked? A card that
   * changed ends alone. */
  for (guint i = 0; i < group->n_targets; i++) {
    BmapdJob *job = group->targets[i].done_data;
    GError *card_error = NULL;

    if (!bmapd_fd_check_diskseq (bmap_target_get_fd (job->target), job->device_node, job->diskseq,
                                 &card_error)) {
      card_post_done (job, card_error, NULL);
      continue;
    }
    cards[n++] = group->targets[i];
  }
  if (n > 0)
    source = bmapd_source_open (group->source, group->cancellable, &error);
  if (n > 0 && (source == NULL || !bmap_copy_many (source, cards, n, &group->options, &error))) {
    /* Nothing was written: every card ends with the same error. */
    for (guint i = 0; i < n; i++)
      card_post_done (cards[i].done_data, g_error_copy (error), NULL);
  }
  for (guint i = 0; i < n; i++)
    g_clear_error (&cards[i].error);
  g_clear_pointer (&group->source, bmapd_source_free);
  return NULL;
}

/* ---- back on the loop ---- */

static BmapdJobState
state_for_phase (BmapPhase phase)
{
  switch (phase) {
    case BMAP_PHASE_PREPARING:
      return BMAPD_JOB_PREPARING;
    case BMAP_PHASE_WRITING:
      return BMAPD_JOB_WRITING;
    case BMAP_PHASE_SYNCING:
      return BMAPD_JOB_SYNCING;
    case BMAP_PHASE_VERIFYING:
      return BMAPD_JOB_VERIFYING;
    default:
      return BMAPD_JOB_WRITING;
  }
}

static int
on_flush_properties (sd_event_source *source, uint64_t usec, void *user_data)
{
  BmapdJob *job = user_data;

  job->flush_source = sd_event_source_disable_unref (job->flush_source);
  if (job->properties_dirty && !state_is_final (job->state))
    emit_progress_properties (job, FALSE);
  return 0;
}

static void
apply_progress (BmapdJob *job, const BmapProgress *p)
{
  BmapdJobState state = state_for_phase (p->phase);
  gboolean state_changed = state != job->state;
  /* A rate (and so a time left) that just became known goes out at once. */
  gboolean rate_appeared = job->rate == 0 && p->rate > 0;
  gint64 now = g_get_monotonic_time ();
  int r;

  if (state_changed)
    set_state (job, state);
  /* The engine's whole-job figures: one progress from start to end, never
   * going back when a phase ends and the next starts. */
  if (p->job_total > 0)
    job->bytes_total = p->job_total;
  job->bytes_done = MAX (job->bytes_done, p->job_done);
  job->progress = MAX (job->progress, p->fraction);
  /* minimize-writes: what the writing went through and what it changed. */
  job->bytes_checked = p->bytes_checked;
  job->bytes_written = p->bytes_written;
  job->rate = p->rate;
  /* Taken with the rate it comes from, so that no end time is shown
   * before a rate was (a report may be replaced by the next phase's before
   * the loop reads it); kept while the next phase's rate is unknown. */
  if (p->rate > 0 && p->expected_end_time > 0)
    job->expected_end_time = p->expected_end_time;
  job->properties_dirty = TRUE;

  if (state_changed || rate_appeared
      || now - job->last_signal_usec >= PROGRESS_SIGNAL_INTERVAL_USEC) {
    r = sd_bus_emit_signal (job->bus, job->path, BMAPD_JOB_INTERFACE, "Progress", "ttt",
                            job->bytes_done, job->bytes_total, job->rate);
    if (r < 0)
      bmapd_log (LOG_WARNING, "Progress signal of %s: %s", job->path, g_strerror (-r));
    job->last_signal_usec = now;
  }
  if (state_changed || rate_appeared
      || now - job->last_properties_usec >= PROGRESS_PROPERTIES_INTERVAL_USEC) {
    emit_progress_properties (job, state_changed);
  } else if (job->flush_source == NULL) {
    /* Values held back now still go out within the interval, even when the
     * engine stalls. */
    r = sd_event_add_time_relative (
        job->event, &job->flush_source, CLOCK_MONOTONIC,
        (guint64) (job->last_properties_usec + PROGRESS_PROPERTIES_INTERVAL_USEC - now), 0,
        on_flush_properties, job);
    if (r < 0)
      bmapd_log (LOG_WARNING, "cannot arm the progress timer of %s: %s", job->path,
                 g_strerror (-r));
  }
}

/* Phases come in order (preparing, writing, syncing, verifying); a fast
 * engine may go through several between two reads of the mailbox. Every
 * state is still announced, in order. */
static void
apply_skipped_phases (BmapdJob *job, guint phases, BmapPhase last)
{
  static const char *const names[] = { "State", NULL };

  for (guint phase = BMAP_PHASE_PREPARING; phase < last; phase++) {
    BmapdJobState state = state_for_phase ((BmapPhase) phase);

    if (!(phases & (1u << phase)) || state <= job->state)
      continue;
    set_state (job, state);
    emit_properties (job, names);
  }
}

static char *
describe_progress (BmapdJob *job)
{
  if (job->operation == BMAPD_JOB_CREATE) {
    if (job->bytes_total == 0)
      return g_strdup_printf ("after %" G_GUINT64_FORMAT " bytes", job->bytes_done);
    return g_strdup_printf ("after %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " bytes",
                            job->bytes_done, job->bytes_total);
  }
  if (job->write_done == 0 && job->state == BMAPD_JOB_PREPARING)
    return g_strdup_printf ("before writing; %s was not changed", job->device_node);
  if (job->state == BMAPD_JOB_SYNCING || job->state == BMAPD_JOB_VERIFYING)
    return g_strdup_printf ("while %s, after all %" G_GUINT64_FORMAT " bytes were written",
                            job->state_str, job->write_done);
  if (job->write_total == 0)
    return g_strdup_printf ("after %" G_GUINT64_FORMAT " bytes; %s holds a partial image",
                            job->write_done, job->device_node);
  return g_strdup_printf ("after %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                          " bytes; %s holds a partial image",
                          job->write_done, job->write_total, job->device_node);
}

static void
finish_from_worker (BmapdJob *job, GError *error)
{
  g_autofree char *progress = NULL;
  g_autofree char *message = NULL;

  if (error == NULL) {
    /* Done is all of it, even when the total was never known. */
    job->bytes_total = MAX (job->bytes_total, job->bytes_done);
    job->bytes_done = job->bytes_total;
    if (job->operation == BMAPD_JOB_FLASH) {
      g_autofree char *result = bmap_copy_result_describe (&job->mailbox_result);
      g_autofree char *after = NULL;

      g_mutex_lock (&job->mailbox_lock);
      after = g_steal_pointer (&job->mailbox_after);
      g_mutex_unlock (&job->mailbox_lock);
      job->bytes_checked = job->mailbox_result.bytes_checked;
      job->bytes_written = job->mailbox_result.bytes_written;
      g_free (job->result);
      job->result = g_strjoin (result != NULL && after != NULL ? "; " : "",
                               result != NULL ? result : "", after != NULL ? after : "", NULL);
    }
    /* Done even when the device went meanwhile (power-off removes it, an
     * eject takes its medium): the worker finished every step. */
    finish (job, BMAPD_JOB_DONE, NULL, NULL);
    return;
  }
  if (!job->stop_requested) {
    finish (job, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (error->code), error->message);
    return;
  }
  progress = describe_progress (job);
  switch (job->stop_reason) {
    case BMAPD_JOB_STOP_CANCEL:
      message = g_strdup_printf ("canceled by %s %s", job->stopped_by, progress);
      finish (job, BMAPD_JOB_CANCELED, NULL, message);
      break;
    case BMAPD_JOB_STOP_CALLER_GONE:
      message = g_strdup_printf ("canceled because the caller %s left the bus (bind-to-caller) %s",
                                 job->stopped_by, progress);
      finish (job, BMAPD_JOB_CANCELED, NULL, message);
      break;
    case BMAPD_JOB_STOP_DEVICE_GONE:
      message
          = g_strdup_printf ("%s was removed while being written, %s", job->device_node, progress);
      finish (job, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (BMAP_ERROR_DEVICE_GONE),
              message);
      break;
    case BMAPD_JOB_STOP_MEDIA_GONE:
      message = g_strdup_printf ("the medium in %s was removed or changed while being written, %s",
                                 job->device_node, progress);
      finish (job, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (BMAP_ERROR_DEVICE_GONE),
              message);
      break;
    case BMAPD_JOB_STOP_SHUTDOWN:
      message = g_strdup_printf ("bmapd was stopped (%s) %s", job->stopped_by, progress);
      finish (job, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (BMAP_ERROR_CANCELLED), message);
      break;
  }
}

static int
on_mailbox (sd_event_source *source, int fd, uint32_t revents, void *user_data)
{
  BmapdJob *job = user_data;
  eventfd_t value;
  BmapProgress progress;
  gboolean progress_pending, done;
  guint phases;
  GError *error;

  (void) eventfd_read (fd, &value);

  g_mutex_lock (&job->mailbox_lock);
  progress = job->mailbox_progress;
  progress_pending = job->mailbox_progress_pending;
  job->mailbox_progress_pending = FALSE;
  phases = job->mailbox_phases;
  job->mailbox_phases = 0;
  /* Kept apart: a later phase's report may have replaced the last
   * writing one before the loop read it. */
  job->write_done = job->mailbox_writing.bytes_done;
  job->write_total = job->mailbox_writing.bytes_total;
  done = job->mailbox_done;
  error = g_steal_pointer (&job->mailbox_error);
  g_mutex_unlock (&job->mailbox_lock);

  if (state_is_final (job->state)) {
    g_clear_error (&error);
    return 0;
  }
  if (progress_pending) {
    apply_skipped_phases (job, phases, progress.phase);
    apply_progress (job, &progress);
  }
  if (done) {
    if (job->group != NULL) {
      job->group_running = FALSE;
      group_card_ended (job->group);
    } else {
      g_thread_join (g_steal_pointer (&job->thread));
    }
    running_jobs = g_list_remove (running_jobs, job);
    job->event_source = sd_event_source_disable_unref (job->event_source);
    finish_from_worker (job, error);
    g_clear_error (&error);
  }
  return 0;
}

static int
on_expire (sd_event_source *source, uint64_t usec, void *user_data)
{
  BmapdJob *job = user_data;

  job->expire_source = sd_event_source_disable_unref (job->expire_source);
  if (job->expired_func != NULL)
    job->expired_func (job, job->handlers_data); /* frees the job */
  return 0;
}

/* "flash of "disk.img" onto /dev/sdb", for the log. */
static char *
describe_job (BmapdJob *job)
{
  GString *s = g_string_new (job->operation_str);

  if (job->description[0] != '\0')
    g_string_append_printf (s, " of \"%s\"", job->description);
  if (job->device_node != NULL)
    g_string_append_printf (s, " onto %s", job->device_node);
  return g_string_free (s, FALSE);
}

/* "Flashing "disk.img" onto /dev/sdb", the subject of the job's result. */
static char *
describe_job_for_people (BmapdJob *job)
{
  const char *image = job->description[0] != '\0' ? job->description : NULL;

  if (job->operation == BMAPD_JOB_CREATE)
    return image != NULL ? g_strdup_printf ("Creating the bmap of \"%s\"", image)
                         : g_strdup ("Creating a bmap");
  if (image != NULL)
    return g_strdup_printf ("Flashing \"%s\" onto %s", image, job->device_node);
  return g_strdup_printf ("Flashing an image onto %s", job->device_node);
}

/* The ErrorMessage a GUI shows as it is: one sentence that says what the
 * job was and what became of it, "Flashing "disk.img" onto /dev/sdb
 * failed: /dev/sdb: no space left at byte 4096: the image is larger than
 * the target." @detail is the engine's or the canceller's account. */
static char *
result_sentence (BmapdJob *job, BmapdJobState state, const char *detail)
{
  g_autofree char *subject = describe_job_for_people (job);
  g_autofree char *body = g_strstrip (g_strdup (detail != NULL ? detail : ""));
  gsize len = strlen (body);

  while (len > 0 && body[len - 1] == '.')
    body[--len] = '\0';
  if (state == BMAPD_JOB_DONE)
    return g_strdup ("");
  if (state == BMAPD_JOB_CANCELED) {
    const char *how = body;

    /* "job 3 was canceled by ... before it started": the subject already
     * says which job. */
    if (g_str_has_prefix (how, "job ") && strstr (how, " was canceled ") != NULL)
      how = strstr (how, " was canceled ") + strlen (" was ");
    if (len == 0)
      return g_strdup_printf ("%s was canceled.", subject);
    if (g_str_has_prefix (how, "canceled "))
      /* "canceled by uid 1000 (:1.42) after ...", from this file. */
      return g_strdup_printf ("%s was %s.", subject, how);
    return g_strdup_printf ("%s was canceled: %s.", subject, how);
  }
  if (len == 0)
    return g_strdup_printf ("%s failed.", subject);
  return g_strdup_printf ("%s failed: %s.", subject, body);
}

/* Reaches a final state: properties, the Finished signal, the log, the
 * pending Cancel calls, then the owner; removal after BMAPD_JOB_KEEP_USEC. */
static void
finish_full (BmapdJob *job, BmapdJobState state, const char *error_name, const char *error_message,
             guint64 keep_usec)
{
  static const char *const names[]
      = { "State", "ErrorName",       "ErrorMessage", "BytesTotal",   "BytesDone", "Progress",
          "Rate",  "ExpectedEndTime", "BytesChecked", "BytesWritten", "Result",    NULL };
  g_autofree char *what = NULL;
  int r;

  g_return_if_fail (!state_is_final (job->state));

  job->flush_source = sd_event_source_disable_unref (job->flush_source);
  set_state (job, state);
  g_free (job->error_name);
  job->error_name = g_strdup (error_name != NULL ? error_name : "");
  g_free (job->error_message);
  job->error_message = result_sentence (job, state, error_message);
  if (state == BMAPD_JOB_DONE) {
    /* The last Progress signal says the whole job is done, even when the
     * engine's last report came too soon after the one before to be sent. */
    job->progress = 1.0;
    r = sd_bus_emit_signal (job->bus, job->path, BMAPD_JOB_INTERFACE, "Progress", "ttt",
                            job->bytes_done, job->bytes_total, job->rate);
    if (r < 0)
      bmapd_log (LOG_WARNING, "Progress signal of %s: %s", job->path, g_strerror (-r));
  }
  job->rate = 0;
  job->expected_end_time = 0;
  emit_properties (job, names);
  r = sd_bus_emit_signal (job->bus, job->path, BMAPD_JOB_INTERFACE, "Finished", "sss",
                          job->state_str, job->error_name, job->error_message);
  if (r < 0)
    bmapd_log (LOG_WARNING, "Finished signal of %s: %s", job->path, g_strerror (-r));

  what = describe_job (job);
  if (state == BMAPD_JOB_DONE)
    bmapd_log_job (LOG_INFO, BMAPD_MESSAGE_JOB_FINISHED, job->id, job->operation_str,
                   job->device_node, job->state_str, "%s: done, %" G_GUINT64_FORMAT " bytes%s%s",
                   what, job->write_done, job->result[0] != '\0' ? "; " : "", job->result);
  else
    bmapd_log_job (state == BMAPD_JOB_FAILED ? LOG_ERR : LOG_NOTICE, BMAPD_MESSAGE_JOB_FINISHED,
                   job->id, job->operation_str, job->device_node, job->state_str,
                   "%s: %s: %s%s%s%s", what, job->state_str,
                   error_message != NULL ? error_message : "",
                   job->error_name[0] != '\0' ? " (" : "", job->error_name,
                   job->error_name[0] != '\0' ? ")" : "");

  /* Cancel() calls are answered once the device is closed; those still
   * waiting for polkit too: the job has ended anyway. */
  for (guint i = 0; i < job->cancel_requests->len; i++) {
    CancelRequest *request = g_ptr_array_index (job->cancel_requests, i);
    sd_bus_reply_method_return (request->call, NULL);
  }
  g_ptr_array_set_size (job->cancel_requests, 0);
  job->track = sd_bus_track_unref (job->track);

  r = sd_event_add_time_relative (job->event, &job->expire_source, CLOCK_MONOTONIC, keep_usec, 0,
                                  on_expire, job);
  if (r < 0)
    bmapd_log (LOG_WARNING, "cannot arm the removal timer of %s: %s", job->path, g_strerror (-r));

  if (job->finished_func != NULL)
    job->finished_func (job, job->handlers_data);
}

static void
finish (BmapdJob *job, BmapdJobState state, const char *error_name, const char *error_message)
{
  finish_full (job, state, error_name, error_message, BMAPD_JOB_KEEP_USEC);
}

/* ---- Cancel() ---- */

static void
cancel_request_free (CancelRequest *request)
{
  bmapd_polkit_check_free (request->check);
  sd_bus_message_unref (request->call);
  g_free (request);
}

static char *
describe_caller (sd_bus_message *m, uid_t uid)
{
  return g_strdup_printf ("uid %u (%s)", (guint) uid, sd_bus_message_get_sender (m));
}

static void
on_cancel_authorized (const sd_bus_error *error, gpointer user_data)
{
  CancelRequest *request = user_data;
  BmapdJob *job = request->job;
  g_autoptr (sd_bus_creds) creds = NULL;
  uid_t uid = (uid_t) -1;
  g_autofree char *who = NULL;

  bmapd_polkit_check_free (g_steal_pointer (&request->check));
  if (error != NULL && sd_bus_error_is_set (error)) {
    sd_bus_reply_method_error (request->call, error);
    g_ptr_array_remove (job->cancel_requests, request);
    return;
  }
  if (state_is_final (job->state)) {
    sd_bus_reply_method_return (request->call, NULL);
    g_ptr_array_remove (job->cancel_requests, request);
    return;
  }
  if (sd_bus_query_sender_creds (request->call, SD_BUS_CREDS_EUID, &creds) >= 0)
    (void) sd_bus_creds_get_euid (creds, &uid);
  who = describe_caller (request->call, uid);
  /* Replied to by finish(), once the device is closed. */
  bmapd_job_stop (job, BMAPD_JOB_STOP_CANCEL, who);
}

static int
job_method_cancel (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapdJob *job = userdata;
  g_autoptr (sd_bus_creds) creds = NULL;
  g_autoptr (GError) error = NULL;
  CancelRequest *request;
  uid_t uid;
  int r;

  if (state_is_final (job->state))
    return sd_bus_reply_method_return (m, NULL);

  r = sd_bus_query_sender_creds (m, SD_BUS_CREDS_EUID, &creds);
  if (r >= 0)
    r = sd_bus_creds_get_euid (creds, &uid);
  if (r < 0)
    return sd_bus_error_set_errnof (ret_error, r, "cannot find out who wants to cancel job %u",
                                    job->id);

  request = g_new0 (CancelRequest, 1);
  request->job = job;
  request->call = sd_bus_message_ref (m);
  g_ptr_array_add (job->cancel_requests, request);

  if (uid == job->uid) {
    g_autofree char *who = describe_caller (m, uid);
    bmapd_job_stop (job, BMAPD_JOB_STOP_CANCEL, who);
    return 1;
  }

  {
    g_autofree char *id_str = g_strdup_printf ("%u", job->id);
    g_autofree char *uid_str = g_strdup_printf ("%u", job->uid);
    const char *details[] = { "job",   id_str,   "job.uid",
                              uid_str, "device", job->device_node != NULL ? job->device_node : "",
                              NULL };

    /* No options: polkit may ask, as udisks2 lets it. */
    request->check = bmapd_polkit_check_new (job->bus, m, uid, BMAPD_ACTION_CANCEL, details, FALSE,
                                             on_cancel_authorized, request, &error);
  }
  if (request->check == NULL) {
    g_ptr_array_remove (job->cancel_requests, request);
    return sd_bus_error_setf (ret_error, bmap_error_code_to_dbus_name (error->code), "%s",
                              error->message);
  }
  return 1;
}

/* ---- public API ---- */

BmapdJob *
bmapd_job_new (sd_bus *bus, sd_event *event, guint id, BmapdJobOperation operation,
               const char *device_path, const char *device_node, const char *description, uid_t uid,
               GError **error)
{
  g_autoptr (BmapdJob) job = g_new0 (BmapdJob, 1);
  int r;

  job->id = id;
  job->operation = operation;
  job->operation_str = operation == BMAPD_JOB_FLASH ? "flash" : "create";
  job->device_path = g_strdup (device_path != NULL ? device_path : "/");
  job->device_node = g_strdup (device_node);
  job->description = g_strdup (description != NULL ? description : "");
  set_state (job, BMAPD_JOB_QUEUED);
  job->start_time = (guint64) g_get_real_time ();
  job->uid = (guint32) uid;
  job->error_name = g_strdup ("");
  job->error_message = g_strdup ("");
  job->result = g_strdup ("");
  job->path = g_strdup_printf (BMAPD_JOB_PATH_PREFIX "/%u", id);
  job->bus = sd_bus_ref (bus);
  job->event = sd_event_ref (event);
  job->image_fd = -1;
  job->out_fd = -1;
  job->cancellable = g_cancellable_new ();
  job->cancel_requests = g_ptr_array_new_with_free_func ((GDestroyNotify) cancel_request_free);
  g_mutex_init (&job->mailbox_lock);

  job->event_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (job->event_fd < 0) {
    bmap_error_set_errno (error, errno, "eventfd for job %u", id);
    return NULL;
  }
  r = sd_bus_add_object_vtable (bus, &job->slot, job->path, BMAPD_JOB_INTERFACE, job_vtable, job);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "exporting %s", job->path);
    return NULL;
  }
  r = sd_bus_emit_object_added (bus, job->path);
  if (r < 0)
    bmapd_log (LOG_WARNING, "InterfacesAdded for %s: %s", job->path, g_strerror (-r));
  return g_steal_pointer (&job);
}

void
bmapd_job_free (BmapdJob *job)
{
  if (job == NULL)
    return;
  if (job->thread != NULL) {
    /* Only reached when bmapd exits with a worker still running. */
    g_cancellable_cancel (job->cancellable);
    g_thread_join (g_steal_pointer (&job->thread));
  }
  if (job->group != NULL) {
    group_card_gone (job);
    if (job->group_running)
      group_stop_and_join (job->group);
    g_clear_pointer (&job->group, group_unref);
  }
  running_jobs = g_list_remove (running_jobs, job);
  g_clear_pointer (&job->cancel_requests, g_ptr_array_unref);
  if (job->slot != NULL) {
    /* At exit the bus is already closed: nobody to tell. */
    int r = sd_bus_is_open (job->bus) > 0 ? sd_bus_emit_object_removed (job->bus, job->path) : 0;
    if (r < 0)
      bmapd_log (LOG_WARNING, "InterfacesRemoved for %s: %s", job->path, g_strerror (-r));
    sd_bus_slot_unref (job->slot);
  }
  sd_bus_track_unref (job->track);
  sd_event_source_disable_unref (job->expire_source);
  sd_event_source_disable_unref (job->flush_source);
  sd_event_source_disable_unref (job->event_source);
  if (job->event_fd >= 0)
    close (job->event_fd);
  g_clear_pointer (&job->source, bmapd_source_free);
  g_clear_pointer (&job->target, bmap_target_free);
  g_clear_pointer (&job->map, bmap_map_free);
  if (job->image_fd >= 0)
    close (job->image_fd);
  if (job->out_fd >= 0)
    close (job->out_fd);
  g_clear_error (&job->mailbox_error);
  g_free (job->mailbox_after);
  g_mutex_clear (&job->mailbox_lock);
  g_clear_object (&job->cancellable);
  sd_bus_unref (job->bus);
  sd_event_unref (job->event);
  g_free (job->device_path);
  g_free (job->device_node);
  g_free (job->description);
  g_free (job->error_name);
  g_free (job->error_message);
  g_free (job->result);
  g_free (job->stopped_by);
  g_free (job->caller);
  g_free (job->path);
  g_free (job);
}

void
bmapd_job_set_handlers (BmapdJob *job, BmapdJobFunc finished, BmapdJobFunc expired,
                        gpointer user_data)
{
  job->finished_func = finished;
  job->expired_func = expired;
  job->handlers_data = user_data;
}

void
bmapd_job_set_abort_func (BmapdJob *job, BmapdJobAbortFunc func, gpointer user_data)
{
  job->abort_func = func;
  job->abort_data = user_data;
}

void
bmapd_job_set_flash (BmapdJob *job, BmapdSource *source, BmapMap *map, BmapTarget *target,
                     guint64 diskseq, gboolean verify, gboolean verify_written, guint64 bytes_total)
{
  job->source = source;
  job->diskseq = diskseq;
  job->map = map;
  job->target = target;
  job->verify = verify;
  job->verify_written = verify_written;
  job->bytes_total = bytes_total;
}

void
bmapd_job_set_flash_flags (BmapdJob *job, BmapdFlashFlags flags)
{
  job->flash_flags = flags;
}

void
bmapd_job_set_create (BmapdJob *job, int image_fd, int out_fd, BmapChecksumType checksum,
                      guint64 bytes_total)
{
  job->image_fd = image_fd;
  job->out_fd = out_fd;
  job->checksum = checksum;
  job->bytes_total = bytes_total;
}

/* ---- a set of cards, on the loop ---- */

static void
group_unref (JobGroup *group)
{
  if (!g_atomic_int_dec_and_test (&group->refs))
    return;
  /* Only at exit: every card's job is gone, the worker may be ending. */
  group_stop_and_join (group);
  g_clear_pointer (&group->source, bmapd_source_free);
  g_clear_pointer (&group->map, bmap_map_free);
  for (guint i = 0; i < group->n_targets; i++)
    g_object_unref (group->cancellables[i]);
  g_free (group->cancellables);
  g_free (group->targets);
  g_free (group->members);
  g_clear_object (&group->cancellable);
  g_free (group);
}

/* bmapd exits with the set's worker running: every card stops. */
static void
group_stop_and_join (JobGroup *group)
{
  if (group->thread == NULL)
    return;
  g_cancellable_cancel (group->cancellable);
  for (guint i = 0; i < group->n_targets; i++)
    g_cancellable_cancel (group->cancellables[i]);
  g_thread_join (g_steal_pointer (&group->thread));
}

/* Every card of the copy was stopped: the image need not be read on. */
static void
group_check_all_stopped (JobGroup *group)
{
  for (guint i = 0; i < group->n_targets; i++) {
    if (!g_cancellable_is_cancelled (group->cancellables[i]))
      return;
  }
  g_cancellable_cancel (group->cancellable);
}

static void
group_card_ended (JobGroup *group)
{
  if (--group->n_left == 0 && group->thread != NULL)
    g_thread_join (g_steal_pointer (&group->thread));
}

static void group_maybe_start (JobGroup *group);

/* A card that ends before the set started is no longer waited for. */
static void
group_card_gone (BmapdJob *job)
{
  JobGroup *group = job->group;

  if (group == NULL || group->thread != NULL || job->group_running)
    return;
  for (guint i = 0; i < group->n; i++) {
    if (group->members[i] == job)
      group->members[i] = NULL;
  }
  if (job->group_waiting) {
    job->group_waiting = FALSE;
    group->n_started--;
    job->event_source = sd_event_source_disable_unref (job->event_source);
  }
  group_maybe_start (group);
}

/* Starts the set's worker once every card still in it was started. */
static void
group_maybe_start (JobGroup *group)
{
  g_autoptr (GError) thread_error = NULL;
  guint live = 0;
  guint k = 0;

  for (guint i = 0; i < group->n; i++)
    live += group->members[i] != NULL;
  if (live == 0 || group->n_started < live || group->targets != NULL)
    return;

  group->targets = g_new0 (BmapCopyTarget, live);
  group->cancellables = g_new0 (GCancellable *, live);
  for (guint i = 0; i < group->n; i++) {
    BmapdJob *job = group->members[i];
    g_autofree char *what = NULL;

    if (job == NULL)
      continue;
    group->targets[k] = (BmapCopyTarget){
      .target = job->target,
      .progress_func = on_engine_progress,
      .progress_data = job,
      .cancellable = job->cancellable,
      .done_func = on_card_done,
      .done_data = job,
    };
    group->cancellables[k++] = g_object_ref (job->cancellable);
    job->group_waiting = FALSE;
    job->group_running = TRUE;
    set_state (job, BMAPD_JOB_PREPARING);
    emit_progress_properties (job, TRUE);
    running_jobs = g_list_prepend (running_jobs, job);
    what = describe_job (job);
    bmapd_log_job (LOG_INFO, BMAPD_MESSAGE_JOB_STARTED, job->id, job->operation_str,
                   job->device_node, NULL, "%s: started by uid %u, card %u of %u from one image",
                   what, job->uid, k, live);
  }
  group->n_targets = k;
  group->n_left = k;
  group->thread = g_thread_try_new ("bmapd-cards", group_main, group, &thread_error);
  if (group->thread != NULL)
    return;
  for (guint i = 0; i < group->n_targets; i++) {
    BmapdJob *job = group->targets[i].done_data;
    g_autofree char *message
        = g_strdup_printf ("cannot start a thread for the cards: %s", thread_error->message);

    job->group_running = FALSE;
    running_jobs = g_list_remove (running_jobs, job);
    job->event_source = sd_event_source_disable_unref (job->event_source);
    finish (job, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (BMAP_ERROR_IO), message);
  }
}

static gboolean
group_card_start (BmapdJob *job, GError **error)
{
  int r;

  r = sd_event_add_io (job->event, &job->event_source, job->event_fd, EPOLLIN, on_mailbox, job);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "watching the eventfd of job %u", job->id);
    return FALSE;
  }
  job->abort_func = NULL;
  job->group_waiting = TRUE;
  job->group->n_started++;
  group_maybe_start (job->group);
  return TRUE;
}

void
bmapd_job_group_flash (BmapdJob **jobs, guint n_jobs)
{
  JobGroup *group = g_new0 (JobGroup, 1);
  BmapdJob *first = jobs[0];

  group->refs = (gint) n_jobs;
  group->n = n_jobs;
  group->members = g_memdup2 (jobs, sizeof (BmapdJob *) * n_jobs);
  group->source = g_steal_pointer (&first->source);
  group->map = g_steal_pointer (&first->map);
  /* Auto-flash cards each came with a reader of the image: one is read. */
  for (guint i = 1; i < n_jobs; i++) {
    g_clear_pointer (&jobs[i]->source, bmapd_source_free);
    g_clear_pointer (&jobs[i]->map, bmap_map_free);
  }
  group->cancellable = g_cancellable_new ();
  group->options = (BmapCopyOptions){
    .map = group->map,
    .verify = first->verify,
    .verify_written = first->verify_written,
    .minimize_writes = (first->flash_flags & BMAPD_FLASH_MINIMIZE_WRITES) != 0,
    .discard = (first->flash_flags & BMAPD_FLASH_DISCARD) != 0,
    .zero_unmapped = (first->flash_flags & BMAPD_FLASH_ZERO_UNMAPPED) != 0,
    .relocate_gpt = (first->flash_flags & BMAPD_FLASH_RELOCATE_GPT) != 0,
    .cancellable = group->cancellable,
  };
  for (guint i = 0; i < n_jobs; i++)
    jobs[i]->group = group;
}

gboolean
bmapd_job_start (BmapdJob *job, GError **error)
{
  g_autoptr (GError) thread_error = NULL;
  g_autofree char *thread_name = g_strdup_printf ("bmapd-job-%u", job->id);
  g_autofree char *what = NULL;
  int r;

  g_return_val_if_fail (job->state == BMAPD_JOB_QUEUED, FALSE);

  if (job->group != NULL)
    return group_card_start (job, error);
  r = sd_event_add_io (job->event, &job->event_source, job->event_fd, EPOLLIN, on_mailbox, job);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "watching the eventfd of job %u", job->id);
    return FALSE;
  }
  job->abort_func = NULL;
  set_state (job, BMAPD_JOB_PREPARING);
  emit_progress_properties (job, TRUE);
  job->thread = g_thread_try_new (thread_name, worker_main, job, &thread_error);
  if (job->thread == NULL) {
    set_state (job, BMAPD_JOB_QUEUED);
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "cannot start a thread for job %u: %s", job->id,
                 thread_error->message);
    return FALSE;
  }
  running_jobs = g_list_prepend (running_jobs, job);
  what = describe_job (job);
  bmapd_log_job (LOG_INFO, BMAPD_MESSAGE_JOB_STARTED, job->id, job->operation_str, job->device_node,
                 NULL, "%s: started by uid %u", what, job->uid);
  return TRUE;
}

static int
on_caller_gone (sd_bus_track *track, void *user_data)
{
  BmapdJob *job = user_data;
  g_autofree char *who = g_strdup (job->caller);

  job->track = sd_bus_track_unref (job->track);
  bmapd_job_stop (job, BMAPD_JOB_STOP_CALLER_GONE, who);
  return 0;
}

gboolean
bmapd_job_bind_to_caller (BmapdJob *job, sd_bus_message *call, GError **error)
{
  int r;

  r = sd_bus_track_new (job->bus, &job->track, on_caller_gone, job);
  if (r >= 0)
    r = sd_bus_track_add_sender (job->track, call);
  if (r < 0) {
    job->track = sd_bus_track_unref (job->track);
    bmap_error_set_errno (error, -r, "following the caller of job %u", job->id);
    return FALSE;
  }
  g_free (job->caller);
  job->caller = g_strdup (sd_bus_message_get_sender (call));
  return TRUE;
}

void
bmapd_job_stop (BmapdJob *job, BmapdJobStopReason reason, const char *who)
{
  if (state_is_final (job->state) || job->stop_requested)
    return;
  job->stop_requested = TRUE;
  job->stop_reason = reason;
  g_free (job->stopped_by);
  job->stopped_by = g_strdup (who != NULL ? who : "");

  if (job->state == BMAPD_JOB_QUEUED) {
    g_autoptr (GError) error = NULL;
    BmapdJobState state = BMAPD_JOB_FAILED;

    switch (reason) {
      case BMAPD_JOB_STOP_CANCEL:
        g_set_error (&error, BMAP_ERROR, BMAP_ERROR_CANCELLED,
                     "job %u was canceled by %s before it started", job->id, who);
        state = BMAPD_JOB_CANCELED;
        break;
      case BMAPD_JOB_STOP_CALLER_GONE:
        g_set_error (&error, BMAP_ERROR, BMAP_ERROR_CANCELLED,
                     "job %u was canceled before it started: the caller %s left the bus", job->id,
                     who);
        state = BMAPD_JOB_CANCELED;
        break;
      case BMAPD_JOB_STOP_DEVICE_GONE:
      case BMAPD_JOB_STOP_MEDIA_GONE:
        g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE,
                     "%s was removed or changed before job %u started; nothing was written",
                     job->device_node, job->id);
        break;
      case BMAPD_JOB_STOP_SHUTDOWN:
        g_set_error (&error, BMAP_ERROR, BMAP_ERROR_CANCELLED,
                     "bmapd was stopped (%s) before job %u started", who, job->id);
        break;
    }
    if (job->abort_func != NULL)
      job->abort_func (job, state, error, job->abort_data);
    else if (job->state == BMAPD_JOB_QUEUED) /* its caller has it: it stays to be read */
      bmapd_job_fail_before_start (job, state, bmap_error_code_to_dbus_name (error->code),
                                   error->message);
    else
      bmapd_job_fail_early (job, state, bmap_error_code_to_dbus_name (error->code), error->message);
    return;
  }
  g_cancellable_cancel (job->cancellable);
  if (job->group != NULL && job->group_running)
    group_check_all_stopped (job->group);
}

guint
bmapd_job_abandon_running (const char *why)
{
  g_autoptr (GList) jobs = g_list_copy (running_jobs);
  guint n = 0;

  for (GList *l = jobs; l != NULL; l = l->next) {
    BmapdJob *job = l->data;
    g_autofree char *progress = NULL;
    g_autofree char *message = NULL;

    if (state_is_final (job->state))
      continue;
    g_cancellable_cancel (job->cancellable);
    progress = describe_progress (job);
    message
        = g_strdup_printf ("bmapd exited (%s) while the job was still running, %s", why, progress);
    finish (job, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (BMAP_ERROR_CANCELLED), message);
    n++;
  }
  return n;
}

void
bmapd_job_fail_early (BmapdJob *job, BmapdJobState state, const char *error_name,
                      const char *error_message)
{
  g_return_if_fail (job->state == BMAPD_JOB_QUEUED);
  group_card_gone (job);
  job->abort_func = NULL;
  /* Nobody saw the job start: no reason to keep it around. */
  finish_full (job, state, state == BMAPD_JOB_FAILED ? error_name : NULL, error_message, 0);
}

void
bmapd_job_fail_before_start (BmapdJob *job, BmapdJobState state, const char *error_name,
                             const char *error_message)
{
  g_return_if_fail (job->state == BMAPD_JOB_QUEUED);
  group_card_gone (job);
  job->abort_func = NULL;
  finish (job, state, state == BMAPD_JOB_FAILED ? error_name : NULL, error_message);
}

guint
bmapd_job_get_id (BmapdJob *job)
{
  return job->id;
}

const char *
bmapd_job_get_path (BmapdJob *job)
{
  return job->path;
}

BmapdJobState
bmapd_job_get_state (BmapdJob *job)
{
  return job->state;
}

BmapdJobOperation
bmapd_job_get_operation (BmapdJob *job)
{
  return job->operation;
}

const char *
bmapd_job_get_device_node (BmapdJob *job)
{
  return job->device_node;
}

uid_t
bmapd_job_get_uid (BmapdJob *job)
{
  return (uid_t) job->uid;
}

const char *
bmapd_job_get_device_path (BmapdJob *job)
{
  return job->device_path;
}

guint64
bmapd_job_get_bytes_done (BmapdJob *job)
{
  return job->write_done;
}

const char *
bmapd_job_get_error_name (BmapdJob *job)
{
  return job->error_name;
}

const char *
bmapd_job_get_error_message (BmapdJob *job)
{
  return job->error_message;
}

gboolean
bmapd_job_is_active (BmapdJob *job)
{
  return !state_is_final (job->state);
}

gboolean
bmapd_job_is_running (BmapdJob *job)
{
  return job->thread != NULL || job->group_waiting || job->group_running;
}
