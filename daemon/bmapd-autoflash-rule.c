/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stddef.h>

#include "bmap-error.h"
#include "bmapd-autoflash-rule.h"
#include "bmapd-log.h"
#include "bmapd-polkit.h"
#include "bmapd-sd.h"

typedef struct {
  BmapdAutoFlashRule *rule;
  sd_bus_message *call;
  BmapdPolkitCheck *check;
} RemoveRequest;

struct _BmapdAutoFlashRule {
  /* Exported properties, read by the vtable by offset. */
  guint32 id;
  const char *source_str;
  char *config_file;
  char *description;
  guint32 count;
  guint32 flashed;
  guint32 failed;
  guint32 uid;

  BmapdAutoFlashSpec *spec;
  char *path;
  sd_bus *bus;
  sd_bus_slot *slot;
  sd_bus_track *track;
  char *caller;

  GHashTable *present; /* kernel name -> diskseq (guint64 *) of media there before the rule */
  guint n_queued;
  guint n_running;
  guint n_started;

  BmapdAutoFlashRuleFunc remove_func;
  gpointer remove_data;
  GPtrArray *remove_requests; /* RemoveRequest, waiting for polkit */
};

static int rule_method_remove (sd_bus_message *m, void *userdata, sd_bus_error *error);
static int
rule_get_dict (sd_bus *bus, const char *path, const char *interface, const char *property,
               sd_bus_message *reply, void *userdata, sd_bus_error *error);

static const sd_bus_vtable rule_vtable[] = {
  SD_BUS_VTABLE_START (0),
  SD_BUS_METHOD_WITH_ARGS ("Remove", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, rule_method_remove,
                           SD_BUS_VTABLE_UNPRIVILEGED),
  SD_BUS_SIGNAL_WITH_ARGS ("CardFinished", SD_BUS_ARGS ("o", device, "o", job, "s", state), 0),
  SD_BUS_PROPERTY ("Id", "u", NULL, offsetof (BmapdAutoFlashRule, id),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Source", "s", NULL, offsetof (BmapdAutoFlashRule, source_str),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("ConfigFile", "s", NULL, offsetof (BmapdAutoFlashRule, config_file),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Description", "s", NULL, offsetof (BmapdAutoFlashRule, description),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Match", "a{sv}", rule_get_dict, 0, SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Options", "a{sv}", rule_get_dict, 0, SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Count", "u", NULL, offsetof (BmapdAutoFlashRule, count),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("Flashed", "u", NULL, offsetof (BmapdAutoFlashRule, flashed),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("Failed", "u", NULL, offsetof (BmapdAutoFlashRule, failed),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_PROPERTY ("StartedByUid", "u", NULL, offsetof (BmapdAutoFlashRule, uid),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_VTABLE_END,
};

/* ---- properties ---- */

/* The rule's dictionaries hold booleans, numbers, strings and string
 * arrays only. */
static int
append_value (sd_bus_message *reply, GVariant *value)
{
  const char *type = g_variant_get_type_string (value);
  int r;

  if (g_str_equal (type, "b"))
    return sd_bus_message_append (reply, "v", "b", (int) g_variant_get_boolean (value));
  if (g_str_equal (type, "u"))
    return sd_bus_message_append (reply, "v", "u", g_variant_get_uint32 (value));
  if (g_str_equal (type, "t"))
    return sd_bus_message_append (reply, "v", "t", g_variant_get_uint64 (value));
  if (g_str_equal (type, "s"))
    return sd_bus_message_append (reply, "v", "s", g_variant_get_string (value, NULL));
  if (g_str_equal (type, "as")) {
    g_autofree const char **strv = g_variant_get_strv (value, NULL);

    r = sd_bus_message_open_container (reply, 'v', "as");
    if (r >= 0)
      r = sd_bus_message_append_strv (reply, (char **) strv);
    if (r >= 0)
      r = sd_bus_message_close_container (reply);
    return r;
  }
  return -EINVAL;
}

static int
rule_get_dict (sd_bus *bus, const char *path, const char *interface, const char *property,
               sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
  BmapdAutoFlashRule *rule = userdata;
  GVariant *dict
      = g_str_equal (property, "Match") ? rule->spec->match_variant : rule->spec->options_variant;
  GVariantIter iter;
  const char *key;
  GVariant *value;
  int r;

  r = sd_bus_message_open_container (reply, 'a', "{sv}");
  if (r < 0)
    return r;
  g_variant_iter_init (&iter, dict);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &value)) {
    r = sd_bus_message_open_container (reply, 'e', "sv");
    if (r >= 0)
      r = sd_bus_message_append (reply, "s", key);
    if (r >= 0)
      r = append_value (reply, value);
    if (r >= 0)
      r = sd_bus_message_close_container (reply);
    g_variant_unref (value);
    if (r < 0)
      return r;
  }
  return sd_bus_message_close_container (reply);
}

