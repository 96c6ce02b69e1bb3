/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

#include "bmapd-flasher-device.h"
#include "bmapd-flasher-image.h"
#include "bmapd-flasher-job.h"
#include "bmapd-flasher-station.h"

G_BEGIN_DECLS

/* The app's only way to bmapd: the system bus (DBUS_SYSTEM_BUS_ADDRESS when
 * set), through bindings generated from the installed interface XML. Keeps
 * a live list of the daemon's devices and feeds the jobs the app starts. */
#define BMAPD_FLASHER_TYPE_CLIENT (bmapd_flasher_client_get_type ())
G_DECLARE_FINAL_TYPE (BmapdFlasherClient, bmapd_flasher_client, BMAPD_FLASHER, CLIENT, GObject)

void bmapd_flasher_client_new (GCancellable *cancellable, GAsyncReadyCallback callback,
                               gpointer user_data);
BmapdFlasherClient *bmapd_flasher_client_new_finish (GAsyncResult *result, GError **error);

/* BmapdFlasherDevice items, in the order the daemon announced them; devices
 * come and go as they are plugged in and pulled out. */
GListModel *bmapd_flasher_client_get_devices (BmapdFlasherClient *self);
BmapdFlasherDevice *
bmapd_flasher_client_find_device_by_node (BmapdFlasherClient *self, const char *node);

/* What the person chose beside the image and the devices; each on adds
 * its Flash option, each off adds nothing (a bmapd without the option
 * still flashes). */
typedef struct {
  gboolean minimize_writes; /* "minimize-writes": write only what differs */
  gboolean eject;           /* "eject" once done */
  gboolean power_off;       /* "power-off" once done */
} BmapdFlasherFlashOptions;

/* Flashes @image onto @devices (BmapdFlasherDevice) and feeds @jobs
 * (BmapdFlasherJob, one per device, in the same order) from then on:
 * several devices with one FlashMany call (one decode, one password), one
 * with Flash; polkit may ask for a password. Failures land in the jobs.
 * A busy device's partitions are unmounted: the person agreed to erase
 * them. */
void
bmapd_flasher_client_flash (BmapdFlasherClient *self, BmapdFlasherImage *image, GPtrArray *devices,
                            GPtrArray *jobs, const BmapdFlasherFlashOptions *options);
/* Asks the daemon to stop @job; the job then ends "canceled". */
void bmapd_flasher_client_cancel (BmapdFlasherClient *self, BmapdFlasherJob *job);

/* Station mode: arms an auto-flash rule (AddAutoFlash) for @image with
 * @match (a floating a{sv} is sunk) and "count" @count (0: no limit); the
 * rule's counters and its cards' jobs land in @station, so do failures.
 * Of @options, eject and power-off apply to each card (a rule has no
 * minimize-writes). */
void bmapd_flasher_client_arm_station (BmapdFlasherClient *self, BmapdFlasherImage *image,
                                       BmapdFlasherStation *station, GVariant *match, guint count,
                                       const BmapdFlasherFlashOptions *options);
/* Removes the station's rule; cards being written are finished. */
void bmapd_flasher_client_disarm_station (BmapdFlasherClient *self, BmapdFlasherStation *station);

G_END_DECLS
