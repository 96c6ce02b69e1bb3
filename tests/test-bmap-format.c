/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libxml/xmlerror.h>

#include "bmap-checksum.h"
#include "bmap-error.h"
#include "bmap-format.h"
#include "bmap-test-util.h"

#define COMPAT_DIR "/work/shared/compat"

/* The test image: 11 blocks of 4096, the last one 1000 bytes long. */
#define IMG_BLOCK  4096
#define IMG_BLOCKS 11
#define IMG_SIZE   (10 * IMG_BLOCK + 1000)

static const struct {
  guint64 first;
  guint64 last;
} img_ranges[] = { { 0, 1 }, { 3, 3 }, { 5, 10 } };

static guint8 *
make_image (void)
{
  guint8 *img = g_malloc (IMG_SIZE);

  bmap_test_fill (img, IMG_SIZE, 42);
  return img;
}

static void
range_digest (const guint8 *img, gsize img_size, guint32 bs, guint64 first, guint64 last,
              BmapChecksumType type, guint8 *out)
{
  gsize start = first * bs;
  gsize end = MIN ((last + 1) * bs, img_size);

  bmap_checksum_compute (type, img + start, end - start, out);
}

static char *
range_hex (const guint8 *img, guint64 first, guint64 last, BmapChecksumType type)
{
  guint8 digest[BMAP_CHECKSUM_MAX_LEN];
  char *hex = g_malloc (BMAP_CHECKSUM_MAX_HEX_LEN + 1);

  range_digest (img, IMG_SIZE, IMG_BLOCK, first, last, type, digest);
  bmap_checksum_to_hex (digest, bmap_checksum_type_get_length (type), hex);
  return hex;
}

/* Puts the file checksum in with the zeroing rule: zeros first, hash the
 * whole file, then the digits. */
static void
seal (GString *xml)
{
  static const struct {
    const char *tag;
    gboolean from_type;
  } tags[] = { { "<BmapFileChecksum>", TRUE }, { "<BmapFileSHA1>", FALSE } };

  for (gsize i = 0; i < G_N_ELEMENTS (tags); i++) {
    char *start = strstr (xml->str, tags[i].tag);
    BmapChecksumType type = BMAP_CHECKSUM_SHA1;
    guint8 digest[BMAP_CHECKSUM_MAX_LEN];
    char hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];
    gsize n = 0;

    if (start == NULL)
      continue;
    if (tags[i].from_type) {
      char *t = strstr (xml->str, "<ChecksumType>");
      g_autofree char *name = NULL;

      g_assert_nonnull (t);
      t += strlen ("<ChecksumType>");
      name = g_strstrip (g_strndup (t, strcspn (t, "<")));
      g_assert_true (bmap_checksum_type_from_string (name, &type));
    }
    start += strlen (tags[i].tag);
    while (*start == ' ')
      start++;
    while (g_ascii_isxdigit (start[n]))
      n++;
    g_assert_cmpuint (n, ==, 2 * bmap_checksum_type_get_length (type));
    memset (start, '0', n);
    bmap_checksum_compute (type, xml->str, xml->len, digest);
    bmap_checksum_to_hex (digest, n / 2, hex);
    memcpy (start, hex, n);
  }
}

/* A valid bmap of @version for the test image, in that version's layout. */
static char *
make_bmap (const char *version, BmapChecksumType type)
{
  g_autofree guint8 *img = make_image ();
  g_autoptr (GString) xml = g_string_new ("<?xml version=\"1.0\" ?>\n<!-- test -->\n");
  gboolean v1x = g_str_has_prefix (version, "1.") && strcmp (version, "1.4") != 0;
  const char *attr = NULL;
  guint64 mapped = 0;

  for (gsize i = 0; i < G_N_ELEMENTS (img_ranges); i++)
    mapped += img_ranges[i].last - img_ranges[i].first + 1;

  if (v1x && strcmp (version, "1.0") != 0)
    attr = "sha1";
  else if (!v1x)
    attr = "chksum";
  if (v1x)
    type = attr != NULL ? BMAP_CHECKSUM_SHA1 : BMAP_CHECKSUM_NONE;

  g_string_append_printf (xml, "<bmap version=\"%s\">\n", version);
  g_string_append_printf (xml, "    <ImageSize> %d </ImageSize>\n", IMG_SIZE);
  g_string_append_printf (xml, "    <BlockSize> %d </BlockSize>\n", IMG_BLOCK);
  g_string_append_printf (xml, "    <BlocksCount> %d </BlocksCount>\n", IMG_BLOCKS);
  if (strcmp (version, "1.3") == 0 || !v1x)
    g_string_append_printf (
        xml, "    <MappedBlocksCount> %" G_GUINT64_FORMAT " </MappedBlocksCount>\n", mapped);
  if (!v1x)
    g_string_append_printf (xml, "    <ChecksumType> %s </ChecksumType>\n",
                            bmap_checksum_type_to_string (type));
  if (strcmp (version, "1.3") == 0)
    g_string_append (xml, "    <BmapFileSHA1> 0000000000000000000000000000000000000000 "
                          "</BmapFileSHA1>\n");
  if (!v1x) {
    g_string_append (xml, "    <BmapFileChecksum> ");
    for (gsize i = 0; i < 2 * bmap_checksum_type_get_length (type); i++)
      g_string_append_c (xml, '0');
    g_string_append (xml, " </BmapFileChecksum>\n");
  }
  if (strcmp (version, "2.1") == 0)
    g_string_append (xml, "    <SomethingNew kind=\"future\"> 7 </SomethingNew>\n");
  g_string_append (xml, "    <BlockMap>\n");
  for (gsize i = 0; i < G_N_ELEMENTS (img_ranges); i++) {
    g_string_append (xml, "        <Range");
    if (attr != NULL) {
      g_autofree char *hex = range_hex (img, img_ranges[i].first, img_ranges[i].last, type);

      g_string_append_printf (xml, " %s=\"%s\"", attr, hex);
    }
    if (img_ranges[i].first == img_ranges[i].last)
      g_string_append_printf (xml, "> %" G_GUINT64_FORMAT " </Range>\n", img_ranges[i].first);
    else
      g_string_append_printf (xml, "> %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT " </Range>\n",
                              img_ranges[i].first, img_ranges[i].last);
  }
  g_string_append (xml, "    </BlockMap>\n");
  if (v1x && strcmp (version, "1.3") != 0)
    g_string_append_printf (
        xml, "    <MappedBlocksCount> %" G_GUINT64_FORMAT " </MappedBlocksCount>\n", mapped);
  g_string_append (xml, "</bmap>\n");
  seal (xml);
  return g_string_free (g_steal_pointer (&xml), FALSE);
}

static BmapMap *
load_string (const char *xml, GError **error)
{
  return bmap_map_load_data (xml, strlen (xml), "test.bmap", error);
}

