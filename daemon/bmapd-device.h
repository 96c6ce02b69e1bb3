/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-bus.h>

#include "bmapd-device-info.h"

G_BEGIN_DECLS

#define BMAPD_DEVICE_INTERFACE   "org.bmapd.bmapd1.Device"
#define BMAPD_DEVICE_PATH_PREFIX "/org/bmapd/bmapd1/device"

/* The org.bmapd.bmapd1.Device object of one whole disk or partition. */
typedef struct _BmapdDevice BmapdDevice;

/* Exports the object and announces it with InterfacesAdded. */
BmapdDevice *bmapd_device_new (sd_bus *bus, const BmapdDeviceInfo *info, GError **error);
/* Announces InterfacesRemoved and unexports the object. */
void bmapd_device_free (BmapdDevice *device);

/* Takes the new values and emits PropertiesChanged for those that differ. */
void bmapd_device_update (BmapdDevice *device, const BmapdDeviceInfo *info);
/* @job_path: the job's object path, or NULL / "/" when idle. */
void bmapd_device_set_job (BmapdDevice *device, const char *job_path);

const char *bmapd_device_get_path (BmapdDevice *device);
const BmapdDeviceInfo *bmapd_device_get_info (BmapdDevice *device);

/* "/org/bmapd/bmapd1/device/sdb" for "sdb", escaped for object paths. */
char *bmapd_device_path_for_name (const char *name);
/* The kernel name in a device object path, NULL when it is not one. */
char *bmapd_device_name_from_path (const char *path);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdDevice, bmapd_device_free)

G_END_DECLS
