/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-checksum.h"
#include "bmap-create.h"
#include "bmap-error.h"
#include "bmap-test-util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024ull)

typedef struct {
  const char *name;
  guint64 size;
  BmapTestExtent extents[4];
  guint n_extents;
} ImageCase;

static const ImageCase image_cases[] = {
  { "one-byte", 1, { { 0, 1 } }, 1 },
  { "one-block-minus-one", 4095, { { 0, 4095 } }, 1 },
  { "one-block-plus-one", 4097, { { 0, 10 }, { 4096, 1 } }, 2 },
  { "one-block-plus-one-hole", 4097, { { 0, 4096 } }, 1 },
  { "mib-plus-one-holes",
    1 * MiB + 1,
    { { 64 * KiB, 64 * KiB }, { 300 * KiB, 5000 }, { 1 * MiB, 1 } },
    3 },
  { "hole-at-start", 1 * MiB + 1, { { 512 * KiB, 512 * KiB + 1 } }, 1 },
  { "hole-at-end", 1 * MiB + 1, { { 0, 100 * KiB } }, 1 },
  { "hole-in-middle", 3 * MiB + 7, { { 0, 1 * MiB }, { 2 * MiB, 1 * MiB + 7 } }, 2 },
  { "fully-mapped", 2 * MiB + 3, { { 0, 2 * MiB + 3 } }, 1 },
  { "all-hole", 5 * MiB + 1, { { 0, 0 } }, 0 },
  { "big-range", 64 * MiB, { { 1 * MiB, 40 * MiB + 12345 }, { 63 * MiB, 1 * MiB } }, 2 },
};

static char *
image_path (const char *name)
{
  static char *dir;

  if (dir == NULL)
    dir = bmap_test_tmpdir ();
  return g_build_filename (dir, name, NULL);
}

static int
open_image (const char *path)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  g_assert_cmpint (fd, >=, 0);
  return fd;
}

static BmapMap *
create_map (const char *path, BmapChecksumType checksum, guint n_threads, GError **error)
{
  BmapCreateOptions options;
  BmapMap *map;
  int fd = open_image (path);

  bmap_create_options_init (&options);
  options.checksum = checksum;
  options.n_threads = n_threads;
  map = bmap_create (fd, path, &options, NULL, error);
  close (fd);
  return map;
}

/* Checks the header fields and every range's digest against the image's
 * bytes, read and hashed here independently. */
static void
assert_map_matches_image (const BmapMap *map, const char *path, BmapChecksumType checksum)
{
  g_autoptr (GBytes) bytes = bmap_test_read_file (path);
  gsize size = 0;
  const guint8 *data = g_bytes_get_data (bytes, &size);
  gsize len = bmap_checksum_type_get_length (checksum);
  guint64 mapped = 0;

  g_assert_cmpuint (map->image_size, ==, size);
  g_assert_cmpuint (map->block_size, >, 0);
  g_assert_cmpuint (map->blocks_count, ==, (size + map->block_size - 1) / map->block_size);
  g_assert_cmpint (map->range_checksum, ==, checksum);

  for (guint i = 0; i < map->ranges->len; i++) {
    const BmapRange *r = &g_array_index (map->ranges, BmapRange, i);
    guint64 start = r->first * map->block_size;
    guint64 end = MIN ((r->last + 1) * map->block_size, size);
    guint8 want[BMAP_CHECKSUM_MAX_LEN] = { 0 };

    g_assert_cmpuint (r->first, <=, r->last);
    g_assert_cmpuint (r->last, <, map->blocks_count);
    if (i > 0)
      g_assert_cmpuint (r->first, >, g_array_index (map->ranges, BmapRange, i - 1).last + 1);
    mapped += r->last - r->first + 1;
    if (checksum != BMAP_CHECKSUM_NONE)
      bmap_checksum_compute (checksum, data + start, end - start, want);
    g_assert_cmpmem (r->digest, len, want, len);
  }
  g_assert_cmpuint (map->mapped_blocks_count, ==, mapped);
}