static void
check_image_map (const BmapMap *map, BmapChecksumType type)
{
  g_autofree guint8 *img = make_image ();

  g_assert_cmpuint (map->image_size, ==, IMG_SIZE);
  g_assert_cmpuint (map->block_size, ==, IMG_BLOCK);
  g_assert_cmpuint (map->blocks_count, ==, IMG_BLOCKS);
  g_assert_cmpuint (map->mapped_blocks_count, ==, 9);
  g_assert_cmpint (map->range_checksum, ==, type);
  g_assert_cmpuint (bmap_map_get_n_ranges (map), ==, G_N_ELEMENTS (img_ranges));
  for (guint i = 0; i < bmap_map_get_n_ranges (map); i++) {
    const BmapRange *r = bmap_map_get_range (map, i);
    guint8 digest[BMAP_CHECKSUM_MAX_LEN];

    g_assert_cmpuint (r->first, ==, img_ranges[i].first);
    g_assert_cmpuint (r->last, ==, img_ranges[i].last);
    if (type != BMAP_CHECKSUM_NONE) {
      range_digest (img, IMG_SIZE, IMG_BLOCK, r->first, r->last, type, digest);
      g_assert_cmpmem (r->digest, bmap_checksum_type_get_length (type), digest,
                       bmap_checksum_type_get_length (type));
    }
  }
  /* 0-1, 3 and 5-10 where block 10 holds only 1000 bytes. */
  g_assert_cmpuint (bmap_map_get_mapped_bytes (map), ==, 8 * IMG_BLOCK + 1000);
}

static void
test_versions (void)
{
  static const struct {
    const char *version;
    BmapChecksumType type;
    BmapChecksumType want_range;
    BmapChecksumType want_file;
  } cases[] = {
    { "1.0", BMAP_CHECKSUM_NONE, BMAP_CHECKSUM_NONE, BMAP_CHECKSUM_NONE },
    { "1.1", BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_NONE },
    { "1.2", BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_NONE },
    { "1.3", BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_SHA1 },
    { "1.4", BMAP_CHECKSUM_SHA256, BMAP_CHECKSUM_SHA256, BMAP_CHECKSUM_SHA256 },
    { "2.0", BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_SHA1 },
    { "2.0", BMAP_CHECKSUM_SHA256, BMAP_CHECKSUM_SHA256, BMAP_CHECKSUM_SHA256 },
    { "2.0", BMAP_CHECKSUM_SHA512, BMAP_CHECKSUM_SHA512, BMAP_CHECKSUM_SHA512 },
    { "2.1", BMAP_CHECKSUM_SHA256, BMAP_CHECKSUM_SHA256, BMAP_CHECKSUM_SHA256 },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GError) error = NULL;
    g_autofree char *xml = make_bmap (cases[i].version, cases[i].type);
    g_autoptr (BmapMap) map = load_string (xml, &error);
    g_auto (GStrv) parts = g_strsplit (cases[i].version, ".", 2);

    g_test_message ("version %s, %s", cases[i].version,
                    bmap_checksum_type_to_string (cases[i].type));
    g_assert_no_error (error);
    g_assert_nonnull (map);
    g_assert_cmpuint (map->version_major, ==, (guint) atoi (parts[0]));
    g_assert_cmpuint (map->version_minor, ==, (guint) atoi (parts[1]));
    g_assert_cmpint (map->file_checksum, ==, cases[i].want_file);
    check_image_map (map, cases[i].want_range);
  }
}

/* Ranges without chksum (bmaptool create --no-checksum) in a 2.0 file. */
static void
test_no_range_checksums (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *xml = make_bmap ("2.0", BMAP_CHECKSUM_SHA256);
  g_autoptr (GRegex) re = g_regex_new (" chksum=\"[0-9a-f]*\"", 0, 0, NULL);
  g_autofree char *stripped = g_regex_replace_literal (re, xml, -1, 0, "", 0, NULL);
  g_autoptr (GString) s = g_string_new (stripped);
  g_autoptr (BmapMap) map = NULL;

  seal (s);
  map = load_string (s->str, &error);
  g_assert_no_error (error);
  g_assert_cmpint (map->range_checksum, ==, BMAP_CHECKSUM_NONE);
  g_assert_cmpint (map->file_checksum, ==, BMAP_CHECKSUM_SHA256);
  check_image_map (map, BMAP_CHECKSUM_NONE);
}

static guint
line_of (const char *text, const char *needle)
{
  const char *pos = strstr (text, needle);
  guint line = 1;

  g_assert_nonnull (pos);
  for (const char *p = text; p < pos; p++)
    line += *p == '\n';
  return line;
}

typedef struct {
  const char *version;
  const char *find; /* replaced once in the valid file */
  const char *replace;
  const char *line_of; /* text whose line the message must name; NULL: none */
  const char *message; /* substring of the error */
  gboolean reseal;     /* recompute the file checksum after the change */
  gboolean overwrite;  /* write @replace over the text at @find, same length */
  gboolean all;        /* replace every occurrence */
} BadCase;

static void
check_bad (const BadCase *c)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *xml = make_bmap (c->version, BMAP_CHECKSUM_SHA256);
  g_autoptr (GString) s = g_string_new (xml);
  g_autoptr (BmapMap) map = NULL;
  const char *pos = strstr (s->str, c->find);
  gssize off;

  g_test_message ("%s: '%s' -> '%s'", c->version, c->find, c->replace);
  g_assert_nonnull (pos);
  off = pos - s->str;
  if (c->all) {
    g_string_replace (s, c->find, c->replace, 0);
  } else {
    g_string_erase (s, off, (gssize) (c->overwrite ? strlen (c->replace) : strlen (c->find)));
    g_string_insert (s, off, c->replace);
  }
  if (c->reseal)
    seal (s);

  map = load_string (s->str, &error);
  g_assert_null (map);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_test_message ("  -> %s", error->message);
  g_assert_true (g_str_has_prefix (error->message, "test.bmap: "));
  if (c->line_of != NULL) {
    g_autofree char *want = g_strdup_printf ("line %u: ", line_of (s->str, c->line_of));

    g_assert_nonnull (strstr (error->message, want));
  }
  g_assert_nonnull (strstr (error->message, c->message));
}

