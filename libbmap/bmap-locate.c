/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <string.h>
#include <sys/stat.h>

#include "bmap-error.h"
#include "bmap-locate.h"

/* Python's os.path.splitext(): the extension is the last dot of the last
 * component and everything after it, unless the component is only dots up
 * to there (".bashrc" has none). Returns the length of the root, or the
 * whole length when there is no extension. */
static gsize
splitext_root_len (const char *path)
{
  const char *slash = strrchr (path, '/');
  const char *base = slash != NULL ? slash + 1 : path;
  const char *dot = strrchr (base, '.');

  if (dot == NULL)
    return strlen (path);
  for (const char *p = base; p < dot; p++) {
    if (*p != '.')
      return (gsize) (dot - path);
  }
  return strlen (path);
}

static gboolean
is_same_file (const struct stat *a, const struct stat *b)
{
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

GPtrArray *
bmap_locate_candidates (const char *path)
{
  GPtrArray *candidates = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *root = g_strdup (path);

  g_return_val_if_fail (path != NULL, candidates);

  for (;;) {
    gsize root_len;

    g_ptr_array_add (candidates, g_strconcat (root, ".bmap", NULL));
    root_len = splitext_root_len (root);
    if (root_len == strlen (root))
      break;
    root[root_len] = '\0';
  }
  return candidates;
}

char *
bmap_locate_for_image (const char *image_path, GError **error)
{
  g_autoptr (GPtrArray) candidates = NULL;
  g_autofree char *tried_list = NULL;
  struct stat image_st;
  gboolean have_image_st;

  g_return_val_if_fail (image_path != NULL, NULL);

  have_image_st = stat (image_path, &image_st) == 0;
  candidates = bmap_locate_candidates (image_path);
  for (guint i = 0; i < candidates->len; i++) {
    const char *candidate = g_ptr_array_index (candidates, i);
    struct stat st;

    /* "disk.bmap" as the image would otherwise find itself. */
    if (strcmp (candidate, image_path) != 0 && stat (candidate, &st) == 0 && S_ISREG (st.st_mode)
        && !(have_image_st && is_same_file (&st, &image_st)))
      return g_strdup (candidate);
  }

  g_ptr_array_add (candidates, NULL);
  tried_list = g_strjoinv (", ", (char **) candidates->pdata);
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_NO_BMAP,
               "no bmap found for %s (tried %s); give one with --bmap, or copy every block "
               "with --nobmap",
               image_path, tried_list);
  return NULL;
}
