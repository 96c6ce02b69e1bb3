/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-test-util.h"
#include "libbmap.h"

#define MiB (1024 * 1024)

typedef struct {
  char *dir;
  char *image;
  char *bmap;
  guint64 size;
} Fixture;

/* An image of 5 MiB + 1000 bytes: data at the start, in the middle across a
 * chunk boundary, and in the partial last block; holes in between. */
static const BmapTestExtent layout[] = {
  { 0, 3 * 4096 + 100 },
  { 2 * MiB - 5000, 300000 },
  { 5 * MiB - 2, 1002 },
};
#define IMAGE_SIZE ((guint64) 5 * MiB + 1000)

static BmapMap *
create_map (const char *image, BmapChecksumType checksum)
{
  g_autoptr (GError) error = NULL;
  BmapCreateOptions options;
  BmapMap *map;
  int fd = open (image, O_RDONLY | O_CLOEXEC);

  g_assert_cmpint (fd, >=, 0);
  bmap_create_options_init (&options);
  options.checksum = checksum;
  map = bmap_create (fd, image, &options, NULL, &error);
  g_assert_no_error (error);
  close (fd);
  return map;
}

static void
fixture_setup (Fixture *fx, gconstpointer data)
{
  g_autoptr (BmapMap) map = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *xml = NULL;
  gsize len;

  fx->dir = bmap_test_tmpdir ();
  fx->image = g_build_filename (fx->dir, "disk.img", NULL);
  fx->bmap = g_build_filename (fx->dir, "disk.img.bmap", NULL);
  fx->size = IMAGE_SIZE;
  bmap_test_make_image (fx->image, fx->size, layout, G_N_ELEMENTS (layout));
  map = create_map (fx->image, BMAP_CHECKSUM_SHA256);
  xml = bmap_map_to_xml (map, &len);
  g_file_set_contents (fx->bmap, xml, (gssize) len, &error);
  g_assert_no_error (error);
}

static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  g_free (fx->dir);
  g_free (fx->image);
  g_free (fx->bmap);
}

static gboolean
run_copy (const char *image, const char *bmap, const char *dest, gboolean verify_written,
          GCancellable *cancellable, BmapCopyResult *result, GError **error)
{
  g_autoptr (BmapSource) source = bmap_source_new_for_path (image, error);
  g_autoptr (BmapMap) map = NULL;
  g_autoptr (BmapTarget) target = NULL;
  BmapCopyOptions options = { 0 };

  if (source == NULL)
    return FALSE;
  if (bmap != NULL) {
    map = bmap_map_load_file (bmap, error);
    if (map == NULL)
      return FALSE;
  }
  target = bmap_target_open (dest, error);
  if (target == NULL)
    return FALSE;
  options.map = map;
  options.verify = TRUE;
  options.verify_written = verify_written;
  options.cancellable = cancellable;
  return bmap_copy (source, target, &options, result, error);
}

static guint64
allocated_bytes (const char *path)
{
  struct stat st;

  g_assert_cmpint (stat (path, &st), ==, 0);
  return (guint64) st.st_blocks * 512;
}

static void
test_raw_with_bmap (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "out.img", NULL);
  g_autoptr (BmapMap) map = bmap_map_load_file (fx->bmap, &error);
  BmapCopyResult result = { 0 };

  g_assert_no_error (error);
  /* A stale, longer file must be replaced, not overlaid. */
  g_assert_true (g_file_set_contents (out, "stale", -1, NULL));
  g_assert_true (run_copy (fx->image, fx->bmap, out, TRUE, NULL, &result, &error));
  g_assert_no_error (error);
  bmap_test_assert_same_content (fx->image, out);
  g_assert_cmpuint (result.blocks_written, ==, map->mapped_blocks_count);
  g_assert_cmpuint (result.bytes_written, ==, bmap_map_get_mapped_bytes (map));
  g_assert_true (result.verified);
  g_assert_true (result.verified_written);
  /* Unmapped blocks stay holes in the target. */
  g_assert_cmpuint (allocated_bytes (out), <, fx->size / 2);
}

static const char *const compressors[][3] = {
  { "gzip", "gz", "gzip -c" },     { "xz", "xz", "xz -T2 -c" },   { "bzip2", "bz2", "bzip2 -c" },
  { "zstd", "zst", "zstd -q -c" }, { "lz4", "lz4", "lz4 -q -c" },
};

