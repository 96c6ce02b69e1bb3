/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-mapping.h"
#include "bmap-test-util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024ull)

typedef struct {
  const char *name;
  guint64 size;
  BmapTestExtent extents[4];
  guint n_extents;
} ImageCase;

/* Data never holds a whole zero block (bmap_test_fill), so every method
 * must give the same answer for these. */
static const ImageCase image_cases[] = {
  { "hole-at-start", 256 * KiB, { { 128 * KiB, 128 * KiB } }, 1 },
  { "hole-in-middle", 256 * KiB, { { 0, 64 * KiB }, { 192 * KiB, 64 * KiB } }, 2 },
  { "hole-at-end", 256 * KiB, { { 0, 64 * KiB } }, 1 },
  { "holes-everywhere",
    1 * MiB + 1,
    { { 64 * KiB, 64 * KiB }, { 256 * KiB, 8 * KiB }, { 512 * KiB, 128 * KiB } },
    3 },
  { "partial-last-block", 256 * KiB + 100, { { 0, 64 * KiB }, { 256 * KiB, 100 } }, 2 },
  { "partial-last-block-hole", 256 * KiB + 100, { { 0, 64 * KiB } }, 1 },
  { "one-byte", 1, { { 0, 1 } }, 1 },
  { "one-block-minus-one", 4095, { { 0, 4095 } }, 1 },
  { "one-block-plus-one", 4097, { { 4096, 1 } }, 1 },
  { "unaligned-data", 64 * KiB, { { 5000, 10 }, { 40000, 9000 } }, 2 },
  { "all-hole", 1 * MiB, { { 0, 0 } }, 0 },
  { "fully-mapped", 256 * KiB + 5, { { 0, 256 * KiB + 5 } }, 1 },
};

static char *
image_path (const char *name)
{
  static char *dir;

  if (dir == NULL)
    dir = bmap_test_tmpdir ();
  return g_build_filename (dir, name, NULL);
}

static GArray *
ranges_new (void)
{
  return g_array_new (FALSE, FALSE, sizeof (BmapBlockRange));
}

/* The blocks a test image's extents touch, each rounded outward to whole
 * blocks, merged when they touch. */
static GArray *
expected_ranges (const ImageCase *c, guint32 bs)
{
  GArray *ranges = ranges_new ();

  for (guint i = 0; i < c->n_extents; i++) {
    BmapBlockRange r
        = { c->extents[i].offset / bs, (c->extents[i].offset + c->extents[i].len - 1) / bs };

    if (ranges->len > 0) {
      BmapBlockRange *prev = &g_array_index (ranges, BmapBlockRange, ranges->len - 1);

      if (r.first <= prev->last + 1) {
        prev->last = MAX (prev->last, r.last);
        continue;
      }
    }
    g_array_append_val (ranges, r);
  }
  return ranges;
}

static char *
ranges_to_string (GArray *ranges)
{
  GString *s = g_string_new ("[");

  for (guint i = 0; i < ranges->len; i++) {
    const BmapBlockRange *r = &g_array_index (ranges, BmapBlockRange, i);

    g_string_append_printf (s, "%s%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT, i > 0 ? " " : "",
                            r->first, r->last);
  }
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

static void
assert_ranges_equal (GArray *got, GArray *want, const char *what)
{
  g_autofree char *got_str = ranges_to_string (got);
  g_autofree char *want_str = ranges_to_string (want);

  if (g_strcmp0 (got_str, want_str) != 0)
    g_error ("%s: got ranges %s, expected %s", what, got_str, want_str);
}

static int
open_image (const char *path)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  g_assert_cmpint (fd, >=, 0);
  return fd;
}

static guint64
file_size (int fd)
{
  struct stat st;

  g_assert_cmpint (fstat (fd, &st), ==, 0);
  return (guint64) st.st_size;
}

/* Runs @method on every image case and compares with the extents. Returns
 * FALSE when the filesystem does not support the method. */
