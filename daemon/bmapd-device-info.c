/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "bmapd-device-info.h"

static const char *
sysattr (struct udev_device *dev, const char *name)
{
  return dev != NULL ? udev_device_get_sysattr_value (dev, name) : NULL;
}

static guint64
sysattr_u64 (struct udev_device *dev, const char *name, guint64 fallback)
{
  const char *value = sysattr (dev, name);
  g_autofree char *copy = NULL;
  guint64 v;

  if (value == NULL)
    return fallback;
  copy = g_strstrip (g_strdup (value));
  if (!g_ascii_string_to_unsigned (copy, 10, 0, G_MAXUINT64, &v, NULL))
    return fallback;
  return v;
}

static gboolean
sysattr_is (struct udev_device *dev, const char *name, const char *expected)
{
  const char *value = sysattr (dev, name);
  g_autofree char *copy = NULL;

  if (value == NULL)
    return FALSE;
  copy = g_strstrip (g_strdup (value));
  return g_str_equal (copy, expected);
}

static const char *
prop (struct udev_device *dev, const char *name)
{
  const char *value = udev_device_get_property_value (dev, name);
  return value != NULL && value[0] != '\0' ? value : NULL;
}

static gboolean
prop_is_true (struct udev_device *dev, const char *name)
{
  return g_strcmp0 (udev_device_get_property_value (dev, name), "1") == 0;
}

char *
bmapd_device_info_decode_udev_string (const char *enc)
{
  GString *s = g_string_new (NULL);

  for (const char *p = enc; *p != '\0'; p++) {
    if (p[0] == '\\' && p[1] == 'x' && g_ascii_isxdigit (p[2]) && g_ascii_isxdigit (p[3])) {
      g_string_append_c (s,
                         (char) (g_ascii_xdigit_value (p[2]) * 16 + g_ascii_xdigit_value (p[3])));
      p += 3;
    } else {
      g_string_append_c (s, *p);
    }
  }
  if (!g_utf8_validate (s->str, -1, NULL)) {
    g_string_free (s, TRUE);
    return NULL;
  }
  return g_strstrip (g_string_free (s, FALSE));
}

/* The first of: udev's encoded property, its plain property (underscores
 * for spaces), a sysfs attribute of the disk's device. */
static char *
describe (struct udev_device *dev, const char *enc_key, const char *key,
          struct udev_device *attr_dev, const char *attr)
{
  const char *value;

  if (enc_key != NULL && (value = prop (dev, enc_key)) != NULL) {
    char *decoded = bmapd_device_info_decode_udev_string (value);
    if (decoded != NULL && decoded[0] != '\0')
      return decoded;
    g_free (decoded);
  }
  if (key != NULL && (value = prop (dev, key)) != NULL)
    return g_strdelimit (g_strdup (value), "_", ' ');
  if (attr != NULL && (value = sysattr (attr_dev, attr)) != NULL) {
    char *copy = g_strstrip (g_strdup (value));
    if (g_utf8_validate (copy, -1, NULL) && copy[0] != '\0')
      return copy;
    g_free (copy);
  }
  return g_strdup ("");
}

static struct udev_device *
find_ancestor (struct udev_device *dev, const char *subsystem)
{
  return udev_device_get_parent_with_subsystem_devtype (dev, subsystem, NULL);
}

static char *
detect_bus (struct udev_device *dev, struct udev_device *mmc)
{
  const char *id_bus = prop (dev, "ID_BUS");
  struct udev_device *scsi;

  /* A USB card reader or stick is on usb whatever protocol sits on top. */
  if (find_ancestor (dev, "usb") != NULL)
    return g_strdup ("usb");
  if (mmc != NULL)
    return g_strdup (sysattr_is (mmc, "type", "SDIO") ? "sdio" : "mmc");
  if (id_bus != NULL)
    return g_strdup (id_bus);
  if (find_ancestor (dev, "nvme") != NULL)
    return g_strdup ("nvme");
  if (find_ancestor (dev, "virtio") != NULL)
    return g_strdup ("virtio");
  scsi = find_ancestor (dev, "scsi");
  if (scsi != NULL) {
    /* libata disks say "ATA" in the SCSI vendor field. */
    if (sysattr_is (scsi, "vendor", "ATA"))
      return g_strdup ("ata");
    return g_strdup ("scsi");
  }
  if (g_str_has_prefix (udev_device_get_devpath (dev), "/devices/virtual/"))
    return g_strdup ("virtual");
  return g_strdup ("");
}

