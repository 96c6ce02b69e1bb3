/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-locate.h"
#include "bmap-text.h"
#include "bmapctl-abbrev.h"
#include "bmapctl-bmaptool.h"
#include "bmapctl-bus.h"
#include "bmapctl-common.h"
#include "bmapctl-json.h"

/* bmaptool's level names, coloured whatever stderr is (Python's logging
 * with bmaptool's formatter). */
#define BMAPTOOL_ERROR   "\033[91mERROR\033[0m"
#define BMAPTOOL_WARNING "\033[93mWARNING\033[0m"

static gboolean as_bmaptool;

void
bmapctl_set_program_name (const char *argv0)
{
  g_autofree char *base = g_path_get_basename (argv0 != NULL ? argv0 : "bmapctl");

  as_bmaptool = g_str_equal (base, "bmaptool");
  g_set_prgname (as_bmaptool ? "bmaptool" : "bmapctl");
}

gboolean
bmapctl_is_bmaptool (void)
{
  return as_bmaptool;
}

static const GOptionEntry global_entries[] = {
  { "quiet", 'q', 0, G_OPTION_ARG_NONE, NULL, "Print only errors", NULL },
  { "json", 0, 0, G_OPTION_ARG_NONE, NULL, "Machine-readable output (JSON lines)", NULL },
  { "no-ask-password", 0, 0, G_OPTION_ARG_NONE, NULL,
    "Never let polkit ask for a password (it does not without a terminal either)", NULL },
  { "local", 0, 0, G_OPTION_ARG_NONE, NULL, "Run the engine in-process, never through bmapd",
    NULL },
  { "debug", 'd', 0, G_OPTION_ARG_NONE, NULL, "Print debugging messages", NULL },
  { NULL },
};