static void
test_malformed (void)
{
  static const BadCase cases[] = {
    { "2.0", "version=\"2.0\"", "version=\"3.0\"", "<bmap", "unsupported bmap version 3.0", TRUE },
    { "2.0", "version=\"2.0\"", "version=\"17.2\"", "<bmap", "unsupported bmap version 17.2",
      TRUE },
    { "2.0", "version=\"2.0\"", "", "<bmap", "no version attribute", TRUE },
    { "2.0", "version=\"2.0\"", "version=\"two\"", "<bmap", "malformed bmap version 'two'", TRUE },
    { "2.0", "<BlocksCount> 11 ", "<BlocksCount> 10 ", "<BlocksCount>",
      "<BlocksCount> 10 does not match <ImageSize> 41960 and <BlockSize> 4096 (11 blocks)", TRUE },
    { "2.0", "<BlockSize> 4096 ", "<BlockSize> 0 ", "<BlockSize>", "<BlockSize> is 0", TRUE },
    { "2.0", "<ImageSize> 41960 ", "<ImageSize> 4x1 ", "<ImageSize>",
      "<ImageSize> value '4x1' is not a number", TRUE },
    { "2.0", "<ImageSize> 41960 ", "<ImageSize> 18446744073709551616 ", "<ImageSize>",
      "<ImageSize> value '18446744073709551616' is too large", TRUE },
    { "2.0", "> 5-10 <", "> 5-11 <", "> 5-11 <",
      "range 5-11 is past the end of the image (BlocksCount 11)", TRUE },
    { "1.2", "> 5-10 <", "> 5-11 <", "> 5-11 <",
      "range 5-11 is past the end of the image (BlocksCount 11)", TRUE },
    { "2.0", "> 5-10 <", "> 2 <", "> 2 <", "range 2-2 is out of order (after range 3-3)", TRUE },
    { "2.0", "> 3 <", "> 0 <", "> 0 <", "range 0-0 overlaps range 0-1", TRUE },
    { "2.0", "> 3 <", "> 1-3 <", "> 1-3 <", "range 1-3 overlaps range 0-1", TRUE },
    { "2.0", "> 0-1 <", "> 1-0 <", "> 1-0 <", "range '1-0': last block before first", TRUE },
    { "2.0", "> 0-1 <", "> 12- <", "> 12- <", "malformed range '12-'", TRUE },
    { "2.0", "> 0-1 <", "> a-5 <", "> a-5 <", "malformed range 'a-5'", TRUE },
    { "2.0", "> 0-1 <", "> -3 <", "> -3 <", "malformed range '-3'", TRUE },
    { "2.0", "> 0-1 <", "> <", "> <", "malformed range ''", TRUE },
    { "2.0", "> 0-1 <", "> 0-99999999999999999999 <", "> 0-9999",
      "range '0-99999999999999999999': block number too large", TRUE },
    { "2.0", "<MappedBlocksCount> 9 ", "<MappedBlocksCount> 10 ", "<MappedBlocksCount>",
      "<MappedBlocksCount> is 10 but the ranges hold 9 blocks", TRUE },
    { "1.1", "<MappedBlocksCount> 9 ", "<MappedBlocksCount> 8 ", "<MappedBlocksCount>",
      "<MappedBlocksCount> is 8 but the ranges hold 9 blocks", TRUE },
    { "2.0", "chksum=\"", "chksum=\"0", "> 0-1 <",
      "range 0-1: chksum is 65 characters long, expected 64 hex digits for sha256", TRUE },
    { "2.0", "chksum=\"", "chksum=\"xy", "> 0-1 <", "range 0-1: chksum 'xy", TRUE, TRUE },
    { "1.2", "sha1=\"", "sha1=\"ab", "> 0-1 <",
      "range 0-1: sha1 is 42 characters long, expected 40 hex digits for sha1", TRUE },
    { "2.0", "<ChecksumType> sha256 ", "<ChecksumType> md5 ", "<ChecksumType>",
      "unknown <ChecksumType> 'md5'", FALSE },
    { "2.0", "<BmapFileChecksum> ", "<BmapFileChecksum> 12", "<BmapFileChecksum>",
      "<BmapFileChecksum> is 66 characters long, expected 64 hex digits", FALSE },
    { "2.0", "<BmapFileChecksum> ", "<BmapFileChecksum> zz", "<BmapFileChecksum>",
      "<BmapFileChecksum> 'zz", FALSE, TRUE },
    { "1.3", "<BmapFileSHA1> ", "<BmapFileSHA1> 12", "<BmapFileSHA1>",
      "<BmapFileSHA1> is 42 characters long, expected 40 hex digits for sha1", FALSE },
    /* Changed after sealing: the file checksum no longer matches. */
    { "2.0", "> 3 <", "> 4 <", "<BmapFileChecksum>",
      "checksum mismatch for the bmap file itself: expected ", FALSE },
    { "1.3", "> 3 <", "> 4 <", "<BmapFileSHA1>",
      "checksum mismatch for the bmap file itself: expected ", FALSE },
    { "2.0", "<ImageSize> 41960 </ImageSize>", "", NULL, "missing <ImageSize> element", TRUE },
    { "2.0", "<BlockSize> 4096 </BlockSize>", "", NULL, "missing <BlockSize> element", TRUE },
    { "2.0", "<BlocksCount> 11 </BlocksCount>", "", NULL, "missing <BlocksCount> element", TRUE },
    { "2.0", "<MappedBlocksCount> 9 </MappedBlocksCount>", "", NULL,
      "missing <MappedBlocksCount> element", TRUE },
    { "1.2", "<MappedBlocksCount> 9 </MappedBlocksCount>", "", NULL,
      "missing <MappedBlocksCount> element", TRUE },
    { "2.0", "<ChecksumType> sha256 </ChecksumType>", "", "<BlockMap>",
      "<ChecksumType> must come before <BlockMap>", FALSE },
    { "1.3", "BmapFileSHA1>", "Other>", NULL, "missing <BmapFileSHA1> element", FALSE, FALSE,
      TRUE },
    { "2.0", "BmapFileChecksum>", "Other>", NULL, "missing <BmapFileChecksum> element", FALSE,
      FALSE, TRUE },
    { "2.0", "BlockMap>", "Other>", NULL, "missing <BlockMap> element", TRUE, FALSE, TRUE },
    { "2.0", "</BlocksCount>", "</BlocksCount><BlocksCount>11</BlocksCount>", "<BlocksCount>11<",
      "duplicate <BlocksCount>", TRUE },
    { "2.0", "<bmap ", "<map ", "<map ", "root element is <map>, expected <bmap>", TRUE },
    /* One range without a checksum among checksummed ones. */
    { "2.0", "<Range chksum", "<Range foo", "> 3 <",
      "range 3-3 has a chksum attribute but the ranges before it do not", TRUE },
    { "2.0", "</bmap>", "", NULL, "not a well-formed XML file", TRUE },
    { "2.0", "<ImageSize>", "<ImageSize a=>", "<ImageSize", "not a well-formed XML file", TRUE },
    { "2.0", "41960", "&foo;", "&foo;", "not a well-formed XML file", TRUE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    check_bad (&cases[i]);
}

static void
check_bad_string (const char *xml, gssize len, const char *message)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = NULL;

  map = bmap_map_load_data (xml, len < 0 ? strlen (xml) : (gsize) len, "test.bmap", &error);
  g_assert_null (map);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, message));
}

static void
test_not_xml (void)
{
  static const char garbage[] = { 0x1f, (char) 0x8b, 0x08, 0x00, 0x00, 0x00, 0x17, 0x00 };

  check_bad_string ("", 0, "test.bmap: the file is empty");
  check_bad_string ("hello world\n", 12, "test.bmap: line 1: not a well-formed XML file");
  check_bad_string (garbage, sizeof garbage, "not a well-formed XML file");
  check_bad_string ("<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n  <ImageSize>", 57,
                    "not a well-formed XML file");
}

