/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bmapd-udev-control.h"

BmapdUdevControl
bmapd_udev_control_probe (const char *path, int *errsv)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int saved = 0;
  int fd;

  if (strlen (path) >= sizeof addr.sun_path) {
    if (errsv != NULL)
      *errsv = ENAMETOOLONG;
    return BMAPD_UDEV_CONTROL_ABSENT;
  }
  strcpy (addr.sun_path, path);

  /* udevd's control socket is a SOCK_SEQPACKET one. Non-blocking: a
   * udevd too busy to accept (full backlog) answers EAGAIN, and is live. */
  fd = socket (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    if (errsv != NULL)
      *errsv = errno;
    return BMAPD_UDEV_CONTROL_LIVE;
  }
  if (connect (fd, (struct sockaddr *) &addr, sizeof addr) < 0)
    saved = errno;
  close (fd);
  if (errsv != NULL)
    *errsv = saved;

  switch (saved) {
    case ENOENT:
    case ENOTDIR:
      return BMAPD_UDEV_CONTROL_ABSENT;
    case ECONNREFUSED:
      return BMAPD_UDEV_CONTROL_DEAD;
    default:
      return BMAPD_UDEV_CONTROL_LIVE;
  }
}
