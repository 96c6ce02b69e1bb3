/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "bmapd-disk-usage.h"

typedef struct {
  gboolean system;
  GPtrArray *mount_points; /* char*, NULL-terminated */
} DiskUse;

struct _BmapdDiskUsage {
  GHashTable *disks; /* name -> DiskUse */
};

static void
disk_use_free (DiskUse *use)
{
  g_ptr_array_unref (use->mount_points);
  g_free (use);
}

typedef struct {
  dev_t devnum;
  char *mount_point;
} Mount;

static void
mount_free (Mount *m)
{
  g_free (m->mount_point);
  g_free (m);
}

gboolean
bmapd_mount_point_is_system (const char *mount_point)
{
  static const char *const system_mounts[] = { "/", "/usr", "/boot", "/boot/efi", "/efi", "/var" };

  for (guint i = 0; i < G_N_ELEMENTS (system_mounts); i++) {
    if (g_str_equal (mount_point, system_mounts[i]))
      return TRUE;
  }
  return FALSE;
}

/* Parses /proc/self/mountinfo: "36 35 98:0 /root /mnt opts [tags] - type source sopts". */
static GPtrArray *
read_mounts (void)
{
  g_autoptr (GPtrArray) mounts = g_ptr_array_new_with_free_func ((GDestroyNotify) mount_free);
  g_autofree char *contents = NULL;
  g_auto (GStrv) lines = NULL;

  if (!g_file_get_contents ("/proc/self/mountinfo", &contents, NULL, NULL))
    return g_steal_pointer (&mounts);
  lines = g_strsplit (contents, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++) {
    g_auto (GStrv) fields = g_strsplit (lines[i], " ", -1);
    guint n = g_strv_length (fields);
    unsigned major_ = 0, minor_ = 0;
    dev_t devnum;
    Mount *m;

    if (n < 10 || sscanf (fields[2], "%u:%u", &major_, &minor_) != 2)
      continue;
    devnum = makedev (major_, minor_);
    /* btrfs and others report an anonymous device; the source names the real one. */
    if (major_ == 0) {
      const char *source = NULL;
      struct stat st;

      for (guint j = 6; j + 2 < n; j++) {
        if (g_str_equal (fields[j], "-")) {
          source = fields[j + 2];
          break;
        }
      }
      if (source == NULL || !g_str_has_prefix (source, "/dev/"))
        continue;
      {
        g_autofree char *path = g_strcompress (source);
        if (stat (path, &st) < 0 || !S_ISBLK (st.st_mode))
          continue;
      }
      devnum = st.st_rdev;
    }
    m = g_new0 (Mount, 1);
    m->devnum = devnum;
    m->mount_point = g_strcompress (fields[4]); /* undoes \040 and friends */
    g_ptr_array_add (mounts, m);
  }
  return g_steal_pointer (&mounts);
}

/* Devices of active swap: the partition itself, or the filesystem's device
 * for a swap file. */
static GArray *
read_swaps (void)
{
  g_autoptr (GArray) devs = g_array_new (FALSE, FALSE, sizeof (dev_t));
  g_autofree char *contents = NULL;
  g_auto (GStrv) lines = NULL;

  if (!g_file_get_contents ("/proc/swaps", &contents, NULL, NULL))
    return g_steal_pointer (&devs);
  lines = g_strsplit (contents, "\n", -1);
  for (guint i = 1; lines[i] != NULL; i++) {
    g_autofree char *raw = NULL;
    g_autofree char *path = NULL;
    const char *end;
    struct stat st;
    dev_t devnum;

    if (lines[i][0] == '\0')
      continue;
    end = strpbrk (lines[i], " \t");
    raw = end != NULL ? g_strndup (lines[i], end - lines[i]) : g_strdup (lines[i]);
    path = g_strcompress (raw);
    if (stat (path, &st) < 0)
      continue;
    devnum = S_ISBLK (st.st_mode) ? st.st_rdev : st.st_dev;
    g_array_append_val (devs, devnum);
  }
  return g_steal_pointer (&devs);
}

/* Adds the whole disks under the block device @dev to @disks: a partition's
 * disk, the disks below device-mapper and md through slaves/. */
