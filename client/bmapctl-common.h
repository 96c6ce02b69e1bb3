/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Exit statuses, as CLI.md lists them. */
typedef enum {
  BMAPCTL_EXIT_OK = 0,
  BMAPCTL_EXIT_FAILED = 1,
  BMAPCTL_EXIT_USAGE = 2,
  BMAPCTL_EXIT_NOT_AUTHORIZED = 3,
  BMAPCTL_EXIT_CANCELED = 4,
} BmapctlExit;

/* Global options, shared by every command. */
typedef struct {
  gboolean quiet;
  gboolean json;
  gboolean no_ask_password;
  gboolean local;
  gboolean debug;
  /* copy --psplash-pipe: progress also goes to this FIFO, as bmaptool's
   * "PROGRESS N" lines. */
  const char *psplash_pipe;
} BmapctlOptions;

typedef struct _BmapctlCommand BmapctlCommand;
typedef int (*BmapctlCommandFunc) (const BmapctlCommand *command, BmapctlOptions *options, int argc,
                                   char **argv);

struct _BmapctlCommand {
  const char *name;
  const char *args;    /* "[OPTION…] IMAGE DEST" */
  const char *summary; /* one line for the command list */
  BmapctlCommandFunc run;
  gboolean bmapd_only;  /* nothing to run in-process: --local is refused */
  gboolean asks_polkit; /* calls a method polkit checks: --no-ask-password in its --help */
};

/* Parses @argv (argv[0] is the command name) with the command's @entries
 * plus the global options. Returns FALSE after printing a usage error;
 * exits 0 after --help. */
gboolean
bmapctl_parse (BmapctlOptions *options, const BmapctlCommand *command, const GOptionEntry *entries,
               const char *description, int *argc, char ***argv);

/* The global options' table (names and arguments only), for the words
 * before the command. */
const GOptionEntry *bmapctl_global_option_entries (void);

/* Installed as "bmaptool" (a symlink), bmapctl prints what bmaptool prints
 * where tools parse it. Decided once, from argv[0]. */
void bmapctl_set_program_name (const char *argv0);
gboolean bmapctl_is_bmaptool (void);

/* Prints "bmapctl: MESSAGE" (as bmaptool: "bmaptool: ERROR: MESSAGE") to
 * stderr. */
void bmapctl_printerr (const char *format, ...) G_GNUC_PRINTF (1, 2);
/* One informative line on stderr, not with -q or --json: "bmapctl: MESSAGE",
 * as bmaptool "bmaptool: info: MESSAGE". */
void bmapctl_info (const BmapctlOptions *options, const char *format, ...) G_GNUC_PRINTF (2, 3);
/* A warning on stderr, also with -q (bmaptool shows warnings then too). */
void bmapctl_warning (const char *format, ...) G_GNUC_PRINTF (1, 2);
/* Prints a usage error and returns BMAPCTL_EXIT_USAGE. */
int
bmapctl_usage_error (const BmapctlCommand *command, const char *format, ...) G_GNUC_PRINTF (2, 3);
/* Prints @error (with --json also as a result object) and returns the exit
 * status it maps onto. */
int bmapctl_report_error (BmapctlOptions *options, const GError *error);
/* The exit status for an error of the BMAP_ERROR domain. */
int bmapctl_exit_status_for_error (const GError *error);

/* The bmap of @image: @bmap_arg when given, else the one found next to the
 * image as bmaptool finds it. Standard input ("-") has no neighbours, so it
 * needs @bmap_arg. NULL with BMAP_ERROR_NO_BMAP when there is none. */
char *bmapctl_find_bmap (const char *bmap_arg, const char *image, GError **error);
/* The same, opened read-only; -1 with @error set. */
int bmapctl_open_bmap (const char *bmap_arg, const char *image, GError **error);

/* "1.5 GiB" */
char *bmapctl_format_size (guint64 bytes);

/* Cancels @cancellable on the first SIGINT/SIGTERM, exits with
 * BMAPCTL_EXIT_CANCELED on the second. Call before starting any thread. */
void bmapctl_cancel_on_signals (GCancellable *cancellable);

G_END_DECLS
