/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <string.h>

#include "bmap-error.h"
#include "bmap-trusted-keys.h"

static gint
compare_paths (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

GPtrArray *
bmap_trusted_keys_list (const char *dir, GError **error)
{
  g_autoptr (GPtrArray) files = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GDir) d = g_dir_open (dir, 0, error);
  const char *name;

  if (d == NULL) {
    bmap_error_normalize (error);
    return NULL;
  }
  while ((name = g_dir_read_name (d)) != NULL) {
    g_autofree char *path = NULL;

    if (name[0] == '.'
        || !(g_str_has_suffix (name, ".gpg") || g_str_has_suffix (name, ".asc")
             || g_str_has_suffix (name, ".pgp")))
      continue;
    path = g_build_filename (dir, name, NULL);
    if (g_file_test (path, G_FILE_TEST_IS_REGULAR))
      g_ptr_array_add (files, g_steal_pointer (&path));
  }
  g_ptr_array_sort (files, compare_paths);
  return g_steal_pointer (&files);
}

BmapSigner *
bmap_trusted_keys_verify (const char *dir, GBytes *bmap, GBytes *signature, const char *bmap_name,
                          const char *signature_name, GError **error)
{
  g_autoptr (GError) local_error = NULL;
  g_autoptr (GPtrArray) files = bmap_trusted_keys_list (dir, &local_error);
  g_autoptr (BmapSignatureVerifier) verifier = NULL;
  g_autoptr (GBytes) plaintext = NULL;
  g_autoptr (GPtrArray) signers = NULL;
  g_autofree char *keyring_name = NULL;
  const BmapSigner *signer;
  BmapSigner *copy;
  gboolean clearsigned;
  gsize len;
  const char *data = g_bytes_get_data (signature, &len);

  if (files == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NOT_AUTHORIZED, "no trusted keys: %s",
                 local_error->message);
    return NULL;
  }
  if (files->len == 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NOT_AUTHORIZED,
                 "no trusted keys: %s holds no *.gpg, *.asc or *.pgp file", dir);
    return NULL;
  }
  g_ptr_array_add (files, NULL);
  keyring_name = g_strdup_printf ("the trusted keys in %s", dir);
  verifier = bmap_signature_verifier_new ((const char *const *) files->pdata, keyring_name, error);
  if (verifier == NULL)
    return NULL;

  clearsigned = bmap_signature_is_clearsigned (data, len);
  if (!bmap_signature_verifier_verify (verifier, clearsigned ? signature : bmap,
                                       clearsigned ? NULL : signature, bmap_name, signature_name,
                                       TRUE, &plaintext, &signers, error))
    return NULL;
  /* A clearsigned bmap vouches for the bmap passed only if it is its text. */
  if (clearsigned && (plaintext == NULL || !g_bytes_equal (plaintext, bmap))) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                 "the clearsigned bmap passed as %s is not the %s passed", signature_name,
                 bmap_name);
    return NULL;
  }

  signer = g_ptr_array_index (signers, 0);
  copy = g_new0 (BmapSigner, 1);
  copy->fingerprint = g_strdup (signer->fingerprint);
  copy->signing_key = g_strdup (signer->signing_key);
  copy->signer = g_strdup (signer->signer);
  return copy;
}
