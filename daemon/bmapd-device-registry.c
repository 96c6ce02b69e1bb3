/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libudev.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmapd-device-registry.h"
#include "bmapd-log.h"
#include "bmapd-udev-control.h"

typedef struct {
  BmapdDeviceListener func;
  gpointer user_data;
} Listener;

struct _BmapdDeviceRegistry {
  sd_event *event;
  struct udev *udev;
  struct udev_monitor *monitor;
  sd_event_source *monitor_source;
  int mountinfo_fd;
  sd_event_source *mountinfo_source;
  int swaps_fd;
  sd_event_source *swaps_source;
  GHashTable *devices; /* name -> BmapdDeviceInfo */
  GArray *listeners;   /* Listener */
};

static void
emit (BmapdDeviceRegistry *registry, BmapdDeviceEvent event, const BmapdDeviceInfo *old_info,
      const BmapdDeviceInfo *info)
{
  for (guint i = 0; i < registry->listeners->len; i++) {
    Listener *l = &g_array_index (registry->listeners, Listener, i);
    l->func (event, old_info, info, l->user_data);
  }
}

/* Brings the registry's entry for @name in line with @info (NULL: gone or
 * not offered) and tells the listeners. */
static void
update_device (BmapdDeviceRegistry *registry, const char *name, BmapdDeviceInfo *info)
{
  g_autoptr (BmapdDeviceInfo) old_info = NULL;
  g_autofree char *key = NULL;

  g_hash_table_steal_extended (registry->devices, name, (gpointer *) &key, (gpointer *) &old_info);
  if (info == NULL) {
    if (old_info != NULL) {
      bmapd_log (LOG_INFO, "device %s removed", old_info->node);
      emit (registry, BMAPD_DEVICE_REMOVED, old_info, NULL);
    }
    return;
  }
  g_hash_table_insert (registry->devices, g_strdup (info->name), info);
  if (old_info == NULL) {
    bmapd_log (LOG_INFO, "device %s added (%s, %" G_GUINT64_FORMAT " bytes%s%s)", info->node,
               info->bus[0] != '\0' ? info->bus : "unknown bus", info->size,
               info->removable ? ", removable" : "", info->system ? ", system" : "");
    emit (registry, BMAPD_DEVICE_ADDED, NULL, info);
  } else {
    g_autoptr (GPtrArray) changed = bmapd_device_info_diff (old_info, info);
    gboolean devnum_changed = old_info->devnum != info->devnum;

    if (changed->len == 0 && !devnum_changed)
      return;
    emit (registry, BMAPD_DEVICE_CHANGED, old_info, info);
  }
}

static BmapdDeviceInfo *
read_device (BmapdDeviceRegistry *registry, struct udev_device *dev, BmapdDiskUsage *usage)
{
  g_autofree char *why_not = NULL;
  BmapdDeviceInfo *info = bmapd_device_info_new (dev, usage, &why_not);

  if (info == NULL && g_strcmp0 (udev_device_get_devtype (dev), "disk") == 0)
    bmapd_log (LOG_DEBUG, "%s: not offered: %s", udev_device_get_sysname (dev), why_not);
  return info;
}

/* The partitions of @disk_name as they are now: those of @disk (NULL: the
 * disk is gone or not offered) are read again, the others removed. */
static void
update_partitions (BmapdDeviceRegistry *registry, const char *disk_name,
                   const BmapdDeviceInfo *disk)
{
  g_autoptr (GPtrArray) stale = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter iter;
  const char *key;
  BmapdDeviceInfo *value;

  g_hash_table_iter_init (&iter, registry->devices);
  while (g_hash_table_iter_next (&iter, (gpointer *) &key, (gpointer *) &value)) {
    if (g_strcmp0 (value->parent, disk_name) == 0
        && (disk == NULL || !g_strv_contains ((const char *const *) disk->partitions, key)))
      g_ptr_array_add (stale, g_strdup (key));
  }
  for (guint i = 0; i < stale->len; i++)
    update_device (registry, g_ptr_array_index (stale, i), NULL);
  for (guint i = 0; disk != NULL && disk->partitions[i] != NULL; i++) {
    const char *name = disk->partitions[i];
    struct udev_device *dev
        = udev_device_new_from_subsystem_sysname (registry->udev, "block", name);
    g_autofree char *why_not = NULL;
    BmapdDeviceInfo *info = NULL;

    if (dev != NULL) {
      info = bmapd_device_info_new_partition (dev, disk, &why_not);
      udev_device_unref (dev);
    }
    if (info == NULL && why_not != NULL)
      bmapd_log (LOG_DEBUG, "%s: not offered: %s", name, why_not);
    update_device (registry, name, info);
  }
}

