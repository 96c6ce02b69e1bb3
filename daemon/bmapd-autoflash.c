/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <sys/stat.h>
#include <unistd.h>

#include "bmapd-autoflash-config.h"
#include "bmapd-autoflash-rule.h"
#include "bmapd-autoflash.h"
#include "bmapd-bus-args.h"
#include "bmapd-device.h"
#include "bmapd-fd.h"
#include "bmapd-limits.h"
#include "bmapd-log.h"
#include "bmapd-polkit.h"
#include "bmapd-sd.h"

struct _BmapdAutoFlash {
  sd_bus *bus;
  sd_event *event;
  BmapdManager *manager;
  BmapdDeviceRegistry *registry;
  BmapdConfig config;
  char *rules_dir;

  GPtrArray *rules; /* BmapdAutoFlashRule, by id */
  guint next_id;
  GQueue *queue;       /* Card, taken and waiting for a place under MaxJobs */
  GHashTable *running; /* job id -> Card */
  GHashTable *taken;   /* kernel name -> diskseq (guint64 *) of the last medium taken there */
  GPtrArray *requests; /* AddRequest, AddAutoFlash calls not answered yet */
  GHashTable *tickets; /* rule id -> BmapdLimitsTicket (MaxRulesPerUser) of a rule from a call */
  sd_event_source *queue_source;
  sd_event_source *window_source; /* the share window of the queue's head ends */
  gboolean shutting_down;
};

/* Cards of one rule started together: their jobs are held until every
 * card's request has ended, then become one set (bmapd_job_group_flash())
 * and are queued. */
typedef struct {
  guint pending;
  GPtrArray *jobs;
} Batch;

/* One medium a rule took, from the moment it was taken to the end of its
 * job. */
typedef struct {
  BmapdAutoFlash *autoflash;
  guint rule_id;
  char *name;
  char *node;
  char *serial;
  char *device_path;
  guint64 diskseq;
  gint64 taken_usec;
  gint64 start_usec;
  Batch *batch; /* NULL: started alone */
} Card;

/* An AddAutoFlash call from its arrival to its answer. */
typedef struct {
  BmapdAutoFlash *autoflash;
  sd_bus_message *call;
  uid_t uid;
  BmapdAutoFlashSpec *spec;
  GVariantBuilder match_builder;
  GVariantBuilder options_builder;
  int image_fd;
  int bmap_fd;
  BmapdLimitsTicket *ticket; /* MaxRequestsPerUser; the reader thread holds it too */
  BmapdFdWorker *worker;
  BmapdPolkitCheck *check;
  gboolean asked_flash_system;
  gboolean no_user_interaction;
} AddRequest;

/* What an AddAutoFlash call's reader thread works on. */
typedef struct {
  int image_fd;
  int bmap_fd;
  BmapdAutoFlashSpec *spec;
  BmapdLimitsTicket *ticket;
} AddWork;

static void schedule_queue (BmapdAutoFlash *autoflash);
static void on_card_job_inner (BmapdJob *job, const GError *error, Card *card);

/* ---- rules ---- */

static BmapdAutoFlashRule *
find_rule (BmapdAutoFlash *autoflash, guint id)
{
  for (guint i = 0; i < autoflash->rules->len; i++) {
    BmapdAutoFlashRule *rule = g_ptr_array_index (autoflash->rules, i);
    if (bmapd_autoflash_rule_get_id (rule) == id)
      return rule;
  }
  return NULL;
}

static void
update_armed (BmapdAutoFlash *autoflash)
{
  gboolean armed = FALSE;

  for (guint i = 0; i < autoflash->rules->len && !armed; i++)
    armed = bmapd_autoflash_rule_is_armed (g_ptr_array_index (autoflash->rules, i));
  bmapd_manager_set_auto_flash_armed (autoflash->manager, armed);
}

static void
card_free (Card *card)
{
  g_free (card->name);
  g_free (card->node);
  g_free (card->serial);
  g_free (card->device_path);
  g_free (card);
}

/* Drops the queued cards of rule @rule_id (0: any) in device @name (NULL:
 * any). */
static void
drop_queued (BmapdAutoFlash *autoflash, guint rule_id, const char *name, const char *why)
{
  gboolean dropped = FALSE;

  for (GList *l = autoflash->queue->head; l != NULL;) {
    GList *next = l->next;
    Card *card = l->data;

    if ((rule_id == 0 || card->rule_id == rule_id)
        && (name == NULL || g_str_equal (card->name, name))) {
      BmapdAutoFlashRule *rule = find_rule (autoflash, card->rule_id);

      bmapd_log (LOG_INFO, "auto-flash rule %u: the card in %s is not flashed: %s", card->rule_id,
                 card->node, why);
      if (rule != NULL)
        bmapd_autoflash_rule_card_dropped (rule);
      card_free (card);
      g_queue_delete_link (autoflash->queue, l);
      dropped = TRUE;
    }
    l = next;
  }
  /* A rule with a count may take cards again. */
  if (dropped)
    update_armed (autoflash);
}

static void
remove_rule (BmapdAutoFlash *autoflash, BmapdAutoFlashRule *rule, const char *why)
{
  guint id = bmapd_autoflash_rule_get_id (rule);
  guint n_running;

  drop_queued (autoflash, id, NULL, "its rule was removed");
  n_running = bmapd_autoflash_rule_get_n_pending (rule);
  if (n_running > 0)
    bmapd_log (LOG_INFO, "auto-flash rule %u removed (%s); its %u running card%s go%s on", id, why,
               n_running, n_running == 1 ? "" : "s", n_running == 1 ? "es" : "");
  else
    bmapd_log (LOG_INFO, "auto-flash rule %u removed (%s)", id, why);
  g_hash_table_remove (autoflash->tickets, GUINT_TO_POINTER (id));
  g_ptr_array_remove (autoflash->rules, rule); /* frees it: InterfacesRemoved */
  update_armed (autoflash);
}

