/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "bmapctl-bus.h"
#include "bmapctl-commands.h"
#include "bmapctl-follow.h"
#include "bmapctl-json.h"
#include "bmapctl-progress.h"
#include "bmapctl-url.h"
#include "libbmap.h"

typedef struct {
  char *bmap;
  gboolean nobmap;
  gboolean no_verify;
  gboolean verify_written;
  gboolean removable_device;
  gboolean unmount;
  gboolean detach;
  char *bmap_sig;
  gboolean no_sig_verify;
  char *psplash_pipe;
} CopyArgs;

static void
copy_args_clear (CopyArgs *args)
{
  g_free (args->bmap);
  g_free (args->bmap_sig);
  g_free (args->psplash_pipe);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (CopyArgs, copy_args_clear)

/* DEST may be a device name ("sdb") when no file of that name exists here. */
static char *
resolve_dest (const char *dest)
{
  struct stat st;

  if (strchr (dest, '/') == NULL && lstat (dest, &st) < 0) {
    g_autofree char *node = g_build_filename ("/dev", dest, NULL);

    if (stat (node, &st) == 0 && S_ISBLK (st.st_mode))
      return g_steal_pointer (&node);
  }
  return g_strdup (dest);
}

/* Decided as udisks2 does: the removable attribute, a USB bus, or an SD
 * card on an MMC host (whose removable attribute is 0). */
static gboolean
device_is_removable (dev_t devnum)
{
  g_autofree char *sys = g_strdup_printf ("/sys/dev/block/%u:%u", major (devnum), minor (devnum));
  g_autofree char *real = realpath (sys, NULL);
  g_autofree char *disk = NULL;
  g_autofree char *removable = NULL;
  g_autofree char *type = NULL;
  g_autofree char *partition = NULL;

  if (real == NULL)
    return FALSE;
  partition = g_build_filename (real, "partition", NULL);
  disk = g_file_test (partition, G_FILE_TEST_EXISTS) ? g_path_get_dirname (real) : g_strdup (real);

  if (strstr (disk, "/usb") != NULL)
    return TRUE;
  g_clear_pointer (&partition, g_free);
  partition = g_build_filename (disk, "removable", NULL);
  if (g_file_get_contents (partition, &removable, NULL, NULL) && g_str_has_prefix (removable, "1"))
    return TRUE;
  g_clear_pointer (&partition, g_free);
  partition = g_build_filename (disk, "device", "type", NULL);
  return g_file_get_contents (partition, &type, NULL, NULL) && g_str_has_prefix (type, "SD");
}

static void
on_progress (const BmapProgress *p, gpointer user_data)
{
  bmapctl_progress_update (user_data, bmap_phase_to_string (p->phase), p->bytes_done,
                           p->bytes_total, p->rate);
}

static void
print_result (BmapctlOptions *options, const char *image, const char *dest,
              const BmapCopyResult *result, gint64 elapsed_us)
{
  double seconds = (double) elapsed_us / G_USEC_PER_SEC;

  if (options->json) {
    g_autoptr (GString) json = g_string_new ("{\"result\":\"done\",\"image\":");

    bmapctl_json_append_string (json, image);
    bmapctl_json_append_member (json, "destination", dest);
    g_string_append_printf (
        json,
        ",\"image_size\":%" G_GUINT64_FORMAT ",\"bytes_written\":%" G_GUINT64_FORMAT
        ",\"blocks_written\":%" G_GUINT64_FORMAT
        ",\"verified\":%s,\"verified_written\":%s,\"seconds\":%.3f}\n",
        result->image_size, result->bytes_written, result->blocks_written,
        result->verified ? "true" : "false", result->verified_written ? "true" : "false", seconds);
    fputs (json->str, stdout);
  } else if (!options->quiet) {
    g_autofree char *written = bmapctl_format_size (result->bytes_written);
    g_autofree char *size = bmapctl_format_size (result->image_size);
    g_autofree char *rate = bmapctl_format_size (
        seconds > 0 ? (guint64) ((double) result->bytes_written / seconds) : 0);

    g_autofree char *of_image = result->image_size > 0
                                    ? g_strdup_printf ("of the %s image %s", size, image)
                                    : g_strdup_printf ("from %s", image);

    fprintf (stderr, "bmapctl: wrote %s %s to %s in %.1f s (%s/s)%s%s\n", written, of_image, dest,
             seconds, rate, result->verified ? "; checksums verified" : "",
             result->verified_written ? "; read back and verified" : "");
  }
}

static gboolean
is_block_device (const char *path)
{
  struct stat st;

  return stat (path, &st) == 0 && S_ISBLK (st.st_mode);
}

static int
build_flash_call (sd_bus *bus, sd_bus_message **call, const BmapctlDevice *device, int image_fd,
                  int bmap_fd, const CopyArgs *args, const char *description)
{
  int r = sd_bus_message_new_method_call (bus, call, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                                          BMAPD_MANAGER_IFACE, "Flash");

  if (r >= 0)
    r = sd_bus_message_append (*call, "oh", device->path, image_fd);
  if (r >= 0)
    r = sd_bus_message_open_container (*call, SD_BUS_TYPE_ARRAY, "{sv}");
  if (r >= 0 && bmap_fd >= 0)
    r = sd_bus_message_append (*call, "{sv}", "bmap", "h", bmap_fd);
  if (r >= 0 && args->nobmap)
    r = sd_bus_message_append (*call, "{sv}", "nobmap", "b", 1);
  /* diskseq: the medium written is the one the user saw listed. */
  if (r >= 0)
    r = sd_bus_message_append (*call, "{sv}{sv}{sv}{sv}{sv}{sv}", "verify", "b", !args->no_verify,
                               "verify-written", "b", args->verify_written, "diskseq", "t",
                               device->diskseq, "unmount", "b", args->unmount, "bind-to-caller",
                               "b", !args->detach, "description", "s", description);
  if (r >= 0)
    r = sd_bus_message_close_container (*call);
  return r;
}

/* The image and bmap are opened here, with the user's own rights, and only
 * their descriptors go to bmapd, which never sees a path. */
static int
copy_through_daemon (BmapctlOptions *options, CopyArgs *args, const char *image, const char *dest)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus) bus = NULL;
  g_autoptr (sd_bus_message) call = NULL;
  g_autoptr (GPtrArray) devices = NULL;
  g_autoptr (BmapctlFollower) follower = NULL;
  g_autoptr (BmapctlJob) job = NULL;
  g_autoptr (BmapctlUrlSource) remote = NULL;
  g_autofree char *description = NULL;
  BmapctlDevice *device;
  int image_fd, bmap_fd = -1;
  gint64 start;
  GPid agent;
  int status, r;

  bus = bmapctl_bus_open (&error);
  if (bus == NULL || !bmapctl_get_managed_objects (bus, &devices, NULL, NULL, &error)) {
    /* Without the daemon, root can still write the device in-process. */
    if (g_str_has_prefix (error->message, "bmapd is not running")) {
      g_autofree char *msg = g_strdup_printf ("%s\n(--local writes %s in-process, if you may "
                                              "write to it yourself)",
                                              error->message, dest);

      g_free (error->message);
      error->message = g_steal_pointer (&msg);
    }
    return bmapctl_report_error (options, error);
  }
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

  if (bmapctl_url_is_url (image) || bmapctl_url_is_url (args->bmap)) {
    /* bmapctl fetches, bmapd reads a pipe: the daemon never goes online. */
    remote = bmapctl_url_source_open (image, args->bmap, args->nobmap, NULL, &error);
    if (remote != NULL)
      image = bmapctl_url_source_get_name (remote); /* without its password */
    if (remote != NULL && args->detach && bmapctl_url_source_needs_client (remote))
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: --detach cannot be used: bmapctl downloads the image itself, so it "
                   "stays until the end",
                   image);
    if (error != NULL)
      return bmapctl_report_error (options, error);
    image_fd = bmapctl_url_source_steal_image_fd (remote);
    description = g_strdup (bmapctl_url_source_get_description (remote));
  } else if (g_str_equal (image, "-")) {
    image_fd = STDIN_FILENO;
    description = g_strdup ("standard input");
  } else {
    image_fd = open (image, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (image_fd < 0) {
      bmap_error_set_errno (&error, errno, "%s", image);
      return bmapctl_report_error (options, error);
    }
    description = g_path_get_basename (image);
  }
  if (!args->nobmap) {
    bmap_fd = remote != NULL ? bmapctl_url_source_dup_bmap_fd (remote, &error)
                             : bmapctl_open_bmap (args->bmap, image, &error);
    if (bmap_fd < 0) {
      if (image_fd != STDIN_FILENO)
        close (image_fd);
      return bmapctl_report_error (options, error);
    }
  }

  /* The matches go in before the call, so no signal of the job is missed. */
  follower = bmapctl_follower_new (bus, options, &error);
  r = follower != NULL ? build_flash_call (bus, &call, device, image_fd, bmap_fd, args, description)
                       : 0;
  /* The message holds duplicates of the descriptors. */
  if (image_fd != STDIN_FILENO)
    close (image_fd);
  if (bmap_fd >= 0)
    close (bmap_fd);
  if (follower == NULL)
    return bmapctl_report_error (options, error);
  if (r < 0) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_IO, "cannot build the Flash call: %s",
                 g_strerror (-r));
    return bmapctl_report_error (options, error);
  }
  bmapctl_follower_set_detach (follower, args->detach);

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

    result.bytes_written = job->bytes_done;
    result.image_size = 0; /* the job reports what it wrote, not the image's size */
    result.verified = !args->no_verify && !args->nobmap;
    result.verified_written = args->verify_written;
    print_result (options, g_str_equal (image, "-") ? "from standard input" : image, dest, &result,
                  g_get_monotonic_time () - start);
  }
  return status;
}

