/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmapd-device.h"
#include "bmapd-job.h"
#include "bmapd-limits.h"
#include "bmapd-log.h"
#include "bmapd-manager.h"
#include "bmapd-request.h"
#include "bmapd-sd.h"
#include "libbmap.h"

struct _BmapdManager {
  sd_bus *bus;
  sd_event *event;
  BmapdConfig config;
  BmapdDeviceRegistry *registry;
  sd_bus_slot *vtable_slot;
  sd_bus_slot *object_manager_slot;

  /* Exported properties, read by offset. */
  char *version;
  int auto_flash_armed;

  GHashTable *devices; /* kernel name -> BmapdDevice */
  GHashTable *jobs;    /* id -> BmapdJob */
  GHashTable *busy;    /* kernel name -> BmapdJob, while a flash job holds the device */
  GPtrArray *requests; /* BmapdRequest, Flash/Create calls not answered yet, cards starting */
  GQueue *queue;       /* BmapdJob, authorized, waiting for a place under MaxJobs */
  GHashTable *tickets; /* job id -> BmapdLimitsTicket (MaxJobsPerUser) of a job not finished */
  BmapdLimits *limits;
  guint next_job_id;
  guint n_active;

  gboolean shutting_down;
  char *shutdown_why;
  BmapdManagerFunc shutdown_func;
  gpointer shutdown_data;
  sd_event_source *shutdown_source;

  BmapdManagerFunc activity_func;
  gpointer activity_data;

  sd_bus_message_handler_t add_auto_flash_func;
  gpointer add_auto_flash_data;
  BmapdManagerJobFunc job_ended_func;
  gpointer job_ended_data;
};

static int manager_method_flash (sd_bus_message *m, void *userdata, sd_bus_error *error);
static int manager_method_flash_many (sd_bus_message *m, void *userdata, sd_bus_error *error);
static int manager_method_create (sd_bus_message *m, void *userdata, sd_bus_error *error);
static int manager_method_add_auto_flash (sd_bus_message *m, void *userdata, sd_bus_error *error);

static const sd_bus_vtable manager_vtable[] = {
  SD_BUS_VTABLE_START (0),
  SD_BUS_METHOD_WITH_ARGS ("Flash", SD_BUS_ARGS ("o", device, "h", image, "a{sv}", options),
                           SD_BUS_RESULT ("o", job), manager_method_flash,
                           SD_BUS_VTABLE_UNPRIVILEGED),
  SD_BUS_METHOD_WITH_ARGS ("FlashMany", SD_BUS_ARGS ("ao", devices, "h", image, "a{sv}", options),
                           SD_BUS_RESULT ("ao", jobs), manager_method_flash_many,
                           SD_BUS_VTABLE_UNPRIVILEGED),
  SD_BUS_METHOD_WITH_ARGS ("Create", SD_BUS_ARGS ("h", image, "h", bmap_out, "a{sv}", options),
                           SD_BUS_RESULT ("o", job), manager_method_create,
                           SD_BUS_VTABLE_UNPRIVILEGED),
  SD_BUS_METHOD_WITH_ARGS (
      "AddAutoFlash", SD_BUS_ARGS ("h", image, "a{sv}", match, "a{sv}", options),
      SD_BUS_RESULT ("o", rule), manager_method_add_auto_flash, SD_BUS_VTABLE_UNPRIVILEGED),
  SD_BUS_PROPERTY ("Version", "s", NULL, offsetof (BmapdManager, version),
                   SD_BUS_VTABLE_PROPERTY_CONST),
  SD_BUS_PROPERTY ("AutoFlashArmed", "b", NULL, offsetof (BmapdManager, auto_flash_armed),
                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
  SD_BUS_VTABLE_END,
};

/* ---- bookkeeping ---- */

static void
update_activity (BmapdManager *manager)
{
  GHashTableIter iter;
  BmapdJob *job;
  guint n = 0;

  g_hash_table_iter_init (&iter, manager->jobs);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *) &job)) {
    if (bmapd_job_is_active (job))
      n++;
  }
  /* A call waiting for its data or for polkit has no job yet: bmapd is not
   * idle either. One with a job counts as its job. */
  for (guint i = 0; manager->requests != NULL && i < manager->requests->len; i++) {
    if (!bmapd_request_has_job (g_ptr_array_index (manager->requests, i)))
      n++;
  }
  if (n != manager->n_active) {
    manager->n_active = n;
    if (manager->activity_func != NULL)
      manager->activity_func (manager, manager->activity_data);
  }
}

