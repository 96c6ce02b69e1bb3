/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmapctl-bmaptool.h"
#include "bmapctl-bus.h"
#include "bmapctl-commands.h"
#include "bmapctl-write-args.h"
#include "bmapctl-copy-many.h"
#include "bmapctl-flash-call.h"
#include "bmapctl-follow.h"
#include "bmapctl-json.h"
#include "bmapctl-progress.h"
#include "bmapctl-signature.h"
#include "bmapctl-summary.h"
#include "bmapctl-target.h"
#include "bmapctl-url.h"
#include "libbmap.h"

typedef struct {
  BmapctlWriteArgs write;
  gboolean eject;
  gboolean power_off;
  gboolean removable_device;
  gboolean unmount;
  gboolean detach;
  gboolean daemon;
  char *psplash_pipe;
} CopyArgs;

static void
copy_args_clear (CopyArgs *args)
{
  bmapctl_write_args_clear (&args->write);
  g_free (args->psplash_pipe);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (CopyArgs, copy_args_clear)

static void
on_progress (const BmapProgress *p, gpointer user_data)
{
  bmapctl_progress_set_io (user_data, p->bytes_checked, p->bytes_written);
  if (p->phase == BMAP_PHASE_WRITING)
    bmapctl_progress_set_written (user_data, p->bytes_done, p->bytes_total);
  /* The whole copy's bytes, as bmapd's jobs show them: one bar through
   * writing, syncing and verifying. */
  bmapctl_progress_update (user_data, bmap_phase_to_string (p->phase), p->job_done, p->job_total,
                           p->rate);
}

/* @notes: what the options beyond the copy did (minimize-writes, discard,
 * ...), or NULL. */
void
bmapctl_copy_print_result (BmapctlOptions *options, const char *image, const char *dest,
                           const BmapCopyResult *result, const char *notes, gint64 elapsed_us)
{
  double seconds = (double) elapsed_us / G_USEC_PER_SEC;

  if (options->json) {
    g_autoptr (GString) json = g_string_new ("{\"result\":\"done\",\"image\":");

    /* As it always was: "from standard input" for -. */
    bmapctl_json_append_string (json, g_str_equal (image, "-") ? "from standard input" : image);
    bmapctl_json_append_member (json, "destination", dest);
    g_string_append_printf (
        json,
        ",\"image_size\":%" G_GUINT64_FORMAT ",\"bytes_written\":%" G_GUINT64_FORMAT
        ",\"blocks_written\":%" G_GUINT64_FORMAT
        ",\"verified\":%s,\"verified_written\":%s,\"seconds\":%.3f",
        result->image_size, result->bytes_written, result->blocks_written,
        result->verified ? "true" : "false", result->verified_written ? "true" : "false", seconds);
    if (result->bytes_checked > 0)
      g_string_append_printf (
          json, ",\"bytes_checked\":%" G_GUINT64_FORMAT ",\"bytes_skipped\":%" G_GUINT64_FORMAT,
          result->bytes_checked, result->bytes_skipped);
    if (notes != NULL && *notes != '\0')
      bmapctl_json_append_member (json, "notes", notes);
    g_string_append (json, "}\n");
    fputs (json->str, stdout);
  } else if (!options->quiet && !bmapctl_is_bmaptool ()) {
    g_autofree char *written = bmapctl_format_size (result->bytes_written);
    g_autofree char *size = bmapctl_format_size (result->image_size);
    g_autofree char *rate = bmapctl_format_size (
        seconds > 0 ? (guint64) ((double) result->bytes_written / seconds) : 0);

    gboolean from_stdin = g_str_equal (image, "-");
    g_autofree char *of_image
        = result->image_size > 0
              ? g_strdup_printf (from_stdin ? "of the %s image from standard input"
                                            : "of the %s image %s",
                                 size, image)
              : g_strdup_printf ("from %s", from_stdin ? "standard input" : image);

    fprintf (stderr, "bmapctl: wrote %s %s to %s in %.1f s (%s/s)%s%s%s%s\n", written, of_image,
             dest, seconds, rate, result->verified ? "; checksums verified" : "",
             result->verified_written ? "; read back and verified" : "",
             notes != NULL && *notes != '\0' ? "; " : "", notes != NULL ? notes : "");
  }
}

static BmapctlFlashOptions
flash_options (const CopyArgs *args)
{
  BmapctlFlashOptions flash = bmapctl_write_args_flash (&args->write);

  if (args->eject)
    flash.eject_flags |= BMAP_EJECT_FLAG_EJECT;
  if (args->power_off)
    flash.eject_flags |= BMAP_EJECT_FLAG_POWER_OFF;
  return flash;
}

/* bmapctl-url's hook: the signature of a bmap it fetched is checked as a
 * local one's, and what was verified is kept for bmapd. */
typedef struct {
  BmapctlOptions *options;
  BmapctlSignatureArgs sig_args;
  gboolean discovered; /* no --bmap: say where the bmap was found */
  GBytes *bmap;
  GBytes *signature;
} UrlCheck;

static void
url_check_clear (UrlCheck *check)
{
  g_clear_pointer (&check->bmap, g_bytes_unref);
  g_clear_pointer (&check->signature, g_bytes_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (UrlCheck, url_check_clear)

static GBytes *
check_url_bmap (GBytes *bmap, const char *location, const char *name, GCancellable *stop,
                gpointer user_data, GError **error)
{
  UrlCheck *check = user_data;

  /* Before the signature's lines, as for a local bmap. */
  if (check->discovered)
    bmapctl_info (check->options, "discovered bmap file '%s'", name);
  g_clear_pointer (&check->signature, g_bytes_unref);
  g_clear_pointer (&check->bmap, g_bytes_unref);
  check->bmap = bmapctl_signature_verify_bmap (check->options, &check->sig_args, bmap, location,
                                               name, stop, &check->signature, error);
  return check->bmap != NULL ? g_bytes_ref (check->bmap) : NULL;
}

static int
build_flash_call (sd_bus *bus, sd_bus_message **call, const BmapctlOptions *options,
                  const BmapctlDevice *device, const BmapctlFlashFds *fds, const CopyArgs *args,
                  const char *description)
{
  BmapctlFlashOptions flash = flash_options (args);
  int r = sd_bus_message_new_method_call (bus, call, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                                          BMAPD_MANAGER_IFACE, "Flash");

  if (r >= 0)
    r = sd_bus_message_append (*call, "oh", device->path, fds->image);
  if (r >= 0)
    r = sd_bus_message_open_container (*call, SD_BUS_TYPE_ARRAY, "{sv}");
  /* diskseq: the medium written is the one the user saw listed. */
  if (r >= 0)
    r = sd_bus_message_append (*call, "{sv}{sv}{sv}", "diskseq", "t", device->diskseq, "unmount",
                               "b", args->unmount, "bind-to-caller", "b", !args->detach);
  if (r >= 0)
    r = bmapctl_flash_call_append_options (*call, options, &flash, fds, description);
  if (r >= 0)
    r = sd_bus_message_close_container (*call);
  return r;
}

/* The bmap to use: --bmap, or the one found next to the image, which is
 * named in one line as bmaptool does. NULL with @error set. */
static char *
find_bmap (const BmapctlOptions *options, const CopyArgs *args, const char *image, GError **error)
{
  g_autofree char *path = bmapctl_find_bmap (args->write.bmap, image, error);

  if (path != NULL && args->write.bmap == NULL)
    bmapctl_info (options, "discovered bmap file '%s'", path);
  return g_steal_pointer (&path);
}

/* The image and bmap are opened here, with the user's own rights, and only
 * their descriptors go to bmapd, which never sees a path. */
static int
copy_through_daemon (BmapctlOptions *options, CopyArgs *args, const char *image,
                     const BmapctlTarget *target, sd_bus *bus, GPtrArray *devices)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus_message) call = NULL;
  g_autoptr (BmapctlFollower) follower = NULL;
  g_autoptr (BmapctlJob) job = NULL;
  g_autoptr (BmapctlUrlSource) remote = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autofree char *bmap_path = NULL;
  g_autoptr (GBytes) bmap_bytes = NULL;
  g_autoptr (GBytes) signature = NULL;
  BmapctlSignatureArgs sig_args = bmapctl_write_args_signature (&args->write);
  g_auto (UrlCheck) check = { options, sig_args, args->write.bmap == NULL, NULL, NULL };
  g_autofree char *description = NULL;
  const char *dest = target->path;
  BmapctlDevice *device;
  g_auto (BmapctlFlashFds) fds = BMAPCTL_FLASH_FDS_INIT;
  gint64 start;
  GPid agent;
  int status, r;

  device = bmapctl_find_device (devices, dest);
  if (device == NULL) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: bmapd does not offer this device (see 'bmapctl devices --all')", dest);
    return bmapctl_report_error (options, error);
  }
  if (args->removable_device && !device->removable) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: not a removable device, and --removable-device was given", dest);
    return bmapctl_report_error (options, error);
  }

  /* What is about to be erased, in one line before anything is asked or
   * written; never a question, so scripts do not hang. */
  if (!bmapctl_is_bmaptool ()) {
    g_autofree char *summary = bmapctl_device_summary (bus, device);

    bmapctl_info (options, "erasing %s", summary);
  }

  if (bmapctl_url_is_url (image) || bmapctl_url_is_url (args->write.bmap)) {
    /* bmapctl fetches, bmapd reads a pipe: the daemon never goes online. */
    remote = bmapctl_url_source_open (image, args->write.bmap, args->write.nobmap, check_url_bmap,
                                      &check, NULL, &error);
    if (remote != NULL)
      image = bmapctl_url_source_get_name (remote); /* without its password */
    if (remote != NULL && args->detach && bmapctl_url_source_needs_client (remote))
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: --detach cannot be used: bmapctl downloads the image itself, so it "
                   "stays until the end",
                   image);
    if (error != NULL)
      return bmapctl_report_error (options, error);
    bmap_bytes = check.bmap != NULL ? g_bytes_ref (check.bmap) : NULL;
    signature = check.signature != NULL ? g_bytes_ref (check.signature) : NULL;
  } else if (!args->write.nobmap) {
    bmap_path = find_bmap (options, args, image, &error);
    if (bmap_path == NULL)
      return bmapctl_report_error (options, error);
    /* Its signature is checked here; bmapd gets the bytes verified. */
    bmap_bytes = bmapctl_signature_load_bmap (options, &sig_args, bmap_path, &signature, &error);
    if (bmap_bytes == NULL)
      return bmapctl_report_error (options, error);
    /* bmapd parses the bmap again, but its errors could not name the file,
     * and bmaptool's lines need what it says. */
    map = bmap_map_load_data (g_bytes_get_data (bmap_bytes, NULL), g_bytes_get_size (bmap_bytes),
                              bmap_path, &error);
    if (map == NULL)
      return bmapctl_report_error (options, error);
  }

  if (remote != NULL) {
    fds.image = bmapctl_url_source_steal_image_fd (remote);
    description = g_strdup (bmapctl_url_source_get_description (remote));
    if (!args->write.nobmap)
      map = bmapctl_url_source_steal_map (remote);
  } else if (!bmapctl_flash_fds_open_image (&fds, image, &description, &error)) {
    return bmapctl_report_error (options, error);
  }
  /* The bytes verified here, for a bmap from a URL too. */
  if (bmap_bytes != NULL && !bmapctl_flash_fds_open_bmap (&fds, bmap_bytes, signature, &error))
    return bmapctl_report_error (options, error);

  /* The matches go in before the call, so no signal of the job is missed. */
  follower = bmapctl_follower_new (bus, options, &error);
  r = follower != NULL ? build_flash_call (bus, &call, options, device, &fds, args, description)
                       : 0;
  bmapctl_flash_fds_clear (&fds);
  if (follower == NULL)
    return bmapctl_report_error (options, error);
  if (r < 0) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_IO, "cannot build the Flash call: %s",
                 g_strerror (-r));
    return bmapctl_report_error (options, error);
  }
  bmapctl_follower_set_detach (follower, args->detach);

  bmapctl_bmaptool_copy_begin (
      options, map, remote != NULL ? bmapctl_url_source_get_bmap_name (remote) : bmap_path, image,
      target->arg, TRUE);
  agent = bmapctl_polkit_agent_open (options);
  start = g_get_monotonic_time ();
  status = bmapctl_follower_run (follower, call, device->node, &job);
  bmapctl_polkit_agent_close (agent);
  /* A broken download only shows in bmapd as a short stream. */
  if (remote != NULL && status != BMAPCTL_EXIT_CANCELED
      && !bmapctl_url_source_check (remote, &error))
    status = bmapctl_report_error (options, error);

  if (status == BMAPCTL_EXIT_OK && job != NULL && !args->detach) {
    BmapCopyResult result = { 0 };
    gint64 elapsed = g_get_monotonic_time () - start;

    /* BytesDone covers the whole job (writing, syncing, verifying);
     * BytesWritten is what reached the device. */
    result.bytes_written = job->bytes_written;
    result.image_size = 0; /* the job reports what it wrote, not the image's size */
    result.verified = !args->write.no_verify && !args->write.nobmap;
    result.verified_written = args->write.verify_written;
    if (args->write.minimize_writes) {
      result.bytes_checked = job->bytes_checked;
      result.bytes_skipped = job->bytes_checked - MIN (job->bytes_checked, job->bytes_written);
    }
    bmapctl_bmaptool_copy_end (options, target->arg,
                               map != NULL ? map->mapped_blocks_count * map->block_size
                                           : job->bytes_written,
                               (double) elapsed / G_USEC_PER_SEC);
    bmapctl_copy_print_result (options, image, dest, &result, job->result, elapsed);
  }
  return status;
}

