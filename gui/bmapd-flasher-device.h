/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* One disk bmapd offers, as its org.bmapd.bmapd1.Device properties say.
 * Built from a property dictionary (a{sv}) and kept up to date from
 * PropertiesChanged, so it works with whatever properties the daemon has:
 * DisplayName, IconName and Contents are newer than the rest, and without
 * them the name comes from Vendor and Model, the icon from Bus, and nothing
 * is said about partitions. No GTK, no bus: unit-tested without either. */
#define BMAPD_FLASHER_TYPE_DEVICE (bmapd_flasher_device_get_type ())
G_DECLARE_FINAL_TYPE (BmapdFlasherDevice, bmapd_flasher_device, BMAPD_FLASHER, DEVICE, GObject)

/* @properties: a{sv}, as GetManagedObjects or GetAll give them. */
BmapdFlasherDevice *bmapd_flasher_device_new (const char *object_path, GVariant *properties);
/* Applies a PropertiesChanged; emits "changed" once. */
void bmapd_flasher_device_update (BmapdFlasherDevice *self, GVariant *changed,
                                  const char *const *invalidated);

const char *bmapd_flasher_device_get_object_path (BmapdFlasherDevice *self);
const char *bmapd_flasher_device_get_node (BmapdFlasherDevice *self);
guint64 bmapd_flasher_device_get_size (BmapdFlasherDevice *self);
guint64 bmapd_flasher_device_get_diskseq (BmapdFlasherDevice *self);
gboolean bmapd_flasher_device_get_system (BmapdFlasherDevice *self);
gboolean bmapd_flasher_device_get_busy (BmapdFlasherDevice *self);
/* A partition of a disk (PartitionOf names its disk), which bmapd offers
 * as a Device too; the app writes whole cards only. */
gboolean bmapd_flasher_device_is_partition (BmapdFlasherDevice *self);
/* The Job object writing to it, NULL when idle. */
const char *bmapd_flasher_device_get_job (BmapdFlasherDevice *self);

/* "SanDisk Ultra 32 GB": DisplayName, else Vendor and Model (or the kind of
 * disk) and the size. */
char *bmapd_flasher_device_dup_display_name (BmapdFlasherDevice *self);
/* A freedesktop icon name: IconName, else one chosen from Bus. */
const char *bmapd_flasher_device_get_icon_name (BmapdFlasherDevice *self);
/* "BOOT (vfat, 268 MB), rootfs (ext4, 3.2 GB, mounted at /media/rootfs)";
 * NULL when the daemon has no Contents property, "" when it found
 * nothing on the disk. */
char *bmapd_flasher_device_dup_contents (BmapdFlasherDevice *self);
/* What erasing the device loses, for the confirmation: "SanDisk Ultra
 * 32 GB (/dev/sdb): BOOT (vfat, 268 MB) will be lost." with Contents, the
 * mounted partitions to unmount when Busy. */
char *bmapd_flasher_device_dup_erase_warning (BmapdFlasherDevice *self);
/* Why the image (of @image_size bytes, 0 when unknown) cannot go onto this
 * device, said for a person; NULL when it can. */
char *bmapd_flasher_device_dup_unusable_reason (BmapdFlasherDevice *self, guint64 image_size);

G_END_DECLS
