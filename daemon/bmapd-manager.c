/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "bmapd-bus-args.h"
#include "bmapd-device.h"
#include "bmapd-fd.h"
#include "bmapd-job.h"
#include "bmapd-log.h"
#include "bmapd-manager.h"
#include "bmapd-polkit.h"
#include "bmapd-sd.h"
#include "bmapd-trusted-keys.h"
#include "bmapd-unmount.h"
#include "bmap-signature.h"
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
  GPtrArray *requests; /* Request, Flash/Create calls not answered yet */
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

/* A Flash or Create call from its arrival to its answer. Without a call
 * (NULL) and with @preauthorized, the same path starts jobs that need no
 * polkit check of their own (an auto-flash rule's cards). */
typedef struct {
  BmapdManager *manager;
  BmapdJobOperation operation;
  sd_bus_message *call;
  uid_t uid;
  gboolean preauthorized;

  /* Options */
  char *device_name;
  int image_fd;
  int bmap_fd;
  int out_fd;
  gboolean nobmap;
  gboolean verify;
  gboolean verify_written;
  BmapdFlashFlags flash_flags;
  gboolean unmount;
  gboolean bind_to_caller;
  gboolean has_diskseq;
  guint64 diskseq;
  char *description;
  BmapChecksumType checksum;

  struct stat image_st;
  BmapdFdReader *reader;
  BmapMap *map;
  BmapSource *source;
  guint64 image_size; /* 0 when unknown before decoding */
  BmapdDeviceInfo *snapshot;
  BmapdJob *job;
  BmapdPolkitCheck *check;
  BmapdUnmount *unmount_op;

  /* The signature hook (bmapd-trusted-keys): "bmap-signature", checked on
   * a worker while the bmap waits, then told to polkit. */
  int sig_fd;
  GBytes *sig_bmap;
  BmapdTrustedKeysCheck *sig_check;
  BmapdSignatureResult *signature;
} Request;

static int manager_method_flash (sd_bus_message *m, void *userdata, sd_bus_error *error);
static int manager_method_create (sd_bus_message *m, void *userdata, sd_bus_error *error);
static int manager_method_add_auto_flash (sd_bus_message *m, void *userdata, sd_bus_error *error);