static void
assert_maps_equal (const BmapMap *a, const BmapMap *b)
{
  gsize len = bmap_checksum_type_get_length (a->range_checksum);

  g_assert_cmpuint (a->image_size, ==, b->image_size);
  g_assert_cmpuint (a->block_size, ==, b->block_size);
  g_assert_cmpuint (a->blocks_count, ==, b->blocks_count);
  g_assert_cmpuint (a->mapped_blocks_count, ==, b->mapped_blocks_count);
  g_assert_cmpint (a->range_checksum, ==, b->range_checksum);
  g_assert_cmpuint (a->ranges->len, ==, b->ranges->len);
  for (guint i = 0; i < a->ranges->len; i++) {
    const BmapRange *ra = &g_array_index (a->ranges, BmapRange, i);
    const BmapRange *rb = &g_array_index (b->ranges, BmapRange, i);

    g_assert_cmpuint (ra->first, ==, rb->first);
    g_assert_cmpuint (ra->last, ==, rb->last);
    g_assert_cmpmem (ra->digest, len, rb->digest, len);
  }
}

static char *
make_case (const ImageCase *c)
{
  char *path = image_path (c->name);

  bmap_test_make_image (path, c->size, c->extents, c->n_extents);
  return path;
}

static void
test_cases (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (image_cases); i++) {
    g_autofree char *path = make_case (&image_cases[i]);
    g_autoptr (GError) error = NULL;
    g_autoptr (BmapMap) map = create_map (path, BMAP_CHECKSUM_SHA256, 0, &error);

    g_test_message ("%s", image_cases[i].name);
    g_assert_no_error (error);
    assert_map_matches_image (map, path, BMAP_CHECKSUM_SHA256);
    if (image_cases[i].n_extents == 0)
      g_assert_cmpuint (map->ranges->len, ==, 0);
  }
}

static void
test_checksum_types (void)
{
  static const BmapChecksumType types[]
      = { BMAP_CHECKSUM_SHA1, BMAP_CHECKSUM_SHA256, BMAP_CHECKSUM_SHA512, BMAP_CHECKSUM_NONE };
  g_autofree char *path = make_case (&image_cases[4]);

  for (gsize i = 0; i < G_N_ELEMENTS (types); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (BmapMap) map = create_map (path, types[i], 2, &error);

    g_assert_no_error (error);
    g_assert_cmpuint (map->ranges->len, ==, 3);
    assert_map_matches_image (map, path, types[i]);
  }
}

/* Whatever the number of threads, the same map: each digest lands in its
 * own range. */
static void
test_threads (void)
{
  const guint n = 700;
  g_autofree char *path = image_path ("threads");
  g_autofree BmapTestExtent *extents = g_new (BmapTestExtent, n);
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) one = NULL;

  /* Ranges of varied sizes, separated by holes. */
  for (guint i = 0; i < n; i++) {
    extents[i].offset = (guint64) i * 64 * KiB;
    extents[i].len = 4 * KiB * (1 + i % 13);
  }
  bmap_test_make_image (path, (guint64) n * 64 * KiB, extents, n);

  one = create_map (path, BMAP_CHECKSUM_SHA256, 1, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (one->ranges->len, ==, n);
  assert_map_matches_image (one, path, BMAP_CHECKSUM_SHA256);
  for (guint n_threads = 2; n_threads <= 8; n_threads *= 2) {
    g_autoptr (BmapMap) many = create_map (path, BMAP_CHECKSUM_SHA256, n_threads, &error);

    g_assert_no_error (error);
    assert_maps_equal (one, many);
  }
}

