/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <gpgme.h>
#include <locale.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-signature.h"

struct _BmapSignatureVerifier {
  gpgme_ctx_t ctx;
  char *home; /* the private GnuPG home, removed with the verifier; NULL: the default one */
  char *keyring_name;
};

G_DEFINE_AUTO_CLEANUP_FREE_FUNC (gpgme_data_t, gpgme_data_release, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC (gpgme_key_t, gpgme_key_unref, NULL)

void
bmap_signer_free (BmapSigner *signer)
{
  if (signer == NULL)
    return;
  g_free (signer->fingerprint);
  g_free (signer->signing_key);
  g_free (signer->signer);
  g_free (signer);
}

gboolean
bmap_signature_init (GError **error)
{
  static gsize done = 0;
  static gpgme_error_t engine_err = 0;

  if (g_once_init_enter (&done)) {
    gpgme_check_version (NULL);
    gpgme_set_locale (NULL, LC_CTYPE, setlocale (LC_CTYPE, NULL));
    engine_err = gpgme_engine_check_version (GPGME_PROTOCOL_OpenPGP);
    g_once_init_leave (&done, 1);
  }
  if (engine_err != 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED,
                 "cannot check bmap signatures: GnuPG (gpg) is not usable: %s",
                 gpgme_strerror (engine_err));
    return FALSE;
  }
  return TRUE;
}

static void
remove_tree (const char *path)
{
  g_autoptr (GDir) dir = g_dir_open (path, 0, NULL);
  const char *name;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL) {
    g_autofree char *child = g_build_filename (path, name, NULL);

    if (g_file_test (child, G_FILE_TEST_IS_DIR) && !g_file_test (child, G_FILE_TEST_IS_SYMLINK))
      remove_tree (child);
    else if (unlink (child) < 0)
      g_debug ("cannot remove %s: %s", child, g_strerror (errno));
  }
  if (rmdir (path) < 0)
    g_debug ("cannot remove %s: %s", path, g_strerror (errno));
}

void
bmap_signature_verifier_free (BmapSignatureVerifier *verifier)
{
  if (verifier == NULL)
    return;
  if (verifier->ctx != NULL)
    gpgme_release (verifier->ctx);
  if (verifier->home != NULL)
    remove_tree (verifier->home);
  g_free (verifier->home);
  g_free (verifier->keyring_name);
  g_free (verifier);
}

GBytes *
bmap_signature_read_file (const char *path, gsize max_size, GError **error)
{
  g_autoptr (GByteArray) buf = g_byte_array_new ();
  int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

  if (fd < 0) {
    bmap_error_set_errno (error, errno, "%s", path);
    return NULL;
  }
  /* To the end rather than st_size: --bmap-sig <(curl ...) is a pipe. One
   * byte past the limit tells the file is too big. */
  for (;;) {
    gsize old = buf->len;
    gsize want = MIN (64 * 1024, max_size + 1 - old);
    gssize n;
    int errsv;

    if (want == 0)
      break;
    g_byte_array_set_size (buf, (guint) (old + want));
    n = read (fd, buf->data + old, want);
    errsv = errno;
    g_byte_array_set_size (buf, (guint) (old + (n > 0 ? (gsize) n : 0)));
    if (n < 0 && errsv == EINTR)
      continue;
    if (n < 0) {
      bmap_error_set_errno (error, errsv, "cannot read %s", path);
      close (fd);
      return NULL;
    }
    if (n == 0)
      break;
  }
  close (fd);
  if (buf->len > max_size) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: larger than the %" G_GSIZE_FORMAT " KiB expected at most", path,
                 max_size / 1024);
    return NULL;
  }
  return g_byte_array_free_to_bytes (g_steal_pointer (&buf));
}

/* GnuPG's own keyring format (pubring.kbx), which gpg --import does not
 * take: "KBXf" in the first blob. */
static gboolean
is_keybox (const char *path)
{
  char head[12];
  int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  gssize n = fd >= 0 ? read (fd, head, sizeof (head)) : -1;

  if (fd >= 0)
    close (fd);
  return n == (gssize) sizeof (head) && memcmp (head + 8, "KBXf", 4) == 0;
}

