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
#include "bmapd-limits.h"
#include "bmapd-log.h"
#include "bmapd-polkit.h"
#include "bmapd-request.h"
#include "bmapd-sd.h"
#include "bmapd-source.h"
#include "bmapd-trusted-keys.h"
#include "bmapd-unmount.h"
#include "bmap-signature.h"
#include "libbmap.h"

/* The most devices one FlashMany call writes. */
#define MAX_FLASH_MANY_DEVICES 16

/* One device of a FlashMany call. */
typedef struct {
  char *name;
  gboolean has_diskseq;
  guint64 diskseq;
  BmapdDeviceInfo *snapshot;
  BmapdJob *job;
  BmapTarget *target; /* opened, once authorized */
  guint64 opened_diskseq;
} ManyDevice;

struct _BmapdRequest {
  BmapdManager *manager;
  BmapdJobOperation operation;
  sd_bus_message *call; /* NULL for a card */
  uid_t uid;
  BmapdRequestCardFunc card_func;
  gpointer card_data;
  gboolean card_hold;        /* the card function queues the job */
  BmapdLimitsTicket *ticket; /* MaxRequestsPerUser; the reader thread holds it too */

  /* Options */
  char *device_name;
  BmapdImage *card_image; /* a card's: opened again on the reader thread */
  int image_fd;
  int bmap_fd;
  int sig_fd; /* "bmap-signature" */
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
  gboolean no_user_interaction;

  BmapdFdWorker *worker;
  BmapMap *map;
  BmapdSource *source;
  guint64 image_size; /* 0 when unknown before decoding */
  BmapdDeviceInfo *snapshot;
  gboolean asked_flash_system;
  BmapdTrustedKeysCheck *sig_check;
  BmapdSignatureResult *signature; /* NULL without "bmap-signature" */
  BmapdPolkitCheck *check;
  BmapdUnmount *unmount_op;
  BmapdJob *job;
  sd_event_source *defer_source; /* a card's start, from the loop */
  sd_bus_track *track;           /* the caller, until the request has a job */

  /* FlashMany: every device of the call, NULL for Flash. The one being
   * checked (@current) is in device_name, has_diskseq, diskseq, snapshot
   * and job, where the Flash path's checks find it; the others are here. */
  ManyDevice *many;
  guint n_many;
  guint current;
};

/* What the reader thread works on; it frees it when the loop gave up. */
typedef struct {
  BmapdJobOperation operation;
  BmapdImage *card_image;
  int image_fd;
  int bmap_fd;
  int sig_fd;
  int out_fd;
  BmapMap *map;
  GBytes *bmap;      /* its bytes, kept for the signature check */
  GBytes *signature; /* read from sig_fd */
  BmapdSource *source;
  char *image_name; /* the caller's description: the engine's errors name it */
  guint64 image_size;
  BmapdLimitsTicket *ticket;
} RequestWork;

static void request_authorized (BmapdRequest *req);

/* ---- life cycle ---- */

void
bmapd_request_free (BmapdRequest *req)
{
  if (req == NULL)
    return;
  bmapd_fd_worker_free (req->worker);
  bmapd_trusted_keys_check_free (req->sig_check);
  bmapd_signature_result_free (req->signature);
  bmapd_polkit_check_free (req->check);
  bmapd_unmount_free (req->unmount_op);
  sd_event_source_disable_unref (req->defer_source);
  sd_bus_track_unref (req->track);
  g_clear_pointer (&req->card_image, bmapd_image_free);
  if (req->image_fd >= 0)
    close (req->image_fd);
  if (req->bmap_fd >= 0)
    close (req->bmap_fd);
  if (req->sig_fd >= 0)
    close (req->sig_fd);
  if (req->out_fd >= 0)
    close (req->out_fd);
  g_clear_pointer (&req->map, bmap_map_free);
  g_clear_pointer (&req->source, bmapd_source_free);
  g_clear_pointer (&req->snapshot, bmapd_device_info_free);
  bmapd_limits_ticket_unref (req->ticket);
  if (req->call != NULL)
    sd_bus_message_unref (req->call);
  for (guint i = 0; i < req->n_many; i++) {
    g_free (req->many[i].name);
    g_clear_pointer (&req->many[i].snapshot, bmapd_device_info_free);
    g_clear_pointer (&req->many[i].target, bmap_target_free);
  }
  g_free (req->many);
  g_free (req->device_name);
  g_free (req->description);
  g_free (req);
}

/* FlashMany: the device being checked goes back to its place. */
static void
request_store_device (BmapdRequest *req)
{
  ManyDevice *old = &req->many[req->current];

  old->name = g_steal_pointer (&req->device_name);
  old->has_diskseq = req->has_diskseq;
  old->diskseq = req->diskseq;
  old->snapshot = g_steal_pointer (&req->snapshot);
  old->job = g_steal_pointer (&req->job);
}

/* FlashMany: device @idx becomes the one the Flash path's functions see. */
static void
request_select_device (BmapdRequest *req, guint idx)
{
  ManyDevice *new = &req->many[idx];

  request_store_device (req);
  req->device_name = g_steal_pointer (&new->name);
  req->has_diskseq = new->has_diskseq;
  req->diskseq = new->diskseq;
  req->snapshot = g_steal_pointer (&new->snapshot);
  req->job = g_steal_pointer (&new->job);
  req->current = idx;
}

static BmapdRequest *
request_new (BmapdManager *manager, BmapdJobOperation operation, sd_bus_message *call)
{
  BmapdRequest *req = g_new0 (BmapdRequest, 1);

  req->manager = manager;
  req->operation = operation;
  req->call = call != NULL ? sd_bus_message_ref (call) : NULL;
  req->image_fd = -1;
  req->bmap_fd = -1;
  req->sig_fd = -1;
  req->out_fd = -1;
  req->verify = TRUE;
  req->checksum = BMAP_CHECKSUM_SHA256;
  bmapd_manager_add_request (manager, req);
  return req;
}

gboolean
bmapd_request_has_job (BmapdRequest *req)
{
  return req->job != NULL;
}

gboolean
bmapd_request_is_card (BmapdRequest *req)
{
  return req->call == NULL;
}

static const char *
method_name (BmapdRequest *req)
{
  if (req->many != NULL)
    return "FlashMany";
  return req->operation == BMAPD_JOB_FLASH ? "Flash" : "Create";
}