/* The options GOption adds itself, for bmapctl-abbrev. */
static const GOptionEntry goption_entries[] = {
  { "help", 'h', 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { "help-all", 0, 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { "help-global", 0, 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { NULL },
};

const GOptionEntry *
bmapctl_global_option_entries (void)
{
  return global_entries;
}

gboolean
bmapctl_parse (BmapctlOptions *options, const BmapctlCommand *command, const GOptionEntry *entries,
               const char *description, int *argc, char ***argv)
{
  g_autoptr (GOptionContext) context = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *prgname = g_strdup (g_get_prgname ());
  g_autofree char *usage_name = g_strdup_printf ("%s %s", prgname, command->name);
  const char *param = command->args;
  GOptionEntry globals[G_N_ELEMENTS (global_entries)];
  GOptionGroup *group;
  gboolean parsed;
  const char *const *bmaptool_options = bmapctl_bmaptool_command_options (command->name);
  g_autoptr (GPtrArray) expanded = g_ptr_array_new_with_free_func (g_free);

  memcpy (globals, global_entries, sizeof (global_entries));
  globals[0].arg_data = &options->quiet;
  globals[1].arg_data = &options->json;
  globals[2].arg_data = &options->no_ask_password;
  globals[3].arg_data = &options->local;
  globals[4].arg_data = &options->debug;

  /* GOption's usage line is "PRGNAME [OPTION…] PARAM": the command goes
   * into the name, and its own [OPTION…] is GOption's. */
  if (g_str_has_prefix (param, "[OPTION…]"))
    param += strlen ("[OPTION…]");
  param += strspn (param, " ");
  context = g_option_context_new (param);
  g_option_context_set_summary (context, command->summary);
  if (description != NULL)
    g_option_context_set_description (context, description);
  if (entries != NULL)
    g_option_context_add_main_entries (context, entries, NULL);
  if (command->asks_polkit) {
    /* Where a password may be asked for, say so in the command's --help
     * rather than only under --help-global. */
    GOptionEntry ask[] = { globals[2], { NULL } };

    g_option_context_add_main_entries (context, ask, NULL);
    memmove (&globals[2], &globals[3], sizeof (globals) - 3 * sizeof (globals[0]));
  }
  group = g_option_group_new ("global", "Global Options:", "Show global options", NULL, NULL);
  g_option_group_add_entries (group, globals);
  g_option_context_add_group (context, group);
  g_option_context_set_strict_posix (context, FALSE);

  /* bmaptool's commands take prefixes of their long options, as argparse
   * does; @expanded holds the expanded ones until GOption has read them. */
  if (bmaptool_options != NULL) {
    const GOptionEntry *tables[4] = { 0 };
    gsize n = 0;

    if (entries != NULL)
      tables[n++] = entries;
    tables[n++] = globals;
    tables[n++] = goption_entries;
    if (!bmapctl_abbrev_expand (*argc, *argv, tables, bmaptool_options, expanded, &error)) {
      bmapctl_usage_error (command, "%s", error->message);
      return FALSE;
    }
  }

  /* --help prints the usage line from the program name, and exits. */
  g_set_prgname (usage_name);
  parsed = g_option_context_parse (context, argc, argv, &error);
  g_set_prgname (prgname);
  if (!parsed) {
    bmapctl_usage_error (command, "%s", error->message);
    return FALSE;
  }
  /* GOption leaves "--" where an argument after it begins with "-": it
   * ends the options, it is no argument ("copy -- -image dest"). */
  for (int i = 1; i < *argc; i++) {
    if (g_str_equal ((*argv)[i], "--")) {
      memmove (&(*argv)[i], &(*argv)[i + 1], sizeof (char *) * (gsize) (*argc - i));
      (*argc)--;
      break;
    }
  }
  if (options->local && command->bmapd_only) {
    bmapctl_usage_error (command, "--local cannot be used: only bmapd can answer %s",
                         command->name);
    return FALSE;
  }
  if (options->quiet && options->debug) {
    /* bmaptool's own check, with its exit status: not a usage error. */
    bmapctl_printerr ("--quiet and --debug cannot be used together");
    exit (BMAPCTL_EXIT_FAILED);
  }
  if (options->debug)
    g_setenv ("G_MESSAGES_DEBUG", "all", TRUE);
  for (guint i = 0; i < expanded->len; i++)
    g_debug ("option prefix read as %s", (const char *) g_ptr_array_index (expanded, i));
  return TRUE;
}

void
bmapctl_printerr (const char *format, ...)
{
  g_autofree char *raw = NULL;
  g_autofree char *msg = NULL;
  va_list args;

  va_start (args, format);
  raw = g_strdup_vprintf (format, args);
  va_end (args);
  /* Error messages from bmapd quote what callers and devices said. */
  msg = bmap_text_escape (raw, BMAP_TEXT_ESCAPE_KEEP_NEWLINES);
  if (as_bmaptool)
    fprintf (stderr, "bmaptool: " BMAPTOOL_ERROR ": %s\n", msg);
  else
    fprintf (stderr, "bmapctl: %s\n", msg);
}

void
bmapctl_info (const BmapctlOptions *options, const char *format, ...)
{
  g_autofree char *raw = NULL;
  g_autofree char *msg = NULL;
  va_list args;

  if (options->quiet || options->json)
    return;
  va_start (args, format);
  raw = g_strdup_vprintf (format, args);
  va_end (args);
  /* Paths and bmapd's messages, shown as they are only when printable. */
  msg = bmap_text_escape (raw, BMAP_TEXT_ESCAPE_DEFAULT);
  fprintf (stderr, "%s: %s\n", as_bmaptool ? "bmaptool: info" : "bmapctl", msg);
}

void
bmapctl_warning (const char *format, ...)
{
  g_autofree char *raw = NULL;
  g_autofree char *msg = NULL;
  va_list args;

  va_start (args, format);
  raw = g_strdup_vprintf (format, args);
  va_end (args);
  msg = bmap_text_escape (raw, BMAP_TEXT_ESCAPE_DEFAULT);
  fprintf (stderr, "%s: %s\n", as_bmaptool ? "bmaptool: " BMAPTOOL_WARNING : "bmapctl: warning",
           msg);
}

int
bmapctl_usage_error (const BmapctlCommand *command, const char *format, ...)
{
  g_autofree char *msg = NULL;
  va_list args;

  va_start (args, format);
  msg = g_strdup_vprintf (format, args);
  va_end (args);
  if (command != NULL)
    fprintf (stderr, "%s %s: %s\nTry '%s %s --help'.\n", g_get_prgname (), command->name, msg,
             g_get_prgname (), command->name);
  else
    fprintf (stderr, "%s: %s\nTry '%s --help'.\n", g_get_prgname (), msg, g_get_prgname ());
  return BMAPCTL_EXIT_USAGE;
}

int
bmapctl_exit_status_for_error (const GError *error)
{
  if (error->domain != BMAP_ERROR)
    return BMAPCTL_EXIT_FAILED;
  switch (error->code) {
    case BMAP_ERROR_NOT_AUTHORIZED:
      return BMAPCTL_EXIT_NOT_AUTHORIZED;
    case BMAP_ERROR_CANCELLED:
      return BMAPCTL_EXIT_CANCELED;
    default:
      return BMAPCTL_EXIT_FAILED;
  }
}

int
bmapctl_report_error (BmapctlOptions *options, const GError *error)
{
  const char *name = error->domain == BMAP_ERROR ? bmap_error_code_to_dbus_name (error->code)
                                                 : BMAP_DBUS_ERROR_PREFIX "IO";

  bmapctl_printerr ("%s", error->message);
  if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_NOT_AUTHORIZED)
      && bmapctl_polkit_agent_failure () != NULL)
    bmapctl_printerr ("no password could be asked for here: pkttyagent: %s",
                      bmapctl_polkit_agent_failure ());
  if (options->json) {
    g_autoptr (GString) json = g_string_new ("{\"result\":");

    bmapctl_json_append_string (
        json,
        error->domain == BMAP_ERROR && error->code == BMAP_ERROR_CANCELLED ? "canceled" : "failed");
    bmapctl_json_append_member (json, "error_name", name);
    bmapctl_json_append_member (json, "error_message", error->message);
    g_string_append (json, "}\n");
    fputs (json->str, stdout);
    fflush (stdout);
  }
  return bmapctl_exit_status_for_error (error);
}

char *
bmapctl_find_bmap (const char *bmap_arg, const char *image, GError **error)
{
  if (bmap_arg != NULL)
    return g_strdup (bmap_arg);
  if (g_str_equal (image, "-")) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NO_BMAP,
                 "no bmap can be looked for next to standard input: give --bmap FILE, or "
                 "--nobmap to write every block");
    return NULL;
  }
  return bmap_locate_for_image (image, error);
}

