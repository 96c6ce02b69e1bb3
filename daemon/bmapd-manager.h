/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bmapd-config.h"
#include "bmapd-device-registry.h"
#include "bmapd-job.h"

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
 * Auto-flash (bmapd-autoflash.c) plugs in with bmapd_manager_set_auto_flash():
 * it answers AddAutoFlash, listens to the registry after the manager (so
 * that the Device objects exist when it hears of a device), and starts its
 * cards' jobs with bmapd_manager_flash_card(), the path of Flash with the
 * polkit step skipped (the rule's authorization covers its cards). */
typedef struct _BmapdManager BmapdManager;

/* Called when the number of active jobs changes, and once every job has
 * ended after bmapd_manager_shutdown(). */
typedef void (*BmapdManagerFunc) (BmapdManager *manager, gpointer user_data);
/* A job reached its final state (@job), or a call ended without a job
 * (@job NULL): either may free a place for another job. */
typedef void (*BmapdManagerJobFunc) (BmapdManager *manager, BmapdJob *job, gpointer user_data);

/* What an auto-flash card's job needs. */
typedef struct {
  const char *device_name;
  guint64 diskseq; /* the medium the card was seen with: MediaChanged otherwise */
  int image_fd;    /* taken; a regular file or a pipe, at the image's start */
  BmapMap *map;    /* taken; NULL copies every block */
  gboolean verify;
  gboolean verify_written;
  const char *description;
  uid_t uid; /* StartedByUid */
} BmapdCardFlash;

BmapdManager *bmapd_manager_new (sd_bus *bus, const BmapdConfig *config,
                                 BmapdDeviceRegistry *registry, GError **error);
void bmapd_manager_free (BmapdManager *manager);

/* Takes a reloaded configuration (MaxJobs). */
void bmapd_manager_set_config (BmapdManager *manager, const BmapdConfig *config);

void
bmapd_manager_set_activity_func (BmapdManager *manager, BmapdManagerFunc func, gpointer user_data);

/* Jobs authorizing or running. */
guint bmapd_manager_get_n_active_jobs (BmapdManager *manager);

/* Auto-flash: @add_func answers AddAutoFlash (Unsupported without it);
 * @job_ended_func hears of every job that ends. */
void bmapd_manager_set_auto_flash (BmapdManager *manager, sd_bus_message_handler_t add_func,
                                   BmapdManagerJobFunc job_ended_func, gpointer user_data);
/* The AutoFlashArmed property (PropertiesChanged when it changes); the
 * daemon is not idle while it is TRUE. */
void bmapd_manager_set_auto_flash_armed (BmapdManager *manager, gboolean armed);
gboolean bmapd_manager_get_auto_flash_armed (BmapdManager *manager);

/* Starts an auto-flash card's job without asking polkit, through the same
 * checks as Flash (limits, device, diskseq, size, O_EXCL). Returns the job,
 * which has either started or already failed (a failed one stays exported
 * like any finished job, its error to be read); NULL and @error when the
 * card got no job at all (no place under MaxJobs, device gone or busy).
 * @card's descriptor and map are taken in every case. */
BmapdJob *
bmapd_manager_flash_card (BmapdManager *manager, const BmapdCardFlash *card, GError **error);
/* Another job may start now (MaxJobs). */
gboolean bmapd_manager_has_free_job_slot (BmapdManager *manager);
/* The flash job holding device @name, NULL when idle. */
BmapdJob *bmapd_manager_get_device_job (BmapdManager *manager, const char *name);
/* The Device object path of @name, NULL when not exported. */
const char *bmapd_manager_get_device_path (BmapdManager *manager, const char *name);

/* Refuses new jobs, stops every job (they fail with Cancelled) and calls
 * @done once every worker has closed its device. */
void bmapd_manager_shutdown (BmapdManager *manager, const char *why, BmapdManagerFunc done,
                             gpointer user_data);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdManager, bmapd_manager_free)

G_END_DECLS