static void
remove_if_spent (BmapdAutoFlash *autoflash, BmapdAutoFlashRule *rule)
{
  if (bmapd_autoflash_rule_is_spent (rule)) {
    g_autofree char *why
        = g_strdup_printf ("its count of %u cards is reached and the last one has finished",
                           bmapd_autoflash_rule_get_spec (rule)->count);
    remove_rule (autoflash, rule, why);
  }
}

static void
on_rule_remove (BmapdAutoFlashRule *rule, const char *why, gpointer user_data)
{
  remove_rule (user_data, rule, why);
}

/* Exports a rule for @spec (taken); the media present now are never
 * flashed by it. */
static BmapdAutoFlashRule *
add_rule (BmapdAutoFlash *autoflash, BmapdAutoFlashSpec *spec, uid_t uid, GError **error)
{
  g_autoptr (GPtrArray) devices = NULL;
  BmapdAutoFlashRule *rule;

  rule = bmapd_autoflash_rule_new (autoflash->bus, autoflash->next_id++, spec, uid, error);
  if (rule == NULL)
    return NULL;
  devices = bmapd_device_registry_list (autoflash->registry);
  for (guint i = 0; i < devices->len; i++)
    bmapd_autoflash_rule_remember_present (rule, g_ptr_array_index (devices, i));
  bmapd_autoflash_rule_set_remove_func (rule, on_rule_remove, autoflash);
  g_ptr_array_add (autoflash->rules, rule);
  return rule;
}

static char *
describe_match (const BmapdAutoFlashSpec *spec)
{
  g_autofree char *text = g_variant_print (spec->match_variant, FALSE);
  return g_strdup (g_variant_n_children (spec->match_variant) == 0 ? "any removable device" : text);
}

/* ---- cards ---- */

static void
log_card_end (Card *card, guint job_id, const char *state, guint64 bytes, const char *error_name,
              const char *error_message)
{
  guint64 duration = (guint64) (g_get_monotonic_time () - card->start_usec);
  g_autofree char *seconds = g_strdup_printf ("%.1f", duration / (double) G_USEC_PER_SEC);
  g_autofree char *job = job_id > 0 ? g_strdup_printf ("job %u", job_id) : g_strdup ("no job");
  const char *serial = card->serial[0] != '\0' ? card->serial : "unknown";

  if (g_str_equal (state, "done"))
    bmapd_log_card (LOG_INFO, card->rule_id, job_id, card->node, card->serial, state, duration,
                    bytes, error_name,
                    "card in %s (serial %s): done, %" G_GUINT64_FORMAT " bytes in %s s (%s)",
                    card->node, serial, bytes, seconds, job);
  else
    bmapd_log_card (
        g_str_equal (state, "failed") ? LOG_WARNING : LOG_NOTICE, card->rule_id, job_id, card->node,
        card->serial, state, duration, bytes, error_name,
        "card in %s (serial %s): %s after %s s, %" G_GUINT64_FORMAT " bytes: %s%s%s%s (%s)",
        card->node, serial, state, seconds, bytes, error_message, error_name[0] != '\0' ? " (" : "",
        error_name, error_name[0] != '\0' ? ")" : "", job);
}

/* The card's job has ended, or it got none (@job NULL, @error says why). */
static void
card_ended (BmapdAutoFlash *autoflash, Card *card, BmapdJob *job, const GError *error)
{
  BmapdAutoFlashRule *rule = find_rule (autoflash, card->rule_id);
  const char *state;

  if (job != NULL) {
    state = bmapd_job_state_to_string (bmapd_job_get_state (job));
    log_card_end (card, bmapd_job_get_id (job), state, bmapd_job_get_bytes_done (job),
                  bmapd_job_get_error_name (job), bmapd_job_get_error_message (job));
  } else {
    BmapErrorCode code = error->domain == BMAP_ERROR ? (BmapErrorCode) error->code : BMAP_ERROR_IO;
    state = "failed";
    log_card_end (card, 0, state, 0, bmap_error_code_to_dbus_name (code), error->message);
  }
  if (rule != NULL) {
    bmapd_autoflash_rule_card_finished (rule, card->device_path,
                                        job != NULL ? bmapd_job_get_path (job) : "/", state);
    remove_if_spent (autoflash, rule);
  }
  card_free (card);
}

/* A card of @batch has its job (@job, held), or none (NULL): once every
 * card's has, the jobs still active are queued as one set. */
static void
batch_card_done (BmapdAutoFlash *autoflash, Batch *batch, BmapdJob *job)
{
  g_autoptr (GPtrArray) jobs = NULL;

  if (job != NULL)
    g_ptr_array_add (batch->jobs, job);
  if (--batch->pending > 0)
    return;
  jobs = g_ptr_array_new ();
  for (guint i = 0; i < batch->jobs->len; i++) {
    BmapdJob *held = g_ptr_array_index (batch->jobs, i);

    /* Stopped while held (the card was pulled): it ended already. */
    if (bmapd_job_is_active (held))
      g_ptr_array_add (jobs, held);
  }
  g_ptr_array_unref (batch->jobs);
  g_free (batch);
  if (jobs->len > 1) {
    bmapd_log (LOG_INFO, "auto-flash: %u cards share one read of the image", jobs->len);
    bmapd_job_group_flash ((BmapdJob **) jobs->pdata, jobs->len);
  }
  for (guint i = 0; i < jobs->len; i++)
    bmapd_manager_queue_job (autoflash->manager, g_ptr_array_index (jobs, i));
}

