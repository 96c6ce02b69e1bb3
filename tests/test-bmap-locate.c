/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-locate.h"
#include "bmap-test-util.h"

static void
touch (const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr (GError) error = NULL;

  g_file_set_contents (path, "x", 1, &error);
  g_assert_no_error (error);
}

static void
rm (const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);

  g_assert_cmpint (g_unlink (path), ==, 0);
}

/* Asserts that the bmap found for @image (in @dir) is @want (in @dir). */
static void
assert_found (const char *dir, const char *image, const char *want)
{
  g_autofree char *image_path = g_build_filename (dir, image, NULL);
  g_autofree char *want_path = g_build_filename (dir, want, NULL);
  g_autoptr (GError) error = NULL;
  g_autofree char *found = bmap_locate_for_image (image_path, &error);

  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, want_path);
}

static GError *
locate_error (const char *dir, const char *image)
{
  g_autofree char *image_path = g_build_filename (dir, image, NULL);
  GError *error = NULL;
  g_autofree char *found = bmap_locate_for_image (image_path, &error);

  g_assert_null (found);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_NO_BMAP);
  return error;
}

static void
test_order (void)
{
  g_autofree char *dir = bmap_test_tmpdir ();

  touch (dir, "disk.img.xz");
  touch (dir, "disk.bmap");
  assert_found (dir, "disk.img.xz", "disk.bmap");
  touch (dir, "disk.img.bmap");
  assert_found (dir, "disk.img.xz", "disk.img.bmap");
  touch (dir, "disk.img.xz.bmap");
  assert_found (dir, "disk.img.xz", "disk.img.xz.bmap");

  /* The image need not exist for the search. */
  assert_found (dir, "disk.img.gz", "disk.img.bmap");
  rm (dir, "disk.img.bmap");
  assert_found (dir, "disk.img.gz", "disk.bmap");
}

static void
test_not_found (void)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *p1 = g_build_filename (dir, "disk.img.xz.bmap", NULL);
  g_autofree char *p2 = g_build_filename (dir, "disk.img.bmap", NULL);
  g_autofree char *p3 = g_build_filename (dir, "disk.bmap", NULL);
  g_autoptr (GError) error = NULL;

  touch (dir, "disk.img.xz");
  error = locate_error (dir, "disk.img.xz");
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, p1));
  g_assert_nonnull (strstr (error->message, p2));
  g_assert_nonnull (strstr (error->message, p3));
  g_assert_nonnull (strstr (error->message, "--bmap"));
  g_assert_nonnull (strstr (error->message, "--nobmap"));
  /* Tried in order. */
  g_assert_true (strstr (error->message, p1) < strstr (error->message, p2));
  g_assert_true (strstr (error->message, p2) < strstr (error->message, p3));
}

/* A directory or a dangling link called X.bmap is not a bmap. */
static void
test_only_regular_files (void)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *sub = g_build_filename (dir, "disk.img.bmap", NULL);
  g_autofree char *link = g_build_filename (dir, "disk.img.xz.bmap", NULL);
  g_autofree char *target = g_build_filename (dir, "real.bmap", NULL);

  touch (dir, "disk.img.xz");
  touch (dir, "disk.bmap");
  g_assert_cmpint (g_mkdir (sub, 0755), ==, 0);
  g_assert_cmpint (symlink ("nowhere", link), ==, 0);
  assert_found (dir, "disk.img.xz", "disk.bmap");

  /* A link to a regular file counts. */
  g_assert_cmpint (g_unlink (link), ==, 0);
  touch (dir, "real.bmap");
  g_assert_cmpint (symlink (target, link), ==, 0);
  assert_found (dir, "disk.img.xz", "disk.img.xz.bmap");
}

/* An image called disk.bmap must not be its own bmap. */
static void
test_not_the_image (void)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *image = g_build_filename (dir, "disk.img", NULL);
  g_autofree char *link = g_build_filename (dir, "disk.img.bmap", NULL);
  g_autoptr (GError) error = NULL;

  touch (dir, "disk.bmap");
  error = locate_error (dir, "disk.bmap");
  g_clear_error (&error);

  /* Nor through a link to the image. */
  touch (dir, "disk.img");
  g_assert_cmpint (symlink (image, link), ==, 0);
  rm (dir, "disk.bmap");
  error = locate_error (dir, "disk.img");
}