/* udisks' rules mark card readers and sticks with ID_DRIVE_FLASH_* etc. */
static gboolean
has_removable_drive_flags (struct udev_device *dev)
{
  struct udev_list_entry *entry;

  udev_list_entry_foreach (entry, udev_device_get_properties_list_entry (dev))
  {
    const char *key = udev_list_entry_get_name (entry);
    if ((g_str_has_prefix (key, "ID_DRIVE_FLASH") || g_str_has_prefix (key, "ID_DRIVE_MEDIA_FLASH")
         || g_str_equal (key, "ID_DRIVE_THUMB"))
        && g_strcmp0 (udev_list_entry_get_value (entry), "1") == 0)
      return TRUE;
  }
  return FALSE;
}

/* Partitions are subdirectories named after the disk: sdb1, mmcblk0p1. */
static char **
list_partitions (struct udev_device *dev)
{
  g_autoptr (GPtrArray) partitions = g_ptr_array_new_with_free_func (g_free);
  const char *syspath = udev_device_get_syspath (dev);
  const char *name = udev_device_get_sysname (dev);
  g_autoptr (GDir) top = g_dir_open (syspath, 0, NULL);
  const char *entry;

  while (top != NULL && (entry = g_dir_read_name (top)) != NULL) {
    g_autofree char *partition_file = NULL;

    if (!g_str_has_prefix (entry, name) || g_str_equal (entry, name))
      continue;
    partition_file = g_build_filename (syspath, entry, "partition", NULL);
    if (g_file_test (partition_file, G_FILE_TEST_EXISTS))
      g_ptr_array_add (partitions, g_strdup (entry));
  }
  g_ptr_array_sort (partitions, (GCompareFunc) g_strcmp0);
  g_ptr_array_add (partitions, NULL);
  return (char **) g_ptr_array_free (g_steal_pointer (&partitions), FALSE);
}

static char **
list_holders (struct udev_device *dev, char **partitions)
{
  g_autoptr (GPtrArray) holders = g_ptr_array_new_with_free_func (g_free);
  const char *syspath = udev_device_get_syspath (dev);
  g_autoptr (GPtrArray) dirs = g_ptr_array_new_with_free_func (g_free);
  const char *entry;

  g_ptr_array_add (dirs, g_build_filename (syspath, "holders", NULL));
  for (guint i = 0; partitions[i] != NULL; i++)
    g_ptr_array_add (dirs, g_build_filename (syspath, partitions[i], "holders", NULL));
  for (guint i = 0; i < dirs->len; i++) {
    g_autoptr (GDir) dir = g_dir_open (g_ptr_array_index (dirs, i), 0, NULL);
    while (dir != NULL && (entry = g_dir_read_name (dir)) != NULL)
      g_ptr_array_add (holders, g_strdup (entry));
  }
  g_ptr_array_add (holders, NULL);
  return (char **) g_ptr_array_free (g_steal_pointer (&holders), FALSE);
}