static void
on_card_job (BmapdJob *job, const GError *error, gpointer user_data)
{
  Card *card = user_data;
  BmapdAutoFlash *autoflash = card->autoflash;
  Batch *batch = g_steal_pointer (&card->batch);

  on_card_job_inner (job, error, card);
  if (batch != NULL)
    batch_card_done (autoflash, batch, job != NULL && bmapd_job_is_active (job) ? job : NULL);
}

static void
on_card_job_inner (BmapdJob *job, const GError *error, Card *card)
{
  BmapdAutoFlash *autoflash = card->autoflash;

  if (job == NULL) {
    card_ended (autoflash, card, NULL, error);
    schedule_queue (autoflash);
    return;
  }
  bmapd_log (LOG_INFO, "auto-flash rule %u: flashing the card in %s (serial %s): job %u",
             card->rule_id, card->node, card->serial[0] != '\0' ? card->serial : "unknown",
             bmapd_job_get_id (job));
  /* It may have failed already (too small, busy): it still counts. */
  if (!bmapd_job_is_active (job)) {
    card_ended (autoflash, card, job, NULL);
    schedule_queue (autoflash);
    return;
  }
  g_hash_table_insert (autoflash->running, GUINT_TO_POINTER (bmapd_job_get_id (job)), card);
}

static void
start_card (BmapdAutoFlash *autoflash, BmapdAutoFlashRule *rule, Card *card, Batch *batch)
{
  const BmapdAutoFlashSpec *spec = bmapd_autoflash_rule_get_spec (rule);
  g_autoptr (GError) error = NULL;
  BmapdCardFlash flash = {
    .device_name = card->name,
    .diskseq = card->diskseq,
    .verify = spec->verify,
    .verify_written = spec->verify_written,
    .flash_flags = spec->flash_flags | (spec->eject ? BMAPD_FLASH_EJECT : 0)
                   | (spec->power_off ? BMAPD_FLASH_POWER_OFF : 0),
    .description = spec->description,
    .uid = bmapd_autoflash_rule_get_uid (rule),
    .hold = batch != NULL,
  };

  card->start_usec = g_get_monotonic_time ();
  card->autoflash = autoflash;
  card->batch = batch;
  bmapd_autoflash_rule_card_started (rule);
  /* Opened again and sniffed on a thread (a FUSE file may block): the job
   * comes to on_card_job(). */
  flash.image = bmapd_image_copy (spec->image, &error);
  if (flash.image == NULL) {
    card->batch = NULL;
    card_ended (autoflash, card, NULL, error);
    if (batch != NULL)
      batch_card_done (autoflash, batch, NULL);
    return;
  }
  flash.map = bmapd_autoflash_spec_copy_map (spec);
  bmapd_manager_flash_card (autoflash->manager, &flash, on_card_job, card);
}

static int
on_window_end (sd_event_source *source, uint64_t usec, void *user_data)
{
  BmapdAutoFlash *autoflash = user_data;

  autoflash->window_source = sd_event_source_disable_unref (autoflash->window_source);
  schedule_queue (autoflash);
  return 0;
}

static void
wait_for_window (BmapdAutoFlash *autoflash, gint64 end_usec)
{
  int r;

  if (autoflash->window_source != NULL)
    return;
  r = sd_event_add_time (autoflash->event, &autoflash->window_source, CLOCK_MONOTONIC,
                         (uint64_t) end_usec, 0, on_window_end, autoflash);
  if (r < 0)
    bmapd_log (LOG_WARNING, "cannot arm the auto-flash share window: %s", g_strerror (-r));
}

static char *card_gone_why (BmapdAutoFlash *autoflash, BmapdAutoFlashRule *rule, Card *card);

/* Starts @first and every other queued card of its rule that can still be
 * flashed, while MaxJobs has places: one read of the image for all. */
static void
start_cards (BmapdAutoFlash *autoflash, BmapdAutoFlashRule *rule, Card *first)
{
  g_autoptr (GPtrArray) cards = g_ptr_array_new ();
  Batch *batch = NULL;

  g_ptr_array_add (cards, first);
  for (GList *l = autoflash->queue->head; l != NULL;) {
    Card *card = l->data;
    GList *next = l->next;
    g_autofree char *why = NULL;

    /* One place each: the first took one already. */
    if (cards->len + 1 > bmapd_manager_count_free_job_slots (autoflash->manager))
      break;
    if (card->rule_id == first->rule_id && (why = card_gone_why (autoflash, rule, card)) == NULL) {
      g_queue_delete_link (autoflash->queue, l);
      g_ptr_array_add (cards, card);
    }
    l = next;
  }
  if (cards->len > 1) {
    batch = g_new0 (Batch, 1);
    batch->pending = cards->len;
    batch->jobs = g_ptr_array_new ();
  }
  for (guint i = 0; i < cards->len; i++)
    start_card (autoflash, rule, g_ptr_array_index (cards, i), batch);
}

/* Why a queued card cannot start any more, NULL when it still can. */
static char *
card_gone_why (BmapdAutoFlash *autoflash, BmapdAutoFlashRule *rule, Card *card)
{
  const BmapdDeviceInfo *info = bmapd_device_registry_lookup (autoflash->registry, card->name);
  BmapdJob *job = bmapd_manager_get_device_job (autoflash->manager, card->name);
  char *why = NULL;

  if (info == NULL)
    return g_strdup ("the device is gone");
  if (info->diskseq != card->diskseq || !info->media_present)
    return g_strdup ("the medium was taken out or changed");
  if (job != NULL)
    return g_strdup_printf ("job %u took the device", bmapd_job_get_id (job));
  if (!bmapd_autoflash_match_admits (&bmapd_autoflash_rule_get_spec (rule)->match, info, &why))
    return why;
  return NULL;
}