static char *
compress (Fixture *fx, guint i, const char *suffix_override)
{
  g_autofree char *name = g_strdup_printf (
      "disk.img.%s", suffix_override != NULL ? suffix_override : compressors[i][1]);
  char *path = g_build_filename (fx->dir, name, NULL);

  if (!bmap_test_have_program (compressors[i][0]))
    return NULL;
  g_assert_cmpint (bmap_test_sh ("%s '%s' > '%s'", compressors[i][2], fx->image, path), ==, 0);
  return path;
}

static void
test_compressed_round_trip (Fixture *fx, gconstpointer data)
{
  for (guint i = 0; i < G_N_ELEMENTS (compressors); i++) {
    g_autoptr (GError) error = NULL;
    g_autofree char *packed = compress (fx, i, NULL);
    g_autofree char *out = NULL;
    g_autofree char *out_nobmap = NULL;

    if (packed == NULL) {
      g_test_message ("%s not installed, format skipped", compressors[i][0]);
      continue;
    }
    out = g_strdup_printf ("%s.out", packed);
    g_assert_true (run_copy (packed, fx->bmap, out, FALSE, NULL, NULL, &error));
    g_assert_no_error (error);
    bmap_test_assert_same_content (fx->image, out);

    out_nobmap = g_strdup_printf ("%s.nobmap", packed);
    g_assert_true (run_copy (packed, NULL, out_nobmap, FALSE, NULL, NULL, &error));
    g_assert_no_error (error);
    bmap_test_assert_same_content (fx->image, out_nobmap);
    /* Zero blocks are skipped without a bmap too. */
    g_assert_cmpuint (allocated_bytes (out_nobmap), <, fx->size / 2);
  }
}

static void
test_pipe_source (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = bmap_map_load_file (fx->bmap, &error);
  g_autofree char *out = g_build_filename (fx->dir, "from-pipe.img", NULL);
  g_autofree char *cmd = g_strdup_printf ("gzip -c '%s'", fx->image);
  const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (BmapTarget) target = NULL;
  BmapCopyOptions options = { 0 };
  GPid pid;
  int out_fd;

  g_assert_no_error (error);
  g_spawn_async_with_pipes (NULL, (char **) argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &pid,
                            NULL, &out_fd, NULL, &error);
  g_assert_no_error (error);
  source = bmap_source_new (out_fd, TRUE, "pipe", &error);
  g_assert_no_error (error);
  g_assert_false (bmap_source_is_seekable (source));
  target = bmap_target_open (out, &error);
  g_assert_no_error (error);
  options.map = map;
  options.verify = TRUE;
  g_assert_true (bmap_copy (source, target, &options, NULL, &error));
  g_assert_no_error (error);
  g_spawn_close_pid (pid);
  bmap_test_assert_same_content (fx->image, out);
}

