/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-bus.h>

#include "bmapd-config.h"
#include "bmapd-device-registry.h"
#include "bmapd-manager.h"

G_BEGIN_DECLS

/* Auto-flash: the rules (from AddAutoFlash and from the rule files), and
 * the cards they take.
 *
 * - A card is a medium that appears: a new disk with a medium (udev
 *   "add"), or a medium in a reader that was already there ("change" with
 *   the size going from 0 to non-zero, or a new diskseq). A medium that was
 *   there when a rule was added is never taken by that rule, and one
 *   insertion (one diskseq) is taken at most once.
 * - System, read-only and busy devices, devices a job is still writing,
 *   and (unless the rule allows them) non-removable devices are never
 *   taken. Of the armed rules that match, the one with the lowest id takes
 *   the card.
 * - A card taken waits in a queue while MaxJobs jobs run, first come first
 *   served, and is dropped if it goes away (or its medium changes) before
 *   its turn. Then it is an ordinary Job, started without a polkit check,
 *   with StartedByUid the rule's uid.
 * - Count counts the cards taken (queued or started, whether they end up
 *   flashed or failed): once that many are, the rule takes no more, and its
 *   object goes when the last of its cards has finished (CardFinished).
 *   Remove(), a caller leaving, and a reload remove a rule at once: its
 *   queued cards are dropped, and its running cards go on as ordinary jobs
 *   (only their journal entries still name the rule).
 * - One journal entry per card when it ends (bmapd_log_card()). */
typedef struct _BmapdAutoFlash BmapdAutoFlash;

/* Plugs into @manager (AddAutoFlash, job ends) and listens to @registry;
 * call before bmapd_device_registry_start(), and load the rule files
 * after it, so that the devices there at start are known as present. */
BmapdAutoFlash *
bmapd_autoflash_new (sd_bus *bus, BmapdManager *manager, BmapdDeviceRegistry *registry,
                     const BmapdConfig *config, const char *rules_dir);
void bmapd_autoflash_free (BmapdAutoFlash *autoflash);

/* Takes a reloaded configuration (MaxRules: rules already armed stay). */
void bmapd_autoflash_set_config (BmapdAutoFlash *autoflash, const BmapdConfig *config);

/* Replaces every rule from the rule files with what the directory holds
 * now (their counts start again). A bad file is logged, naming the file,
 * the key and the value, and the others still load. */
void bmapd_autoflash_load_rule_files (BmapdAutoFlash *autoflash);

/* Takes no more cards and refuses new rules (bmapd is stopping). */
void bmapd_autoflash_shutdown (BmapdAutoFlash *autoflash);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdAutoFlash, bmapd_autoflash_free)

G_END_DECLS