static int
on_process_queue (sd_event_source *source, void *user_data)
{
  BmapdAutoFlash *autoflash = user_data;

  autoflash->queue_source = sd_event_source_disable_unref (autoflash->queue_source);
  while (!g_queue_is_empty (autoflash->queue) && !autoflash->shutting_down) {
    Card *card = g_queue_peek_head (autoflash->queue);
    BmapdAutoFlashRule *rule = find_rule (autoflash, card->rule_id);
    g_autofree char *why = NULL;
    gint64 window_end;

    if (rule != NULL)
      why = card_gone_why (autoflash, rule, card);
    if (rule == NULL || why != NULL) {
      g_queue_pop_head (autoflash->queue);
      bmapd_log (LOG_INFO, "auto-flash rule %u: the card in %s is not flashed: %s", card->rule_id,
                 card->node, why != NULL ? why : "its rule was removed");
      if (rule != NULL) {
        bmapd_autoflash_rule_card_dropped (rule);
        remove_if_spent (autoflash, rule);
      }
      card_free (card);
      update_armed (autoflash);
      continue;
    }
    /* First come, first served: the head waits for the next place. */
    if (!bmapd_manager_has_free_job_slot (autoflash->manager))
      break;
    /* ... and for the cards of its rule inserted with it (ShareWindowSec=:
     * a hub's slots powered on at once, cards pushed in one after the
     * other), which then share one read and decode of the image. */
    window_end = card->taken_usec + (gint64) autoflash->config.share_window_sec * G_USEC_PER_SEC;
    if (g_get_monotonic_time () < window_end) {
      wait_for_window (autoflash, window_end);
      break;
    }
    g_queue_pop_head (autoflash->queue);
    start_cards (autoflash, rule, card);
  }
  return 0;
}

static void
schedule_queue (BmapdAutoFlash *autoflash)
{
  int r;

  if (autoflash->queue_source != NULL || g_queue_is_empty (autoflash->queue))
    return;
  /* From the loop: cards start outside of the manager's and the
   * registry's callbacks. */
  r = sd_event_add_defer (autoflash->event, &autoflash->queue_source, on_process_queue, autoflash);
  if (r < 0)
    bmapd_log (LOG_WARNING, "cannot schedule the auto-flash queue: %s", g_strerror (-r));
}

static void
on_job_ended (BmapdManager *manager, BmapdJob *job, gpointer user_data)
{
  BmapdAutoFlash *autoflash = user_data;
  Card *card = NULL;

  if (job != NULL
      && g_hash_table_steal_extended (autoflash->running, GUINT_TO_POINTER (bmapd_job_get_id (job)),
                                      NULL, (gpointer *) &card))
    card_ended (autoflash, card, job, NULL);
  schedule_queue (autoflash);
}

/* ---- devices ---- */

/* A medium appeared in @info: the first armed rule that admits it takes
 * it. */
static void
consider (BmapdAutoFlash *autoflash, const BmapdDeviceInfo *info)
{
  const guint64 *taken = g_hash_table_lookup (autoflash->taken, info->name);
  BmapdAutoFlashRule *chosen = NULL;
  BmapdJob *job;
  Card *card;

  if (autoflash->shutting_down || autoflash->rules->len == 0)
    return;
  if (taken != NULL && *taken == info->diskseq) {
    bmapd_log (LOG_DEBUG,
               "auto-flash: the medium in %s (diskseq %" G_GUINT64_FORMAT ") was taken already",
               info->node, info->diskseq);
    return;
  }
  for (guint i = 0; i < autoflash->rules->len && chosen == NULL; i++) {
    BmapdAutoFlashRule *rule = g_ptr_array_index (autoflash->rules, i);
    g_autofree char *why = NULL;

    if (!bmapd_autoflash_rule_is_armed (rule))
      continue;
    if (bmapd_autoflash_rule_was_present (rule, info)) {
      bmapd_log (LOG_DEBUG, "auto-flash rule %u: not %s: its medium was there before the rule",
                 bmapd_autoflash_rule_get_id (rule), info->node);
      continue;
    }
    if (!bmapd_autoflash_match_admits (&bmapd_autoflash_rule_get_spec (rule)->match, info, &why)) {
      bmapd_log (LOG_DEBUG, "auto-flash rule %u: not %s: %s", bmapd_autoflash_rule_get_id (rule),
                 info->node, why);
      continue;
    }
    chosen = rule;
  }
  if (chosen == NULL)
    return;
  job = bmapd_manager_get_device_job (autoflash->manager, info->name);
  if (job != NULL) {
    bmapd_log (LOG_NOTICE,
               "auto-flash rule %u: not flashing the card in %s: job %u is still using the "
               "device; insert the card again once it has finished",
               bmapd_autoflash_rule_get_id (chosen), info->node, bmapd_job_get_id (job));
    return;
  }

  card = g_new0 (Card, 1);
  card->rule_id = bmapd_autoflash_rule_get_id (chosen);
  card->name = g_strdup (info->name);
  card->node = g_strdup (info->node);
  card->serial = g_strdup (info->serial);
  card->device_path = bmapd_device_path_for_name (info->name);
  card->diskseq = info->diskseq;
  card->taken_usec = g_get_monotonic_time ();
  g_hash_table_replace (autoflash->taken, g_strdup (info->name), g_memdup2 (&info->diskseq, 8));
  bmapd_autoflash_rule_card_queued (chosen);
  g_queue_push_tail (autoflash->queue, card);
  bmapd_log (LOG_INFO,
             "auto-flash rule %u takes the card in %s (serial %s, %" G_GUINT64_FORMAT
             " bytes, diskseq %" G_GUINT64_FORMAT ")",
             card->rule_id, info->node, info->serial[0] != '\0' ? info->serial : "unknown",
             info->size, info->diskseq);
  update_armed (autoflash);
  schedule_queue (autoflash);
}