/* Answers the call with an error (or tells the card); a job made for it
 * ends at once. Frees @req. */
static void
request_fail_full (BmapdRequest *req, BmapdJobState state, const char *error_name,
                   const char *message)
{
  BmapdJob *job = g_steal_pointer (&req->job);
  g_autoptr (GError) error = NULL;

  /* FlashMany: the other devices' jobs end with the call too. */
  for (guint i = 0; i < req->n_many; i++) {
    BmapdJob *other = g_steal_pointer (&req->many[i].job);

    if (other != NULL)
      bmapd_job_fail_early (other, state, error_name, message);
  }
  if (req->call != NULL) {
    bmapd_log (LOG_INFO, "%s call from uid %u refused: %s (%s)", method_name (req),
               (guint) req->uid, message, error_name);
    sd_bus_reply_method_errorf (req->call, error_name, "%s", message);
  }
  /* An auto-flash card's job is its only report: it stays to be read. */
  if (job != NULL && req->call == NULL)
    bmapd_job_fail_before_start (job, state, error_name, message);
  else if (job != NULL)
    bmapd_job_fail_early (job, state, error_name, message);
  if (req->card_func != NULL) {
    BmapErrorCode code = BMAP_ERROR_IO;

    if (!bmap_error_code_from_dbus_name (error_name, &code))
      code = BMAP_ERROR_IO;
    g_set_error_literal (&error, BMAP_ERROR, code, message);
    req->card_func (job, job != NULL ? NULL : error, req->card_data);
  }
  bmapd_manager_remove_request (req->manager, req);
}

void
bmapd_request_fail (BmapdRequest *req, const GError *error)
{
  BmapErrorCode code = error->domain == BMAP_ERROR ? (BmapErrorCode) error->code : BMAP_ERROR_IO;
  request_fail_full (req, BMAPD_JOB_FAILED, bmap_error_code_to_dbus_name (code), error->message);
}

static void
on_job_abort (BmapdJob *job, BmapdJobState state, const GError *error, gpointer user_data)
{
  BmapdRequest *req = user_data;
  request_fail_full (req, state, bmap_error_code_to_dbus_name (error->code), error->message);
}

/* ---- the reader thread: the one place a descriptor becomes a source ---- */

static void
request_work_free (RequestWork *work)
{
  g_clear_pointer (&work->card_image, bmapd_image_free);
  if (work->image_fd >= 0)
    close (work->image_fd);
  if (work->bmap_fd >= 0)
    close (work->bmap_fd);
  if (work->sig_fd >= 0)
    close (work->sig_fd);
  if (work->out_fd >= 0)
    close (work->out_fd);
  g_clear_pointer (&work->map, bmap_map_free);
  g_clear_pointer (&work->bmap, g_bytes_unref);
  g_clear_pointer (&work->signature, g_bytes_unref);
  g_clear_pointer (&work->source, bmapd_source_free);
  g_free (work->image_name);
  bmapd_limits_ticket_unref (work->ticket);
  g_free (work);
}

static gboolean
request_work_run (gpointer data, GCancellable *cancellable, GError **error)
{
  RequestWork *work = data;
  struct stat st;

  if (work->operation == BMAPD_JOB_CREATE) {
    /* Mapping needs FIEMAP or SEEK_DATA: a regular file, not a pipe. */
    if (!bmapd_fd_check_type (work->image_fd, "image", TRUE, &st, error)
        || !bmapd_fd_check_type (work->out_fd, "bmap_out", FALSE, NULL, error))
      return FALSE;
    if (st.st_size == 0) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "image: the file is empty; there is nothing to map");
      return FALSE;
    }
    work->image_size = (guint64) st.st_size;
    return TRUE;
  }

  /* A card's descriptor of its own on the rule's image. */
  if (work->card_image != NULL) {
    work->image_fd = bmapd_image_open_reader (work->card_image, error);
    g_clear_pointer (&work->card_image, bmapd_image_free);
    if (work->image_fd < 0)
      return FALSE;
  }
  if (work->bmap_fd >= 0) {
    work->map = bmapd_fd_read_bmap (work->bmap_fd, cancellable,
                                    work->sig_fd >= 0 ? &work->bmap : NULL, error);
    if (work->map == NULL)
      return FALSE;
  }
  if (work->sig_fd >= 0) {
    /* A clearsigned bmap is as large as the bmap, plus its armor. */
    if (!bmapd_fd_check_type (work->sig_fd, "bmap-signature", TRUE, NULL, error))
      return FALSE;
    work->signature = bmapd_fd_read_regular (
        work->sig_fd, BMAPD_MAX_BMAP_SIZE + BMAP_SIGNATURE_MAX_FILE_SIZE, "bmap-signature", error);
    if (work->signature == NULL)
      return FALSE;
  }
  /* Takes the descriptor, even on failure. */
  work->source = bmapd_source_new (g_steal_fd (&work->image_fd), work->image_name, error);
  if (work->source == NULL)
    return FALSE;
  work->image_size
      = work->map != NULL ? work->map->image_size : bmapd_source_get_size (work->source);
  return TRUE;
}

/* ---- the device ---- */

static char *
format_size (guint64 bytes)
{
  g_autofree char *human = g_format_size_full (bytes, G_FORMAT_SIZE_IEC_UNITS);
  return g_strdup_printf ("%" G_GUINT64_FORMAT " bytes (%s)", bytes, human);
}

/* What a partition target cannot do: the options whose work lies outside
 * it. discard and zero-unmapped stay inside it (the descriptor is the
 * partition's). */
static gboolean
check_partition_options (BmapdRequest *req, const BmapdDeviceInfo *info, GError **error)
{
  if (info->parent != NULL && (req->flash_flags & BMAPD_FLASH_RELOCATE_GPT) != 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "\"relocate-gpt\" cannot be used on %s: it is partition %u of %s, and a GPT's "
                 "backup belongs at the end of the whole disk (flash %s instead, or leave the "
                 "option out)",
                 info->node, info->partition_number, info->parent_node, info->parent_node);
    return FALSE;
  }
  return TRUE;
}

