/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Shared by the fuzz targets (fuzz-common.c is built into each). */

#include <glib.h>

#include "bmap-error.h"

/* libFuzzer's entry points. fuzz-common.c defines LLVMFuzzerInitialize():
 * GLib criticals become findings. */
int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

/* A broken promise of the code under test: a finding. */
G_GNUC_NORETURN void fuzz_die (const char *what, const char *detail);

/* The error codes of BMAP_ERROR that bad input may give, for
 * fuzz_check_input_error(). */
#define FUZZ_ERROR(code) (1u << (code))

/* A failure on bad input must say why, with one of the @allowed codes
 * (FUZZ_ERROR (BMAP_ERROR_BAD_IMAGE) | ...) of BMAP_ERROR: anything else
 * is a finding. @what names the call that failed. */
void fuzz_check_input_error (const GError *error, const char *what, guint allowed);
