/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <libudev.h>
#include <sys/types.h>

#include "bmapd-device-contents.h"
#include "bmapd-disk-usage.h"

G_BEGIN_DECLS

/* A snapshot of one whole disk, or of one partition of a disk we offer, as
 * udev and sysfs describe it, with the classification the Device object
 * exposes. Plain data; no D-Bus. */
typedef struct {
  char *name;    /* kernel name, "sdb" */
  char *node;    /* "/dev/sdb" */
  char *syspath; /* "/sys/devices/.../block/sdb" */
  dev_t devnum;
  guint64 size; /* bytes, 0 without medium */
  guint32 logical_block_size;
  char *vendor;
  char *model;
  char *serial;
  char *bus;     /* usb, mmc, sdio, ata, nvme, scsi, virtio, virtual or "" */
  char *id_path; /* udev ID_PATH, "" when unknown (auto-flash port matching) */
  gboolean removable;
  gboolean system;
  gboolean read_only;
  gboolean media_present;
  gboolean busy;
  guint64 diskseq;
  char **mount_points; /* filesystems on the disk, "[SWAP]" for swap; never NULL */
  char **holders;      /* devices stacked on the disk or its partitions; never NULL */
  char **partitions;   /* kernel names of its partitions, "sdb1"; never NULL */
  /* For people: "SanDisk Ultra 32 GB", and a freedesktop icon name. */
  char *display_name;
  char *icon_name;
  GPtrArray *contents; /* BmapdDeviceContent; never NULL */
  /* A partition: its disk's kernel name and node, NULL for a whole disk.
   * It takes the disk's description (vendor, bus, Removable, System,
   * diskseq); Size, ReadOnly, Busy, mounts and holders are its own. */
  char *parent;
  char *parent_node;
  guint32 partition_number; /* 0 for a whole disk */
  guint64 partition_offset; /* bytes from the start of the disk */
} BmapdDeviceInfo;

/* Reads @dev. Returns NULL when it is not a disk we offer as a target
 * (not a whole disk, ram, zram, device-mapper, md, an optical drive, a loop
 * device without backing file, an eMMC boot or RPMB area) and sets
 * @why_not to a reason for debug logs. */
BmapdDeviceInfo *
bmapd_device_info_new (struct udev_device *dev, BmapdDiskUsage *usage, char **why_not);
/* Reads the partition @dev of the disk @disk (as bmapd_device_info_new()
 * gave it). Returns NULL when it is not offered (no medium, an empty
 * entry) and sets @why_not. */
BmapdDeviceInfo *bmapd_device_info_new_partition (struct udev_device *dev,
                                                  const BmapdDeviceInfo *disk, char **why_not);
BmapdDeviceInfo *bmapd_device_info_copy (const BmapdDeviceInfo *info);
void bmapd_device_info_free (BmapdDeviceInfo *info);

/* The D-Bus property names whose values differ between @a and @b. */
GPtrArray *bmapd_device_info_diff (const BmapdDeviceInfo *a, const BmapdDeviceInfo *b);

/* A medium appeared: the device is new with a medium, or it got one, or
 * its medium was swapped (diskseq changed). The hook auto-flash rules use. */
gboolean bmapd_device_info_media_inserted (const BmapdDeviceInfo *old, const BmapdDeviceInfo *info);

/* udev's *_ENC values escape unsafe bytes as \xNN: the string they stand
 * for, stripped, or NULL when it is not UTF-8. */
char *bmapd_device_info_decode_udev_string (const char *enc);

/* "32 GB", "7.9 GB", "512 MB": sizes the way drives are sold, as udisks2
 * shows them. */
char *bmapd_device_info_format_size (guint64 size);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdDeviceInfo, bmapd_device_info_free)

G_END_DECLS
