/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Writing only what differs (minimize-writes), the unmapped ranges
 * (discard, zero-unmapped) and GPT relocation. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-test-util.h"
#include "libbmap.h"

#define MiB ((guint64) 1024 * 1024)

typedef struct {
  char *dir;
  char *image;
  char *bmap;
  guint64 size;
  char *ramfs; /* mounted by ramfs_dir() */
} Fixture;

/* Several chunks of mapped data (chunks are 2 MiB), holes between them,
 * and a partial last block. */
static const BmapTestExtent layout[] = {
  { 0, 3 * MiB + 100 },
  { 5 * MiB - 5000, 2 * MiB },
  { 9 * MiB, 1 * MiB },
  { 12 * MiB - 2, 1002 },
};
#define IMAGE_SIZE (12 * MiB + 1000)

static BmapMap *
create_map (const char *image)
{
  g_autoptr (GError) error = NULL;
  BmapCreateOptions options;
  BmapMap *map;
  int fd = open (image, O_RDONLY | O_CLOEXEC);

  g_assert_cmpint (fd, >=, 0);
  bmap_create_options_init (&options);
  options.checksum = BMAP_CHECKSUM_SHA256;
  map = bmap_create (fd, image, &options, NULL, &error);
  g_assert_no_error (error);
  close (fd);
  return map;
}

static void
write_bmap (const char *image, const char *bmap)
{
  g_autoptr (BmapMap) map = create_map (image);
  g_autoptr (GError) error = NULL;
  g_autofree char *xml = NULL;
  gsize len;

  xml = bmap_map_to_xml (map, &len);
  g_file_set_contents (bmap, xml, (gssize) len, &error);
  g_assert_no_error (error);
}

static void
fixture_setup (Fixture *fx, gconstpointer data)
{
  fx->dir = bmap_test_tmpdir ();
  fx->image = g_build_filename (fx->dir, "disk.img", NULL);
  fx->bmap = g_build_filename (fx->dir, "disk.img.bmap", NULL);
  fx->size = IMAGE_SIZE;
  bmap_test_make_image (fx->image, fx->size, layout, G_N_ELEMENTS (layout));
  write_bmap (fx->image, fx->bmap);
}

static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  if (fx->ramfs != NULL && umount (fx->ramfs) < 0)
    g_printerr ("could not unmount %s: %s\n", fx->ramfs, g_strerror (errno));
  g_free (fx->ramfs);
  g_free (fx->dir);
  g_free (fx->image);
  g_free (fx->bmap);
}

typedef struct {
  guint64 last_checked;
  guint64 last_written;
  guint reports;
} ProgressLog;

static void
on_progress (const BmapProgress *progress, gpointer user_data)
{
  ProgressLog *log = user_data;

  /* Never more written than checked when checking, and never backwards. */
  if (progress->bytes_checked > 0)
    g_assert_cmpuint (progress->bytes_written, <=, progress->bytes_checked);
  g_assert_cmpuint (progress->bytes_checked, >=, log->last_checked);
  g_assert_cmpuint (progress->bytes_written, >=, log->last_written);
  log->last_checked = progress->bytes_checked;
  log->last_written = progress->bytes_written;
  log->reports++;
}

static gboolean
run_copy_opts (BmapSource *source, const char *bmap, const char *dest, const BmapCopyOptions *base,
               BmapCopyResult *result, GError **error)
{
  g_autoptr (BmapMap) map = NULL;
  g_autoptr (BmapTarget) target = NULL;
  BmapCopyOptions options = *base;

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
  return bmap_copy (source, target, &options, result, error);
}

static gboolean
run_copy (const char *image, const char *bmap, const char *dest, const BmapCopyOptions *base,
          BmapCopyResult *result, GError **error)
{
  g_autoptr (BmapSource) source = bmap_source_new_for_path (image, error);

  if (source == NULL)
    return FALSE;
  return run_copy_opts (source, bmap, dest, base, result, error);
}