static void
close_target (gpointer user_data)
{
  BmapTarget **target = user_data;

  g_clear_pointer (target, bmap_target_free);
}

/* --eject and --power-off in-process, as bmapd does them: what was done,
 * in words for the result line. Without root the USB device's remove
 * attribute cannot be written: the words say so. */
char *
bmapctl_copy_eject_local (BmapEjectFlags flags, const BmapctlTarget *bt, BmapTarget **target)
{
  g_autoptr (BmapEjectPlan) plan = bmap_eject_plan_new ("/sys", bt->devnum, bt->path);

  return bmap_eject_run (plan, flags, bmap_target_get_fd (*target), close_target, target);
}

static int
copy_local (BmapctlOptions *options, CopyArgs *args, const char *image, const BmapctlTarget *bt)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (BmapctlUrlSource) remote = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autoptr (BmapTarget) target = NULL;
  g_autoptr (BmapctlProgress) progress = NULL;
  g_autofree char *bmap_path = NULL;
  g_auto (UrlCheck) check = { options, bmapctl_write_args_signature (&args->write),
                              args->write.bmap == NULL, NULL, NULL };
  const char *dest = bt->path;
  g_autofree char *notes = NULL;
  BmapctlFlashOptions flash = flash_options (args);
  BmapCopyOptions copy_options = { 0 };
  BmapCopyResult result = { 0 };
  struct stat st_image, st_bmap;
  gint64 start, elapsed;
  gboolean ok;

  if (bmapctl_url_is_url (image) || bmapctl_url_is_url (args->write.bmap)) {
    /* Before the download's thread starts: Ctrl-C cancels it too. */
    bmapctl_cancel_on_signals (cancellable);
    remote = bmapctl_url_source_open (image, args->write.bmap, args->write.nobmap, check_url_bmap,
                                      &check, cancellable, &error);
    if (remote == NULL)
      return bmapctl_report_error (options, error);
    image = bmapctl_url_source_get_name (remote); /* without its password */
    source = bmap_source_new_full (bmapctl_url_source_steal_image_fd (remote), TRUE, image,
                                   cancellable, &error);
    map = bmapctl_url_source_steal_map (remote);
  } else if (g_str_equal (image, "-")) {
    source = bmap_source_new (STDIN_FILENO, FALSE, "standard input", &error);
  } else {
    source = bmap_source_new_for_path (image, &error);
  }
  if (source == NULL)
    return bmapctl_report_error (options, error);

  if (!args->write.nobmap && remote == NULL) {
    bmap_path = find_bmap (options, args, image, &error);
    if (bmap_path == NULL)
      return bmapctl_report_error (options, error);

    if (fstat (bmap_source_get_fd (source), &st_image) == 0 && stat (bmap_path, &st_bmap) == 0
        && st_image.st_dev == st_bmap.st_dev && st_image.st_ino == st_bmap.st_ino) {
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: the bmap is the image itself", bmap_path);
      return bmapctl_report_error (options, error);
    }
    BmapctlSignatureArgs sig_args = bmapctl_write_args_signature (&args->write);

    map = bmapctl_signature_load_map (options, &sig_args, bmap_path, &error);
    if (map == NULL)
      return bmapctl_report_error (options, error);
    g_debug ("using bmap %s (version %u.%u, %u ranges)", bmap_path, map->version_major,
             map->version_minor, bmap_map_get_n_ranges (map));
  }

  if (args->removable_device && !bmapctl_target_check_removable (bt, &error))
    return bmapctl_report_error (options, error);
  /* Probably left by an earlier mistake; bmaptool warns here too. */
  if (bt->kind == BMAPCTL_TARGET_FILE && bt->under_dev)
    bmapctl_warning ("\"%s\" is under \"/dev\", but it is a regular file, not a device node",
                     bt->arg);
  target = bmap_target_open (dest, &error);
  if (target == NULL)
    return bmapctl_report_error (options, error);
  if (bt->kind == BMAPCTL_TARGET_BLOCK_DEVICE && !bt->partition && !bmapctl_is_bmaptool ()) {
    g_autofree char *summary = bmapctl_disk_summary (dest, bt->devnum);

    if (summary != NULL)
      bmapctl_info (options, "erasing %s", summary);
  }

  bmapctl_bmaptool_copy_begin (
      options, map, remote != NULL ? bmapctl_url_source_get_bmap_name (remote) : bmap_path, image,
      bt->arg, bt->kind == BMAPCTL_TARGET_BLOCK_DEVICE);
  if (remote == NULL)
    bmapctl_cancel_on_signals (cancellable);
  progress = bmapctl_progress_new (options);
  copy_options.map = map;
  bmapctl_flash_options_to_copy (&flash, &copy_options);
  copy_options.progress_func = on_progress;
  copy_options.progress_data = progress;
  copy_options.cancellable = cancellable;

  start = g_get_monotonic_time ();
  ok = bmap_copy (source, target, &copy_options, &result, &error);
  if (remote != NULL && !g_error_matches (error, BMAP_ERROR, BMAP_ERROR_CANCELLED)) {
    g_autoptr (GError) url_error = NULL;

    /* A broken download ends the stream early; its own error says why. */
    g_clear_pointer (&source, bmap_source_free);
    if (!bmapctl_url_source_check (remote, &url_error)) {
      g_clear_error (&error);
      error = g_steal_pointer (&url_error);
      ok = FALSE;
    }
  }
  if (!ok) {
    bmapctl_progress_clear (progress);
    if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_CANCELLED)) {
      g_clear_error (&error);
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_CANCELLED,
                   "%s: copy canceled; it may hold a partial image", dest);
    }
    return bmapctl_report_error (options, error);
  }
  elapsed = g_get_monotonic_time () - start;
  bmapctl_progress_clear (progress);
  bmapctl_bmaptool_copy_end (options, bt->arg,
                             map != NULL ? map->mapped_blocks_count * map->block_size
                                         : result.image_size,
                             (double) elapsed / G_USEC_PER_SEC);
  notes = bmap_copy_result_describe (&result);
  if (flash.eject_flags != 0) {
    g_autofree char *after = bmapctl_copy_eject_local (flash.eject_flags, bt, &target);
    g_autofree char *all
        = g_strjoin (notes != NULL ? "; " : "", notes != NULL ? notes : "", after, NULL);

    g_free (notes);
    notes = g_steal_pointer (&all);
  }
  bmapctl_copy_print_result (options, image, dest, &result, notes, elapsed);
  return BMAPCTL_EXIT_OK;
}