int
bmapctl_open_bmap (const char *bmap_arg, const char *image, GError **error)
{
  g_autofree char *path = bmapctl_find_bmap (bmap_arg, image, error);
  int fd;

  if (path == NULL)
    return -1;
  fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    bmap_error_set_errno (error, errno, "%s", path);
  return fd;
}

char *
bmapctl_format_size (guint64 bytes)
{
  g_autofree char *size = g_format_size_full (bytes, G_FORMAT_SIZE_IEC_UNITS);
  g_auto (GStrv) parts = g_strsplit (size, "\u00a0", -1);

  /* GLib puts a no-break space before the unit; tables and scripts want a
   * plain one. */
  return g_strjoinv (" ", parts);
}

static gpointer
signal_thread (gpointer data)
{
  GCancellable *cancellable = data;
  sigset_t set;
  int sig;
  guint count = 0;

  sigemptyset (&set);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGTERM);
  while (sigwait (&set, &sig) == 0) {
    if (++count == 1) {
      g_cancellable_cancel (cancellable);
    } else {
      static const char msg[] = "\nbmapctl: interrupted again, leaving without waiting\n";

      if (write (STDERR_FILENO, msg, sizeof (msg) - 1) < 0)
        _exit (BMAPCTL_EXIT_CANCELED);
      _exit (BMAPCTL_EXIT_CANCELED);
    }
  }
  return NULL;
}

void
bmapctl_cancel_on_signals (GCancellable *cancellable)
{
  sigset_t set;

  /* Blocked in every thread created from here on; one thread waits for
   * them, so cancelling never runs in a signal handler. */
  sigemptyset (&set);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGTERM);
  pthread_sigmask (SIG_BLOCK, &set, NULL);
  g_thread_unref (g_thread_new ("bmapctl-signals", signal_thread, g_object_ref (cancellable)));
}
