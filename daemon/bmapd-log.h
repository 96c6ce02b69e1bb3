/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <syslog.h>

G_BEGIN_DECLS

/* MESSAGE_IDs of the journal entries for a job's start and end, so that
 * `journalctl MESSAGE_ID=...` lists every job. */
#define BMAPD_MESSAGE_JOB_STARTED  "56370ae6482046ed962e38a3d2d37a76"
#define BMAPD_MESSAGE_JOB_FINISHED "916b9e960f694cccb9fe8088f07bb1ba"

/* Logs to the journal when stderr is connected to it (JOURNAL_STREAM),
 * to stderr otherwise. LOG_DEBUG messages only with @debug. */
void bmapd_log_init (gboolean debug);

void bmapd_log (int priority, const char *format, ...) G_GNUC_PRINTF (2, 3);

/* A job's entry, with the structured fields JOB_ID, DEVICE, OPERATION,
 * RESULT (may be NULL) and MESSAGE_ID. */
void bmapd_log_job (int priority, const char *message_id, guint job_id, const char *operation,
                    const char *device, const char *result, const char *format, ...)
    G_GNUC_PRINTF (7, 8);

G_END_DECLS