static gboolean
check_all_cases (const char *dir, BmapMappingMethod method, BmapMappingMethod *used_method)
{
  for (gsize i = 0; i < G_N_ELEMENTS (image_cases); i++) {
    const ImageCase *c = &image_cases[i];
    g_autofree char *path
        = dir != NULL ? g_build_filename (dir, c->name, NULL) : image_path (c->name);
    g_autoptr (GError) error = NULL;
    g_autoptr (GArray) ranges = NULL;
    g_autoptr (GArray) want = NULL;
    g_autofree char *what = NULL;
    BmapMappingMethod used = BMAP_MAPPING_AUTO;
    guint32 bs;
    int fd;

    bmap_test_make_image (path, c->size, c->extents, c->n_extents);
    fd = open_image (path);
    bs = bmap_mapping_get_block_size (fd);
    ranges = bmap_mapping_get (fd, file_size (fd), bs, method, &used, NULL, &error);
    close (fd);
    if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED))
      return FALSE;
    g_assert_no_error (error);
    g_assert_nonnull (ranges);
    if (method != BMAP_MAPPING_AUTO)
      g_assert_cmpint (used, ==, method);
    else
      g_assert_cmpint (used, !=, BMAP_MAPPING_AUTO);

    if (used_method != NULL)
      *used_method = used;
    want = expected_ranges (c, bs);
    what = g_strdup_printf ("%s (%s, block size %u)", c->name,
                            bmap_mapping_method_to_string (method), bs);
    assert_ranges_equal (ranges, want, what);
  }
  return TRUE;
}

static void
test_cases_fiemap (void)
{
  if (!check_all_cases (NULL, BMAP_MAPPING_FIEMAP, NULL))
    g_test_skip ("FIEMAP is not supported by the temporary directory's filesystem");
}

static void
test_cases_seek (void)
{
  if (!check_all_cases (NULL, BMAP_MAPPING_SEEK, NULL))
    g_test_skip ("SEEK_DATA is not supported by the temporary directory's filesystem");
}

static void
test_cases_zero_scan (void)
{
  g_assert_true (check_all_cases (NULL, BMAP_MAPPING_ZERO_SCAN, NULL));
}

static void
test_cases_auto (void)
{
  g_assert_true (check_all_cases (NULL, BMAP_MAPPING_AUTO, NULL));
}

/* tmpfs has SEEK_DATA but no FIEMAP: AUTO must fall back to SEEK there. */
static void
test_auto_falls_back_to_seek (void)
{
  g_autofree char *dir = g_build_filename ("/dev/shm", "bmap-test-XXXXXX", NULL);
  g_autofree char *probe = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) ranges = NULL;
  BmapMappingMethod used = BMAP_MAPPING_AUTO;
  struct statfs sfs;
  int fd;

  if (statfs ("/dev/shm", &sfs) < 0 || sfs.f_type != TMPFS_MAGIC || g_mkdtemp (dir) == NULL) {
    g_test_skip ("needs a writable tmpfs at /dev/shm");
    return;
  }
  probe = g_build_filename (dir, "probe", NULL);
  bmap_test_make_image (probe, 4096, NULL, 0);
  fd = open_image (probe);
  ranges = bmap_mapping_get (fd, 4096, 4096, BMAP_MAPPING_FIEMAP, NULL, NULL, &error);
  close (fd);
  if (error == NULL) {
    g_assert_cmpint (bmap_test_sh ("rm -rf '%s'", dir), ==, 0);
    g_test_skip ("this kernel's tmpfs supports FIEMAP");
    return;
  }
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED);

  g_assert_true (check_all_cases (dir, BMAP_MAPPING_AUTO, &used));
  g_assert_cmpint (bmap_test_sh ("rm -rf '%s'", dir), ==, 0);
  g_assert_cmpint (used, ==, BMAP_MAPPING_SEEK);
}

/* The holes of a 1 MiB + 1 image with data at 64 KiB and 512 KiB, spelled
 * out in blocks (whatever the filesystem's block size). */