static void
emit_counts_changed (BmapdAutoFlashRule *rule)
{
  int r = sd_bus_emit_properties_changed (rule->bus, rule->path, BMAPD_AUTOFLASH_INTERFACE,
                                          "Flashed", "Failed", NULL);
  if (r < 0)
    bmapd_log (LOG_WARNING, "PropertiesChanged for %s: %s", rule->path, g_strerror (-r));
}

/* ---- Remove() ---- */

static void
remove_request_free (RemoveRequest *request)
{
  bmapd_polkit_check_free (request->check);
  sd_bus_message_unref (request->call);
  g_free (request);
}

static void
request_removal (BmapdAutoFlashRule *rule, const char *why)
{
  if (rule->remove_func != NULL)
    rule->remove_func (rule, why, rule->remove_data); /* may free the rule */
}

static void
on_remove_authorized (const sd_bus_error *error, gpointer user_data)
{
  RemoveRequest *request = user_data;
  BmapdAutoFlashRule *rule = request->rule;
  g_autoptr (sd_bus_message) call = sd_bus_message_ref (request->call);
  g_autoptr (sd_bus_creds) creds = NULL;
  g_autofree char *why = NULL;
  uid_t uid = (uid_t) -1;

  g_ptr_array_remove (rule->remove_requests, request);
  if (error != NULL && sd_bus_error_is_set (error)) {
    sd_bus_reply_method_error (call, error);
    return;
  }
  if (sd_bus_query_sender_creds (call, SD_BUS_CREDS_EUID, &creds) >= 0)
    (void) sd_bus_creds_get_euid (creds, &uid);
  why = g_strdup_printf ("removed by uid %u (%s)", (guint) uid, sd_bus_message_get_sender (call));
  /* Answered first: the object is gone once the removal is announced. */
  sd_bus_reply_method_return (call, NULL);
  request_removal (rule, why);
}

static int
rule_method_remove (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapdAutoFlashRule *rule = userdata;
  g_autoptr (sd_bus_creds) creds = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *id_str = g_strdup_printf ("%u", rule->id);
  const char *details[] = { "rule", id_str, NULL };
  RemoveRequest *request;
  uid_t uid;
  int r;

  r = sd_bus_query_sender_creds (m, SD_BUS_CREDS_EUID, &creds);
  if (r >= 0)
    r = sd_bus_creds_get_euid (creds, &uid);
  if (r < 0)
    return sd_bus_error_set_errnof (ret_error, r, "cannot find out who wants to remove rule %u",
                                    rule->id);
  request = g_new0 (RemoveRequest, 1);
  request->rule = rule;
  request->call = sd_bus_message_ref (m);
  g_ptr_array_add (rule->remove_requests, request);
  /* No options: polkit may ask, as udisks2 lets it. */
  request->check = bmapd_polkit_check_new (rule->bus, m, uid, BMAPD_ACTION_AUTO_FLASH, details,
                                           FALSE, on_remove_authorized, request, &error);
  if (request->check == NULL) {
    g_ptr_array_remove (rule->remove_requests, request);
    return sd_bus_error_setf (ret_error, bmap_error_code_to_dbus_name (error->code), "%s",
                              error->message);
  }
  return 1;
}

