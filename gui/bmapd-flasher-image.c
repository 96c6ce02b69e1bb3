/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <glib/gi18n.h>
#include <string.h>

#include "bmap-signature.h"
#include "bmap-trusted-keys.h"
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
  GBytes *bmap_data;
  GBytes *signature;
  char *signature_name; /* its file's name, for messages */
  BmapdFlasherSignatureState signature_state;
  char *signer;   /* TRUSTED: "Name <mail>" */
  char *key_id;   /* TRUSTED: the signing key's long id */
  char *distrust; /* UNTRUSTED: why */
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
  g_clear_pointer (&self->bmap_data, g_bytes_unref);
  g_clear_pointer (&self->signature, g_bytes_unref);
  g_free (self->signature_name);
  g_free (self->signer);
  g_free (self->key_id);
  g_free (self->distrust);
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

/* A clearsigned bmap's text, as gpg extracts it; judged later. */
static GBytes *
clearsigned_text (GBytes *file, const char *name, GError **error)
{
  const char *const no_keys[] = { NULL };
  g_autoptr (BmapSignatureVerifier) verifier
      = bmap_signature_verifier_new (no_keys, "no keys", error);
  GBytes *text = NULL;

  if (verifier == NULL
      || !bmap_signature_verifier_verify (verifier, file, NULL, name, name, FALSE, &text, NULL,
                                          error))
    return NULL;
  return text;
}

/* BMAP.asc or BMAP.sig, as bmaptool looks for them; one that is there but
 * cannot be read is an error, not a missing signature. */
static gboolean
find_detached_signature (BmapdFlasherImage *self, GError **error)
{
  static const char *const exts[] = { ".asc", ".sig" };

  for (guint i = 0; i < G_N_ELEMENTS (exts); i++) {
    g_autofree char *path = g_strconcat (self->bmap_path, exts[i], NULL);

    if (!g_file_test (path, G_FILE_TEST_EXISTS))
      continue;
    self->signature = bmap_signature_read_file (path, BMAP_SIGNATURE_MAX_FILE_SIZE, error);
    if (self->signature == NULL)
      return FALSE;
    self->signature_name = g_path_get_basename (path);
    return TRUE;
  }
  return TRUE;
}

/* The bmap's bytes and its signature, if any; the bmap parsed. */
static BmapMap *
load_bmap (BmapdFlasherImage *self, GError **error)
{
  g_autoptr (GBytes) file = NULL;
  g_autofree char *name = g_path_get_basename (self->bmap_path);
  gsize len;
  const char *data;

  file = bmap_signature_read_file (self->bmap_path,
                                   BMAP_FORMAT_MAX_FILE_SIZE + BMAP_SIGNATURE_MAX_FILE_SIZE, error);
  if (file == NULL)
    return NULL;
  data = g_bytes_get_data (file, &len);
  if (bmap_signature_is_clearsigned (data, len)) {
    self->bmap_data = clearsigned_text (file, self->bmap_path, error);
    if (self->bmap_data == NULL)
      return NULL;
    self->signature = g_bytes_ref (file);
    self->signature_name = g_steal_pointer (&name);
  } else {
    self->bmap_data = g_bytes_ref (file);
    if (!find_detached_signature (self, error))
      return NULL;
  }
  if (self->signature != NULL)
    self->signature_state = BMAPD_FLASHER_SIGNATURE_CHECKING;
  data = g_bytes_get_data (self->bmap_data, &len);
  return bmap_map_load_data (data, len, self->bmap_path, error);
}

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
    g_autoptr (BmapMap) map = load_bmap (self, error);

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

GBytes *
bmapd_flasher_image_get_bmap_data (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), NULL);
  return self->bmap_data;
}

GBytes *
bmapd_flasher_image_get_signature (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), NULL);
  return self->signature;
}

BmapdFlasherSignatureState
bmapd_flasher_image_get_signature_state (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), BMAPD_FLASHER_SIGNATURE_NONE);
  return self->signature_state;
}

/* What the check's thread is given (no image: it is not thread-safe) and
 * what it finds. */
typedef struct {
  char *dir;
  GBytes *bmap;
  GBytes *signature;
  char *bmap_name;
  char *signature_name;
  BmapSigner *signer;
  char *distrust;
} SignatureCheck;

static void
signature_check_free (SignatureCheck *check)
{
  g_free (check->dir);
  g_bytes_unref (check->bmap);
  g_bytes_unref (check->signature);
  g_free (check->bmap_name);
  g_free (check->signature_name);
  bmap_signer_free (check->signer);
  g_free (check->distrust);
  g_free (check);
}