static const sd_bus_vtable manager_vtable[] = {
  SD_BUS_VTABLE_START (0),
  SD_BUS_METHOD_WITH_ARGS ("Flash", SD_BUS_ARGS ("o", device, "h", image, "a{sv}", options),
                           SD_BUS_RESULT ("o", job), manager_method_flash,
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
  if (n != manager->n_active) {
    manager->n_active = n;
    if (manager->activity_func != NULL)
      manager->activity_func (manager, manager->activity_data);
  }
}

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
  update_activity (manager);
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

/* ---- requests ---- */

static void
request_free (Request *req)
{
  bmapd_polkit_check_free (req->check);
  bmapd_unmount_free (req->unmount_op);
  bmapd_fd_reader_free (req->reader);
  bmapd_trusted_keys_check_free (req->sig_check);
  g_clear_pointer (&req->sig_bmap, g_bytes_unref);
  bmapd_signature_result_free (req->signature);
  if (req->sig_fd >= 0)
    close (req->sig_fd);
  if (req->image_fd >= 0)
    close (req->image_fd);
  if (req->bmap_fd >= 0)
    close (req->bmap_fd);
  if (req->out_fd >= 0)
    close (req->out_fd);
  g_clear_pointer (&req->map, bmap_map_free);
  g_clear_pointer (&req->source, bmap_source_free);
  g_clear_pointer (&req->snapshot, bmapd_device_info_free);
  if (req->call != NULL)
    sd_bus_message_unref (req->call);
  g_free (req->device_name);
  g_free (req->description);
  g_free (req);
}

static Request *
request_new (BmapdManager *manager, BmapdJobOperation operation, sd_bus_message *call)
{
  Request *req = g_new0 (Request, 1);

  req->manager = manager;
  req->operation = operation;
  req->call = call != NULL ? sd_bus_message_ref (call) : NULL;
  req->image_fd = -1;
  req->bmap_fd = -1;
  req->out_fd = -1;
  req->sig_fd = -1;
  req->verify = TRUE;
  req->checksum = BMAP_CHECKSUM_SHA256;
  return req;
}

static void
request_remove (Request *req)
{
  BmapdManager *manager = req->manager;

  g_ptr_array_remove (manager->requests, req);
  check_shutdown_done (manager);
  /* A call that ends frees a place for a waiting auto-flash card. */
  if (manager->job_ended_func != NULL)
    manager->job_ended_func (manager, NULL, manager->job_ended_data);
}

/* Answers the call with an error; a job created for it ends at once. */
static void
request_fail_full (Request *req, BmapdJobState state, const char *error_name, const char *message)
{
  BmapdJob *job = g_steal_pointer (&req->job);

  if (req->call != NULL) {
    bmapd_log (LOG_INFO, "%s call from uid %u refused: %s (%s)",
               req->operation == BMAPD_JOB_FLASH ? "Flash" : "Create", (guint) req->uid, message,
               error_name);
    sd_bus_reply_method_errorf (req->call, error_name, "%s", message);
  }
  /* An auto-flash card's job is its only report: it stays to be read. */
  if (job != NULL && req->call == NULL)
    bmapd_job_fail_before_start (job, state, error_name, message);
  else if (job != NULL)
    bmapd_job_fail_early (job, state, error_name, message);
  request_remove (req);
}

static void
request_fail (Request *req, const GError *error)
{
  BmapErrorCode code = error->domain == BMAP_ERROR ? (BmapErrorCode) error->code : BMAP_ERROR_IO;
  request_fail_full (req, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (code), error->message);
}

static void
on_request_abort (BmapdJob *job, BmapdJobState state, const GError *error, gpointer user_data)
{
  Request *req = user_data;
  request_fail_full (req, state, bmap_error_code_to_dbus_name (error->code), error->message);
}

/* ---- option parsing ---- */

static gboolean
read_fd_option (sd_bus_message *m, const char *key, const char *what, BmapdFdMode mode,
                gboolean regular_only, int *out, GError **error)
{
  int fd = -1;

  if (!bmapd_bus_read_basic (m, key, 'h', &fd, error))
    return FALSE;
  if (*out >= 0)
    close (*out);
  *out = bmapd_fd_check (fd, what, mode, regular_only, NULL, error);
  return *out >= 0;
}

static gboolean
read_flash_flag (sd_bus_message *m, const char *key, BmapdFlashFlags flag, Request *req,
                 GError **error)
{
  gboolean value = FALSE;

  if (!bmapd_bus_read_bool (m, key, &value, error))
    return FALSE;
  req->flash_flags = value ? req->flash_flags | flag : req->flash_flags & ~flag;
  return TRUE;
}

static gboolean
parse_flash_option (sd_bus_message *m, const char *key, gpointer user_data, GError **error)
{
  Request *req = user_data;

  if (g_str_equal (key, "bmap"))
    return read_fd_option (m, key, "bmap", BMAPD_FD_READ, FALSE, &req->bmap_fd, error);
  if (g_str_equal (key, "bmap-signature"))
    return read_fd_option (m, key, "bmap-signature", BMAPD_FD_READ, TRUE, &req->sig_fd, error);
  if (g_str_equal (key, "nobmap"))
    return bmapd_bus_read_bool (m, key, &req->nobmap, error);
  if (g_str_equal (key, "verify"))
    return bmapd_bus_read_bool (m, key, &req->verify, error);
  if (g_str_equal (key, "verify-written"))
    return bmapd_bus_read_bool (m, key, &req->verify_written, error);
  if (g_str_equal (key, "minimize-writes"))
    return read_flash_flag (m, key, BMAPD_FLASH_MINIMIZE_WRITES, req, error);
  if (g_str_equal (key, "discard"))
    return read_flash_flag (m, key, BMAPD_FLASH_DISCARD, req, error);
  if (g_str_equal (key, "zero-unmapped"))
    return read_flash_flag (m, key, BMAPD_FLASH_ZERO_UNMAPPED, req, error);
  if (g_str_equal (key, "relocate-gpt"))
    return read_flash_flag (m, key, BMAPD_FLASH_RELOCATE_GPT, req, error);
  if (g_str_equal (key, "unmount"))
    return bmapd_bus_read_bool (m, key, &req->unmount, error);
  if (g_str_equal (key, "bind-to-caller"))
    return bmapd_bus_read_bool (m, key, &req->bind_to_caller, error);
  if (g_str_equal (key, "description"))
    return bmapd_bus_read_string (m, key, &req->description, error);
  if (g_str_equal (key, "diskseq")) {
    req->has_diskseq = TRUE;
    return bmapd_bus_read_basic (m, key, 't', &req->diskseq, error);
  }
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
               "unknown Flash option \"%s\" (known: bmap, bmap-signature, nobmap, verify, "
               "verify-written, minimize-writes, discard, zero-unmapped, relocate-gpt, diskseq, "
               "unmount, bind-to-caller, description)",
               key);
  return FALSE;
}

