/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Shared by the fuzz targets. */

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

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

static inline void
fuzz_init (void)
{
  g_log_set_writer_func (fuzz_log_writer, NULL, NULL);
}

/* A broken promise of the code under test: a finding. */
G_GNUC_NORETURN static inline void
fuzz_die (const char *what, const char *detail)
{
  fprintf (stderr, "%s: %s%s%s\n", program_invocation_short_name, what, detail != NULL ? ": " : "",
           detail != NULL ? detail : "");
  abort ();
}
