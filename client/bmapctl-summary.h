/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <sys/types.h>

#include <glib.h>
#include <systemd/sd-bus.h>

#include "bmapctl-bus.h"

G_BEGIN_DECLS

/* What flashing @device erases, in one line for a person: its node, name
 * and size, then its partitions and filesystems, e.g.
 *   /dev/sdb, SanDisk Ultra (29.7 GiB): 2 partitions: sdb1 "boot" vfat
 *   256.0 MiB, sdb2 "rootfs" ext4 3.2 GiB (mounted at /media/rootfs)
 * From the Device's DisplayName and Contents properties when bmapd has
 * them (@bus not NULL); else from its Vendor, Model and Size, with the partitions from
 * sysfs and their labels from /dev/disk/by-label. */
char *bmapctl_device_summary (sd_bus *bus, const BmapctlDevice *device);

/* The same for a whole disk written in-process, from sysfs alone; NULL
 * when sysfs does not know @devnum. */
char *bmapctl_disk_summary (const char *node, dev_t devnum);

G_END_DECLS