/* A whole disk or a partition goes through bmapd unless --local. When
 * neither the bus nor bmapd can be reached and the caller may write the
 * device itself, it is written in-process, as bmaptool would: board farms
 * call bmaptool on hosts without bmapd. A partition bmapd does not offer
 * (of a disk it does not offer) is written in-process too, unless
 * --daemon. */
static int
copy_to_block_device (BmapctlOptions *options, CopyArgs *args, const char *image,
                      const BmapctlTarget *target)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) devices = NULL;
  g_autoptr (sd_bus) bus = NULL;
  gboolean unreachable = FALSE;

  /* As bmapd refuses it: in-process would move a backup GPT to the end of
   * the partition, where no disk looks for it. */
  if (target->partition && args->write.relocate_gpt) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: --relocate-gpt cannot be used on a partition: a GPT's backup belongs at "
                 "the end of the whole disk",
                 target->path);
    return bmapctl_report_error (options, error);
  }
  if (options->local)
    return copy_local (options, args, image, target);

  bus = bmapctl_bus_open_bmapd (&devices, &unreachable, &error);
  if (bus != NULL && target->partition && !args->daemon && !args->detach && !args->unmount
      && bmapctl_find_device (devices, target->path) == NULL) {
    bmapctl_info (options, "bmapd does not offer %s: writing it in-process", target->path);
    return copy_local (options, args, image, target);
  }
  if (bus != NULL)
    return copy_through_daemon (options, args, image, target, bus, devices);

  if (unreachable && !args->daemon && !args->detach && !args->unmount
      && bmapctl_target_writable_by_caller (target)) {
    bmapctl_info (options, "bmapd cannot be reached (%s): writing %s in-process", error->message,
                  target->path);
    return copy_local (options, args, image, target);
  }
  if (unreachable && !args->daemon) {
    g_autofree char *msg = g_strdup_printf (
        "%s\n(%s)", error->message,
        args->detach || args->unmount
            ? "--detach and --unmount need bmapd"
            : "bmapctl writes a device in-process without bmapd only when you may write to it "
              "yourself");

    g_free (error->message);
    error->message = g_steal_pointer (&msg);
  }
  return bmapctl_report_error (options, error);
}

