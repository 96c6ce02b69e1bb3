/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* One device's flash as the person follows it: from the Flash call, through
 * the job's states and Progress signals, to a result said in words. Fed by
 * the bus side (bmapd-flasher-client.c) or by a test; no GTK, no bus. */
typedef enum {
  BMAPD_FLASHER_JOB_STARTING,    /* about to call Flash */
  BMAPD_FLASHER_JOB_AUTHORIZING, /* Flash called, no answer yet: polkit may be asking */
  BMAPD_FLASHER_JOB_QUEUED,      /* the job exists, waiting for its turn */
  BMAPD_FLASHER_JOB_PREPARING,
  BMAPD_FLASHER_JOB_WRITING,
  BMAPD_FLASHER_JOB_SYNCING,
  BMAPD_FLASHER_JOB_VERIFYING,
  BMAPD_FLASHER_JOB_DONE,
  BMAPD_FLASHER_JOB_FAILED,
  BMAPD_FLASHER_JOB_CANCELED,
} BmapdFlasherJobState;

#define BMAPD_FLASHER_TYPE_JOB (bmapd_flasher_job_get_type ())
G_DECLARE_FINAL_TYPE (BmapdFlasherJob, bmapd_flasher_job, BMAPD_FLASHER, JOB, GObject)

BmapdFlasherJob *
bmapd_flasher_job_new (const char *device_path, const char *device_name, const char *device_node);

/* The Job object, once Flash answered (or once it was announced). */
void bmapd_flasher_job_set_object_path (BmapdFlasherJob *self, const char *object_path);
const char *bmapd_flasher_job_get_object_path (BmapdFlasherJob *self);
const char *bmapd_flasher_job_get_device_path (BmapdFlasherJob *self);
const char *bmapd_flasher_job_get_device_name (BmapdFlasherJob *self);
const char *bmapd_flasher_job_get_device_node (BmapdFlasherJob *self);

/* The Job's properties (a{sv}), whole or as PropertiesChanged gives them. */
void bmapd_flasher_job_update (BmapdFlasherJob *self, GVariant *properties);
/* The Progress signal. */
void bmapd_flasher_job_progress (BmapdFlasherJob *self, guint64 bytes_done, guint64 bytes_total,
                                 guint64 rate);
/* The Finished signal. */
void bmapd_flasher_job_finish (BmapdFlasherJob *self, const char *state, const char *error_name,
                               const char *error_message);
/* The Flash call failed: nothing was written (the daemon guarantees it). */
void bmapd_flasher_job_call_failed (BmapdFlasherJob *self, const GError *error);
/* Flash was called: until it answers there is no job in bmapd (polkit may
 * be asking), and the app shows the flash as waiting for permission. */
void bmapd_flasher_job_flash_called (BmapdFlasherJob *self);
/* Cancel before the job has a path: remembered, and applied once Flash
 * answers with one. */
void bmapd_flasher_job_request_cancel (BmapdFlasherJob *self);
gboolean bmapd_flasher_job_get_cancel_requested (BmapdFlasherJob *self);
/* TRUE once, when a cancel was requested and not yet sent to bmapd. */
gboolean bmapd_flasher_job_take_pending_cancel (BmapdFlasherJob *self);

BmapdFlasherJobState bmapd_flasher_job_get_state (BmapdFlasherJob *self);
const char *bmapd_flasher_job_state_to_string (BmapdFlasherJobState state);
gboolean bmapd_flasher_job_is_finished (BmapdFlasherJob *self);
/* 0..1 for the whole job, never going back. */
double bmapd_flasher_job_get_fraction (BmapdFlasherJob *self);
/* "Writing · 45.2 MB/s · 12 seconds left", at @now_usec (wall clock). */
char *bmapd_flasher_job_dup_status (BmapdFlasherJob *self, gint64 now_usec);
/* After the end: "Done and verified." (with minimize-writes, what was
 * checked and written) or what went wrong and what is on the card now.
 * NULL while it runs. */
char *bmapd_flasher_job_dup_result (BmapdFlasherJob *self);
/* The job's Result as a sentence: what its options did ("… found in
 * place, not written; not ejected: …"); NULL when it has none. */
char *bmapd_flasher_job_dup_details (BmapdFlasherJob *self);
/* Flashed with minimize-writes: the result says what was compared and
 * what was written (BytesChecked, BytesWritten). */
void bmapd_flasher_job_set_minimize_writes (BmapdFlasherJob *self, gboolean minimize_writes);
guint64 bmapd_flasher_job_get_bytes_checked (BmapdFlasherJob *self);
guint64 bmapd_flasher_job_get_bytes_written (BmapdFlasherJob *self);

G_END_DECLS