static void
test_no_checksum (void)
{
  g_autofree char *path = make_case (&image_cases[7]);
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) sha = create_map (path, BMAP_CHECKSUM_SHA256, 0, &error);
  g_autoptr (BmapMap) none = create_map (path, BMAP_CHECKSUM_NONE, 0, &error);
  const guint8 zero[BMAP_CHECKSUM_MAX_LEN] = { 0 };

  g_assert_no_error (error);
  g_assert_cmpint (none->range_checksum, ==, BMAP_CHECKSUM_NONE);
  g_assert_cmpuint (none->ranges->len, ==, sha->ranges->len);
  g_assert_cmpuint (none->mapped_blocks_count, ==, sha->mapped_blocks_count);
  for (guint i = 0; i < none->ranges->len; i++) {
    const BmapRange *r = &g_array_index (none->ranges, BmapRange, i);

    g_assert_cmpuint (r->first, ==, g_array_index (sha->ranges, BmapRange, i).first);
    g_assert_cmpuint (r->last, ==, g_array_index (sha->ranges, BmapRange, i).last);
    g_assert_cmpmem (r->digest, sizeof (zero), zero, sizeof (zero));
  }
}

static void
test_empty_image (void)
{
  g_autofree char *path = image_path ("empty");
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = NULL;

  bmap_test_make_image (path, 0, NULL, 0);
  map = create_map (path, BMAP_CHECKSUM_SHA256, 0, &error);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "image is empty"));
  g_assert_nonnull (strstr (error->message, path));
  g_assert_null (map);
}

static void
test_not_a_file (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = NULL;
  int fds[2];

  g_assert_cmpint (pipe (fds), ==, 0);
  map = bmap_create (fds[0], "pipe", NULL, NULL, &error);
  close (fds[0]);
  close (fds[1]);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT);
  g_assert_null (map);
}

static void
test_cancelled_before (void)
{
  g_autofree char *path = make_case (&image_cases[4]);
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = NULL;
  BmapCreateOptions options;
  int fd = open_image (path);

  bmap_create_options_init (&options);
  options.cancellable = cancellable;
  g_cancellable_cancel (cancellable);
  map = bmap_create (fd, path, &options, NULL, &error);
  close (fd);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED);
  g_assert_null (map);
}

typedef struct {
  GArray *reports; /* BmapProgress */
  GCancellable *cancel_when_hashing;
  GThread *thread;
} ProgressLog;

static void
progress_cb (const BmapProgress *progress, gpointer user_data)
{
  ProgressLog *log = user_data;

  /* Reports come from the caller's thread only. */
  g_assert_true (g_thread_self () == log->thread);
  g_array_append_val (log->reports, *progress);
  if (log->cancel_when_hashing != NULL && progress->phase == BMAP_PHASE_WRITING)
    g_cancellable_cancel (log->cancel_when_hashing);
}

static void
test_progress (void)
{
  g_autofree char *path = make_case (&image_cases[10]);
  g_autoptr (GArray) reports = g_array_new (FALSE, FALSE, sizeof (BmapProgress));
  ProgressLog log = { reports, NULL, g_thread_self () };
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = NULL;
  BmapCreateOptions options;
  const BmapProgress *last;
  guint64 mapped_bytes = 0;
  guint64 done = 0;
  int fd = open_image (path);

  bmap_create_options_init (&options);
  options.progress_func = progress_cb;
  options.progress_data = &log;
  map = bmap_create (fd, path, &options, NULL, &error);
  close (fd);
  g_assert_no_error (error);

  for (guint i = 0; i < map->ranges->len; i++) {
    const BmapRange *r = &g_array_index (map->ranges, BmapRange, i);

    mapped_bytes
        += MIN ((r->last + 1) * map->block_size, map->image_size) - r->first * map->block_size;
  }

  g_assert_cmpuint (reports->len, >=, 2);
  g_assert_cmpint (g_array_index (reports, BmapProgress, 0).phase, ==, BMAP_PHASE_PREPARING);
  for (guint i = 1; i < reports->len; i++) {
    const BmapProgress *p = &g_array_index (reports, BmapProgress, i);

    if (p->phase != BMAP_PHASE_WRITING)
      continue;
    g_assert_cmpuint (p->bytes_total, ==, mapped_bytes);
    g_assert_cmpuint (p->bytes_done, >=, done);
    g_assert_cmpuint (p->bytes_done, <=, p->bytes_total);
    done = p->bytes_done;
  }
  last = &g_array_index (reports, BmapProgress, reports->len - 1);
  g_assert_cmpint (last->phase, ==, BMAP_PHASE_WRITING);
  g_assert_cmpuint (last->bytes_done, ==, mapped_bytes);
}