/* Hand-written 1.0 files: no checksums to get right. */
static void
test_block_map_presence (void)
{
  const char *empty = "<bmap version=\"1.0\"><ImageSize>10</ImageSize><BlockSize>1</BlockSize>"
                      "<BlocksCount>10</BlocksCount><BlockMap/>"
                      "<MappedBlocksCount>0</MappedBlocksCount></bmap>";
  const char *none = "<bmap version=\"1.0\"><ImageSize>10</ImageSize><BlockSize>1</BlockSize>"
                     "<BlocksCount>10</BlocksCount>"
                     "<MappedBlocksCount>0</MappedBlocksCount></bmap>";
  const char *spaced = "<bmap version=\" 1.0 \">\n<ImageSize>10</ImageSize>"
                       "<BlockSize>1</BlockSize><BlocksCount>10</BlocksCount><BlockMap>\n"
                       "<Range>\n 2 - 4\n</Range><Range><![CDATA[ 7 ]]></Range><Ignored/>"
                       "</BlockMap>\n<MappedBlocksCount>4</MappedBlocksCount></bmap>";
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = load_string (empty, &error);

  g_assert_no_error (error);
  g_assert_cmpuint (bmap_map_get_n_ranges (map), ==, 0);
  g_assert_cmpuint (bmap_map_get_mapped_bytes (map), ==, 0);
  g_clear_pointer (&map, bmap_map_free);

  /* Spaces around the dash, as bmaptool accepts; CDATA is text too. */
  map = load_string (spaced, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (bmap_map_get_n_ranges (map), ==, 2);
  g_assert_cmpuint (bmap_map_get_range (map, 0)->first, ==, 2);
  g_assert_cmpuint (bmap_map_get_range (map, 0)->last, ==, 4);
  g_assert_cmpuint (bmap_map_get_range (map, 1)->first, ==, 7);
  g_assert_cmpuint (bmap_map_get_range (map, 1)->last, ==, 7);
  g_clear_pointer (&map, bmap_map_free);

  check_bad_string (none, strlen (none), "test.bmap: missing <BlockMap> element");

  /* Whichever of the three comes last, the geometry is checked before the
   * ranges are measured against BlocksCount. */
  check_bad_string ("<bmap version=\"1.0\">\n<BlocksCount>10</BlocksCount>\n"
                    "<ImageSize>10</ImageSize>\n<BlockSize>2</BlockSize>\n<BlockMap>\n"
                    "<Range>9</Range></BlockMap><MappedBlocksCount>1</MappedBlocksCount></bmap>",
                    -1,
                    "test.bmap: line 2: <BlocksCount> 10 does not match <ImageSize> 10 and "
                    "<BlockSize> 2 (5 blocks)");
}

/* Must fail at once, not expand 10^9 entities, and name the line. */
static void
test_billion_laughs (void)
{
  g_autoptr (GString) xml = g_string_new ("<?xml version=\"1.0\"?>\n<!-- bomb -->\n"
                                          "<!DOCTYPE bmap [\n <!ENTITY lol \"lol\">\n");

  for (int i = 1; i <= 9; i++) {
    g_string_append_printf (xml, " <!ENTITY lol%d \"", i);
    for (int j = 0; j < 10; j++) {
      if (i == 1)
        g_string_append (xml, "&lol;");
      else
        g_string_append_printf (xml, "&lol%d;", i - 1);
    }
    g_string_append (xml, "\">\n");
  }
  g_string_append (xml, "]>\n<bmap version=\"2.0\"><ImageSize>&lol9;</ImageSize></bmap>\n");
  check_bad_string (xml->str, xml->len, "test.bmap: line 3: DOCTYPE declarations are not allowed");

  /* An external entity must not be fetched either. */
  check_bad_string ("<?xml version=\"1.0\"?>\n<!DOCTYPE bmap SYSTEM \"/etc/passwd\">\n"
                    "<bmap version=\"2.0\"/>\n",
                    strlen ("<?xml version=\"1.0\"?>\n<!DOCTYPE bmap SYSTEM \"/etc/passwd\">\n"
                            "<bmap version=\"2.0\"/>\n"),
                    "line 2: DOCTYPE declarations are not allowed");
}

/* UTF-16 hides the DOCTYPE from the byte scan; libxml2's reader must still
 * report it, and we refuse it there. */
static void
test_doctype_utf16 (void)
{
  const char *utf8 = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<!DOCTYPE bmap [\n"
                     "<!ENTITY x \"1\">\n]>\n<bmap version=\"2.0\"><ImageSize>&x;</ImageSize>"
                     "</bmap>\n";
  g_autoptr (GError) error = NULL;
  gsize len = 0;
  g_autofree char *utf16 = g_convert (utf8, -1, "UTF-16LE", "UTF-8", NULL, &len, &error);
  g_autofree char *with_bom = NULL;

  g_assert_no_error (error);
  with_bom = g_malloc (len + 2);
  with_bom[0] = (char) 0xff;
  with_bom[1] = (char) 0xfe;
  memcpy (with_bom + 2, utf16, len);
  check_bad_string (with_bom, len + 2, "DOCTYPE declarations are not allowed");
}

/* libxml2 must not print anything itself: the message goes into the GError. */
static void
test_no_stderr (void)
{
  if (g_test_subprocess ()) {
    g_autoptr (GError) error = NULL;
    g_autoptr (BmapMap) map = load_string ("<bmap version=\"2.0\"><a></b></bmap>", &error);

    g_assert_null (map);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
    g_assert_nonnull (strstr (error->message, "line 1: not a well-formed XML file: "));
    g_assert_nonnull (strstr (error->message, "mismatch"));
    return;
  }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed ();
  g_test_trap_assert_stderr ("");
}

/* Bad encodings: libxml2 reports conversion errors without a parser
 * context, through its global handlers, which print to stderr unless the
 * parser routes them. An unauthenticated caller could fill the journal. */
static const struct {
  const char *xml;
  const char *expect;
} encoding_cases[] = {
  { "<?xml version=\"1.0\" encoding=\"SHIFT_JIS\"?>\n<bmap version=\"1.0\">"
    "<ImageSize>\x82\xff\xff</ImageSize></bmap>\n",
    "line 2: not a well-formed XML file: input conversion failed due to input error" },
  { "<?xml version=\"1.0\" encoding=\"EUC-JP\"?>\n<bmap version=\"1.0\"><!-- \x8e\xff --></bmap>\n",
    "not a well-formed XML file: input conversion failed" },
  { "<?xml version=\"1.0\" encoding=\"ISO-2022-JP\"?>\n<bmap version=\"1.0\">\x1b$B\xff\xff\x1b(B"
    "</bmap>\n",
    "not a well-formed XML file: input conversion failed" },
  { "<?xml version=\"1.0\" encoding=\"no-such-encoding\"?>\n<bmap version=\"1.0\"/>\n",
    "not a well-formed XML file: Unsupported encoding" },
  { "<?xml version=\"1.0\"?>\n<bmap version=\"1.0\">\xff\xfe</bmap>\n",
    "not a well-formed XML file: Input is not proper UTF-8" },
};

static void
marker_generic_cb (void *ctx, const char *msg, ...)
{}

/* Loads every case on the calling thread; returns the error messages
 * ("loaded" when one loaded), checked once stderr is back. With @data, the
 * thread has a generic handler of its own first, which must be put back
 * ("handlers" when it was not). */
static gpointer
load_encoding_cases (gpointer data)
{
  GPtrArray *messages = g_ptr_array_new_with_free_func (g_free);
  int marker;

  if (data != NULL)
    xmlSetGenericErrorFunc (&marker, marker_generic_cb);
  for (gsize i = 0; i < G_N_ELEMENTS (encoding_cases); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (BmapMap) map = load_string (encoding_cases[i].xml, &error);

    if (data != NULL && (xmlGenericErrorContext != &marker || xmlGenericError != marker_generic_cb))
      g_ptr_array_add (messages, g_strdup ("handlers"));
    else if (map != NULL || !g_error_matches (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP))
      g_ptr_array_add (messages, g_strdup ("loaded"));
    else
      g_ptr_array_add (messages, g_strdup (error->message));
  }
  if (data != NULL)
    xmlSetGenericErrorFunc (NULL, NULL);
  return messages;
}

static void
check_encoding_messages (GPtrArray *messages)
{
  for (guint i = 0; i < messages->len; i++) {
    const char *msg = g_ptr_array_index (messages, i);

    g_test_message ("case %u: %s", i, msg);
    g_assert_nonnull (strstr (msg, encoding_cases[i].expect));
    g_assert_null (strchr (msg, '\n'));
  }
}

static void
test_encoding_errors (void)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "stderr", NULL);
  g_autofree char *captured = NULL;
  g_autoptr (GPtrArray) here = NULL;
  g_autoptr (GPtrArray) worker = NULL;
  g_autoptr (GPtrArray) own_handler = NULL;
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int saved = dup (2);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (saved, >=, 0);
  fflush (stderr);
  g_assert_cmpint (dup2 (fd, 2), ==, 2);
  /* On this thread and on a fresh one: libxml2's handlers are per thread,
   * and bmapd parses bmaps on worker threads. */
  here = load_encoding_cases (NULL);
  worker = g_thread_join (g_thread_new ("load", load_encoding_cases, NULL));
  own_handler = g_thread_join (g_thread_new ("load", load_encoding_cases, GINT_TO_POINTER (1)));
  fflush (stderr);
  g_assert_cmpint (dup2 (saved, 2), ==, 2);
  close (saved);
  close (fd);

  g_assert_true (g_file_get_contents (path, &captured, NULL, NULL));
  g_assert_cmpstr (captured, ==, "");
  check_encoding_messages (here);
  check_encoding_messages (worker);
  check_encoding_messages (own_handler);
}

