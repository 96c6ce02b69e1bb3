/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <locale.h>
#include <stdio.h>

#include "bmapctl-abbrev.h"
#include "bmapctl-bmaptool.h"
#include "bmapctl-commands.h"

static const BmapctlCommand commands[] = {
  { "create", "[OPTION…] IMAGE", "Create the bmap of an image", bmapctl_create, FALSE, TRUE },
  { "copy", "[OPTION…] IMAGE DEST…", "Write an image onto a device or into a file", bmapctl_copy,
    FALSE, TRUE },
  { "flash", "[OPTION…] IMAGE DEST", "Same as copy", bmapctl_copy, FALSE, TRUE },
  { "devices", "[OPTION…]", "List the block devices bmapd can write to", bmapctl_devices, TRUE },
  { "jobs", "[OPTION…]", "List running and recently finished jobs", bmapctl_jobs, TRUE },
  { "cancel", "[OPTION…] JOB", "Cancel a job (by id or object path)", bmapctl_cancel, TRUE, TRUE },
  { "monitor", "[OPTION…]", "Follow devices and jobs until Ctrl-C", bmapctl_monitor, TRUE },
  { "auto-flash", "[OPTION…] IMAGE | --list | --remove RULE",
    "Flash every card inserted from now on that matches", bmapctl_autoflash, TRUE, TRUE },
};

static void
print_help (FILE *out)
{
  fprintf (out, "Usage:\n  bmapctl [GLOBAL OPTION…] COMMAND [OPTION…] ARGS…\n\n"
                "Write disk images onto block devices using block maps (bmaps), through the\n"
                "bmapd service where privilege is needed, in-process where it is not.\n\n"
                "Commands:\n");
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    fprintf (out, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf (out, "\nGlobal options:\n"
                "  -q, --quiet          Print only errors\n"
                "  --json               Machine-readable output (JSON lines)\n"
                "  --no-ask-password    Never let polkit ask for a password\n"
                "  --local              Run the engine in-process, never through bmapd\n"
                "  -d, --debug          Print debugging messages\n"
                "  --version            Print the version and exit\n"
                "  -h, --help           Show this help\n\n"
                "As in bmaptool, the long options of create and copy, and those above, may be\n"
                "shortened to any unambiguous beginning (--nob for --nobmap).\n\n"
                "Exit status: 0 success, 1 failure, 2 usage error, 3 not authorized, 4 canceled.\n"
                "See 'bmapctl COMMAND --help' and bmapctl(1).\n");
}

/* The options before the command: the global ones, --help and --version,
 * by any prefix argparse would take. */
static gboolean
expand_global_options (int argc, char **argv, GPtrArray *expanded, GError **error)
{
  static const GOptionEntry own_entries[] = {
    { "help", 'h', 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
    { NULL },
  };
  const GOptionEntry *tables[] = { own_entries, bmapctl_global_option_entries (), NULL };

  return bmapctl_abbrev_expand (argc, argv, tables, bmapctl_bmaptool_global_options (), expanded,
                                error);
}

int
main (int argc, char **argv)
{
  BmapctlOptions options = { 0 };
  g_autoptr (GPtrArray) expanded = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GError) error = NULL;
  int cmd_index = -1;

  setlocale (LC_ALL, "");
  bmapctl_set_program_name (argv[0]);
  /* -d and GLib's messages go to stderr: stdout carries bmaps (create)
   * and JSON. */
  g_log_writer_default_set_use_stderr (TRUE);

  /* Global flags may stand before the command; none of them takes a value,
   * so the first word that is not an option is the command. */
  for (int i = 1; i < argc && cmd_index < 0; i++) {
    if (argv[i][0] != '-')
      cmd_index = i;
  }
  if (!expand_global_options (cmd_index < 0 ? argc : cmd_index, argv, expanded, &error))
    return bmapctl_usage_error (NULL, "%s", error->message);
  for (int i = 1; i < (cmd_index < 0 ? argc : cmd_index); i++) {
    const char *arg = argv[i];

    if (g_str_equal (arg, "--help") || g_str_equal (arg, "-h")) {
      print_help (stdout);
      return BMAPCTL_EXIT_OK;
    }
    if (g_str_equal (arg, "--version")) {
      /* As bmaptool, the version a caller may compare is the one of the
       * bmaptool whose options and output are matched. */
      if (bmapctl_is_bmaptool ())
        printf ("bmaptool %s (bmapctl %s)\n", BMAPCTL_BMAPTOOL_VERSION, PACKAGE_VERSION);
      else
        printf ("bmapctl %s\n", PACKAGE_VERSION);
      return BMAPCTL_EXIT_OK;
    }
  }
  if (cmd_index < 0) {
    print_help (stderr);
    return BMAPCTL_EXIT_USAGE;
  }

  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++) {
    if (g_str_equal (argv[cmd_index], commands[i].name)) {
      g_autofree char **cmd_argv = g_new0 (char *, argc + 1);
      int cmd_argc = 0;

      /* The command's own parser sees the command name first, then every
       * other argument, globals included. */
      cmd_argv[cmd_argc++] = argv[cmd_index];
      for (int j = 1; j < argc; j++) {
        if (j != cmd_index)
          cmd_argv[cmd_argc++] = argv[j];
      }
      return commands[i].run (&commands[i], &options, cmd_argc, cmd_argv);
    }
  }
  return bmapctl_usage_error (NULL, "unknown command '%s'", argv[cmd_index]);
}