static gboolean
check_device (BmapdRequest *req, const BmapdDeviceInfo *info, GError **error)
{
  if (!check_partition_options (req, info, error))
    return FALSE;
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

/* The device as it is now must be the one checked before polkit. */
static BmapdDeviceInfo *
read_again (BmapdRequest *req, const char *when, GError **error)
{
  BmapdDeviceRegistry *registry = bmapd_manager_get_registry (req->manager);
  g_autoptr (BmapdDeviceInfo) fresh = NULL;
  const BmapdDeviceInfo *old = req->snapshot;

  fresh = bmapd_device_registry_read_fresh (registry, req->device_name, error);
  if (fresh == NULL)
    return NULL;
  if (fresh->devnum != old->devnum || fresh->diskseq != old->diskseq || fresh->size != old->size) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_MEDIA_CHANGED,
                 "%s changed %s (device %u:%u -> %u:%u, diskseq %" G_GUINT64_FORMAT
                 " -> %" G_GUINT64_FORMAT ", size %" G_GUINT64_FORMAT " -> %" G_GUINT64_FORMAT
                 "); nothing was written",
                 fresh->node, when, major (old->devnum), minor (old->devnum), major (fresh->devnum),
                 minor (fresh->devnum), old->diskseq, fresh->diskseq, old->size, fresh->size);
    return NULL;
  }
  return g_steal_pointer (&fresh);
}

static char *
join_mount_points (char **mount_points)
{
  return g_strjoinv (", ", mount_points);
}

/* ---- after authorization ---- */

static void
request_queue_job (BmapdRequest *req)
{
  BmapdManager *manager = req->manager;
  BmapdJob *job = g_steal_pointer (&req->job);
  gboolean hold;

  bmapd_job_set_abort_func (job, NULL, NULL);
  if (req->call != NULL)
    sd_bus_reply_method_return (req->call, "o", bmapd_job_get_path (job));
  if (req->card_func != NULL)
    req->card_func (job, NULL, req->card_data);
  hold = req->card_hold;
  bmapd_manager_remove_request (manager, req);
  /* Last: it may start the job, or fail it, which the caller then hears of
   * through the job. A card held for a set is queued with the others. */
  if (!hold)
    bmapd_manager_queue_job (manager, job);
}

static void request_many_device_opened (BmapdRequest *req, BmapTarget *target, guint64 diskseq);

static void
request_open_device (BmapdRequest *req)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapTarget) target = NULL;
  g_autoptr (BmapdDeviceInfo) info = NULL;
  guint64 bytes_total;
  struct stat st;
  int fd;

  /* Unmounting may have taken a while. */
  info = read_again (req, "before it was opened", &error);
  if (info == NULL) {
    bmapd_request_fail (req, error);
    return;
  }
  if (info->system && !req->asked_flash_system) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                 "%s became a system disk after authorization (flash-system was not asked); "
                 "nothing was written",
                 info->node);
    bmapd_request_fail (req, error);
    return;
  }
  fd = open (info->node, O_WRONLY | O_EXCL | O_CLOEXEC | O_NOCTTY);
  if (fd < 0 && errno == EBUSY) {
    if (info->mount_points[0] != NULL) {
      g_autofree char *list = join_mount_points (info->mount_points);
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY, "%s is in use: mounted at %s",
                   info->node, list);
    } else if (info->holders[0] != NULL) {
      g_autofree char *list = g_strjoinv (", ", info->holders);
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY, "%s is in use by %s", info->node,
                   list);
    } else {
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                   "%s is held open exclusively by another program", info->node);
    }
    bmapd_request_fail (req, error);
    return;
  }
  if (fd < 0) {
    bmap_error_set_errno (&error, errno, "cannot open %s for writing", info->node);
    bmapd_request_fail (req, error);
    return;
  }
  /* The node must still be the device we checked (a node can be replaced). */
  if (fstat (fd, &st) < 0 || !S_ISBLK (st.st_mode) || st.st_rdev != info->devnum) {
    close (fd);
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_MEDIA_CHANGED,
                 "%s is no longer the block device %u:%u; nothing was written", info->node,
                 major (info->devnum), minor (info->devnum));
    bmapd_request_fail (req, error);
    return;
  }
  if (!bmapd_fd_check_diskseq (fd, info->node, info->diskseq, &error)) {
    close (fd);
    bmapd_request_fail (req, error);
    return;
  }
  target = bmap_target_new_for_fd (fd, info->node, &error);
  if (target == NULL) {
    bmapd_request_fail (req, error);
    return;
  }
  if (req->image_size > 0 && !bmap_target_check_size (target, req->image_size, &error)) {
    bmapd_request_fail (req, error);
    return;
  }

  if (req->many != NULL) {
    request_many_device_opened (req, g_steal_pointer (&target), info->diskseq);
    return;
  }
  /* BytesTotal: what will be written, when it is known before decoding. */
  bytes_total = req->map != NULL ? bmap_map_get_mapped_bytes (req->map) : req->image_size;
  bmapd_job_set_flash (req->job, g_steal_pointer (&req->source), g_steal_pointer (&req->map),
                       g_steal_pointer (&target), info->diskseq, req->verify, req->verify_written,
                       bytes_total);
  bmapd_job_set_flash_flags (req->job, req->flash_flags);
  request_queue_job (req);
}

static void
on_unmounted (const GError *error, gpointer user_data)
{
  BmapdRequest *req = user_data;

  bmapd_unmount_free (g_steal_pointer (&req->unmount_op));
  if (error != NULL) {
    bmapd_request_fail (req, error);
    return;
  }
  request_open_device (req);
}

static void on_authorized (const sd_bus_error *error, gpointer user_data);

/* bmap.signature (none, trusted, untrusted) and, when trusted, bmap.signer
 * (the key's fingerprint) for polkit rules. Trusted only when the signed
 * bmap decides every byte written: its ranges have checksums and they are
 * checked while writing. */
static void
add_signature_details (BmapdRequest *req, GPtrArray *details)
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

/* Part of the flash being allowed: rules may look at them. */
static void
add_option_details (BmapdRequest *req, GPtrArray *details)
{
  g_ptr_array_add (details, (gpointer) "options.eject");
  g_ptr_array_add (details, (gpointer) (req->flash_flags & BMAPD_FLASH_EJECT ? "true" : "false"));
  g_ptr_array_add (details, (gpointer) "options.power-off");
  g_ptr_array_add (details,
                   (gpointer) (req->flash_flags & BMAPD_FLASH_POWER_OFF ? "true" : "false"));
}

