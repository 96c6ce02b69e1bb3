/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libxml/parser.h>
#include <libxml/xmlreader.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-format.h"

/* A value longer than this is not a number or a digest anyone wrote. */
#define MAX_VALUE_LEN 1024

/* ---- the map ---- */

static guint64
blocks_for_size (guint64 image_size, guint32 block_size)
{
  return image_size / block_size + (image_size % block_size != 0 ? 1 : 0);
}

BmapMap *
bmap_map_new (guint64 image_size, guint32 block_size, BmapChecksumType range_checksum)
{
  BmapMap *map;

  g_return_val_if_fail (block_size > 0, NULL);

  map = g_new0 (BmapMap, 1);
  map->version_major = 2;
  map->version_minor = 0;
  map->image_size = image_size;
  map->block_size = block_size;
  map->blocks_count = blocks_for_size (image_size, block_size);
  map->range_checksum = range_checksum;
  map->file_checksum = BMAP_CHECKSUM_NONE;
  map->ranges = g_array_new (FALSE, FALSE, sizeof (BmapRange));
  return map;
}

void
bmap_map_free (BmapMap *map)
{
  if (map == NULL)
    return;
  g_array_unref (map->ranges);
  g_free (map);
}

void
bmap_map_add_range (BmapMap *map, guint64 first, guint64 last, const guint8 *digest)
{
  gsize digest_len;
  BmapRange range = { .first = first, .last = last };
  guint lo = 0;
  guint hi;

  g_return_if_fail (map != NULL);
  g_return_if_fail (first <= last);
  digest_len = bmap_checksum_type_get_length (map->range_checksum);
  g_return_if_fail (digest_len == 0 || digest != NULL);

  if (digest_len > 0)
    memcpy (range.digest, digest, digest_len);

  /* Ranges nearly always arrive in order: append without searching. */
  hi = map->ranges->len;
  if (hi > 0 && g_array_index (map->ranges, BmapRange, hi - 1).last < first) {
    lo = hi;
  } else {
    while (lo < hi) {
      guint mid = lo + (hi - lo) / 2;

      if (g_array_index (map->ranges, BmapRange, mid).last < first)
        lo = mid + 1;
      else
        hi = mid;
    }
  }
  /* Overlapping ranges would copy blocks twice and break the count. */
  g_return_if_fail (lo == map->ranges->len
                    || g_array_index (map->ranges, BmapRange, lo).first > last);

  g_array_insert_val (map->ranges, lo, range);
  map->mapped_blocks_count += last - first + 1;
}

guint64
bmap_map_range_bytes (const BmapMap *map, const BmapRange *range)
{
  guint64 start;
  guint64 end;

  g_return_val_if_fail (map != NULL && range != NULL, 0);

  if (range->first >= map->blocks_count || range->first > range->last)
    return 0;
  /* Written so that nothing overflows even for an image near 2^64 bytes. */
  start = range->first * map->block_size;
  if (range->last >= map->blocks_count - 1)
    end = map->image_size;
  else
    end = (range->last + 1) * map->block_size;
  return end - start;
}

guint64
bmap_map_get_mapped_bytes (const BmapMap *map)
{
  guint64 total = 0;

  g_return_val_if_fail (map != NULL, 0);
  for (guint i = 0; i < map->ranges->len; i++)
    total += bmap_map_range_bytes (map, &g_array_index (map->ranges, BmapRange, i));
  return total;
}

/* ---- the parser ---- */

typedef enum {
  ELEM_NONE,
  ELEM_IMAGE_SIZE,
  ELEM_BLOCK_SIZE,
  ELEM_BLOCKS_COUNT,
  ELEM_MAPPED_BLOCKS_COUNT,
  ELEM_CHECKSUM_TYPE,
  ELEM_FILE_CHECKSUM,
  ELEM_BLOCK_MAP,
  ELEM_RANGE,
  N_ELEMS,
} Elem;

static const char *const elem_names[N_ELEMS] = {
  [ELEM_NONE] = NULL,
  [ELEM_IMAGE_SIZE] = "ImageSize",
  [ELEM_BLOCK_SIZE] = "BlockSize",
  [ELEM_BLOCKS_COUNT] = "BlocksCount",
  [ELEM_MAPPED_BLOCKS_COUNT] = "MappedBlocksCount",
  [ELEM_CHECKSUM_TYPE] = "ChecksumType",
  [ELEM_FILE_CHECKSUM] = NULL, /* BmapFileSHA1 or BmapFileChecksum, by version */
  [ELEM_BLOCK_MAP] = "BlockMap",
  [ELEM_RANGE] = "Range",
};

typedef struct {
  const char *name;
  const char *data;
  gsize len;
  xmlTextReaderPtr reader;
  GError *error;

  /* First error libxml2 reported. */
  char *xml_error;
  int xml_error_line;
  GString *generic_text; /* what it printed through the generic handler */

  BmapMap *map;
  gboolean seen_root;
  gboolean seen[N_ELEMS];
  int lines[N_ELEMS];

  /* What this version carries. */
  const char *range_attr;         /* "sha1", "chksum" or NULL */
  const char *file_checksum_elem; /* "BmapFileSHA1", "BmapFileChecksum" or NULL */
  BmapChecksumType declared;      /* SHA1 for 1.1-1.3, ChecksumType for 1.4/2.x */

  /* The element whose text we are collecting. */
  Elem cur;
  int cur_depth;
  int cur_line;
  GString *text;
  char *range_hex;
  gboolean in_block_map;

  guint64 mapped_declared;
  char *file_hex;
  int last_range_line;
  gboolean ranges_have_digest;
} Parser;

