/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <blkid.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bmapd-device-contents.h"
#include "bmapd-device-info.h"
#include "bmapd-disk-usage.h"

void
bmapd_device_content_free (BmapdDeviceContent *content)
{
  if (content == NULL)
    return;
  g_free (content->name);
  g_free (content->node);
  g_free (content->label);
  g_free (content->type);
  g_free (content->usage);
  g_free (content->version);
  g_free (content->uuid);
  g_free (content->part_name);
  g_strfreev (content->mount_points);
  g_free (content);
}

static const char *
prop (struct udev_device *dev, const char *name)
{
  const char *value = udev_device_get_property_value (dev, name);
  return value != NULL && value[0] != '\0' ? value : NULL;
}

static guint64
sysattr_u64 (struct udev_device *dev, const char *name)
{
  const char *value = udev_device_get_sysattr_value (dev, name);
  g_autofree char *copy = NULL;
  guint64 v;

  if (value == NULL)
    return 0;
  copy = g_strstrip (g_strdup (value));
  return g_ascii_string_to_unsigned (copy, 10, 0, G_MAXUINT64, &v, NULL) ? v : 0;
}

/* A udev string property: its \xNN-encoded form when there is one (labels
 * may hold spaces and any UTF-8), else the plain one; "" when neither. */
static char *
udev_string (struct udev_device *dev, const char *enc_key, const char *key)
{
  const char *value;

  if (enc_key != NULL && (value = prop (dev, enc_key)) != NULL) {
    char *decoded = bmapd_device_info_decode_udev_string (value);
    if (decoded != NULL)
      return decoded;
  }
  value = prop (dev, key);
  if (value != NULL && g_utf8_validate (value, -1, NULL))
    return g_strdup (value);
  return g_strdup ("");
}

static void
set_from_blkid (blkid_probe probe, const char *name, char **field)
{
  const char *value = NULL;

  if (blkid_probe_lookup_value (probe, name, &value, NULL) == 0 && value != NULL
      && g_utf8_validate (value, -1, NULL)) {
    g_free (*field);
    *field = g_strdup (value);
  }
}

/* udevd did not see the device (containers, the test suite): ask libblkid
 * what udev's blkid builtin would have said. Best effort: a node that
 * cannot be opened or read just stays unknown. */
static void
probe_with_blkid (BmapdDeviceContent *content)
{
  blkid_probe probe = blkid_new_probe_from_filename (content->node);

  if (probe == NULL)
    return;
  blkid_probe_enable_superblocks (probe, TRUE);
  blkid_probe_set_superblocks_flags (probe, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_TYPE
                                                | BLKID_SUBLKS_USAGE | BLKID_SUBLKS_VERSION
                                                | BLKID_SUBLKS_UUID);
  blkid_probe_enable_partitions (probe, TRUE);
  blkid_probe_set_partitions_flags (probe, BLKID_PARTS_ENTRY_DETAILS);
  if (blkid_do_safeprobe (probe) == 0) {
    set_from_blkid (probe, "LABEL", &content->label);
    set_from_blkid (probe, "TYPE", &content->type);
    set_from_blkid (probe, "USAGE", &content->usage);
    set_from_blkid (probe, "VERSION", &content->version);
    set_from_blkid (probe, "UUID", &content->uuid);
    set_from_blkid (probe, "PART_ENTRY_NAME", &content->part_name);
  }
  blkid_free_probe (probe);
}

/* The active swap areas' device nodes, from /proc/swaps. */
static char **
read_swaps (void)
{
  g_autofree char *text = NULL;
  g_auto (GStrv) lines = NULL;
  g_autoptr (GPtrArray) nodes = g_ptr_array_new_with_free_func (g_free);

  if (g_file_get_contents ("/proc/swaps", &text, NULL, NULL)) {
    lines = g_strsplit (text, "\n", -1);
    for (guint i = 1; lines[i] != NULL; i++) {
      char *space = strpbrk (lines[i], " \t");
      if (space != NULL)
        g_ptr_array_add (nodes, g_strndup (lines[i], (gsize) (space - lines[i])));
    }
  }
  g_ptr_array_add (nodes, NULL);
  return (char **) g_ptr_array_free (g_steal_pointer (&nodes), FALSE);
}

static BmapdDeviceContent *
read_content (struct udev_device *dev, guint64 offset, guint64 size, char *const *swaps)
{
  g_autoptr (BmapdDeviceContent) content = g_new0 (BmapdDeviceContent, 1);
  const char *node = udev_device_get_devnode (dev);
  dev_t devnum = udev_device_get_devnum (dev);
  g_autoptr (GPtrArray) newest_first = bmapd_mount_points_for_devnums (&devnum, 1);
  GPtrArray *mounts = g_ptr_array_new ();

  content->name = g_strdup (udev_device_get_sysname (dev));
  content->node = node != NULL ? g_strdup (node) : g_strconcat ("/dev/", content->name, NULL);
  content->number = (guint32) sysattr_u64 (dev, "partition");
  content->offset = offset;
  content->size = size;
  content->label = udev_string (dev, "ID_FS_LABEL_ENC", "ID_FS_LABEL");
  content->type = udev_string (dev, NULL, "ID_FS_TYPE");
  content->usage = udev_string (dev, NULL, "ID_FS_USAGE");
  content->version = udev_string (dev, NULL, "ID_FS_VERSION");
  content->uuid = udev_string (dev, "ID_FS_UUID_ENC", "ID_FS_UUID");
  content->part_name = udev_string (dev, "ID_PART_ENTRY_NAME", "ID_PART_ENTRY_NAME");
  if (!udev_device_get_is_initialized (dev))
    probe_with_blkid (content);

  /* Oldest mount first, as mount(8) lists them. */
  for (guint i = newest_first->len; i > 0; i--)
    g_ptr_array_add (mounts, g_strdup (g_ptr_array_index (newest_first, i - 1)));
  if (g_strv_contains ((const char *const *) swaps, content->node))
    g_ptr_array_add (mounts, g_strdup ("[SWAP]"));
  g_ptr_array_add (mounts, NULL);
  content->mount_points = (char **) g_ptr_array_free (mounts, FALSE);
  return g_steal_pointer (&content);
}

