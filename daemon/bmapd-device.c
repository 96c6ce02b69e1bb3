/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stddef.h>
#include <stdlib.h>

#include "bmap-error.h"
#include "bmapd-device.h"
#include "bmapd-log.h"

struct _BmapdDevice {
  /* By value, so that the vtable can read the properties by offset. */
  BmapdDeviceInfo info;
  char *path;
  char *job_path;
  char *parent_path; /* PartitionOf: the disk's object, "/" for a whole disk */
  sd_bus *bus;
  sd_bus_slot *slot;
};

#define INFO_OFFSET(field) (offsetof (BmapdDevice, info) + offsetof (BmapdDeviceInfo, field))

static int
append_string_entry (sd_bus_message *reply, const char *key, const char *value)
{
  return sd_bus_message_append (reply, "{sv}", key, "s", value);
}

static int
append_content (sd_bus_message *reply, const BmapdDeviceContent *c)
{
  int r;

  r = sd_bus_message_open_container (reply, 'a', "{sv}");
  if (r >= 0)
    r = append_string_entry (reply, "name", c->name);
  if (r >= 0)
    r = append_string_entry (reply, "node", c->node);
  if (r >= 0)
    r = sd_bus_message_append (reply, "{sv}", "number", "u", c->number);
  if (r >= 0)
    r = sd_bus_message_append (reply, "{sv}", "offset", "t", c->offset);
  if (r >= 0)
    r = sd_bus_message_append (reply, "{sv}", "size", "t", c->size);
  if (r >= 0)
    r = append_string_entry (reply, "label", c->label);
  if (r >= 0)
    r = append_string_entry (reply, "type", c->type);
  if (r >= 0)
    r = append_string_entry (reply, "usage", c->usage);
  if (r >= 0)
    r = append_string_entry (reply, "version", c->version);
  if (r >= 0)
    r = append_string_entry (reply, "uuid", c->uuid);
  if (r >= 0)
    r = append_string_entry (reply, "partition-name", c->part_name);
  if (r >= 0)
    r = sd_bus_message_open_container (reply, 'e', "sv");
  if (r >= 0)
    r = sd_bus_message_append (reply, "s", "mount-points");
  if (r >= 0)
    r = sd_bus_message_open_container (reply, 'v', "as");
  if (r >= 0)
    r = sd_bus_message_append_strv (reply, c->mount_points);
  if (r >= 0)
    r = sd_bus_message_close_container (reply);
  if (r >= 0)
    r = sd_bus_message_close_container (reply);
  if (r >= 0)
    r = sd_bus_message_close_container (reply);
  return r;
}

static int
get_contents (sd_bus *bus, const char *path, const char *interface, const char *property,
              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
  BmapdDevice *device = userdata;
  int r;

  r = sd_bus_message_open_container (reply, 'a', "a{sv}");
  for (guint i = 0; r >= 0 && i < device->info.contents->len; i++)
    r = append_content (reply, g_ptr_array_index (device->info.contents, i));
  if (r >= 0)
    r = sd_bus_message_close_container (reply);
  return r;
}