static void
parser_clear (Parser *p)
{
  if (p->reader != NULL)
    xmlFreeTextReader (p->reader);
  g_clear_error (&p->error);
  g_free (p->xml_error);
  if (p->generic_text != NULL)
    g_string_free (p->generic_text, TRUE);
  bmap_map_free (p->map);
  if (p->text != NULL)
    g_string_free (p->text, TRUE);
  g_free (p->range_hex);
  g_free (p->file_hex);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Parser, parser_clear)

G_GNUC_PRINTF (3, 4)
static gboolean
fail (Parser *p, int line, const char *format, ...)
{
  va_list args;
  g_autofree char *msg = NULL;

  if (p->error != NULL)
    return FALSE;
  va_start (args, format);
  msg = g_strdup_vprintf (format, args);
  va_end (args);
  if (line > 0)
    p->error = g_error_new (BMAP_ERROR, BMAP_ERROR_BAD_BMAP, "%s: line %d: %s", p->name, line, msg);
  else
    p->error = g_error_new (BMAP_ERROR, BMAP_ERROR_BAD_BMAP, "%s: %s", p->name, msg);
  return FALSE;
}

/* The reader's handler, and for the time of a parse this thread's global
 * structured handler too: errors without a parser context (encoding
 * conversion, I/O) go there. Nothing reaches stderr. */
static void
structured_error_cb (void *user_data, xmlErrorPtr err)
{
  Parser *p = user_data;

  if (err == NULL || err->level < XML_ERR_ERROR || p->xml_error != NULL)
    return;
  p->xml_error = g_strstrip (g_strdup (err->message != NULL ? err->message : "unknown error"));
  /* One line in a D-Bus error or the journal. */
  g_strdelimit (p->xml_error, "\r\n", ' ');
  p->xml_error_line = err->line;
}

/* The few messages libxml2 prints through xmlGenericError() itself, in
 * pieces: kept as the error when no structured one came first. */
G_GNUC_PRINTF (2, 3)
static void
generic_error_cb (void *user_data, const char *format, ...)
{
  Parser *p = user_data;
  va_list args;

  if (p->xml_error != NULL)
    return;
  if (p->generic_text == NULL)
    p->generic_text = g_string_new (NULL);
  if (p->generic_text->len >= MAX_VALUE_LEN)
    return;
  va_start (args, format);
  g_string_append_vprintf (p->generic_text, format, args);
  va_end (args);
}

/* libxml2's global handlers are per-thread (2.9 keeps them in thread-local
 * state), and bmaps are parsed on worker threads too: each parse points
 * its own thread's handlers at its Parser and puts them back after. */
typedef struct {
  xmlGenericErrorFunc generic;
  void *generic_ctx;
  xmlStructuredErrorFunc structured;
  void *structured_ctx;
} ErrorHandlers;

static void
error_handlers_push (Parser *p, ErrorHandlers *saved)
{
  saved->generic = xmlGenericError;
  saved->generic_ctx = xmlGenericErrorContext;
  saved->structured = xmlStructuredError;
  saved->structured_ctx = xmlStructuredErrorContext;
  xmlSetGenericErrorFunc (p, generic_error_cb);
  xmlSetStructuredErrorFunc (p, structured_error_cb);
}

static void
error_handlers_pop (const ErrorHandlers *saved)
{
  xmlSetGenericErrorFunc (saved->generic_ctx, saved->generic);
  xmlSetStructuredErrorFunc (saved->structured_ctx, saved->structured);
}

/* The current node's line, 0 when libxml2 does not know it exactly:
 * element nodes stop counting at 65535 (text nodes keep the real number
 * with XML_PARSE_BIG_LINES). */
static int
node_line (Parser *p)
{
  xmlNodePtr node = xmlTextReaderCurrentNode (p->reader);
  long line = node != NULL ? xmlGetLineNo (node) : -1;

  if (line <= 0 || line == 65535)
    return 0;
  return line > G_MAXINT ? G_MAXINT : (int) line;
}

/* The parser reads a little ahead, so this may be a few lines late. */
static int
parser_line (Parser *p)
{
  int line = xmlTextReaderGetParserLineNumber (p->reader);

  return line > 0 ? line : 0;
}

typedef enum {
  NUMBER_OK,
  NUMBER_MALFORMED,
  NUMBER_OVERFLOW,
} NumberResult;

static NumberResult
parse_u64 (const char *s, gsize len, guint64 *out)
{
  guint64 v = 0;

  if (len == 0)
    return NUMBER_MALFORMED;
  for (gsize i = 0; i < len; i++) {
    guint d;

    if (!g_ascii_isdigit (s[i]))
      return NUMBER_MALFORMED;
    d = (guint) (s[i] - '0');
    if (v > (G_MAXUINT64 - d) / 10)
      return NUMBER_OVERFLOW;
    v = v * 10 + d;
  }
  *out = v;
  return NUMBER_OK;
}

static gboolean
parse_number (Parser *p, const char *elem, const char *text, guint64 *out)
{
  switch (parse_u64 (text, strlen (text), out)) {
    case NUMBER_OK:
      return TRUE;
    case NUMBER_OVERFLOW:
      return fail (p, p->cur_line, "<%s> value '%s' is too large", elem, text);
    case NUMBER_MALFORMED:
    default:
      return fail (p, p->cur_line, "<%s> value '%s' is not a number", elem, text);
  }
}