static void
ask_polkit_flash (BmapdRequest *req, const BmapdDeviceInfo *info)
{
  g_autoptr (GError) error = NULL;
  const char *action = info->system ? BMAPD_ACTION_FLASH_SYSTEM : BMAPD_ACTION_FLASH;
  const char *removable = info->removable ? "true" : "false";
  /* A partition's: "device" names it, "disk" the disk it is part of. */
  const char *disk = info->parent_node != NULL ? info->parent_node : info->node;
  const char *fixed[] = { "device",          info->node,   "disk",        disk,
                          "drive.vendor",    info->vendor, "drive.model", info->model,
                          "drive.serial",    info->serial, "drive.bus",   info->bus,
                          "drive.removable", removable };
  g_autoptr (GPtrArray) details = g_ptr_array_new ();

  for (guint i = 0; i < G_N_ELEMENTS (fixed); i++)
    g_ptr_array_add (details, (gpointer) fixed[i]);
  add_option_details (req, details);
  add_signature_details (req, details);
  g_ptr_array_add (details, NULL);
  req->asked_flash_system = info->system;
  req->check = bmapd_polkit_check_new (bmapd_manager_get_bus (req->manager), req->call, req->uid,
                                       action, (const char *const *) details->pdata,
                                       req->no_user_interaction, on_authorized, req, &error);
  if (req->check == NULL)
    bmapd_request_fail (req, error);
}

/* Flash: polkit said yes (or a card's rule did). */
static void
request_flash_authorized (BmapdRequest *req)
{
  BmapdManager *manager = req->manager;
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapdDeviceInfo) fresh = NULL;

  if (!bmapd_manager_check_device_free (manager, req->device_name, req->snapshot->node, &error)) {
    bmapd_request_fail (req, error);
    return;
  }
  fresh = read_again (req, "while waiting for authorization", &error);
  if (fresh == NULL) {
    bmapd_request_fail (req, error);
    return;
  }
  /* A disk that became a system disk is flash-system's to allow. */
  if (fresh->system && !req->asked_flash_system) {
    if (req->many != NULL) {
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                   "%s became a system disk while FlashMany waited for authorization "
                   "(flash-system was not asked); nothing was written",
                   fresh->node);
      bmapd_request_fail (req, error);
      return;
    }
    if (req->call == NULL) {
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                   "%s became a system disk; auto-flash never writes those", fresh->node);
      bmapd_request_fail (req, error);
      return;
    }
    bmapd_device_info_free (req->snapshot);
    req->snapshot = bmapd_device_info_copy (fresh);
    ask_polkit_flash (req, fresh);
    return;
  }
  req->job = bmapd_manager_add_job (manager, BMAPD_JOB_FLASH, req->device_name, fresh->node,
                                    req->description, req->uid, &error);
  if (req->job == NULL) {
    bmapd_request_fail (req, error);
    return;
  }
  bmapd_job_set_abort_func (req->job, on_job_abort, req);
  if (req->bind_to_caller && req->call != NULL
      && !bmapd_job_bind_to_caller (req->job, req->call, &error)) {
    bmapd_request_fail (req, error);
    return;
  }
  if (!check_device (req, fresh, &error)) {
    bmapd_request_fail (req, error);
    return;
  }
  if (fresh->mount_points[0] != NULL) {
    g_autoptr (GPtrArray) names = g_ptr_array_new ();

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
      bmapd_request_fail (req, error);
      return;
    }
    g_ptr_array_add (names, fresh->name);
    for (guint i = 0; fresh->partitions[i] != NULL; i++)
      g_ptr_array_add (names, fresh->partitions[i]);
    g_ptr_array_add (names, NULL);
    req->unmount_op = bmapd_unmount_start (
        bmapd_manager_get_bus (manager), fresh->node, (const char *const *) names->pdata,
        (const char *const *) fresh->mount_points, on_unmounted, req, &error);
    if (req->unmount_op == NULL)
      bmapd_request_fail (req, error);
    return;
  }
  request_open_device (req);
}

static void
request_create_authorized (BmapdRequest *req)
{
  g_autoptr (GError) error = NULL;

  req->job = bmapd_manager_add_job (req->manager, BMAPD_JOB_CREATE, NULL, NULL, req->description,
                                    req->uid, &error);
  if (req->job == NULL) {
    bmapd_request_fail (req, error);
    return;
  }
  bmapd_job_set_abort_func (req->job, on_job_abort, req);
  bmapd_job_set_create (req->job, req->image_fd, req->out_fd, req->checksum, req->image_size);
  req->image_fd = -1;
  req->out_fd = -1;
  request_queue_job (req);
}

static void
request_authorized (BmapdRequest *req)
{
  g_autoptr (GError) error = NULL;

  /* No longer waiting for the caller or for polkit. */
  g_clear_pointer (&req->ticket, bmapd_limits_ticket_unref);
  if (!bmapd_manager_check_accepting (req->manager, &error)) {
    bmapd_request_fail (req, error);
    return;
  }
  /* FlashMany: the devices one after the other, from the first. */
  if (req->many != NULL)
    request_select_device (req, 0);
  if (req->operation == BMAPD_JOB_FLASH)
    request_flash_authorized (req);
  else
    request_create_authorized (req);
}

static void
on_authorized (const sd_bus_error *error, gpointer user_data)
{
  BmapdRequest *req = user_data;

  bmapd_polkit_check_free (g_steal_pointer (&req->check));
  if (error != NULL && sd_bus_error_is_set (error)) {
    request_fail_full (req, BMAPD_JOB_FAILED, error->name, error->message);
    return;
  }
  request_authorized (req);
}

/* ---- before authorization ---- */

/* The device checks that need no authorization; nothing is held yet. */
static gboolean
request_check_device (BmapdRequest *req, GError **error)
{
  BmapdManager *manager = req->manager;
  const BmapdDeviceInfo *info;

  info = bmapd_device_registry_lookup (bmapd_manager_get_registry (manager), req->device_name);
  if (info == NULL || bmapd_manager_get_device_path (manager, req->device_name) == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "/dev/%s is gone", req->device_name);
    return FALSE;
  }
  /* Held by an authorized job now: no reason to ask polkit. */
  if (!bmapd_manager_check_device_free (manager, req->device_name, info->node, error))
    return FALSE;
  /* A card's failures are its job's to report: checked once it has one. */
  if (req->call != NULL && !check_device (req, info, error))
    return FALSE;
  g_clear_pointer (&req->snapshot, bmapd_device_info_free);
  req->snapshot = bmapd_device_info_copy (info);
  return TRUE;
}