static int
copy_local (BmapctlOptions *options, CopyArgs *args, const char *image, const char *dest)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (BmapctlUrlSource) remote = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autoptr (BmapTarget) target = NULL;
  g_autoptr (BmapctlProgress) progress = NULL;
  g_autofree char *bmap_path = NULL;
  BmapCopyOptions copy_options = { 0 };
  BmapCopyResult result = { 0 };
  struct stat st_image, st_bmap;
  gint64 start;
  gboolean ok;

  if (bmapctl_url_is_url (image) || bmapctl_url_is_url (args->bmap)) {
    /* Before the download's thread starts: Ctrl-C cancels it too. */
    bmapctl_cancel_on_signals (cancellable);
    remote = bmapctl_url_source_open (image, args->bmap, args->nobmap, cancellable, &error);
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

  if (!args->nobmap && remote == NULL) {
    bmap_path = bmapctl_find_bmap (args->bmap, image, &error);
    if (bmap_path == NULL)
      return bmapctl_report_error (options, error);

    if (fstat (bmap_source_get_fd (source), &st_image) == 0 && stat (bmap_path, &st_bmap) == 0
        && st_image.st_dev == st_bmap.st_dev && st_image.st_ino == st_bmap.st_ino) {
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: the bmap is the image itself", bmap_path);
      return bmapctl_report_error (options, error);
    }
    map = bmap_map_load_file (bmap_path, &error);
    if (map == NULL)
      return bmapctl_report_error (options, error);
    g_debug ("using bmap %s (version %u.%u, %u ranges)", bmap_path, map->version_major,
             map->version_minor, bmap_map_get_n_ranges (map));
  }

  target = bmap_target_open (dest, &error);
  if (target == NULL)
    return bmapctl_report_error (options, error);

  if (args->removable_device) {
    struct stat st;

    if (bmap_target_get_kind (target) != BMAP_TARGET_BLOCK_DEVICE
        || fstat (bmap_target_get_fd (target), &st) < 0 || !device_is_removable (st.st_rdev)) {
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: not a removable block device, and --removable-device was given", dest);
      return bmapctl_report_error (options, error);
    }
  }

  if (remote == NULL)
    bmapctl_cancel_on_signals (cancellable);
  progress = bmapctl_progress_new (options);
  copy_options.map = map;
  copy_options.verify = !args->no_verify;
  copy_options.verify_written = args->verify_written;
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
  bmapctl_progress_clear (progress);
  print_result (options, g_str_equal (image, "-") ? "from standard input" : image, dest, &result,
                g_get_monotonic_time () - start);
  return BMAPCTL_EXIT_OK;
}