static void
trim_span (const char **s, gsize *len)
{
  while (*len > 0 && g_ascii_isspace ((*s)[0])) {
    (*s)++;
    (*len)--;
  }
  while (*len > 0 && g_ascii_isspace ((*s)[*len - 1]))
    (*len)--;
}

/* "first-last" or "n"; bmaptool allows spaces around the dash. */
static gboolean
parse_range_text (Parser *p, const char *text, guint64 *first, guint64 *last)
{
  const char *dash = strchr (text, '-');
  const char *a = text;
  gsize a_len = dash != NULL ? (gsize) (dash - text) : strlen (text);
  const char *b = dash != NULL ? dash + 1 : text;
  gsize b_len = dash != NULL ? strlen (dash + 1) : a_len;
  NumberResult ra;
  NumberResult rb;

  trim_span (&a, &a_len);
  trim_span (&b, &b_len);
  ra = parse_u64 (a, a_len, first);
  rb = parse_u64 (b, b_len, last);
  if (ra == NUMBER_MALFORMED || rb == NUMBER_MALFORMED)
    return fail (p, p->cur_line, "malformed range '%s'", text);
  if (ra == NUMBER_OVERFLOW || rb == NUMBER_OVERFLOW)
    return fail (p, p->cur_line, "range '%s': block number too large", text);
  if (*first > *last)
    return fail (p, p->cur_line, "range '%s': last block before first", text);
  return TRUE;
}

/* Checks that @hex holds exactly the digits of one @type digest. */
static gboolean
check_hex (Parser *p, int line, const char *what, const char *hex, BmapChecksumType type,
           guint8 *out)
{
  gsize want = bmap_checksum_type_get_length (type);
  gsize hex_len = strlen (hex);

  if (hex_len != 2 * want)
    return fail (p, line,
                 "%s is %" G_GSIZE_FORMAT " characters long, expected %" G_GSIZE_FORMAT
                 " hex digits for %s",
                 what, hex_len, 2 * want, bmap_checksum_type_to_string (type));
  if (!bmap_checksum_from_hex (hex, hex_len, out, want))
    return fail (p, line, "%s '%s' is not hexadecimal", what, hex);
  return TRUE;
}

static gboolean
parse_version (Parser *p, int line)
{
  g_autofree char *version = NULL;
  xmlChar *attr = xmlTextReaderGetAttribute (p->reader, BAD_CAST "version");
  const char *dot;
  guint64 major;
  guint64 minor;

  if (attr == NULL)
    return fail (p, line, "<bmap> has no version attribute");
  version = g_strstrip (g_strdup ((const char *) attr));
  xmlFree (attr);

  dot = strchr (version, '.');
  if (dot == NULL || parse_u64 (version, (gsize) (dot - version), &major) != NUMBER_OK
      || parse_u64 (dot + 1, strlen (dot + 1), &minor) != NUMBER_OK || major > 9999 || minor > 9999)
    return fail (p, line, "malformed bmap version '%s'", version);
  if (major == 0 || major > 2 || (major == 1 && minor > 4))
    return fail (p, line, "unsupported bmap version %s (versions 1.0 to 2.x are supported)",
                 version);

  p->map->version_major = (guint) major;
  p->map->version_minor = (guint) minor;
  if (major == 1 && minor == 0) {
    p->declared = BMAP_CHECKSUM_NONE;
  } else if (major == 1 && minor <= 3) {
    p->range_attr = "sha1";
    p->declared = BMAP_CHECKSUM_SHA1;
    if (minor == 3)
      p->file_checksum_elem = "BmapFileSHA1";
  } else {
    /* 1.4 was 2.0 released under the wrong number. */
    p->range_attr = "chksum";
    p->file_checksum_elem = "BmapFileChecksum";
  }
  return TRUE;
}

static Elem
lookup_child (Parser *p, const char *name)
{
  if (p->file_checksum_elem != NULL && strcmp (name, p->file_checksum_elem) == 0)
    return ELEM_FILE_CHECKSUM;
  for (Elem e = ELEM_IMAGE_SIZE; e < N_ELEMS; e++) {
    if (e == ELEM_RANGE || elem_names[e] == NULL)
      continue;
    /* Only 1.4/2.x know ChecksumType; older files with one keep SHA-1. */
    if (e == ELEM_CHECKSUM_TYPE && p->map->version_major == 1 && p->map->version_minor < 4)
      continue;
    if (strcmp (name, elem_names[e]) == 0)
      return e;
  }
  return ELEM_NONE;
}

static const char *
elem_name (Parser *p, Elem e)
{
  return e == ELEM_FILE_CHECKSUM ? p->file_checksum_elem : elem_names[e];
}

static gboolean
start_element (Parser *p, int depth)
{
  const char *name = (const char *) xmlTextReaderConstName (p->reader);
  int exact_line = node_line (p);
  int line = exact_line > 0 ? exact_line : parser_line (p);
  Elem e;

  if (name == NULL)
    return fail (p, line, "out of memory");

  if (depth == 0) {
    if (strcmp (name, "bmap") != 0)
      return fail (p, line, "root element is <%s>, expected <bmap>", name);
    p->seen_root = TRUE;
    return parse_version (p, line);
  }

  if (depth == 1) {
    e = lookup_child (p, name);
    if (e == ELEM_NONE)
      return TRUE; /* later minor versions may add elements */
    if (p->seen[e])
      return fail (p, line, "duplicate <%s> (first on line %d)", name, p->lines[e]);
    p->seen[e] = TRUE;
    p->lines[e] = line;
    if (e == ELEM_BLOCK_MAP) {
      /* Range digests are decoded as they stream past, so the type must be
       * known by then; the reference tool always writes it first. */
      if (p->range_attr != NULL && p->declared == BMAP_CHECKSUM_NONE)
        return fail (p, line, "<ChecksumType> must come before <BlockMap>");
      p->in_block_map = TRUE;
      return TRUE;
    }
  } else if (depth == 2 && p->in_block_map && strcmp (name, "Range") == 0) {
    e = ELEM_RANGE;
    g_clear_pointer (&p->range_hex, g_free);
    if (p->range_attr != NULL) {
      xmlChar *attr = xmlTextReaderGetAttribute (p->reader, BAD_CAST p->range_attr);

      if (attr != NULL) {
        p->range_hex = g_strstrip (g_strdup ((const char *) attr));
        xmlFree (attr);
      }
    }
  } else {
    return TRUE;
  }

  p->cur = e;
  p->cur_depth = depth;
  /* Unknown: the text node's line will do (see collect_text()). */
  p->cur_line = exact_line;
  g_string_truncate (p->text, 0);
  return TRUE;
}

