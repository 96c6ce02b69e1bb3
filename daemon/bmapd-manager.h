/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bmapd-config.h"
#include "bmapd-device-registry.h"

G_BEGIN_DECLS

#define BMAPD_BUS_NAME          "org.bmapd.bmapd1"
#define BMAPD_MANAGER_PATH      "/org/bmapd/bmapd1"
#define BMAPD_MANAGER_INTERFACE "org.bmapd.bmapd1.Manager"

/* The largest bmap the daemon reads (Limit beyond). */
#define BMAPD_MAX_BMAP_SIZE (8 * 1024 * 1024)

/* The org.bmapd.bmapd1.Manager object and the ObjectManager at
 * /org/bmapd/bmapd1: starts jobs (Flash, Create), exports a Device object
 * for every disk of the registry, and keeps one job per device.
 *
 * Auto-flash rules fit in as another listener of the registry (added
 * after the manager's, so that the Device objects exist when it hears of
 * a device; bmapd_device_info_media_inserted() says when to act) that
 * starts jobs through the same request path as Flash with the polkit step
 * skipped (the rule's authorization covers its cards). */
typedef struct _BmapdManager BmapdManager;

/* Called when the number of active jobs changes, and once every job has
 * ended after bmapd_manager_shutdown(). */
typedef void (*BmapdManagerFunc) (BmapdManager *manager, gpointer user_data);

BmapdManager *bmapd_manager_new (sd_bus *bus, const BmapdConfig *config,
                                 BmapdDeviceRegistry *registry, GError **error);
void bmapd_manager_free (BmapdManager *manager);

/* Takes a reloaded configuration (MaxJobs). */
void bmapd_manager_set_config (BmapdManager *manager, const BmapdConfig *config);

void
bmapd_manager_set_activity_func (BmapdManager *manager, BmapdManagerFunc func, gpointer user_data);

/* Jobs authorizing or running. */
guint bmapd_manager_get_n_active_jobs (BmapdManager *manager);
/* Auto-flash rules armed (none yet: a later addition). */
guint bmapd_manager_get_n_rules (BmapdManager *manager);

/* Refuses new jobs, stops every job (they fail with Cancelled) and calls
 * @done once every worker has closed its device. */
void bmapd_manager_shutdown (BmapdManager *manager, const char *why, BmapdManagerFunc done,
                             gpointer user_data);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdManager, bmapd_manager_free)

G_END_DECLS
