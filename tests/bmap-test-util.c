/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "bmap-test-util.h"

static GPtrArray *tmpdirs;

static void
remove_tmpdirs (void)
{
  for (guint i = 0; tmpdirs != NULL && i < tmpdirs->len; i++) {
    g_autofree char *cmd = NULL;
    g_autofree char *quoted = g_shell_quote (g_ptr_array_index (tmpdirs, i));

    cmd = g_strdup_printf ("rm -rf %s", quoted);
    if (system (cmd) != 0)
      g_printerr ("could not remove %s\n", (char *) g_ptr_array_index (tmpdirs, i));
  }
}

char *
bmap_test_tmpdir (void)
{
  g_autoptr (GError) error = NULL;
  char *dir = g_dir_make_tmp ("bmap-test-XXXXXX", &error);

  g_assert_no_error (error);
  if (tmpdirs == NULL) {
    tmpdirs = g_ptr_array_new_with_free_func (g_free);
    atexit (remove_tmpdirs);
  }
  g_ptr_array_add (tmpdirs, g_strdup (dir));
  return dir;
}

void
bmap_test_fill (void *buf, gsize len, guint32 seed)
{
  guint8 *p = buf;
  guint32 x = seed * 2654435761u + 0x9e3779b9u;

  for (gsize i = 0; i < len; i++) {
    /* xorshift32; never stuck at zero because x starts non-zero */
    if (x == 0)
      x = 0x12345678u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (guint8) (x >> 24) | 1;
  }
}

void
bmap_test_make_image (const char *path, guint64 size, const BmapTestExtent *extents,
                      guint n_extents)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (ftruncate (fd, (off_t) size), ==, 0);
  for (guint i = 0; i < n_extents; i++) {
    g_autofree guint8 *buf = g_malloc (extents[i].len);

    g_assert_cmpuint (extents[i].offset + extents[i].len, <=, size);
    bmap_test_fill (buf, extents[i].len, (guint32) extents[i].offset);
    g_assert_cmpint (pwrite (fd, buf, extents[i].len, (off_t) extents[i].offset), ==,
                     (gssize) extents[i].len);
  }
  g_assert_cmpint (fsync (fd), ==, 0);
  close (fd);
}

GBytes *
bmap_test_read_file (const char *path)
{
  g_autoptr (GError) error = NULL;
  char *contents = NULL;
  gsize len = 0;

  g_file_get_contents (path, &contents, &len, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (contents, len);
}

gboolean
bmap_test_have_program (const char *program)
{
  g_autofree char *path = g_find_program_in_path (program);

  return path != NULL;
}

int
bmap_test_run (const char *const *argv, char **out, char **err)
{
  g_autoptr (GError) error = NULL;
  int status = 0;

  g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, out, err, &status,
                &error);
  g_assert_no_error (error);
  if (WIFEXITED (status))
    return WEXITSTATUS (status);
  return -1;
}

int
bmap_test_sh (const char *format, ...)
{
  g_autofree char *cmd = NULL;
  va_list args;
  int status;

  va_start (args, format);
  cmd = g_strdup_vprintf (format, args);
  va_end (args);
  status = system (cmd);
  if (status == -1 || !WIFEXITED (status))
    return -1;
  return WEXITSTATUS (status);
}