static gboolean
collect_text (Parser *p)
{
  const char *value = (const char *) xmlTextReaderConstValue (p->reader);

  if (p->cur_line == 0)
    p->cur_line = node_line (p);
  if (value != NULL)
    g_string_append (p->text, value);
  if (p->text->len > MAX_VALUE_LEN)
    return fail (p, p->cur_line, "<%s> value is longer than %d characters", elem_name (p, p->cur),
                 MAX_VALUE_LEN);
  return TRUE;
}

static gboolean
end_range (Parser *p, const char *text)
{
  BmapMap *map = p->map;
  BmapRange range = { 0 };
  gboolean has_digest = p->range_hex != NULL;

  if (!parse_range_text (p, text, &range.first, &range.last))
    return FALSE;

  if (map->ranges->len > 0) {
    const BmapRange *prev = &g_array_index (map->ranges, BmapRange, map->ranges->len - 1);

    if (range.first < prev->first)
      return fail (p, p->cur_line,
                   "range %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT
                   " is out of order (after range %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT ")",
                   range.first, range.last, prev->first, prev->last);
    if (range.first <= prev->last)
      return fail (p, p->cur_line,
                   "range %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT
                   " overlaps range %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT,
                   range.first, range.last, prev->first, prev->last);
    /* One type per map: a file that checksums only some ranges would leave
     * the others silently unverified. */
    if (has_digest != p->ranges_have_digest)
      return fail (p, p->cur_line,
                   "range %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT
                   " %s a %s attribute but the ranges before it %s",
                   range.first, range.last, has_digest ? "has" : "lacks", p->range_attr,
                   has_digest ? "do not" : "do");
  } else {
    p->ranges_have_digest = has_digest;
  }

  if (p->seen[ELEM_BLOCKS_COUNT] && range.last >= map->blocks_count)
    return fail (p, p->cur_line,
                 "range %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT
                 " is past the end of the image (BlocksCount %" G_GUINT64_FORMAT ")",
                 range.first, range.last, map->blocks_count);

  if (has_digest) {
    g_autofree char *what
        = g_strdup_printf ("range %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT ": %s", range.first,
                           range.last, p->range_attr);

    if (!check_hex (p, p->cur_line, what, p->range_hex, p->declared, range.digest))
      return FALSE;
  }

  g_array_append_val (map->ranges, range);
  p->last_range_line = p->cur_line;
  return TRUE;
}

/* Checked as soon as all three are known, before any range is measured
 * against BlocksCount. */
static gboolean
check_geometry (Parser *p)
{
  BmapMap *map = p->map;
  guint64 expected;

  if (!p->seen[ELEM_IMAGE_SIZE] || !p->seen[ELEM_BLOCK_SIZE] || !p->seen[ELEM_BLOCKS_COUNT])
    return TRUE;
  expected = blocks_for_size (map->image_size, map->block_size);
  if (map->blocks_count != expected)
    return fail (p, p->lines[ELEM_BLOCKS_COUNT],
                 "<BlocksCount> %" G_GUINT64_FORMAT " does not match <ImageSize> %" G_GUINT64_FORMAT
                 " and <BlockSize> %u (%" G_GUINT64_FORMAT " blocks)",
                 map->blocks_count, map->image_size, map->block_size, expected);
  return TRUE;
}

static gboolean
end_element (Parser *p, int depth)
{
  BmapMap *map = p->map;
  Elem e = p->cur;
  const char *name;
  char *text;
  guint64 v;

  if (depth == 1 && p->in_block_map && e == ELEM_NONE) {
    p->in_block_map = FALSE;
    return TRUE;
  }
  if (e == ELEM_NONE || depth != p->cur_depth)
    return TRUE;
  p->cur = ELEM_NONE;
  if (p->cur_line == 0)
    p->cur_line = parser_line (p);
  if (e != ELEM_RANGE)
    p->lines[e] = p->cur_line;
  name = elem_name (p, e);
  text = g_strstrip (p->text->str);

  switch (e) {
    case ELEM_IMAGE_SIZE:
      if (!parse_number (p, name, text, &v))
        return FALSE;
      if (v == 0)
        return fail (p, p->cur_line, "<ImageSize> is 0");
      map->image_size = v;
      return check_geometry (p);
    case ELEM_BLOCK_SIZE:
      if (!parse_number (p, name, text, &v))
        return FALSE;
      if (v == 0)
        return fail (p, p->cur_line, "<BlockSize> is 0");
      if (v > G_MAXUINT32)
        return fail (p, p->cur_line, "<BlockSize> %" G_GUINT64_FORMAT " is too large", v);
      map->block_size = (guint32) v;
      return check_geometry (p);
    case ELEM_BLOCKS_COUNT:
      return parse_number (p, name, text, &map->blocks_count) && check_geometry (p);
    case ELEM_MAPPED_BLOCKS_COUNT:
      return parse_number (p, name, text, &p->mapped_declared);
    case ELEM_CHECKSUM_TYPE:
      if (!bmap_checksum_type_from_string (text, &p->declared) || p->declared == BMAP_CHECKSUM_NONE)
        return fail (p, p->cur_line,
                     "unknown <ChecksumType> '%s' (expected sha1, sha256 or sha512)", text);
      return TRUE;
    case ELEM_FILE_CHECKSUM:
      p->file_hex = g_strdup (text);
      return TRUE;
    case ELEM_RANGE:
      return end_range (p, text);
    case ELEM_BLOCK_MAP:
    case ELEM_NONE:
    case N_ELEMS:
    default:
      return TRUE;
  }
}

