/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/cdrom.h>
#include <linux/fs.h>
#include <scsi/sg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "bmap-eject.h"
#include "bmap-error.h"

/* SCSI operation codes (SPC, SBC, MMC). */
#define SCSI_START_STOP_UNIT        0x1b
#define SCSI_ALLOW_MEDIUM_REMOVAL   0x1e
#define SCSI_SYNCHRONIZE_CACHE_10   0x35
#define SCSI_TYPE_MMC               5 /* CD/DVD: the "type" of its scsi_device */
#define SCSI_ASC_MEDIUM_NOT_PRESENT 0x3a
#define SCSI_COMMAND_TIMEOUT_MSEC   10000

/* ---- what the device can do, from sysfs ---- */

static char *
read_attr (const char *dir, const char *attr)
{
  g_autofree char *path = g_build_filename (dir, attr, NULL);
  g_autofree char *contents = NULL;

  if (!g_file_get_contents (path, &contents, NULL, NULL))
    return NULL;
  return g_strstrip (g_steal_pointer (&contents));
}

/* The kernel's DEVTYPE of a sysfs device, from its uevent file. */
static char *
read_devtype (const char *dir)
{
  g_autofree char *uevent = read_attr (dir, "uevent");
  g_auto (GStrv) lines = NULL;

  if (uevent == NULL)
    return NULL;
  lines = g_strsplit (uevent, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    if (g_str_has_prefix (lines[i], "DEVTYPE="))
      return g_strdup (lines[i] + strlen ("DEVTYPE="));
  return NULL;
}

static char *
read_subsystem (const char *dir)
{
  g_autofree char *link = g_build_filename (dir, "subsystem", NULL);
  g_autofree char *target = g_file_read_link (link, NULL);

  return target != NULL ? g_path_get_basename (target) : NULL;
}

static gboolean
is_device_of (const char *dir, const char *subsystem, const char *devtype)
{
  g_autofree char *sub = read_subsystem (dir);
  g_autofree char *type = NULL;

  if (g_strcmp0 (sub, subsystem) != 0)
    return FALSE;
  type = read_devtype (dir);
  return g_strcmp0 (type, devtype) == 0;
}

static int
compare_strings (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(const char *const *) a, *(const char *const *) b);
}

static char **
node_list_finish (GPtrArray *nodes)
{
  g_ptr_array_sort (nodes, compare_strings);
  g_ptr_array_add (nodes, NULL);
  return (char **) g_ptr_array_free (nodes, FALSE);
}

/* The other partitions of the disk @disk_dir (a partition is flashed):
 * ejecting or powering off takes them too. */
static char **
find_partners (const char *disk_dir, const char *name)
{
  GPtrArray *partners = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GDir) dir = g_dir_open (disk_dir, 0, NULL);
  const char *entry;

  while (dir != NULL && (entry = g_dir_read_name (dir)) != NULL) {
    g_autofree char *partition = g_build_filename (disk_dir, entry, "partition", NULL);

    if (!g_str_equal (entry, name) && g_file_test (partition, G_FILE_TEST_EXISTS))
      g_ptr_array_add (partners, g_strconcat ("/dev/", entry, NULL));
  }
  return node_list_finish (partners);
}

/* The other whole disks below the USB device @usb_device: a card reader
 * with several slots has one per slot, and they go with it. */
static char **
find_siblings (const char *sysfs_root, const char *usb_device, const char *name)
{
  g_autofree char *block = g_build_filename (sysfs_root, "block", NULL);
  GPtrArray *siblings = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *prefix = g_strconcat (usb_device, "/", NULL);
  g_autoptr (GDir) dir = g_dir_open (block, 0, NULL);
  const char *entry;

  while (dir != NULL && (entry = g_dir_read_name (dir)) != NULL) {
    g_autofree char *link = g_build_filename (block, entry, NULL);
    g_autofree char *real = NULL;

    if (g_str_equal (entry, name))
      continue;
    real = realpath (link, NULL);
    if (real != NULL && g_str_has_prefix (real, prefix))
      g_ptr_array_add (siblings, g_strconcat ("/dev/", entry, NULL));
  }
  return node_list_finish (siblings);
}

