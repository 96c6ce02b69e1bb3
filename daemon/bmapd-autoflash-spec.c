/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fnmatch.h>

#include "bmapd-autoflash-spec.h"

const BmapdAutoFlashFlag bmapd_autoflash_flags[] = {
  { "minimize-writes", "MinimizeWrites", BMAPD_FLASH_MINIMIZE_WRITES },
  { "discard", "Discard", BMAPD_FLASH_DISCARD },
  { "zero-unmapped", "ZeroUnmapped", BMAPD_FLASH_ZERO_UNMAPPED },
  { "relocate-gpt", "RelocateGPT", BMAPD_FLASH_RELOCATE_GPT },
  { NULL, NULL, 0 },
};

const BmapdAutoFlashFlag *
bmapd_autoflash_flag_lookup (const char *option)
{
  for (const BmapdAutoFlashFlag *f = bmapd_autoflash_flags; f->option != NULL; f++) {
    if (g_str_equal (f->option, option))
      return f;
  }
  return NULL;
}

BmapdAutoFlashSpec *
bmapd_autoflash_spec_new (void)
{
  BmapdAutoFlashSpec *spec = g_new0 (BmapdAutoFlashSpec, 1);

  spec->verify = TRUE;
  return spec;
}

void
bmapd_autoflash_spec_free (BmapdAutoFlashSpec *spec)
{
  if (spec == NULL)
    return;
  g_strfreev (spec->match.bus);
  g_free (spec->match.serial);
  g_free (spec->match.vendor);
  g_free (spec->match.model);
  g_free (spec->match.port);
  g_clear_pointer (&spec->match_variant, g_variant_unref);
  g_clear_pointer (&spec->options_variant, g_variant_unref);
  g_clear_pointer (&spec->image, bmapd_image_free);
  g_clear_pointer (&spec->map, bmap_map_free);
  g_free (spec->description);
  g_free (spec->config_file);
  g_free (spec);
}

gboolean
bmapd_autoflash_spec_check (BmapdAutoFlashSpec *spec, GError **error)
{
  const BmapdAutoFlashMatch *match = &spec->match;

  if (match->has_min_size && match->has_max_size && match->min_size > match->max_size) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "match: min-size %" G_GUINT64_FORMAT " is larger than max-size %" G_GUINT64_FORMAT
                 "; no device can match",
                 match->min_size, match->max_size);
    return FALSE;
  }
  if (spec->nobmap && spec->verify_written) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "verify-written needs a bmap with checksums, and nobmap was given");
    return FALSE;
  }
  if (spec->nobmap && (spec->flash_flags & (BMAPD_FLASH_DISCARD | BMAPD_FLASH_ZERO_UNMAPPED))) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s needs a bmap (the ranges it does not map), and nobmap was given",
                 spec->flash_flags & BMAPD_FLASH_DISCARD ? "discard" : "zero-unmapped");
    return FALSE;
  }
  return TRUE;
}

gboolean
bmapd_autoflash_spec_set_image (BmapdAutoFlashSpec *spec, int image_fd, const char *image_name,
                                BmapMap *map_in, GError **error)
{
  g_autoptr (BmapMap) map = map_in;
  g_autoptr (BmapdImage) image = NULL;

  image = bmapd_image_new (image_fd, image_name, error);
  if (image == NULL)
    return FALSE;
  if (map != NULL) {
    if (bmapd_image_is_seekable (image) && bmapd_image_get_size (image) != map->image_size) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                   "%s is %" G_GUINT64_FORMAT " bytes, but its bmap describes an image of "
                   "%" G_GUINT64_FORMAT " bytes: the bmap does not belong to this image",
                   image_name, bmapd_image_get_size (image), map->image_size);
      return FALSE;
    }
    if (spec->verify_written && map->range_checksum == BMAP_CHECKSUM_NONE) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "verify-written needs a bmap with checksums; this bmap has none");
      return FALSE;
    }
  }
  g_clear_pointer (&spec->image, bmapd_image_free);
  g_clear_pointer (&spec->map, bmap_map_free);
  spec->image = g_steal_pointer (&image);
  spec->map = g_steal_pointer (&map);
  return TRUE;
}

BmapMap *
bmapd_autoflash_spec_copy_map (const BmapdAutoFlashSpec *spec)
{
  BmapMap *copy;

  if (spec->map == NULL)
    return NULL;
  copy = g_memdup2 (spec->map, sizeof (*spec->map));
  copy->ranges = g_array_copy (spec->map->ranges);
  return copy;
}

static gboolean
glob_matches (const char *pattern, const char *value)
{
  return pattern == NULL || fnmatch (pattern, value != NULL ? value : "", 0) == 0;
}

gboolean
bmapd_autoflash_match_admits (const BmapdAutoFlashMatch *match, const BmapdDeviceInfo *info,
                              char **why_not)
{
  /* Whatever the match says: the contract's promises first. */
  if (!info->media_present) {
    *why_not = g_strdup ("no medium");
    return FALSE;
  }
  if (info->system) {
    *why_not = g_strdup ("a system disk, never auto-flashed");
    return FALSE;
  }
  if (info->read_only) {
    *why_not = g_strdup ("write-protected");
    return FALSE;
  }
  if (info->busy) {
    *why_not = g_strdup ("in use (mounted or held by another device)");
    return FALSE;
  }
  if (!info->removable && !match->allow_non_removable) {
    *why_not = g_strdup ("not removable, and the rule does not allow non-removable devices");
    return FALSE;
  }

  if (match->bus != NULL && !g_strv_contains ((const char *const *) match->bus, info->bus)) {
    g_autofree char *list = g_strjoinv (", ", match->bus);
    *why_not = g_strdup_printf ("bus \"%s\" is not one of %s", info->bus, list);
    return FALSE;
  }
  if (!glob_matches (match->serial, info->serial)) {
    *why_not = g_strdup_printf ("serial \"%s\" does not match \"%s\"", info->serial, match->serial);
    return FALSE;
  }
  if (!glob_matches (match->vendor, info->vendor)) {
    *why_not = g_strdup_printf ("vendor \"%s\" does not match \"%s\"", info->vendor, match->vendor);
    return FALSE;
  }
  if (!glob_matches (match->model, info->model)) {
    *why_not = g_strdup_printf ("model \"%s\" does not match \"%s\"", info->model, match->model);
    return FALSE;
  }
  if (!glob_matches (match->port, info->id_path)) {
    *why_not = g_strdup_printf ("port \"%s\" does not match \"%s\"", info->id_path, match->port);
    return FALSE;
  }
  if (match->has_min_size && info->size < match->min_size) {
    *why_not
        = g_strdup_printf ("%" G_GUINT64_FORMAT " bytes, less than min-size %" G_GUINT64_FORMAT,
                           info->size, match->min_size);
    return FALSE;
  }
  if (match->has_max_size && info->size > match->max_size) {
    *why_not
        = g_strdup_printf ("%" G_GUINT64_FORMAT " bytes, more than max-size %" G_GUINT64_FORMAT,
                           info->size, match->max_size);
    return FALSE;
  }
  return TRUE;
}