static guint64
mapped_bytes (const char *bmap)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = bmap_map_load_file (bmap, &error);

  g_assert_no_error (error);
  return bmap_map_get_mapped_bytes (map);
}

/* Overwrites @len bytes at @offset of @path with 0x5a. */
static void
scribble (const char *path, guint64 offset, gsize len)
{
  g_autofree guint8 *buf = g_malloc (len);
  int fd = open (path, O_WRONLY | O_CLOEXEC);

  g_assert_cmpint (fd, >=, 0);
  memset (buf, 0x5a, len);
  g_assert_cmpint (pwrite (fd, buf, len, (off_t) offset), ==, (ssize_t) len);
  close (fd);
}

/* ---- regular files ----------------------------------------------------- */

static void
test_in_place_writes_nothing (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "out.img", NULL);
  g_autofree char *notes = NULL;
  BmapCopyOptions options = { 0 };
  BmapCopyResult result = { 0 };
  ProgressLog log = { 0 };
  guint64 mapped = mapped_bytes (fx->bmap);

  g_assert_true (run_copy (fx->image, fx->bmap, out, &options, NULL, &error));
  g_assert_no_error (error);

  options.minimize_writes = TRUE;
  options.verify_written = TRUE;
  options.progress_func = on_progress;
  options.progress_data = &log;
  g_assert_true (run_copy (fx->image, fx->bmap, out, &options, &result, &error));
  g_assert_no_error (error);
  bmap_test_assert_same_content (fx->image, out);
  g_assert_cmpuint (result.bytes_checked, ==, mapped);
  g_assert_cmpuint (result.bytes_written, ==, 0);
  g_assert_cmpuint (result.bytes_skipped, ==, mapped);
  g_assert_true (result.verified);
  g_assert_true (result.verified_written);
  /* The last report carries the final counts. */
  g_assert_cmpuint (log.last_checked, ==, mapped);
  g_assert_cmpuint (log.last_written, ==, 0);
  notes = bmap_copy_result_describe (&result);
  g_assert_nonnull (notes);
  g_assert_nonnull (strstr (notes, "found in place, not written"));
}

static void
test_writes_only_differing_blocks (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "out.img", NULL);
  BmapCopyOptions options = { 0 };
  BmapCopyResult result = { 0 };

  g_assert_true (run_copy (fx->image, fx->bmap, out, &options, NULL, &error));
  g_assert_no_error (error);
  /* One whole block, and 10 bytes straddling two blocks of another range. */
  scribble (out, 4096, 4096);
  scribble (out, 9 * MiB + 8192 - 5, 10);

  options.minimize_writes = TRUE;
  g_assert_true (run_copy (fx->image, fx->bmap, out, &options, &result, &error));
  g_assert_no_error (error);
  bmap_test_assert_same_content (fx->image, out);
  g_assert_cmpuint (result.bytes_written, ==, 3 * 4096);
  g_assert_cmpuint (result.bytes_checked, ==, mapped_bytes (fx->bmap));
  g_assert_cmpuint (result.bytes_skipped, ==, result.bytes_checked - 3 * 4096);
}

/* A file kept for comparing must still end up holding the image and
 * nothing of its old data: stale bytes in unmapped ranges and beyond the
 * image's end go. */
static void
test_stale_file_gets_image_only (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "out.img", NULL);
  BmapCopyOptions options = { .minimize_writes = TRUE };
  BmapCopyResult result = { 0 };
  struct stat st;

  g_assert_cmpint (bmap_test_sh ("head -c 14M /dev/zero | tr '\\0' 'A' > '%s'", out), ==, 0);
  g_assert_true (run_copy (fx->image, fx->bmap, out, &options, &result, &error));
  g_assert_no_error (error);
  bmap_test_assert_same_content (fx->image, out);
  g_assert_cmpuint (result.bytes_written, ==, mapped_bytes (fx->bmap));
  /* The unmapped ranges are holes again. */
  g_assert_cmpint (stat (out, &st), ==, 0);
  g_assert_cmpuint ((guint64) st.st_blocks * 512, <, fx->size * 3 / 4);
}

