/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

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

/* Asserts that the two files hold the same bytes; the message names the
 * first byte that differs. */
void bmap_test_assert_same_content (const char *a, const char *b);

/* TRUE when loop devices can be made (root, /dev/loop-control); marks the
 * test skipped with the reason otherwise. */
gboolean bmap_test_can_use_loop (void);

/* Attaches @backing to a free loop device; its node, or NULL when losetup
 * failed. */
char *bmap_test_loop_attach (const char *backing);

/* Detaches @dev; errors are ignored (cleanup). */
void bmap_test_loop_detach (const char *dev);

/* The writing end of a pipe fed from a thread. */
typedef struct {
  int fd;                       /* closed when done */
  GBytes *data;                 /* what is written */
  gsize len;                    /* how much of @data: less cuts the stream short */
  GCancellable *cancel_at_half; /* cancelled when half of @len went in, or NULL */
} BmapTestFeeder;

/* A GThreadFunc: writes @data (a BmapTestFeeder) into its pipe in 64 KiB
 * pieces, then closes it. */
gpointer bmap_test_feeder_thread (gpointer data);

G_END_DECLS