static const sd_bus_vtable device_vtable[] = {
  SD_BUS_VTABLE_START (0),
  SD_BUS_PROPERTY ("Node", "s", NULL, INFO_OFFSET (node), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Name", "s", NULL, INFO_OFFSET (name), SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Size", "t", NULL, INFO_OFFSET (size), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("LogicalBlockSize", "u", NULL, INFO_OFFSET (logical_block_size),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Vendor", "s", NULL, INFO_OFFSET (vendor), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Model", "s", NULL, INFO_OFFSET (model), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Serial", "s", NULL, INFO_OFFSET (serial), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Bus", "s", NULL, INFO_OFFSET (bus), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Removable", "b", NULL, INFO_OFFSET (removable),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("System", "b", NULL, INFO_OFFSET (system), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("ReadOnly", "b", NULL, INFO_OFFSET (read_only),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("MediaPresent", "b", NULL, INFO_OFFSET (media_present),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Busy", "b", NULL, INFO_OFFSET (busy), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("DiskSeq", "t", NULL, INFO_OFFSET (diskseq),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Job", "o", NULL, offsetof (BmapdDevice, job_path),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("DisplayName", "s", NULL, INFO_OFFSET (display_name),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("IconName", "s", NULL, INFO_OFFSET (icon_name),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Contents", "aa{sv}", get_contents, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("PartitionOf", "o", NULL, offsetof (BmapdDevice, parent_path),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("PartitionNumber", "u", NULL, INFO_OFFSET (partition_number),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("PartitionOffset", "t", NULL, INFO_OFFSET (partition_offset),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_VTABLE_END,
};

char *
bmapd_device_path_for_name (const char *name)
{
  char *path = NULL;
  g_autofree char *result = NULL;

  if (sd_bus_path_encode (BMAPD_DEVICE_PATH_PREFIX, name, &path) < 0)
    return NULL;
  /* sd-bus allocates with malloc; hand out GLib memory. */
  result = g_strdup (path);
  free (path);
  return g_steal_pointer (&result);
}

char *
bmapd_device_name_from_path (const char *path)
{
  char *name = NULL;
  g_autofree char *result = NULL;

  if (sd_bus_path_decode (path, BMAPD_DEVICE_PATH_PREFIX, &name) <= 0)
    return NULL;
  result = g_strdup (name);
  free (name);
  return g_steal_pointer (&result);
}

static void
info_move_into (BmapdDeviceInfo *dest, BmapdDeviceInfo *src)
{
  /* dest's strings are freed; src's are stolen. */
  g_free (dest->name);
  g_free (dest->node);
  g_free (dest->syspath);
  g_free (dest->vendor);
  g_free (dest->model);
  g_free (dest->serial);
  g_free (dest->bus);
  g_free (dest->id_path);
  g_strfreev (dest->mount_points);
  g_strfreev (dest->holders);
  g_strfreev (dest->partitions);
  g_free (dest->display_name);
  g_free (dest->icon_name);
  g_clear_pointer (&dest->contents, g_ptr_array_unref);
  g_free (dest->parent);
  g_free (dest->parent_node);
  *dest = *src;
  g_free (src);
}

BmapdDevice *
bmapd_device_new (sd_bus *bus, const BmapdDeviceInfo *info, GError **error)
{
  g_autoptr (BmapdDevice) device = g_new0 (BmapdDevice, 1);
  int r;

  info_move_into (&device->info, bmapd_device_info_copy (info));
  device->path = bmapd_device_path_for_name (info->name);
  device->job_path = g_strdup ("/");
  device->parent_path
      = info->parent != NULL ? bmapd_device_path_for_name (info->parent) : g_strdup ("/");
  device->bus = sd_bus_ref (bus);
  if (device->path == NULL || device->parent_path == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "no object path for device name %s", info->name);
    return NULL;
  }
  r = sd_bus_add_object_vtable (bus, &device->slot, device->path, BMAPD_DEVICE_INTERFACE,
                                device_vtable, device);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "exporting %s", device->path);
    return NULL;
  }
  r = sd_bus_emit_object_added (bus, device->path);
  if (r < 0)
    bmapd_log (LOG_WARNING, "InterfacesAdded for %s: %s", device->path, g_strerror (-r));
  return g_steal_pointer (&device);
}

void
bmapd_device_free (BmapdDevice *device)
{
  if (device == NULL)
    return;
  if (device->slot != NULL) {
    /* At exit the bus is already closed: nobody to tell. */
    int r = sd_bus_is_open (device->bus) > 0
                ? sd_bus_emit_object_removed (device->bus, device->path)
                : 0;
    if (r < 0)
      bmapd_log (LOG_WARNING, "InterfacesRemoved for %s: %s", device->path, g_strerror (-r));
    sd_bus_slot_unref (device->slot);
  }
  if (device->bus != NULL)
    sd_bus_unref (device->bus);
  info_move_into (&device->info, g_new0 (BmapdDeviceInfo, 1));
  g_free (device->path);
  g_free (device->job_path);
  g_free (device->parent_path);
  g_free (device);
}

void
bmapd_device_update (BmapdDevice *device, const BmapdDeviceInfo *info)
{
  g_autoptr (GPtrArray) changed = bmapd_device_info_diff (&device->info, info);
  int r;

  info_move_into (&device->info, bmapd_device_info_copy (info));
  if (changed->len == 0)
    return;
  g_ptr_array_add (changed, NULL);
  r = sd_bus_emit_properties_changed_strv (device->bus, device->path, BMAPD_DEVICE_INTERFACE,
                                           (char **) changed->pdata);
  if (r < 0)
    bmapd_log (LOG_WARNING, "PropertiesChanged for %s: %s", device->path, g_strerror (-r));
}

void
bmapd_device_set_job (BmapdDevice *device, const char *job_path)
{
  int r;

  if (job_path == NULL)
    job_path = "/";
  if (g_str_equal (device->job_path, job_path))
    return;
  g_free (device->job_path);
  device->job_path = g_strdup (job_path);
  r = sd_bus_emit_properties_changed (device->bus, device->path, BMAPD_DEVICE_INTERFACE, "Job",
                                      NULL);
  if (r < 0)
    bmapd_log (LOG_WARNING, "PropertiesChanged for %s: %s", device->path, g_strerror (-r));
}

const char *
bmapd_device_get_path (BmapdDevice *device)
{
  return device->path;
}

const BmapdDeviceInfo *
bmapd_device_get_info (BmapdDevice *device)
{
  return &device->info;
}
