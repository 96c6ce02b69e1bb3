/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bmapd-config.h"
#include "bmapd-device-registry.h"
#include "bmapd-image.h"
#include "bmapd-job.h"
#include "bmapd-limits.h"

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
 * polkit step skipped (the rule's authorization covers its cards).
 *
 * The path of a call from method to job is bmapd-request.c's. Jobs are
 * made once authorized, hold their device from then on, and wait in a
 * queue (state "queued") while MaxJobs jobs run; they start in order. */
typedef struct _BmapdManager BmapdManager;
typedef struct _BmapdRequest BmapdRequest;

/* Called when the number of active jobs changes, and once every job has
 * ended after bmapd_manager_shutdown(). */
typedef void (*BmapdManagerFunc) (BmapdManager *manager, gpointer user_data);
/* A job reached its final state (@job), or a call ended without a job
 * (@job NULL): either may free a place for another job. */
typedef void (*BmapdManagerJobFunc) (BmapdManager *manager, BmapdJob *job, gpointer user_data);

/* What an auto-flash card's job needs. */
typedef struct {
  const char *device_name;
  guint64 diskseq;   /* the medium the card was seen with: MediaChanged otherwise */
  BmapdImage *image; /* taken: a copy of the rule's (bmapd_image_copy()) */
  BmapMap *map;      /* taken; NULL copies every block */
  gboolean verify;
  gboolean verify_written;
  BmapdFlashFlags flash_flags; /* the rule's: minimize-writes ... relocate-gpt, eject, power-off */
  const char *description;
  uid_t uid; /* StartedByUid */
  /* The job is handed to the card function queued but not given to the
   * manager's queue: the caller queues it, alone or with other cards as
   * one set (bmapd_job_group_flash()). */
  gboolean hold;
} BmapdCardFlash;

BmapdManager *bmapd_manager_new (sd_bus *bus, const BmapdConfig *config,
                                 BmapdDeviceRegistry *registry, GError **error);
void bmapd_manager_free (BmapdManager *manager);

/* Takes a reloaded configuration (MaxJobs). */
void bmapd_manager_set_config (BmapdManager *manager, const BmapdConfig *config);

void
bmapd_manager_set_activity_func (BmapdManager *manager, BmapdManagerFunc func, gpointer user_data);

/* Jobs queued or running, and calls not answered yet (waiting for their
 * data or for polkit). */
guint bmapd_manager_get_n_active_jobs (BmapdManager *manager);

/* Auto-flash: @add_func answers AddAutoFlash (Unsupported without it);
 * @job_ended_func hears of every job that ends. */
void bmapd_manager_set_auto_flash (BmapdManager *manager, sd_bus_message_handler_t add_func,
                                   BmapdManagerJobFunc job_ended_func, gpointer user_data);
/* The AutoFlashArmed property (PropertiesChanged when it changes); the
 * daemon is not idle while it is TRUE. */
void bmapd_manager_set_auto_flash_armed (BmapdManager *manager, gboolean armed);
gboolean bmapd_manager_get_auto_flash_armed (BmapdManager *manager);

/* A card's job: queued (or started), or already failed (a failed one
 * stays exported like any finished job, its error to be read); NULL and
 * @error when the card got no job at all (its image cannot be read,
 * device gone or busy, MaxJobsPerUser). */
typedef void (*BmapdManagerCardFunc) (BmapdJob *job, const GError *error, gpointer user_data);

/* Starts an auto-flash card's job without asking polkit, through the same
 * path as Flash (reader thread, device, diskseq, size, O_EXCL); @func is
 * called once, from the loop, never before this returns. @card's
 * descriptor and map are taken in every case. */
void bmapd_manager_flash_card (BmapdManager *manager, const BmapdCardFlash *card,
                               BmapdManagerCardFunc func, gpointer user_data);
/* Another job may start now (MaxJobs, counting queued jobs and starting
 * cards). */
gboolean bmapd_manager_has_free_job_slot (BmapdManager *manager);
/* How many more jobs may start now. */
guint bmapd_manager_count_free_job_slots (BmapdManager *manager);
/* The flash job holding device @name, its disk or one of its partitions
 * (writing one overwrites the other), NULL when they are all idle. */
BmapdJob *bmapd_manager_get_device_job (BmapdManager *manager, const char *name);
/* FALSE with DeviceBusy, naming @node and what the job writes, when
 * bmapd_manager_get_device_job() finds a job. */
gboolean bmapd_manager_check_device_free (BmapdManager *manager, const char *name, const char *node,
                                          GError **error);
/* The Device object path of @name, NULL when not exported. */
const char *bmapd_manager_get_device_path (BmapdManager *manager, const char *name);

/* Refuses new jobs, stops every job (they fail with Cancelled) and calls
 * @done once every worker has closed its device. */
void bmapd_manager_shutdown (BmapdManager *manager, const char *why, BmapdManagerFunc done,
                             gpointer user_data);

/* ---- for bmapd-request.c ---- */

sd_bus *bmapd_manager_get_bus (BmapdManager *manager);
sd_event *bmapd_manager_get_event (BmapdManager *manager);
BmapdDeviceRegistry *bmapd_manager_get_registry (BmapdManager *manager);
const BmapdConfig *bmapd_manager_get_config (BmapdManager *manager);
/* Per-uid limits (MaxRequestsPerUser, MaxJobsPerUser, MaxRulesPerUser). */
BmapdLimits *bmapd_manager_get_limits (BmapdManager *manager);
/* Cancelled once bmapd is shutting down. */
gboolean bmapd_manager_check_accepting (BmapdManager *manager, GError **error);
/* The manager owns requests until they end. */
void bmapd_manager_add_request (BmapdManager *manager, BmapdRequest *req);
/* Frees @req. */
void bmapd_manager_remove_request (BmapdManager *manager, BmapdRequest *req);
/* An authorized job, state "queued", holding device @device_name (NULL for
 * create) from now on: DeviceBusy when a job holds it already, Limit
 * beyond MaxJobsPerUser. */
BmapdJob *
bmapd_manager_add_job (BmapdManager *manager, BmapdJobOperation operation, const char *device_name,
                       const char *device_node, const char *description, uid_t uid, GError **error);
/* Its work is set: it starts in turn (or fails, reported by the job). */
void bmapd_manager_queue_job (BmapdManager *manager, BmapdJob *job);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdManager, bmapd_manager_free)

G_END_DECLS