/* Several destinations: one read of the image for all of them (see
 * bmapctl-copy-many.h). Through bmapd when every destination is a whole
 * disk (and not --local), in-process otherwise, or when bmapd cannot be
 * reached and every destination may be written by the caller. */
static int
copy_many (const BmapctlCommand *command, BmapctlOptions *options, CopyArgs *args,
           const char *image, char **dests, guint n_dests)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) devices = NULL;
  g_autoptr (sd_bus) bus = NULL;
  g_autoptr (GArray) array = g_array_sized_new (FALSE, TRUE, sizeof (BmapctlTarget), n_dests);
  BmapctlTarget *targets;
  g_autofree char *bmap_path = NULL;
  g_autoptr (GBytes) bmap_bytes = NULL;
  g_autoptr (GBytes) signature = NULL;
  g_autoptr (BmapMap) map = NULL;
  BmapctlSignatureArgs sig_args = bmapctl_write_args_signature (&args->write);
  BmapctlCopyMany spec = { 0 };
  gboolean all_disks = TRUE, writable = TRUE, unreachable = FALSE;

  if (n_dests > BMAP_COPY_MAX_TARGETS)
    return bmapctl_usage_error (command, "%u destinations: at most %u", n_dests,
                                BMAP_COPY_MAX_TARGETS);
  if (args->detach || bmapctl_url_is_url (image) || bmapctl_url_is_url (args->write.bmap))
    return bmapctl_usage_error (command, "%s cannot be used with several destinations",
                                args->detach ? "--detach" : "a URL");
  g_array_set_size (array, n_dests);
  g_array_set_clear_func (array, (GDestroyNotify) bmapctl_target_clear);
  targets = (BmapctlTarget *) (gpointer) array->data;
  for (guint i = 0; i < n_dests; i++) {
    if (!bmapctl_target_resolve (dests[i], &targets[i], &error))
      return bmapctl_report_error (options, error);
    for (guint j = 0; j < i; j++) {
      if (g_str_equal (targets[i].path, targets[j].path)
          || (targets[i].kind == BMAPCTL_TARGET_BLOCK_DEVICE
              && targets[j].kind == BMAPCTL_TARGET_BLOCK_DEVICE
              && targets[i].devnum == targets[j].devnum))
        return bmapctl_usage_error (command, "%s is given twice", dests[i]);
    }
    all_disks
        = all_disks && targets[i].kind == BMAPCTL_TARGET_BLOCK_DEVICE && !targets[i].partition;
    writable = writable && bmapctl_target_writable_by_caller (&targets[i]);
    if (args->removable_device && !bmapctl_target_check_removable (&targets[i], &error))
      return bmapctl_report_error (options, error);
    if ((args->eject || args->power_off) && targets[i].kind != BMAPCTL_TARGET_BLOCK_DEVICE)
      return bmapctl_usage_error (command, "%s needs block devices: %s is not one",
                                  args->eject ? "--eject" : "--power-off", dests[i]);
  }
  if (all_disks && !options->local) {
    bus = bmapctl_bus_open_bmapd (&devices, &unreachable, &error);
    if (bus == NULL && !(unreachable && !args->daemon && !args->unmount && writable))
      return bmapctl_report_error (options, error);
    if (bus == NULL) {
      bmapctl_info (options, "bmapd cannot be reached (%s): writing in-process", error->message);
      g_clear_error (&error);
    }
  } else if (args->daemon || args->unmount) {
    return bmapctl_usage_error (
        command, "%s works only through bmapd, when every destination is a whole disk",
        args->daemon ? "--daemon" : "--unmount");
  }

  if (!args->write.nobmap) {
    bmap_path = find_bmap (options, args, image, &error);
    if (bmap_path != NULL && bus != NULL) {
      bmap_bytes = bmapctl_signature_load_bmap (options, &sig_args, bmap_path, &signature, &error);
    } else if (bmap_path != NULL) {
      map = bmapctl_signature_load_map (options, &sig_args, bmap_path, &error);
    }
    if (error != NULL)
      return bmapctl_report_error (options, error);
  }
  spec.map = map;
  spec.bmap_bytes = bmap_bytes;
  spec.signature = signature;
  spec.flash = flash_options (args);
  spec.unmount = args->unmount;
  if (bus != NULL)
    return bmapctl_copy_many_daemon (options, &spec, image, targets, n_dests, bus, devices);
  return bmapctl_copy_many_local (options, &spec, image, targets, n_dests);
}