static void start_queued (BmapdManager *manager);

static int
on_shutdown_done (sd_event_source *source, void *user_data)
{
  BmapdManager *manager = user_data;

  manager->shutdown_source = sd_event_source_disable_unref (manager->shutdown_source);
  if (manager->shutdown_func != NULL)
    manager->shutdown_func (manager, manager->shutdown_data);
  return 0;
}

static void
check_shutdown_done (BmapdManager *manager)
{
  if (!manager->shutting_down || manager->n_active > 0 || manager->requests->len > 0
      || manager->shutdown_source != NULL)
    return;
  /* From the loop, so that the Finished signals are queued first. */
  if (sd_event_add_defer (manager->event, &manager->shutdown_source, on_shutdown_done, manager) < 0)
    on_shutdown_done (NULL, manager);
}

static void
on_job_finished (BmapdJob *job, gpointer user_data)
{
  BmapdManager *manager = user_data;
  GHashTableIter iter;
  BmapdJob *busy_job;
  const char *name;

  g_hash_table_iter_init (&iter, manager->busy);
  while (g_hash_table_iter_next (&iter, (gpointer *) &name, (gpointer *) &busy_job)) {
    if (busy_job == job) {
      BmapdDevice *device = g_hash_table_lookup (manager->devices, name);
      if (device != NULL)
        bmapd_device_set_job (device, NULL);
      g_hash_table_iter_remove (&iter);
      break;
    }
  }
  g_queue_remove (manager->queue, job);
  g_hash_table_remove (manager->tickets, GUINT_TO_POINTER (bmapd_job_get_id (job)));
  update_activity (manager);
  start_queued (manager);
  check_shutdown_done (manager);
  if (manager->job_ended_func != NULL)
    manager->job_ended_func (manager, job, manager->job_ended_data);
}

static void
on_job_expired (BmapdJob *job, gpointer user_data)
{
  BmapdManager *manager = user_data;

  /* Unexports (InterfacesRemoved) and frees the job. */
  g_hash_table_remove (manager->jobs, GUINT_TO_POINTER (bmapd_job_get_id (job)));
}

/* ---- the queue ---- */

static guint
count_running (BmapdManager *manager)
{
  GHashTableIter iter;
  BmapdJob *job;
  guint n = 0;

  g_hash_table_iter_init (&iter, manager->jobs);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *) &job)) {
    if (bmapd_job_is_running (job))
      n++;
  }
  return n;
}

/* Starts queued jobs, first come first served, while MaxJobs allows. */
static void
start_queued (BmapdManager *manager)
{
  while (!g_queue_is_empty (manager->queue) && !manager->shutting_down
         && count_running (manager) < manager->config.max_jobs) {
    BmapdJob *job = g_queue_pop_head (manager->queue);
    g_autoptr (GError) error = NULL;

    if (!bmapd_job_start (job, &error))
      bmapd_job_fail_before_start (job, BMAPD_JOB_FAILED,
                                   bmap_error_code_to_dbus_name (error->code), error->message);
  }
}

void
bmapd_manager_queue_job (BmapdManager *manager, BmapdJob *job)
{
  g_autoptr (GError) error = NULL;

  if (!bmapd_job_is_active (job))
    return;
  /* A queued job would never start. */
  if (!bmapd_manager_check_accepting (manager, &error)) {
    bmapd_job_fail_before_start (job, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (error->code),
                                 error->message);
    return;
  }
  g_queue_push_tail (manager->queue, job);
  if (count_running (manager) >= manager->config.max_jobs)
    bmapd_log (LOG_INFO, "job %u queued: %u jobs are running (MaxJobs=%u)", bmapd_job_get_id (job),
               count_running (manager), manager->config.max_jobs);
  start_queued (manager);
  update_activity (manager);
}

