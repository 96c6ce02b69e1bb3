/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <sys/types.h>

G_BEGIN_DECLS

/* What is done to a block device after a flash so that its medium can be
 * pulled out safely: eject (the medium, as util-linux eject does) or
 * power-off (the whole USB device, as udisks2's Drive.PowerOff does). Both
 * are asked for after the last step of a successful copy only. */
typedef enum {
  BMAP_EJECT_FLAG_EJECT = 1 << 0,
  BMAP_EJECT_FLAG_POWER_OFF = 1 << 1,
} BmapEjectFlags;

typedef enum {
  BMAP_EJECT_METHOD_NONE,  /* the device cannot eject its medium */
  BMAP_EJECT_METHOD_SCSI,  /* SG_IO: ALLOW MEDIUM REMOVAL, START STOP UNIT with LoEj */
  BMAP_EJECT_METHOD_CDROM, /* CDROMEJECT */
} BmapEjectMethod;

/* What the device can do, read from sysfs. */
typedef struct {
  char *node;              /* "/dev/sdb" */
  char *name;              /* kernel name, "sdb" */
  gboolean scsi;           /* a SCSI disk (sd, USB storage): SCSI commands reach it */
  BmapEjectMethod eject;   /* how to eject, NONE with @eject_why_not */
  char *eject_why_not;     /* "/dev/loop3 is not a SCSI, USB or CD-ROM drive" */
  char *usb_device;        /* sysfs directory of the USB device, NULL when not on USB */
  char *power_off_why_not; /* "/dev/loop3 is not a USB device"; NULL when it can */
  char **siblings;         /* other disks on the same USB device, "/dev/sdc"; never NULL */
  char **partners;         /* a partition's: the disk's other partitions; never NULL */
} BmapEjectPlan;

/* Reads what the whole disk @devnum (@node) can do from @sysfs_root
 * ("/sys", or a fake tree in tests). Never fails: what cannot be done says
 * why. */
BmapEjectPlan *bmap_eject_plan_new (const char *sysfs_root, dev_t devnum, const char *node);
void bmap_eject_plan_free (BmapEjectPlan *plan);

/* Called before a USB device is removed: closes the flash's descriptor on
 * the device, as udisks2 closes its own before the removal. */
typedef void (*BmapEjectCloseFunc) (gpointer user_data);

/* Does what @flags ask with @fd, the flash's descriptor open for writing
 * on the device (synced and verified): power-off when asked and possible,
 * else eject when asked and possible. Never fails: returns what was done,
 * in words for a job's Result, "powered off", "ejected", or "not powered
 * off: /dev/loop3 is not a USB device". @close_func is called before the
 * USB device is removed (and only then). */
char *bmap_eject_run (const BmapEjectPlan *plan, BmapEjectFlags flags, int fd,
                      BmapEjectCloseFunc close_func, gpointer close_data);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapEjectPlan, bmap_eject_plan_free)

G_END_DECLS