int
bmapctl_copy (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv)
{
  g_auto (CopyArgs) args = { 0 };
  const GOptionEntry entries[] = {
    BMAPCTL_WRITE_ARGS_BMAP_ENTRIES (&args.write),
    { "verify-written", 0, 0, G_OPTION_ARG_NONE, &args.write.verify_written,
      "Read the written blocks back, bypassing the page cache, and check them", NULL },
    { "minimize-writes", 0, 0, G_OPTION_ARG_NONE, &args.write.minimize_writes,
      "Read DEST first and write only the blocks that differ (resumes an interrupted flash)",
      NULL },
    { "discard", 0, 0, G_OPTION_ARG_NONE, &args.write.discard,
      "After writing, discard the ranges the bmap does not map, where the device can", NULL },
    { "zero-unmapped", 0, 0, G_OPTION_ARG_NONE, &args.write.zero_unmapped,
      "After writing, make the ranges the bmap does not map read back as zeros", NULL },
    { "relocate-gpt", 0, 0, G_OPTION_ARG_NONE, &args.write.relocate_gpt,
      "After writing, move a GPT's backup header and table to the end of a larger device", NULL },
    { "eject", 0, 0, G_OPTION_ARG_NONE, &args.eject,
      "After the last step, eject the medium so that it can be pulled out", NULL },
    { "power-off", 0, 0, G_OPTION_ARG_NONE, &args.power_off,
      "After the last step, power off the USB device so that it can be pulled out", NULL },
    { "removable-device", 0, 0, G_OPTION_ARG_NONE, &args.removable_device,
      "Refuse to write unless DEST is a removable block device", NULL },
    { "unmount", 0, 0, G_OPTION_ARG_NONE, &args.unmount,
      "Unmount the device's mounted partitions first (through bmapd)", NULL },
    { "detach", 0, 0, G_OPTION_ARG_NONE, &args.detach,
      "Start the job in bmapd and return at once; it goes on without bmapctl", NULL },
    { "daemon", 0, 0, G_OPTION_ARG_NONE, &args.daemon,
      "Write a block device through bmapd only, never in-process", NULL },
    BMAPCTL_WRITE_ARGS_SIGNATURE_ENTRIES (&args.write),
    { "psplash-pipe", 0, 0, G_OPTION_ARG_FILENAME, &args.psplash_pipe,
      "Also write the progress to this psplash FIFO (PROGRESS N)", "FIFO" },
    { NULL },
  };
  g_autoptr (GError) error = NULL;
  g_auto (BmapctlTarget) target = { 0 };

  if (!bmapctl_parse (options, command, entries,
                      "IMAGE may be compressed (gzip, xz, bzip2, zstd, lz4, lzo), a tar archive "
                      "(plain or\ncompressed) or a zip archive, found from its first bytes; "
                      "the image is an archive's\nfirst file. IMAGE may be - for standard "
                      "input. DEST is a block device node (/dev/sdb),\na device name (sdb), a "
                      "partition, a regular file or /dev/null; a path under /dev must\nexist. A "
                      "disk or a partition is written through bmapd, or in-process when bmapd\n"
                      "cannot be reached (or does not offer it) and you may write to it yourself; "
                      "a file\nin-process. Without --bmap or --nobmap, the bmap is looked for "
                      "next to IMAGE:\nIMAGE.bmap, then with one extension stripped at a time. "
                      "IMAGE and --bmap may be\nURLs (http, https, ftp, ssh, file), fetched by "
                      "bmapctl; see URLS in bmapctl(1).\n\nWith several DESTs, the image is read, "
                      "decoded and checked once and written onto all of them\nat once (through "
                      "bmapd when all are whole disks, in-process otherwise); the slowest\npaces "
                      "the others, one that fails is dropped and the others go on, each is "
                      "verified on\nits own. One progress line shows the slowest; one result line "
                      "for each DEST; the\nexit status is 0 only when every DEST was written.",
                      &argc, &argv))
    return BMAPCTL_EXIT_USAGE;
  if (argc < 3)
    return bmapctl_usage_error (command, argc < 2 ? "missing IMAGE and DEST" : "missing DEST");
  if (argc > 3 && bmapctl_is_bmaptool ())
    return bmapctl_usage_error (command, "too many arguments");
  if (args.write.bmap != NULL && args.write.nobmap) {
    /* bmaptool checks this after parsing, and exits 1. */
    bmapctl_printerr ("--nobmap and --bmap cannot be used together");
    return BMAPCTL_EXIT_FAILED;
  }
  if (args.write.nobmap && args.write.verify_written)
    return bmapctl_usage_error (command, "--verify-written needs a bmap (it has the checksums)");
  if (args.daemon && options->local)
    return bmapctl_usage_error (command, "--daemon and --local exclude each other");
  if (args.write.nobmap && (args.write.discard || args.write.zero_unmapped))
    return bmapctl_usage_error (command, "%s needs a bmap (the ranges it does not map)",
                                args.write.discard ? "--discard" : "--zero-unmapped");
  {
    BmapctlSignatureArgs sig_args = bmapctl_write_args_signature (&args.write);
    const char *conflict = bmapctl_signature_check_args (&sig_args, args.write.nobmap);

    if (conflict != NULL)
      return bmapctl_usage_error (command, "%s", conflict);
  }
  options->psplash_pipe = args.psplash_pipe;
  if (argc > 3)
    return copy_many (command, options, &args, argv[1], argv + 2, (guint) argc - 2);

  if (!bmapctl_target_resolve (argv[2], &target, &error))
    return bmapctl_report_error (options, error);

  if (target.kind == BMAPCTL_TARGET_BLOCK_DEVICE)
    return copy_to_block_device (options, &args, argv[1], &target);
  if (args.detach || args.unmount || args.daemon)
    return bmapctl_usage_error (command, "%s works only through bmapd, onto a block device",
                                args.detach    ? "--detach"
                                : args.unmount ? "--unmount"
                                               : "--daemon");
  if (args.eject || args.power_off)
    return bmapctl_usage_error (command, "%s needs a block device as DEST",
                                args.eject ? "--eject" : "--power-off");
  if (args.removable_device && !bmapctl_target_check_removable (&target, &error))
    return bmapctl_report_error (options, error);
  return copy_local (options, &args, argv[1], &target);
}
