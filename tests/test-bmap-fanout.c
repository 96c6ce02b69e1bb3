/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-test-util.h"
#include "libbmap.h"

/* bmap_copy_many(): one read of the image onto several targets. */

#define MiB        ((guint64) 1024 * 1024)
#define N_TARGETS  4
#define IMAGE_SIZE (24 * MiB + 1000)

/* Data over many chunks, holes between, a partial last block. */
static const BmapTestExtent layout[] = {
  { 0, 3 * 4096 + 100 },
  { 2 * MiB - 5000, 9 * MiB },
  { 14 * MiB, 7 * MiB },
  { 24 * MiB - 2, 1002 },
};

typedef struct {
  char *dir;
  char *image;
  BmapMap *map;
} Fixture;

static void
fixture_setup (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  BmapCreateOptions options;
  int fd;

  fx->dir = bmap_test_tmpdir ();
  fx->image = g_build_filename (fx->dir, "disk.img", NULL);
  bmap_test_make_image (fx->image, IMAGE_SIZE, layout, G_N_ELEMENTS (layout));
  fd = open (fx->image, O_RDONLY | O_CLOEXEC);
  g_assert_cmpint (fd, >=, 0);
  bmap_create_options_init (&options);
  fx->map = bmap_create (fd, fx->image, &options, NULL, &error);
  g_assert_no_error (error);
  close (fd);
}

static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  bmap_map_free (fx->map);
  g_free (fx->dir);
  g_free (fx->image);
}

typedef struct {
  GMutex lock;
  guint64 writing_done; /* the last writing report */
  guint reports;
  guint done_calls;
} TargetState;

static void
on_progress (const BmapProgress *progress, gpointer user_data)
{
  TargetState *state = user_data;

  g_mutex_lock (&state->lock);
  state->reports++;
  if (progress->phase == BMAP_PHASE_WRITING)
    state->writing_done = progress->bytes_done;
  g_mutex_unlock (&state->lock);
}

static void
on_done (BmapCopyTarget *target, gpointer user_data)
{
  TargetState *state = user_data;

  g_mutex_lock (&state->lock);
  state->done_calls++;
  g_mutex_unlock (&state->lock);
}

static void
clear_targets (BmapCopyTarget *targets, guint n)
{
  for (guint i = 0; i < n; i++) {
    g_clear_pointer (&targets[i].target, bmap_target_free);
    g_clear_error (&targets[i].error);
  }
}

/* Opens card0.img … in the fixture's directory as @n targets; with @states,
 * each reports its progress and done call into its own state. */
static void
open_cards (Fixture *fx, BmapCopyTarget *targets, TargetState *states, char **paths, guint n)
{
  for (guint i = 0; i < n; i++) {
    g_autoptr (GError) error = NULL;
    g_autofree char *name = g_strdup_printf ("card%u.img", i);
    g_autofree char *path = g_build_filename (fx->dir, name, NULL);

    targets[i].target = bmap_target_open (path, &error);
    g_assert_no_error (error);
    if (states != NULL) {
      targets[i].progress_func = on_progress;
      targets[i].progress_data = &states[i];
      targets[i].done_func = on_done;
      targets[i].done_data = &states[i];
    }
    if (paths != NULL)
      paths[i] = g_steal_pointer (&path);
  }
}

/* Four files from one gzip stream: each byte-identical, each with its own
 * progress, result, read-back and done call. */