/* A disk and its partitions: a disk comes before its partitions and goes
 * after them, so that PartitionOf always names an object that exists. */
static void
update_disk (BmapdDeviceRegistry *registry, const char *name, BmapdDeviceInfo *info)
{
  if (info == NULL) {
    update_partitions (registry, name, NULL);
    update_device (registry, name, NULL);
    return;
  }
  update_device (registry, name, info);
  /* @info is the registry's now, unchanged until the next update. */
  update_partitions (registry, name, info);
}

/* Reads every known disk again, and its partitions: mounts, swaps,
 * partitions or stacked devices changed, which affects System and Busy. */
static void
refresh_all (BmapdDeviceRegistry *registry)
{
  g_autoptr (BmapdDiskUsage) usage = bmapd_disk_usage_new (registry->udev);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter iter;
  const char *key;
  BmapdDeviceInfo *value;

  /* Copies: update_disk() replaces the table's entries. */
  g_hash_table_iter_init (&iter, registry->devices);
  while (g_hash_table_iter_next (&iter, (gpointer *) &key, (gpointer *) &value)) {
    if (value->parent == NULL)
      g_ptr_array_add (names, g_strdup (key));
  }
  for (guint i = 0; i < names->len; i++) {
    const char *name = g_ptr_array_index (names, i);
    struct udev_device *dev
        = udev_device_new_from_subsystem_sysname (registry->udev, "block", name);
    BmapdDeviceInfo *info = dev != NULL ? read_device (registry, dev, usage) : NULL;

    update_disk (registry, name, info);
    if (dev != NULL)
      udev_device_unref (dev);
  }
}

static int
on_uevent (sd_event_source *source, int fd, uint32_t revents, void *user_data)
{
  BmapdDeviceRegistry *registry = user_data;
  struct udev_device *dev;

  while ((dev = udev_monitor_receive_device (registry->monitor)) != NULL) {
    const char *action = udev_device_get_action (dev);
    const char *devtype = udev_device_get_devtype (dev);
    const char *name = udev_device_get_sysname (dev);

    bmapd_log (LOG_DEBUG, "uevent %s %s (%s)", action, name, devtype);
    if (g_strcmp0 (devtype, "disk") == 0 && !g_str_has_prefix (name, "dm-")
        && !g_str_has_prefix (name, "md")) {
      if (g_strcmp0 (action, "remove") == 0) {
        update_disk (registry, name, NULL);
      } else {
        g_autoptr (BmapdDiskUsage) usage = bmapd_disk_usage_new (registry->udev);
        /* The event's own device object carries the event's properties; a
         * fresh one reads the udev database and sysfs as they are now. */
        struct udev_device *fresh
            = udev_device_new_from_syspath (registry->udev, udev_device_get_syspath (dev));
        update_disk (registry, name, read_device (registry, fresh != NULL ? fresh : dev, usage));
        if (fresh != NULL)
          udev_device_unref (fresh);
      }
    } else {
      /* A partition that goes stops what writes it, even when sysfs still
       * shows it (a synthetic event): it is read again with its disk. */
      if (g_strcmp0 (devtype, "partition") == 0 && g_strcmp0 (action, "remove") == 0)
        update_device (registry, name, NULL);
      /* A partition or a stacked device came or went: the disks' partitions,
       * and Busy and System of the disks below, may have changed. */
      refresh_all (registry);
    }
    udev_device_unref (dev);
  }
  return 0;
}

static int
on_proc_changed (sd_event_source *source, int fd, uint32_t revents, void *user_data)
{
  BmapdDeviceRegistry *registry = user_data;

  /* mountinfo and swaps signal a change with POLLPRI; reading from the
   * start acknowledges it. */
  lseek (fd, 0, SEEK_SET);
  {
    char buf[4096];
    while (read (fd, buf, sizeof buf) > 0)
      ;
  }
  refresh_all (registry);
  return 0;
}

