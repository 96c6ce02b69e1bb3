/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <sys/types.h>

#include <glib.h>

G_BEGIN_DECLS

/* What bmapctl copy's DEST is, decided before anything is opened for
 * writing, so a mistyped device never becomes a file in /dev. */
typedef enum {
  BMAPCTL_TARGET_NEW_FILE, /* a regular file to be created, outside /dev */
  BMAPCTL_TARGET_FILE,     /* an existing regular file */
  BMAPCTL_TARGET_BLOCK_DEVICE,
  BMAPCTL_TARGET_NULL, /* /dev/null */
} BmapctlTargetKind;

typedef struct {
  char *arg;  /* as given on the command line */
  char *path; /* "sdb" resolved to "/dev/sdb" */
  BmapctlTargetKind kind;
  dev_t devnum;       /* block devices */
  gboolean partition; /* a partition, not a whole disk */
  gboolean under_dev; /* the path lies in /dev */
} BmapctlTarget;

void bmapctl_target_clear (BmapctlTarget *target);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (BmapctlTarget, bmapctl_target_clear)

/* Resolves and classifies @dest. Fails (BMAP_ERROR) when it lies under /dev
 * and does not exist, or is neither a block device, a regular file nor
 * /dev/null. */
gboolean bmapctl_target_resolve (const char *dest, BmapctlTarget *target, GError **error);

/* TRUE when the caller may open the target for writing with its own rights
 * (the effective uid and groups, as open() would decide). */
gboolean bmapctl_target_writable_by_caller (const BmapctlTarget *target);

/* --removable-device decided in-process, as udisks and bmapd decide it: the
 * disk's sysfs "removable" attribute, a USB bus, an SD card, or udev's
 * ID_DRIVE_FLASH_* / ID_DRIVE_THUMB flags. A partition is judged by its
 * disk. Fails naming the target when it is not removable. */
gboolean bmapctl_target_check_removable (const BmapctlTarget *target, GError **error);

G_END_DECLS