int
bmapctl_copy (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv)
{
  g_auto (CopyArgs) args = { 0 };
  const GOptionEntry entries[] = {
    { "bmap", 0, 0, G_OPTION_ARG_FILENAME, &args.bmap,
      "The bmap of the image (default: found next to the image)", "FILE" },
    { "nobmap", 0, 0, G_OPTION_ARG_NONE, &args.nobmap, "Write every block of the image, no bmap",
      NULL },
    { "no-verify", 0, 0, G_OPTION_ARG_NONE, &args.no_verify,
      "Do not check the bmap's checksums while writing", NULL },
    { "verify-written", 0, 0, G_OPTION_ARG_NONE, &args.verify_written,
      "Read the written blocks back, bypassing the page cache, and check them", NULL },
    { "removable-device", 0, 0, G_OPTION_ARG_NONE, &args.removable_device,
      "Refuse to write unless DEST is a removable block device", NULL },
    { "unmount", 0, 0, G_OPTION_ARG_NONE, &args.unmount,
      "Unmount the device's mounted partitions first (through bmapd)", NULL },
    { "detach", 0, 0, G_OPTION_ARG_NONE, &args.detach,
      "Start the job in bmapd and return at once; it goes on without bmapctl", NULL },
    { "bmap-sig", 0, 0, G_OPTION_ARG_FILENAME, &args.bmap_sig,
      "Not supported: bmap signatures are not checked (see --no-sig-verify)", "FILE" },
    { "no-sig-verify", 0, 0, G_OPTION_ARG_NONE, &args.no_sig_verify,
      "Accepted for bmaptool compatibility: signatures are never checked", NULL },
    { "psplash-pipe", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME, &args.psplash_pipe, NULL,
      NULL },
    { NULL },
  };
  g_autoptr (GError) error = NULL;
  g_autofree char *dest = NULL;

  if (!bmapctl_parse (options, command, entries,
                      "IMAGE may be compressed (gzip, xz, bzip2, zstd, lz4, lzo), a tar archive "
                      "(plain or\ncompressed) or a zip archive, found from its first bytes; "
                      "the image is an archive's\nfirst file. IMAGE may be - for standard "
                      "input. DEST is a regular file, a block\ndevice node (/dev/sdb) or "
                      "a device name (sdb). Without --bmap or --nobmap, the bmap is\nlooked for "
                      "next to IMAGE: IMAGE.bmap, then with one extension stripped at a time.\n"
                      "IMAGE and --bmap may be URLs (http, https, ftp, ssh, file), fetched by "
                      "bmapctl; see URLS\nin bmapctl(1).",
                      &argc, &argv))
    return BMAPCTL_EXIT_USAGE;
  if (argc < 3)
    return bmapctl_usage_error (command, argc < 2 ? "missing IMAGE and DEST" : "missing DEST");
  if (argc > 3)
    return bmapctl_usage_error (command, "too many arguments");
  if (args.bmap != NULL && args.nobmap)
    return bmapctl_usage_error (command, "--bmap and --nobmap exclude each other");
  if (args.nobmap && args.verify_written)
    return bmapctl_usage_error (command, "--verify-written needs a bmap (it has the checksums)");
  if (args.bmap_sig != NULL) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED,
                 "%s: bmap signatures are not supported; check it with gpg --verify and run "
                 "again without --bmap-sig",
                 args.bmap_sig);
    return bmapctl_report_error (options, error);
  }
  if (args.psplash_pipe != NULL)
    g_debug ("--psplash-pipe %s ignored", args.psplash_pipe);

  dest = resolve_dest (argv[2]);
  if (!options->local && is_block_device (dest))
    return copy_through_daemon (options, &args, argv[1], dest);
  if (args.detach || args.unmount)
    return bmapctl_usage_error (command, "%s works only through bmapd, onto a block device",
                                args.detach ? "--detach" : "--unmount");
  return copy_local (options, &args, argv[1], dest);
}
