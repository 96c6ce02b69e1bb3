/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: the bmap parser. Whatever it accepts must write back
 * (bmap_map_to_xml) into a bmap that it accepts again and that says the
 * same thing. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bmap-error.h"
#include "bmap-format.h"
#include "fuzz-common.h"

/* Mutations break the bmap's own checksum, and the parser then stops before
 * it looks at anything else. So for inputs of even length, the stored file
 * checksum is put right (as the parser computes it: the first occurrence of
 * the stored digits, zeroed); odd lengths keep the mutated one. */
static void
fix_file_checksum (char *xml, gsize len)
{
  static const char *const tags[] = { "<BmapFileChecksum>", "<BmapFileSHA1>" };

  if (len == 0)
    return;

  for (gsize t = 0; t < G_N_ELEMENTS (tags); t++) {
    const char *open = memmem (xml, len, tags[t], strlen (tags[t]));
    const char *p, *end, *pos;
    BmapChecksumType type;
    guint8 digest[BMAP_CHECKSUM_MAX_LEN];
    char hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];
    gsize hex_len;

    if (open == NULL)
      continue;
    p = open + strlen (tags[t]);
    end = xml + len;
    while (p < end && g_ascii_isspace (*p))
      p++;
    hex_len = 0;
    while (p + hex_len < end && g_ascii_isxdigit (p[hex_len]))
      hex_len++;
    if (hex_len == 40)
      type = BMAP_CHECKSUM_SHA1;
    else if (hex_len == 64)
      type = BMAP_CHECKSUM_SHA256;
    else if (hex_len == 128)
      type = BMAP_CHECKSUM_SHA512;
    else
      continue;
    pos = memmem (xml, len, p, hex_len);
    memset ((char *) pos, '0', hex_len);
    bmap_checksum_compute (type, xml, len, digest);
    bmap_checksum_to_hex (digest, hex_len / 2, hex);
    memcpy ((char *) pos, hex, hex_len);
    return;
  }
}

static void
check_same (const BmapMap *a, const BmapMap *b)
{
  gsize digest_len = bmap_checksum_type_get_length (a->range_checksum);

  if (a->image_size != b->image_size || a->block_size != b->block_size
      || a->blocks_count != b->blocks_count || a->mapped_blocks_count != b->mapped_blocks_count)
    fuzz_die ("the written bmap has other sizes or counts", NULL);
  if (a->range_checksum != BMAP_CHECKSUM_NONE && a->range_checksum != b->range_checksum)
    fuzz_die ("the written bmap has another range checksum type", NULL);
  if (bmap_map_get_n_ranges (a) != bmap_map_get_n_ranges (b))
    fuzz_die ("the written bmap has another number of ranges", NULL);
  for (guint i = 0; i < bmap_map_get_n_ranges (a); i++) {
    const BmapRange *ra = bmap_map_get_range (a, i);
    const BmapRange *rb = bmap_map_get_range (b, i);

    if (ra->first != rb->first || ra->last != rb->last)
      fuzz_die ("the written bmap has another range", NULL);
    if (memcmp (ra->digest, rb->digest, digest_len) != 0)
      fuzz_die ("the written bmap has another range checksum", NULL);
  }
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GError) error2 = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autoptr (BmapMap) map2 = NULL;
  g_autofree char *copy = g_memdup2 (data, size);
  g_autofree char *xml = NULL;
  gsize len = 0;

  if (size % 2 == 0)
    fix_file_checksum (copy, size);
  map = bmap_map_load_data (copy, size, "fuzz.bmap", &error);
  if (map == NULL) {
    if (error == NULL || error->domain != BMAP_ERROR || error->message == NULL)
      fuzz_die ("bmap_map_load_data() failed without a BmapError", NULL);
    return 0;
  }
  if (error != NULL)
    fuzz_die ("bmap_map_load_data() succeeded and set an error", error->message);

  xml = bmap_map_to_xml (map, &len);
  map2 = bmap_map_load_data (xml, len, "rewritten.bmap", &error2);
  if (map2 == NULL) {
    fprintf (stderr, "%.*s\n", (int) MIN (len, 4096), xml);
    fuzz_die ("the written bmap does not load", error2->message);
  }
  check_same (map, map2);
  return 0;
}
