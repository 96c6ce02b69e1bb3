/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bmapd-source.h"
#include "libbmap.h"

G_BEGIN_DECLS

#define BMAPD_JOB_INTERFACE   "org.bmapd.bmapd1.Job"
#define BMAPD_JOB_PATH_PREFIX "/org/bmapd/bmapd1/job"

/* How long finished jobs stay exported for late readers. */
#define BMAPD_JOB_KEEP_USEC (60 * G_USEC_PER_SEC)

typedef enum {
  BMAPD_JOB_QUEUED, /* authorized, holding its device, waiting for its turn */
  BMAPD_JOB_PREPARING,
  BMAPD_JOB_WRITING,
  BMAPD_JOB_SYNCING,
  BMAPD_JOB_VERIFYING,
  BMAPD_JOB_DONE,
  BMAPD_JOB_FAILED,
  BMAPD_JOB_CANCELED,
} BmapdJobState;

typedef enum {
  BMAPD_JOB_FLASH,
  BMAPD_JOB_CREATE,
} BmapdJobOperation;

/* Why a job is stopped; decides its final state and message. */
typedef enum {
  BMAPD_JOB_STOP_CANCEL,      /* Cancel(): canceled */
  BMAPD_JOB_STOP_CALLER_GONE, /* bind-to-caller and the caller left: canceled */
  BMAPD_JOB_STOP_DEVICE_GONE, /* the device was removed: failed, DeviceGone */
  BMAPD_JOB_STOP_MEDIA_GONE,  /* the medium was removed or swapped: failed, DeviceGone */
  BMAPD_JOB_STOP_SHUTDOWN,    /* bmapd is stopping: failed, Cancelled */
} BmapdJobStopReason;

/* One flash or create: the org.bmapd.bmapd1.Job object, and the worker
 * thread that runs the engine. The thread only touches the engine and a
 * mailbox; progress and completion reach the event loop through an
 * eventfd, and only the loop thread touches sd-bus. */
typedef struct _BmapdJob BmapdJob;

typedef void (*BmapdJobFunc) (BmapdJob *job, gpointer user_data);
/* Called when the job is stopped while still queued and its call not yet
 * answered: the owner of the pending request ends it
 * (bmapd_job_fail_early()). */
typedef void (*BmapdJobAbortFunc) (BmapdJob *job, BmapdJobState state, const GError *error,
                                   gpointer user_data);

/* Exports the job in state "queued" and announces it: it is made once the
 * work is authorized. @device_path is "/" and @device_node NULL for
 * create. */
BmapdJob *bmapd_job_new (sd_bus *bus, sd_event *event, guint id, BmapdJobOperation operation,
                         const char *device_path, const char *device_node, const char *description,
                         uid_t uid, GError **error);
/* Unexports the job (InterfacesRemoved). The worker must have ended. */
void bmapd_job_free (BmapdJob *job);

/* @finished: the job reached done, failed or canceled (the device is
 * closed). @expired: it has been kept long enough and should be freed. */
void bmapd_job_set_handlers (BmapdJob *job, BmapdJobFunc finished, BmapdJobFunc expired,
                             gpointer user_data);
void bmapd_job_set_abort_func (BmapdJob *job, BmapdJobAbortFunc func, gpointer user_data);

/* The work: all arguments are taken. @map NULL copies every block.
 * @diskseq: the medium checked (0: none); the worker checks the device's
 * again before its first write, however long the job was queued. */
void bmapd_job_set_flash (BmapdJob *job, BmapdSource *source, BmapMap *map, BmapTarget *target,
                          guint64 diskseq, gboolean verify, gboolean verify_written,
                          guint64 bytes_total);
/* What a flash does beyond the copy: the Flash options minimize-writes,
 * discard, zero-unmapped, relocate-gpt, and eject and power-off (done
 * after every other step of a successful job). Before start. */