/* The file's digest with its own stored hex digits replaced by '0'. */
static gboolean
verify_file_checksum (Parser *p)
{
  int line = p->lines[ELEM_FILE_CHECKSUM];
  guint8 expected[BMAP_CHECKSUM_MAX_LEN];
  guint8 actual[BMAP_CHECKSUM_MAX_LEN];
  char actual_hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];
  char zeros[BMAP_CHECKSUM_MAX_HEX_LEN];
  g_autoptr (BmapHasher) hasher = NULL;
  gsize hex_len = strlen (p->file_hex);
  gsize digest_len = bmap_checksum_type_get_length (p->declared);
  const char *pos;
  gsize off;
  g_autofree char *what = g_strdup_printf ("<%s>", p->file_checksum_elem);

  if (!check_hex (p, line, what, p->file_hex, p->declared, expected))
    return FALSE;

  /* As the reference tool does: the first occurrence of the stored text. */
  pos = memmem (p->data, p->len, p->file_hex, hex_len);
  if (pos == NULL)
    return fail (p, line, "<%s> value is not written literally in the file", p->file_checksum_elem);
  off = (gsize) (pos - p->data);
  memset (zeros, '0', hex_len);

  hasher = bmap_hasher_new (p->declared);
  bmap_hasher_update (hasher, p->data, off);
  bmap_hasher_update (hasher, zeros, hex_len);
  bmap_hasher_update (hasher, p->data + off + hex_len, p->len - off - hex_len);
  bmap_hasher_finish (hasher, actual);

  if (memcmp (expected, actual, digest_len) != 0) {
    bmap_checksum_to_hex (actual, digest_len, actual_hex);
    return fail (p, line, "checksum mismatch for the bmap file itself: expected %s, calculated %s",
                 p->file_hex, actual_hex);
  }
  p->map->file_checksum = p->declared;
  return TRUE;
}

static gboolean
finish (Parser *p)
{
  BmapMap *map = p->map;
  guint64 mapped = 0;
  static const Elem required[] = {
    ELEM_IMAGE_SIZE, ELEM_BLOCK_SIZE, ELEM_BLOCKS_COUNT, ELEM_BLOCK_MAP, ELEM_MAPPED_BLOCKS_COUNT,
  };

  if (!p->seen_root)
    return fail (p, 0, "no <bmap> element");
  for (gsize i = 0; i < G_N_ELEMENTS (required); i++) {
    if (!p->seen[required[i]])
      return fail (p, 0, "missing <%s> element", elem_names[required[i]]);
  }
  if (p->range_attr != NULL && strcmp (p->range_attr, "chksum") == 0
      && !p->seen[ELEM_CHECKSUM_TYPE])
    return fail (p, 0, "missing <ChecksumType> element");
  if (p->file_checksum_elem != NULL && !p->seen[ELEM_FILE_CHECKSUM])
    return fail (p, 0, "missing <%s> element", p->file_checksum_elem);

  if (!check_geometry (p))
    return FALSE;

  /* Ranges are sorted, so only the last one can reach past the end (when
   * BlocksCount came after BlockMap and could not be checked earlier). */
  if (map->ranges->len > 0) {
    const BmapRange *last = &g_array_index (map->ranges, BmapRange, map->ranges->len - 1);

    if (last->last >= map->blocks_count)
      return fail (p, p->last_range_line,
                   "range %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT
                   " is past the end of the image (BlocksCount %" G_GUINT64_FORMAT ")",
                   last->first, last->last, map->blocks_count);
  }
  for (guint i = 0; i < map->ranges->len; i++) {
    const BmapRange *r = &g_array_index (map->ranges, BmapRange, i);

    mapped += r->last - r->first + 1;
  }
  if (mapped != p->mapped_declared)
    return fail (p, p->lines[ELEM_MAPPED_BLOCKS_COUNT],
                 "<MappedBlocksCount> is %" G_GUINT64_FORMAT
                 " but the ranges hold %" G_GUINT64_FORMAT " blocks",
                 p->mapped_declared, mapped);
  map->mapped_blocks_count = mapped;

  if (p->file_checksum_elem != NULL && !verify_file_checksum (p))
    return FALSE;

  /* A file without range digests (bmaptool --no-checksum) still has a
   * ChecksumType; the ranges themselves carry nothing to verify. */
  map->range_checksum
      = (map->ranges->len == 0 || p->ranges_have_digest) ? p->declared : BMAP_CHECKSUM_NONE;
  return TRUE;
}

/* DOCTYPE can only appear in the prolog: look for it there before libxml2
 * sees the file, so entity bombs and external subsets are never parsed.
 * Returns the line of the DOCTYPE, 0 when there is none. */