typedef struct {
  char *xml;
  char *expect;
  gboolean ok;
} ThreadCase;

static gpointer
thread_func (gpointer data)
{
  ThreadCase *tc = data;

  tc->ok = TRUE;
  for (int i = 0; i < 200 && tc->ok; i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (BmapMap) map = load_string (tc->xml, &error);

    if (tc->expect == NULL)
      tc->ok = map != NULL;
    else
      tc->ok = map == NULL && error != NULL && strstr (error->message, tc->expect) != NULL;
  }
  return NULL;
}

/* Each load keeps its own error, whatever the other threads parse. */
static void
test_threads (void)
{
  ThreadCase cases[] = {
    { make_bmap ("2.0", BMAP_CHECKSUM_SHA256), NULL, FALSE },
    { g_strdup ("<bmap version=\"2.0\"><a></b></bmap>"), "line 1: not a well-formed", FALSE },
    { g_strdup ("\n\n<bmap version=\"2.0\">\n<x>\n</bmap>"), "line 5: not a well-formed", FALSE },
    { g_strdup ("<bmap version=\"5.0\"/>"), "unsupported bmap version 5.0", FALSE },
  };
  GThread *threads[G_N_ELEMENTS (cases)];

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    threads[i] = g_thread_new ("load", thread_func, &cases[i]);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_thread_join (threads[i]);
    g_assert_true (cases[i].ok);
    g_free (cases[i].xml);
  }
}

/* Line numbers stay right past 65535 lines, where libxml2's node line
 * numbers stop counting. */
static void
test_big_line_numbers (void)
{
  g_autoptr (GString) xml = g_string_new (NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = NULL;
  const guint n = 100000;
  g_autofree char *want = NULL;

  g_string_append_printf (xml,
                          "<?xml version=\"1.0\" ?>\n<bmap version=\"1.0\">\n"
                          "    <ImageSize> %u </ImageSize>\n"
                          "    <BlockSize> 1 </BlockSize>\n"
                          "    <BlocksCount> %u </BlocksCount>\n"
                          "    <MappedBlocksCount> %u </MappedBlocksCount>\n"
                          "    <BlockMap>\n",
                          4 * n, 4 * n, n);
  for (guint i = 0; i < n; i++)
    g_string_append_printf (xml, "        <Range> %u </Range>\n", i == n - 10 ? 3 : 4 * i);
  g_string_append (xml, "    </BlockMap>\n</bmap>\n");
  map = load_string (xml->str, &error);
  g_assert_null (map);
  want = g_strdup_printf ("line %u: range 3-3 is out of order", 7 + n - 10 + 1);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, want));
}

static void
test_too_large (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "big.bmap", NULL);
  g_autofree char *data = g_malloc0 (BMAP_FORMAT_MAX_FILE_SIZE + 1);
  g_autoptr (BmapMap) map = NULL;
  int fd;

  map = bmap_map_load_data (data, BMAP_FORMAT_MAX_FILE_SIZE + 1, "test.bmap", &error);
  g_assert_null (map);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_assert_nonnull (strstr (error->message, "larger than the 64 MiB limit"));
  g_clear_error (&error);

  /* A file one byte over the limit: refused after reading at most that. */
  fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (ftruncate (fd, BMAP_FORMAT_MAX_FILE_SIZE + 1), ==, 0);
  map = bmap_map_load_fd (fd, path, &error);
  g_assert_null (map);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_assert_nonnull (strstr (error->message, "larger than the 64 MiB limit"));
  g_assert_true (g_str_has_prefix (error->message, path));
  close (fd);
}

static void
test_load_fd_pipe (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *xml = make_bmap ("2.0", BMAP_CHECKSUM_SHA256);
  g_autoptr (BmapMap) map = NULL;
  int fds[2];

  /* Fits in the pipe buffer, so one thread can write then read. */
  g_assert_cmpuint (strlen (xml), <, 60000);
  g_assert_cmpint (pipe (fds), ==, 0);
  g_assert_cmpint (write (fds[1], xml, strlen (xml)), ==, (gssize) strlen (xml));
  close (fds[1]);
  map = bmap_map_load_fd (fds[0], "pipe", &error);
  close (fds[0]);
  g_assert_no_error (error);
  check_image_map (map, BMAP_CHECKSUM_SHA256);
}

static void
test_load_file_missing (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = bmap_map_load_file ("/nonexistent/x.bmap", &error);

  g_assert_null (map);
  g_assert_nonnull (error);
  g_assert_true (error->domain == BMAP_ERROR);
  g_assert_nonnull (strstr (error->message, "/nonexistent/x.bmap"));
}