static void
test_explicit_ranges (void)
{
  static const BmapTestExtent extents[]
      = { { 64 * KiB, 64 * KiB }, { 512 * KiB, 128 * KiB }, { 1 * MiB, 1 } };
  g_autofree char *path = image_path ("explicit");
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) ranges = NULL;
  const BmapBlockRange *r;
  guint32 bs;
  int fd;

  bmap_test_make_image (path, 1 * MiB + 1, extents, G_N_ELEMENTS (extents));
  fd = open_image (path);
  bs = bmap_mapping_get_block_size (fd);
  g_assert_cmpuint (bs, >=, 512);
  g_assert_cmpuint (bs & (bs - 1), ==, 0);
  ranges = bmap_mapping_get (fd, 1 * MiB + 1, bs, BMAP_MAPPING_AUTO, NULL, NULL, &error);
  close (fd);
  g_assert_no_error (error);

  g_assert_cmpuint (ranges->len, ==, 3);
  r = &g_array_index (ranges, BmapBlockRange, 0);
  g_assert_cmpuint (r->first, ==, 64 * KiB / bs);
  g_assert_cmpuint (r->last, ==, 128 * KiB / bs - 1);
  r = &g_array_index (ranges, BmapBlockRange, 1);
  g_assert_cmpuint (r->first, ==, 512 * KiB / bs);
  g_assert_cmpuint (r->last, ==, 640 * KiB / bs - 1);
  /* The partial last block is block ceil(size / bs) - 1, and no further. */
  r = &g_array_index (ranges, BmapBlockRange, 2);
  g_assert_cmpuint (r->first, ==, 1 * MiB / bs);
  g_assert_cmpuint (r->last, ==, 1 * MiB / bs);
}

/* Blocks past image_size are not reported even when the file has them. */
static void
test_clamped_to_image_size (void)
{
  static const BmapTestExtent extents[] = { { 0, 256 * KiB } };
  g_autofree char *path = image_path ("clamped");
  static const BmapMappingMethod methods[]
      = { BMAP_MAPPING_AUTO, BMAP_MAPPING_FIEMAP, BMAP_MAPPING_SEEK, BMAP_MAPPING_ZERO_SCAN };
  int fd;
  guint32 bs;

  bmap_test_make_image (path, 256 * KiB, extents, G_N_ELEMENTS (extents));
  fd = open_image (path);
  bs = bmap_mapping_get_block_size (fd);
  for (gsize i = 0; i < G_N_ELEMENTS (methods); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GArray) ranges
        = bmap_mapping_get (fd, 100 * KiB + 1, bs, methods[i], NULL, NULL, &error);

    if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED))
      continue;
    g_assert_no_error (error);
    g_assert_cmpuint (ranges->len, ==, 1);
    g_assert_cmpuint (g_array_index (ranges, BmapBlockRange, 0).first, ==, 0);
    g_assert_cmpuint (g_array_index (ranges, BmapBlockRange, 0).last, ==, (100 * KiB) / bs);
  }
  close (fd);
}

/* Written zero blocks are data to FIEMAP and SEEK_DATA but holes to the
 * zero scan. */
static void
test_zero_data_blocks (void)
{
  static const BmapTestExtent extents[] = { { 0, 64 * KiB }, { 192 * KiB, 64 * KiB } };
  g_autofree char *path = image_path ("zero-data");
  g_autofree guint8 *zeros = g_malloc0 (128 * KiB);
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) fiemap = NULL;
  g_autoptr (GArray) seek = NULL;
  g_autoptr (GArray) scan = NULL;
  g_autoptr (GArray) want_full = ranges_new ();
  g_autoptr (GArray) want_scan = ranges_new ();
  guint32 bs;
  int fd;

  bmap_test_make_image (path, 256 * KiB, extents, G_N_ELEMENTS (extents));
  fd = open (path, O_RDWR | O_CLOEXEC);
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (pwrite (fd, zeros, 128 * KiB, 64 * KiB), ==, 128 * KiB);
  /* A single zero block inside the first data extent, too. */
  g_assert_cmpint (pwrite (fd, zeros, 4 * KiB, 16 * KiB), ==, 4 * KiB);
  g_assert_cmpint (fsync (fd), ==, 0);
  bs = bmap_mapping_get_block_size (fd);

  g_array_append_val (want_full, ((BmapBlockRange){ 0, 256 * KiB / bs - 1 }));
  if (bs <= 4 * KiB) {
    g_array_append_val (want_scan, ((BmapBlockRange){ 0, 16 * KiB / bs - 1 }));
    g_array_append_val (want_scan, ((BmapBlockRange){ 20 * KiB / bs, 64 * KiB / bs - 1 }));
  } else {
    g_array_append_val (want_scan, ((BmapBlockRange){ 0, 64 * KiB / bs - 1 }));
  }
  g_array_append_val (want_scan, ((BmapBlockRange){ 192 * KiB / bs, 256 * KiB / bs - 1 }));

  fiemap = bmap_mapping_get (fd, 256 * KiB, bs, BMAP_MAPPING_FIEMAP, NULL, NULL, &error);
  if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED))
    g_clear_error (&error);
  else
    assert_ranges_equal (fiemap, want_full, "zero data, fiemap");
  g_assert_no_error (error);

  seek = bmap_mapping_get (fd, 256 * KiB, bs, BMAP_MAPPING_SEEK, NULL, NULL, &error);
  if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED))
    g_clear_error (&error);
  else
    assert_ranges_equal (seek, want_full, "zero data, seek");
  g_assert_no_error (error);

  scan = bmap_mapping_get (fd, 256 * KiB, bs, BMAP_MAPPING_ZERO_SCAN, NULL, NULL, &error);
  g_assert_no_error (error);
  assert_ranges_equal (scan, want_scan, "zero data, zero scan");
  close (fd);
}