static int
prolog_doctype_line (const char *data, gsize len)
{
  const char *p = data;
  const char *end = data + len;
  int line = 1;

  if (len >= 3 && memcmp (p, "\xEF\xBB\xBF", 3) == 0)
    p += 3;
  for (;;) {
    const char *terminator;
    gsize opener_len;
    const char *close;

    while (p < end && g_ascii_isspace (*p))
      p++;
    if ((gsize) (end - p) >= 2 && memcmp (p, "<?", 2) == 0) {
      opener_len = 2;
      terminator = "?>";
    } else if ((gsize) (end - p) >= 4 && memcmp (p, "<!--", 4) == 0) {
      opener_len = 4;
      terminator = "-->";
    } else {
      break;
    }
    close
        = memmem (p + opener_len, (gsize) (end - p) - opener_len, terminator, strlen (terminator));
    if (close == NULL)
      return 0;
    p = close + strlen (terminator);
  }
  if ((gsize) (end - p) < 9 || memcmp (p, "<!DOCTYPE", 9) != 0)
    return 0;
  for (const char *q = data; q < p; q++) {
    if (*q == '\n')
      line++;
  }
  return line;
}

static void
init_libxml (void)
{
  static gsize once = 0;

  /* Concurrent first calls of xmlInitParser() are not safe in 2.9. */
  if (g_once_init_enter (&once)) {
    xmlInitParser ();
    g_once_init_leave (&once, 1);
  }
}

BmapMap *
bmap_map_load_data (const char *data, gsize len, const char *name, GError **error)
{
  g_auto (Parser) p = { 0 };
  ErrorHandlers saved_handlers;
  int doctype_line;
  int ret;

  g_return_val_if_fail (data != NULL || len == 0, NULL);
  if (name == NULL)
    name = "bmap";

  p.name = name;
  p.data = data;
  p.len = len;
  if (len > BMAP_FORMAT_MAX_FILE_SIZE) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                 "%s: %" G_GSIZE_FORMAT " bytes is larger than the %d MiB limit for bmap files",
                 name, len, BMAP_FORMAT_MAX_FILE_SIZE / (1024 * 1024));
    return NULL;
  }
  /* Before anything looks at @data, which may be NULL when empty. */
  if (len == 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP, "%s: the file is empty", name);
    return NULL;
  }
  doctype_line = prolog_doctype_line (data, len);
  if (doctype_line > 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                 "%s: line %d: DOCTYPE declarations are not allowed in a bmap", name, doctype_line);
    return NULL;
  }

  init_libxml ();
  p.map = g_new0 (BmapMap, 1);
  p.map->ranges = g_array_new (FALSE, FALSE, sizeof (BmapRange));
  p.text = g_string_new (NULL);
  /* No XML_PARSE_NOENT (no entity substitution) and no DTD loading. */
  error_handlers_push (&p, &saved_handlers);
  p.reader
      = xmlReaderForMemory (data, (int) len, NULL, NULL, XML_PARSE_NONET | XML_PARSE_BIG_LINES);
  if (p.reader == NULL) {
    error_handlers_pop (&saved_handlers);
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP, "%s: cannot create an XML reader", name);
    return NULL;
  }
  xmlTextReaderSetStructuredErrorHandler (p.reader, structured_error_cb, &p);

  while ((ret = xmlTextReaderRead (p.reader)) == 1) {
    int depth = xmlTextReaderDepth (p.reader);
    gboolean ok = TRUE;

    switch (xmlTextReaderNodeType (p.reader)) {
      case XML_READER_TYPE_DOCUMENT_TYPE:
        ok = fail (&p, node_line (&p), "DOCTYPE declarations are not allowed in a bmap");
        break;
      case XML_READER_TYPE_ENTITY_REFERENCE:
      case XML_READER_TYPE_ENTITY:
        ok = fail (&p, node_line (&p), "entity references are not allowed in a bmap");
        break;
      case XML_READER_TYPE_ELEMENT:
        ok = start_element (&p, depth);
        if (ok && xmlTextReaderIsEmptyElement (p.reader) == 1)
          ok = end_element (&p, depth);
        break;
      case XML_READER_TYPE_END_ELEMENT:
        ok = end_element (&p, depth);
        break;
      case XML_READER_TYPE_TEXT:
      case XML_READER_TYPE_CDATA:
      case XML_READER_TYPE_WHITESPACE:
      case XML_READER_TYPE_SIGNIFICANT_WHITESPACE:
        if (p.cur != ELEM_NONE && depth == p.cur_depth + 1)
          ok = collect_text (&p);
        break;
      default:
        break;
    }
    if (!ok)
      break;
  }

  /* The reader (freed with @p) reports nothing more. */
  error_handlers_pop (&saved_handlers);

  /* libxml2 may stop without returning -1 after it reported an error. */
  if (p.error == NULL && (ret < 0 || p.xml_error != NULL)) {
    if (p.xml_error != NULL) {
      /* Errors without a parser context (encoding) come without a line. */
      fail (&p, p.xml_error_line > 0 ? p.xml_error_line : parser_line (&p),
            "not a well-formed XML file: %s", p.xml_error);
    } else if (p.generic_text != NULL) {
      g_autofree char *text = g_strstrip (g_strdup (p.generic_text->str));

      fail (&p, parser_line (&p), "not a well-formed XML file: %s", text);
    } else {
      fail (&p, 0, "not a well-formed XML file");
    }
  }
  if (p.error == NULL)
    finish (&p);
  if (p.error != NULL) {
    g_propagate_error (error, g_steal_pointer (&p.error));
    return NULL;
  }
  return g_steal_pointer (&p.map);
}