static gboolean
is_offered (struct udev_device *dev, char **why_not)
{
  const char *name = udev_device_get_sysname (dev);
  static const char *const excluded_prefixes[] = { "ram", "zram", "dm-", "md", "sr", "fd" };

  if (g_strcmp0 (udev_device_get_subsystem (dev), "block") != 0
      || g_strcmp0 (udev_device_get_devtype (dev), "disk") != 0) {
    *why_not = g_strdup ("not a whole disk");
    return FALSE;
  }
  for (guint i = 0; i < G_N_ELEMENTS (excluded_prefixes); i++) {
    if (g_str_has_prefix (name, excluded_prefixes[i])) {
      *why_not = g_strdup_printf ("%s* devices are not flash targets", excluded_prefixes[i]);
      return FALSE;
    }
  }
  if (g_str_has_prefix (name, "mmcblk")
      && (strstr (name, "boot") != NULL || strstr (name, "rpmb") != NULL)) {
    *why_not = g_strdup ("an eMMC boot or RPMB area");
    return FALSE;
  }
  if (prop_is_true (dev, "ID_CDROM")) {
    *why_not = g_strdup ("an optical drive");
    return FALSE;
  }
  if (g_str_has_prefix (name, "loop") && sysattr (dev, "loop/backing_file") == NULL) {
    *why_not = g_strdup ("a loop device without backing file");
    return FALSE;
  }
  return TRUE;
}

char *
bmapd_device_info_format_size (guint64 size)
{
  static const char *const units[] = { "kB", "MB", "GB", "TB", "PB" };
  double value = (double) size / 1000.0;
  guint unit = 0;

  if (size < 1000)
    return g_strdup_printf ("%u bytes", (guint) size);
  while (value >= 1000.0 && unit + 1 < G_N_ELEMENTS (units)) {
    value /= 1000.0;
    unit++;
  }
  /* One decimal below ten, as udisks2: "7.9 GB", "32 GB". */
  return g_strdup_printf ("%.*f %s", value < 10.0 ? 1 : 0, value, units[unit]);
}

/* What a person calls the disk, the way udisks2 names drives: vendor and
 * model ("SanDisk Ultra"), else what kind of disk it is, then the size of
 * its medium. */
static char *
make_display_name (const BmapdDeviceInfo *info, struct udev_device *mmc)
{
  g_autoptr (GString) name = g_string_new (NULL);

  /* Some models repeat the vendor: "SanDisk SanDisk Ultra"; libata puts
   * "ATA" where SCSI has the vendor. */
  if (info->vendor[0] != '\0' && !g_str_equal (info->vendor, "ATA")
      && g_ascii_strncasecmp (info->model, info->vendor, strlen (info->vendor)) != 0)
    g_string_append (name, info->vendor);
  if (info->model[0] != '\0') {
    if (name->len > 0)
      g_string_append_c (name, ' ');
    g_string_append (name, info->model);
  }
  if (name->len == 0) {
    if (g_str_has_prefix (info->name, "loop"))
      g_string_append (name, "Loop Device");
    else if (mmc != NULL && sysattr_is (mmc, "type", "SD"))
      g_string_append (name, "SD Card");
    else if (mmc != NULL)
      g_string_append (name, "eMMC");
    else if (info->removable)
      g_string_append (name, "Removable Drive");
    else
      g_string_append (name, "Disk");
  }
  if (info->size > 0) {
    g_autofree char *size = bmapd_device_info_format_size (info->size);
    g_string_append_printf (name, " %s", size);
  }
  return g_string_free (g_steal_pointer (&name), FALSE);
}

/* A freedesktop icon name, chosen as udisks2 chooses drive icons; themes
 * fall back from "drive-harddisk-usb" to "drive-harddisk". */
static const char *
choose_icon_name (struct udev_device *dev, const BmapdDeviceInfo *info, struct udev_device *mmc)
{
  if (mmc != NULL)
    return sysattr_is (mmc, "type", "SD") ? "media-flash-sd" : "media-flash";
  if (prop_is_true (dev, "ID_DRIVE_FLASH_SD") || prop_is_true (dev, "ID_DRIVE_MEDIA_FLASH_SD"))
    return "media-flash-sd";
  if (prop_is_true (dev, "ID_DRIVE_THUMB"))
    return "media-removable";
  if (has_removable_drive_flags (dev))
    return "media-flash";
  if (g_str_equal (info->bus, "usb"))
    return info->removable ? "drive-removable-media-usb" : "drive-harddisk-usb";
  if (info->removable)
    return "drive-removable-media";
  if (!g_str_equal (info->bus, "virtual") && sysattr_is (dev, "queue/rotational", "0"))
    return "drive-harddisk-solidstate";
  return "drive-harddisk";
}