static void request_many_check_devices (BmapdRequest *req);

/* Flash: the files are read (and a signature checked): the device checks,
 * then polkit. */
static void
request_flash_files_read (BmapdRequest *req)
{
  g_autoptr (GError) error = NULL;

  if (req->many != NULL) {
    request_many_check_devices (req);
    return;
  }
  if (!request_check_device (req, &error)) {
    bmapd_request_fail (req, error);
    return;
  }
  /* An auto-flash rule's cards are covered by the rule's authorization. */
  if (req->call == NULL) {
    request_authorized (req);
    return;
  }
  ask_polkit_flash (req, req->snapshot);
}

/* ---- the signature hook ---- */

static void
on_signature_checked (const BmapdSignatureResult *result, gpointer user_data)
{
  BmapdRequest *req = user_data;

  req->signature = g_new0 (BmapdSignatureResult, 1);
  req->signature->state = result->state;
  req->signature->signer = g_strdup (result->signer);
  req->signature->signer_name = g_strdup (result->signer_name);
  bmapd_trusted_keys_check_free (g_steal_pointer (&req->sig_check));
  request_flash_files_read (req);
}

/* "bmap-signature" is checked against the trusted keys on a thread of its
 * own before polkit is asked; a check given up on keeps the caller's
 * place until its thread ends, as the reader thread does. */
static void
request_check_signature (BmapdRequest *req, GBytes *bmap, GBytes *signature)
{
  g_autoptr (GError) error = NULL;
  BmapdLimitsTicket *hold = req->ticket != NULL ? bmapd_limits_ticket_ref (req->ticket) : NULL;

  req->sig_check = bmapd_trusted_keys_check_new (
      bmapd_manager_get_event (req->manager), bmap, signature, hold,
      (GDestroyNotify) bmapd_limits_ticket_unref, on_signature_checked, req, &error);
  if (req->sig_check == NULL)
    bmapd_request_fail (req, error);
}

/* ---- the reader thread's result ---- */

static void
on_work_done (gpointer data, const GError *error, gpointer user_data)
{
  BmapdRequest *req = user_data;
  RequestWork *work = data;
  g_autoptr (GError) local_error = NULL;
  g_autoptr (GBytes) bmap = NULL;
  g_autoptr (GBytes) signature = NULL;

  if (error != NULL) {
    /* The deadline: the thread keeps the caller's place until it ends. */
    bmapd_request_fail (req, error);
    return;
  }
  req->map = g_steal_pointer (&work->map);
  req->source = g_steal_pointer (&work->source);
  req->image_size = work->image_size;
  if (work->image_fd >= 0)
    req->image_fd = g_steal_fd (&work->image_fd);
  if (work->out_fd >= 0)
    req->out_fd = g_steal_fd (&work->out_fd);
  bmap = g_steal_pointer (&work->bmap);
  signature = g_steal_pointer (&work->signature);
  /* Frees @work when the thread has let go already. */
  bmapd_fd_worker_free (g_steal_pointer (&req->worker));

  if (req->operation == BMAPD_JOB_CREATE) {
    req->check = bmapd_polkit_check_new (bmapd_manager_get_bus (req->manager), req->call, req->uid,
                                         BMAPD_ACTION_CREATE, NULL, req->no_user_interaction,
                                         on_authorized, req, &local_error);
    if (req->check == NULL)
      bmapd_request_fail (req, local_error);
    return;
  }
  if (signature != NULL) {
    request_check_signature (req, bmap, signature);
    return;
  }
  request_flash_files_read (req);
}

/* Hands the descriptors (and a card's map) to a reader thread. */
/* A caller that leaves gets no answer and keeps no place: its request
 * goes (and polkit is told to drop its dialog). */
static int
on_caller_gone (sd_bus_track *track, void *user_data)
{
  BmapdRequest *req = user_data;
  g_autoptr (GError) error = NULL;

  req->track = sd_bus_track_unref (req->track);
  if (req->job != NULL)
    return 0; /* the job's own bind-to-caller decides */
  g_set_error (&error, BMAP_ERROR, BMAP_ERROR_CANCELLED,
               "the caller %s left the bus before its %s call was answered",
               sd_bus_message_get_sender (req->call), method_name (req));
  bmapd_request_fail (req, error);
  return 0;
}

static void
request_start_reading (BmapdRequest *req)
{
  const BmapdConfig *config = bmapd_manager_get_config (req->manager);
  g_autoptr (GError) error = NULL;
  RequestWork *work = g_new0 (RequestWork, 1);

  work->operation = req->operation;
  work->card_image = g_steal_pointer (&req->card_image);
  work->image_fd = g_steal_fd (&req->image_fd);
  work->bmap_fd = g_steal_fd (&req->bmap_fd);
  work->sig_fd = g_steal_fd (&req->sig_fd);
  work->out_fd = g_steal_fd (&req->out_fd);
  work->map = g_steal_pointer (&req->map);
  /* The caller's name for the image (its file name, for bmapctl), not a
   * placeholder. */
  work->image_name = g_strdup (
      req->description != NULL && req->description[0] != '\0' ? req->description : "the image");
  work->ticket = req->ticket != NULL ? bmapd_limits_ticket_ref (req->ticket) : NULL;
  if (req->call != NULL) {
    sd_bus *bus = bmapd_manager_get_bus (req->manager);
    int r = sd_bus_track_new (bus, &req->track, on_caller_gone, req);

    if (r >= 0)
      r = sd_bus_track_add_sender (req->track, req->call);
    if (r < 0) {
      bmap_error_set_errno (&error, -r, "following the caller of the %s call", method_name (req));
      request_work_free (work);
      bmapd_request_fail (req, error);
      return;
    }
  }
  req->worker = bmapd_fd_worker_start (
      bmapd_manager_get_event (req->manager),
      req->operation == BMAPD_JOB_FLASH ? "reading the bmap and the image" : "checking the files",
      config->request_timeout_sec, request_work_run, work, (GDestroyNotify) request_work_free,
      on_work_done, req, &error);
  if (req->worker == NULL)
    bmapd_request_fail (req, error);
}

