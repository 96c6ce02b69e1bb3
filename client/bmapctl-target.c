/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <systemd/sd-device.h>

#include "bmap-error.h"
#include "bmapctl-target.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_device, sd_device_unref)

void
bmapctl_target_clear (BmapctlTarget *target)
{
  g_clear_pointer (&target->arg, g_free);
  g_clear_pointer (&target->path, g_free);
}

static gboolean
path_in_dev (const char *path)
{
  return g_str_equal (path, "/dev") || g_str_has_prefix (path, "/dev/");
}

/* Lexically (/dev/../dev/sdz, a relative path run in /dev) or through a
 * symlinked parent directory. */
static gboolean
lies_under_dev (const char *path)
{
  g_autofree char *abs = g_canonicalize_filename (path, NULL);
  g_autofree char *dir = g_path_get_dirname (abs);
  g_autofree char *real = realpath (dir, NULL);

  return path_in_dev (abs) || (real != NULL && path_in_dev (real));
}

/* DEST may be a device name ("sdb") when no file of that name exists here. */
static char *
resolve_name (const char *dest)
{
  struct stat st;

  if (strchr (dest, '/') == NULL && lstat (dest, &st) < 0) {
    g_autofree char *node = g_build_filename ("/dev", dest, NULL);

    if (stat (node, &st) == 0 && S_ISBLK (st.st_mode))
      return g_steal_pointer (&node);
  }
  return g_strdup (dest);
}

static gboolean
is_partition (dev_t devnum)
{
  g_autofree char *attr
      = g_strdup_printf ("/sys/dev/block/%u:%u/partition", major (devnum), minor (devnum));

  return g_file_test (attr, G_FILE_TEST_EXISTS);
}

gboolean
bmapctl_target_resolve (const char *dest, BmapctlTarget *target, GError **error)
{
  struct stat st;

  target->arg = g_strdup (dest);
  target->path = resolve_name (dest);
  target->under_dev = lies_under_dev (target->path);

  if (stat (target->path, &st) < 0) {
    if (errno != ENOENT || target->under_dev) {
      /* bmaptool would create a regular file here and report success; in
       * a devtmpfs that file hides the mistake until the next reboot. */
      if (errno == ENOENT)
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE,
                     "%s: no such device (nothing is created under /dev; is the card "
                     "plugged in, is the name right?)",
                     target->path);
      else
        bmap_error_set_errno (error, errno, "%s", target->path);
      return FALSE;
    }
    target->kind = BMAPCTL_TARGET_NEW_FILE;
    return TRUE;
  }

  if (S_ISBLK (st.st_mode)) {
    target->kind = BMAPCTL_TARGET_BLOCK_DEVICE;
    target->devnum = st.st_rdev;
    target->partition = is_partition (st.st_rdev);
    return TRUE;
  }
  if (S_ISREG (st.st_mode)) {
    target->kind = BMAPCTL_TARGET_FILE;
    return TRUE;
  }
  if (S_ISCHR (st.st_mode) && major (st.st_rdev) == 1 && minor (st.st_rdev) == 3) {
    target->kind = BMAPCTL_TARGET_NULL;
    return TRUE;
  }
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
               "%s: not a block device, a regular file or /dev/null (it is a %s)", target->path,
               S_ISDIR (st.st_mode)    ? "directory"
               : S_ISCHR (st.st_mode)  ? "character device"
               : S_ISFIFO (st.st_mode) ? "pipe"
               : S_ISSOCK (st.st_mode) ? "socket"
                                       : "special file");
  return FALSE;
}

gboolean
bmapctl_target_writable_by_caller (const BmapctlTarget *target)
{
  g_autofree char *dir = NULL;

  if (target->kind != BMAPCTL_TARGET_NEW_FILE)
    return faccessat (AT_FDCWD, target->path, W_OK, AT_EACCESS) == 0;
  dir = g_path_get_dirname (target->path);
  return faccessat (AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == 0;
}

static gboolean
device_attr_is (sd_device *device, const char *attr, const char *value)
{
  const char *v = NULL;

  /* sd-device strips the trailing newline. */
  return device != NULL && sd_device_get_sysattr_value (device, attr, &v) >= 0
         && g_strcmp0 (v, value) == 0;
}

static gboolean
device_property_is (sd_device *device, const char *key, const char *value)
{
  const char *v = NULL;

  return sd_device_get_property_value (device, key, &v) >= 0 && g_strcmp0 (v, value) == 0;
}

/* udisks' rules mark card readers and sticks with ID_DRIVE_FLASH_* etc. */
static gboolean
has_removable_drive_flags (sd_device *device)
{
  const char *value = NULL;

  for (const char *key = sd_device_get_property_first (device, &value); key != NULL;
       key = sd_device_get_property_next (device, &value)) {
    if ((g_str_has_prefix (key, "ID_DRIVE_FLASH") || g_str_has_prefix (key, "ID_DRIVE_MEDIA_FLASH")
         || g_str_equal (key, "ID_DRIVE_THUMB"))
        && g_strcmp0 (value, "1") == 0)
      return TRUE;
  }
  return FALSE;
}

gboolean
bmapctl_target_check_removable (const BmapctlTarget *target, GError **error)
{
  g_autoptr (sd_device) device = NULL;
  sd_device *disk = NULL;
  sd_device *ancestor = NULL;
  gboolean removable;
  int r;

  if (target->kind == BMAPCTL_TARGET_NEW_FILE) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE,
                 "%s: does not exist, and --removable-device expects an existing removable block "
                 "device",
                 target->path);
    return FALSE;
  }
  if (target->kind != BMAPCTL_TARGET_BLOCK_DEVICE) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: not a block device, and --removable-device was given", target->path);
    return FALSE;
  }

  r = sd_device_new_from_devnum (&device, 'b', target->devnum);
  if (r < 0) {
    bmap_error_set_errno (error, -r,
                          "%s: cannot find the device in sysfs to tell whether it is "
                          "removable",
                          target->path);
    return FALSE;
  }
  if (target->partition) {
    if (sd_device_get_parent_with_subsystem_devtype (device, "block", "disk", &disk) < 0)
      disk = NULL;
  } else {
    disk = device;
  }

  removable = disk != NULL && device_attr_is (disk, "removable", "1");
  if (!removable && disk != NULL)
    removable = device_property_is (disk, "ID_BUS", "usb")
                || sd_device_get_parent_with_subsystem_devtype (disk, "usb", NULL, &ancestor) >= 0;
  if (!removable && disk != NULL
      && sd_device_get_parent_with_subsystem_devtype (disk, "mmc", NULL, &ancestor) >= 0)
    removable = device_attr_is (ancestor, "type", "SD");
  if (!removable)
    removable = has_removable_drive_flags (device)
                || (disk != NULL && disk != device && has_removable_drive_flags (disk));
  if (!removable) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: not a removable device, and --removable-device was given", target->path);
    return FALSE;
  }
  return TRUE;
}