static gboolean
parse_create_option (sd_bus_message *m, const char *key, gpointer user_data, GError **error)
{
  Request *req = user_data;

  if (g_str_equal (key, "description"))
    return bmapd_bus_read_string (m, key, &req->description, error);
  if (g_str_equal (key, "checksum")) {
    g_autofree char *name = NULL;
    if (!bmapd_bus_read_string (m, key, &name, error))
      return FALSE;
    if (g_str_equal (name, "sha256")) {
      req->checksum = BMAP_CHECKSUM_SHA256;
    } else if (g_str_equal (name, "sha1")) {
      req->checksum = BMAP_CHECKSUM_SHA1;
    } else if (g_str_equal (name, "none")) {
      req->checksum = BMAP_CHECKSUM_NONE;
    } else {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "option \"checksum\": unknown checksum \"%s\" (known: sha256, sha1, none)",
                   name);
      return FALSE;
    }
    return TRUE;
  }
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
               "unknown Create option \"%s\" (known: checksum, description)", key);
  return FALSE;
}

/* Jobs authorizing or running, plus calls that have no job yet. */
static guint
count_jobs (BmapdManager *manager, Request *except)
{
  guint n = manager->n_active;

  for (guint i = 0; i < manager->requests->len; i++) {
    Request *req = g_ptr_array_index (manager->requests, i);
    if (req != except && req->job == NULL)
      n++;
  }
  return n;
}

static gboolean
check_limits (BmapdManager *manager, Request *req, GError **error)
{
  guint n;

  if (manager->shutting_down) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "bmapd is shutting down (%s)",
                 manager->shutdown_why);
    return FALSE;
  }
  n = count_jobs (manager, req);
  if (n >= manager->config.max_jobs) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT,
                 "%u jobs are running or waiting, the most bmapd runs at once (MaxJobs=%u)", n,
                 manager->config.max_jobs);
    return FALSE;
  }
  return TRUE;
}

static char *
format_size (guint64 bytes)
{
  g_autofree char *human = g_format_size_full (bytes, G_FORMAT_SIZE_IEC_UNITS);
  return g_strdup_printf ("%" G_GUINT64_FORMAT " bytes (%s)", bytes, human);
}

/* ---- Flash: the device checks ---- */

static gboolean
check_device (Request *req, const BmapdDeviceInfo *info, GError **error)
{
  if (!info->media_present) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "%s has no medium", info->node);
    return FALSE;
  }
  if (info->read_only) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_READ_ONLY, "%s is write-protected", info->node);
    return FALSE;
  }
  if (req->image_size > info->size) {
    g_autofree char *need = format_size (req->image_size);
    g_autofree char *have = format_size (info->size);
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_TOO_SMALL,
                 "%s is too small: the image needs %s, the device has %s", info->node, need, have);
    return FALSE;
  }
  if (req->has_diskseq && req->diskseq != info->diskseq) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_MEDIA_CHANGED,
                 "the medium in %s changed: diskseq %" G_GUINT64_FORMAT " was asked for, "
                 "the device now has %" G_GUINT64_FORMAT,
                 info->node, req->diskseq, info->diskseq);
    return FALSE;
  }
  return TRUE;
}

/* The image as the engine's errors name it: the caller's description
 * (its file name, for bmapctl), not a placeholder. */
static const char *
request_image_name (const Request *req)
{
  return req->description != NULL && req->description[0] != '\0' ? req->description : "the image";
}

static char *
join_mount_points (char **mount_points)
{
  return g_strjoinv (", ", mount_points);
}

static void request_open_and_start (Request *req);

static void
on_unmounted (const GError *error, gpointer user_data)
{
  Request *req = user_data;

  bmapd_unmount_free (g_steal_pointer (&req->unmount_op));
  if (error != NULL) {
    request_fail (req, error);
    return;
  }
  request_open_and_start (req);
}