static void
test_nobmap (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "out.img", NULL);
  BmapCopyOptions options = { 0 };
  BmapCopyResult result = { 0 };

  g_assert_true (run_copy (fx->image, NULL, out, &options, NULL, &error));
  g_assert_no_error (error);
  scribble (out, 7 * MiB, 100); /* in a hole of the image */

  options.minimize_writes = TRUE;
  g_assert_true (run_copy (fx->image, NULL, out, &options, &result, &error));
  g_assert_no_error (error);
  bmap_test_assert_same_content (fx->image, out);
  g_assert_cmpuint (result.bytes_checked, ==, fx->size);
  g_assert_cmpuint (result.bytes_written, ==, 4096);
}

/* A flash cut short (here: its source ends half-way) is resumed by running
 * the same copy again: what the first run wrote is not written again. */
static void
test_interrupted_resumed (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = g_build_filename (fx->dir, "out.img", NULL);
  BmapCopyOptions options = { .minimize_writes = TRUE };
  BmapCopyResult first = { 0 };
  BmapCopyResult result = { 0 };
  BmapTestFeeder feeder = { 0 };
  GThread *thread;
  int fds[2];

  g_assert_cmpint (pipe (fds), ==, 0);
  feeder.fd = fds[1];
  feeder.data = bmap_test_read_file (fx->image);
  feeder.len = 6 * MiB;
  thread = g_thread_new ("feeder", bmap_test_feeder_thread, &feeder);
  {
    g_autoptr (BmapSource) source = bmap_source_new (fds[0], TRUE, "cut pipe", &error);

    g_assert_no_error (error);
    g_assert_false (run_copy_opts (source, fx->bmap, out, &options, &first, &error));
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
    g_clear_error (&error);
  }
  g_thread_join (thread);
  g_bytes_unref (feeder.data);

  g_assert_true (run_copy (fx->image, fx->bmap, out, &options, &result, &error));
  g_assert_no_error (error);
  bmap_test_assert_same_content (fx->image, out);
  /* Everything up to the cut was in place: the first 3 MiB + 100 and the
   * second range's first MiB and more. */
  g_assert_cmpuint (result.bytes_skipped, >=, 4 * MiB);
  g_assert_cmpuint (result.bytes_written + result.bytes_skipped, ==, mapped_bytes (fx->bmap));
}

/* ---- loop devices (root) ----------------------------------------------- */

/* A loop device over a fresh backing file of @size bytes of 'A', or of
 * zeros when !@stale, in @dir. */
static char *
loop_new_in (const char *dir, const char *size, gboolean stale)
{
  g_autofree char *backing = g_build_filename (dir, "backing", NULL);
  char *dev;

  g_assert_cmpint (bmap_test_sh ("head -c %s /dev/zero | tr '\\0' '%s' > '%s'", size,
                                 stale ? "A" : "\\0", backing),
                   ==, 0);
  dev = bmap_test_loop_attach (backing);
  if (dev == NULL)
    g_test_skip ("losetup could not attach a loop device");
  return dev;
}

static void
loop_free (char *dev)
{
  bmap_test_loop_detach (dev);
  g_free (dev);
}

static char *
loop_new (Fixture *fx, const char *name, const char *size, gboolean stale)
{
  return loop_new_in (fx->dir, size, stale);
}

/* A directory on ramfs, which has no fallocate: a loop device over a file
 * there has neither discard nor write-zeroes, like many card readers. The
 * mount is in a mount namespace of the test's own, so that an aborted
 * test leaves none behind. */
static const char *
ramfs_dir (Fixture *fx)
{
  static gboolean unshared;

  if (!unshared) {
    if (unshare (CLONE_NEWNS) < 0 || mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
      g_test_skip_printf ("cannot make a mount namespace: %s", g_strerror (errno));
      return NULL;
    }
    unshared = TRUE;
  }
  fx->ramfs = g_build_filename (fx->dir, "ramfs", NULL);
  g_assert_cmpint (g_mkdir (fx->ramfs, 0700), ==, 0);
  if (mount ("bmap-test", fx->ramfs, "ramfs", 0, "mode=0700") < 0) {
    g_test_skip_printf ("cannot mount ramfs: %s", g_strerror (errno));
    g_clear_pointer (&fx->ramfs, g_free);
    return NULL;
  }
  return fx->ramfs;
}