typedef enum {
  BMAPD_FLASH_MINIMIZE_WRITES = 1 << 0,
  BMAPD_FLASH_DISCARD = 1 << 1,
  BMAPD_FLASH_ZERO_UNMAPPED = 1 << 2,
  BMAPD_FLASH_RELOCATE_GPT = 1 << 3,
  BMAPD_FLASH_EJECT = 1 << 4,
  BMAPD_FLASH_POWER_OFF = 1 << 5,
} BmapdFlashFlags;

void bmapd_job_set_flash_flags (BmapdJob *job, BmapdFlashFlags flags);
void bmapd_job_set_create (BmapdJob *job, int image_fd, int out_fd, BmapChecksumType checksum,
                           guint64 bytes_total);

/* FlashMany: makes @jobs, each set up with bmapd_job_set_flash() (the
 * first with the image's source and map, which become the set's; the
 * others' are dropped) and the same options, the cards of one set: one worker
 * reads, decodes and hashes the image once and writes them all, each job
 * keeping its own progress, result and Cancel. Each card is queued on its
 * own; the set's worker starts once every card still in it has been
 * started (they wait "queued" until then, holding their place under
 * MaxJobs), so a set must not have more cards than MaxJobs. */
void bmapd_job_group_flash (BmapdJob **jobs, guint n_jobs);

/* Starts the worker thread of a queued job: state "preparing". A card of a
 * set waits for the others (see bmapd_job_group_flash()). */
gboolean bmapd_job_start (BmapdJob *job, GError **error);

/* Cancels the job when its caller (the sender of @call) leaves the bus. */
gboolean bmapd_job_bind_to_caller (BmapdJob *job, sd_bus_message *call, GError **error);

/* Stops the job (see BmapdJobStopReason). A running job ends when its
 * worker has closed the device; a queued one at once, through the abort
 * function while the call that made it is not answered yet. @who says who stopped it, for the
 * message. */
void bmapd_job_stop (BmapdJob *job, BmapdJobStopReason reason, const char *who);

/* For an exit that does not wait: every job whose worker still runs is
 * canceled and reported failed (Cancelled, with @why) at once, without
 * waiting for the worker, which must then never be joined (bmapd exits).
 * Returns how many. */
guint bmapd_job_abandon_running (const char *why);

/* Ends a job that never started (denied, or a check after authorization
 * failed) with @state (failed or canceled) and the error; it is removed at
 * once. @error_name is ignored for canceled. */
void bmapd_job_fail_early (BmapdJob *job, BmapdJobState state, const char *error_name,
                           const char *error_message);
/* Like bmapd_job_fail_early(), but the job stays exported for
 * BMAPD_JOB_KEEP_USEC like any finished job: nobody's method call reports
 * the error of an auto-flash card's job, so its object must. */
void bmapd_job_fail_before_start (BmapdJob *job, BmapdJobState state, const char *error_name,
                                  const char *error_message);

guint bmapd_job_get_id (BmapdJob *job);
const char *bmapd_job_get_path (BmapdJob *job);
BmapdJobState bmapd_job_get_state (BmapdJob *job);
BmapdJobOperation bmapd_job_get_operation (BmapdJob *job);
const char *bmapd_job_get_device_node (BmapdJob *job);
uid_t bmapd_job_get_uid (BmapdJob *job);
const char *bmapd_job_get_device_path (BmapdJob *job);
/* The bytes the job wrote (hashed, for create), not BytesDone's whole-job work. */
guint64 bmapd_job_get_bytes_done (BmapdJob *job);
/* Empty unless the job failed. */
const char *bmapd_job_get_error_name (BmapdJob *job);
const char *bmapd_job_get_error_message (BmapdJob *job);
/* Not yet done, failed or canceled. */
gboolean bmapd_job_is_active (BmapdJob *job);
/* The worker thread is running. */
gboolean bmapd_job_is_running (BmapdJob *job);

const char *bmapd_job_state_to_string (BmapdJobState state);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdJob, bmapd_job_free)

G_END_DECLS
