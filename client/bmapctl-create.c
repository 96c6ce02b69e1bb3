/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmapctl-bmaptool.h"
#include "bmapctl-bus.h"
#include "bmapctl-commands.h"
#include "bmapctl-follow.h"
#include "bmapctl-json.h"
#include "bmapctl-progress.h"
#include "libbmap.h"

static void
on_progress (const BmapProgress *p, gpointer user_data)
{
  BmapctlProgress *progress = user_data;
  const char *state = p->phase == BMAP_PHASE_WRITING ? "hashing" : bmap_phase_to_string (p->phase);

  bmapctl_progress_update (progress, state, p->bytes_done, p->bytes_total, p->rate);
}

/* Writes the bmap to @path: a regular file is replaced atomically, so a
 * failed run never leaves half a bmap behind; anything else (a pipe,
 * /dev/stdout) is written in place. */
static gboolean
write_output (const char *path, const char *xml, gsize len, GError **error)
{
  struct stat st;
  g_autoptr (GError) local_error = NULL;
  int fd;
  gboolean ok;

  if (path == NULL) {
    if (fwrite (xml, 1, len, stdout) != len || fflush (stdout) != 0) {
      bmap_error_set_errno (error, errno, "cannot write the bmap to standard output");
      return FALSE;
    }
    return TRUE;
  }
  if (stat (path, &st) < 0 || S_ISREG (st.st_mode)) {
    if (!g_file_set_contents_full (path, xml, (gssize) len, G_FILE_SET_CONTENTS_CONSISTENT, 0666,
                                   &local_error)) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s", local_error->message);
      return FALSE;
    }
    return TRUE;
  }
  fd = open (path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    bmap_error_set_errno (error, errno, "%s: cannot open for writing", path);
    return FALSE;
  }
  ok = TRUE;
  for (gsize done = 0; ok && done < len;) {
    ssize_t n = write (fd, xml + done, len - done);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      bmap_error_set_errno (error, n < 0 ? errno : EIO, "%s: cannot write the bmap", path);
      ok = FALSE;
    } else {
      done += (gsize) n;
    }
  }
  close (fd);
  return ok;
}

static gboolean
same_path (const char *a, const char *b)
{
  struct stat sa, sb;

  return stat (a, &sa) == 0 && stat (b, &sb) == 0 && sa.st_dev == sb.st_dev
         && sa.st_ino == sb.st_ino;
}

/* Create through bmapd's Create method: the image and the output are
 * opened here and passed as descriptors. A regular output file is written
 * under a temporary name and renamed once the job is done. */
static int
create_through_daemon (BmapctlOptions *options, const char *image, const char *output,
                       BmapChecksumType checksum)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus) bus = NULL;
  g_autoptr (sd_bus_message) call = NULL;
  g_autoptr (BmapctlFollower) follower = NULL;
  g_autofree char *tmp = NULL;
  g_autofree char *description = g_path_get_basename (image);
  int image_fd, out_fd = STDOUT_FILENO;
  GPid agent;
  int status, r;

  image_fd = open (image, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (image_fd < 0) {
    bmap_error_set_errno (&error, errno, "%s", image);
    return bmapctl_report_error (options, error);
  }
  if (output != NULL) {
    tmp = g_strdup_printf ("%s.XXXXXX", output);
    out_fd = g_mkstemp_full (tmp, O_WRONLY | O_CLOEXEC, 0644);
    if (out_fd < 0) {
      bmap_error_set_errno (&error, errno, "%s: cannot create", output);
      close (image_fd);
      return bmapctl_report_error (options, error);
    }
  }

  bus = bmapctl_bus_open (&error);
  if (bus != NULL)
    follower = bmapctl_follower_new (bus, options, &error);
  r = 0;
  if (follower != NULL) {
    r = sd_bus_message_new_method_call (bus, &call, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                                        BMAPD_MANAGER_IFACE, "Create");
    if (r >= 0)
      r = sd_bus_message_append (call, "hh", image_fd, out_fd);
    if (r >= 0)
      r = sd_bus_message_open_container (call, SD_BUS_TYPE_ARRAY, "{sv}");
    if (r >= 0)
      r = sd_bus_message_append (call, "{sv}{sv}", "checksum", "s",
                                 bmap_checksum_type_to_string (checksum), "description", "s",
                                 description);
    if (r >= 0)
      r = bmapctl_bus_append_no_user_interaction (call, options);
    if (r >= 0)
      r = sd_bus_message_close_container (call);
  }
  close (image_fd);
  if (out_fd != STDOUT_FILENO)
    close (out_fd);
  if (follower == NULL || r < 0) {
    if (error == NULL)
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_IO, "cannot build the Create call: %s",
                   g_strerror (-r));
    if (tmp != NULL)
      unlink (tmp);
    return bmapctl_report_error (options, error);
  }

  agent = bmapctl_polkit_agent_open (options);
  status = bmapctl_follower_run (follower, call, image, NULL);
  bmapctl_polkit_agent_close (agent);
  if (tmp != NULL) {
    if (status == BMAPCTL_EXIT_OK && rename (tmp, output) < 0) {
      bmap_error_set_errno (&error, errno, "%s: cannot rename %s to it", output, tmp);
      status = bmapctl_report_error (options, error);
    }
    if (status != BMAPCTL_EXIT_OK)
      unlink (tmp);
  }
  return status;
}