/* After authorization: the same device, unmounted if asked, then open. */
static void
request_after_auth (Request *req)
{
  BmapdManager *manager = req->manager;
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapdDeviceInfo) fresh = NULL;

  fresh = bmapd_device_registry_read_fresh (manager->registry, req->device_name, &error);
  if (fresh == NULL) {
    request_fail (req, error);
    return;
  }
  if (fresh->devnum != req->snapshot->devnum || fresh->diskseq != req->snapshot->diskseq
      || fresh->size != req->snapshot->size) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_MEDIA_CHANGED,
                 "%s changed while waiting for authorization (device %u:%u -> %u:%u, diskseq "
                 "%" G_GUINT64_FORMAT " -> %" G_GUINT64_FORMAT ", size %" G_GUINT64_FORMAT
                 " -> %" G_GUINT64_FORMAT "); nothing was written",
                 fresh->node, major (req->snapshot->devnum), minor (req->snapshot->devnum),
                 major (fresh->devnum), minor (fresh->devnum), req->snapshot->diskseq,
                 fresh->diskseq, req->snapshot->size, fresh->size);
    request_fail (req, error);
    return;
  }
  if (!check_device (req, fresh, &error)) {
    request_fail (req, error);
    return;
  }
  if (fresh->mount_points[0] != NULL) {
    if (!req->unmount) {
      g_autofree char *list = join_mount_points (fresh->mount_points);

      /* Nobody unmounts / to flash the disk under it. */
      if (g_strv_contains ((const char *const *) fresh->mount_points, "/"))
        g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                     "%s is in use: mounted at %s; it holds the running system and cannot be "
                     "flashed from it",
                     fresh->node, list);
      else
        g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                     "%s is in use: mounted at %s (unmount it first, or pass the \"unmount\" "
                     "option)",
                     fresh->node, list);
      request_fail (req, error);
      return;
    }
    {
      g_autoptr (GPtrArray) names = g_ptr_array_new ();
      g_ptr_array_add (names, fresh->name);
      for (guint i = 0; fresh->partitions[i] != NULL; i++)
        g_ptr_array_add (names, fresh->partitions[i]);
      g_ptr_array_add (names, NULL);
      req->unmount_op = bmapd_unmount_start (
          manager->bus, fresh->node, (const char *const *) names->pdata,
          (const char *const *) fresh->mount_points, on_unmounted, req, &error);
    }
    if (req->unmount_op == NULL)
      request_fail (req, error);
    return;
  }
  request_open_and_start (req);
}

static void
request_open_and_start (Request *req)
{
  BmapdManager *manager = req->manager;
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapTarget) target = NULL;
  BmapdDeviceInfo *info = req->snapshot;
  guint64 bytes_total;
  struct stat st;
  int fd;

  fd = open (info->node, O_WRONLY | O_EXCL | O_CLOEXEC | O_NOCTTY);
  if (fd < 0 && errno == EBUSY) {
    g_autoptr (BmapdDeviceInfo) fresh
        = bmapd_device_registry_read_fresh (manager->registry, req->device_name, NULL);
    if (fresh != NULL && fresh->mount_points[0] != NULL) {
      g_autofree char *list = join_mount_points (fresh->mount_points);
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY, "%s is in use: mounted at %s",
                   info->node, list);
    } else if (fresh != NULL && fresh->holders[0] != NULL) {
      g_autofree char *list = g_strjoinv (", ", fresh->holders);
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY, "%s is in use by %s", info->node,
                   list);
    } else {
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                   "%s is held open exclusively by another program", info->node);
    }
    request_fail (req, error);
    return;
  }
  if (fd < 0) {
    bmap_error_set_errno (&error, errno, "cannot open %s for writing", info->node);
    request_fail (req, error);
    return;
  }
  /* The node must still be the device we checked (a node can be replaced). */
  if (fstat (fd, &st) < 0 || !S_ISBLK (st.st_mode) || st.st_rdev != info->devnum) {
    close (fd);
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_MEDIA_CHANGED,
                 "%s is no longer the block device %u:%u; nothing was written", info->node,
                 major (info->devnum), minor (info->devnum));
    request_fail (req, error);
    return;
  }
  target = bmap_target_new_for_fd (fd, info->node, &error);
  if (target == NULL) {
    request_fail (req, error);
    return;
  }
  if (req->image_size > 0 && !bmap_target_check_size (target, req->image_size, &error)) {
    request_fail (req, error);
    return;
  }

  /* BytesTotal: what will be written, when it is known before decoding. */
  bytes_total = req->map != NULL ? bmap_map_get_mapped_bytes (req->map) : req->image_size;
  bmapd_job_set_flash (req->job, g_steal_pointer (&req->source), req->image_fd,
                       g_steal_pointer (&req->map), g_steal_pointer (&target), req->verify,
                       req->verify_written, bytes_total);
  bmapd_job_set_flash_flags (req->job, req->flash_flags);
  req->image_fd = -1;
  if (!bmapd_job_start (req->job, &error)) {
    request_fail (req, error);
    return;
  }
  if (req->call != NULL)
    sd_bus_reply_method_return (req->call, "o", bmapd_job_get_path (req->job));
  req->job = NULL;
  request_remove (req);
  update_activity (manager);
}