/* Preallocated (unwritten) extents belong to the file: FIEMAP, like the
 * reference tool, counts them as mapped; the zero scan sees zeros. */
static void
test_unwritten_extents (void)
{
  static const BmapTestExtent extents[] = { { 0, 64 * KiB } };
  g_autofree char *path = image_path ("unwritten");
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) fiemap = NULL;
  g_autoptr (GArray) autom = NULL;
  g_autoptr (GArray) scan = NULL;
  g_autoptr (GArray) want_full = ranges_new ();
  g_autoptr (GArray) want_scan = ranges_new ();
  BmapMappingMethod used;
  guint32 bs;
  int fd;

  bmap_test_make_image (path, 1 * MiB, extents, G_N_ELEMENTS (extents));
  fd = open (path, O_RDWR | O_CLOEXEC);
  g_assert_cmpint (fd, >=, 0);
  if (fallocate (fd, FALLOC_FL_KEEP_SIZE, 512 * KiB, 256 * KiB) < 0) {
    g_autofree char *msg = g_strdup_printf ("fallocate: %s", g_strerror (errno));

    g_test_skip (msg);
    close (fd);
    return;
  }
  bs = bmap_mapping_get_block_size (fd);
  fiemap = bmap_mapping_get (fd, 1 * MiB, bs, BMAP_MAPPING_FIEMAP, NULL, NULL, &error);
  if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED)) {
    g_test_skip ("FIEMAP is not supported by the temporary directory's filesystem");
    close (fd);
    return;
  }
  g_assert_no_error (error);

  g_array_append_val (want_full, ((BmapBlockRange){ 0, 64 * KiB / bs - 1 }));
  g_array_append_val (want_full, ((BmapBlockRange){ 512 * KiB / bs, 768 * KiB / bs - 1 }));
  g_array_append_val (want_scan, ((BmapBlockRange){ 0, 64 * KiB / bs - 1 }));
  assert_ranges_equal (fiemap, want_full, "unwritten, fiemap");

  autom = bmap_mapping_get (fd, 1 * MiB, bs, BMAP_MAPPING_AUTO, &used, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (used, ==, BMAP_MAPPING_FIEMAP);
  assert_ranges_equal (autom, want_full, "unwritten, auto");

  scan = bmap_mapping_get (fd, 1 * MiB, bs, BMAP_MAPPING_ZERO_SCAN, NULL, NULL, &error);
  g_assert_no_error (error);
  assert_ranges_equal (scan, want_scan, "unwritten, zero scan");
  close (fd);
}

/* More extents than one FIEMAP call returns: the calls must continue until
 * the last extent. */
static void
test_many_extents (void)
{
  const guint n = 6000;
  g_autofree char *path = image_path ("many-extents");
  g_autofree BmapTestExtent *extents = g_new (BmapTestExtent, n);
  static const BmapMappingMethod methods[]
      = { BMAP_MAPPING_FIEMAP, BMAP_MAPPING_SEEK, BMAP_MAPPING_ZERO_SCAN, BMAP_MAPPING_AUTO };
  g_autoptr (GArray) want = NULL;
  guint32 bs;
  int fd;

  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  g_assert_cmpint (fd, >=, 0);
  bs = bmap_mapping_get_block_size (fd);
  close (fd);

  /* One block of data every other block. */
  for (guint i = 0; i < n; i++) {
    extents[i].offset = (guint64) i * 2 * bs;
    extents[i].len = bs;
  }
  bmap_test_make_image (path, (guint64) n * 2 * bs, extents, n);

  fd = open_image (path);
  want = ranges_new ();
  for (guint i = 0; i < n; i++)
    g_array_append_val (want, ((BmapBlockRange){ 2 * i, 2 * i }));
  for (gsize i = 0; i < G_N_ELEMENTS (methods); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GArray) ranges
        = bmap_mapping_get (fd, file_size (fd), bs, methods[i], NULL, NULL, &error);

    if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED))
      continue;
    g_assert_no_error (error);
    assert_ranges_equal (ranges, want, bmap_mapping_method_to_string (methods[i]));
  }
  close (fd);
}

