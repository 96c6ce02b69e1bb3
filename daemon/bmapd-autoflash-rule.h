/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "bmapd-autoflash-spec.h"
#include "bmapd-device-info.h"

G_BEGIN_DECLS

#define BMAPD_AUTOFLASH_INTERFACE   "org.bmapd.bmapd1.AutoFlash"
#define BMAPD_AUTOFLASH_PATH_PREFIX "/org/bmapd/bmapd1/autoflash"

/* One auto-flash rule: the org.bmapd.bmapd1.AutoFlash object, its counts,
 * the devices it must leave alone because they were there before it, and
 * the caller it lives as long as (without keep). Which cards it takes and
 * their jobs are bmapd-autoflash.c's business. */
typedef struct _BmapdAutoFlashRule BmapdAutoFlashRule;

/* The rule must go: Remove() was authorized, or its caller left the bus.
 * @why is for the log. The owner frees the rule. */
typedef void (*BmapdAutoFlashRuleFunc) (BmapdAutoFlashRule *rule, const char *why,
                                        gpointer user_data);

/* Takes @spec (even on failure), exports the object and announces it (InterfacesAdded).
 * @uid is StartedByUid (0 for a rule file). */
BmapdAutoFlashRule *bmapd_autoflash_rule_new (sd_bus *bus, guint id, BmapdAutoFlashSpec *spec,
                                              uid_t uid, GError **error);
/* Announces InterfacesRemoved; pending Remove() calls succeed. */
void bmapd_autoflash_rule_free (BmapdAutoFlashRule *rule);

void bmapd_autoflash_rule_set_remove_func (BmapdAutoFlashRule *rule, BmapdAutoFlashRuleFunc func,
                                           gpointer user_data);
/* Asks for removal when the sender of @call leaves the bus; fails when it
 * has already left. */
gboolean
bmapd_autoflash_rule_track_caller (BmapdAutoFlashRule *rule, sd_bus_message *call, GError **error);

/* The medium in @info was there before the rule: it is never flashed by
 * it, until it is taken out (bmapd_autoflash_rule_forget_device()). */
void bmapd_autoflash_rule_remember_present (BmapdAutoFlashRule *rule, const BmapdDeviceInfo *info);
gboolean bmapd_autoflash_rule_was_present (BmapdAutoFlashRule *rule, const BmapdDeviceInfo *info);
void bmapd_autoflash_rule_forget_device (BmapdAutoFlashRule *rule, const char *name);

/* Cards: queued (waiting for a place under MaxJobs), then started (or
 * dropped, when the card went before it could start), then finished.
 * Count counts the cards queued or started: the rule takes no more once
 * that many have been, and is disarmed. */
void bmapd_autoflash_rule_card_queued (BmapdAutoFlashRule *rule);
void bmapd_autoflash_rule_card_dropped (BmapdAutoFlashRule *rule);
void bmapd_autoflash_rule_card_started (BmapdAutoFlashRule *rule);
/* Flashed or Failed (failed and canceled), and the CardFinished signal.
 * @job_path is "/" for a card that got no job. */
void bmapd_autoflash_rule_card_finished (BmapdAutoFlashRule *rule, const char *device_path,
                                         const char *job_path, const char *state);

/* Takes cards: not removed and below its count. */
gboolean bmapd_autoflash_rule_is_armed (BmapdAutoFlashRule *rule);
/* Cards queued or running. */
guint bmapd_autoflash_rule_get_n_pending (BmapdAutoFlashRule *rule);
/* Disarmed for good and nothing pending: its object can go. */
gboolean bmapd_autoflash_rule_is_spent (BmapdAutoFlashRule *rule);

guint bmapd_autoflash_rule_get_id (BmapdAutoFlashRule *rule);
const char *bmapd_autoflash_rule_get_path (BmapdAutoFlashRule *rule);
uid_t bmapd_autoflash_rule_get_uid (BmapdAutoFlashRule *rule);
const BmapdAutoFlashSpec *bmapd_autoflash_rule_get_spec (BmapdAutoFlashRule *rule);
/* Came from a rule file. */
gboolean bmapd_autoflash_rule_is_config (BmapdAutoFlashRule *rule);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdAutoFlashRule, bmapd_autoflash_rule_free)

G_END_DECLS
