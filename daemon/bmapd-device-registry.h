/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-event.h>

#include "bmapd-device-info.h"

G_BEGIN_DECLS

/* The whole disks we offer as targets, and their partitions (with
 * BmapdDeviceInfo.parent set; added after their disk, removed before it):
 * enumerated through udev at start,
 * then followed through the udev monitor (add, change, remove) and through
 * /proc/self/mountinfo and /proc/swaps (System and Busy), all on the event
 * loop. Listeners hear about every change. */
typedef struct _BmapdDeviceRegistry BmapdDeviceRegistry;

typedef enum {
  BMAPD_DEVICE_ADDED,   /* @old_info is NULL */
  BMAPD_DEVICE_CHANGED, /* a property differs; see bmapd_device_info_media_inserted() */
  BMAPD_DEVICE_REMOVED, /* @info is NULL */
} BmapdDeviceEvent;

typedef void (*BmapdDeviceListener) (BmapdDeviceEvent event, const BmapdDeviceInfo *old_info,
                                     const BmapdDeviceInfo *info, gpointer user_data);

BmapdDeviceRegistry *bmapd_device_registry_new (sd_event *event, GError **error);
void bmapd_device_registry_free (BmapdDeviceRegistry *registry);

/* Listeners are called in the order they were added, for disks and
 * partitions alike. */
void bmapd_device_registry_add_listener (BmapdDeviceRegistry *registry,
                                         BmapdDeviceListener listener, gpointer user_data);

/* Starts the monitor, then enumerates (an ADDED event per disk and
 * partition). */
gboolean bmapd_device_registry_start (BmapdDeviceRegistry *registry, GError **error);

const BmapdDeviceInfo *
bmapd_device_registry_lookup (BmapdDeviceRegistry *registry, const char *name);
/* Every device, sorted by name. */
GPtrArray *bmapd_device_registry_list (BmapdDeviceRegistry *registry);

/* Reads @name again from sysfs, bypassing the registry's state (the check
 * made after authorization). DeviceGone when it is no longer there or no
 * longer offered. */
BmapdDeviceInfo *
bmapd_device_registry_read_fresh (BmapdDeviceRegistry *registry, const char *name, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdDeviceRegistry, bmapd_device_registry_free)

G_END_DECLS
