/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

#include "bmapd-flasher-job.h"

G_BEGIN_DECLS

/* Station mode: one armed auto-flash rule and the cards it has taken, as
 * the station's screen shows them. Fed by the bus side from the rule's
 * AutoFlash properties and the jobs bmapd starts for it; no GTK, no bus. */
#define BMAPD_FLASHER_TYPE_STATION (bmapd_flasher_station_get_type ())
G_DECLARE_FINAL_TYPE (BmapdFlasherStation, bmapd_flasher_station, BMAPD_FLASHER, STATION, GObject)

/* @description: the rule's "description", which bmapd gives every card's
 * job: how the station knows its jobs. */
BmapdFlasherStation *bmapd_flasher_station_new (const char *description);

const char *bmapd_flasher_station_get_description (BmapdFlasherStation *self);
/* The rule's object once AddAutoFlash answered; NULL before and after. */
void bmapd_flasher_station_set_rule (BmapdFlasherStation *self, const char *object_path);
const char *bmapd_flasher_station_get_rule (BmapdFlasherStation *self);
gboolean bmapd_flasher_station_is_armed (BmapdFlasherStation *self);
/* The rule's properties (a{sv}): Flashed, Failed, Count. */
void bmapd_flasher_station_update (BmapdFlasherStation *self, GVariant *properties);
/* The rule is gone (removed, or its count reached and its cards done). */
void bmapd_flasher_station_disarm (BmapdFlasherStation *self);
/* AddAutoFlash failed: why, for the screen. */
void bmapd_flasher_station_fail (BmapdFlasherStation *self, const char *message);
const char *bmapd_flasher_station_get_error (BmapdFlasherStation *self);

guint bmapd_flasher_station_get_flashed (BmapdFlasherStation *self);
guint bmapd_flasher_station_get_failed (BmapdFlasherStation *self);
/* "2 cards flashed, 1 failed" */
char *bmapd_flasher_station_dup_counter (BmapdFlasherStation *self);

/* The cards' jobs, newest last (BmapdFlasherJob). */
GListModel *bmapd_flasher_station_get_jobs (BmapdFlasherStation *self);
void bmapd_flasher_station_add_job (BmapdFlasherStation *self, BmapdFlasherJob *job);

G_END_DECLS