static void
on_flash_authorized (const sd_bus_error *error, gpointer user_data)
{
  Request *req = user_data;

  bmapd_polkit_check_free (g_steal_pointer (&req->check));
  if (error != NULL && sd_bus_error_is_set (error)) {
    request_fail_full (req, BMAPD_JOB_FAILED, error->name, error->message);
    return;
  }
  request_after_auth (req);
}

static void
on_create_authorized (const sd_bus_error *error, gpointer user_data)
{
  Request *req = user_data;
  BmapdManager *manager = req->manager;
  g_autoptr (GError) local_error = NULL;

  bmapd_polkit_check_free (g_steal_pointer (&req->check));
  if (error != NULL && sd_bus_error_is_set (error)) {
    request_fail_full (req, BMAPD_JOB_FAILED, error->name, error->message);
    return;
  }
  bmapd_job_set_create (req->job, req->image_fd, req->out_fd, req->checksum, req->image_size);
  req->image_fd = -1;
  req->out_fd = -1;
  if (!bmapd_job_start (req->job, &local_error)) {
    request_fail (req, local_error);
    return;
  }
  if (req->call != NULL)
    sd_bus_reply_method_return (req->call, "o", bmapd_job_get_path (req->job));
  req->job = NULL;
  request_remove (req); /* frees req */
  update_activity (manager);
}

static BmapdJob *
request_create_job (Request *req, const char *device_path, const char *device_node, GError **error)
{
  BmapdManager *manager = req->manager;
  BmapdJob *job;
  guint id = manager->next_job_id++;

  job = bmapd_job_new (manager->bus, manager->event, id, req->operation, device_path, device_node,
                       req->description, req->uid, error);
  if (job == NULL)
    return NULL;
  bmapd_job_set_handlers (job, on_job_finished, on_job_expired, manager);
  bmapd_job_set_abort_func (job, on_request_abort, req);
  g_hash_table_insert (manager->jobs, GUINT_TO_POINTER (id), job);
  if (req->bind_to_caller && req->call != NULL
      && !bmapd_job_bind_to_caller (job, req->call, error)) {
    bmapd_job_fail_early (job, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (BMAP_ERROR_IO),
                          (*error)->message);
    return NULL;
  }
  update_activity (manager);
  return job;
}

/* ---- the signature hook ---- */

/* bmap.signature (none, trusted, untrusted) and, when trusted, bmap.signer
 * (the key's fingerprint) for polkit rules. Trusted only when the signed
 * bmap decides every byte written: its ranges have checksums and they are
 * checked while writing. */
static void
add_signature_details (Request *req, GPtrArray *details)
{
  BmapdSignatureState state = BMAPD_SIGNATURE_NONE;

  if (req->signature != NULL) {
    state = req->signature->state;
    if (state == BMAPD_SIGNATURE_TRUSTED
        && (!req->verify || req->map == NULL || req->map->range_checksum == BMAP_CHECKSUM_NONE)) {
      bmapd_log (LOG_INFO, "bmap signed by trusted key %s, but %s: reported untrusted",
                 req->signature->signer,
                 !req->verify ? "\"verify\" is off" : "its ranges carry no checksums");
      state = BMAPD_SIGNATURE_UNTRUSTED;
    }
  }
  g_ptr_array_add (details, (gpointer) "bmap.signature");
  g_ptr_array_add (details, (gpointer) bmapd_signature_state_to_string (state));
  if (state == BMAPD_SIGNATURE_TRUSTED) {
    g_ptr_array_add (details, (gpointer) "bmap.signer");
    g_ptr_array_add (details, req->signature->signer);
  }
}

static void request_flash_checked_fds (Request *req, GBytes *bmap_data);

static void
on_signature_checked (const BmapdSignatureResult *result, gpointer user_data)
{
  Request *req = user_data;
  g_autoptr (GBytes) bmap_data = g_steal_pointer (&req->sig_bmap);

  req->signature = g_new0 (BmapdSignatureResult, 1);
  req->signature->state = result->state;
  req->signature->signer = g_strdup (result->signer);
  req->signature->signer_name = g_strdup (result->signer_name);
  bmapd_trusted_keys_check_free (g_steal_pointer (&req->sig_check));
  request_flash_checked_fds (req, bmap_data);
}

/* The bmap is read; with "bmap-signature", the signature is checked against
 * the trusted keys (off the event loop) before anything else. */