static void
test_identical (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autofree char *packed = g_build_filename (fx->dir, "disk.img.gz", NULL);
  BmapCopyTarget targets[N_TARGETS] = { 0 };
  TargetState states[N_TARGETS] = { 0 };
  char *paths[N_TARGETS] = { 0 };
  BmapCopyOptions options = { 0 };

  g_assert_cmpint (bmap_test_sh ("gzip -1 -c '%s' > '%s'", fx->image, packed), ==, 0);
  source = bmap_source_new_for_path (packed, &error);
  g_assert_no_error (error);
  open_cards (fx, targets, states, paths, N_TARGETS);
  options.map = fx->map;
  options.verify = TRUE;
  options.verify_written = TRUE;
  g_assert_true (bmap_copy_many (source, targets, N_TARGETS, &options, &error));
  g_assert_no_error (error);

  for (guint i = 0; i < N_TARGETS; i++) {
    g_assert_no_error (targets[i].error);
    g_assert_cmpuint (states[i].done_calls, ==, 1);
    g_assert_cmpuint (states[i].reports, >, 0);
    g_assert_cmpuint (states[i].writing_done, ==, bmap_map_get_mapped_bytes (fx->map));
    g_assert_cmpuint (targets[i].result.blocks_written, ==, fx->map->mapped_blocks_count);
    g_assert_cmpuint (targets[i].result.bytes_written, ==, bmap_map_get_mapped_bytes (fx->map));
    g_assert_true (targets[i].result.verified);
    g_assert_true (targets[i].result.verified_written);
    bmap_test_assert_same_content (fx->image, paths[i]);
  }
  clear_targets (targets, N_TARGETS);
  for (guint i = 0; i < N_TARGETS; i++)
    g_free (paths[i]);
}

/* The image's error is every target's: a checksum mismatch fails all. */
static void
test_image_error_is_everyones (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autofree char *bad = g_build_filename (fx->dir, "bad.img", NULL);
  BmapCopyTarget targets[2] = { 0 };
  BmapCopyOptions options = { 0 };
  const guint8 flip = 0xff;
  int fd;

  g_assert_cmpint (bmap_test_sh ("cp '%s' '%s'", fx->image, bad), ==, 0);
  fd = open (bad, O_WRONLY | O_CLOEXEC);
  g_assert_cmpint (pwrite (fd, &flip, 1, (off_t) (15 * MiB)), ==, 1);
  close (fd);
  source = bmap_source_new_for_path (bad, &error);
  g_assert_no_error (error);
  open_cards (fx, targets, NULL, NULL, G_N_ELEMENTS (targets));
  options.map = fx->map;
  options.verify = TRUE;
  g_assert_true (bmap_copy_many (source, targets, G_N_ELEMENTS (targets), &options, &error));
  for (guint i = 0; i < G_N_ELEMENTS (targets); i++)
    g_assert_error (targets[i].error, BMAP_ERROR, BMAP_ERROR_CHECKSUM_MISMATCH);
  clear_targets (targets, G_N_ELEMENTS (targets));
}

/* One target stopped in the middle of the stream drops out with its own
 * error; the others get the whole image. */
static void
test_one_dropped_midway (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GCancellable) cancel_one = g_cancellable_new ();
  BmapCopyTarget targets[N_TARGETS] = { 0 };
  TargetState states[N_TARGETS] = { 0 };
  char *paths[N_TARGETS] = { 0 };
  BmapCopyOptions options = { 0 };
  g_autoptr (GBytes) image = bmap_test_read_file (fx->image);
  BmapTestFeeder feeder
      = { .data = image, .len = g_bytes_get_size (image), .cancel_at_half = cancel_one };
  GThread *thread;
  int fds[2];

  g_assert_cmpint (pipe2 (fds, O_CLOEXEC), ==, 0);
  /* The source reads the stream's first bytes when it is made. */
  feeder.fd = fds[1];
  thread = g_thread_new ("feeder", bmap_test_feeder_thread, &feeder);
  source = bmap_source_new (fds[0], TRUE, "pipe", &error);
  g_assert_no_error (error);
  open_cards (fx, targets, states, paths, N_TARGETS);
  targets[2].cancellable = cancel_one;
  options.map = fx->map;
  options.verify = TRUE;
  g_assert_true (bmap_copy_many (source, targets, N_TARGETS, &options, &error));
  g_thread_join (thread);

  for (guint i = 0; i < N_TARGETS; i++) {
    g_assert_cmpuint (states[i].done_calls, ==, 1);
    if (i == 2) {
      g_assert_error (targets[i].error, BMAP_ERROR, BMAP_ERROR_CANCELLED);
      continue;
    }
    g_assert_no_error (targets[i].error);
    bmap_test_assert_same_content (fx->image, paths[i]);
  }
  clear_targets (targets, N_TARGETS);
  for (guint i = 0; i < N_TARGETS; i++)
    g_free (paths[i]);
}

