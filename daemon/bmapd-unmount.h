/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-bus.h>

G_BEGIN_DECLS

/* Unmounts the filesystems of a disk before it is flashed (the "unmount"
 * option): through udisks2's Filesystem.Unmount when udisks2 is on the
 * bus, since bmapd's own mount namespace may be a sandboxed copy; with
 * umount2() otherwise. Swap is never turned off: DeviceBusy. */
typedef struct _BmapdUnmount BmapdUnmount;

/* @error NULL: everything was unmounted. */
typedef void (*BmapdUnmountFunc) (const GError *error, gpointer user_data);

/* @partitions: kernel names of the disk and its partitions ("sdb",
 * "sdb1", ...); @mount_points: where they are mounted. Calls @func once,
 * from the event loop (never before returning); @func may free the
 * object. */
BmapdUnmount *bmapd_unmount_start (sd_bus *bus, const char *node, const char *const *partitions,
                                   const char *const *mount_points, BmapdUnmountFunc func,
                                   gpointer user_data, GError **error);
/* Stops waiting for udisks2; @func is not called afterwards. */
void bmapd_unmount_free (BmapdUnmount *unmount);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdUnmount, bmapd_unmount_free)

G_END_DECLS
