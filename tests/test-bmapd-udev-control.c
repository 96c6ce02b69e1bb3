/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bmapd-udev-control.h"

/* A SOCK_SEQPACKET socket bound at @path, as udevd binds its control
 * socket; listening on it or not. */
static int
bind_control (const char *path, gboolean listening)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpuint (strlen (path), <, sizeof addr.sun_path);
  strcpy (addr.sun_path, path);
  g_assert_no_errno (bind (fd, (struct sockaddr *) &addr, sizeof addr));
  if (listening)
    g_assert_no_errno (listen (fd, 4));
  return fd;
}

static char *
control_path (const char *dir)
{
  return g_build_filename (dir, "control", NULL);
}

static void
test_absent (void)
{
  g_autofree char *dir = g_dir_make_tmp ("bmapd-udev-XXXXXX", NULL);
  g_autofree char *path = control_path (dir);
  int errsv = -1;

  g_assert_cmpint (bmapd_udev_control_probe (path, &errsv), ==, BMAPD_UDEV_CONTROL_ABSENT);
  g_assert_cmpint (errsv, ==, ENOENT);
  g_assert_no_errno (rmdir (dir));
}

/* What a udevd that died leaves: the socket file, nobody behind it. */
static void
test_left_behind (void)
{
  g_autofree char *dir = g_dir_make_tmp ("bmapd-udev-XXXXXX", NULL);
  g_autofree char *path = control_path (dir);
  int fd = bind_control (path, TRUE);
  int errsv = -1;

  close (fd);
  g_assert_true (g_file_test (path, G_FILE_TEST_EXISTS));
  g_assert_cmpint (bmapd_udev_control_probe (path, &errsv), ==, BMAPD_UDEV_CONTROL_DEAD);
  g_assert_cmpint (errsv, ==, ECONNREFUSED);
  g_assert_no_errno (unlink (path));
  g_assert_no_errno (rmdir (dir));
}

/* Bound but not (yet) listening: nobody could answer either. */
static void
test_bound_not_listening (void)
{
  g_autofree char *dir = g_dir_make_tmp ("bmapd-udev-XXXXXX", NULL);
  g_autofree char *path = control_path (dir);
  int fd = bind_control (path, FALSE);

  g_assert_cmpint (bmapd_udev_control_probe (path, NULL), ==, BMAPD_UDEV_CONTROL_DEAD);
  close (fd);
  g_assert_no_errno (unlink (path));
  g_assert_no_errno (rmdir (dir));
}

static void
test_live (void)
{
  g_autofree char *dir = g_dir_make_tmp ("bmapd-udev-XXXXXX", NULL);
  g_autofree char *path = control_path (dir);
  int fd = bind_control (path, TRUE);
  int errsv = -1;

  g_assert_cmpint (bmapd_udev_control_probe (path, &errsv), ==, BMAPD_UDEV_CONTROL_LIVE);
  g_assert_cmpint (errsv, ==, 0);
  /* Probing again works: the probe hung up, it took no place for good. */
  for (int i = 0; i < 8; i++)
    g_assert_cmpint (bmapd_udev_control_probe (path, NULL), ==, BMAPD_UDEV_CONTROL_LIVE);
  close (fd);
  g_assert_no_errno (unlink (path));
  g_assert_no_errno (rmdir (dir));
}

/* A plain file where the socket should be: nobody can answer there. */
static void
test_not_a_socket (void)
{
  g_autofree char *dir = g_dir_make_tmp ("bmapd-udev-XXXXXX", NULL);
  g_autofree char *path = control_path (dir);

  g_assert_true (g_file_set_contents (path, "", 0, NULL));
  g_assert_cmpint (bmapd_udev_control_probe (path, NULL), ==, BMAPD_UDEV_CONTROL_DEAD);
  g_assert_no_errno (unlink (path));
  g_assert_no_errno (rmdir (dir));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/udev-control/absent", test_absent);
  g_test_add_func ("/udev-control/left-behind", test_left_behind);
  g_test_add_func ("/udev-control/bound-not-listening", test_bound_not_listening);
  g_test_add_func ("/udev-control/live", test_live);
  g_test_add_func ("/udev-control/not-a-socket", test_not_a_socket);
  return g_test_run ();
}