static void
on_device_event (BmapdDeviceEvent event, const BmapdDeviceInfo *old_info,
                 const BmapdDeviceInfo *info, gpointer user_data)
{
  BmapdAutoFlash *autoflash = user_data;
  const char *name = info != NULL ? info->name : old_info->name;

  /* A card is a whole disk; its partitions come and go with it. */
  if ((info != NULL ? info : old_info)->parent != NULL)
    return;
  if (info == NULL || !info->media_present) {
    /* The medium went: the next one in this device is a new card. A
     * device that goes keeps its entry: should it come back with the same
     * diskseq, it is the same medium. */
    for (guint i = 0; i < autoflash->rules->len; i++)
      bmapd_autoflash_rule_forget_device (g_ptr_array_index (autoflash->rules, i), name);
    if (info != NULL)
      g_hash_table_remove (autoflash->taken, name);
    drop_queued (autoflash, 0, name,
                 info == NULL ? "the device is gone" : "the medium was taken out");
    return;
  }
  if (event == BMAPD_DEVICE_ADDED || bmapd_device_info_media_inserted (old_info, info))
    consider (autoflash, info);
  else if (!g_queue_is_empty (autoflash->queue))
    schedule_queue (autoflash); /* a queued card may have become unfit */
}

/* ---- AddAutoFlash ---- */

static void
add_request_free (AddRequest *req)
{
  bmapd_polkit_check_free (req->check);
  bmapd_fd_worker_free (req->worker);
  bmapd_limits_ticket_unref (req->ticket);
  if (req->image_fd >= 0)
    close (req->image_fd);
  if (req->bmap_fd >= 0)
    close (req->bmap_fd);
  bmapd_autoflash_spec_free (req->spec);
  g_variant_builder_clear (&req->match_builder);
  g_variant_builder_clear (&req->options_builder);
  sd_bus_message_unref (req->call);
  g_free (req);
}

static void
add_request_fail (AddRequest *req, const GError *error)
{
  BmapErrorCode code = error->domain == BMAP_ERROR ? (BmapErrorCode) error->code : BMAP_ERROR_IO;

  bmapd_log (LOG_INFO, "AddAutoFlash call from uid %u refused: %s (%s)", (guint) req->uid,
             error->message, bmap_error_code_to_dbus_name (code));
  sd_bus_reply_method_errorf (req->call, bmap_error_code_to_dbus_name (code), "%s", error->message);
  g_ptr_array_remove (req->autoflash->requests, req);
}

static void
add_request_fail_dbus (AddRequest *req, const sd_bus_error *error)
{
  bmapd_log (LOG_INFO, "AddAutoFlash call from uid %u refused: %s (%s)", (guint) req->uid,
             error->message, error->name);
  sd_bus_reply_method_error (req->call, error);
  g_ptr_array_remove (req->autoflash->requests, req);
}

static gboolean
parse_match_key (sd_bus_message *m, const char *key, gpointer user_data, GError **error)
{
  AddRequest *req = user_data;
  BmapdAutoFlashMatch *match = &req->spec->match;
  GVariant *value = NULL;

  if (g_str_equal (key, "bus")) {
    if (!bmapd_bus_read_strv (m, key, &match->bus, error))
      return FALSE;
    value = g_variant_new_strv ((const char *const *) match->bus, -1);
  } else if (g_str_equal (key, "serial") || g_str_equal (key, "vendor")
             || g_str_equal (key, "model") || g_str_equal (key, "port")) {
    char **field = g_str_equal (key, "serial")   ? &match->serial
                   : g_str_equal (key, "vendor") ? &match->vendor
                   : g_str_equal (key, "model")  ? &match->model
                                                 : &match->port;
    if (!bmapd_bus_read_string (m, key, field, error))
      return FALSE;
    value = g_variant_new_string (*field);
  } else if (g_str_equal (key, "min-size")) {
    if (!bmapd_bus_read_basic (m, key, 't', &match->min_size, error))
      return FALSE;
    match->has_min_size = TRUE;
    value = g_variant_new_uint64 (match->min_size);
  } else if (g_str_equal (key, "max-size")) {
    if (!bmapd_bus_read_basic (m, key, 't', &match->max_size, error))
      return FALSE;
    match->has_max_size = TRUE;
    value = g_variant_new_uint64 (match->max_size);
  } else if (g_str_equal (key, "allow-non-removable")) {
    if (!bmapd_bus_read_bool (m, key, &match->allow_non_removable, error))
      return FALSE;
    value = g_variant_new_boolean (match->allow_non_removable);
  } else {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "unknown match key \"%s\" (known: bus, serial, vendor, model, port, min-size, "
                 "max-size, allow-non-removable)",
                 key);
    return FALSE;
  }
  g_variant_builder_add (&req->match_builder, "{sv}", key, value);
  return TRUE;
}