/* A target whose writes fail (a tmpfs smaller than the image: ENOSPC in
 * the middle) drops out; the others finish. Needs root to mount it. */
static void
test_one_fails_writing (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autofree char *small = g_build_filename (fx->dir, "small", NULL);
  char *paths[3] = { 0 };
  BmapCopyTarget targets[3] = { 0 };
  BmapCopyOptions options = { 0 };

  g_assert_cmpint (g_mkdir (small, 0700), ==, 0);
  if (mount ("bmap-test", small, "tmpfs", 0, "size=4m") < 0) {
    g_test_skip_printf ("cannot mount a small tmpfs (needs root): %s", g_strerror (errno));
    return;
  }
  source = bmap_source_new_for_path (fx->image, &error);
  g_assert_no_error (error);
  paths[0] = g_build_filename (fx->dir, "card0.img", NULL);
  paths[1] = g_build_filename (small, "card1.img", NULL);
  paths[2] = g_build_filename (fx->dir, "card2.img", NULL);
  for (guint i = 0; i < G_N_ELEMENTS (targets); i++) {
    targets[i].target = bmap_target_open (paths[i], &error);
    g_assert_no_error (error);
  }
  options.map = fx->map;
  options.verify = TRUE;
  g_assert_true (bmap_copy_many (source, targets, G_N_ELEMENTS (targets), &options, &error));
  g_assert_no_error (error);
  g_assert_nonnull (targets[1].error);
  g_assert_nonnull (strstr (targets[1].error->message, paths[1]));
  g_assert_no_error (targets[0].error);
  g_assert_no_error (targets[2].error);
  bmap_test_assert_same_content (fx->image, paths[0]);
  bmap_test_assert_same_content (fx->image, paths[2]);
  clear_targets (targets, G_N_ELEMENTS (targets));
  for (guint i = 0; i < G_N_ELEMENTS (paths); i++)
    g_free (paths[i]);
  g_assert_cmpint (umount (small), ==, 0);
}

/* The same target twice, or one too small, refuses the whole copy before
 * anything is written. */
static void
test_refused_before_writing (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSource) source = bmap_source_new_for_path (fx->image, NULL);
  g_autofree char *first = g_build_filename (fx->dir, "first.img", NULL);
  g_autofree char *twice = g_build_filename (fx->dir, "twice.img", NULL);
  BmapCopyTarget targets[3] = { 0 };
  BmapCopyOptions options = { .map = fx->map, .verify = TRUE };
  struct stat st;

  g_assert_true (g_file_set_contents (first, "old", 3, NULL));
  g_assert_true (g_file_set_contents (twice, "old", 3, NULL));
  targets[0].target = bmap_target_open (first, &error);
  g_assert_no_error (error);
  targets[1].target = bmap_target_open (twice, &error);
  g_assert_no_error (error);
  targets[2].target = bmap_target_open (twice, &error);
  g_assert_no_error (error);
  g_assert_false (bmap_copy_many (source, targets, 3, &options, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "the same target as"));
  g_assert_cmpint (g_stat (first, &st), ==, 0);
  g_assert_cmpint (st.st_size, ==, 3);
  clear_targets (targets, 3);
}

typedef struct {
  GMutex lock;
  GCond cond;
  gboolean blocked;
  gboolean released;
  guint64 blocked_at;
} Pacing;

/* The slow target: stops in its first report of written bytes until the
 * test lets it go. */