typedef char LoopDev;
G_DEFINE_AUTOPTR_CLEANUP_FUNC (LoopDev, loop_free)

/* Reads the first @len bytes of @dev into a file of the test's. */
static char *
read_back (Fixture *fx, const char *dev, guint64 len)
{
  char *path = g_build_filename (fx->dir, "readback", NULL);

  g_assert_cmpint (bmap_test_sh ("head -c %" G_GUINT64_FORMAT " '%s' > '%s'", len, dev, path), ==,
                   0);
  return path;
}

/* TRUE when the image's unmapped ranges of @path read as zeros. */
static gboolean
unmapped_are_zeros (const char *path, const char *bmap)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapMap) map = bmap_map_load_file (bmap, &error);
  g_autoptr (GBytes) bytes = bmap_test_read_file (path);
  const guint8 *p = g_bytes_get_data (bytes, NULL);
  guint64 pos = 0;

  g_assert_no_error (error);
  for (guint i = 0; i <= bmap_map_get_n_ranges (map); i++) {
    guint64 start = map->image_size;
    guint64 end = map->image_size;

    if (i < bmap_map_get_n_ranges (map)) {
      const BmapRange *r = bmap_map_get_range (map, i);

      start = r->first * map->block_size;
      end = MIN ((r->last + 1) * map->block_size, map->image_size);
    }
    for (guint64 j = pos; j < start; j++)
      if (p[j] != 0)
        return FALSE;
    pos = end;
  }
  return TRUE;
}

static void
test_loop_delta (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LoopDev) dev = NULL;
  g_autofree char *readback = NULL;
  BmapCopyOptions options = { 0 };
  BmapCopyResult result = { 0 };

  if (!bmap_test_can_use_loop () || (dev = loop_new (fx, "backing", "16M", FALSE)) == NULL)
    return;
  g_assert_true (run_copy (fx->image, fx->bmap, dev, &options, NULL, &error));
  g_assert_no_error (error);
  scribble (dev, 9 * MiB + 4096, 1);

  options.minimize_writes = TRUE;
  options.verify_written = TRUE;
  g_assert_true (run_copy (fx->image, fx->bmap, dev, &options, &result, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (result.bytes_written, ==, 4096);
  g_assert_cmpuint (result.bytes_checked, ==, mapped_bytes (fx->bmap));
  readback = read_back (fx, dev, fx->size);
  bmap_test_assert_same_content (fx->image, readback);
}

static void
test_loop_zero_unmapped (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LoopDev) dev = NULL;
  g_autofree char *readback = NULL;
  BmapCopyOptions options = { .zero_unmapped = TRUE, .verify_written = TRUE };
  BmapCopyResult result = { 0 };

  if (!bmap_test_can_use_loop () || (dev = loop_new (fx, "backing", "16M", TRUE)) == NULL)
    return;
  g_assert_true (run_copy (fx->image, fx->bmap, dev, &options, &result, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (result.bytes_zeroed, ==, fx->size - mapped_bytes (fx->bmap));
  readback = read_back (fx, dev, fx->size);
  bmap_test_assert_same_content (fx->image, readback);
}

static void
test_loop_discard (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LoopDev) dev = NULL;
  g_autofree char *readback = NULL;
  BmapCopyOptions options = { .discard = TRUE };
  BmapCopyResult result = { 0 };

  if (!bmap_test_can_use_loop () || (dev = loop_new (fx, "backing", "16M", TRUE)) == NULL)
    return;
  g_assert_true (run_copy (fx->image, fx->bmap, dev, &options, &result, &error));
  g_assert_no_error (error);
  g_assert_cmpint (result.discard, ==, BMAP_DISCARD_DONE);
  g_assert_cmpuint (result.bytes_discarded, >, 0);
  g_assert_cmpuint (result.bytes_discarded, <=, fx->size - mapped_bytes (fx->bmap));
  /* A loop device punches holes in its file for a discard: the whole
   * aligned blocks of the unmapped ranges read as zeros now. */
  readback = read_back (fx, dev, fx->size);
  g_assert_true (unmapped_are_zeros (readback, fx->bmap));
}

/* A device that refuses discard does not fail the flash; the result says
 * so. */
static void
test_loop_discard_refused (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LoopDev) dev = NULL;
  g_autofree char *notes = NULL;
  g_autofree char *readback = NULL;
  BmapCopyOptions options = { .discard = TRUE };
  BmapCopyResult result = { 0 };
  const char *dir;

  if (!bmap_test_can_use_loop () || (dir = ramfs_dir (fx)) == NULL
      || (dev = loop_new_in (dir, "16M", TRUE)) == NULL)
    return;
  g_assert_true (run_copy (fx->image, fx->bmap, dev, &options, &result, &error));
  g_assert_no_error (error);
  g_assert_cmpint (result.discard, ==, BMAP_DISCARD_REFUSED);
  g_assert_cmpint (result.discard_errno, ==, EOPNOTSUPP);
  g_assert_cmpuint (result.bytes_discarded, ==, 0);
  notes = bmap_copy_result_describe (&result);
  g_assert_nonnull (strstr (notes, "the device refused"));
  readback = read_back (fx, dev, fx->size);
  g_assert_false (unmapped_are_zeros (readback, fx->bmap));
}

