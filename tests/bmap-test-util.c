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

void
bmap_test_assert_same_content (const char *a, const char *b)
{
  g_autoptr (GBytes) da = bmap_test_read_file (a);
  g_autoptr (GBytes) db = bmap_test_read_file (b);
  const guint8 *pa = g_bytes_get_data (da, NULL);
  const guint8 *pb = g_bytes_get_data (db, NULL);

  g_assert_cmpuint (g_bytes_get_size (da), ==, g_bytes_get_size (db));
  for (gsize i = 0; i < g_bytes_get_size (da); i++) {
    if (pa[i] != pb[i]) {
      g_test_message ("%s and %s differ first at byte %" G_GSIZE_FORMAT, a, b, i);
      g_assert_cmphex (pa[i], ==, pb[i]);
    }
  }
}

gboolean
bmap_test_can_use_loop (void)
{
  if (getuid () != 0) {
    g_test_skip ("needs root for loop devices");
    return FALSE;
  }
  if (!g_file_test ("/dev/loop-control", G_FILE_TEST_EXISTS)) {
    g_test_skip ("no /dev/loop-control");
    return FALSE;
  }
  return TRUE;
}

char *
bmap_test_loop_attach (const char *backing)
{
  g_autofree char *out = NULL;
  const char *argv[] = { "losetup", "--find", "--show", backing, NULL };

  if (bmap_test_run (argv, &out, NULL) != 0)
    return NULL;
  return g_strstrip (g_steal_pointer (&out));
}

void
bmap_test_loop_detach (const char *dev)
{
  const char *argv[] = { "losetup", "-d", dev, NULL };

  bmap_test_run (argv, NULL, NULL);
}

gpointer
bmap_test_feeder_thread (gpointer data)
{
  BmapTestFeeder *feeder = data;
  const guint8 *p = g_bytes_get_data (feeder->data, NULL);
  gsize half = feeder->len / 2;

  for (gsize pos = 0; pos < feeder->len;) {
    gssize n = write (feeder->fd, p + pos, MIN (feeder->len - pos, 64 * 1024));

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    /* The reader is in the middle of the stream now. */
    if (feeder->cancel_at_half != NULL && pos < half && pos + (gsize) n >= half)
      g_cancellable_cancel (feeder->cancel_at_half);
    pos += (gsize) n;
  }
  close (feeder->fd);
  return NULL;
}