/* A keybox is read where it is, as an extra keyring of the private home
 * (as gpgv --keyring does); nothing is written to it. */
static gboolean
add_keybox (BmapSignatureVerifier *verifier, const char *path, GError **error)
{
  g_autofree char *conf = g_build_filename (verifier->home, "gpg.conf", NULL);
  g_autofree char *abs = g_canonicalize_filename (path, NULL);
  g_autofree char *text = NULL;
  g_autofree char *line = NULL;

  if (!g_file_get_contents (conf, &text, NULL, error)) {
    bmap_error_normalize (error);
    return FALSE;
  }
  line = g_strdup_printf ("%skeyring %s\n", text, abs);
  if (!g_file_set_contents (conf, line, -1, error)) {
    bmap_error_normalize (error);
    return FALSE;
  }
  g_debug ("%s: a keybox, used as a keyring of %s", path, verifier->home);
  return TRUE;
}

static gboolean
import_key_file (BmapSignatureVerifier *verifier, const char *path, GError **error)
{
  g_autoptr (GBytes) bytes = NULL;
  g_auto (gpgme_data_t) data = NULL;
  gpgme_import_result_t result;
  gpgme_error_t err;
  gsize len;
  const char *buf;

  if (is_keybox (path))
    return add_keybox (verifier, path, error);
  bytes = bmap_signature_read_file (path, BMAP_SIGNATURE_MAX_KEYRING_SIZE, error);
  if (bytes == NULL)
    return FALSE;
  buf = g_bytes_get_data (bytes, &len);
  err = gpgme_data_new_from_mem (&data, buf, len, 0);
  if (err == 0)
    err = gpgme_op_import (verifier->ctx, data);
  result = err == 0 ? gpgme_op_import_result (verifier->ctx) : NULL;
  if (err != 0 || result == NULL || result->considered == 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: not an OpenPGP key file (as gpg --export writes): %s", path,
                 err != 0 ? gpgme_strerror (err) : "no key in it");
    return FALSE;
  }
  g_debug ("%s: %d keys imported into %s", path, result->imported, verifier->home);
  return TRUE;
}

BmapSignatureVerifier *
bmap_signature_verifier_new (const char *const *key_files, const char *keyring_name, GError **error)
{
  g_autoptr (BmapSignatureVerifier) verifier = g_new0 (BmapSignatureVerifier, 1);
  gpgme_error_t err;

  if (!bmap_signature_init (error))
    return NULL;
  verifier->keyring_name = g_strdup (keyring_name);
  err = gpgme_new (&verifier->ctx);
  if (err == 0)
    err = gpgme_set_protocol (verifier->ctx, GPGME_PROTOCOL_OpenPGP);
  if (err != 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "cannot start GPGME: %s", gpgme_strerror (err));
    return NULL;
  }
  if (key_files == NULL)
    return g_steal_pointer (&verifier);

  /* Only the given keys, in a home nobody else uses; without an agent or a
   * key server, which verifying never needs. */
  verifier->home = g_dir_make_tmp ("bmap-gnupg-XXXXXX", error);
  if (verifier->home == NULL) {
    bmap_error_normalize (error);
    return NULL;
  }
  {
    g_autofree char *conf = g_build_filename (verifier->home, "gpg.conf", NULL);

    if (!g_file_set_contents (conf, "no-autostart\nno-auto-key-retrieve\n", -1, error)) {
      bmap_error_normalize (error);
      return NULL;
    }
  }
  err = gpgme_ctx_set_engine_info (verifier->ctx, GPGME_PROTOCOL_OpenPGP, NULL, verifier->home);
  if (err != 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "cannot use GnuPG home %s: %s", verifier->home,
                 gpgme_strerror (err));
    return NULL;
  }
  for (guint i = 0; key_files[i] != NULL; i++) {
    if (!import_key_file (verifier, key_files[i], error))
      return NULL;
  }
  return g_steal_pointer (&verifier);
}