/* Blocks smaller than the filesystem's: every method still agrees. */
static void
test_small_block_size (void)
{
  static const BmapTestExtent extents[] = { { 8 * KiB, 8 * KiB }, { 64 * KiB, 3 * KiB } };
  static const BmapMappingMethod methods[]
      = { BMAP_MAPPING_FIEMAP, BMAP_MAPPING_SEEK, BMAP_MAPPING_ZERO_SCAN };
  g_autofree char *path = image_path ("small-blocks");
  int fd;

  bmap_test_make_image (path, 128 * KiB, extents, G_N_ELEMENTS (extents));
  fd = open_image (path);
  if (bmap_mapping_get_block_size (fd) != 4096) {
    close (fd);
    g_test_skip ("needs a filesystem with 4096-byte blocks");
    return;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (methods); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GArray) ranges
        = bmap_mapping_get (fd, 128 * KiB, 512, methods[i], NULL, NULL, &error);
    g_autoptr (GArray) want = ranges_new ();

    if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED))
      continue;
    g_assert_no_error (error);
    g_array_append_val (want, ((BmapBlockRange){ 16, 31 }));
    /* The zero scan sees the 3 KiB of data; the others the whole 4 KiB
     * filesystem block it lives in. */
    if (methods[i] == BMAP_MAPPING_ZERO_SCAN)
      g_array_append_val (want, ((BmapBlockRange){ 128, 133 }));
    else
      g_array_append_val (want, ((BmapBlockRange){ 128, 135 }));
    assert_ranges_equal (ranges, want, bmap_mapping_method_to_string (methods[i]));
  }
  close (fd);
}

static void
test_empty_image (void)
{
  g_autofree char *path = image_path ("empty");
  static const BmapMappingMethod methods[]
      = { BMAP_MAPPING_AUTO, BMAP_MAPPING_FIEMAP, BMAP_MAPPING_SEEK, BMAP_MAPPING_ZERO_SCAN };
  int fd;

  bmap_test_make_image (path, 0, NULL, 0);
  fd = open_image (path);
  for (gsize i = 0; i < G_N_ELEMENTS (methods); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GArray) ranges = bmap_mapping_get (fd, 0, 4096, methods[i], NULL, NULL, &error);

    g_assert_no_error (error);
    g_assert_cmpuint (ranges->len, ==, 0);
  }
  close (fd);
}

static void
test_cancelled (void)
{
  static const BmapTestExtent extents[] = { { 0, 64 * KiB } };
  static const BmapMappingMethod methods[]
      = { BMAP_MAPPING_AUTO, BMAP_MAPPING_FIEMAP, BMAP_MAPPING_SEEK, BMAP_MAPPING_ZERO_SCAN };
  g_autofree char *path = image_path ("cancelled");
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  int fd;

  bmap_test_make_image (path, 1 * MiB, extents, G_N_ELEMENTS (extents));
  fd = open_image (path);
  g_cancellable_cancel (cancellable);
  for (gsize i = 0; i < G_N_ELEMENTS (methods); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GArray) ranges
        = bmap_mapping_get (fd, 1 * MiB, 4096, methods[i], NULL, cancellable, &error);

    if (g_error_matches (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED))
      continue;
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED);
    g_assert_null (ranges);
  }
  close (fd);
}

/* A file shorter than the image size claimed is an error for the zero scan,
 * which must read every byte. */
static void
test_zero_scan_short_file (void)
{
  static const BmapTestExtent extents[] = { { 0, 8 * KiB } };
  g_autofree char *path = image_path ("short");
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) ranges = NULL;
  int fd;

  bmap_test_make_image (path, 8 * KiB, extents, G_N_ELEMENTS (extents));
  fd = open_image (path);
  ranges = bmap_mapping_get (fd, 64 * KiB, 4096, BMAP_MAPPING_ZERO_SCAN, NULL, NULL, &error);
  close (fd);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "8192"));
  g_assert_null (ranges);
}