BmapdDeviceInfo *
bmapd_device_info_new (struct udev_device *dev, BmapdDiskUsage *usage, char **why_not)
{
  g_autoptr (BmapdDeviceInfo) info = NULL;
  struct udev_device *parent = udev_device_get_parent (dev);
  struct udev_device *mmc = find_ancestor (dev, "mmc");
  const char *node = udev_device_get_devnode (dev);
  const char *diskseq;
  const char *parent_subsystem;
  struct udev_device *scsi_parent, *nvme_parent;
  const char *const *mounts;
  gboolean fixed_bus;

  if (!is_offered (dev, why_not))
    return NULL;

  info = g_new0 (BmapdDeviceInfo, 1);
  info->name = g_strdup (udev_device_get_sysname (dev));
  info->node = node != NULL ? g_strdup (node) : g_strconcat ("/dev/", info->name, NULL);
  info->syspath = g_strdup (udev_device_get_syspath (dev));
  info->devnum = udev_device_get_devnum (dev);
  info->size = sysattr_u64 (dev, "size", 0) * 512; /* always 512-byte sectors */
  info->logical_block_size = (guint32) sysattr_u64 (dev, "queue/logical_block_size", 512);
  info->read_only = sysattr_is (dev, "ro", "1");
  info->media_present = info->size > 0;
  diskseq = sysattr (dev, "diskseq");
  if (diskseq == NULL)
    diskseq = prop (dev, "DISKSEQ");
  if (diskseq != NULL)
    info->diskseq = g_ascii_strtoull (diskseq, NULL, 10);

  /* sysfs fallbacks (no udevd, or no rules for the bus): SCSI devices
   * have vendor and model, an NVMe controller model and serial, an MMC
   * card name and serial, virtio-blk a serial on the disk. Other parents'
   * "vendor" attributes are bus ids, not names. */
  parent_subsystem = parent != NULL ? udev_device_get_subsystem (parent) : NULL;
  scsi_parent = g_strcmp0 (parent_subsystem, "scsi") == 0 ? parent : NULL;
  nvme_parent = g_strcmp0 (parent_subsystem, "nvme") == 0 ? parent : NULL;
  info->vendor = describe (dev, "ID_VENDOR_ENC", "ID_VENDOR", scsi_parent, "vendor");
  if (mmc != NULL)
    info->model = describe (dev, NULL, "ID_NAME", mmc, "name");
  else
    info->model = describe (dev, "ID_MODEL_ENC", "ID_MODEL",
                            scsi_parent != NULL ? scsi_parent : nvme_parent, "model");
  info->serial = describe (dev, NULL, "ID_SERIAL_SHORT", mmc != NULL ? mmc : nvme_parent, "serial");
  if (info->serial[0] == '\0') {
    g_free (info->serial);
    info->serial = describe (dev, NULL, NULL, dev, "serial"); /* virtio-blk */
  }
  info->bus = detect_bus (dev, mmc);
  info->id_path = g_strdup (prop (dev, "ID_PATH") != NULL ? prop (dev, "ID_PATH") : "");

  /* As udisks: a removable medium, a removable bus (usb, an SD card), or
   * the drive flags of udisks' rules. eMMC is soldered on: not removable. */
  info->removable = sysattr_is (dev, "removable", "1") || g_str_equal (info->bus, "usb")
                    || (mmc != NULL && sysattr_is (mmc, "type", "SD"))
                    || has_removable_drive_flags (dev);

  fixed_bus = g_str_equal (info->bus, "ata") || g_str_equal (info->bus, "nvme")
              || g_str_equal (info->bus, "scsi") || g_str_equal (info->bus, "virtio")
              || (mmc != NULL && sysattr_is (mmc, "type", "MMC"));
  info->system = (fixed_bus && !info->removable)
                 || (usage != NULL && bmapd_disk_usage_is_system (usage, info->name));

  mounts = usage != NULL ? bmapd_disk_usage_get_mount_points (usage, info->name) : NULL;
  info->mount_points = mounts != NULL ? g_strdupv ((char **) mounts) : g_new0 (char *, 1);
  info->partitions = list_partitions (dev);
  info->holders = list_holders (dev, info->partitions);
  info->busy = info->mount_points[0] != NULL || info->holders[0] != NULL;

  info->display_name = make_display_name (info, mmc);
  info->icon_name = g_strdup (choose_icon_name (dev, info, mmc));
  info->contents = bmapd_device_contents_read (dev);

  return g_steal_pointer (&info);
}