gboolean
bmap_signature_is_clearsigned (const char *data, gsize len)
{
  gsize marker = strlen (BMAP_SIGNATURE_CLEARSIGN_MARKER);

  return len >= marker && memcmp (data, BMAP_SIGNATURE_CLEARSIGN_MARKER, marker) == 0;
}

static BmapSigner *
signer_new (gpgme_signature_t sig, gpgme_key_t key)
{
  BmapSigner *signer = g_new0 (BmapSigner, 1);

  signer->signing_key = g_ascii_strup (sig->fpr != NULL ? sig->fpr : "", -1);
  signer->fingerprint
      = g_ascii_strup (key != NULL && key->fpr != NULL ? key->fpr : signer->signing_key, -1);
  if (key != NULL && key->uids != NULL && key->uids->uid != NULL)
    signer->signer = g_strdup (key->uids->uid);
  else
    signer->signer = g_strdup (signer->fingerprint);
  return signer;
}

/* "key FPR (Name <mail>)", or "key FPR" when the key is unknown. */
static char *
describe_key (const BmapSigner *signer)
{
  if (g_str_equal (signer->signer, signer->fingerprint))
    return g_strdup_printf ("key %s", signer->fingerprint);
  return g_strdup_printf ("key %s (%s)", signer->fingerprint, signer->signer);
}

static gboolean
check_signature (BmapSignatureVerifier *verifier, gpgme_signature_t sig, const BmapSigner *signer,
                 gpgme_key_t key, const char *bmap_name, const char *where, GError **error)
{
  g_autofree char *who = describe_key (signer);
  g_autofree char *what = NULL;

  switch (gpgme_err_code (sig->status)) {
    case GPG_ERR_NO_ERROR:
      if ((sig->summary & GPGME_SIGSUM_RED) != 0 || sig->wrong_key_usage) {
        what = g_strdup_printf ("the signature %s by %s is not valid (GnuPG summary 0x%x)", where,
                                who, sig->summary);
        break;
      }
      /* Every key of a private home was given to be trusted, as gpgv
       * trusts its keyring; in the user's home a key must also be valid
       * (the user's own, or certified), as bmaptool asks of GPGME. */
      if (verifier->home != NULL || (sig->summary & GPGME_SIGSUM_VALID) != 0)
        return TRUE;
      what = g_strdup_printf ("the signature %s by %s is good, but the key is not valid in %s "
                              "(certify it with gpg --lsign-key, or give it with --keyring)",
                              where, who, verifier->keyring_name);
      break;
    case GPG_ERR_BAD_SIGNATURE:
      what = g_strdup_printf ("BAD signature %s by %s: the bmap is not the one that was signed",
                              where, who);
      break;
    case GPG_ERR_NO_PUBKEY:
      what = g_strdup_printf ("the signature %s is by %s, which is not in %s (unknown signer)",
                              where, who, verifier->keyring_name);
      break;
    case GPG_ERR_KEY_EXPIRED: {
      g_autoptr (GDateTime) when = NULL;
      g_autofree char *date = NULL;

      if (key != NULL && key->subkeys != NULL && key->subkeys->expires > 0)
        when = g_date_time_new_from_unix_utc (key->subkeys->expires);
      date = when != NULL ? g_date_time_format (when, " on %Y-%m-%d") : g_strdup ("");
      what = g_strdup_printf ("the signature %s is by %s, which expired%s", where, who, date);
      break;
    }
    case GPG_ERR_CERT_REVOKED:
      what = g_strdup_printf ("the signature %s is by %s, which has been revoked", where, who);
      break;
    case GPG_ERR_SIG_EXPIRED:
      what = g_strdup_printf ("the signature %s by %s has expired", where, who);
      break;
    default:
      what = g_strdup_printf ("the signature %s by %s cannot be checked: %s", where, who,
                              gpgme_strerror (sig->status));
      break;
  }
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP, "%s: %s", bmap_name, what);
  return FALSE;
}

