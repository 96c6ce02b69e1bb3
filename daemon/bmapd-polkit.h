/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

G_BEGIN_DECLS

#define BMAPD_ACTION_FLASH        "org.bmapd.bmapd1.flash"
#define BMAPD_ACTION_FLASH_SYSTEM "org.bmapd.bmapd1.flash-system"
#define BMAPD_ACTION_CREATE       "org.bmapd.bmapd1.create"
#define BMAPD_ACTION_CANCEL       "org.bmapd.bmapd1.cancel"
#define BMAPD_ACTION_AUTO_FLASH   "org.bmapd.bmapd1.auto-flash"

/* The option of every polkit-checked method that takes options: (b) true
 * forbids polkit to ask the caller for a password. */
#define BMAPD_POLKIT_OPTION_NO_USER_INTERACTION "no-user-interaction"

/* One asynchronous polkit CheckAuthorization for the sender of a method
 * call, with the system-bus-name subject. */
typedef struct _BmapdPolkitCheck BmapdPolkitCheck;

/* Called once with @error NULL when authorized; otherwise @error is
 * org.bmapd.bmapd1.Error.NotAuthorized. */
typedef void (*BmapdPolkitFunc) (const sd_bus_error *error, gpointer user_data);

/* Asks polkit for @action_id with @details (key, value, ..., NULL). As
 * udisks2 does, polkit may ask the caller for a password (through its
 * agent) unless @no_user_interaction, the call's "no-user-interaction"
 * option, is TRUE: that wins over the message's
 * allow-interactive-authorization flag, which is no longer needed. Methods
 * without options pass FALSE. When polkit is not on the bus only
 * @caller_uid 0 is authorized. */
BmapdPolkitCheck *
bmapd_polkit_check_new (sd_bus *bus, sd_bus_message *call, uid_t caller_uid, const char *action_id,
                        const char *const *details, gboolean no_user_interaction,
                        BmapdPolkitFunc func, gpointer user_data, GError **error);
/* A check still pending is cancelled (polkit closes its dialog) and its
 * callback is not called. */
void bmapd_polkit_check_free (BmapdPolkitCheck *check);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdPolkitCheck, bmapd_polkit_check_free)

G_END_DECLS
