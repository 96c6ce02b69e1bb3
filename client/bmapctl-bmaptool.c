/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <math.h>

#include "bmapctl-bmaptool.h"

/* src/bmaptool/CLI.py, parse_arguments(). */
static const char *const global_options[] = { "help", "version", "quiet", "debug", NULL };
static const char *const create_options[] = { "help", "output", "no-checksum", NULL };
static const char *const copy_options[]
    = { "help",    "bmap",        "nobmap",    "bmap-sig",     "no-sig-verify",
        "keyring", "fingerprint", "no-verify", "psplash-pipe", "removable-device",
        NULL };

const char *const *
bmapctl_bmaptool_global_options (void)
{
  return global_options;
}

const char *const *
bmapctl_bmaptool_command_options (const char *command)
{
  if (g_str_equal (command, "create"))
    return create_options;
  if (g_str_equal (command, "copy") || g_str_equal (command, "flash"))
    return copy_options;
  return NULL;
}

char *
bmapctl_bmaptool_human_size (double size)
{
  static const char *const modifiers[] = { "KiB", "MiB", "GiB", "TiB" };

  if (size == 1)
    return g_strdup ("1 byte");
  if (size < 512)
    return g_strdup_printf ("%d bytes", (int) size);
  for (gsize i = 0; i < G_N_ELEMENTS (modifiers); i++) {
    size /= 1024.0;
    if (size < 1024)
      return g_strdup_printf ("%.1f %s", size, modifiers[i]);
  }
  /* bmaptool skips PiB and calls the TiB count EiB; so do we. */
  return g_strdup_printf ("%.1f EiB", size);
}

char *
bmapctl_bmaptool_human_time (double seconds)
{
  /* Python's divmod() on floats: floored quotient, remainder. */
  double minutes = floor (seconds / 60);
  double hours = floor (minutes / 60);
  GString *result = g_string_new (NULL);

  seconds -= minutes * 60;
  minutes -= hours * 60;
  if (hours != 0)
    g_string_append_printf (result, "%dh ", (int) hours);
  if (minutes != 0)
    g_string_append_printf (result, "%dm ", (int) minutes);
  g_string_append_printf (result, "%.1fs", seconds);
  return g_string_free (result, FALSE);
}

/* os.path.basename(), of a URL's path part. */
static char *
display_basename (const char *path)
{
  g_autoptr (GUri) uri
      = strstr (path, "://") != NULL ? g_uri_parse (path, G_URI_FLAGS_NONE, NULL) : NULL;
  const char *p = uri != NULL ? g_uri_get_path (uri) : path;
  const char *slash = strrchr (p, '/');

  return g_strdup (slash != NULL ? slash + 1 : p);
}

void
bmapctl_bmaptool_copy_begin (const BmapctlOptions *options, const BmapMap *map,
                             const char *bmap_path, const char *image, const char *dest,
                             gboolean dest_is_block_device)
{
  g_autofree char *image_size = NULL;
  g_autofree char *mapped_size = NULL;
  g_autofree char *image_base = NULL;
  g_autofree char *bmap_base = NULL;
  g_autofree char *dest_str = NULL;

  if (!bmapctl_is_bmaptool ())
    return;
  if (map == NULL) {
    bmapctl_info (options, "no bmap given, copy entire image to '%s'", dest);
    return;
  }

  image_size = bmapctl_bmaptool_human_size ((double) map->image_size);
  mapped_size
      = bmapctl_bmaptool_human_size ((double) map->mapped_blocks_count * (double) map->block_size);
  bmapctl_info (options, "block map format version %u.%u", map->version_major, map->version_minor);
  bmapctl_info (
      options,
      "%" G_GUINT64_FORMAT " blocks of size %u (%s), mapped %" G_GUINT64_FORMAT
      " blocks (%s or %.1f%%)",
      map->blocks_count, map->block_size, image_size, map->mapped_blocks_count, mapped_size,
      map->blocks_count > 0 ? (double) map->mapped_blocks_count * 100.0 / (double) map->blocks_count
                            : 100.0);

  image_base = display_basename (image);
  bmap_base = display_basename (bmap_path);
  if (dest_is_block_device) {
    dest_str = g_strdup_printf ("block device '%s'", dest);
  } else {
    g_autofree char *dest_base = g_path_get_basename (dest);

    dest_str = g_strdup_printf ("file '%s'", dest_base);
  }
  bmapctl_info (options, "copying image '%s' to %s using bmap file '%s'", image_base, dest_str,
                bmap_base);
}

void
bmapctl_bmaptool_copy_end (const BmapctlOptions *options, const char *dest, guint64 mapped_size,
                           double seconds)
{
  g_autofree char *time_str = NULL;
  g_autofree char *speed_str = NULL;

  if (!bmapctl_is_bmaptool ())
    return;
  bmapctl_info (options, "synchronizing '%s'", dest);
  time_str = bmapctl_bmaptool_human_time (seconds);
  /* mapped_size // copying_time */
  speed_str = bmapctl_bmaptool_human_size (seconds > 0 ? floor ((double) mapped_size / seconds)
                                                       : (double) mapped_size);
  bmapctl_info (options, "copying time: %s, copying speed %s/sec", time_str, speed_str);
}