static char **
list_partition_holders (struct udev_device *dev)
{
  char *none[] = { NULL };

  /* A partition has no partitions: only its own holders/ is read. */
  return list_holders (dev, none);
}

BmapdDeviceInfo *
bmapd_device_info_new_partition (struct udev_device *dev, const BmapdDeviceInfo *disk,
                                 char **why_not)
{
  g_autoptr (BmapdDeviceInfo) info = NULL;
  const char *node = udev_device_get_devnode (dev);
  const BmapdDeviceContent *content = NULL;
  g_autofree char *size_text = NULL;

  if (g_strcmp0 (udev_device_get_devtype (dev), "partition") != 0) {
    *why_not = g_strdup ("not a partition");
    return NULL;
  }
  if (!disk->media_present) {
    *why_not = g_strdup_printf ("%s has no medium", disk->node);
    return NULL;
  }

  /* What the disk is, its partitions are: a partition of a System disk is
   * System, one of a removable disk removable. */
  info = bmapd_device_info_copy (disk);
  g_clear_pointer (&info->contents, g_ptr_array_unref);
  g_clear_pointer (&info->mount_points, g_strfreev);
  g_clear_pointer (&info->holders, g_strfreev);
  g_clear_pointer (&info->partitions, g_strfreev);
  g_clear_pointer (&info->name, g_free);
  g_clear_pointer (&info->node, g_free);
  g_clear_pointer (&info->syspath, g_free);
  g_clear_pointer (&info->display_name, g_free);

  info->name = g_strdup (udev_device_get_sysname (dev));
  info->node = node != NULL ? g_strdup (node) : g_strconcat ("/dev/", info->name, NULL);
  info->syspath = g_strdup (udev_device_get_syspath (dev));
  info->devnum = udev_device_get_devnum (dev);
  info->parent = g_strdup (disk->name);
  info->parent_node = g_strdup (disk->node);
  /* sysfs counts in 512-byte sectors whatever the block size. */
  info->size = sysattr_u64 (dev, "size", 0) * 512;
  info->partition_number = (guint32) sysattr_u64 (dev, "partition", 0);
  info->partition_offset = sysattr_u64 (dev, "start", 0) * 512;
  info->read_only = disk->read_only || sysattr_is (dev, "ro", "1");
  if (info->size == 0) {
    /* An extended partition's entry, or one being deleted. */
    *why_not = g_strdup_printf ("%s is empty", info->node);
    return NULL;
  }

  /* Its own entry of the disk's contents: its filesystem and mounts. */
  info->contents = g_ptr_array_new_with_free_func ((GDestroyNotify) bmapd_device_content_free);
  for (guint i = 0; i < disk->contents->len; i++) {
    const BmapdDeviceContent *c = g_ptr_array_index (disk->contents, i);
    if (g_strcmp0 (c->name, info->name) == 0)
      content = c;
  }
  if (content != NULL) {
    g_autoptr (GPtrArray) one = g_ptr_array_new ();
    g_ptr_array_add (one, (gpointer) content);
    g_ptr_array_unref (info->contents);
    info->contents = bmapd_device_contents_copy (one);
  }
  info->mount_points = content != NULL ? g_strdupv (content->mount_points) : g_new0 (char *, 1);
  info->partitions = g_new0 (char *, 1);
  info->holders = list_partition_holders (dev);
  info->busy = info->mount_points[0] != NULL || info->holders[0] != NULL;

  size_text = bmapd_device_info_format_size (info->size);
  info->display_name = g_strdup_printf ("Partition %u (%s) of %s", info->partition_number,
                                        size_text, disk->display_name);
  return g_steal_pointer (&info);
}

