/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdio.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "bmap-text.h"
#include "bmapd-log.h"

static gboolean use_journal;
static gboolean log_debug;

/* JOURNAL_STREAM is "dev:ino" of the stream systemd connected stderr to;
 * it is inherited by children that may have another stderr, so compare. */
static gboolean
stderr_is_journal (void)
{
  const char *env = g_getenv ("JOURNAL_STREAM");
  unsigned long long dev, ino;
  struct stat st;

  if (env == NULL || sscanf (env, "%llu:%llu", &dev, &ino) != 2)
    return FALSE;
  if (fstat (STDERR_FILENO, &st) < 0)
    return FALSE;
  return st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
}

void
bmapd_log_init (gboolean debug)
{
  use_journal = stderr_is_journal ();
  log_debug = debug;
}

static const char *
priority_prefix (int priority)
{
  switch (priority) {
    case LOG_EMERG:
    case LOG_ALERT:
    case LOG_CRIT:
    case LOG_ERR:
      return "error: ";
    case LOG_WARNING:
      return "warning: ";
    case LOG_DEBUG:
      return "debug: ";
    default:
      return "";
  }
}

/* Messages carry strings from callers (a job's Description, paths, error
 * texts) and from devices: shown escaped, so that none can drive the
 * terminal of whoever reads the log, or forge a line of it. */
static char *
format_message (const char *format, va_list args)
{
  g_autofree char *raw = g_strdup_vprintf (format, args);

  return bmap_text_escape (raw, BMAP_TEXT_ESCAPE_DEFAULT);
}

void
bmapd_log (int priority, const char *format, ...)
{
  va_list args;
  g_autofree char *message = NULL;

  if (priority == LOG_DEBUG && !log_debug)
    return;
  va_start (args, format);
  message = format_message (format, args);
  va_end (args);

  if (use_journal)
    sd_journal_send ("MESSAGE=%s", message, "PRIORITY=%d", priority, NULL);
  else
    fprintf (stderr, "bmapd: %s%s\n", priority_prefix (priority), message);
}

void
bmapd_log_job (int priority, const char *message_id, guint job_id, const char *operation,
               const char *device, const char *result, const char *format, ...)
{
  va_list args;
  g_autofree char *message = NULL;

  va_start (args, format);
  message = format_message (format, args);
  va_end (args);

  if (use_journal) {
    sd_journal_send ("MESSAGE=%s", message, "PRIORITY=%d", priority, "MESSAGE_ID=%s", message_id,
                     "JOB_ID=%u", job_id, "OPERATION=%s", operation, "DEVICE=%s",
                     device != NULL ? device : "", "RESULT=%s", result != NULL ? result : "", NULL);
  } else {
    fprintf (stderr, "bmapd: %sjob %u: %s\n", priority_prefix (priority), job_id, message);
  }
}

void
bmapd_log_card (int priority, guint rule_id, guint job_id, const char *device, const char *serial,
                const char *result, guint64 duration_usec, guint64 bytes, const char *error_name,
                const char *format, ...)
{
  va_list args;
  g_autofree char *message = NULL;
  g_autofree char *serial_escaped = bmap_text_escape (serial, BMAP_TEXT_ESCAPE_DEFAULT);

  va_start (args, format);
  message = format_message (format, args);
  va_end (args);
  serial = serial_escaped;

  if (use_journal) {
    sd_journal_send ("MESSAGE=%s", message, "PRIORITY=%d", priority,
                     "MESSAGE_ID=" BMAPD_MESSAGE_AUTOFLASH_CARD, "RULE_ID=%u", rule_id, "JOB_ID=%u",
                     job_id, "DEVICE=%s", device != NULL ? device : "", "SERIAL=%s",
                     serial != NULL ? serial : "", "RESULT=%s", result,
                     "DURATION_USEC=%" G_GUINT64_FORMAT, duration_usec, "BYTES=%" G_GUINT64_FORMAT,
                     bytes, "ERROR=%s", error_name != NULL ? error_name : "", NULL);
  } else {
    fprintf (stderr, "bmapd: %sauto-flash rule %u: %s\n", priority_prefix (priority), rule_id,
             message);
  }
}