BmapEjectPlan *
bmap_eject_plan_new (const char *sysfs_root, dev_t devnum, const char *node)
{
  g_autoptr (BmapEjectPlan) plan = g_new0 (BmapEjectPlan, 1);
  g_autofree char *link
      = g_strdup_printf ("%s/dev/block/%u:%u", sysfs_root, major (devnum), minor (devnum));
  g_autofree char *devices = g_build_filename (sysfs_root, "devices", NULL);
  g_autofree char *devices_real = realpath (devices, NULL);
  g_autofree char *dir = realpath (link, NULL);
  g_autofree char *p = NULL;
  g_autofree char *partition = NULL;
  gboolean cdrom = FALSE;

  plan->node = g_strdup (node);
  partition = dir != NULL ? g_build_filename (dir, "partition", NULL) : NULL;
  if (dir == NULL || devices_real == NULL) {
    plan->name = g_path_get_basename (node);
    plan->eject_why_not = g_strdup_printf ("%s has no entry in %s", node, sysfs_root);
    plan->power_off_why_not = g_strdup (plan->eject_why_not);
    plan->siblings = g_new0 (char *, 1);
    plan->partners = g_new0 (char *, 1);
    return g_steal_pointer (&plan);
  }
  /* A partition: what can be done is its disk's, and takes the disk's
   * other partitions too. */
  if (g_file_test (partition, G_FILE_TEST_EXISTS)) {
    g_autofree char *own = g_path_get_basename (dir);
    char *disk = g_path_get_dirname (dir);

    g_free (dir);
    dir = disk;
    plan->partners = find_partners (dir, own);
  } else {
    plan->partners = g_new0 (char *, 1);
  }
  plan->name = g_path_get_basename (dir);

  /* Up from the disk: its SCSI device (a SCSI disk, USB storage, a CD
   * drive: SCSI type 5, what the sr driver binds to) and the nearest USB
   * device it hangs off. */
  p = g_path_get_dirname (dir);
  while (g_str_has_prefix (p, devices_real) && strlen (p) > strlen (devices_real)) {
    char *parent;

    if (!plan->scsi && is_device_of (p, "scsi", "scsi_device")) {
      g_autofree char *type = read_attr (p, "type");

      plan->scsi = TRUE;
      if (type != NULL && g_ascii_strtoull (type, NULL, 10) == SCSI_TYPE_MMC)
        cdrom = TRUE;
    }
    if (plan->usb_device == NULL && is_device_of (p, "usb", "usb_device"))
      plan->usb_device = g_strdup (p);
    parent = g_path_get_dirname (p);
    g_free (p);
    p = parent;
  }

  if (cdrom)
    plan->eject = BMAP_EJECT_METHOD_CDROM;
  else if (plan->scsi)
    plan->eject = BMAP_EJECT_METHOD_SCSI;
  else
    plan->eject_why_not = g_strdup_printf ("%s is not a SCSI, USB or CD-ROM drive", node);

  /* As udisks2: USB storage (a SCSI disk on USB) powers off by removing
   * its USB device, whose port is then switched off. */
  if (plan->usb_device == NULL || !plan->scsi) {
    plan->power_off_why_not = g_strdup_printf ("%s is not a USB device", node);
  } else {
    g_autofree char *remove = g_build_filename (plan->usb_device, "remove", NULL);

    if (!g_file_test (remove, G_FILE_TEST_EXISTS))
      plan->power_off_why_not = g_strdup_printf (
          "the USB device of %s cannot be removed: %s does not exist", node, remove);
  }
  plan->siblings = plan->usb_device != NULL
                       ? find_siblings (sysfs_root, plan->usb_device, plan->name)
                       : g_new0 (char *, 1);
  return g_steal_pointer (&plan);
}

void
bmap_eject_plan_free (BmapEjectPlan *plan)
{
  if (plan == NULL)
    return;
  g_free (plan->node);
  g_free (plan->name);
  g_free (plan->eject_why_not);
  g_free (plan->usb_device);
  g_free (plan->power_off_why_not);
  g_strfreev (plan->siblings);
  g_strfreev (plan->partners);
  g_free (plan);
}

/* ---- doing it ---- */

/* The additional sense code of fixed (0x70, 0x71) or descriptor (0x72,
 * 0x73) sense data; 0 when there is none. */
