/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-bus.h>

#include "bmapd-job.h"
#include "bmapd-manager.h"

G_BEGIN_DECLS

/* A Flash or Create call from its arrival to its answer, or an auto-flash
 * card from its start to its job:
 *
 * 1. the call is parsed on the loop, and takes one of its caller's
 *    MaxRequestsPerUser places;
 * 2. on a thread of its own (bmapd_fd_worker_start()), within
 *    RequestTimeoutSec: the descriptors are checked, the bmap is read and
 *    parsed, and the image becomes a source (bmap_source_new(): its magic,
 *    an xz index) -- the one place where a descriptor becomes a source;
 * 3. back on the loop: the device checks, then polkit (flash-system for a
 *    System disk); cards skip polkit;
 * 4. authorized: the device must be free (DeviceBusy otherwise) and is
 *    read again (dev_t, diskseq, size, System: a disk that became a system
 *    disk needs flash-system); the job is made (MaxJobsPerUser) and holds
 *    the device; unmounted if asked; opened O_EXCL, and the opened
 *    descriptor's diskseq checked (BLKGETDISKSEQ);
 * 5. the job is queued with the manager and the call answered with it.
 *
 * Nothing is marked busy before polkit says yes. A failure answers the
 * call with an error, and ends a job made for it at once (a card's job
 * stays exported, its error to be read). */
typedef struct _BmapdRequest BmapdRequest;

/* A card's request ended: @job, queued (or already failed), or NULL and
 * @error when the card got no job. */
typedef BmapdManagerCardFunc BmapdRequestCardFunc;

/* The manager's method handlers: the request answers @m itself. */
void bmapd_request_handle_flash (BmapdManager *manager, sd_bus_message *m);
void bmapd_request_handle_create (BmapdManager *manager, sd_bus_message *m);
/* FlashMany: Flash's path for every device of the call (the checks of
 * each before polkit, which is asked once for the set; each device's job
 * made, checked and opened once authorized), the jobs one set sharing one
 * read of the image (bmapd_job_group_flash()). A device that fails a check
 * refuses the whole call, naming it, before anything is written. */
void bmapd_request_handle_flash_many (BmapdManager *manager, sd_bus_message *m);
/* Starts an auto-flash card's request (no polkit: the rule's authorization
 * covers its cards); @func is called once, never before this returns.
 * @card's descriptor and map are taken. */
void bmapd_request_start_card (BmapdManager *manager, const BmapdCardFlash *card,
                               BmapdRequestCardFunc func, gpointer user_data);

/* Ends the request with @error (bmapd is stopping). */
void bmapd_request_fail (BmapdRequest *req, const GError *error);
/* A job was made for it (it goes when the job is stopped). */
gboolean bmapd_request_has_job (BmapdRequest *req);
/* An auto-flash card's request, which will take a place under MaxJobs. */
gboolean bmapd_request_is_card (BmapdRequest *req);
/* Only for the manager, which owns requests. */
void bmapd_request_free (BmapdRequest *req);

G_END_DECLS