/* ---- parsing the calls ---- */

static gboolean
read_fd_option (sd_bus_message *m, const char *key, const char *what, BmapdFdMode mode, int *out,
                GError **error)
{
  int fd = -1;

  if (!bmapd_bus_read_basic (m, key, 'h', &fd, error))
    return FALSE;
  if (*out >= 0)
    close (*out);
  *out = bmapd_fd_dup (fd, what, mode, error);
  return *out >= 0;
}

static gboolean
read_flash_flag (sd_bus_message *m, const char *key, BmapdFlashFlags flag, BmapdRequest *req,
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
  BmapdRequest *req = user_data;

  if (g_str_equal (key, "bmap"))
    return read_fd_option (m, key, "bmap", BMAPD_FD_READ, &req->bmap_fd, error);
  if (g_str_equal (key, "bmap-signature"))
    return read_fd_option (m, key, "bmap-signature", BMAPD_FD_READ, &req->sig_fd, error);
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
  if (g_str_equal (key, "eject"))
    return read_flash_flag (m, key, BMAPD_FLASH_EJECT, req, error);
  if (g_str_equal (key, "power-off"))
    return read_flash_flag (m, key, BMAPD_FLASH_POWER_OFF, req, error);
  if (g_str_equal (key, "unmount"))
    return bmapd_bus_read_bool (m, key, &req->unmount, error);
  if (g_str_equal (key, "bind-to-caller"))
    return bmapd_bus_read_bool (m, key, &req->bind_to_caller, error);
  if (g_str_equal (key, "description"))
    return bmapd_bus_read_string (m, key, &req->description, error);
  if (g_str_equal (key, BMAPD_POLKIT_OPTION_NO_USER_INTERACTION))
    return bmapd_bus_read_bool (m, key, &req->no_user_interaction, error);
  if (g_str_equal (key, "diskseq")) {
    req->has_diskseq = TRUE;
    return bmapd_bus_read_basic (m, key, 't', &req->diskseq, error);
  }
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
               "unknown Flash option \"%s\" (known: bmap, bmap-signature, nobmap, verify, "
               "verify-written, minimize-writes, discard, zero-unmapped, relocate-gpt, eject, "
               "power-off, diskseq, unmount, bind-to-caller, description, no-user-interaction)",
               key);
  return FALSE;
}

static gboolean
parse_create_option (sd_bus_message *m, const char *key, gpointer user_data, GError **error)
{
  BmapdRequest *req = user_data;

  if (g_str_equal (key, "description"))
    return bmapd_bus_read_string (m, key, &req->description, error);
  if (g_str_equal (key, BMAPD_POLKIT_OPTION_NO_USER_INTERACTION))
    return bmapd_bus_read_bool (m, key, &req->no_user_interaction, error);
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
               "unknown Create option \"%s\" (known: checksum, description, "
               "no-user-interaction)",
               key);
  return FALSE;
}

/* The caller's place among its calls in flight, and whether a job could be
 * made for it at all. */
static gboolean
request_take_place (BmapdRequest *req, GError **error)
{
  BmapdLimits *limits = bmapd_manager_get_limits (req->manager);

  if (!bmapd_manager_check_accepting (req->manager, error)
      || !bmapd_limits_check (limits, BMAPD_LIMIT_JOBS, req->uid, error))
    return FALSE;
  req->ticket = bmapd_limits_take (limits, BMAPD_LIMIT_REQUESTS, req->uid, error);
  return req->ticket != NULL;
}

static gboolean check_flash_options (BmapdRequest *req, GError **error);

static gboolean
parse_flash (BmapdRequest *req, sd_bus_message *m, GError **error)
{
  const char *device_path = NULL;
  int image_fd = -1;
  int r;

  r = sd_bus_message_read (m, "oh", &device_path, &image_fd);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "cannot parse the Flash call");
    return FALSE;
  }
  if (!bmapd_bus_get_caller_uid (m, &req->uid, error) || !request_take_place (req, error)
      || !bmapd_bus_read_dict (m, parse_flash_option, req, error))
    return FALSE;
  if (req->description == NULL)
    req->description = g_strdup ("");
  req->device_name = bmapd_device_name_from_path (device_path);
  if (req->device_name == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s is not a device object (expected " BMAPD_DEVICE_PATH_PREFIX "/NAME)",
                 device_path);
    return FALSE;
  }
  req->image_fd = bmapd_fd_dup (image_fd, "image", BMAPD_FD_READ, error);
  if (req->image_fd < 0 || !check_flash_options (req, error))
    return FALSE;
  /* A device that is not there needs no reading of the files. */
  if (bmapd_device_registry_lookup (bmapd_manager_get_registry (req->manager), req->device_name)
          == NULL
      || bmapd_manager_get_device_path (req->manager, req->device_name) == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "/dev/%s is gone", req->device_name);
    return FALSE;
  }
  return TRUE;
}

/* The options of Flash and FlashMany that go together, or not. */
static gboolean
check_flash_options (BmapdRequest *req, GError **error)
{
  if (req->bmap_fd >= 0 && req->nobmap) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "both \"bmap\" and \"nobmap\" were given; pass one of them");
    return FALSE;
  }
  if (req->nobmap && (req->flash_flags & (BMAPD_FLASH_DISCARD | BMAPD_FLASH_ZERO_UNMAPPED))) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "\"%s\" needs a bmap (the ranges it does not map), and \"nobmap\" was given",
                 req->flash_flags & BMAPD_FLASH_DISCARD ? "discard" : "zero-unmapped");
    return FALSE;
  }
  if (req->bmap_fd < 0 && !req->nobmap) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NO_BMAP,
                 "no bmap was given: pass \"bmap\" (a file descriptor), or \"nobmap\" to copy "
                 "every block of the image");
    return FALSE;
  }
  if (req->sig_fd >= 0 && req->bmap_fd < 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "\"bmap-signature\" was given without a bmap; it signs the bmap");
    return FALSE;
  }
  return TRUE;
}

void
bmapd_request_handle_flash (BmapdManager *manager, sd_bus_message *m)
{
  BmapdRequest *req = request_new (manager, BMAPD_JOB_FLASH, m);
  g_autoptr (GError) error = NULL;

  if (!parse_flash (req, m, &error)) {
    bmapd_request_fail (req, error);
    return;
  }
  request_start_reading (req);
}