BmapMap *
bmap_map_load_fd (int fd, const char *name, GError **error)
{
  g_autoptr (GByteArray) buf = g_byte_array_new ();
  gsize chunk = 64 * 1024;

  if (name == NULL)
    name = "bmap";
  /* Read to EOF rather than trusting st_size: pipes and growing files. One
   * byte past the limit tells us the file is too big. */
  for (;;) {
    gsize old = buf->len;
    gsize want = MIN (chunk, (gsize) BMAP_FORMAT_MAX_FILE_SIZE + 1 - old);
    gssize n;

    if (want == 0)
      break;
    g_byte_array_set_size (buf, (guint) (old + want));
    n = read (fd, buf->data + old, want);
    if (n < 0) {
      int errsv = errno;

      g_byte_array_set_size (buf, (guint) old);
      if (errsv == EINTR)
        continue;
      bmap_error_set_errno (error, errsv, "cannot read bmap %s", name);
      return NULL;
    }
    g_byte_array_set_size (buf, (guint) (old + (gsize) n));
    if (n == 0)
      break;
    if (chunk < 4 * 1024 * 1024)
      chunk *= 2;
  }
  if (buf->len > BMAP_FORMAT_MAX_FILE_SIZE) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                 "%s: larger than the %d MiB limit for bmap files", name,
                 BMAP_FORMAT_MAX_FILE_SIZE / (1024 * 1024));
    return NULL;
  }
  return bmap_map_load_data ((const char *) buf->data, buf->len, name, error);
}

BmapMap *
bmap_map_load_file (const char *path, GError **error)
{
  BmapMap *map;
  int fd;

  g_return_val_if_fail (path != NULL, NULL);
  fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    bmap_error_set_errno (error, errno, "cannot open bmap %s", path);
    return NULL;
  }
  map = bmap_map_load_fd (fd, path, error);
  close (fd);
  return map;
}

/* ---- the writer ---- */

/* "%.1f" whatever LC_NUMERIC says: bmap files always use a dot. */
static const char *
format_1f (char *buf, double value)
{
  return g_ascii_formatd (buf, G_ASCII_DTOSTR_BUF_SIZE, "%.1f", value);
}

/* bmaptool's human_size(), quirks included: after TiB it divides no further
 * and prints EiB. Python's and glibc's "%.1f" both round the exact binary
 * value, so the output matches byte for byte. */
static char *
human_size (guint64 size)
{
  static const char *const modifiers[] = { "KiB", "MiB", "GiB", "TiB" };
  char num[G_ASCII_DTOSTR_BUF_SIZE];
  double s = (double) size;

  if (size == 1)
    return g_strdup ("1 byte");
  if (size < 512)
    return g_strdup_printf ("%" G_GUINT64_FORMAT " bytes", size);
  for (gsize i = 0; i < G_N_ELEMENTS (modifiers); i++) {
    s /= 1024.0;
    if (s < 1024)
      return g_strconcat (format_1f (num, s), " ", modifiers[i], NULL);
  }
  return g_strconcat (format_1f (num, s), " EiB", NULL);
}

#define START_TEMPLATE                                                                             \
  "<?xml version=\"1.0\" ?>\n"                                                                     \
  "<!-- This file contains the block map for an image file, which is basically\n"                  \
  "     a list of useful (mapped) block numbers in the image file. In other words,\n"              \
  "     it lists only those blocks which contain data (boot sector, partition\n"                   \
  "     table, file-system metadata, files, directories, extents, etc). These\n"                   \
  "     blocks have to be copied to the target device. The other blocks do not\n"                  \
  "     contain any useful data and do not have to be copied to the target\n"                      \
  "     device.\n"                                                                                 \
  "\n"                                                                                             \
  "     The block map an optimization which allows to copy or flash the image to\n"                \
  "     the image quicker than copying of flashing the entire image. This is\n"                    \
  "     because with bmap less data is copied: <MappedBlocksCount> blocks instead\n"               \
  "     of <BlocksCount> blocks.\n"                                                                \
  "\n"                                                                                             \
  "     Besides the machine-readable data, this file contains useful commentaries\n"               \
  "     which contain human-readable information like image size, percentage of\n"                 \
  "     mapped data, etc.\n"                                                                       \
  "\n"                                                                                             \
  "     The 'version' attribute is the block map file format version in the\n"                     \
  "     'major.minor' format. The version major number is increased whenever an\n"                 \
  "     incompatible block map format change is made. The minor number changes\n"                  \
  "     in case of minor backward-compatible changes. -->\n"                                       \
  "\n"                                                                                             \
  "<bmap version=\"2.0\">\n"                                                                       \
  "    <!-- Image size in bytes: %s -->\n"                                                         \
  "    <ImageSize> %" G_GUINT64_FORMAT " </ImageSize>\n"                                           \
  "\n"                                                                                             \
  "    <!-- Size of a block in bytes -->\n"                                                        \
  "    <BlockSize> %u </BlockSize>\n"                                                              \
  "\n"                                                                                             \
  "    <!-- Count of blocks in the image file -->\n"                                               \
  "    <BlocksCount> %" G_GUINT64_FORMAT " </BlocksCount>\n"                                       \
  "\n"

static void
append_spaces (GString *s, gsize n)
{
  for (gsize i = 0; i < n; i++)
    g_string_append_c (s, ' ');
}