BmapdJob *
bmapd_manager_add_job (BmapdManager *manager, BmapdJobOperation operation, const char *device_name,
                       const char *device_node, const char *description, uid_t uid, GError **error)
{
  g_autoptr (BmapdLimitsTicket) ticket = NULL;
  BmapdDevice *device = NULL;
  BmapdJob *job;
  guint id;

  if (!bmapd_manager_check_accepting (manager, error))
    return NULL;
  if (device_name != NULL) {
    device = g_hash_table_lookup (manager->devices, device_name);
    if (device == NULL) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "/dev/%s is gone", device_name);
      return NULL;
    }
    if (!bmapd_manager_check_device_free (manager, device_name, device_node, error))
      return NULL;
  }
  ticket = bmapd_limits_take (manager->limits, BMAPD_LIMIT_JOBS, uid, error);
  if (ticket == NULL)
    return NULL;
  id = manager->next_job_id++;
  job = bmapd_job_new (manager->bus, manager->event, id, operation,
                       device != NULL ? bmapd_device_get_path (device) : "/", device_node,
                       description, uid, error);
  if (job == NULL)
    return NULL;
  bmapd_job_set_handlers (job, on_job_finished, on_job_expired, manager);
  g_hash_table_insert (manager->jobs, GUINT_TO_POINTER (id), job);
  g_hash_table_insert (manager->tickets, GUINT_TO_POINTER (id), g_steal_pointer (&ticket));
  if (device != NULL) {
    g_hash_table_insert (manager->busy, g_strdup (device_name), job);
    bmapd_device_set_job (device, bmapd_job_get_path (job));
  }
  /* No update_activity (): the job takes over its request's count. */
  return job;
}

/* ---- requests ---- */

gboolean
bmapd_manager_check_accepting (BmapdManager *manager, GError **error)
{
  if (manager->shutting_down) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "bmapd is shutting down (%s)",
                 manager->shutdown_why);
    return FALSE;
  }
  return TRUE;
}

void
bmapd_manager_add_request (BmapdManager *manager, BmapdRequest *req)
{
  g_ptr_array_add (manager->requests, req);
  update_activity (manager);
}

void
bmapd_manager_remove_request (BmapdManager *manager, BmapdRequest *req)
{
  g_ptr_array_remove (manager->requests, req); /* frees it */
  update_activity (manager);
  check_shutdown_done (manager);
  /* A call that ends frees a place for a waiting auto-flash card. */
  if (manager->job_ended_func != NULL)
    manager->job_ended_func (manager, NULL, manager->job_ended_data);
}

sd_bus *
bmapd_manager_get_bus (BmapdManager *manager)
{
  return manager->bus;
}

sd_event *
bmapd_manager_get_event (BmapdManager *manager)
{
  return manager->event;
}

BmapdDeviceRegistry *
bmapd_manager_get_registry (BmapdManager *manager)
{
  return manager->registry;
}

const BmapdConfig *
bmapd_manager_get_config (BmapdManager *manager)
{
  return &manager->config;
}

BmapdLimits *
bmapd_manager_get_limits (BmapdManager *manager)
{
  return manager->limits;
}

static int
manager_method_flash (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  bmapd_request_handle_flash (userdata, m);
  return 1;
}

static int
manager_method_flash_many (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  bmapd_request_handle_flash_many (userdata, m);
  return 1;
}

static int
manager_method_create (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  bmapd_request_handle_create (userdata, m);
  return 1;
}

static int
manager_method_add_auto_flash (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapdManager *manager = userdata;

  if (manager->add_auto_flash_func == NULL)
    return sd_bus_error_setf (ret_error, BMAP_DBUS_ERROR_PREFIX "Unsupported",
                              "auto-flash is not available in this bmapd");
  return manager->add_auto_flash_func (m, manager->add_auto_flash_data, ret_error);
}

/* ---- auto-flash cards ---- */

void
bmapd_manager_flash_card (BmapdManager *manager, const BmapdCardFlash *card,
                          BmapdManagerCardFunc func, gpointer user_data)
{
  bmapd_request_start_card (manager, card, func, user_data);
}

guint
bmapd_manager_count_free_job_slots (BmapdManager *manager)
{
  guint n = count_running (manager) + g_queue_get_length (manager->queue);

  /* Cards starting will take a place too. */
  for (guint i = 0; i < manager->requests->len; i++) {
    if (bmapd_request_is_card (g_ptr_array_index (manager->requests, i)))
      n++;
  }
  if (manager->shutting_down || n >= manager->config.max_jobs)
    return 0;
  return manager->config.max_jobs - n;
}

gboolean
bmapd_manager_has_free_job_slot (BmapdManager *manager)
{
  return bmapd_manager_count_free_job_slots (manager) > 0;
}

BmapdJob *
bmapd_manager_get_device_job (BmapdManager *manager, const char *name)
{
  const BmapdDeviceInfo *info = bmapd_device_registry_lookup (manager->registry, name);
  BmapdJob *job = g_hash_table_lookup (manager->busy, name);

  if (job != NULL || info == NULL)
    return job;
  if (info->parent != NULL)
    return g_hash_table_lookup (manager->busy, info->parent);
  for (guint i = 0; info->partitions[i] != NULL && job == NULL; i++)
    job = g_hash_table_lookup (manager->busy, info->partitions[i]);
  return job;
}