static gboolean
parse_create (BmapdRequest *req, sd_bus_message *m, GError **error)
{
  int image_fd = -1, out_fd = -1;
  int r;

  r = sd_bus_message_read (m, "hh", &image_fd, &out_fd);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "cannot parse the Create call");
    return FALSE;
  }
  if (!bmapd_bus_get_caller_uid (m, &req->uid, error) || !request_take_place (req, error)
      || !bmapd_bus_read_dict (m, parse_create_option, req, error))
    return FALSE;
  if (req->description == NULL)
    req->description = g_strdup ("");
  req->image_fd = bmapd_fd_dup (image_fd, "image", BMAPD_FD_READ, error);
  if (req->image_fd < 0)
    return FALSE;
  req->out_fd = bmapd_fd_dup (out_fd, "bmap_out", BMAPD_FD_WRITE, error);
  return req->out_fd >= 0;
}

void
bmapd_request_handle_create (BmapdManager *manager, sd_bus_message *m)
{
  BmapdRequest *req = request_new (manager, BMAPD_JOB_CREATE, m);
  g_autoptr (GError) error = NULL;

  if (!parse_create (req, m, &error)) {
    bmapd_request_fail (req, error);
    return;
  }
  request_start_reading (req);
}

/* ---- FlashMany ---- */

static const BmapdDeviceInfo *
many_snapshot (BmapdRequest *req, guint idx)
{
  return idx == req->current ? req->snapshot : req->many[idx].snapshot;
}

/* One polkit check for the set: flash-system when any device is a system
 * disk; "device" and "devices" list every device node. */
static void
ask_polkit_many (BmapdRequest *req)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) details = g_ptr_array_new ();
  g_autoptr (GString) nodes = g_string_new (NULL);
  g_autoptr (GString) disks = g_string_new (NULL);
  gboolean system = FALSE, removable = TRUE;

  for (guint i = 0; i < req->n_many; i++) {
    const BmapdDeviceInfo *info = many_snapshot (req, i);

    g_string_append_printf (nodes, "%s%s", i > 0 ? " " : "", info->node);
    /* A partition's disk, as Flash's "disk" detail. */
    g_string_append_printf (disks, "%s%s", i > 0 ? " " : "",
                            info->parent_node != NULL ? info->parent_node : info->node);
    system = system || info->system;
    removable = removable && info->removable;
  }
  g_ptr_array_add (details, (gpointer) "device");
  g_ptr_array_add (details, nodes->str);
  g_ptr_array_add (details, (gpointer) "devices");
  g_ptr_array_add (details, nodes->str);
  g_ptr_array_add (details, (gpointer) "disk");
  g_ptr_array_add (details, disks->str);
  g_ptr_array_add (details, (gpointer) "drive.removable");
  g_ptr_array_add (details, (gpointer) (removable ? "true" : "false"));
  add_option_details (req, details);
  add_signature_details (req, details);
  g_ptr_array_add (details, NULL);
  req->asked_flash_system = system;
  req->check = bmapd_polkit_check_new (bmapd_manager_get_bus (req->manager), req->call, req->uid,
                                       system ? BMAPD_ACTION_FLASH_SYSTEM : BMAPD_ACTION_FLASH,
                                       (const char *const *) details->pdata,
                                       req->no_user_interaction, on_authorized, req, &error);
  if (req->check == NULL)
    bmapd_request_fail (req, error);
}

/* Every device passes the Flash path's checks before polkit is asked, or
 * the call is refused naming the first that does not. */
static void
request_many_check_devices (BmapdRequest *req)
{
  for (guint i = 0; i < req->n_many; i++) {
    g_autoptr (GError) error = NULL;

    request_select_device (req, i);
    if (!request_check_device (req, &error)) {
      bmapd_request_fail (req, error);
      return;
    }
  }
  ask_polkit_many (req);
}

/* Every device is opened and holds its job: the jobs become one set, the
 * call is answered with them, and each is queued (the set starts once all
 * of its cards have a place under MaxJobs). */
static void
request_many_queue (BmapdRequest *req)
{
  BmapdManager *manager = req->manager;
  g_autofree BmapdJob **jobs = g_new0 (BmapdJob *, req->n_many);
  g_autoptr (sd_bus_message) reply = NULL;
  guint64 bytes_total = req->map != NULL ? bmap_map_get_mapped_bytes (req->map) : req->image_size;
  guint n = req->n_many;
  int r;

  request_store_device (req); /* every device in its place */
  for (guint i = 0; i < n; i++) {
    ManyDevice *device = &req->many[i];

    jobs[i] = g_steal_pointer (&device->job);
    bmapd_job_set_abort_func (jobs[i], NULL, NULL);
    bmapd_job_set_flash (jobs[i], i == 0 ? g_steal_pointer (&req->source) : NULL,
                         i == 0 ? g_steal_pointer (&req->map) : NULL,
                         g_steal_pointer (&device->target), device->opened_diskseq, req->verify,
                         req->verify_written, bytes_total);
    bmapd_job_set_flash_flags (jobs[i], req->flash_flags);
  }
  bmapd_job_group_flash (jobs, n);
  r = sd_bus_message_new_method_return (req->call, &reply);
  if (r >= 0)
    r = sd_bus_message_open_container (reply, 'a', "o");
  for (guint i = 0; r >= 0 && i < n; i++)
    r = sd_bus_message_append (reply, "o", bmapd_job_get_path (jobs[i]));
  if (r >= 0)
    r = sd_bus_message_close_container (reply);
  if (r >= 0)
    r = sd_bus_send (NULL, reply, NULL);
  if (r < 0)
    bmapd_log (LOG_WARNING, "FlashMany reply: %s", g_strerror (-r));
  bmapd_manager_remove_request (manager, req);
  for (guint i = 0; i < n; i++)
    bmapd_manager_queue_job (manager, jobs[i]);
}

static void
request_many_device_opened (BmapdRequest *req, BmapTarget *target, guint64 diskseq)
{
  ManyDevice *device = &req->many[req->current];

  device->target = target;
  device->opened_diskseq = diskseq;
  if (req->current + 1 < req->n_many) {
    request_select_device (req, req->current + 1);
    request_flash_authorized (req);
    return;
  }
  request_many_queue (req);
}

