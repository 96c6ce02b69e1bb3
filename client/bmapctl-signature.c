/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-format.h"
#include "bmap-signature.h"
#include "bmapctl-signature.h"
#include "bmapctl-url.h"

const char *
bmapctl_signature_check_args (const BmapctlSignatureArgs *args, gboolean nobmap)
{
  if (args->bmap_sig != NULL && args->no_sig_verify)
    return "--bmap-sig and --no-sig-verify cannot be used together";
  if (args->no_sig_verify && args->keyring != NULL)
    return "--no-sig-verify and --keyring cannot be used together";
  if (args->no_sig_verify && args->fingerprint != NULL)
    return "--no-sig-verify and --fingerprint cannot be used together";
  if (args->bmap_sig != NULL && nobmap)
    return "--bmap-sig needs a bmap, and --nobmap was given";
  return NULL;
}

/* A signature at @location, a path or a URL; NULL with @absent when there
 * is no such file. */
static GBytes *
read_signature (const char *location, GCancellable *stop, gboolean *absent, GError **error)
{
  g_autoptr (GError) local_error = NULL;
  GBytes *bytes;

  if (bmapctl_url_is_url (location))
    return bmapctl_url_fetch (location, BMAP_SIGNATURE_MAX_FILE_SIZE, stop, absent, error);
  bytes = bmap_signature_read_file (location, BMAP_SIGNATURE_MAX_FILE_SIZE, &local_error);
  /* A signature that is there but unreadable must not be skipped. */
  *absent = bytes == NULL && !g_file_test (location, G_FILE_TEST_EXISTS);
  if (bytes == NULL)
    g_propagate_error (error, g_steal_pointer (&local_error));
  return bytes;
}

/* The detached signature next to the bmap, as bmaptool looks for it: for a
 * URL too, where a 404 (410, 403) means "not there" as for the bmap. */
static GBytes *
find_signature (BmapctlOptions *options, const char *bmap_location, const char *bmap_name,
                GCancellable *stop, char **sig_name, GError **error)
{
  static const char *const exts[] = { ".asc", ".sig" };

  for (guint i = 0; i < G_N_ELEMENTS (exts); i++) {
    g_autofree char *location = bmapctl_url_with_suffix (bmap_location, exts[i]);
    g_autofree char *name = bmapctl_url_display (location);
    g_autoptr (GError) local_error = NULL;
    gboolean absent = FALSE;
    GBytes *bytes = read_signature (location, stop, &absent, &local_error);

    if (bytes != NULL) {
      g_debug ("discovered signature file %s for bmap %s", name, bmap_name);
      if (bmapctl_is_bmaptool ())
        bmapctl_info (options, "discovered signature file for bmap '%s'", name);
      *sig_name = g_steal_pointer (&name);
      return bytes;
    }
    if (absent) {
      g_debug ("no signature there: %s", local_error->message);
      continue;
    }
    g_propagate_error (error, g_steal_pointer (&local_error));
    return NULL;
  }
  return NULL;
}

static char *
default_keyring_name (void)
{
  const char *home = g_getenv ("GNUPGHOME");

  if (home != NULL && *home != '\0')
    return g_strdup_printf ("the GnuPG keyring in %s", home);
  return g_strdup ("the GnuPG keyring in ~/.gnupg");
}

GBytes *
bmapctl_signature_load_bmap (BmapctlOptions *options, const BmapctlSignatureArgs *args,
                             const char *bmap_path, GBytes **signature, GError **error)
{
  g_autoptr (GBytes) data = NULL;

  *signature = NULL;
  data = bmap_signature_read_file (bmap_path, BMAP_FORMAT_MAX_FILE_SIZE, error);
  if (data == NULL)
    return NULL;
  return bmapctl_signature_verify_bmap (options, args, data, bmap_path, bmap_path, NULL, signature,
                                        error);
}

