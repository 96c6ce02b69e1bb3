/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: the auto-flash rule-file parser (its text, not the
 * image and bmap it names, which are opened only by
 * bmapd_autoflash_config_load_file()). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "bmap-error.h"
#include "bmapd-autoflash-config.h"
#include "fuzz-common.h"

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapdAutoFlashSpec) spec = NULL;
  g_autofree char *image_path = NULL;
  g_autofree char *bmap_path = NULL;

  spec = bmapd_autoflash_config_parse_data ((const char *) data, size, "fuzz.conf", &image_path,
                                            &bmap_path, &error);
  if (spec == NULL) {
    if (error == NULL || error->domain != BMAP_ERROR || error->code != BMAP_ERROR_INVALID_ARGUMENT)
      fuzz_die ("parsing failed without an InvalidArgument error",
                error != NULL ? error->message : NULL);
    return 0;
  }
  if (image_path == NULL || !g_path_is_absolute (image_path))
    fuzz_die ("a rule was parsed without an absolute Image=", image_path);
  if (bmap_path != NULL && (!g_path_is_absolute (bmap_path) || spec->nobmap))
    fuzz_die ("a rule was parsed with a relative Bmap= or with NoBmap", bmap_path);
  if (spec->match_variant == NULL || spec->options_variant == NULL || spec->description == NULL
      || !g_utf8_validate (spec->description, -1, NULL))
    fuzz_die ("a parsed rule misses its properties", NULL);
  if (spec->match.has_min_size && spec->match.has_max_size
      && spec->match.min_size > spec->match.max_size)
    fuzz_die ("a parsed rule has MinSize above MaxSize", NULL);
  if (!bmapd_autoflash_spec_check (spec, &error))
    g_clear_error (&error);
  /* What bmapctl and the D-Bus properties show. */
  g_free (g_variant_print (spec->match_variant, TRUE));
  g_free (g_variant_print (spec->options_variant, TRUE));
  return 0;
}
