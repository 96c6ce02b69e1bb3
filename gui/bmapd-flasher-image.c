/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <glib/gi18n.h>

#include "bmapd-flasher-image.h"
#include "libbmap.h"

struct _BmapdFlasherImage {
  GObject parent_instance;
  char *path;
  char *basename;
  char *bmap_path;
  char *format;
  guint64 image_size;
  guint64 mapped_bytes;
};

G_DEFINE_TYPE (BmapdFlasherImage, bmapd_flasher_image, G_TYPE_OBJECT)

static void
bmapd_flasher_image_finalize (GObject *object)
{
  BmapdFlasherImage *self = BMAPD_FLASHER_IMAGE (object);

  g_free (self->path);
  g_free (self->basename);
  g_free (self->bmap_path);
  g_free (self->format);
  G_OBJECT_CLASS (bmapd_flasher_image_parent_class)->finalize (object);
}

static void
bmapd_flasher_image_class_init (BmapdFlasherImageClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = bmapd_flasher_image_finalize;
}

static void
bmapd_flasher_image_init (BmapdFlasherImage *self)
{}

BmapdFlasherImage *
bmapd_flasher_image_new_for_path (const char *path, GError **error)
{
  g_autoptr (BmapdFlasherImage) self = g_object_new (BMAPD_FLASHER_TYPE_IMAGE, NULL);
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GError) locate_error = NULL;

  g_return_val_if_fail (path != NULL, NULL);

  self->path = g_strdup (path);
  self->basename = g_path_get_basename (path);

  source = bmap_source_new_for_path (path, error);
  if (source == NULL)
    return NULL;
  self->format = g_strdup (bmap_source_get_format (source));
  self->image_size = bmap_source_get_size (source);

  self->bmap_path = bmap_locate_for_image (path, &locate_error);
  if (self->bmap_path != NULL) {
    g_autoptr (BmapMap) map = bmap_map_load_file (self->bmap_path, error);

    if (map == NULL)
      return NULL;
    /* An uncompressed image shorter or longer than its bmap says belongs
     * to another bmap: bmapd would refuse it after the password. */
    if (self->image_size != 0 && self->image_size != map->image_size) {
      g_autofree char *have = g_strdup_printf ("%" G_GUINT64_FORMAT, self->image_size);
      g_autofree char *want = g_strdup_printf ("%" G_GUINT64_FORMAT, map->image_size);
      /* TRANSLATORS: "disk.img is 4096 bytes but its bmap disk.img.bmap is for
       * an image of 8192 bytes" */
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                   _ ("%s is %s bytes but its bmap %s is for an image of %s bytes"), path, have,
                   self->bmap_path, want);
      return NULL;
    }
    self->image_size = map->image_size;
    self->mapped_bytes = bmap_map_get_mapped_bytes (map);
  } else if (!g_error_matches (locate_error, BMAP_ERROR, BMAP_ERROR_NO_BMAP)) {
    g_propagate_error (error, g_steal_pointer (&locate_error));
    return NULL;
  }
  return g_steal_pointer (&self);
}

const char *
bmapd_flasher_image_get_path (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), NULL);
  return self->path;
}

const char *
bmapd_flasher_image_get_basename (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), NULL);
  return self->basename;
}

const char *
bmapd_flasher_image_get_bmap_path (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), NULL);
  return self->bmap_path;
}

const char *
bmapd_flasher_image_get_format (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), NULL);
  return self->format;
}

guint64
bmapd_flasher_image_get_image_size (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), 0);
  return self->image_size;
}

guint64
bmapd_flasher_image_get_bytes_to_write (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), 0);
  return self->bmap_path != NULL ? self->mapped_bytes : self->image_size;
}

char *
bmapd_flasher_image_dup_badge (BmapdFlasherImage *self)
{
  g_autofree char *image_size = NULL;

  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), NULL);

  image_size = g_format_size (self->image_size);
  if (self->bmap_path != NULL) {
    g_autofree char *mapped = g_format_size (self->mapped_bytes);
    /* TRANSLATORS: "block map: 1.2 GB of 8.6 GB to write" */
    return g_strdup_printf (_ ("block map: %s of %s to write"), mapped, image_size);
  }
  if (self->image_size == 0)
    return g_strdup (_ ("no block map: every byte is written, size known only after decoding"));
  /* TRANSLATORS: "no block map: all of 8.6 GB is written" */
  return g_strdup_printf (_ ("no block map: all of %s is written"), image_size);
}
