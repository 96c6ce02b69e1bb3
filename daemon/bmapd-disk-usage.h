/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <libudev.h>

G_BEGIN_DECLS

/* What the mounted filesystems and active swap say about each whole disk:
 * which disks hold them (through partitions, device-mapper and md) and
 * which of those hold a system filesystem (/, /usr, /boot, /efi, /var) or
 * active swap. A snapshot: take a new one when /proc/self/mountinfo or
 * /proc/swaps changes. */
typedef struct _BmapdDiskUsage BmapdDiskUsage;

BmapdDiskUsage *bmapd_disk_usage_new (struct udev *udev);
void bmapd_disk_usage_free (BmapdDiskUsage *usage);

/* @disk is a kernel name, "sdb". */
gboolean bmapd_disk_usage_is_system (BmapdDiskUsage *usage, const char *disk);
/* The mount points of filesystems on @disk (swap shows as "[SWAP]"), NULL
 * when there are none. */
const char *const *bmapd_disk_usage_get_mount_points (BmapdDiskUsage *usage, const char *disk);

/* Whether @mount_point is one that makes its disk a system disk. */
gboolean bmapd_mount_point_is_system (const char *mount_point);

/* Every mount point of a filesystem on one of @devnums (which need not be
 * whole disks), read fresh from /proc/self/mountinfo; the newest first so
 * that nested mounts can be unmounted in order. */
GPtrArray *bmapd_mount_points_for_devnums (const dev_t *devnums, guint n_devnums);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdDiskUsage, bmapd_disk_usage_free)

G_END_DECLS