gboolean
bmapd_manager_check_device_free (BmapdManager *manager, const char *name, const char *node,
                                 GError **error)
{
  BmapdJob *job = bmapd_manager_get_device_job (manager, name);
  const char *writing;

  if (job == NULL)
    return TRUE;
  writing = bmapd_job_get_device_node (job);
  if (g_strcmp0 (writing, node) == 0)
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY, "%s is busy: job %u (%s) is writing it",
                 node, bmapd_job_get_id (job), bmapd_job_get_path (job));
  else
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                 "%s is busy: job %u (%s) is writing %s, which it is part of or holds", node,
                 bmapd_job_get_id (job), bmapd_job_get_path (job), writing);
  return FALSE;
}

const char *
bmapd_manager_get_device_path (BmapdManager *manager, const char *name)
{
  BmapdDevice *device = g_hash_table_lookup (manager->devices, name);
  return device != NULL ? bmapd_device_get_path (device) : NULL;
}

void
bmapd_manager_set_auto_flash (BmapdManager *manager, sd_bus_message_handler_t add_func,
                              BmapdManagerJobFunc job_ended_func, gpointer user_data)
{
  manager->add_auto_flash_func = add_func;
  manager->add_auto_flash_data = user_data;
  manager->job_ended_func = job_ended_func;
  manager->job_ended_data = user_data;
}

void
bmapd_manager_set_auto_flash_armed (BmapdManager *manager, gboolean armed)
{
  int r;

  if ((manager->auto_flash_armed != 0) == (armed != FALSE))
    return;
  manager->auto_flash_armed = armed;
  r = sd_bus_emit_properties_changed (manager->bus, BMAPD_MANAGER_PATH, BMAPD_MANAGER_INTERFACE,
                                      "AutoFlashArmed", NULL);
  if (r < 0)
    bmapd_log (LOG_WARNING, "PropertiesChanged for " BMAPD_MANAGER_PATH ": %s", g_strerror (-r));
  /* The idle timer depends on it. */
  if (manager->activity_func != NULL)
    manager->activity_func (manager, manager->activity_data);
}

gboolean
bmapd_manager_get_auto_flash_armed (BmapdManager *manager)
{
  return manager->auto_flash_armed != 0;
}

/* ---- devices ---- */

static void
on_device_event (BmapdDeviceEvent event, const BmapdDeviceInfo *old_info,
                 const BmapdDeviceInfo *info, gpointer user_data)
{
  BmapdManager *manager = user_data;
  const char *name = info != NULL ? info->name : old_info->name;
  BmapdJob *job = g_hash_table_lookup (manager->busy, name);
  g_autoptr (GError) error = NULL;

  switch (event) {
    case BMAPD_DEVICE_ADDED: {
      BmapdDevice *device = bmapd_device_new (manager->bus, info, &error);
      if (device == NULL) {
        bmapd_log (LOG_WARNING, "%s: %s", info->node, error->message);
        return;
      }
      g_hash_table_replace (manager->devices, g_strdup (name), device);
      if (job != NULL)
        bmapd_device_set_job (device, bmapd_job_get_path (job));
      break;
    }
    case BMAPD_DEVICE_CHANGED: {
      BmapdDevice *device = g_hash_table_lookup (manager->devices, name);
      if (device != NULL)
        bmapd_device_update (device, info);
      /* A medium pulled or swapped under a running job. */
      if (job != NULL
          && (old_info->devnum != info->devnum || old_info->diskseq != info->diskseq
              || !info->media_present))
        bmapd_job_stop (job, BMAPD_JOB_STOP_MEDIA_GONE, NULL);
      break;
    }
    case BMAPD_DEVICE_REMOVED:
      if (job != NULL)
        bmapd_job_stop (job, BMAPD_JOB_STOP_DEVICE_GONE, NULL);
      g_hash_table_remove (manager->devices, name);
      break;
  }
}

/* ---- public API ---- */

static void
apply_limits (BmapdManager *manager)
{
  bmapd_limits_set_max (manager->limits, BMAPD_LIMIT_REQUESTS,
                        manager->config.max_requests_per_user);
  bmapd_limits_set_max (manager->limits, BMAPD_LIMIT_JOBS, manager->config.max_jobs_per_user);
  bmapd_limits_set_max (manager->limits, BMAPD_LIMIT_RULES, manager->config.max_rules_per_user);
}