static gboolean
parse_option (sd_bus_message *m, const char *key, gpointer user_data, GError **error)
{
  AddRequest *req = user_data;
  BmapdAutoFlashSpec *spec = req->spec;
  const BmapdAutoFlashFlag *flag = bmapd_autoflash_flag_lookup (key);
  GVariant *value = NULL;

  if (g_str_equal (key, "bmap")) {
    int fd = -1;

    if (!bmapd_bus_read_basic (m, key, 'h', &fd, error))
      return FALSE;
    if (req->bmap_fd >= 0)
      close (req->bmap_fd);
    req->bmap_fd = bmapd_fd_dup (fd, "bmap", BMAPD_FD_READ, error);
    return req->bmap_fd >= 0; /* descriptors are left out of Options */
  }
  /* About this call, not the rule: left out of Options too. */
  if (g_str_equal (key, BMAPD_POLKIT_OPTION_NO_USER_INTERACTION))
    return bmapd_bus_read_bool (m, key, &req->no_user_interaction, error);
  if (g_str_equal (key, "nobmap") || g_str_equal (key, "verify")
      || g_str_equal (key, "verify-written") || g_str_equal (key, "keep")
      || g_str_equal (key, "eject") || g_str_equal (key, "power-off")) {
    gboolean *field = g_str_equal (key, "nobmap")      ? &spec->nobmap
                      : g_str_equal (key, "verify")    ? &spec->verify
                      : g_str_equal (key, "keep")      ? &spec->keep
                      : g_str_equal (key, "eject")     ? &spec->eject
                      : g_str_equal (key, "power-off") ? &spec->power_off
                                                       : &spec->verify_written;
    if (!bmapd_bus_read_bool (m, key, field, error))
      return FALSE;
    value = g_variant_new_boolean (*field);
  } else if (flag != NULL) {
    gboolean on = FALSE;

    if (!bmapd_bus_read_bool (m, key, &on, error))
      return FALSE;
    spec->flash_flags = on ? spec->flash_flags | flag->flag : spec->flash_flags & ~flag->flag;
    value = g_variant_new_boolean (on);
  } else if (g_str_equal (key, "description")) {
    if (!bmapd_bus_read_string (m, key, &spec->description, error))
      return FALSE;
    value = g_variant_new_string (spec->description);
  } else if (g_str_equal (key, "count")) {
    if (!bmapd_bus_read_basic (m, key, 'u', &spec->count, error))
      return FALSE;
    value = g_variant_new_uint32 (spec->count);
  } else if (g_str_equal (key, "diskseq")) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "option \"diskseq\" does not apply to a rule: every card is a new medium, and "
                 "a card whose medium changes before its job starts is not flashed");
    return FALSE;
  } else if (g_str_equal (key, "unmount")) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "option \"unmount\" does not apply to a rule: busy devices are never "
                 "auto-flashed");
    return FALSE;
  } else if (g_str_equal (key, "bind-to-caller")) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "option \"bind-to-caller\" does not apply to a rule: without \"keep\" the rule "
                 "goes when its caller leaves, and cards being written are finished");
    return FALSE;
  } else {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "unknown AddAutoFlash option \"%s\" (known: bmap, nobmap, verify, "
                 "verify-written, minimize-writes, discard, zero-unmapped, relocate-gpt, "
                 "eject, power-off, description, count, keep, no-user-interaction)",
                 key);
    return FALSE;
  }
  g_variant_builder_add (&req->options_builder, "{sv}", key, value);
  return TRUE;
}

/* Global: only rules armed count (authorized work); per user: rules armed
 * and calls being added. */
static gboolean
check_rule_limit (BmapdAutoFlash *autoflash, AddRequest *req, GError **error)
{
  guint n = autoflash->rules->len;

  if (autoflash->shutting_down) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "bmapd is shutting down");
    return FALSE;
  }
  if (n >= autoflash->config.max_rules) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT,
                 "%u auto-flash rules are armed, the most bmapd keeps at once (MaxRules=%u)", n,
                 autoflash->config.max_rules);
    return FALSE;
  }
  return bmapd_limits_check (bmapd_manager_get_limits (autoflash->manager), BMAPD_LIMIT_RULES,
                             req->uid, error);
}

static void
add_finish (AddRequest *req)
{
  BmapdAutoFlash *autoflash = req->autoflash;
  g_autoptr (GError) error = NULL;
  g_autofree char *match = NULL;
  BmapdAutoFlashRule *rule;

  g_autoptr (BmapdLimitsTicket) ticket = NULL;

  if (!check_rule_limit (autoflash, req, &error)) {
    add_request_fail (req, error);
    return;
  }
  ticket = bmapd_limits_take (bmapd_manager_get_limits (autoflash->manager), BMAPD_LIMIT_RULES,
                              req->uid, &error);
  if (ticket == NULL) {
    add_request_fail (req, error);
    return;
  }
  match = describe_match (req->spec);
  rule = add_rule (autoflash, g_steal_pointer (&req->spec), req->uid, &error);
  if (rule == NULL) {
    add_request_fail (req, error);
    return;
  }
  g_hash_table_insert (autoflash->tickets, GUINT_TO_POINTER (bmapd_autoflash_rule_get_id (rule)),
                       g_steal_pointer (&ticket));
  if (!bmapd_autoflash_rule_get_spec (rule)->keep
      && !bmapd_autoflash_rule_track_caller (rule, req->call, &error)) {
    g_ptr_array_remove (autoflash->rules, rule);
    add_request_fail (req, error);
    return;
  }
  bmapd_log (LOG_INFO, "auto-flash rule %u armed by uid %u (%s): %s%s",
             bmapd_autoflash_rule_get_id (rule), (guint) req->uid,
             sd_bus_message_get_sender (req->call), match,
             bmapd_autoflash_rule_get_spec (rule)->keep ? ", kept" : "");
  sd_bus_reply_method_return (req->call, "o", bmapd_autoflash_rule_get_path (rule));
  g_ptr_array_remove (autoflash->requests, req);
  update_armed (autoflash);
}