static void
check_signature_thread (GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  SignatureCheck *check = task_data;
  g_autoptr (GError) error = NULL;

  check->signer = bmap_trusted_keys_verify (check->dir, check->bmap, check->signature,
                                            check->bmap_name, check->signature_name, &error);
  if (check->signer == NULL)
    check->distrust = g_strdup (error->message);
  g_task_return_boolean (task, TRUE);
}

void
bmapd_flasher_image_check_signature_async (BmapdFlasherImage *self, const char *trusted_keys_dir,
                                           GCancellable *cancellable, GAsyncReadyCallback callback,
                                           gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (self, cancellable, callback, user_data);
  g_autoptr (GError) error = NULL;
  SignatureCheck *check;

  g_return_if_fail (BMAPD_FLASHER_IS_IMAGE (self));

  g_task_set_source_tag (task, bmapd_flasher_image_check_signature_async);
  if (self->signature == NULL) {
    g_task_return_boolean (task, TRUE);
    return;
  }
  /* GPGME wants its first call on the main thread. */
  if (!bmap_signature_init (&error)) {
    g_task_return_error (task, g_steal_pointer (&error));
    return;
  }
  check = g_new0 (SignatureCheck, 1);
  check->dir = g_strdup (trusted_keys_dir);
  check->bmap = g_bytes_ref (self->bmap_data);
  check->signature = g_bytes_ref (self->signature);
  check->bmap_name = g_path_get_basename (self->bmap_path);
  check->signature_name = g_strdup (self->signature_name);
  g_task_set_task_data (task, check, (GDestroyNotify) signature_check_free);
  g_task_run_in_thread (task, check_signature_thread);
}

/* The long key id, as gpg shows it: the fingerprint's last 16 digits. */
static char *
key_id (const char *fingerprint)
{
  gsize len = strlen (fingerprint);

  return g_strdup (len > 16 ? fingerprint + len - 16 : fingerprint);
}

gboolean
bmapd_flasher_image_check_signature_finish (BmapdFlasherImage *self, GAsyncResult *result,
                                            GError **error)
{
  SignatureCheck *check;

  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);

  if (!g_task_propagate_boolean (G_TASK (result), error)) {
    /* gpg cannot run: bmapd will not trust it either. */
    if (self->signature != NULL) {
      self->signature_state = BMAPD_FLASHER_SIGNATURE_UNTRUSTED;
      g_free (self->distrust);
      self->distrust = g_strdup (error != NULL && *error != NULL ? (*error)->message : "");
    }
    return FALSE;
  }
  check = g_task_get_task_data (G_TASK (result));
  if (check == NULL)
    return TRUE;
  g_clear_pointer (&self->signer, g_free);
  g_clear_pointer (&self->key_id, g_free);
  g_clear_pointer (&self->distrust, g_free);
  if (check->signer != NULL) {
    self->signature_state = BMAPD_FLASHER_SIGNATURE_TRUSTED;
    self->signer = g_strdup (check->signer->signer);
    self->key_id = key_id (check->signer->fingerprint);
  } else {
    g_autofree char *prefix = g_strconcat (check->bmap_name, ": ", NULL);

    /* The badge sits under the image's name: "bmap: " says nothing more. */
    self->signature_state = BMAPD_FLASHER_SIGNATURE_UNTRUSTED;
    self->distrust
        = g_strdup (g_str_has_prefix (check->distrust, prefix) ? check->distrust + strlen (prefix)
                                                               : check->distrust);
  }
  return TRUE;
}

char *
bmapd_flasher_image_dup_signature_badge (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), NULL);

  switch (self->signature_state) {
    case BMAPD_FLASHER_SIGNATURE_CHECKING:
      return g_strdup (_ ("checking the signature…"));
    case BMAPD_FLASHER_SIGNATURE_TRUSTED:
      /* TRANSLATORS: "signed by Release Team <rel@example.org> (0123456789ABCDEF)" */
      return g_strdup_printf (_ ("signed by %s (%s)"), self->signer, self->key_id);
    case BMAPD_FLASHER_SIGNATURE_UNTRUSTED:
      /* TRANSLATORS: "signature not trusted: <what gpg and the trusted keys say>" */
      return g_strdup_printf (_ ("signature not trusted: %s"), self->distrust);
    case BMAPD_FLASHER_SIGNATURE_NONE:
    default:
      return NULL;
  }
}

const char *
bmapd_flasher_image_get_signature_distrust (BmapdFlasherImage *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_IMAGE (self), NULL);
  return self->signature_state == BMAPD_FLASHER_SIGNATURE_UNTRUSTED ? self->distrust : NULL;
}