GBytes *
bmapctl_signature_verify_bmap (BmapctlOptions *options, const BmapctlSignatureArgs *args,
                               GBytes *data, const char *bmap_location, const char *bmap_path,
                               GCancellable *stop, GBytes **signature, GError **error)
{
  g_autoptr (GBytes) sig = NULL;
  g_autoptr (GBytes) plaintext = NULL;
  g_autoptr (GPtrArray) signers = NULL;
  g_autoptr (BmapSignatureVerifier) verifier = NULL;
  g_autofree char *sig_path = NULL;
  g_autofree char *keyring_name = NULL;
  gboolean clearsigned;
  gsize len;
  const char *buf;

  *signature = NULL;
  buf = g_bytes_get_data (data, &len);
  clearsigned = bmap_signature_is_clearsigned (buf, len);

  if (clearsigned) {
    g_debug ("%s: clearsigned bmap", bmap_path);
  } else if (args->no_sig_verify) {
    return g_bytes_ref (data);
  } else if (args->bmap_sig != NULL) {
    gboolean absent;

    sig_path = bmapctl_url_display (args->bmap_sig);
    sig = read_signature (args->bmap_sig, stop, &absent, error);
    if (sig == NULL)
      return NULL;
  } else {
    g_autoptr (GError) local_error = NULL;

    sig = find_signature (options, bmap_location, bmap_path, stop, &sig_path, &local_error);
    if (local_error != NULL) {
      g_propagate_error (error, g_steal_pointer (&local_error));
      return NULL;
    }
    if (sig == NULL && (args->fingerprint != NULL || args->keyring != NULL)) {
      /* bmaptool's words first: its tests look for them. */
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                   "%s: no signature found but %s given (not clearsigned, no %s.asc or %s.sig)",
                   bmap_path, args->fingerprint != NULL ? "--fingerprint" : "--keyring", bmap_path,
                   bmap_path);
      return NULL;
    }
    if (sig == NULL)
      return g_bytes_ref (data);
  }

  if (args->keyring != NULL) {
    const char *const key_files[] = { args->keyring, NULL };

    keyring_name = g_strdup_printf ("keyring %s", args->keyring);
    verifier = bmap_signature_verifier_new (key_files, keyring_name, error);
  } else {
    keyring_name = default_keyring_name ();
    verifier = bmap_signature_verifier_new (NULL, keyring_name, error);
  }
  if (verifier == NULL)
    return NULL;
  if (!bmap_signature_verifier_verify (verifier, data, sig, bmap_path, sig_path,
                                       !args->no_sig_verify, clearsigned ? &plaintext : NULL,
                                       &signers, error)) {
    /* As bmaptool, its words for a signature that does not verify come
     * first (its tests look for them), then what was wrong. */
    if (bmapctl_is_bmaptool () && !args->no_sig_verify)
      g_prefix_error (error, "discovered a BAD GPG signature: ");
    return NULL;
  }

  if (!args->no_sig_verify) {
    if (args->fingerprint != NULL && !bmap_signature_signers_contain (signers, args->fingerprint)) {
      g_autoptr (GString) have = g_string_new (NULL);

      for (guint i = 0; i < signers->len; i++) {
        const BmapSigner *signer = g_ptr_array_index (signers, i);

        g_string_append_printf (have, "%s%s (%s)", i > 0 ? ", " : "", signer->fingerprint,
                                signer->signer);
      }
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                   "%s: not signed by the requested key %s; signed by %s", bmap_path,
                   args->fingerprint, have->str);
      return NULL;
    }
    for (guint i = 0; i < signers->len; i++) {
      const BmapSigner *signer = g_ptr_array_index (signers, i);

      /* As bmaptool words it when run by that name. */
      if (bmapctl_is_bmaptool ())
        bmapctl_info (options, "successfully verified bmap file signature of %s (fingerprint %s)",
                      signer->signer, signer->fingerprint);
      else
        bmapctl_info (options, "%s: good signature by %s (key %s)", bmap_path, signer->signer,
                      signer->fingerprint);
    }
    *signature = clearsigned ? g_bytes_ref (data) : g_steal_pointer (&sig);
  }
  return clearsigned ? g_steal_pointer (&plaintext) : g_bytes_ref (data);
}

static int
memfd_for_bytes (GBytes *bytes, const char *name, GError **error)
{
  gsize len, done = 0;
  const char *buf = g_bytes_get_data (bytes, &len);
  int fd = memfd_create (name, MFD_CLOEXEC | MFD_ALLOW_SEALING);

  if (fd < 0) {
    bmap_error_set_errno (error, errno, "cannot create a memfd for %s", name);
    return -1;
  }
  while (done < len) {
    gssize n = write (fd, buf + done, len - done);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      bmap_error_set_errno (error, errno, "cannot write the memfd for %s", name);
      close (fd);
      return -1;
    }
    done += (gsize) n;
  }
  /* Sealed, so what bmapd reads is what was verified here. */
  if (lseek (fd, 0, SEEK_SET) < 0
      || fcntl (fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
    bmap_error_set_errno (error, errno, "cannot seal the memfd for %s", name);
    close (fd);
    return -1;
  }
  return fd;
}

BmapMap *
bmapctl_signature_load_map (BmapctlOptions *options, const BmapctlSignatureArgs *args,
                            const char *bmap_path, GError **error)
{
  g_autoptr (GBytes) signature = NULL;
  g_autoptr (GBytes) bmap
      = bmapctl_signature_load_bmap (options, args, bmap_path, &signature, error);

  if (bmap == NULL)
    return NULL;
  return bmap_map_load_data (g_bytes_get_data (bmap, NULL), g_bytes_get_size (bmap), bmap_path,
                             error);
}

int
bmapctl_signature_memfds (GBytes *bmap, GBytes *signature, int *sig_fd, GError **error)
{
  int bmap_fd = memfd_for_bytes (bmap, "bmap", error);

  *sig_fd = -1;
  if (bmap_fd < 0 || signature == NULL)
    return bmap_fd;
  *sig_fd = memfd_for_bytes (signature, "bmap-signature", error);
  if (*sig_fd < 0) {
    close (bmap_fd);
    return -1;
  }
  return bmap_fd;
}