static void
collect_disks (struct udev *udev, struct udev_device *dev, GPtrArray *disks, guint depth)
{
  const char *devtype = udev_device_get_devtype (dev);
  g_autofree char *slaves_path = NULL;
  g_autoptr (GDir) dir = NULL;
  const char *entry;
  gboolean has_slaves = FALSE;

  if (depth > 8)
    return;
  if (g_strcmp0 (devtype, "partition") == 0) {
    struct udev_device *parent
        = udev_device_get_parent_with_subsystem_devtype (dev, "block", "disk");
    if (parent != NULL)
      collect_disks (udev, parent, disks, depth + 1);
    return;
  }
  slaves_path = g_build_filename (udev_device_get_syspath (dev), "slaves", NULL);
  dir = g_dir_open (slaves_path, 0, NULL);
  while (dir != NULL && (entry = g_dir_read_name (dir)) != NULL) {
    struct udev_device *slave = udev_device_new_from_subsystem_sysname (udev, "block", entry);
    if (slave == NULL)
      continue;
    has_slaves = TRUE;
    collect_disks (udev, slave, disks, depth + 1);
    udev_device_unref (slave);
  }
  if (!has_slaves) {
    const char *name = udev_device_get_sysname (dev);
    if (!g_ptr_array_find_with_equal_func (disks, name, g_str_equal, NULL))
      g_ptr_array_add (disks, g_strdup (name));
  }
}

static void
add_use (BmapdDiskUsage *usage, struct udev *udev, dev_t devnum, const char *mount_point,
         gboolean system)
{
  g_autoptr (GPtrArray) disks = g_ptr_array_new_with_free_func (g_free);
  struct udev_device *dev = udev_device_new_from_devnum (udev, 'b', devnum);

  if (dev == NULL)
    return;
  collect_disks (udev, dev, disks, 0);
  udev_device_unref (dev);

  for (guint i = 0; i < disks->len; i++) {
    const char *name = g_ptr_array_index (disks, i);
    DiskUse *use = g_hash_table_lookup (usage->disks, name);

    if (use == NULL) {
      use = g_new0 (DiskUse, 1);
      use->mount_points = g_ptr_array_new_null_terminated (0, g_free, TRUE);
      g_hash_table_insert (usage->disks, g_strdup (name), use);
    }
    use->system |= system;
    if (!g_ptr_array_find_with_equal_func (use->mount_points, mount_point, g_str_equal, NULL))
      g_ptr_array_add (use->mount_points, g_strdup (mount_point));
  }
}

BmapdDiskUsage *
bmapd_disk_usage_new (struct udev *udev)
{
  BmapdDiskUsage *usage = g_new0 (BmapdDiskUsage, 1);
  g_autoptr (GPtrArray) mounts = read_mounts ();
  g_autoptr (GArray) swaps = read_swaps ();

  usage->disks
      = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) disk_use_free);
  for (guint i = 0; i < mounts->len; i++) {
    Mount *m = g_ptr_array_index (mounts, i);
    add_use (usage, udev, m->devnum, m->mount_point, bmapd_mount_point_is_system (m->mount_point));
  }
  for (guint i = 0; i < swaps->len; i++)
    add_use (usage, udev, g_array_index (swaps, dev_t, i), "[SWAP]", TRUE);
  return usage;
}

void
bmapd_disk_usage_free (BmapdDiskUsage *usage)
{
  if (usage == NULL)
    return;
  g_hash_table_unref (usage->disks);
  g_free (usage);
}

gboolean
bmapd_disk_usage_is_system (BmapdDiskUsage *usage, const char *disk)
{
  DiskUse *use = g_hash_table_lookup (usage->disks, disk);
  return use != NULL && use->system;
}

const char *const *
bmapd_disk_usage_get_mount_points (BmapdDiskUsage *usage, const char *disk)
{
  DiskUse *use = g_hash_table_lookup (usage->disks, disk);

  if (use == NULL || use->mount_points->len == 0)
    return NULL;
  return (const char *const *) use->mount_points->pdata;
}

GPtrArray *
bmapd_mount_points_for_devnums (const dev_t *devnums, guint n_devnums)
{
  g_autoptr (GPtrArray) mounts = read_mounts ();
  GPtrArray *result = g_ptr_array_new_with_free_func (g_free);

  /* mountinfo lists mounts in the order they were made: walk it backwards. */
  for (guint i = mounts->len; i > 0; i--) {
    Mount *m = g_ptr_array_index (mounts, i - 1);
    for (guint j = 0; j < n_devnums; j++) {
      if (m->devnum == devnums[j]) {
        g_ptr_array_add (result, g_strdup (m->mount_point));
        break;
      }
    }
  }
  return result;
}