/* ---- the caller ---- */

static int
on_caller_gone (sd_bus_track *track, void *user_data)
{
  BmapdAutoFlashRule *rule = user_data;
  g_autofree char *why = g_strdup_printf ("its caller %s left the bus", rule->caller);

  rule->track = sd_bus_track_unref (rule->track);
  request_removal (rule, why);
  return 0;
}

gboolean
bmapd_autoflash_rule_track_caller (BmapdAutoFlashRule *rule, sd_bus_message *call, GError **error)
{
  int r;

  /* Fails when the name is already gone: sd-bus asks the bus. */
  r = sd_bus_track_new (rule->bus, &rule->track, on_caller_gone, rule);
  if (r >= 0)
    r = sd_bus_track_add_sender (rule->track, call);
  if (r < 0) {
    rule->track = sd_bus_track_unref (rule->track);
    bmap_error_set_errno (error, -r, "following the caller %s of rule %u",
                          sd_bus_message_get_sender (call), rule->id);
    return FALSE;
  }
  g_free (rule->caller);
  rule->caller = g_strdup (sd_bus_message_get_sender (call));
  return TRUE;
}

/* ---- life ---- */

BmapdAutoFlashRule *
bmapd_autoflash_rule_new (sd_bus *bus, guint id, BmapdAutoFlashSpec *spec, uid_t uid,
                          GError **error)
{
  g_autoptr (BmapdAutoFlashRule) rule = g_new0 (BmapdAutoFlashRule, 1);
  int r;

  rule->id = id;
  rule->spec = spec;
  rule->source_str = spec->config_file != NULL ? "config" : "dbus";
  rule->config_file = g_strdup (spec->config_file != NULL ? spec->config_file : "");
  rule->description = g_strdup (spec->description != NULL ? spec->description : "");
  rule->count = spec->count;
  rule->uid = (guint32) uid;
  rule->path = g_strdup_printf (BMAPD_AUTOFLASH_PATH_PREFIX "/%u", id);
  rule->bus = sd_bus_ref (bus);
  rule->present = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  rule->remove_requests = g_ptr_array_new_with_free_func ((GDestroyNotify) remove_request_free);

  r = sd_bus_add_object_vtable (bus, &rule->slot, rule->path, BMAPD_AUTOFLASH_INTERFACE,
                                rule_vtable, rule);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "exporting %s", rule->path);
    return NULL;
  }
  r = sd_bus_emit_object_added (bus, rule->path);
  if (r < 0)
    bmapd_log (LOG_WARNING, "InterfacesAdded for %s: %s", rule->path, g_strerror (-r));
  return g_steal_pointer (&rule);
}

void
bmapd_autoflash_rule_free (BmapdAutoFlashRule *rule)
{
  if (rule == NULL)
    return;
  /* Whoever waits for Remove() gets what they asked for. */
  if (rule->remove_requests != NULL) {
    for (guint i = 0; i < rule->remove_requests->len; i++) {
      RemoveRequest *request = g_ptr_array_index (rule->remove_requests, i);
      sd_bus_reply_method_return (request->call, NULL);
    }
    g_ptr_array_unref (rule->remove_requests);
  }
  if (rule->slot != NULL) {
    /* At exit the bus is already closed: nobody to tell. */
    int r = sd_bus_is_open (rule->bus) > 0 ? sd_bus_emit_object_removed (rule->bus, rule->path) : 0;
    if (r < 0)
      bmapd_log (LOG_WARNING, "InterfacesRemoved for %s: %s", rule->path, g_strerror (-r));
    sd_bus_slot_unref (rule->slot);
  }
  sd_bus_track_unref (rule->track);
  if (rule->present != NULL)
    g_hash_table_unref (rule->present);
  bmapd_autoflash_spec_free (rule->spec);
  sd_bus_unref (rule->bus);
  g_free (rule->config_file);
  g_free (rule->description);
  g_free (rule->caller);
  g_free (rule->path);
  g_free (rule);
}

