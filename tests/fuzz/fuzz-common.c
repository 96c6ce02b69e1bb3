/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz-common.h"

/* A GLib critical (a g_return_if_fail() that input reached) is a finding:
 * abort(), which libFuzzer records with the input, where G_DEBUG's
 * breakpoint would leave no reproducer. */
static GLogWriterOutput
fuzz_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) {
    g_log_writer_standard_streams (level, fields, n_fields, data);
    abort ();
  }
  /* Messages from the code under test are not findings, and slow it down. */
  return G_LOG_WRITER_HANDLED;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  g_log_set_writer_func (fuzz_log_writer, NULL, NULL);
  return 0;
}

void
fuzz_die (const char *what, const char *detail)
{
  fprintf (stderr, "%s: %s%s%s\n", program_invocation_short_name, what, detail != NULL ? ": " : "",
           detail != NULL ? detail : "");
  abort ();
}

void
fuzz_check_input_error (const GError *error, const char *what, guint allowed)
{
  if (error == NULL || error->message == NULL || error->message[0] == '\0')
    fuzz_die (what, "failed without an error message");
  if (error->domain != BMAP_ERROR || error->code < 0 || error->code >= BMAP_ERROR_N_CODES
      || (allowed & FUZZ_ERROR (error->code)) == 0)
    fuzz_die (what, error->message);
}