static gint
compare_by_number (gconstpointer a, gconstpointer b)
{
  const BmapdDeviceContent *ca = *(const BmapdDeviceContent *const *) a;
  const BmapdDeviceContent *cb = *(const BmapdDeviceContent *const *) b;

  return ca->number < cb->number ? -1 : ca->number > cb->number;
}

GPtrArray *
bmapd_device_contents_read (struct udev_device *dev)
{
  GPtrArray *contents = g_ptr_array_new_with_free_func ((GDestroyNotify) bmapd_device_content_free);
  struct udev *udev = udev_device_get_udev (dev);
  const char *syspath = udev_device_get_syspath (dev);
  const char *name = udev_device_get_sysname (dev);
  guint64 disk_size = sysattr_u64 (dev, "size") * 512;
  g_auto (GStrv) swaps = NULL;
  g_autoptr (GDir) dir = NULL;
  const char *entry;

  if (disk_size == 0)
    return contents; /* no medium */
  swaps = read_swaps ();
  dir = g_dir_open (syspath, 0, NULL);
  /* Partitions are subdirectories named after the disk: sdb1, mmcblk0p1. */
  while (dir != NULL && (entry = g_dir_read_name (dir)) != NULL) {
    g_autofree char *path = NULL;
    struct udev_device *part;

    if (!g_str_has_prefix (entry, name) || g_str_equal (entry, name))
      continue;
    path = g_build_filename (syspath, entry, NULL);
    part = udev_device_new_from_syspath (udev, path);
    if (part == NULL)
      continue;
    if (g_strcmp0 (udev_device_get_devtype (part), "partition") == 0)
      /* sysfs counts in 512-byte sectors whatever the block size. */
      g_ptr_array_add (contents, read_content (part, sysattr_u64 (part, "start") * 512,
                                               sysattr_u64 (part, "size") * 512, swaps));
    udev_device_unref (part);
  }
  g_ptr_array_sort (contents, compare_by_number);

  if (contents->len == 0) {
    /* A filesystem on the whole disk (a "superfloppy" stick), if any. */
    BmapdDeviceContent *whole = read_content (dev, 0, disk_size, swaps);

    if (whole->type[0] != '\0' || whole->mount_points[0] != NULL)
      g_ptr_array_add (contents, whole);
    else
      bmapd_device_content_free (whole);
  }
  return contents;
}

static BmapdDeviceContent *
content_copy (const BmapdDeviceContent *c, gpointer unused)
{
  BmapdDeviceContent *copy = g_memdup2 (c, sizeof (*c));

  copy->name = g_strdup (c->name);
  copy->node = g_strdup (c->node);
  copy->label = g_strdup (c->label);
  copy->type = g_strdup (c->type);
  copy->usage = g_strdup (c->usage);
  copy->version = g_strdup (c->version);
  copy->uuid = g_strdup (c->uuid);
  copy->part_name = g_strdup (c->part_name);
  copy->mount_points = g_strdupv (c->mount_points);
  return copy;
}

GPtrArray *
bmapd_device_contents_copy (const GPtrArray *contents)
{
  return g_ptr_array_copy ((GPtrArray *) contents, (GCopyFunc) content_copy, NULL);
}

static gboolean
content_equal (const BmapdDeviceContent *a, const BmapdDeviceContent *b)
{
  return g_str_equal (a->name, b->name) && g_str_equal (a->node, b->node) && a->number == b->number
         && a->offset == b->offset && a->size == b->size && g_str_equal (a->label, b->label)
         && g_str_equal (a->type, b->type) && g_str_equal (a->usage, b->usage)
         && g_str_equal (a->version, b->version) && g_str_equal (a->uuid, b->uuid)
         && g_str_equal (a->part_name, b->part_name)
         && g_strv_equal ((const char *const *) a->mount_points,
                          (const char *const *) b->mount_points);
}

gboolean
bmapd_device_contents_equal (const GPtrArray *a, const GPtrArray *b)
{
  if (a->len != b->len)
    return FALSE;
  for (guint i = 0; i < a->len; i++) {
    if (!content_equal (g_ptr_array_index ((GPtrArray *) a, i),
                        g_ptr_array_index ((GPtrArray *) b, i)))
      return FALSE;
  }
  return TRUE;
}