void
bmapd_autoflash_rule_set_remove_func (BmapdAutoFlashRule *rule, BmapdAutoFlashRuleFunc func,
                                      gpointer user_data)
{
  rule->remove_func = func;
  rule->remove_data = user_data;
}

/* ---- devices ---- */

void
bmapd_autoflash_rule_remember_present (BmapdAutoFlashRule *rule, const BmapdDeviceInfo *info)
{
  if (!info->media_present)
    return;
  g_hash_table_replace (rule->present, g_strdup (info->name), g_memdup2 (&info->diskseq, 8));
}

gboolean
bmapd_autoflash_rule_was_present (BmapdAutoFlashRule *rule, const BmapdDeviceInfo *info)
{
  const guint64 *diskseq = g_hash_table_lookup (rule->present, info->name);
  return diskseq != NULL && *diskseq == info->diskseq;
}

void
bmapd_autoflash_rule_forget_device (BmapdAutoFlashRule *rule, const char *name)
{
  g_hash_table_remove (rule->present, name);
}

/* ---- cards ---- */

void
bmapd_autoflash_rule_card_queued (BmapdAutoFlashRule *rule)
{
  rule->n_queued++;
}

void
bmapd_autoflash_rule_card_dropped (BmapdAutoFlashRule *rule)
{
  g_return_if_fail (rule->n_queued > 0);
  rule->n_queued--;
}

void
bmapd_autoflash_rule_card_started (BmapdAutoFlashRule *rule)
{
  g_return_if_fail (rule->n_queued > 0);
  rule->n_queued--;
  rule->n_running++;
  rule->n_started++;
}

void
bmapd_autoflash_rule_card_finished (BmapdAutoFlashRule *rule, const char *device_path,
                                    const char *job_path, const char *state)
{
  int r;

  g_return_if_fail (rule->n_running > 0);
  rule->n_running--;
  if (g_str_equal (state, "done"))
    rule->flashed++;
  else
    rule->failed++;
  emit_counts_changed (rule);
  r = sd_bus_emit_signal (rule->bus, rule->path, BMAPD_AUTOFLASH_INTERFACE, "CardFinished", "oos",
                          device_path != NULL ? device_path : "/", job_path, state);
  if (r < 0)
    bmapd_log (LOG_WARNING, "CardFinished signal of %s: %s", rule->path, g_strerror (-r));
}

gboolean
bmapd_autoflash_rule_is_armed (BmapdAutoFlashRule *rule)
{
  return rule->count == 0 || rule->n_started + rule->n_queued < rule->count;
}

guint
bmapd_autoflash_rule_get_n_pending (BmapdAutoFlashRule *rule)
{
  return rule->n_queued + rule->n_running;
}

gboolean
bmapd_autoflash_rule_is_spent (BmapdAutoFlashRule *rule)
{
  return rule->count > 0 && rule->n_started >= rule->count && rule->n_queued == 0
         && rule->n_running == 0;
}

guint
bmapd_autoflash_rule_get_id (BmapdAutoFlashRule *rule)
{
  return rule->id;
}

const char *
bmapd_autoflash_rule_get_path (BmapdAutoFlashRule *rule)
{
  return rule->path;
}

uid_t
bmapd_autoflash_rule_get_uid (BmapdAutoFlashRule *rule)
{
  return (uid_t) rule->uid;
}

const BmapdAutoFlashSpec *
bmapd_autoflash_rule_get_spec (BmapdAutoFlashRule *rule)
{
  return rule->spec;
}

gboolean
bmapd_autoflash_rule_is_config (BmapdAutoFlashRule *rule)
{
  return rule->spec->config_file != NULL;
}