static guint8
sense_asc (const guint8 *sense, guint8 len)
{
  guint8 format = len > 0 ? sense[0] & 0x7f : 0;

  if ((format == 0x70 || format == 0x71) && len > 12)
    return sense[12];
  if ((format == 0x72 || format == 0x73) && len > 2)
    return sense[2];
  return 0;
}

/* One command without data through SG_IO. @no_medium_ok: a "medium not
 * present" answer counts as done (util-linux eject's START UNIT). */
static gboolean
scsi_command (int fd, const char *node, const char *what, guint8 op, guint8 byte4,
              gboolean no_medium_ok, GError **error)
{
  guint8 cdb[10] = { op };
  guint8 sense[32] = { 0 };
  sg_io_hdr_t io = { 0 };

  cdb[4] = byte4;
  io.interface_id = 'S';
  io.cmdp = cdb;
  io.cmd_len = op == SCSI_SYNCHRONIZE_CACHE_10 ? 10 : 6;
  io.dxfer_direction = SG_DXFER_NONE;
  io.sbp = sense;
  io.mx_sb_len = sizeof sense;
  io.timeout = SCSI_COMMAND_TIMEOUT_MSEC;

  if (ioctl (fd, SG_IO, &io) < 0) {
    bmap_error_set_errno (error, errno, "%s: SCSI command %s", node, what);
    return FALSE;
  }
  if (io.host_status != 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "%s: SCSI command %s did not reach the device (host status 0x%x)", node, what,
                 io.host_status);
    return FALSE;
  }
  if (io.status != 0 || io.driver_status != 0) {
    guint8 asc = sense_asc (sense, io.sb_len_wr);

    if (no_medium_ok && asc == SCSI_ASC_MEDIUM_NOT_PRESENT)
      return TRUE;
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "%s refused SCSI command %s (status 0x%02x, additional sense code 0x%02x)", node,
                 what, io.status, asc);
    return FALSE;
  }
  return TRUE;
}

/* A device in use (mounted, held) would lose its medium or go with the
 * USB device: refused, as udisks2 does. The others are synced. @relation:
 * "disk" or "USB device". */
static gboolean
sync_others (const BmapEjectPlan *plan, char **nodes, const char *relation, GError **error)
{
  for (guint i = 0; nodes[i] != NULL; i++) {
    const char *other = nodes[i];
    int fd = open (other, O_RDONLY | O_NONBLOCK | O_EXCL | O_CLOEXEC | O_NOCTTY);

    if (fd < 0 && errno == EBUSY) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY, "%s, on the same %s as %s, is in use",
                   other, relation, plan->node);
      return FALSE;
    }
    if (fd < 0)
      continue; /* gone, or a slot without a card */
    if (fsync (fd) < 0) {
      bmap_error_set_errno (error, errno, "%s (on the same %s as %s): sync", other, relation,
                            plan->node);
      close (fd);
      return FALSE;
    }
    close (fd);
  }
  return TRUE;
}

/* Written back and the page cache dropped, so that nothing is left for a
 * medium that is about to go. */