BmapdDeviceInfo *
bmapd_device_info_copy (const BmapdDeviceInfo *info)
{
  BmapdDeviceInfo *copy = g_memdup2 (info, sizeof (*info));

  copy->name = g_strdup (info->name);
  copy->node = g_strdup (info->node);
  copy->syspath = g_strdup (info->syspath);
  copy->vendor = g_strdup (info->vendor);
  copy->model = g_strdup (info->model);
  copy->serial = g_strdup (info->serial);
  copy->bus = g_strdup (info->bus);
  copy->id_path = g_strdup (info->id_path);
  copy->mount_points = g_strdupv (info->mount_points);
  copy->holders = g_strdupv (info->holders);
  copy->partitions = g_strdupv (info->partitions);
  copy->display_name = g_strdup (info->display_name);
  copy->icon_name = g_strdup (info->icon_name);
  copy->contents = bmapd_device_contents_copy (info->contents);
  copy->parent = g_strdup (info->parent);
  copy->parent_node = g_strdup (info->parent_node);
  return copy;
}

void
bmapd_device_info_free (BmapdDeviceInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->name);
  g_free (info->node);
  g_free (info->syspath);
  g_free (info->vendor);
  g_free (info->model);
  g_free (info->serial);
  g_free (info->bus);
  g_free (info->id_path);
  g_strfreev (info->mount_points);
  g_strfreev (info->holders);
  g_strfreev (info->partitions);
  g_free (info->display_name);
  g_free (info->icon_name);
  g_clear_pointer (&info->contents, g_ptr_array_unref);
  g_free (info->parent);
  g_free (info->parent_node);
  g_free (info);
}

GPtrArray *
bmapd_device_info_diff (const BmapdDeviceInfo *a, const BmapdDeviceInfo *b)
{
  GPtrArray *changed = g_ptr_array_new ();

#define CMP_STR(field, prop_name)                                                                  \
  if (g_strcmp0 (a->field, b->field) != 0)                                                         \
    g_ptr_array_add (changed, (gpointer) prop_name);
#define CMP_VAL(field, prop_name)                                                                  \
  if (a->field != b->field)                                                                        \
    g_ptr_array_add (changed, (gpointer) prop_name);
  CMP_STR (node, "Node");
  CMP_VAL (size, "Size");
  CMP_VAL (logical_block_size, "LogicalBlockSize");
  CMP_STR (vendor, "Vendor");
  CMP_STR (model, "Model");
  CMP_STR (serial, "Serial");
  CMP_STR (bus, "Bus");
  CMP_VAL (removable, "Removable");
  CMP_VAL (system, "System");
  CMP_VAL (read_only, "ReadOnly");
  CMP_VAL (media_present, "MediaPresent");
  CMP_VAL (busy, "Busy");
  CMP_VAL (diskseq, "DiskSeq");
  CMP_STR (display_name, "DisplayName");
  CMP_STR (icon_name, "IconName");
  CMP_VAL (partition_number, "PartitionNumber");
  CMP_VAL (partition_offset, "PartitionOffset");
  if (!bmapd_device_contents_equal (a->contents, b->contents))
    g_ptr_array_add (changed, (gpointer) "Contents");
#undef CMP_STR
#undef CMP_VAL
  return changed;
}

gboolean
bmapd_device_info_media_inserted (const BmapdDeviceInfo *old, const BmapdDeviceInfo *info)
{
  if (info == NULL || !info->media_present)
    return FALSE;
  if (old == NULL || !old->media_present)
    return TRUE;
  return old->diskseq != info->diskseq;
}
