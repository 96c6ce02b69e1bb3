/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <syslog.h>

G_BEGIN_DECLS

/* MESSAGE_IDs of the journal entries for a job's start and end, so that
 * `journalctl MESSAGE_ID=...` lists every job. */
#define BMAPD_MESSAGE_JOB_STARTED  "56370ae6482046ed962e38a3d2d37a76"
#define BMAPD_MESSAGE_JOB_FINISHED "916b9e960f694cccb9fe8088f07bb1ba"
/* One entry per auto-flash card, when its job ends: a day's production is
 * `journalctl MESSAGE_ID=...` (fields in bmapd_log_card()). */
#define BMAPD_MESSAGE_AUTOFLASH_CARD "524a5880e6f947298346a4f9c6d7fc6f"

/* Logs to the journal when stderr is connected to it (JOURNAL_STREAM),
 * to stderr otherwise. LOG_DEBUG messages only with @debug. Every message
 * (and SERIAL) goes through bmap_text_escape(): control characters and
 * invalid UTF-8 from callers or devices are shown escaped. */
void bmapd_log_init (gboolean debug);

void bmapd_log (int priority, const char *format, ...) G_GNUC_PRINTF (2, 3);

/* A job's entry, with the structured fields JOB_ID, DEVICE, OPERATION,
 * RESULT (may be NULL) and MESSAGE_ID. */
void bmapd_log_job (int priority, const char *message_id, guint job_id, const char *operation,
                    const char *device, const char *result, const char *format, ...)
    G_GNUC_PRINTF (7, 8);

/* An auto-flash card's entry, with the structured fields RULE_ID, JOB_ID
 * (0 when the card got no job), DEVICE, SERIAL, RESULT (done, failed,
 * canceled), DURATION_USEC, BYTES, ERROR (a D-Bus error name, may be empty)
 * and MESSAGE_ID=BMAPD_MESSAGE_AUTOFLASH_CARD. */
void bmapd_log_card (int priority, guint rule_id, guint job_id, const char *device,
                     const char *serial, const char *result, guint64 duration_usec, guint64 bytes,
                     const char *error_name, const char *format, ...) G_GNUC_PRINTF (10, 11);

G_END_DECLS