static void
request_check_signature (Request *req, GBytes *bmap_data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) signature = NULL;

  if (req->sig_fd < 0) {
    request_flash_checked_fds (req, bmap_data);
    return;
  }
  if (bmap_data == NULL) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "\"bmap-signature\" was given without a bmap; it signs the bmap");
    request_fail (req, error);
    return;
  }
  /* A clearsigned bmap is as large as the bmap, plus its armor. */
  signature = bmapd_fd_read_regular (
      req->sig_fd, BMAPD_MAX_BMAP_SIZE + BMAP_SIGNATURE_MAX_FILE_SIZE, "bmap-signature", &error);
  if (signature == NULL) {
    request_fail (req, error);
    return;
  }
  req->sig_bmap = g_bytes_ref (bmap_data);
  req->sig_check = bmapd_trusted_keys_check_new (req->manager->event, bmap_data, signature,
                                                 on_signature_checked, req, &error);
  if (req->sig_check == NULL)
    request_fail (req, error);
}

/* The bmap is read: every check that needs no authorization, then polkit. */
static void
request_flash_checked_fds (Request *req, GBytes *bmap_data)
{
  BmapdManager *manager = req->manager;
  g_autoptr (GError) error = NULL;
  const BmapdDeviceInfo *info;
  BmapdDevice *device;
  BmapdJob *busy_job;
  const char *action;
  const char *removable;

  if (bmap_data != NULL) {
    gsize len = 0;
    const char *data = g_bytes_get_data (bmap_data, &len);

    req->map = bmap_map_load_data (data, len, "bmap", &error);
    if (req->map == NULL) {
      request_fail (req, error);
      return;
    }
    req->image_size = req->map->image_size;
  }
  /* A regular file is opened now: its first bytes say whether it is
   * compressed, and an uncompressed one has a known size. A pipe is only
   * read by the worker, which may wait for its writer. */
  if (S_ISREG (req->image_st.st_mode)) {
    req->source = bmap_source_new (req->image_fd, TRUE, request_image_name (req), &error);
    req->image_fd = -1;
    if (req->source == NULL) {
      request_fail (req, error);
      return;
    }
    if (req->map == NULL && bmap_source_is_seekable (req->source))
      req->image_size = bmap_source_get_size (req->source);
  }

  info = bmapd_device_registry_lookup (manager->registry, req->device_name);
  device = g_hash_table_lookup (manager->devices, req->device_name);
  if (info == NULL || device == NULL) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "/dev/%s is gone", req->device_name);
    request_fail (req, error);
    return;
  }
  busy_job = g_hash_table_lookup (manager->busy, req->device_name);
  if (busy_job != NULL) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                 "%s is busy: job %u (%s) is writing it", info->node, bmapd_job_get_id (busy_job),
                 bmapd_job_get_path (busy_job));
    request_fail (req, error);
    return;
  }
  if (!check_device (req, info, &error)) {
    request_fail (req, error);
    return;
  }
  req->snapshot = bmapd_device_info_copy (info);

  req->job = request_create_job (req, bmapd_device_get_path (device), info->node, &error);
  if (req->job == NULL) {
    request_fail (req, error);
    return;
  }
  g_hash_table_insert (manager->busy, g_strdup (req->device_name), req->job);
  bmapd_device_set_job (device, bmapd_job_get_path (req->job));

  /* An auto-flash rule's cards are covered by the rule's authorization. */
  if (req->preauthorized) {
    request_after_auth (req);
    return;
  }
  action = info->system ? BMAPD_ACTION_FLASH_SYSTEM : BMAPD_ACTION_FLASH;
  removable = info->removable ? "true" : "false";
  {
    const char *fixed[] = { "device",      info->node,  "drive.vendor",    info->vendor,
                            "drive.model", info->model, "drive.serial",    info->serial,
                            "drive.bus",   info->bus,   "drive.removable", removable };
    g_autoptr (GPtrArray) details = g_ptr_array_new ();

    for (guint i = 0; i < G_N_ELEMENTS (fixed); i++)
      g_ptr_array_add (details, (gpointer) fixed[i]);
    add_signature_details (req, details);
    g_ptr_array_add (details, NULL);
    req->check = bmapd_polkit_check_new (manager->bus, req->call, req->uid, action,
                                         (const char *const *) details->pdata, on_flash_authorized,
                                         req, &error);
  }
  if (req->check == NULL)
    request_fail (req, error);
}

static void
on_bmap_read (GBytes *bytes, const GError *error, gpointer user_data)
{
  Request *req = user_data;

  bmapd_fd_reader_free (g_steal_pointer (&req->reader));
  if (bytes == NULL) {
    request_fail (req, error);
    return;
  }
  request_check_signature (req, bytes);
}