static gboolean
flush_buffers (int fd, const char *node, GError **error)
{
  if (fsync (fd) < 0) {
    bmap_error_set_errno (error, errno, "%s: syncing before the eject", node);
    return FALSE;
  }
  if (ioctl (fd, BLKFLSBUF, 0) < 0) {
    if (errno != EACCES && errno != EPERM) {
      bmap_error_set_errno (error, errno, "%s: BLKFLSBUF", node);
      return FALSE;
    }
    /* BLKFLSBUF needs CAP_SYS_ADMIN, which bmapd does not keep; after the
     * fsync, dropping the clean pages does what it would. */
    (void) posix_fadvise (fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  return TRUE;
}

static gboolean
eject (const BmapEjectPlan *plan, int fd, GError **error)
{
  if (!sync_others (plan, plan->partners, "disk", error) || !flush_buffers (fd, plan->node, error))
    return FALSE;
  if (plan->eject == BMAP_EJECT_METHOD_CDROM) {
    if (ioctl (fd, CDROMEJECT, 0) < 0) {
      bmap_error_set_errno (error, errno, "%s: CDROMEJECT", plan->node);
      return FALSE;
    }
    return TRUE;
  }
  /* As util-linux eject: allow the removal, start the unit (a medium
   * already gone is fine), then stop it with LoEj. */
  return scsi_command (fd, plan->node, "ALLOW MEDIUM REMOVAL", SCSI_ALLOW_MEDIUM_REMOVAL, 0, FALSE,
                       error)
         && scsi_command (fd, plan->node, "START STOP UNIT (start)", SCSI_START_STOP_UNIT, 0x01,
                          TRUE, error)
         && scsi_command (fd, plan->node, "START STOP UNIT (eject)", SCSI_START_STOP_UNIT, 0x02,
                          FALSE, error);
}

/* What udisks2's Drive.PowerOff does: sync, SYNCHRONIZE CACHE and START
 * STOP UNIT (stop), whose failures do not matter (USB bridges often refuse
 * them), then "1" into the USB device's remove attribute, which
 * disconnects it and switches its port off. The attribute is opened first,
 * so that a refusal (not root, a read-only /sys) leaves the device as it
 * was. */
static gboolean
power_off (const BmapEjectPlan *plan, int fd, BmapEjectCloseFunc close_func, gpointer close_data,
           gboolean *closed, GError **error)
{
  g_autofree char *remove = g_build_filename (plan->usb_device, "remove", NULL);
  g_autoptr (GError) local_error = NULL;
  int remove_fd;

  remove_fd = open (remove, O_WRONLY | O_CLOEXEC | O_NOCTTY);
  if (remove_fd < 0 && (errno == EACCES || errno == EPERM)) {
    bmap_error_set_errno (error, errno, "removing the USB device of %s needs root (%s)", plan->node,
                          remove);
    return FALSE;
  }
  if (remove_fd < 0) {
    bmap_error_set_errno (error, errno, "cannot open %s to remove the USB device of %s", remove,
                          plan->node);
    return FALSE;
  }
  if (!sync_others (plan, plan->partners, "disk", error)
      || !sync_others (plan, plan->siblings, "USB device", error)) {
    close (remove_fd);
    return FALSE;
  }
  if (fsync (fd) < 0) {
    bmap_error_set_errno (error, errno, "%s: syncing before the power-off", plan->node);
    close (remove_fd);
    return FALSE;
  }
  if (!scsi_command (fd, plan->node, "SYNCHRONIZE CACHE", SCSI_SYNCHRONIZE_CACHE_10, 0, TRUE,
                     &local_error)) {
    g_debug ("%s (ignored, as udisks2 does)", local_error->message);
    g_clear_error (&local_error);
  }
  if (!scsi_command (fd, plan->node, "START STOP UNIT (stop)", SCSI_START_STOP_UNIT, 0, TRUE,
                     &local_error)) {
    g_debug ("%s (ignored, as udisks2 does)", local_error->message);
    g_clear_error (&local_error);
  }
  if (close_func != NULL)
    close_func (close_data);
  *closed = TRUE;
  if (write (remove_fd, "1", 1) != 1) {
    bmap_error_set_errno (error, errno, "writing 1 to %s", remove);
    close (remove_fd);
    return FALSE;
  }
  close (remove_fd);
  return TRUE;
}

static void
append_words (GString *words, const char *text)
{
  if (words->len > 0)
    g_string_append (words, "; ");
  g_string_append (words, text);
}

char *
bmap_eject_run (const BmapEjectPlan *plan, BmapEjectFlags flags, int fd,
                BmapEjectCloseFunc close_func, gpointer close_data)
{
  g_autoptr (GString) words = g_string_new (NULL);
  gboolean closed = FALSE;

  if (flags & BMAP_EJECT_FLAG_POWER_OFF) {
    g_autoptr (GError) error = NULL;

    if (plan->power_off_why_not == NULL
        && power_off (plan, fd, close_func, close_data, &closed, &error))
      return g_strdup ("powered off");
    g_string_append_printf (words, "not powered off: %s",
                            error != NULL ? error->message : plan->power_off_why_not);
  }
  /* The unit was stopped and the descriptor closed: nothing left to eject
   * with, and the failure above says why. */
  if ((flags & BMAP_EJECT_FLAG_EJECT) && !closed) {
    g_autoptr (GError) error = NULL;

    if (plan->eject_why_not == NULL && eject (plan, fd, &error)) {
      append_words (words, "ejected");
    } else {
      g_autofree char *text = g_strdup_printf (
          "not ejected: %s", error != NULL ? error->message : plan->eject_why_not);
      append_words (words, text);
    }
  }
  return g_string_free (g_steal_pointer (&words), FALSE);
}