static gboolean
watch_proc_file (BmapdDeviceRegistry *registry, const char *path, int *fd, sd_event_source **source,
                 GError **error)
{
  int r;

  *fd = open (path, O_RDONLY | O_CLOEXEC);
  if (*fd < 0) {
    bmapd_log (LOG_WARNING, "cannot watch %s: %s", path, g_strerror (errno));
    return TRUE;
  }
  r = sd_event_add_io (registry->event, source, *fd, EPOLLPRI, on_proc_changed, registry);
  if (r < 0) {
    bmapd_log (LOG_WARNING, "cannot watch %s: %s", path, g_strerror (-r));
    return TRUE;
  }
  return TRUE;
}

BmapdDeviceRegistry *
bmapd_device_registry_new (sd_event *event, GError **error)
{
  g_autoptr (BmapdDeviceRegistry) registry = g_new0 (BmapdDeviceRegistry, 1);

  registry->event = sd_event_ref (event);
  registry->mountinfo_fd = -1;
  registry->swaps_fd = -1;
  registry->devices = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                             (GDestroyNotify) bmapd_device_info_free);
  registry->listeners = g_array_new (FALSE, FALSE, sizeof (Listener));
  registry->udev = udev_new ();
  if (registry->udev == NULL) {
    bmap_error_set_errno (error, errno, "udev_new");
    return NULL;
  }
  return g_steal_pointer (&registry);
}

void
bmapd_device_registry_free (BmapdDeviceRegistry *registry)
{
  if (registry == NULL)
    return;
  sd_event_source_disable_unref (registry->monitor_source);
  sd_event_source_disable_unref (registry->mountinfo_source);
  sd_event_source_disable_unref (registry->swaps_source);
  if (registry->mountinfo_fd >= 0)
    close (registry->mountinfo_fd);
  if (registry->swaps_fd >= 0)
    close (registry->swaps_fd);
  if (registry->monitor != NULL)
    udev_monitor_unref (registry->monitor);
  if (registry->udev != NULL)
    udev_unref (registry->udev);
  g_hash_table_unref (registry->devices);
  g_array_unref (registry->listeners);
  sd_event_unref (registry->event);
  g_free (registry);
}

void
bmapd_device_registry_add_listener (BmapdDeviceRegistry *registry, BmapdDeviceListener listener,
                                    gpointer user_data)
{
  Listener l = { listener, user_data };
  g_array_append_val (registry->listeners, l);
}

/* udevd rebroadcasts the kernel's events on the "udev" group once its
 * rules ran (symlinks, ID_* properties); without a udevd (containers,
 * minimal VMs, one that died) nobody does: listen to the kernel directly.
 * BMAPD_UDEV_CONTROL names another socket to probe, for the tests. */
static const char *
choose_netlink_group (void)
{
  const char *path = g_getenv ("BMAPD_UDEV_CONTROL");
  BmapdUdevControl state;
  int errsv = 0;

  if (path == NULL || path[0] == '\0')
    path = BMAPD_UDEV_CONTROL_PATH;
  state = bmapd_udev_control_probe (path, &errsv);
  switch (state) {
    case BMAPD_UDEV_CONTROL_LIVE:
      bmapd_log (LOG_INFO,
                 "following block devices through the udev netlink group (udevd answers on %s)",
                 path);
      return "udev";
    case BMAPD_UDEV_CONTROL_DEAD:
      bmapd_log (LOG_INFO,
                 "following block devices through the kernel netlink group: %s is left by a udevd "
                 "that no longer runs (%s)",
                 path, g_strerror (errsv));
      return "kernel";
    case BMAPD_UDEV_CONTROL_ABSENT:
    default:
      bmapd_log (LOG_INFO,
                 "following block devices through the kernel netlink group: no udevd (%s: %s)",
                 path, g_strerror (errsv));
      return "kernel";
  }
}