static int
manager_method_flash (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapdManager *manager = userdata;
  g_autoptr (GError) error = NULL;
  const char *device_path = NULL;
  int image_fd = -1;
  Request *req;
  struct stat bmap_st;
  int r;

  req = request_new (manager, BMAPD_JOB_FLASH, m);
  g_ptr_array_add (manager->requests, req);

  r = sd_bus_message_read (m, "oh", &device_path, &image_fd);
  if (r < 0) {
    bmap_error_set_errno (&error, -r, "cannot parse the Flash call");
    request_fail (req, error);
    return 1;
  }
  if (!bmapd_bus_get_caller_uid (m, &req->uid, &error)
      || !bmapd_bus_read_dict (m, parse_flash_option, req, &error)) {
    request_fail (req, error);
    return 1;
  }
  if (req->description == NULL)
    req->description = g_strdup ("");
  req->device_name = bmapd_device_name_from_path (device_path);
  if (req->device_name == NULL) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s is not a device object (expected " BMAPD_DEVICE_PATH_PREFIX "/NAME)",
                 device_path);
    request_fail (req, error);
    return 1;
  }
  if (!check_limits (manager, req, &error)) {
    request_fail (req, error);
    return 1;
  }

  req->image_fd = bmapd_fd_check (image_fd, "image", BMAPD_FD_READ, FALSE, &req->image_st, &error);
  if (req->image_fd < 0) {
    request_fail (req, error);
    return 1;
  }
  if (req->bmap_fd >= 0 && req->nobmap) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "both \"bmap\" and \"nobmap\" were given; pass one of them");
    request_fail (req, error);
    return 1;
  }
  if (req->nobmap && (req->flash_flags & (BMAPD_FLASH_DISCARD | BMAPD_FLASH_ZERO_UNMAPPED))) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "\"%s\" needs a bmap (the ranges it does not map), and \"nobmap\" was given",
                 req->flash_flags & BMAPD_FLASH_DISCARD ? "discard" : "zero-unmapped");
    request_fail (req, error);
    return 1;
  }
  if (req->bmap_fd < 0 && !req->nobmap) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_NO_BMAP,
                 "no bmap was given: pass \"bmap\" (a file descriptor), or \"nobmap\" to copy "
                 "every block of the image");
    request_fail (req, error);
    return 1;
  }
  if (req->bmap_fd < 0) {
    request_check_signature (req, NULL);
    return 1;
  }
  if (fstat (req->bmap_fd, &bmap_st) == 0 && S_ISREG (bmap_st.st_mode)) {
    g_autoptr (GBytes) bytes
        = bmapd_fd_read_regular (req->bmap_fd, BMAPD_MAX_BMAP_SIZE, "bmap", &error);
    if (bytes == NULL) {
      request_fail (req, error);
      return 1;
    }
    request_check_signature (req, bytes);
    return 1;
  }
  req->reader = bmapd_fd_reader_new (manager->event, req->bmap_fd, BMAPD_MAX_BMAP_SIZE, "bmap",
                                     on_bmap_read, req, &error);
  if (req->reader == NULL)
    request_fail (req, error);
  return 1;
}

static int
manager_method_create (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapdManager *manager = userdata;
  g_autoptr (GError) error = NULL;
  int image_fd = -1, out_fd = -1;
  Request *req;
  int r;

  req = request_new (manager, BMAPD_JOB_CREATE, m);
  g_ptr_array_add (manager->requests, req);

  r = sd_bus_message_read (m, "hh", &image_fd, &out_fd);
  if (r < 0) {
    bmap_error_set_errno (&error, -r, "cannot parse the Create call");
    request_fail (req, error);
    return 1;
  }
  if (!bmapd_bus_get_caller_uid (m, &req->uid, &error)
      || !bmapd_bus_read_dict (m, parse_create_option, req, &error)) {
    request_fail (req, error);
    return 1;
  }
  if (req->description == NULL)
    req->description = g_strdup ("");
  if (!check_limits (manager, req, &error)) {
    request_fail (req, error);
    return 1;
  }

  /* Mapping needs FIEMAP or SEEK_DATA: a regular file, not a pipe. */
  req->image_fd = bmapd_fd_check (image_fd, "image", BMAPD_FD_READ, TRUE, &req->image_st, &error);
  if (req->image_fd < 0) {
    request_fail (req, error);
    return 1;
  }
  req->out_fd = bmapd_fd_check (out_fd, "bmap_out", BMAPD_FD_WRITE, FALSE, NULL, &error);
  if (req->out_fd < 0) {
    request_fail (req, error);
    return 1;
  }
  if (req->image_st.st_size == 0) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "image: the file is empty; there is nothing to map");
    request_fail (req, error);
    return 1;
  }
  req->image_size = (guint64) req->image_st.st_size;

  req->job = request_create_job (req, "/", NULL, &error);
  if (req->job == NULL) {
    request_fail (req, error);
    return 1;
  }
  req->check = bmapd_polkit_check_new (manager->bus, m, req->uid, BMAPD_ACTION_CREATE, NULL,
                                       on_create_authorized, req, &error);
  if (req->check == NULL)
    request_fail (req, error);
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