/* Without write-zeroes, zeros are written: the guarantee holds. */
static void
test_loop_zero_written (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LoopDev) dev = NULL;
  g_autofree char *readback = NULL;
  BmapCopyOptions options = { .zero_unmapped = TRUE };
  BmapCopyResult result = { 0 };
  const char *dir;

  if (!bmap_test_can_use_loop () || (dir = ramfs_dir (fx)) == NULL
      || (dev = loop_new_in (dir, "16M", TRUE)) == NULL)
    return;
  g_assert_true (run_copy (fx->image, fx->bmap, dev, &options, &result, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (result.bytes_zeroed, ==, fx->size - mapped_bytes (fx->bmap));
  readback = read_back (fx, dev, fx->size);
  bmap_test_assert_same_content (fx->image, readback);
}

/* ---- GPT relocation ---------------------------------------------------- */

static gboolean
sfdisk_verifies (const char *dev)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  const char *argv[] = { "sfdisk", "--verify", dev, NULL };

  /* sfdisk --verify exits 0 whatever it finds: its words tell. */
  g_assert_cmpint (bmap_test_run (argv, &out, &err), ==, 0);
  g_test_message ("sfdisk --verify %s: %s%s", dev, out, err);
  return strstr (out, "No errors detected") != NULL;
}

static void
test_loop_relocate_gpt (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LoopDev) dev = NULL;
  g_autofree char *gpt = g_build_filename (fx->dir, "gpt.img", NULL);
  g_autofree char *gpt_bmap = g_build_filename (fx->dir, "gpt.img.bmap", NULL);
  g_autofree char *notes = NULL;
  BmapCopyOptions options = { .verify_written = TRUE };
  BmapCopyResult result = { 0 };

  if (!bmap_test_have_program ("sfdisk")) {
    g_test_skip ("sfdisk not installed");
    return;
  }
  if (!bmap_test_can_use_loop () || (dev = loop_new (fx, "backing", "16M", TRUE)) == NULL)
    return;
  g_assert_cmpint (bmap_test_sh ("truncate -s 8M '%s' && printf 'label: gpt\\n,4M,L\\n' | "
                                 "sfdisk -q '%s' && head -c 1M /dev/urandom | "
                                 "dd of='%s' bs=1M seek=1 conv=notrunc status=none",
                                 gpt, gpt, gpt),
                   ==, 0);
  write_bmap (gpt, gpt_bmap);

  /* Without relocation the backup stays where the image ended. */
  g_assert_true (run_copy (gpt, gpt_bmap, dev, &options, &result, &error));
  g_assert_no_error (error);
  g_assert_cmpint (result.gpt, ==, BMAP_GPT_NOT_ASKED);
  g_assert_false (sfdisk_verifies (dev));

  options.relocate_gpt = TRUE;
  g_assert_true (run_copy (gpt, gpt_bmap, dev, &options, &result, &error));
  g_assert_no_error (error);
  g_assert_cmpint (result.gpt, ==, BMAP_GPT_RELOCATED);
  g_assert_true (result.verified_written);
  g_assert_true (sfdisk_verifies (dev));
  notes = bmap_copy_result_describe (&result);
  g_assert_nonnull (strstr (notes, "backup GPT relocated"));
}

