/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <libudev.h>

G_BEGIN_DECLS

/* What a disk holds, so that a GUI can say what flashing it erases: one
 * entry per partition, or one for the whole disk when it holds a
 * filesystem without a partition table. Plain data; no D-Bus. */
typedef struct {
  char *name;          /* kernel name, "sdb1" (the disk's own for a bare filesystem) */
  char *node;          /* "/dev/sdb1" */
  guint32 number;      /* partition number, 0 for a bare filesystem */
  guint64 offset;      /* bytes from the start of the disk */
  guint64 size;        /* bytes */
  char *label;         /* the filesystem's label, "" when none */
  char *type;          /* "vfat", "ext4", "swap", "crypto_LUKS", ..., "" when not known */
  char *usage;         /* "filesystem", "other", "crypto", "raid", or "" */
  char *version;       /* "FAT32", "1.0", ..., "" */
  char *uuid;          /* the filesystem's UUID, "" */
  char *part_name;     /* the partition's own name (GPT), "" */
  char **mount_points; /* where it is mounted, "[SWAP]" for swap; never NULL */
} BmapdDeviceContent;

/* The contents of the whole disk @dev, from udev's properties (blkid's,
 * through udev's rules), or by probing with libblkid when udev has not
 * processed the device (no udevd: containers, the test suite). Never NULL;
 * an array of BmapdDeviceContent, freed with g_ptr_array_unref(). */
GPtrArray *bmapd_device_contents_read (struct udev_device *dev);
GPtrArray *bmapd_device_contents_copy (const GPtrArray *contents);
gboolean bmapd_device_contents_equal (const GPtrArray *a, const GPtrArray *b);

void bmapd_device_content_free (BmapdDeviceContent *content);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdDeviceContent, bmapd_device_content_free)

G_END_DECLS