static void
on_add_authorized (const sd_bus_error *error, gpointer user_data)
{
  AddRequest *req = user_data;
  g_autoptr (GError) local_error = NULL;

  bmapd_polkit_check_free (g_steal_pointer (&req->check));
  if (error != NULL && sd_bus_error_is_set (error)) {
    add_request_fail_dbus (req, error);
    return;
  }
  /* Non-removable devices are what flash-system guards. */
  if (req->spec->match.allow_non_removable && !req->asked_flash_system) {
    req->asked_flash_system = TRUE;
    req->check = bmapd_polkit_check_new (req->autoflash->bus, req->call, req->uid,
                                         BMAPD_ACTION_FLASH_SYSTEM, NULL, req->no_user_interaction,
                                         on_add_authorized, req, &local_error);
    if (req->check == NULL)
      add_request_fail (req, local_error);
    return;
  }
  add_finish (req);
}

static void
add_work_free (AddWork *work)
{
  if (work->image_fd >= 0)
    close (work->image_fd);
  if (work->bmap_fd >= 0)
    close (work->bmap_fd);
  bmapd_autoflash_spec_free (work->spec);
  bmapd_limits_ticket_unref (work->ticket);
  g_free (work);
}

/* On a thread: the caller's files may block or take long to sniff. */
static gboolean
add_work_run (gpointer data, GCancellable *cancellable, GError **error)
{
  AddWork *work = data;
  g_autoptr (BmapMap) map = NULL;
  struct stat st;

  if (!bmapd_fd_check_type (work->image_fd, "image", FALSE, &st, error))
    return FALSE;
  if (!S_ISREG (st.st_mode)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "image: the file descriptor is a pipe; an auto-flash rule needs a regular file, "
                 "which it reads again for every card");
    return FALSE;
  }
  /* The bmap is read once, now: every card uses the same. */
  if (work->bmap_fd >= 0) {
    map = bmapd_fd_read_bmap (work->bmap_fd, cancellable, NULL, error);
    if (map == NULL)
      return FALSE;
  }
  /* Takes the image descriptor even on failure. */
  if (!bmapd_autoflash_spec_set_image (work->spec, g_steal_fd (&work->image_fd), "image",
                                       g_steal_pointer (&map), error))
    return FALSE;
  return TRUE;
}

/* Every descriptor is read: polkit. */
static void
on_add_work_done (gpointer data, const GError *error, gpointer user_data)
{
  AddRequest *req = user_data;
  AddWork *work = data;
  g_autoptr (GError) local_error = NULL;
  const char *details[3] = { "rule.allow-non-removable", NULL, NULL };

  if (error != NULL) {
    add_request_fail (req, error);
    return;
  }
  req->spec = g_steal_pointer (&work->spec);
  bmapd_fd_worker_free (g_steal_pointer (&req->worker));
  details[1] = req->spec->match.allow_non_removable ? "true" : "false";
  req->check = bmapd_polkit_check_new (req->autoflash->bus, req->call, req->uid,
                                       BMAPD_ACTION_AUTO_FLASH, details, req->no_user_interaction,
                                       on_add_authorized, req, &local_error);
  if (req->check == NULL)
    add_request_fail (req, local_error);
}

/* Parses and checks the call up to the reading of the bmap. */
static gboolean
add_parse (AddRequest *req, GError **error)
{
  BmapdAutoFlashSpec *spec = req->spec;
  int image_fd = -1;
  int r;

  r = sd_bus_message_read (req->call, "h", &image_fd);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "cannot parse the AddAutoFlash call");
    return FALSE;
  }
  if (!bmapd_bus_get_caller_uid (req->call, &req->uid, error))
    return FALSE;
  req->ticket = bmapd_limits_take (bmapd_manager_get_limits (req->autoflash->manager),
                                   BMAPD_LIMIT_REQUESTS, req->uid, error);
  if (req->ticket == NULL || !bmapd_bus_read_dict (req->call, parse_match_key, req, error)
      || !bmapd_bus_read_dict (req->call, parse_option, req, error))
    return FALSE;
  spec->match_variant = g_variant_ref_sink (g_variant_builder_end (&req->match_builder));
  spec->options_variant = g_variant_ref_sink (g_variant_builder_end (&req->options_builder));
  if (spec->description == NULL)
    spec->description = g_strdup ("");
  if (!bmapd_autoflash_spec_check (spec, error) || !check_rule_limit (req->autoflash, req, error))
    return FALSE;

  req->image_fd = bmapd_fd_dup (image_fd, "image", BMAPD_FD_READ, error);
  if (req->image_fd < 0)
    return FALSE;
  if (req->bmap_fd >= 0 && spec->nobmap) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "both \"bmap\" and \"nobmap\" were given; pass one of them");
    return FALSE;
  }
  if (req->bmap_fd < 0 && !spec->nobmap) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NO_BMAP,
                 "no bmap was given: pass \"bmap\" (a file descriptor), or \"nobmap\" to copy "
                 "every block of the image");
    return FALSE;
  }
  return TRUE;
}