static void
test_relocate_without_gpt (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LoopDev) dev = NULL;
  BmapCopyOptions options = { .relocate_gpt = TRUE };
  BmapCopyResult result = { 0 };

  if (!bmap_test_can_use_loop () || (dev = loop_new (fx, "backing", "16M", TRUE)) == NULL)
    return;
  g_assert_true (run_copy (fx->image, fx->bmap, dev, &options, &result, &error));
  g_assert_no_error (error);
  g_assert_cmpint (result.gpt, ==, BMAP_GPT_NO_GPT);
}

/* ---- what the result says -------------------------------------------- */

static void
test_describe (void)
{
  BmapCopyResult result = { 0 };
  g_autofree char *none = bmap_copy_result_describe (&result);
  g_autofree char *refused = NULL;
  g_autofree char *timed_out = NULL;
  g_autofree char *all = NULL;

  /* A plain copy has nothing to add. */
  g_assert_null (none);

  result.discard = BMAP_DISCARD_REFUSED;
  result.discard_errno = EOPNOTSUPP;
  refused = bmap_copy_result_describe (&result);
  g_assert_cmpstr (refused, ==,
                   "unmapped ranges not discarded: the device refused (Operation not supported)");

  result.discard = BMAP_DISCARD_TIMED_OUT;
  result.bytes_discarded = 3 * MiB;
  timed_out = bmap_copy_result_describe (&result);
  g_assert_cmpstr (timed_out, ==, "discard stopped after 20 s, 3.0 MiB unmapped discarded");

  result.bytes_checked = 4 * MiB;
  result.bytes_skipped = 3 * MiB;
  result.discard = BMAP_DISCARD_DONE;
  result.bytes_zeroed = 1 * MiB;
  result.gpt = BMAP_GPT_RELOCATED;
  all = bmap_copy_result_describe (&result);
  g_assert_cmpstr (all, ==,
                   "3.0 MiB of 4.0 MiB found in place, not written; 3.0 MiB unmapped discarded; "
                   "1.0 MiB unmapped zeroed; backup GPT relocated to the end of the device");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  signal (SIGPIPE, SIG_IGN);

#define ADD(path, func) g_test_add (path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("/delta/in-place-writes-nothing", test_in_place_writes_nothing);
  ADD ("/delta/writes-only-differing-blocks", test_writes_only_differing_blocks);
  ADD ("/delta/stale-file-gets-image-only", test_stale_file_gets_image_only);
  ADD ("/delta/nobmap", test_nobmap);
  ADD ("/delta/interrupted-resumed", test_interrupted_resumed);
  ADD ("/delta/loop-device", test_loop_delta);
  ADD ("/unmapped/loop-zero", test_loop_zero_unmapped);
  ADD ("/unmapped/loop-discard", test_loop_discard);
  ADD ("/unmapped/loop-discard-refused", test_loop_discard_refused);
  ADD ("/unmapped/loop-zero-written", test_loop_zero_written);
  ADD ("/gpt/loop-relocate", test_loop_relocate_gpt);
  ADD ("/gpt/no-gpt", test_relocate_without_gpt);
#undef ADD
  g_test_add_func ("/result/describe", test_describe);
  return g_test_run ();
}