/* The checks a card needs before it gets a job; a failure leaves nothing
 * behind. */
static gboolean
card_check (Request *req, GError **error)
{
  BmapdManager *manager = req->manager;
  const BmapdDeviceInfo *info;
  BmapdJob *busy_job;

  if (!check_limits (manager, req, error))
    return FALSE;
  if (fstat (req->image_fd, &req->image_st) < 0) {
    bmap_error_set_errno (error, errno, "image: fstat");
    return FALSE;
  }
  if (S_ISREG (req->image_st.st_mode)) {
    req->source = bmap_source_new (req->image_fd, TRUE, request_image_name (req), error);
    req->image_fd = -1;
    if (req->source == NULL)
      return FALSE;
    if (req->map == NULL && bmap_source_is_seekable (req->source))
      req->image_size = bmap_source_get_size (req->source);
  }
  info = bmapd_device_registry_lookup (manager->registry, req->device_name);
  if (info == NULL || g_hash_table_lookup (manager->devices, req->device_name) == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "/dev/%s is gone", req->device_name);
    return FALSE;
  }
  busy_job = g_hash_table_lookup (manager->busy, req->device_name);
  if (busy_job != NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY, "%s is busy: job %u (%s) is writing it",
                 info->node, bmapd_job_get_id (busy_job), bmapd_job_get_path (busy_job));
    return FALSE;
  }
  req->snapshot = bmapd_device_info_copy (info);
  return TRUE;
}

BmapdJob *
bmapd_manager_flash_card (BmapdManager *manager, const BmapdCardFlash *card, GError **error)
{
  g_autoptr (GError) local_error = NULL;
  BmapdDevice *device;
  Request *req;
  BmapdJob *job;

  req = request_new (manager, BMAPD_JOB_FLASH, NULL);
  req->preauthorized = TRUE;
  req->uid = card->uid;
  req->device_name = g_strdup (card->device_name);
  req->image_fd = card->image_fd;
  req->map = card->map;
  req->verify = card->verify;
  req->verify_written = card->verify_written;
  req->has_diskseq = TRUE;
  req->diskseq = card->diskseq;
  req->description = g_strdup (card->description != NULL ? card->description : "");
  if (req->map != NULL)
    req->image_size = req->map->image_size;
  if (!card_check (req, error)) {
    request_free (req);
    return NULL;
  }

  /* From here on the card has a job, which reports whatever happens. */
  g_ptr_array_add (manager->requests, req);
  device = g_hash_table_lookup (manager->devices, req->device_name);
  job = request_create_job (req, bmapd_device_get_path (device), req->snapshot->node, error);
  if (job == NULL) {
    request_remove (req);
    return NULL;
  }
  req->job = job;
  g_hash_table_insert (manager->busy, g_strdup (req->device_name), job);
  bmapd_device_set_job (device, bmapd_job_get_path (job));
  if (!check_device (req, req->snapshot, &local_error)) {
    request_fail (req, local_error);
    return job;
  }
  /* No polkit and no unmount: this runs to the start (or the failure) of
   * the job before it returns. */
  request_after_auth (req);
  return job;
}

gboolean
bmapd_manager_has_free_job_slot (BmapdManager *manager)
{
  return !manager->shutting_down && count_jobs (manager, NULL) < manager->config.max_jobs;
}

BmapdJob *
bmapd_manager_get_device_job (BmapdManager *manager, const char *name)
{
  return g_hash_table_lookup (manager->busy, name);
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
  manager->requests = g_ptr_array_new_with_free_func ((GDestroyNotify) request_free);
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
  g_clear_pointer (&manager->jobs, g_hash_table_unref);
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

  /* Calls still reading their bmap have no job yet. */
  g_set_error (&error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "bmapd is shutting down (%s)", why);
  for (guint i = manager->requests->len; i > 0; i--) {
    Request *req = g_ptr_array_index (manager->requests, i - 1);
    if (req->job == NULL)
      request_fail (req, error);
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