static void
test_truncated_nobmap_fails (Fixture *fx, gconstpointer data)
{
  g_autofree char *packed = compress (fx, 0, NULL);
  g_autofree char *cut = g_build_filename (fx->dir, "cut.gz", NULL);
  g_autofree char *out = g_build_filename (fx->dir, "cut.out", NULL);
  g_autoptr (GError) error = NULL;
  struct stat st;

  if (packed == NULL) {
    g_test_skip ("gzip not installed");
    return;
  }
  g_assert_cmpint (stat (packed, &st), ==, 0);
  g_assert_cmpint (
      bmap_test_sh ("head -c %lld '%s' > '%s'", (long long) st.st_size * 2 / 3, packed, cut), ==,
      0);
  /* The reference tool "succeeds" here with a short result; we must not. */
  g_assert_false (run_copy (cut, NULL, out, FALSE, NULL, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
  g_clear_error (&error);
  g_assert_false (run_copy (cut, fx->bmap, out, FALSE, NULL, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
}

/* With a bmap, a stream's unmapped bytes are skipped, not trusted: the
 * stream is still decoded and checked to its end, and must end where the
 * bmap says. */
static void
test_stream_checked_to_end (Fixture *fx, gconstpointer data)
{
  g_autofree char *packed = compress (fx, 0, NULL);
  g_autofree char *bad_crc = g_build_filename (fx->dir, "bad-crc.gz", NULL);
  g_autofree char *longer = g_build_filename (fx->dir, "longer.gz", NULL);
  g_autofree char *out = g_build_filename (fx->dir, "checked.out", NULL);
  g_autoptr (GError) error = NULL;
  struct stat st;
  int fd;

  if (packed == NULL) {
    g_test_skip ("gzip not installed");
    return;
  }
  /* The CRC-32 in the gzip trailer, after every mapped byte. */
  g_assert_cmpint (bmap_test_sh ("cp '%s' '%s'", packed, bad_crc), ==, 0);
  g_assert_cmpint (stat (bad_crc, &st), ==, 0);
  fd = open (bad_crc, O_WRONLY | O_CLOEXEC);
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (pwrite (fd, "\xff\xff", 2, st.st_size - 8), ==, 2);
  close (fd);
  g_assert_false (run_copy (bad_crc, fx->bmap, out, FALSE, NULL, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
  g_clear_error (&error);

  /* One more gzip member: the image is larger than its bmap. */
  g_assert_cmpint (
      bmap_test_sh ("{ cat '%s'; head -c 4096 /dev/zero | gzip -c; } > '%s'", packed, longer), ==,
      0);
  g_assert_false (run_copy (longer, fx->bmap, out, FALSE, NULL, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_assert_nonnull (strstr (error->message, "larger"));
}

/* An xz file with an index is decoded block by block: blocks holding no
 * mapped byte are not decoded at all (so damage there does not stop a copy
 * that does not need them), the others are, by several threads, in order. */
static void
test_xz_skips_unneeded_blocks (Fixture *fx, gconstpointer data)
{
  g_autofree char *packed = g_build_filename (fx->dir, "blocks.img.xz", NULL);
  g_autofree char *out = g_build_filename (fx->dir, "blocks.out", NULL);
  g_autofree char *list = NULL;
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) lines = NULL;
  guint64 damage = 0;
  guint n_blocks = 0;
  int fd;

  if (!bmap_test_have_program ("xz")) {
    g_test_skip ("xz not installed");
    return;
  }
  /* 1 MiB blocks: [3 MiB, 4 MiB) and [4 MiB, 5 MiB) of the image are holes. */
  g_assert_cmpint (bmap_test_sh ("xz -T2 --block-size=1MiB -c '%s' > '%s'", fx->image, packed), ==,
                   0);
  {
    const char *argv[] = { "xz", "--robot", "--list", "-vv", packed, NULL };

    g_assert_cmpint (bmap_test_run (argv, &list, NULL), ==, 0);
  }
  lines = g_strsplit (list, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++) {
    g_auto (GStrv) f = g_strsplit (lines[i], "\t", -1);

    if (g_strv_length (f) < 8 || g_strcmp0 (f[0], "block") != 0)
      continue;
    n_blocks++;
    /* Columns: compressed offset, uncompressed offset, total size. */
    if (g_ascii_strtoull (f[5], NULL, 10) == 3 * MiB)
      damage = g_ascii_strtoull (f[4], NULL, 10) + g_ascii_strtoull (f[6], NULL, 10) / 2;
  }
  g_assert_cmpuint (n_blocks, ==, 6);
  g_assert_cmpuint (damage, >, 0);
  fd = open (packed, O_RDWR | O_CLOEXEC);
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (pwrite (fd, "\x5a\xa5", 2, (off_t) damage), ==, 2);
  close (fd);

  g_assert_true (run_copy (packed, fx->bmap, out, TRUE, NULL, NULL, &error));
  g_assert_no_error (error);
  bmap_test_assert_same_content (fx->image, out);

  /* Without a bmap every block is needed, and the damage is found. */
  g_assert_false (run_copy (packed, NULL, out, FALSE, NULL, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
  g_assert_nonnull (strstr (error->message, "corrupt xz data"));
}

static void
test_checksum_mismatch (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "bad.out", NULL);
  int fd = open (fx->image, O_WRONLY | O_CLOEXEC);
  g_autoptr (BmapMap) map = bmap_map_load_file (fx->bmap, &error);
  const BmapRange *range = bmap_map_get_range (map, 1);
  g_autofree char *range_text = g_strdup_printf ("blocks %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT,
                                                 range->first, range->last);

  /* Corrupt one byte inside the second range. */
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (pwrite (fd, "X", 1, (off_t) (2 * MiB)), ==, 1);
  close (fd);

  g_assert_false (run_copy (fx->image, fx->bmap, out, FALSE, NULL, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_CHECKSUM_MISMATCH);
  g_assert_nonnull (strstr (error->message, range_text));
  g_assert_nonnull (strstr (error->message, "expected"));
  g_assert_nonnull (strstr (error->message, "partial image"));

  /* Same through a decoder, where the writer hashes. */
  g_clear_error (&error);
  {
    g_autofree char *packed = compress (fx, 3, NULL);

    if (packed != NULL) {
      g_assert_false (run_copy (packed, fx->bmap, out, FALSE, NULL, NULL, &error));
      g_assert_error (error, BMAP_ERROR, BMAP_ERROR_CHECKSUM_MISMATCH);
      g_assert_nonnull (strstr (error->message, range_text));
    }
  }
}

static void
test_cancel (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autofree char *out = g_build_filename (fx->dir, "cancel.out", NULL);

  g_cancellable_cancel (cancellable);
  g_assert_false (run_copy (fx->image, fx->bmap, out, FALSE, cancellable, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED);
  /* Cancelled before writing: the target was not even created. */
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
}

typedef struct {
  GCancellable *cancellable;
  guint calls;
} CancelLater;

static void
cancel_on_progress (const BmapProgress *progress, gpointer user_data)
{
  CancelLater *cl = user_data;

  if (progress->phase == BMAP_PHASE_WRITING && progress->bytes_done > 0)
    g_cancellable_cancel (cl->cancellable);
  cl->calls++;
}

typedef struct {
  int fd;
  GBytes *data;
} Feeder;

/* Writes the image into a pipe slowly, so that a copy from it takes a few
 * seconds; stops when the reader goes away. */
static gpointer
feed_slowly (gpointer user_data)
{
  Feeder *feeder = user_data;
  gsize len;
  const guint8 *p = g_bytes_get_data (feeder->data, &len);

  for (gsize off = 0; off < len;) {
    ssize_t n = write (feeder->fd, p + off, MIN (64 * 1024, len - off));

    if (n <= 0)
      break;
    off += (gsize) n;
    g_usleep (20 * 1000);
  }
  close (feeder->fd);
  return NULL;
}

static void
test_cancel_mid_copy (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (BmapMap) map = bmap_map_load_file (fx->bmap, &error);
  g_autoptr (BmapTarget) target = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "cancel-mid.out", NULL);
  CancelLater cl = { cancellable, 0 };
  BmapCopyOptions options = { 0 };
  Feeder feeder;
  GThread *thread;
  int fds[2];

  g_assert_no_error (error);
  g_assert_cmpint (pipe (fds), ==, 0);
  feeder.fd = fds[1];
  feeder.data = bmap_test_read_file (fx->image);
  thread = g_thread_new ("feeder", feed_slowly, &feeder);

  {
    g_autoptr (BmapSource) source = bmap_source_new (fds[0], TRUE, "slow pipe", &error);

    g_assert_no_error (error);
    target = bmap_target_open (out, &error);
    g_assert_no_error (error);
    options.map = map;
    options.verify = TRUE;
    options.progress_func = cancel_on_progress;
    options.progress_data = &cl;
    options.cancellable = cancellable;
    g_assert_false (bmap_copy (source, target, &options, NULL, &error));
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED);
    g_assert_cmpuint (cl.calls, >, 0);
  }
  g_thread_join (thread);
  g_bytes_unref (feeder.data);
}

static gpointer
cancel_later (gpointer data)
{
  g_usleep (300 * 1000);
  g_cancellable_cancel (data);
  return NULL;
}

/* A pipe whose writer stalls must not keep a cancelled copy waiting: the
 * daemon's Cancel has to stop a job within a second. */
static void
test_cancel_stalled_pipe (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (BmapTarget) target = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "stalled.out", NULL);
  g_autofree guint8 *buf = g_malloc0 (65536);
  BmapCopyOptions options = { 0 };
  GThread *thread;
  int fds[2];

  g_assert_cmpint (pipe (fds), ==, 0);
  bmap_test_fill (buf, 65536, 7);
  g_assert_cmpint (write (fds[1], buf, 65536), ==, 65536);
  source = bmap_source_new (fds[0], TRUE, "stalled pipe", &error);
  g_assert_no_error (error);
  target = bmap_target_open (out, &error);
  g_assert_no_error (error);
  options.cancellable = cancellable;
  thread = g_thread_new ("cancel", cancel_later, cancellable);
  g_assert_false (bmap_copy (source, target, &options, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED);
  g_thread_join (thread);
  close (fds[1]);
}

static void
test_checks_before_touching_target (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "precious", NULL);
  g_autofree char *other = g_build_filename (fx->dir, "other.img", NULL);
  g_autoptr (GBytes) after = NULL;
  static const BmapTestExtent small[] = { { 0, 4096 } };

  g_assert_true (g_file_set_contents (out, "precious data", -1, NULL));

  /* A bmap that belongs to another image. */
  bmap_test_make_image (other, 8192, small, 1);
  g_assert_false (run_copy (other, fx->bmap, out, FALSE, NULL, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_assert_nonnull (strstr (error->message, "does not belong"));

  /* The image itself as the target. */
  g_clear_error (&error);
  g_assert_false (run_copy (fx->image, fx->bmap, fx->image, FALSE, NULL, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT);

  after = bmap_test_read_file (out);
  g_assert_cmpmem (g_bytes_get_data (after, NULL), g_bytes_get_size (after), "precious data", 13);
}

static void
test_dev_null (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  BmapCopyResult result = { 0 };

  g_assert_true (run_copy (fx->image, fx->bmap, "/dev/null", FALSE, NULL, &result, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (result.image_size, ==, fx->size);
}

/* ---- real block devices (root) ----------------------------------------- */

static char *
losetup_attach (const char *backing)
{
  g_autofree char *out = NULL;
  const char *argv[] = { "losetup", "--find", "--show", backing, NULL };

  if (bmap_test_run (argv, &out, NULL) != 0)
    return NULL;
  return g_strstrip (g_steal_pointer (&out));
}

static void
losetup_detach (const char *dev)
{
  const char *argv[] = { "losetup", "-d", dev, NULL };

  bmap_test_run (argv, NULL, NULL);
}

static void
test_loop_device (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *backing = g_build_filename (fx->dir, "loop-backing", NULL);
  g_autofree char *dev = NULL;
  g_autofree char *readback = g_build_filename (fx->dir, "readback", NULL);
  BmapCopyResult result = { 0 };

  if (!bmap_test_can_use_loop ())
    return;
  g_assert_cmpint (bmap_test_sh ("truncate -s 8M '%s'", backing), ==, 0);
  dev = losetup_attach (backing);
  if (dev == NULL) {
    g_test_skip ("losetup could not attach a loop device");
    return;
  }
  g_assert_true (run_copy (fx->image, fx->bmap, dev, TRUE, NULL, &result, &error));
  g_assert_no_error (error);
  g_assert_true (result.verified_written);
  g_assert_cmpint (
      bmap_test_sh ("head -c %" G_GUINT64_FORMAT " '%s' > '%s'", fx->size, dev, readback), ==, 0);
  losetup_detach (dev);
  bmap_test_assert_same_content (fx->image, readback);
}

static void
test_loop_device_too_small (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *backing = g_build_filename (fx->dir, "small-backing", NULL);
  g_autofree char *dev = NULL;
  g_autoptr (GBytes) after = NULL;

  if (!bmap_test_can_use_loop ())
    return;
  g_assert_cmpint (bmap_test_sh ("head -c 4M /dev/zero | tr '\\0' 'A' > '%s'", backing), ==, 0);
  dev = losetup_attach (backing);
  if (dev == NULL) {
    g_test_skip ("losetup could not attach a loop device");
    return;
  }
  g_assert_false (run_copy (fx->image, fx->bmap, dev, FALSE, NULL, NULL, &error));
  losetup_detach (dev);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_TOO_SMALL);
  g_assert_nonnull (strstr (error->message, dev));
  /* Nothing was written. */
  after = bmap_test_read_file (backing);
  for (gsize i = 0; i < g_bytes_get_size (after); i++)
    g_assert_cmpint (((const char *) g_bytes_get_data (after, NULL))[i], ==, 'A');
}

static void
test_loop_device_mounted (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *backing = g_build_filename (fx->dir, "fs-backing", NULL);
  g_autofree char *mnt = g_build_filename (fx->dir, "mnt", NULL);
  g_autofree char *dev = NULL;

  if (!bmap_test_can_use_loop ())
    return;
  if (!bmap_test_have_program ("mkfs.ext4")) {
    g_test_skip ("mkfs.ext4 not installed");
    return;
  }
  g_assert_cmpint (bmap_test_sh ("truncate -s 16M '%s' && mkfs.ext4 -q -F '%s'", backing, backing),
                   ==, 0);
  dev = losetup_attach (backing);
  if (dev == NULL) {
    g_test_skip ("losetup could not attach a loop device");
    return;
  }
  g_assert_cmpint (g_mkdir (mnt, 0755), ==, 0);
  if (bmap_test_sh ("mount '%s' '%s'", dev, mnt) != 0) {
    losetup_detach (dev);
    g_test_skip ("cannot mount here");
    return;
  }
  g_assert_false (run_copy (fx->image, fx->bmap, dev, FALSE, NULL, NULL, &error));
  bmap_test_sh ("umount '%s'", mnt);
  losetup_detach (dev);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY);
  g_assert_nonnull (strstr (error->message, dev));
}

static void
record_progress (const BmapProgress *progress, gpointer user_data)
{
  g_array_append_val ((GArray *) user_data, *progress);
}

/* Writing, syncing and reading back are one progress: the whole job's
 * bytes and fraction never go back when a phase ends, the phases come in
 * order, and the last report is the whole job done. */
static void
test_progress_one_bar (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "out.img", NULL);
  g_autoptr (GArray) reports = g_array_new (FALSE, FALSE, sizeof (BmapProgress));
  g_autoptr (BmapSource) source = bmap_source_new_for_path (fx->image, &error);
  g_autoptr (BmapMap) map = bmap_map_load_file (fx->bmap, &error);
  g_autoptr (BmapTarget) target = bmap_target_open (out, &error);
  BmapCopyOptions options = { 0 };
  const BmapProgress *prev = NULL;
  const BmapProgress *last;
  guint64 mapped;
  gboolean seen[BMAP_N_PHASES] = { FALSE };

  g_assert_no_error (error);
  mapped = bmap_map_get_mapped_bytes (map);
  options.map = map;
  options.verify = TRUE;
  options.verify_written = TRUE;
  options.progress_func = record_progress;
  options.progress_data = reports;
  g_assert_true (bmap_copy (source, target, &options, NULL, &error));
  g_assert_no_error (error);

  for (guint i = 0; i < reports->len; i++) {
    const BmapProgress *p = &g_array_index (reports, BmapProgress, i);

    seen[p->phase] = TRUE;
    /* The whole job: writing and reading back the mapped bytes, and what
     * the sync may have to write. */
    g_assert_cmpuint (p->job_total, >=, 2 * mapped);
    g_assert_cmpuint (p->job_total, <=, 3 * mapped);
    g_assert_cmpuint (p->job_done, <=, p->job_total);
    g_assert_cmpfloat (p->fraction, <=, 1.0);
    if (prev != NULL) {
      g_assert_cmpint (p->phase, >=, prev->phase);
      g_assert_cmpuint (p->job_done, >=, prev->job_done);
      g_assert_cmpfloat (p->fraction, >=, prev->fraction);
    }
    prev = p;
  }
  /* One sample cannot give a rate, nor an end time. */
  g_assert_cmpuint (g_array_index (reports, BmapProgress, 0).rate, ==, 0);
  g_assert_cmpuint (g_array_index (reports, BmapProgress, 0).expected_end_time, ==, 0);
  for (guint phase = 0; phase < BMAP_N_PHASES; phase++)
    g_assert_true (seen[phase]);
  last = &g_array_index (reports, BmapProgress, reports->len - 1);
  g_assert_cmpint (last->phase, ==, BMAP_PHASE_VERIFYING);
  g_assert_cmpuint (last->job_done, ==, last->job_total);
  g_assert_cmpfloat (last->fraction, ==, 1.0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  signal (SIGPIPE, SIG_IGN);

#define ADD(path, func) g_test_add (path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("/copy/raw-with-bmap", test_raw_with_bmap);
  ADD ("/copy/compressed-round-trip", test_compressed_round_trip);
  ADD ("/copy/pipe-source", test_pipe_source);
  ADD ("/copy/truncated-nobmap-fails", test_truncated_nobmap_fails);
  ADD ("/copy/stream-checked-to-end", test_stream_checked_to_end);
  ADD ("/copy/xz-skips-unneeded-blocks", test_xz_skips_unneeded_blocks);
  ADD ("/copy/checksum-mismatch", test_checksum_mismatch);
  ADD ("/copy/cancel-before", test_cancel);
  ADD ("/copy/cancel-mid-copy", test_cancel_mid_copy);
  ADD ("/copy/cancel-stalled-pipe", test_cancel_stalled_pipe);
  ADD ("/copy/checks-before-touching-target", test_checks_before_touching_target);
  ADD ("/copy/dev-null", test_dev_null);
  ADD ("/copy/loop-device", test_loop_device);
  ADD ("/copy/loop-device-too-small", test_loop_device_too_small);
  ADD ("/copy/loop-device-mounted", test_loop_device_mounted);
  ADD ("/copy/progress-one-bar", test_progress_one_bar);
#undef ADD
  return g_test_run ();
}
