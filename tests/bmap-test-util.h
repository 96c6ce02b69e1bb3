/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* A fresh temporary directory, removed with its contents at exit. */
char *bmap_test_tmpdir (void);

/* Fills @buf with deterministic pseudo-random bytes (never a whole zero
 * block by accident) derived from @seed. */
void bmap_test_fill (void *buf, gsize len, guint32 seed);

/* A piece of data in a test image. */
typedef struct {
  guint64 offset;
  guint64 len;
} BmapTestExtent;

/* Creates a sparse file of @size bytes at @path with pseudo-random data in
 * the given extents (seeded by their offset) and holes elsewhere. */
void bmap_test_make_image (const char *path, guint64 size, const BmapTestExtent *extents,
                           guint n_extents);

/* Reads the whole file; aborts the test on failure. */
GBytes *bmap_test_read_file (const char *path);

/* TRUE when @program is on PATH. */
gboolean bmap_test_have_program (const char *program);

/* Runs @argv (NULL-terminated), captures stdout and stderr when the
 * pointers are not NULL, returns the exit status (or -1 when killed). */
int bmap_test_run (const char *const *argv, char **out, char **err);

/* Runs a shell command line with /bin/sh -c; returns its exit status. */
int bmap_test_sh (const char *format, ...) G_GNUC_PRINTF (1, 2);

G_END_DECLS