static void
test_add_range (void)
{
  g_autoptr (BmapMap) map = bmap_map_new (10 * 512 + 100, 512, BMAP_CHECKSUM_SHA1);
  guint8 d[BMAP_CHECKSUM_MAX_LEN];
  static const guint64 want[][2] = { { 0, 0 }, { 2, 3 }, { 5, 7 }, { 9, 10 } };

  g_assert_cmpuint (map->blocks_count, ==, 11);
  g_assert_cmpuint (map->version_major, ==, 2);
  memset (d, 0xab, sizeof d);
  bmap_map_add_range (map, 5, 7, d);
  bmap_map_add_range (map, 9, 10, d);
  bmap_map_add_range (map, 0, 0, d);
  d[0] = 0x11;
  bmap_map_add_range (map, 2, 3, d);

  g_assert_cmpuint (bmap_map_get_n_ranges (map), ==, 4);
  for (guint i = 0; i < 4; i++) {
    g_assert_cmpuint (bmap_map_get_range (map, i)->first, ==, want[i][0]);
    g_assert_cmpuint (bmap_map_get_range (map, i)->last, ==, want[i][1]);
  }
  g_assert_cmpuint (bmap_map_get_range (map, 1)->digest[0], ==, 0x11);
  g_assert_cmpuint (bmap_map_get_range (map, 2)->digest[19], ==, 0xab);
  g_assert_cmpuint (map->mapped_blocks_count, ==, 1 + 2 + 3 + 2);
  g_assert_cmpuint (bmap_map_range_bytes (map, bmap_map_get_range (map, 0)), ==, 512);
  g_assert_cmpuint (bmap_map_range_bytes (map, bmap_map_get_range (map, 2)), ==, 3 * 512);
  /* Block 10 is the partial last one. */
  g_assert_cmpuint (bmap_map_range_bytes (map, bmap_map_get_range (map, 3)), ==, 512 + 100);
  g_assert_cmpuint (bmap_map_get_mapped_bytes (map), ==, 7 * 512 + 100);
}

static void
test_add_range_overlap (void)
{
  if (g_test_subprocess ()) {
    g_autoptr (BmapMap) map = bmap_map_new (4096 * 10, 4096, BMAP_CHECKSUM_NONE);

    bmap_map_add_range (map, 2, 5, NULL);
    bmap_map_add_range (map, 5, 6, NULL);
    return;
  }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed ();
  g_test_trap_assert_stderr ("*CRITICAL*");
}

static void
test_roundtrip (void)
{
  static const BmapChecksumType types[]
      = { BMAP_CHECKSUM_NONE, BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_SHA256, BMAP_CHECKSUM_SHA512 };

  for (gsize t = 0; t < G_N_ELEMENTS (types); t++) {
    g_autoptr (BmapMap) map = bmap_map_new (1000 * 4096 + 7, 4096, types[t]);
    g_autoptr (BmapMap) back = NULL;
    g_autoptr (BmapMap) again = NULL;
    g_autoptr (GError) error = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *xml2 = NULL;
    g_autofree char *dir = bmap_test_tmpdir ();
    g_autofree char *path = g_build_filename (dir, "out.bmap", NULL);
    gsize len = 0;
    gsize len2 = 0;
    int fd;

    for (guint64 b = 0; b < 1001; b += 7) {
      guint8 d[BMAP_CHECKSUM_MAX_LEN];

      bmap_test_fill (d, sizeof d, (guint32) b);
      bmap_map_add_range (map, b, MIN (b + (b % 3), 1000), d);
    }
    xml = bmap_map_to_xml (map, &len);
    g_assert_cmpuint (len, ==, strlen (xml));
    back = bmap_map_load_data (xml, len, "roundtrip", &error);
    g_assert_no_error (error);
    g_assert_cmpuint (back->version_major, ==, 2);
    g_assert_cmpuint (back->version_minor, ==, 0);
    g_assert_cmpuint (back->image_size, ==, map->image_size);
    g_assert_cmpuint (back->block_size, ==, map->block_size);
    g_assert_cmpuint (back->blocks_count, ==, map->blocks_count);
    g_assert_cmpuint (back->mapped_blocks_count, ==, map->mapped_blocks_count);
    g_assert_cmpint (back->range_checksum, ==, types[t]);
    /* Like bmaptool --no-checksum: the file still checksums itself. */
    g_assert_cmpint (back->file_checksum, ==,
                     types[t] == BMAP_CHECKSUM_NONE ? BMAP_CHECKSUM_SHA256 : types[t]);
    g_assert_cmpuint (bmap_map_get_n_ranges (back), ==, bmap_map_get_n_ranges (map));
    for (guint i = 0; i < bmap_map_get_n_ranges (map); i++) {
      const BmapRange *a = bmap_map_get_range (map, i);
      const BmapRange *b = bmap_map_get_range (back, i);
      gsize dl = bmap_checksum_type_get_length (types[t]);

      g_assert_cmpuint (a->first, ==, b->first);
      g_assert_cmpuint (a->last, ==, b->last);
      g_assert_cmpmem (a->digest, dl, b->digest, dl);
    }

    /* Writing what we read gives the same bytes. */
    xml2 = bmap_map_to_xml (back, &len2);
    g_assert_cmpmem (xml, len, xml2, len2);

    fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    g_assert_cmpint (fd, >=, 0);
    g_assert_true (bmap_map_write_fd (map, fd, &error));
    g_assert_no_error (error);
    close (fd);
    again = bmap_map_load_file (path, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (again->mapped_blocks_count, ==, map->mapped_blocks_count);
  }
}

/* The human-readable comments follow bmaptool's human_size(). */
static void
test_writer_layout (void)
{
  g_autoptr (BmapMap) map = bmap_map_new (821752, 4096, BMAP_CHECKSUM_SHA256);
  guint8 d[BMAP_CHECKSUM_MAX_LEN] = { 0 };
  g_autofree char *xml = NULL;

  bmap_map_add_range (map, 0, 116, d);
  xml = bmap_map_to_xml (map, NULL);
  g_assert_nonnull (strstr (xml, "<bmap version=\"2.0\">\n"
                                 "    <!-- Image size in bytes: 802.5 KiB -->\n"
                                 "    <ImageSize> 821752 </ImageSize>\n"));
  g_assert_nonnull (strstr (xml, "    <!-- Count of mapped blocks: 468.0 KiB or 58.2%    -->\n"
                                 "    <MappedBlocksCount> 117 </MappedBlocksCount>\n"));
  g_assert_nonnull (strstr (xml, "    <ChecksumType> sha256 </ChecksumType>\n"));
  g_assert_nonnull (strstr (xml, "        <Range chksum=\"0000000000000000000000000000000000000000"
                                 "000000000000000000000000\"> 0-116 </Range>\n"
                                 "    </BlockMap>\n</bmap>\n"));
}

/* The interpreter bmaptool runs with (its #! line), when it can import
 * bmaptools: a python3 earlier on PATH may not have it. */
static char *
bmaptool_python (void)
{
  g_autofree char *tool = g_find_program_in_path ("bmaptool");
  g_autofree char *contents = NULL;
  g_autofree char *python = NULL;
  g_autofree char *quoted = NULL;

  if (tool == NULL || !g_file_get_contents (tool, &contents, NULL, NULL)
      || !g_str_has_prefix (contents, "#!"))
    return NULL;
  python = g_strndup (contents + 2, strcspn (contents + 2, " \t\n"));
  quoted = g_shell_quote (python);
  if (bmap_test_sh ("%s -c 'import bmaptools.BmapHelpers' 2>/dev/null", quoted) != 0)
    return NULL;
  return g_steal_pointer (&python);
}

/* Our human-readable sizes and percentages against bmaptool's own
 * human_size(), at the unit boundaries and its EiB quirk. (When the mapped
 * text is longer than the image size's, bmaptool leaves a piece of its
 * padding behind, "0.0%or   -->"; so do we, hence only a prefix here.) */
static void
test_human_sizes_match_bmaptool (void)
{
  static const struct {
    guint64 image_size;
    guint32 block_size;
    guint64 mapped;
  } cases[] = {
    { 1, 4096, 1 },
    { 511, 512, 0 },
    { 512, 512, 1 },
    { 1023 * 1024 + 973, 1024, 77 },
    { G_GUINT64_CONSTANT (1) << 20, 4096, 255 },
    { (G_GUINT64_CONSTANT (1) << 30) * 3 + 12345, 4096, 786435 },
    { G_GUINT64_CONSTANT (1) << 40, 1u << 30, 3 },
    { G_GUINT64_CONSTANT (1) << 52, 1u << 31, 2047 },
    { G_GUINT64_CONSTANT (18446744073709551615), 1u << 31, 1 },
  };
  g_autoptr (GString) script = g_string_new ("from bmaptools.BmapHelpers import human_size\n");
  g_autofree char *out = NULL;
  g_auto (GStrv) lines = NULL;
  g_autofree char *python = bmaptool_python ();
  const char *argv[] = { python, "-c", NULL, NULL };

  if (python == NULL) {
    g_test_skip ("bmaptool's python module is not installed");
    return;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    guint64 blocks = cases[i].image_size / cases[i].block_size
                     + (cases[i].image_size % cases[i].block_size != 0);

    g_string_append_printf (script,
                            "print(human_size(%" G_GUINT64_FORMAT "))\n"
                            "print('%%s or %%.1f%%%%' %% (human_size(%" G_GUINT64_FORMAT
                            " * %u), (%" G_GUINT64_FORMAT " * 100.0) / %" G_GUINT64_FORMAT "))\n",
                            cases[i].image_size, cases[i].mapped, cases[i].block_size,
                            cases[i].mapped, blocks);
  }
  argv[2] = script->str;
  g_assert_cmpint (bmap_test_run (argv, &out, NULL), ==, 0);
  lines = g_strsplit (out, "\n", -1);
  g_assert_cmpuint (g_strv_length (lines), >=, 2 * G_N_ELEMENTS (cases));

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (BmapMap) map
        = bmap_map_new (cases[i].image_size, cases[i].block_size, BMAP_CHECKSUM_NONE);
    g_autofree char *xml = NULL;
    g_autofree char *want_size = g_strdup_printf ("<!-- Image size in bytes: %s -->", lines[2 * i]);
    g_autofree char *want_mapped
        = g_strdup_printf ("<!-- Count of mapped blocks: %s", lines[2 * i + 1]);

    if (cases[i].mapped > 0)
      bmap_map_add_range (map, 0, cases[i].mapped - 1, NULL);
    xml = bmap_map_to_xml (map, NULL);
    g_test_message ("%s / %s", lines[2 * i], lines[2 * i + 1]);
    g_assert_nonnull (strstr (xml, want_size));
    g_assert_nonnull (strstr (xml, want_mapped));
  }
}