char *
bmap_map_to_xml (const BmapMap *map, gsize *len)
{
  g_autoptr (GString) xml = g_string_new (NULL);
  g_autofree char *image_human = NULL;
  g_autofree char *mapped_human = NULL;
  g_autofree char *mapped_text = NULL;
  g_autofree char *count_text = NULL;
  g_autofree char *blocks_text = NULL;
  g_autoptr (BmapHasher) hasher = NULL;
  BmapChecksumType type;
  gsize range_len;
  gsize cs_len;
  gsize pos1;
  gsize pos2;
  gsize chksum_pos;
  guint8 digest[BMAP_CHECKSUM_MAX_LEN];
  char hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];
  guint64 mapped_size;
  double percent;
  char num[G_ASCII_DTOSTR_BUF_SIZE];

  g_return_val_if_fail (map != NULL, NULL);

  /* bmaptool --no-checksum still writes ChecksumType and the file checksum
   * (sha256); it only leaves out the range chksum attributes. */
  range_len = bmap_checksum_type_get_length (map->range_checksum);
  if (map->range_checksum != BMAP_CHECKSUM_NONE)
    type = map->range_checksum;
  else if (map->file_checksum != BMAP_CHECKSUM_NONE)
    type = map->file_checksum;
  else
    type = BMAP_CHECKSUM_SHA256;
  cs_len = 2 * bmap_checksum_type_get_length (type);

  image_human = human_size (map->image_size);
  blocks_text = g_strdup_printf ("%" G_GUINT64_FORMAT, map->blocks_count);
  g_string_append_printf (xml, START_TEMPLATE, image_human, map->image_size, map->block_size,
                          map->blocks_count);

  /* Like bmaptool, reserve room for the counts, write the ranges, then fill
   * the counts in over the padding. */
  g_string_append (xml, "    <!-- Count of mapped blocks: ");
  pos1 = xml->len;
  append_spaces (xml, strlen (image_human));
  g_string_append (xml, " or ");
  append_spaces (xml, strlen ("100.0%"));
  g_string_append (xml, "   -->\n    <MappedBlocksCount> ");
  pos2 = xml->len;
  append_spaces (xml, strlen (blocks_text));
  g_string_append (xml, " </MappedBlocksCount>\n\n");
  g_string_append (xml, "    <!-- Type of checksum used in this file -->\n");
  g_string_append_printf (xml, "    <ChecksumType> %s </ChecksumType>\n\n",
                          bmap_checksum_type_to_string (type));
  g_string_append (xml, "    <!-- The checksum of this bmap file. When it is calculated, the value "
                        "of\n"
                        "         the checksum has be zero (all ASCII \"0\" symbols).  -->\n"
                        "    <BmapFileChecksum> ");
  chksum_pos = xml->len;
  for (gsize i = 0; i < cs_len; i++)
    g_string_append_c (xml, '0');
  g_string_append (xml, " </BmapFileChecksum>\n\n"
                        "    <!-- The block map which consists of elements which may either be a\n"
                        "         range of blocks or a single block. The 'chksum' attribute\n"
                        "         (if present) is the checksum of this blocks range. -->\n"
                        "    <BlockMap>\n");

  for (guint i = 0; i < map->ranges->len; i++) {
    const BmapRange *r = &g_array_index (map->ranges, BmapRange, i);

    g_string_append (xml, "        <Range");
    if (range_len > 0) {
      bmap_checksum_to_hex (r->digest, range_len, hex);
      g_string_append_printf (xml, " chksum=\"%s\"", hex);
    }
    if (r->first != r->last)
      g_string_append_printf (xml, "> %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT " </Range>\n",
                              r->first, r->last);
    else
      g_string_append_printf (xml, "> %" G_GUINT64_FORMAT " </Range>\n", r->first);
  }
  g_string_append (xml, "    </BlockMap>\n</bmap>\n");

  /* bmaptool counts whole blocks here, the partial last one included. */
  if (map->block_size > 0 && map->mapped_blocks_count > G_MAXUINT64 / map->block_size)
    mapped_size = G_MAXUINT64;
  else
    mapped_size = map->mapped_blocks_count * map->block_size;
  mapped_human = human_size (mapped_size);
  percent = map->blocks_count > 0
                ? ((double) map->mapped_blocks_count * 100.0) / (double) map->blocks_count
                : 0.0;
  mapped_text = g_strdup_printf ("%s or %s%%", mapped_human, format_1f (num, percent));
  count_text = g_strdup_printf ("%" G_GUINT64_FORMAT, map->mapped_blocks_count);
  g_string_overwrite (xml, pos1, mapped_text);
  g_string_overwrite (xml, pos2, count_text);

  hasher = bmap_hasher_new (type);
  bmap_hasher_update (hasher, xml->str, xml->len);
  bmap_hasher_finish (hasher, digest);
  bmap_checksum_to_hex (digest, cs_len / 2, hex);
  g_string_overwrite (xml, chksum_pos, hex);

  if (len != NULL)
    *len = xml->len;
  return g_string_free (g_steal_pointer (&xml), FALSE);
}

gboolean
bmap_map_write_fd (const BmapMap *map, int fd, GError **error)
{
  gsize len = 0;
  g_autofree char *xml = bmap_map_to_xml (map, &len);
  gsize done = 0;

  g_return_val_if_fail (xml != NULL, FALSE);
  while (done < len) {
    gssize n = write (fd, xml + done, len - done);

    if (n < 0) {
      if (errno == EINTR)
        continue;
      bmap_error_set_errno (error, errno, "cannot write the bmap");
      return FALSE;
    }
    done += (gsize) n;
  }
  return TRUE;
}
