/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmap-error.h"
#include "bmapd-log.h"
#include "bmapd-polkit.h"
#include "bmapd-sd.h"

#define POLKIT_NAME      "org.freedesktop.PolicyKit1"
#define POLKIT_PATH      "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"

/* CheckAuthorization flag: polkit may ask the user through an agent. */
#define POLKIT_ALLOW_USER_INTERACTION 1

struct _BmapdPolkitCheck {
  sd_bus *bus;
  sd_bus_slot *slot;
  char *action_id;
  char *cancellation_id;
  uid_t caller_uid;
  gboolean interactive;
  BmapdPolkitFunc func;
  gpointer user_data;
};

static guint64 next_cancellation_id = 1;

static void
finish (BmapdPolkitCheck *check, const sd_bus_error *error)
{
  if (error != NULL && sd_bus_error_is_set (error))
    bmapd_log (LOG_INFO, "%s for uid %u: %s", check->action_id, (guint) check->caller_uid,
               error->message);
  else
    bmapd_log (LOG_DEBUG, "%s for uid %u: authorized", check->action_id, (guint) check->caller_uid);
  check->func (error, check->user_data);
}

static int
on_reply (sd_bus_message *reply, void *user_data, sd_bus_error *ret_error)
{
  BmapdPolkitCheck *check = user_data;
  g_auto (sd_bus_error) error = SD_BUS_ERROR_NULL;
  int authorized = 0, challenge = 0;
  gboolean dismissed = FALSE;
  int r;

  /* sd-bus keeps the slot alive while it dispatches; drop ours so that the
   * callback may free the check. */
  check->slot = sd_bus_slot_unref (check->slot);

  if (sd_bus_message_is_method_error (reply, NULL)) {
    const sd_bus_error *e = sd_bus_message_get_error (reply);

    if (sd_bus_error_has_names (e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER)) {
      /* No polkit on this system: only root may do anything. */
      if (check->caller_uid == 0) {
        finish (check, NULL);
      } else {
        sd_bus_error_setf (&error, BMAP_DBUS_ERROR_PREFIX "NotAuthorized",
                           "%s: polkit is not running, so only root is allowed (caller uid %u)",
                           check->action_id, (guint) check->caller_uid);
        finish (check, &error);
      }
      return 0;
    }
    sd_bus_error_setf (&error, BMAP_DBUS_ERROR_PREFIX "NotAuthorized",
                       "%s: polkit check failed: %s: %s", check->action_id, e->name,
                       e->message != NULL ? e->message : "");
    finish (check, &error);
    return 0;
  }

  r = sd_bus_message_enter_container (reply, 'r', "bba{ss}");
  if (r >= 0)
    r = sd_bus_message_read (reply, "bb", &authorized, &challenge);
  if (r >= 0)
    r = sd_bus_message_enter_container (reply, 'a', "{ss}");
  while (r > 0) {
    const char *key = NULL, *value = NULL;

    r = sd_bus_message_read (reply, "{ss}", &key, &value);
    /* The user closed the agent's dialog. */
    if (r > 0 && g_str_equal (key, "polkit.dismissed"))
      dismissed = g_strcmp0 (value, "true") == 0;
  }
  if (r < 0) {
    sd_bus_error_setf (&error, BMAP_DBUS_ERROR_PREFIX "NotAuthorized",
                       "%s: cannot parse polkit's answer: %s", check->action_id, g_strerror (-r));
    finish (check, &error);
    return 0;
  }
  if (authorized) {
    finish (check, NULL);
  } else if (challenge && !check->interactive) {
    sd_bus_error_setf (&error, BMAP_DBUS_ERROR_PREFIX "NotAuthorized",
                       "%s needs authentication for uid %u, and the call's options carried "
                       "\"" BMAPD_POLKIT_OPTION_NO_USER_INTERACTION "\" true, so no password "
                       "was asked for",
                       check->action_id, (guint) check->caller_uid);
    finish (check, &error);
  } else {
    sd_bus_error_setf (&error, BMAP_DBUS_ERROR_PREFIX "NotAuthorized",
                       "uid %u is not authorized for %s%s", (guint) check->caller_uid,
                       check->action_id,
                       dismissed   ? " (the password dialog was dismissed)"
                       : challenge ? " (authentication needed but no agent answered)"
                                   : "");
    finish (check, &error);
  }
  return 0;
}

BmapdPolkitCheck *
bmapd_polkit_check_new (sd_bus *bus, sd_bus_message *call, uid_t caller_uid, const char *action_id,
                        const char *const *details, gboolean no_user_interaction,
                        BmapdPolkitFunc func, gpointer user_data, GError **error)
{
  g_autoptr (BmapdPolkitCheck) check = g_new0 (BmapdPolkitCheck, 1);
  g_autoptr (sd_bus_message) m = NULL;
  const char *sender = sd_bus_message_get_sender (call);
  guint64 timeout_usec;
  int r;

  check->bus = sd_bus_ref (bus);
  check->action_id = g_strdup (action_id);
  check->cancellation_id = g_strdup_printf ("bmapd-%" G_GUINT64_FORMAT, next_cancellation_id++);
  check->caller_uid = caller_uid;
  /* udisks2's rule, so that generated bindings (which set no message
   * flags) get a password dialog: the message flag adds nothing. */
  check->interactive = !no_user_interaction;
  check->func = func;
  check->user_data = user_data;

  if (sender == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NOT_AUTHORIZED,
                 "%s: the call has no sender to authorize", action_id);
    return NULL;
  }

  r = sd_bus_message_new_method_call (bus, &m, POLKIT_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                                      "CheckAuthorization");
  if (r >= 0)
    r = sd_bus_message_append (m, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender,
                               action_id);
  if (r >= 0)
    r = sd_bus_message_open_container (m, 'a', "{ss}");
  for (guint i = 0; r >= 0 && details != NULL && details[i] != NULL && details[i + 1] != NULL;
       i += 2)
    r = sd_bus_message_append (m, "{ss}", details[i], details[i + 1]);
  if (r >= 0)
    r = sd_bus_message_close_container (m);
  if (r >= 0)
    r = sd_bus_message_append (m, "us", check->interactive ? POLKIT_ALLOW_USER_INTERACTION : 0,
                               check->cancellation_id);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "building the polkit request for %s", action_id);
    return NULL;
  }

  /* A password dialog can stay open for minutes; a plain check is quick. */
  timeout_usec = (check->interactive ? 10 * 60 : 30) * G_USEC_PER_SEC;
  r = sd_bus_call_async (bus, &check->slot, m, on_reply, check, timeout_usec);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "asking polkit for %s", action_id);
    return NULL;
  }
  bmapd_log (LOG_DEBUG, "asking polkit for %s (uid %u, %s%s)", action_id, (guint) caller_uid,
             sender, check->interactive ? ", interactive" : ", no user interaction");
  return g_steal_pointer (&check);
}

static int
on_cancel_reply (sd_bus_message *reply, void *user_data, sd_bus_error *ret_error)
{
  return 0;
}

void
bmapd_polkit_check_free (BmapdPolkitCheck *check)
{
  if (check == NULL)
    return;
  if (check->slot != NULL) {
    /* Still pending: drop the reply and let polkit close its dialog. */
    check->slot = sd_bus_slot_unref (check->slot);
    (void) sd_bus_call_method_async (check->bus, NULL, POLKIT_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                                     "CancelCheckAuthorization", on_cancel_reply, NULL, "s",
                                     check->cancellation_id);
  }
  sd_bus_unref (check->bus);
  g_free (check->action_id);
  g_free (check->cancellation_id);
  g_free (check);
}