/* bmaptool's own bmaps of its test image, when the corpus is there. */
static void
test_compat (void)
{
  static const char *const versions[] = { "1.2", "1.3", "1.4", "2.0" };
  g_autofree char *gz_path = g_build_filename (COMPAT_DIR, "test.image.gz", NULL);
  g_autoptr (GBytes) gz = NULL;
  g_autoptr (GConverter) dec = NULL;
  g_autoptr (GInputStream) mem = NULL;
  g_autoptr (GInputStream) in = NULL;
  g_autoptr (GOutputStream) out = NULL;
  g_autoptr (GBytes) image = NULL;
  g_autoptr (GError) error = NULL;

  if (!g_file_test (gz_path, G_FILE_TEST_EXISTS)) {
    g_test_skip ("no " COMPAT_DIR " corpus");
    return;
  }
  gz = bmap_test_read_file (gz_path);
  dec = G_CONVERTER (g_zlib_decompressor_new (G_ZLIB_COMPRESSOR_FORMAT_GZIP));
  mem = g_memory_input_stream_new_from_bytes (gz);
  in = g_converter_input_stream_new (mem, dec);
  out = g_memory_output_stream_new_resizable ();
  g_output_stream_splice (out, in, G_OUTPUT_STREAM_SPLICE_CLOSE_TARGET, NULL, &error);
  g_assert_no_error (error);
  image = g_memory_output_stream_steal_as_bytes (G_MEMORY_OUTPUT_STREAM (out));
  g_assert_cmpuint (g_bytes_get_size (image), ==, 821752);

  for (gsize v = 0; v < G_N_ELEMENTS (versions); v++) {
    g_autofree char *path = g_strdup_printf (COMPAT_DIR "/test.image.bmap.v%s", versions[v]);
    g_autoptr (BmapMap) map = bmap_map_load_file (path, &error);
    gsize dl;

    g_assert_no_error (error);
    g_assert_cmpuint (map->image_size, ==, 821752);
    g_assert_cmpuint (map->block_size, ==, 4096);
    g_assert_cmpuint (map->blocks_count, ==, 201);
    g_assert_cmpuint (map->mapped_blocks_count, ==, 117);
    g_assert_cmpint (map->range_checksum, ==, v < 2 ? BMAP_CHECKSUM_SHA1 : BMAP_CHECKSUM_SHA256);
    g_assert_cmpint (map->file_checksum, ==,
                     v == 0   ? BMAP_CHECKSUM_NONE
                     : v == 1 ? BMAP_CHECKSUM_SHA1
                              : BMAP_CHECKSUM_SHA256);
    dl = bmap_checksum_type_get_length (map->range_checksum);
    for (guint i = 0; i < bmap_map_get_n_ranges (map); i++) {
      const BmapRange *r = bmap_map_get_range (map, i);
      guint8 digest[BMAP_CHECKSUM_MAX_LEN];

      range_digest (g_bytes_get_data (image, NULL), 821752, 4096, r->first, r->last,
                    map->range_checksum, digest);
      g_assert_cmpmem (r->digest, dl, digest, dl);
    }
  }
}