/* Cancelled once hashing has started: the hashing threads stop. */
static void
test_cancelled_while_hashing (void)
{
  g_autofree char *path = make_case (&image_cases[10]);
  g_autoptr (GArray) reports = g_array_new (FALSE, FALSE, sizeof (BmapProgress));
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  ProgressLog log = { reports, cancellable, g_thread_self () };
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = NULL;
  BmapCreateOptions options;
  int fd = open_image (path);

  bmap_create_options_init (&options);
  options.progress_func = progress_cb;
  options.progress_data = &log;
  options.cancellable = cancellable;
  map = bmap_create (fd, path, &options, NULL, &error);
  close (fd);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED);
  g_assert_null (map);
}

/* The zero scan and SEEK give the same map as the default on ordinary
 * data (which never holds a whole zero block). */
static void
test_forced_methods (void)
{
  static const BmapMappingMethod methods[]
      = { BMAP_MAPPING_FIEMAP, BMAP_MAPPING_SEEK, BMAP_MAPPING_ZERO_SCAN };
  g_autofree char *path = make_case (&image_cases[4]);
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) ref = create_map (path, BMAP_CHECKSUM_SHA256, 0, &error);

  g_assert_no_error (error);
  for (gsize i = 0; i < G_N_ELEMENTS (methods); i++) {
    g_autoptr (BmapMap) map = NULL;
    BmapCreateOptions options;
    BmapMappingMethod used = BMAP_MAPPING_AUTO;
    int fd = open_image (path);

    bmap_create_options_init (&options);
    options.mapping = methods[i];
    map = bmap_create (fd, path, &options, &used, &error);
    close (fd);
    if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED)) {
      g_clear_error (&error);
      continue;
    }
    g_assert_no_error (error);
    g_assert_cmpint (used, ==, methods[i]);
    assert_maps_equal (ref, map);
  }
}

/* A loop device holds the same bytes as its backing file, so its map
 * (found by the zero scan, sized by BLKGETSIZE64) is the same. */
static void
test_block_device (void)
{
  g_autofree char *path = make_case (&image_cases[7]);
  const char *argv[] = { "losetup", "--find", "--show", path, NULL };
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) ref = NULL;
  g_autoptr (BmapMap) map = NULL;
  BmapMappingMethod used = BMAP_MAPPING_AUTO;
  int fd;

  if (geteuid () != 0 || !bmap_test_have_program ("losetup")) {
    g_test_skip ("needs root and losetup for a loop device");
    return;
  }
  ref = create_map (path, BMAP_CHECKSUM_SHA256, 0, &error);
  g_assert_no_error (error);
  if (bmap_test_run (argv, &out, &err) != 0) {
    g_test_skip ("losetup could not set up a loop device");
    return;
  }
  g_strstrip (out);

  /* A loop device's size is a multiple of 512; the image is not. */
  fd = open (out, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    map = bmap_create (fd, out, NULL, &used, &error);
    close (fd);
  }
  g_assert_cmpint (bmap_test_sh ("losetup -d %s", out), ==, 0);
  g_assert_cmpint (fd, >=, 0);
  g_assert_no_error (error);
  g_assert_cmpint (used, ==, BMAP_MAPPING_ZERO_SCAN);
  g_assert_cmpuint (map->image_size, ==, (ref->image_size / 512) * 512);
  if (map->block_size != ref->block_size) {
    g_test_skip ("loop device and backing file have different block sizes");
    return;
  }
  /* The image's last, partial block is cut off in the device. */
  g_assert_cmpuint (map->ranges->len, ==, ref->ranges->len);
  for (guint i = 0; i + 1 < map->ranges->len; i++) {
    const BmapRange *a = &g_array_index (map->ranges, BmapRange, i);
    const BmapRange *b = &g_array_index (ref->ranges, BmapRange, i);

    g_assert_cmpuint (a->first, ==, b->first);
    g_assert_cmpuint (a->last, ==, b->last);
    g_assert_cmpmem (a->digest, 32, b->digest, 32);
  }
}