static void
on_progress_slow (const BmapProgress *progress, gpointer user_data)
{
  Pacing *pacing = user_data;

  if (progress->phase != BMAP_PHASE_WRITING || progress->bytes_done == 0)
    return;
  g_mutex_lock (&pacing->lock);
  if (!pacing->released) {
    pacing->blocked = TRUE;
    pacing->blocked_at = progress->bytes_done;
    g_cond_broadcast (&pacing->cond);
    while (!pacing->released)
      g_cond_wait (&pacing->cond, &pacing->lock);
  }
  g_mutex_unlock (&pacing->lock);
}

typedef struct {
  BmapSource *source;
  BmapCopyTarget *targets;
  const BmapCopyOptions *options;
  gboolean ok;
} CopyThread;

static gpointer
copy_thread (gpointer data)
{
  CopyThread *copy = data;

  copy->ok = bmap_copy_many (copy->source, copy->targets, 2, copy->options, NULL);
  return NULL;
}

/* While the slow target is stopped, the fast one (a sparse file, whose
 * allocated blocks are what it was given) gets no further ahead of it than
 * the ring: the copy's memory does not grow with a stalled card. */
static void
test_bounded (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *big = g_build_filename (fx->dir, "big.img", NULL);
  g_autofree char *fast = g_build_filename (fx->dir, "fast.img", NULL);
  g_autoptr (BmapSource) source = NULL;
  const BmapTestExtent all[] = { { 0, 64 * MiB } };
  BmapCopyTarget targets[2] = { 0 };
  BmapCopyOptions options = { 0 };
  Pacing pacing = { 0 };
  CopyThread copy = { 0 };
  GThread *thread;
  guint64 fast_bytes;
  struct stat st;

  bmap_test_make_image (big, 64 * MiB, all, 1);
  source = bmap_source_new_for_path (big, &error);
  g_assert_no_error (error);
  targets[0].target = bmap_target_open (fast, &error);
  g_assert_no_error (error);
  targets[1].target = bmap_target_open ("/dev/null", &error);
  g_assert_no_error (error);
  targets[1].progress_func = on_progress_slow;
  targets[1].progress_data = &pacing;
  copy.source = source;
  copy.targets = targets;
  copy.options = &options;
  thread = g_thread_new ("copy", copy_thread, &copy);

  g_mutex_lock (&pacing.lock);
  while (!pacing.blocked)
    g_cond_wait (&pacing.cond, &pacing.lock);
  g_mutex_unlock (&pacing.lock);
  /* Time for the fast target to run as far as it can; the assertion holds
   * however far it got. */
  g_usleep (500 * 1000);
  g_assert_cmpint (g_stat (fast, &st), ==, 0);
  fast_bytes = (guint64) st.st_blocks * 512;
  g_mutex_lock (&pacing.lock);
  pacing.released = TRUE;
  g_cond_broadcast (&pacing.cond);
  g_mutex_unlock (&pacing.lock);
  g_thread_join (thread);

  g_test_message ("slow target stopped at %" G_GUINT64_FORMAT
                  " bytes, the fast one had %" G_GUINT64_FORMAT ", ring %" G_GSIZE_FORMAT,
                  pacing.blocked_at, fast_bytes, BMAP_COPY_RING_BYTES (2));
  /* 1 MiB for the file system's own blocks. */
  g_assert_cmpuint (fast_bytes, <=, pacing.blocked_at + BMAP_COPY_RING_BYTES (2) + MiB);
  g_assert_true (copy.ok);
  g_assert_no_error (targets[0].error);
  g_assert_no_error (targets[1].error);
  bmap_test_assert_same_content (big, fast);
  clear_targets (targets, 2);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(path, func) g_test_add (path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("/fanout/identical", test_identical);
  ADD ("/fanout/image-error-is-everyones", test_image_error_is_everyones);
  ADD ("/fanout/one-dropped-midway", test_one_dropped_midway);
  ADD ("/fanout/one-fails-writing", test_one_fails_writing);
  ADD ("/fanout/refused-before-writing", test_refused_before_writing);
  ADD ("/fanout/bounded", test_bounded);
  return g_test_run ();
}