static const BmapTestExtent interop_extents[] = {
  { 0, 3 * 4096 },         { 10 * 4096, 4096 },       { 20 * 4096 + 100, 5 * 4096 },
  { 63 * 4096, 2 * 4096 }, { 90 * 4096, 4096 + 333 }, /* ends the image mid-block */
};
#define INTEROP_SIZE (90 * 4096 + 4096 + 333)

static void
check_interop (gboolean no_checksum)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *image = g_build_filename (dir, "disk.img", NULL);
  g_autofree char *theirs = g_build_filename (dir, "theirs.bmap", NULL);
  g_autofree char *ours = g_build_filename (dir, "ours.bmap", NULL);
  g_autofree char *copy = g_build_filename (dir, "copy.img", NULL);
  g_autofree char *err = NULL;
  g_autoptr (GBytes) their_bytes = NULL;
  g_autoptr (GBytes) image_bytes = NULL;
  g_autoptr (GBytes) copy_bytes = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *xml = NULL;
  gsize len = 0;
  int fd;
  const char *create_argv[]
      = { "bmaptool", "create", "-o", theirs, image, no_checksum ? "--no-checksum" : NULL, NULL };
  const char *copy_argv[] = { "bmaptool", "copy", "--bmap", ours, image, copy, NULL };

  if (!bmap_test_have_program ("bmaptool")) {
    g_test_skip ("bmaptool is not installed");
    return;
  }
  bmap_test_make_image (image, INTEROP_SIZE, interop_extents, G_N_ELEMENTS (interop_extents));
  g_assert_cmpint (bmap_test_run (create_argv, NULL, &err), ==, 0);

  their_bytes = bmap_test_read_file (theirs);
  map = bmap_map_load_file (theirs, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (map->image_size, ==, INTEROP_SIZE);
  g_assert_cmpint (map->range_checksum, ==,
                   no_checksum ? BMAP_CHECKSUM_NONE : BMAP_CHECKSUM_SHA256);
  g_assert_cmpint (map->file_checksum, ==, BMAP_CHECKSUM_SHA256);

  /* Byte for byte what bmaptool wrote. */
  xml = bmap_map_to_xml (map, &len);
  g_assert_cmpmem (xml, len, g_bytes_get_data (their_bytes, NULL), g_bytes_get_size (their_bytes));

  fd = open (ours, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  g_assert_cmpint (fd, >=, 0);
  g_assert_true (bmap_map_write_fd (map, fd, &error));
  close (fd);

  /* bmaptool verifies the file checksum and each range's checksum. */
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (bmap_test_run (copy_argv, NULL, &err), ==, 0);
  image_bytes = bmap_test_read_file (image);
  copy_bytes = bmap_test_read_file (copy);
  g_assert_true (g_bytes_equal (image_bytes, copy_bytes));
}

static void
test_bmaptool_interop (void)
{
  check_interop (FALSE);
}

static void
test_bmaptool_interop_no_checksum (void)
{
  check_interop (TRUE);
}

/* Our map built from scratch (as bmap-create does): bmaptool must accept
 * it and catch a wrong range checksum. */
static void
test_bmaptool_accepts_ours (void)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *image = g_build_filename (dir, "disk.img", NULL);
  g_autofree char *ours = g_build_filename (dir, "ours.bmap", NULL);
  g_autofree char *copy = g_build_filename (dir, "copy.img", NULL);
  g_autoptr (GBytes) image_bytes = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autoptr (GError) error = NULL;
  const char *copy_argv[] = { "bmaptool", "copy", "--bmap", ours, image, copy, NULL };
  const guint8 *img;
  int fd;

  if (!bmap_test_have_program ("bmaptool")) {
    g_test_skip ("bmaptool is not installed");
    return;
  }
  bmap_test_make_image (image, INTEROP_SIZE, interop_extents, G_N_ELEMENTS (interop_extents));
  image_bytes = bmap_test_read_file (image);
  img = g_bytes_get_data (image_bytes, NULL);

  for (int corrupt = 0; corrupt < 2; corrupt++) {
    g_autofree char *err = NULL;

    map = bmap_map_new (INTEROP_SIZE, 4096, BMAP_CHECKSUM_SHA512);
    for (gsize i = 0; i < G_N_ELEMENTS (interop_extents); i++) {
      guint64 first = interop_extents[i].offset / 4096;
      guint64 last = (interop_extents[i].offset + interop_extents[i].len - 1) / 4096;
      guint8 d[BMAP_CHECKSUM_MAX_LEN];

      range_digest (img, INTEROP_SIZE, 4096, first, last, BMAP_CHECKSUM_SHA512, d);
      if (corrupt && i == 2)
        d[5] ^= 1;
      bmap_map_add_range (map, first, last, d);
    }
    fd = open (ours, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    g_assert_cmpint (fd, >=, 0);
    g_assert_true (bmap_map_write_fd (map, fd, &error));
    g_assert_no_error (error);
    close (fd);
    g_clear_pointer (&map, bmap_map_free);

    if (!corrupt) {
      g_autoptr (GBytes) copy_bytes = NULL;

      g_assert_cmpint (bmap_test_run (copy_argv, NULL, &err), ==, 0);
      copy_bytes = bmap_test_read_file (copy);
      g_assert_true (g_bytes_equal (image_bytes, copy_bytes));
    } else {
      g_assert_cmpint (bmap_test_run (copy_argv, NULL, &err), !=, 0);
      g_assert_nonnull (strstr (err, "checksum mismatch"));
    }
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/format/versions", test_versions);
  g_test_add_func ("/format/no-range-checksums", test_no_range_checksums);
  g_test_add_func ("/format/malformed", test_malformed);
  g_test_add_func ("/format/not-xml", test_not_xml);
  g_test_add_func ("/format/block-map-presence", test_block_map_presence);
  g_test_add_func ("/format/billion-laughs", test_billion_laughs);
  g_test_add_func ("/format/doctype-utf16", test_doctype_utf16);
  g_test_add_func ("/format/no-stderr", test_no_stderr);
  g_test_add_func ("/format/threads", test_threads);
  g_test_add_func ("/format/encoding-errors", test_encoding_errors);
  g_test_add_func ("/format/big-line-numbers", test_big_line_numbers);
  g_test_add_func ("/format/too-large", test_too_large);
  g_test_add_func ("/format/load-fd-pipe", test_load_fd_pipe);
  g_test_add_func ("/format/load-file-missing", test_load_file_missing);
  g_test_add_func ("/format/add-range", test_add_range);
  g_test_add_func ("/format/add-range-overlap", test_add_range_overlap);
  g_test_add_func ("/format/roundtrip", test_roundtrip);
  g_test_add_func ("/format/writer-layout", test_writer_layout);
  g_test_add_func ("/format/human-sizes", test_human_sizes_match_bmaptool);
  g_test_add_func ("/format/compat", test_compat);
  g_test_add_func ("/format/bmaptool-interop", test_bmaptool_interop);
  g_test_add_func ("/format/bmaptool-interop-no-checksum", test_bmaptool_interop_no_checksum);
  g_test_add_func ("/format/bmaptool-accepts-ours", test_bmaptool_accepts_ours);
  return g_test_run ();
}
