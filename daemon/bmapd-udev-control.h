/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Where udevd listens for udevadm. Its presence alone proves nothing: a
 * udevd that died (killed, crashed, a container torn down) leaves the
 * socket behind, and a bmapd that took it for a running udevd waited for
 * processed events that never came. */
#define BMAPD_UDEV_CONTROL_PATH "/run/udev/control"

typedef enum {
  BMAPD_UDEV_CONTROL_ABSENT, /* nothing there: no udevd */
  BMAPD_UDEV_CONTROL_DEAD,   /* a socket nobody listens on: udevd died */
  BMAPD_UDEV_CONTROL_LIVE,   /* a udevd accepts connections */
} BmapdUdevControl;

/* Connects to the control socket at @path (and hangs up at once) to tell
 * a live udevd from a socket left behind. *@errsv (may be NULL) gets the
 * errno that decided, 0 for a live udevd. An error other than "not there"
 * or "refused" (EACCES, a socket of another type) counts as live, as a
 * socket there always did. */
BmapdUdevControl bmapd_udev_control_probe (const char *path, int *errsv);

G_END_DECLS