int
bmapctl_create (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv)
{
  g_autofree char *output = NULL;
  g_autofree char *mapping = NULL;
  g_autofree char *checksum = NULL;
  gboolean no_checksum = FALSE;
  gboolean daemon = FALSE;
  const GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
      "Write the bmap to FILE (default: standard output)", "FILE" },
    { "no-checksum", 0, 0, G_OPTION_ARG_NONE, &no_checksum, "Do not checksum the mapped ranges",
      NULL },
    { "checksum", 0, 0, G_OPTION_ARG_STRING, &checksum,
      "Checksum type: sha256 (default), sha512 or sha1", "TYPE" },
    { "mapping", 0, 0, G_OPTION_ARG_STRING, &mapping,
      "How holes are found: auto (default: fiemap, then seek, then zero-scan), fiemap, seek or "
      "zero-scan (all-zero blocks are holes)",
      "METHOD" },
    { "daemon", 0, 0, G_OPTION_ARG_NONE, &daemon,
      "Let bmapd create the bmap (its Create method) instead of this process", NULL },
    { NULL },
  };
  g_autoptr (GError) error = NULL;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (BmapctlProgress) progress = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autofree char *xml = NULL;
  BmapCreateOptions create_options;
  BmapMappingMethod used;
  const char *image;
  gsize len = 0;
  int fd;

  if (!bmapctl_parse (options, command, entries,
                      "Maps the image's data blocks and checksums them, as bmaptool create does.",
                      &argc, &argv))
    return BMAPCTL_EXIT_USAGE;
  if (argc != 2)
    return bmapctl_usage_error (command, argc < 2 ? "missing IMAGE" : "too many arguments");
  image = argv[1];

  bmap_create_options_init (&create_options);
  if (no_checksum && checksum != NULL)
    return bmapctl_usage_error (command, "--no-checksum and --checksum exclude each other");
  if (no_checksum)
    create_options.checksum = BMAP_CHECKSUM_NONE;
  if (checksum != NULL
      && (!bmap_checksum_type_from_string (checksum, &create_options.checksum)
          || create_options.checksum == BMAP_CHECKSUM_NONE))
    return bmapctl_usage_error (command, "unknown checksum type '%s' (sha256, sha512, sha1)",
                                checksum);
  if (mapping != NULL && !bmap_mapping_method_from_string (mapping, &create_options.mapping))
    return bmapctl_usage_error (
        command, "unknown mapping method '%s' (auto, fiemap, seek, zero-scan)", mapping);
  if (output != NULL && same_path (output, image))
    return bmapctl_usage_error (command, "the output %s is the image itself", output);

  if (daemon && options->local)
    return bmapctl_usage_error (command, "--daemon and --local exclude each other");
  if (daemon && mapping != NULL)
    return bmapctl_usage_error (command, "--mapping is not available with --daemon");
  if (daemon)
    return create_through_daemon (options, image, output, create_options.checksum);

  fd = open (image, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    bmap_error_set_errno (&error, errno, "%s", image);
    return bmapctl_report_error (options, error);
  }

  bmapctl_cancel_on_signals (cancellable);
  progress = bmapctl_progress_new (options);
  create_options.cancellable = cancellable;
  create_options.progress_func = on_progress;
  create_options.progress_data = progress;
  map = bmap_create (fd, image, &create_options, &used, &error);
  close (fd);
  bmapctl_progress_clear (progress);
  if (map == NULL)
    return bmapctl_report_error (options, error);
  g_debug ("%s: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " blocks mapped in %u ranges (%s)",
           image, map->mapped_blocks_count, map->blocks_count, bmap_map_get_n_ranges (map),
           bmap_mapping_method_to_string (used));

  if (map->mapped_blocks_count == map->blocks_count && bmapctl_is_bmaptool ()) {
    g_autofree char *size = bmapctl_bmaptool_human_size ((double) map->image_size);

    bmapctl_warning ("all %s are mapped, no holes in '%s'", size, image);
    bmapctl_warning ("was the image handled incorrectly and holes were expanded?");
  } else if (map->mapped_blocks_count == map->blocks_count && !options->quiet) {
    bmapctl_warning ("all %" G_GUINT64_FORMAT " blocks of %s are mapped: it has no holes, so a "
                     "bmap saves nothing (were they lost when it was copied?)",
                     map->blocks_count, image);
  }

  xml = bmap_map_to_xml (map, &len);
  if (!write_output (output, xml, len, &error))
    return bmapctl_report_error (options, error);

  if (options->json) {
    g_autoptr (GString) json = g_string_new ("{\"result\":\"done\",\"image\":");

    bmapctl_json_append_string (json, image);
    g_string_append_printf (
        json,
        ",\"image_size\":%" G_GUINT64_FORMAT ",\"block_size\":%u"
        ",\"blocks\":%" G_GUINT64_FORMAT ",\"mapped_blocks\":%" G_GUINT64_FORMAT ",\"mapping\":",
        map->image_size, map->block_size, map->blocks_count, map->mapped_blocks_count);
    bmapctl_json_append_string (json, bmap_mapping_method_to_string (used));
    g_string_append (json, "}\n");
    /* With no -o the bmap itself went to stdout; the result goes to stderr
     * then, so the bmap stays well-formed. */
    fputs (json->str, output != NULL ? stdout : stderr);
  }
  return BMAPCTL_EXIT_OK;
}
