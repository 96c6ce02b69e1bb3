/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmapctl-json.h"
#include "bmapctl-progress.h"

#define PLAIN_INTERVAL_US (5 * G_USEC_PER_SEC)

typedef enum {
  MODE_QUIET,
  MODE_TERMINAL,
  MODE_PLAIN,
  MODE_JSON,
  MODE_BMAPTOOL, /* "bmaptool: info: 42% copied", on a terminal only */
} Mode;

struct _BmapctlProgress {
  Mode mode;
  char *last_state;
  gint64 last_print_us;
  gboolean line_shown;
  int last_percent;
  char *psplash_pipe;
  int last_psplash_percent;
  guint64 checked;
  guint64 written;
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

  progress->last_percent = -1;
  progress->last_psplash_percent = -1;
  if (options->json)
    progress->mode = MODE_JSON;
  else if (options->quiet)
    progress->mode = MODE_QUIET;
  else if (bmapctl_is_bmaptool ())
    /* bmaptool shows progress only when both stdout and stderr are
     * terminals and -d is not given; tools reading its output see none. */
    progress->mode = isatty (STDERR_FILENO) && isatty (STDOUT_FILENO) && !options->debug
                         ? MODE_BMAPTOOL
                         : MODE_QUIET;
  else if (isatty (STDERR_FILENO))
    progress->mode = MODE_TERMINAL;
  else
    progress->mode = MODE_PLAIN;

  if (options->psplash_pipe != NULL) {
    struct stat st;

    /* Best effort, as bmaptool: a missing psplash never stops a copy. */
    if (stat (options->psplash_pipe, &st) == 0 && S_ISFIFO (st.st_mode))
      progress->psplash_pipe = g_strdup (options->psplash_pipe);
    else
      bmapctl_warning ("'%s' is not a pipe, so psplash progress will not be updated",
                       options->psplash_pipe);
  }
  return progress;
}

void
bmapctl_progress_free (BmapctlProgress *progress)
{
  if (progress == NULL)
    return;
  bmapctl_progress_clear (progress);
  g_free (progress->last_state);
  g_free (progress->psplash_pipe);
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

void
bmapctl_progress_set_io (BmapctlProgress *progress, guint64 checked, guint64 written)
{
  progress->checked = checked;
  progress->written = written;
}

/* "writing  42%  1.2 GiB of 2.9 GiB  150.3 MiB/s  0:09 left", and with
 * minimize-writes "  checked 1.1 GiB, wrote 36 MiB". */
static char *
describe (BmapctlProgress *progress, const char *state, guint64 done, guint64 total, guint64 rate)
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
  if (progress->checked > 0) {
    g_autofree char *checked = bmapctl_format_size (progress->checked);
    g_autofree char *written = bmapctl_format_size (progress->written);

    g_string_append_printf (line, "  checked %s, wrote %s", checked, written);
  }
  return g_string_free (g_steal_pointer (&line), FALSE);
}

/* psplash reads "PROGRESS N" commands from its FIFO. Opened without
 * blocking for each update, so a psplash that is gone or not yet there is
 * skipped. */
static void
psplash_update (BmapctlProgress *progress, int percent)
{
  g_autofree char *command = NULL;
  int fd;

  if (percent == progress->last_psplash_percent)
    return;
  progress->last_psplash_percent = percent;
  fd = open (progress->psplash_pipe, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return;
  command = g_strdup_printf ("PROGRESS %d\n", percent);
  if (write (fd, command, strlen (command)) < 0)
    g_debug ("%s: %s", progress->psplash_pipe, g_strerror (errno));
  close (fd);
}

void
bmapctl_progress_update (BmapctlProgress *progress, const char *state, guint64 done, guint64 total,
                         guint64 rate)
{
  gint64 now = g_get_monotonic_time ();
  gboolean state_changed = g_strcmp0 (state, progress->last_state) != 0;
  /* Like bmaptool, a percentage once something was written. */
  gboolean writing = g_str_equal (state, "writing") && total > 0 && done > 0;
  /* Reports are rate-limited: the last one while writing may say less than
   * 100 %, but syncing or verifying means every block was written. */
  gboolean written = g_str_equal (state, "syncing") || g_str_equal (state, "verifying");
  int percent = writing ? (int) (MIN (done, total) * 100 / total) : written ? 100 : -1;
  g_autofree char *line = NULL;

  if (state_changed) {
    g_free (progress->last_state);
    progress->last_state = g_strdup (state);
  }
  if (progress->psplash_pipe != NULL && percent >= 0)
    psplash_update (progress, percent);

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
      if (progress->checked > 0)
        g_string_append_printf (
            json, ",\"bytes_checked\":%" G_GUINT64_FORMAT ",\"bytes_written\":%" G_GUINT64_FORMAT,
            progress->checked, progress->written);
      g_string_append (json, "}\n");
      fputs (json->str, stdout);
      fflush (stdout);
      return;
    }
    case MODE_TERMINAL: {
      guint width = terminal_width ();

      line = describe (progress, state, done, total, rate);
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
      line = describe (progress, state, done, total, rate);
      fprintf (stderr, "%s\n", line);
      fflush (stderr);
      return;
    case MODE_BMAPTOOL:
      if (percent < 0 || percent == progress->last_percent)
        return;
      /* bmaptool ends each line and moves back up over it, so that an
       * error printed meanwhile starts on a line of its own. */
      fprintf (stderr, "%s\rbmaptool: info: %d%% copied\n", progress->line_shown ? "\033[1A" : "",
               percent);
      fflush (stderr);
      progress->last_percent = percent;
      progress->line_shown = TRUE;
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