gboolean
bmap_signature_verifier_verify (BmapSignatureVerifier *verifier, GBytes *data, GBytes *signature,
                                const char *bmap_name, const char *signature_name, gboolean check,
                                GBytes **plaintext, GPtrArray **signers, GError **error)
{
  g_auto (gpgme_data_t) sig_data = NULL;
  g_auto (gpgme_data_t) text_data = NULL;
  g_auto (gpgme_data_t) plain_data = NULL;
  g_autoptr (GPtrArray) found = g_ptr_array_new_with_free_func ((GDestroyNotify) bmap_signer_free);
  g_autofree char *where = NULL;
  gpgme_verify_result_t result;
  gpgme_error_t err;
  gsize data_len, sig_len;
  const char *data_buf = g_bytes_get_data (data, &data_len);

  where = signature != NULL ? g_strdup_printf ("in %s", signature_name)
                            : g_strdup ("of the clearsigned bmap");
  if (signature != NULL) {
    const char *sig_buf = g_bytes_get_data (signature, &sig_len);

    err = gpgme_data_new_from_mem (&sig_data, sig_buf, sig_len, 0);
    if (err == 0)
      err = gpgme_data_new_from_mem (&text_data, data_buf, data_len, 0);
    if (err == 0)
      err = gpgme_op_verify (verifier->ctx, sig_data, text_data, NULL);
  } else {
    err = gpgme_data_new_from_mem (&sig_data, data_buf, data_len, 0);
    if (err == 0)
      err = gpgme_data_new (&plain_data);
    if (err == 0)
      err = gpgme_op_verify (verifier->ctx, sig_data, NULL, plain_data);
  }
  if (err != 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP,
                 "%s: cannot check the signature %s: %s (not an OpenPGP signature?)", bmap_name,
                 where, gpgme_strerror (err));
    return FALSE;
  }

  result = gpgme_op_verify_result (verifier->ctx);
  if (check && (result == NULL || result->signatures == NULL)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP, "%s: there is no signature %s", bmap_name,
                 where);
    return FALSE;
  }
  for (gpgme_signature_t sig = result != NULL ? result->signatures : NULL; sig != NULL;
       sig = sig->next) {
    g_auto (gpgme_key_t) key = NULL;
    BmapSigner *signer;

    if (sig->fpr != NULL && gpgme_get_key (verifier->ctx, sig->fpr, &key, 0) != 0)
      key = NULL;
    signer = signer_new (sig, key);
    g_ptr_array_add (found, signer);
    if (check && !check_signature (verifier, sig, signer, key, bmap_name, where, error))
      return FALSE;
  }

  if (plaintext != NULL && plain_data != NULL) {
    size_t len = 0;
    char *buf = gpgme_data_release_and_get_mem (g_steal_pointer (&plain_data), &len);

    *plaintext = g_bytes_new (buf, len);
    gpgme_free (buf);
  }
  if (signers != NULL)
    *signers = g_steal_pointer (&found);
  return TRUE;
}

/* Upper-case hex without spaces; NULL when @fingerprint is not hex. */
static char *
normalize_fingerprint (const char *fingerprint)
{
  g_autoptr (GString) out = g_string_new (NULL);

  for (const char *p = fingerprint; *p != '\0'; p++) {
    if (*p == ' ')
      continue;
    if (!g_ascii_isxdigit (*p))
      return NULL;
    g_string_append_c (out, g_ascii_toupper (*p));
  }
  return g_string_free (g_steal_pointer (&out), FALSE);
}

gboolean
bmap_signature_signers_contain (GPtrArray *signers, const char *fingerprint)
{
  g_autofree char *want = normalize_fingerprint (fingerprint);

  if (want == NULL || *want == '\0')
    return FALSE;
  for (guint i = 0; signers != NULL && i < signers->len; i++) {
    const BmapSigner *signer = g_ptr_array_index (signers, i);

    if (g_str_equal (signer->fingerprint, want) || g_str_equal (signer->signing_key, want))
      return TRUE;
  }
  return FALSE;
}