/* os.path.splitext() rules: dots in directories and leading dots are not
 * extensions. */
static void
test_extension_rules (void)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *sub = g_build_filename (dir, "v1.2", NULL);
  g_autoptr (GError) error = NULL;

  g_assert_cmpint (g_mkdir (sub, 0755), ==, 0);
  touch (dir, "v1.bmap");
  error = locate_error (dir, "v1.2/image");
  g_assert_null (strstr (error->message, "v1.bmap"));
  g_clear_error (&error);

  touch (dir, ".bmap");
  error = locate_error (dir, ".hidden");
  g_clear_error (&error);
  touch (dir, ".hidden.bmap");
  assert_found (dir, ".hidden.xz", ".hidden.bmap");

  touch (dir, "a.b.c.d.bmap");
  touch (dir, "a.bmap");
  assert_found (dir, "a.b.c.d.e.f", "a.b.c.d.bmap");
  rm (dir, "a.b.c.d.bmap");
  assert_found (dir, "a.b.c.d.e.f", "a.bmap");
}

/* bmaptool strips one extension at a time from an archive's name too:
 * disk.img.tar.gz tries disk.img.tar.gz.bmap, disk.img.tar.bmap,
 * disk.img.bmap, disk.bmap; disk.tgz tries disk.tgz.bmap, disk.bmap. */
static void
test_archive_names (void)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *tar_bmap = g_build_filename (dir, "disk.img.tar.bmap", NULL);
  g_autoptr (GError) error = NULL;

  touch (dir, "disk.bmap");
  assert_found (dir, "disk.img.tar.gz", "disk.bmap");
  assert_found (dir, "disk.tgz", "disk.bmap");
  assert_found (dir, "disk.tar.zst", "disk.bmap");
  assert_found (dir, "disk.zip", "disk.bmap");
  assert_found (dir, "disk.lzo", "disk.bmap");
  touch (dir, "disk.img.bmap");
  assert_found (dir, "disk.img.tar.gz", "disk.img.bmap");
  assert_found (dir, "disk.img.zip", "disk.img.bmap");
  assert_found (dir, "disk.img.tbz2", "disk.img.bmap");
  touch (dir, "disk.img.tar.bmap");
  assert_found (dir, "disk.img.tar.gz", "disk.img.tar.bmap");
  touch (dir, "disk.img.tar.gz.bmap");
  assert_found (dir, "disk.img.tar.gz", "disk.img.tar.gz.bmap");
  /* Only suffixes are stripped: nothing is added in their place. */
  rm (dir, "disk.bmap");
  rm (dir, "disk.img.bmap");
  error = locate_error (dir, "disk.tgz");
  g_assert_null (strstr (error->message, tar_bmap));
}

static void
check_candidates (const char *path, const char *want)
{
  g_autoptr (GPtrArray) candidates = bmap_locate_candidates (path);
  g_autofree char *got = NULL;

  g_ptr_array_add (candidates, NULL);
  got = g_strjoinv (" ", (char **) candidates->pdata);
  g_assert_cmpstr (got, ==, want);
}

/* The names alone, shared by files and URLs' paths. */
static void
test_candidates (void)
{
  check_candidates ("disk.img.tar.gz",
                    "disk.img.tar.gz.bmap disk.img.tar.bmap disk.img.bmap disk.bmap");
  check_candidates ("/srv/v1.2/image", "/srv/v1.2/image.bmap");
  check_candidates ("/srv/.hidden.xz", "/srv/.hidden.xz.bmap /srv/.hidden.bmap");
  check_candidates ("..img", "..img.bmap");
  check_candidates ("disk", "disk.bmap");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/locate/order", test_order);
  g_test_add_func ("/locate/not-found", test_not_found);
  g_test_add_func ("/locate/only-regular-files", test_only_regular_files);
  g_test_add_func ("/locate/not-the-image", test_not_the_image);
  g_test_add_func ("/locate/extension-rules", test_extension_rules);
  g_test_add_func ("/locate/archive-names", test_archive_names);
  g_test_add_func ("/locate/candidates", test_candidates);
  return g_test_run ();
}