/* A loop device over a sparse file: AUTO must scan it (block devices have
 * no extents to ask about) and find the data. */
static void
test_block_device (void)
{
  static const BmapTestExtent extents[]
      = { { 64 * KiB, 64 * KiB }, { 1 * MiB, 4 * KiB }, { 4 * MiB - 4 * KiB, 4 * KiB } };
  g_autofree char *path = image_path ("loop-backing");
  const char *argv[] = { "losetup", "--find", "--show", path, NULL };
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) ranges = NULL;
  g_autoptr (GArray) want = ranges_new ();
  BmapMappingMethod used = BMAP_MAPPING_AUTO;
  int fd;

  if (geteuid () != 0 || !bmap_test_have_program ("losetup")) {
    g_test_skip ("needs root and losetup for a loop device");
    return;
  }
  bmap_test_make_image (path, 4 * MiB, extents, G_N_ELEMENTS (extents));
  if (bmap_test_run (argv, &out, &err) != 0) {
    g_test_skip ("losetup could not set up a loop device");
    return;
  }
  g_strstrip (out);

  fd = open (out, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ranges = bmap_mapping_get (fd, 4 * MiB, 4096, BMAP_MAPPING_AUTO, &used, NULL, &error);
    close (fd);
  }
  g_assert_cmpint (bmap_test_sh ("losetup -d %s", out), ==, 0);
  g_assert_cmpint (fd, >=, 0);
  g_assert_no_error (error);
  g_assert_cmpint (used, ==, BMAP_MAPPING_ZERO_SCAN);
  g_array_append_val (want, ((BmapBlockRange){ 16, 31 }));
  g_array_append_val (want, ((BmapBlockRange){ 256, 256 }));
  g_array_append_val (want, ((BmapBlockRange){ 1023, 1023 }));
  assert_ranges_equal (ranges, want, "loop device");
}

static void
test_method_names (void)
{
  static const BmapMappingMethod methods[]
      = { BMAP_MAPPING_AUTO, BMAP_MAPPING_FIEMAP, BMAP_MAPPING_SEEK, BMAP_MAPPING_ZERO_SCAN };
  BmapMappingMethod m;

  for (gsize i = 0; i < G_N_ELEMENTS (methods); i++) {
    g_assert_true (
        bmap_mapping_method_from_string (bmap_mapping_method_to_string (methods[i]), &m));
    g_assert_cmpint (m, ==, methods[i]);
  }
  g_assert_cmpstr (bmap_mapping_method_to_string (BMAP_MAPPING_ZERO_SCAN), ==, "zero-scan");
  g_assert_true (bmap_mapping_method_from_string ("FIEMAP", &m));
  g_assert_cmpint (m, ==, BMAP_MAPPING_FIEMAP);
  g_assert_false (bmap_mapping_method_from_string ("bogus", &m));
  g_assert_false (bmap_mapping_method_from_string (NULL, &m));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/mapping/cases/fiemap", test_cases_fiemap);
  g_test_add_func ("/mapping/cases/seek", test_cases_seek);
  g_test_add_func ("/mapping/cases/zero-scan", test_cases_zero_scan);
  g_test_add_func ("/mapping/cases/auto", test_cases_auto);
  g_test_add_func ("/mapping/auto-falls-back-to-seek", test_auto_falls_back_to_seek);
  g_test_add_func ("/mapping/explicit-ranges", test_explicit_ranges);
  g_test_add_func ("/mapping/clamped-to-image-size", test_clamped_to_image_size);
  g_test_add_func ("/mapping/zero-data-blocks", test_zero_data_blocks);
  g_test_add_func ("/mapping/unwritten-extents", test_unwritten_extents);
  g_test_add_func ("/mapping/many-extents", test_many_extents);
  g_test_add_func ("/mapping/small-block-size", test_small_block_size);
  g_test_add_func ("/mapping/empty-image", test_empty_image);
  g_test_add_func ("/mapping/cancelled", test_cancelled);
  g_test_add_func ("/mapping/zero-scan-short-file", test_zero_scan_short_file);
  g_test_add_func ("/mapping/block-device", test_block_device);
  g_test_add_func ("/mapping/method-names", test_method_names);
  return g_test_run ();
}