static gboolean
parse_flash_many_option (sd_bus_message *m, const char *key, gpointer user_data, GError **error)
{
  BmapdRequest *req = user_data;
  const guint64 *seqs = NULL;
  size_t size = 0;
  int r;

  if (g_str_equal (key, "diskseq")) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "FlashMany option \"diskseq\": a diskseq names one medium; pass \"diskseqs\" "
                 "(at), one for each device in the order of the devices");
    return FALSE;
  }
  if (!g_str_equal (key, "diskseqs"))
    return parse_flash_option (m, key, user_data, error);
  r = sd_bus_message_enter_container (m, 'v', "at");
  if (r >= 0)
    r = sd_bus_message_read_array (m, 't', (const void **) &seqs, &size);
  if (r >= 0)
    r = sd_bus_message_exit_container (m);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "option \"diskseqs\": expected an array of t (at)");
    return FALSE;
  }
  if (size / sizeof (guint64) != req->n_many) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "option \"diskseqs\" has %zu values for %u devices: pass one for each device, "
                 "in the order of the devices",
                 size / sizeof (guint64), req->n_many);
    return FALSE;
  }
  for (guint i = 0; i < req->n_many; i++) {
    req->many[i].has_diskseq = TRUE;
    req->many[i].diskseq = seqs[i];
  }
  return TRUE;
}

static gboolean
parse_flash_many (BmapdRequest *req, sd_bus_message *m, GError **error)
{
  BmapdManager *manager = req->manager;
  const BmapdConfig *config = bmapd_manager_get_config (manager);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *device_path = NULL;
  int image_fd = -1;
  int r;

  r = sd_bus_message_enter_container (m, 'a', "o");
  while (r > 0) {
    r = sd_bus_message_read (m, "o", &device_path);
    if (r > 0)
      g_ptr_array_add (names, bmapd_device_name_from_path (device_path));
    if (r > 0 && g_ptr_array_index (names, names->len - 1) == NULL) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s is not a device object (expected " BMAPD_DEVICE_PATH_PREFIX "/NAME)",
                   device_path);
      return FALSE;
    }
  }
  if (r >= 0)
    r = sd_bus_message_exit_container (m);
  if (r >= 0)
    r = sd_bus_message_read (m, "h", &image_fd);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "cannot parse the FlashMany call");
    return FALSE;
  }
  if (names->len == 0 || names->len > MAX_FLASH_MANY_DEVICES) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "FlashMany was given %u devices: it writes 1 to %u", names->len,
                 MAX_FLASH_MANY_DEVICES);
    return FALSE;
  }
  /* A set waits in the queue until all of its cards have a place: one
   * larger than MaxJobs would wait for ever. */
  if (names->len > config->max_jobs) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT,
                 "FlashMany was given %u devices, more than MaxJobs=%u jobs can run at once",
                 names->len, config->max_jobs);
    return FALSE;
  }
  req->n_many = names->len;
  req->many = g_new0 (ManyDevice, req->n_many);
  for (guint i = 0; i < names->len; i++) {
    const char *name = g_ptr_array_index (names, i);

    for (guint j = 0; j < i; j++) {
      if (g_str_equal (name, req->many[j].name)) {
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                     "/dev/%s is given twice; each device can be written once", name);
        return FALSE;
      }
    }
    /* A device that is not there needs no reading of the files. */
    if (bmapd_device_registry_lookup (bmapd_manager_get_registry (manager), name) == NULL
        || bmapd_manager_get_device_path (manager, name) == NULL) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_GONE, "/dev/%s is gone", name);
      return FALSE;
    }
    req->many[i].name = g_strdup (name);
  }
  if (!bmapd_bus_get_caller_uid (m, &req->uid, error) || !request_take_place (req, error)
      || !bmapd_bus_read_dict (m, parse_flash_many_option, req, error))
    return FALSE;
  /* The first device is the one the Flash path's functions see. */
  req->device_name = g_steal_pointer (&req->many[0].name);
  req->has_diskseq = req->many[0].has_diskseq;
  req->diskseq = req->many[0].diskseq;
  req->current = 0;
  if (req->description == NULL)
    req->description = g_strdup ("");
  req->image_fd = bmapd_fd_dup (image_fd, "image", BMAPD_FD_READ, error);
  return req->image_fd >= 0 && check_flash_options (req, error);
}

void
bmapd_request_handle_flash_many (BmapdManager *manager, sd_bus_message *m)
{
  BmapdRequest *req = request_new (manager, BMAPD_JOB_FLASH, m);
  g_autoptr (GError) error = NULL;

  if (!parse_flash_many (req, m, &error)) {
    bmapd_request_fail (req, error);
    return;
  }
  request_start_reading (req);
}

/* ---- auto-flash cards ---- */

static int
on_card_start (sd_event_source *source, void *user_data)
{
  BmapdRequest *req = user_data;
  g_autoptr (GError) error = NULL;

  req->defer_source = sd_event_source_disable_unref (req->defer_source);
  if (!bmapd_manager_check_accepting (req->manager, &error)) {
    bmapd_request_fail (req, error);
    return 0;
  }
  request_start_reading (req);
  return 0;
}

void
bmapd_request_start_card (BmapdManager *manager, const BmapdCardFlash *card,
                          BmapdRequestCardFunc func, gpointer user_data)
{
  BmapdRequest *req = request_new (manager, BMAPD_JOB_FLASH, NULL);
  int r;

  req->card_func = func;
  req->card_data = user_data;
  req->card_hold = card->hold;
  req->uid = card->uid;
  req->device_name = g_strdup (card->device_name);
  req->card_image = card->image;
  req->map = card->map;
  req->verify = card->verify;
  req->verify_written = card->verify_written;
  req->flash_flags = card->flash_flags;
  req->has_diskseq = TRUE;
  req->diskseq = card->diskseq;
  req->description = g_strdup (card->description != NULL ? card->description : "");
  /* From the loop, so that @func never runs before we return. */
  r = sd_event_add_defer (bmapd_manager_get_event (manager), &req->defer_source, on_card_start,
                          req);
  if (r < 0) {
    g_autoptr (GError) error = NULL;
    bmap_error_set_errno (&error, -r, "cannot schedule the card's job");
    request_start_reading (req); /* no other way to report it than to go on */
  }
}