static int
on_add_auto_flash (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapdAutoFlash *autoflash = userdata;
  g_autoptr (GError) error = NULL;
  AddRequest *req = g_new0 (AddRequest, 1);
  AddWork *work;

  req->autoflash = autoflash;
  req->call = sd_bus_message_ref (m);
  req->uid = (uid_t) -1;
  req->spec = bmapd_autoflash_spec_new ();
  req->image_fd = -1;
  req->bmap_fd = -1;
  g_variant_builder_init (&req->match_builder, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_init (&req->options_builder, G_VARIANT_TYPE_VARDICT);
  g_ptr_array_add (autoflash->requests, req);

  if (!add_parse (req, &error)) {
    add_request_fail (req, error);
    return 1;
  }
  work = g_new0 (AddWork, 1);
  work->image_fd = g_steal_fd (&req->image_fd);
  work->bmap_fd = g_steal_fd (&req->bmap_fd);
  work->spec = g_steal_pointer (&req->spec);
  work->ticket = bmapd_limits_ticket_ref (req->ticket);
  req->worker = bmapd_fd_worker_start (
      autoflash->event, "reading the bmap and the image",
      bmapd_manager_get_config (autoflash->manager)->request_timeout_sec, add_work_run, work,
      (GDestroyNotify) add_work_free, on_add_work_done, req, &error);
  if (req->worker == NULL)
    add_request_fail (req, error);
  return 1;
}

/* ---- rule files ---- */

void
bmapd_autoflash_load_rule_files (BmapdAutoFlash *autoflash)
{
  g_autoptr (GPtrArray) paths = NULL;
  g_autoptr (GError) error = NULL;
  guint n_loaded = 0;

  for (guint i = autoflash->rules->len; i > 0; i--) {
    BmapdAutoFlashRule *rule = g_ptr_array_index (autoflash->rules, i - 1);
    if (bmapd_autoflash_rule_is_config (rule))
      remove_rule (autoflash, rule, "the rule files are read again");
  }
  if (autoflash->shutting_down)
    return;
  paths = bmapd_autoflash_config_list_dir (autoflash->rules_dir, &error);
  if (paths == NULL) {
    bmapd_log (LOG_ERR, "auto-flash rules: %s", error->message);
    return;
  }
  for (guint i = 0; i < paths->len; i++) {
    const char *path = g_ptr_array_index (paths, i);
    g_autoptr (BmapdAutoFlashSpec) spec = NULL;
    g_autofree char *match = NULL;
    BmapdAutoFlashRule *rule;

    if (autoflash->rules->len >= autoflash->config.max_rules) {
      bmapd_log (LOG_ERR,
                 "%s: not loaded: %u auto-flash rules are armed, the most bmapd keeps "
                 "(MaxRules=%u)",
                 path, autoflash->rules->len, autoflash->config.max_rules);
      continue;
    }
    spec = bmapd_autoflash_config_load_file (path, &error);
    if (spec == NULL) {
      bmapd_log (LOG_ERR, "auto-flash rule not loaded: %s", error->message);
      g_clear_error (&error);
      continue;
    }
    match = describe_match (spec);
    rule = add_rule (autoflash, g_steal_pointer (&spec), 0, &error);
    if (rule == NULL) {
      bmapd_log (LOG_ERR, "%s: %s", path, error->message);
      g_clear_error (&error);
      continue;
    }
    bmapd_log (LOG_INFO, "auto-flash rule %u armed from %s: %s", bmapd_autoflash_rule_get_id (rule),
               path, match);
    n_loaded++;
  }
  bmapd_log (LOG_INFO, "auto-flash: %u of %u rule file%s in %s loaded", n_loaded, paths->len,
             paths->len == 1 ? "" : "s", autoflash->rules_dir);
  update_armed (autoflash);
}

/* ---- public API ---- */

BmapdAutoFlash *
bmapd_autoflash_new (sd_bus *bus, BmapdManager *manager, BmapdDeviceRegistry *registry,
                     const BmapdConfig *config, const char *rules_dir)
{
  BmapdAutoFlash *autoflash = g_new0 (BmapdAutoFlash, 1);

  autoflash->bus = sd_bus_ref (bus);
  autoflash->event = sd_event_ref (sd_bus_get_event (bus));
  autoflash->manager = manager;
  autoflash->registry = registry;
  autoflash->config = *config;
  autoflash->rules_dir = g_strdup (rules_dir);
  autoflash->rules = g_ptr_array_new_with_free_func ((GDestroyNotify) bmapd_autoflash_rule_free);
  autoflash->next_id = 1;
  autoflash->queue = g_queue_new ();
  autoflash->running
      = g_hash_table_new_full (g_direct_hash, g_direct_equal, NULL, (GDestroyNotify) card_free);
  autoflash->taken = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  autoflash->requests = g_ptr_array_new_with_free_func ((GDestroyNotify) add_request_free);
  autoflash->tickets = g_hash_table_new_full (g_direct_hash, g_direct_equal, NULL,
                                              (GDestroyNotify) bmapd_limits_ticket_unref);
  bmapd_manager_set_auto_flash (manager, on_add_auto_flash, on_job_ended, autoflash);
  bmapd_device_registry_add_listener (registry, on_device_event, autoflash);
  return autoflash;
}

void
bmapd_autoflash_free (BmapdAutoFlash *autoflash)
{
  if (autoflash == NULL)
    return;
  bmapd_manager_set_auto_flash (autoflash->manager, NULL, NULL, NULL);
  g_clear_pointer (&autoflash->requests, g_ptr_array_unref);
  g_queue_free_full (autoflash->queue, (GDestroyNotify) card_free);
  g_clear_pointer (&autoflash->rules, g_ptr_array_unref);
  g_clear_pointer (&autoflash->running, g_hash_table_unref);
  g_clear_pointer (&autoflash->taken, g_hash_table_unref);
  g_clear_pointer (&autoflash->tickets, g_hash_table_unref);
  sd_event_source_disable_unref (autoflash->queue_source);
  sd_event_source_disable_unref (autoflash->window_source);
  sd_event_unref (autoflash->event);
  sd_bus_unref (autoflash->bus);
  g_free (autoflash->rules_dir);
  g_free (autoflash);
}

void
bmapd_autoflash_set_config (BmapdAutoFlash *autoflash, const BmapdConfig *config)
{
  autoflash->config = *config;
}

void
bmapd_autoflash_shutdown (BmapdAutoFlash *autoflash)
{
  g_autoptr (GError) error = NULL;

  autoflash->shutting_down = TRUE;
  drop_queued (autoflash, 0, NULL, "bmapd is shutting down");
  g_set_error (&error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "bmapd is shutting down");
  while (autoflash->requests->len > 0)
    add_request_fail (g_ptr_array_index (autoflash->requests, 0), error);
}