gboolean
bmapd_device_registry_start (BmapdDeviceRegistry *registry, GError **error)
{
  struct udev_enumerate *enumerate;
  struct udev_list_entry *entry;
  g_autoptr (BmapdDiskUsage) usage = NULL;
  const char *group = choose_netlink_group ();
  int r;

  registry->monitor = udev_monitor_new_from_netlink (registry->udev, group);
  if (registry->monitor == NULL) {
    bmap_error_set_errno (error, errno, "udev monitor on the %s netlink group", group);
    return FALSE;
  }
  udev_monitor_filter_add_match_subsystem_devtype (registry->monitor, "block", NULL);
  if (udev_monitor_enable_receiving (registry->monitor) < 0) {
    bmap_error_set_errno (error, errno, "udev monitor on the %s netlink group", group);
    return FALSE;
  }
  r = sd_event_add_io (registry->event, &registry->monitor_source,
                       udev_monitor_get_fd (registry->monitor), EPOLLIN, on_uevent, registry);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "watching the udev monitor");
    return FALSE;
  }

  if (!watch_proc_file (registry, "/proc/self/mountinfo", &registry->mountinfo_fd,
                        &registry->mountinfo_source, error)
      || !watch_proc_file (registry, "/proc/swaps", &registry->swaps_fd, &registry->swaps_source,
                           error))
    return FALSE;

  usage = bmapd_disk_usage_new (registry->udev);
  enumerate = udev_enumerate_new (registry->udev);
  udev_enumerate_add_match_subsystem (enumerate, "block");
  udev_enumerate_add_match_property (enumerate, "DEVTYPE", "disk");
  udev_enumerate_scan_devices (enumerate);
  udev_list_entry_foreach (entry, udev_enumerate_get_list_entry (enumerate))
  {
    struct udev_device *dev
        = udev_device_new_from_syspath (registry->udev, udev_list_entry_get_name (entry));
    BmapdDeviceInfo *info;

    if (dev == NULL)
      continue;
    info = read_device (registry, dev, usage);
    if (info != NULL)
      update_disk (registry, udev_device_get_sysname (dev), info);
    udev_device_unref (dev);
  }
  udev_enumerate_unref (enumerate);
  return TRUE;
}

const BmapdDeviceInfo *
bmapd_device_registry_lookup (BmapdDeviceRegistry *registry, const char *name)
{
  return g_hash_table_lookup (registry->devices, name);
}

static gint
compare_by_name (gconstpointer a, gconstpointer b)
{
  const BmapdDeviceInfo *ia = *(const BmapdDeviceInfo *const *) a;
  const BmapdDeviceInfo *ib = *(const BmapdDeviceInfo *const *) b;
  return g_strcmp0 (ia->name, ib->name);
}

GPtrArray *
bmapd_device_registry_list (BmapdDeviceRegistry *registry)
{
  GPtrArray *list = g_ptr_array_new ();
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, registry->devices);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    g_ptr_array_add (list, value);
  g_ptr_array_sort (list, compare_by_name);
  return list;
}

BmapdDeviceInfo *
bmapd_device_registry_read_fresh (BmapdDeviceRegistry *registry, const char *name, GError **error)
{
  g_autoptr (BmapdDiskUsage) usage = bmapd_disk_usage_new (registry->udev);
  struct udev_device *dev = udev_device_new_from_subsystem_sysname (registry->udev, "block", name);
  struct udev_device *disk_dev;
  g_autoptr (BmapdDeviceInfo) disk = NULL;
  g_autofree char *why_not = NULL;
  BmapdDeviceInfo *info;

  if (dev == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "/dev/%s is gone", name);
    return NULL;
  }
  if (g_strcmp0 (udev_device_get_devtype (dev), "partition") != 0) {
    info = bmapd_device_info_new (dev, usage, &why_not);
    udev_device_unref (dev);
    if (info == NULL) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "/dev/%s is gone (%s)", name,
                   why_not);
      return NULL;
    }
    return info;
  }
  /* A partition is what its disk, read fresh too, makes it. */
  disk_dev = udev_device_get_parent_with_subsystem_devtype (dev, "block", "disk");
  if (disk_dev != NULL)
    disk = bmapd_device_info_new (disk_dev, usage, &why_not);
  else
    why_not = g_strdup ("no disk above it");
  info = disk != NULL ? bmapd_device_info_new_partition (dev, disk, &why_not) : NULL;
  udev_device_unref (dev);
  if (info == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "/dev/%s is gone (%s)", name, why_not);
    return NULL;
  }
  return info;
}
