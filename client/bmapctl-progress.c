/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bmapctl-json.h"
#include "bmapctl-progress.h"

#define PLAIN_INTERVAL_US (5 * G_USEC_PER_SEC)

typedef enum {
  MODE_QUIET,
  MODE_TERMINAL,
  MODE_PLAIN,
  MODE_JSON,
} Mode;

struct _BmapctlProgress {
  Mode mode;
  char *last_state;
  gint64 last_print_us;
  gboolean line_shown;
};

static guint64 (*fetched_func) (void);

void
bmapctl_progress_show_fetched (guint64 (*func) (void))
{
  fetched_func = func;
}

BmapctlProgress *
bmapctl_progress_new (const BmapctlOptions *options)
{
  BmapctlProgress *progress = g_new0 (BmapctlProgress, 1);

  if (options->json)
    progress->mode = MODE_JSON;
  else if (options->quiet)
    progress->mode = MODE_QUIET;
  else if (isatty (STDERR_FILENO))
    progress->mode = MODE_TERMINAL;
  else
    progress->mode = MODE_PLAIN;
  return progress;
}

void
bmapctl_progress_free (BmapctlProgress *progress)
{
  if (progress == NULL)
    return;
  bmapctl_progress_clear (progress);
  g_free (progress->last_state);
  g_free (progress);
}

static guint
terminal_width (void)
{
  struct winsize ws;

  if (ioctl (STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  return 80;
}

/* "writing  42%  1.2 GiB of 2.9 GiB  150.3 MiB/s  0:09 left" */
static char *
describe (const char *state, guint64 done, guint64 total, guint64 rate)
{
  g_autoptr (GString) line = g_string_new (NULL);
  g_autofree char *done_str = bmapctl_format_size (done);

  g_string_append_printf (line, "%-9s", state);
  if (total > 0) {
    guint64 clamped = MIN (done, total);
    g_autofree char *total_str = bmapctl_format_size (total);

    g_string_append_printf (line, " %3u%%  %s of %s", (guint) (clamped * 100 / total), done_str,
                            total_str);
  } else if (done > 0) {
    g_string_append_printf (line, "  %s", done_str);
  }
  if (rate > 0) {
    g_autofree char *rate_str = bmapctl_format_size (rate);

    g_string_append_printf (line, "  %s/s", rate_str);
    if (total > done) {
      guint64 left = (total - done) / rate;

      if (left >= 3600)
        g_string_append_printf (line, "  %u:%02u:%02u left", (guint) (left / 3600),
                                (guint) (left / 60 % 60), (guint) (left % 60));
      else
        g_string_append_printf (line, "  %u:%02u left", (guint) (left / 60), (guint) (left % 60));
    }
  }
  if (fetched_func != NULL) {
    g_autofree char *fetched = bmapctl_format_size (fetched_func ());

    g_string_append_printf (line, "  (%s downloaded)", fetched);
  }
  return g_string_free (g_steal_pointer (&line), FALSE);
}

void
bmapctl_progress_update (BmapctlProgress *progress, const char *state, guint64 done, guint64 total,
                         guint64 rate)
{
  gint64 now = g_get_monotonic_time ();
  gboolean state_changed = g_strcmp0 (state, progress->last_state) != 0;
  g_autofree char *line = NULL;

  if (state_changed) {
    g_free (progress->last_state);
    progress->last_state = g_strdup (state);
  }

  switch (progress->mode) {
    case MODE_QUIET:
      return;
    case MODE_JSON: {
      g_autoptr (GString) json = g_string_new ("{\"state\":");

      bmapctl_json_append_string (json, state);
      g_string_append_printf (
          json,
          ",\"bytes_done\":%" G_GUINT64_FORMAT ",\"bytes_total\":%" G_GUINT64_FORMAT
          ",\"rate\":%" G_GUINT64_FORMAT ",\"progress\":%.4f",
          done, total, rate, total > 0 ? (double) MIN (done, total) / total : 0.0);
      if (fetched_func != NULL)
        g_string_append_printf (json, ",\"bytes_downloaded\":%" G_GUINT64_FORMAT, fetched_func ());
      g_string_append (json, "}\n");
      fputs (json->str, stdout);
      fflush (stdout);
      return;
    }
    case MODE_TERMINAL: {
      guint width = terminal_width ();

      line = describe (state, done, total, rate);
      if (strlen (line) >= width)
        line[width - 1] = '\0';
      fprintf (stderr, "\r\033[K%s", line);
      fflush (stderr);
      progress->line_shown = TRUE;
      return;
    }
    case MODE_PLAIN:
      if (!state_changed && now - progress->last_print_us < PLAIN_INTERVAL_US)
        return;
      progress->last_print_us = now;
      line = describe (state, done, total, rate);
      fprintf (stderr, "%s\n", line);
      fflush (stderr);
      return;
    default:
      return;
  }
}

void
bmapctl_progress_clear (BmapctlProgress *progress)
{
  if (progress->mode == MODE_TERMINAL && progress->line_shown) {
    fputs ("\r\033[K", stderr);
    fflush (stderr);
    progress->line_shown = FALSE;
  }
}