BmapdManager *
bmapd_manager_new (sd_bus *bus, const BmapdConfig *config, BmapdDeviceRegistry *registry,
                   GError **error)
{
  g_autoptr (BmapdManager) manager = g_new0 (BmapdManager, 1);
  int r;

  manager->bus = sd_bus_ref (bus);
  manager->event = sd_event_ref (sd_bus_get_event (bus));
  manager->config = *config;
  manager->registry = registry;
  manager->version = g_strdup (PACKAGE_VERSION);
  manager->devices
      = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) bmapd_device_free);
  manager->jobs = g_hash_table_new_full (g_direct_hash, g_direct_equal, NULL,
                                         (GDestroyNotify) bmapd_job_free);
  manager->busy = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  manager->requests = g_ptr_array_new_with_free_func ((GDestroyNotify) bmapd_request_free);
  manager->queue = g_queue_new ();
  manager->tickets = g_hash_table_new_full (g_direct_hash, g_direct_equal, NULL,
                                            (GDestroyNotify) bmapd_limits_ticket_unref);
  manager->limits = bmapd_limits_new ();
  apply_limits (manager);
  manager->next_job_id = 1;

  r = sd_bus_add_object_vtable (bus, &manager->vtable_slot, BMAPD_MANAGER_PATH,
                                BMAPD_MANAGER_INTERFACE, manager_vtable, manager);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "exporting " BMAPD_MANAGER_PATH);
    return NULL;
  }
  r = sd_bus_add_object_manager (bus, &manager->object_manager_slot, BMAPD_MANAGER_PATH);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "exporting the object manager");
    return NULL;
  }
  bmapd_device_registry_add_listener (registry, on_device_event, manager);
  return g_steal_pointer (&manager);
}

void
bmapd_manager_free (BmapdManager *manager)
{
  if (manager == NULL)
    return;
  /* Requests first: they point at jobs. */
  g_clear_pointer (&manager->requests, g_ptr_array_unref);
  g_clear_pointer (&manager->queue, g_queue_free);
  g_clear_pointer (&manager->jobs, g_hash_table_unref);
  g_clear_pointer (&manager->tickets, g_hash_table_unref);
  g_clear_pointer (&manager->limits, bmapd_limits_unref);
  g_clear_pointer (&manager->devices, g_hash_table_unref);
  g_clear_pointer (&manager->busy, g_hash_table_unref);
  sd_event_source_disable_unref (manager->shutdown_source);
  sd_bus_slot_unref (manager->vtable_slot);
  sd_bus_slot_unref (manager->object_manager_slot);
  sd_bus_unref (manager->bus);
  sd_event_unref (manager->event);
  g_free (manager->version);
  g_free (manager->shutdown_why);
  g_free (manager);
}

void
bmapd_manager_set_config (BmapdManager *manager, const BmapdConfig *config)
{
  manager->config = *config;
  apply_limits (manager);
  /* A higher MaxJobs may start queued jobs. */
  start_queued (manager);
}

void
bmapd_manager_set_activity_func (BmapdManager *manager, BmapdManagerFunc func, gpointer user_data)
{
  manager->activity_func = func;
  manager->activity_data = user_data;
}

guint
bmapd_manager_get_n_active_jobs (BmapdManager *manager)
{
  return manager->n_active;
}

void
bmapd_manager_shutdown (BmapdManager *manager, const char *why, BmapdManagerFunc done,
                        gpointer user_data)
{
  g_autoptr (GPtrArray) jobs = NULL;
  g_autoptr (GError) error = NULL;

  if (manager->shutting_down)
    return;
  manager->shutting_down = TRUE;
  manager->shutdown_why = g_strdup (why);
  manager->shutdown_func = done;
  manager->shutdown_data = user_data;

  /* Calls still reading their bmap or waiting for polkit have no job. */
  g_set_error (&error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "bmapd is shutting down (%s)", why);
  for (guint i = manager->requests->len; i > 0; i--) {
    BmapdRequest *req = g_ptr_array_index (manager->requests, i - 1);
    if (!bmapd_request_has_job (req))
      bmapd_request_fail (req, error);
  }
  jobs = g_ptr_array_new ();
  {
    GHashTableIter iter;
    gpointer value;
    g_hash_table_iter_init (&iter, manager->jobs);
    while (g_hash_table_iter_next (&iter, NULL, &value))
      g_ptr_array_add (jobs, value);
  }
  for (guint i = 0; i < jobs->len; i++)
    bmapd_job_stop (g_ptr_array_index (jobs, i), BMAPD_JOB_STOP_SHUTDOWN, why);
  check_shutdown_done (manager);
}