/* What bmaptool wrote, read with a few regular expressions so that this
 * test does not depend on our own bmap parser. */
typedef struct {
  guint64 image_size;
  guint64 block_size;
  guint64 blocks_count;
  guint64 mapped_blocks_count;
  char *checksum_type;
  GPtrArray *ranges; /* "first-last:hexdigest" */
} ToolBmap;

static void
tool_bmap_clear (ToolBmap *t)
{
  g_free (t->checksum_type);
  g_clear_pointer (&t->ranges, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (ToolBmap, tool_bmap_clear)

static guint64
tool_element (const char *xml, const char *element)
{
  g_autofree char *pattern = g_strdup_printf ("<%s>\\s*(\\d+)\\s*</%s>", element, element);
  g_autoptr (GRegex) re = g_regex_new (pattern, 0, 0, NULL);
  g_autoptr (GMatchInfo) match = NULL;
  g_autofree char *value = NULL;

  if (!g_regex_match (re, xml, 0, &match))
    g_error ("bmaptool output has no <%s>", element);
  value = g_match_info_fetch (match, 1);
  return g_ascii_strtoull (value, NULL, 10);
}

static void
tool_bmap_parse (ToolBmap *t, const char *raw)
{
  g_autoptr (GRegex) comments = g_regex_new ("<!--.*?-->", G_REGEX_DOTALL, 0, NULL);
  g_autoptr (GRegex) type_re = g_regex_new ("<ChecksumType>\\s*(\\w+)\\s*</", 0, 0, NULL);
  g_autoptr (GRegex) range_re = g_regex_new (
      "<Range(?:\\s+chksum=\"([0-9a-f]+)\")?\\s*>\\s*(\\d+)(?:-(\\d+))?\\s*</Range>", 0, 0, NULL);
  g_autoptr (GMatchInfo) match = NULL;
  g_autofree char *xml = g_regex_replace_literal (comments, raw, -1, 0, "", 0, NULL);

  t->image_size = tool_element (xml, "ImageSize");
  t->block_size = tool_element (xml, "BlockSize");
  t->blocks_count = tool_element (xml, "BlocksCount");
  t->mapped_blocks_count = tool_element (xml, "MappedBlocksCount");
  if (g_regex_match (type_re, xml, 0, &match))
    t->checksum_type = g_match_info_fetch (match, 1);
  g_clear_pointer (&match, g_match_info_unref);

  t->ranges = g_ptr_array_new_with_free_func (g_free);
  g_regex_match (range_re, xml, 0, &match);
  while (g_match_info_matches (match)) {
    g_autofree char *digest = g_match_info_fetch (match, 1);
    g_autofree char *first = g_match_info_fetch (match, 2);
    g_autofree char *last = g_match_info_fetch (match, 3);

    g_ptr_array_add (t->ranges, g_strdup_printf ("%s-%s:%s", first,
                                                 last != NULL && *last != '\0' ? last : first,
                                                 digest != NULL ? digest : ""));
    g_match_info_next (match, NULL);
  }
}

static void
assert_map_equals_tool (const BmapMap *map, const ToolBmap *tool, const char *name)
{
  gsize len = bmap_checksum_type_get_length (map->range_checksum);

  g_test_message ("%s: %u ranges", name, tool->ranges->len);
  g_assert_cmpuint (map->image_size, ==, tool->image_size);
  g_assert_cmpuint (map->block_size, ==, tool->block_size);
  g_assert_cmpuint (map->blocks_count, ==, tool->blocks_count);
  g_assert_cmpuint (map->mapped_blocks_count, ==, tool->mapped_blocks_count);
  if (map->range_checksum != BMAP_CHECKSUM_NONE)
    g_assert_cmpstr (tool->checksum_type, ==, bmap_checksum_type_to_string (map->range_checksum));
  g_assert_cmpuint (map->ranges->len, ==, tool->ranges->len);
  for (guint i = 0; i < map->ranges->len; i++) {
    const BmapRange *r = &g_array_index (map->ranges, BmapRange, i);
    char hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];
    g_autofree char *ours = NULL;

    bmap_checksum_to_hex (r->digest, len, hex);
    ours = g_strdup_printf ("%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT ":%s", r->first, r->last,
                            hex);
    g_assert_cmpstr (ours, ==, g_ptr_array_index (tool->ranges, i));
  }
}

static void
compare_with_bmaptool (const char *path, const char *name, gboolean no_checksum)
{
  g_autofree char *bmap_path = g_strconcat (path, no_checksum ? ".nocsum.bmap" : ".bmap", NULL);
  const char *argv[] = { "bmaptool", "create", "-o", bmap_path, path, NULL, NULL };
  g_auto (ToolBmap) tool = { 0 };
  g_autoptr (GBytes) xml = NULL;
  g_autofree char *err = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = NULL;

  if (no_checksum) {
    argv[2] = "--no-checksum";
    argv[3] = "-o";
    argv[4] = bmap_path;
    argv[5] = path;
  }
  if (bmap_test_run (argv, NULL, &err) != 0)
    g_error ("bmaptool create %s failed: %s", name, err);
  xml = bmap_test_read_file (bmap_path);
  tool_bmap_parse (&tool, g_bytes_get_data (xml, NULL));

  map = create_map (path, no_checksum ? BMAP_CHECKSUM_NONE : BMAP_CHECKSUM_SHA256, 0, &error);
  g_assert_no_error (error);
  assert_map_equals_tool (map, &tool, name);

  /* libbmap's own parser reads bmaptool's file to the same map. */
  if (!no_checksum) {
    g_autoptr (BmapMap) loaded = bmap_map_load_file (bmap_path, &error);

    g_assert_no_error (error);
    assert_maps_equal (map, loaded);
  }
}

static void
test_bmaptool_equal (void)
{
  if (!bmap_test_have_program ("bmaptool")) {
    g_test_skip ("bmaptool is not installed");
    return;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (image_cases); i++) {
    g_autofree char *path = make_case (&image_cases[i]);

    compare_with_bmaptool (path, image_cases[i].name, FALSE);
  }
  {
    g_autofree char *path = make_case (&image_cases[4]);

    compare_with_bmaptool (path, image_cases[4].name, TRUE);
  }
}

/* Many ranges, compared with bmaptool too: the parallel hashing must put
 * every digest in its place. */
static void
test_bmaptool_equal_many_ranges (void)
{
  const guint n = 300;
  g_autofree char *path = image_path ("bmaptool-many");
  g_autofree BmapTestExtent *extents = g_new (BmapTestExtent, n);

  if (!bmap_test_have_program ("bmaptool")) {
    g_test_skip ("bmaptool is not installed");
    return;
  }
  for (guint i = 0; i < n; i++) {
    extents[i].offset = (guint64) i * 128 * KiB + (i % 3) * 4 * KiB;
    extents[i].len = 4 * KiB * (1 + i % 17) - (i % 5);
  }
  bmap_test_make_image (path, (guint64) n * 128 * KiB - 3, extents, n);
  compare_with_bmaptool (path, "many-ranges", FALSE);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/create/cases", test_cases);
  g_test_add_func ("/create/checksum-types", test_checksum_types);
  g_test_add_func ("/create/threads", test_threads);
  g_test_add_func ("/create/no-checksum", test_no_checksum);
  g_test_add_func ("/create/empty-image", test_empty_image);
  g_test_add_func ("/create/not-a-file", test_not_a_file);
  g_test_add_func ("/create/cancelled-before", test_cancelled_before);
  g_test_add_func ("/create/cancelled-while-hashing", test_cancelled_while_hashing);
  g_test_add_func ("/create/progress", test_progress);
  g_test_add_func ("/create/forced-methods", test_forced_methods);
  g_test_add_func ("/create/block-device", test_block_device);
  g_test_add_func ("/create/bmaptool-equal", test_bmaptool_equal);
  g_test_add_func ("/create/bmaptool-equal-many-ranges", test_bmaptool_equal_many_ranges);
  return g_test_run ();
}
