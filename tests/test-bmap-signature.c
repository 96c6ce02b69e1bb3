/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>

#include "bmap-error.h"
#include "bmap-signature.h"
#include "bmap-test-util.h"

/* A signing key made with gpg in a home of its own, exported to a file,
 * and a text signed detached and clearsigned. Made once for all tests. */
typedef struct {
  char *dir;
  char *home;
  char *fingerprint;
  char *key_file;
  GBytes *text;
  GBytes *detached;
  GBytes *clearsigned;
} Fixture;

static Fixture fx;

static char *
gpg (const char *args)
{
  g_autofree char *out = NULL;
  g_autofree char *cmd
      = g_strdup_printf ("GNUPGHOME='%s' gpg --batch --no-tty --pinentry-mode loopback "
                         "--passphrase '' %s",
                         fx.home, args);
  const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
  g_autofree char *err = NULL;

  if (bmap_test_run (argv, &out, &err) != 0)
    g_error ("gpg %s failed: %s", args, err);
  return g_steal_pointer (&out);
}

/* gpg-agent was needed to make the key and sign; verifying needs none. */
static void
stop_agent (void)
{
  g_autofree char *cmd = g_strdup_printf ("gpgconf --homedir '%s' --kill all", fx.home);
  const char *argv[] = { "/bin/sh", "-c", cmd, NULL };

  bmap_test_run (argv, NULL, NULL);
}

static void
fixture_setup (void)
{
  g_autofree char *listing = NULL;
  g_autofree char *path = NULL;
  g_autofree char *cmd = NULL;
  g_auto (GStrv) lines = NULL;

  fx.dir = bmap_test_tmpdir ();
  fx.home = g_build_filename (fx.dir, "home", NULL);
  g_assert_cmpint (g_mkdir (fx.home, 0700), ==, 0);
  g_free (gpg ("--quick-gen-key 'test <test@example.org>' ed25519 sign 1y"));
  listing = gpg ("--with-colons --list-keys test@example.org");
  lines = g_strsplit (listing, "\n", -1);
  for (guint i = 0; lines[i] != NULL && fx.fingerprint == NULL; i++) {
    if (g_str_has_prefix (lines[i], "fpr:")) {
      g_auto (GStrv) fields = g_strsplit (lines[i], ":", -1);
      fx.fingerprint = g_strdup (fields[9]);
    }
  }
  g_assert_nonnull (fx.fingerprint);

  fx.key_file = g_build_filename (fx.dir, "key.gpg", NULL);
  cmd = g_strdup_printf ("--output '%s' --export %s", fx.key_file, fx.fingerprint);
  g_free (gpg (cmd));
  path = g_build_filename (fx.dir, "text", NULL);
  g_assert_true (g_file_set_contents (path, "<?xml version=\"1.0\"?>\n<bmap/>\n", -1, NULL));
  fx.text = bmap_test_read_file (path);
  g_free (cmd);
  cmd = g_strdup_printf ("--detach-sign '%s'", path);
  g_free (gpg (cmd));
  g_free (cmd);
  cmd = g_strdup_printf ("--clearsign '%s'", path);
  g_free (gpg (cmd));
  g_free (cmd);
  cmd = g_strconcat (path, ".sig", NULL);
  fx.detached = bmap_test_read_file (cmd);
  g_free (cmd);
  cmd = g_strconcat (path, ".asc", NULL);
  fx.clearsigned = bmap_test_read_file (cmd);
  stop_agent ();
}

static BmapSignatureVerifier *
verifier_with_key (void)
{
  const char *const files[] = { fx.key_file, NULL };
  g_autoptr (GError) error = NULL;
  BmapSignatureVerifier *verifier = bmap_signature_verifier_new (files, "test keys", &error);

  g_assert_no_error (error);
  return verifier;
}

/* The private home is the only bmap-gnupg-* in TMPDIR while it lives. */
static guint
count_private_homes (void)
{
  g_autoptr (GDir) dir = g_dir_open (g_get_tmp_dir (), 0, NULL);
  const char *name;
  guint n = 0;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    n += g_str_has_prefix (name, "bmap-gnupg-");
  return n;
}

static void
test_detached (void)
{
  g_autoptr (BmapSignatureVerifier) verifier = verifier_with_key ();
  g_autoptr (GPtrArray) signers = NULL;
  g_autoptr (GError) error = NULL;
  const BmapSigner *signer;

  g_assert_true (bmap_signature_verifier_verify (verifier, fx.text, fx.detached, "t.bmap",
                                                 "t.bmap.sig", TRUE, NULL, &signers, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (signers->len, ==, 1);
  signer = g_ptr_array_index (signers, 0);
  g_assert_cmpstr (signer->fingerprint, ==, fx.fingerprint);
  g_assert_cmpstr (signer->signer, ==, "test <test@example.org>");
}

static void
test_detached_other_text (void)
{
  g_autoptr (BmapSignatureVerifier) verifier = verifier_with_key ();
  g_autoptr (GBytes) other = g_bytes_new_static ("<bmap/>\n", 8);
  g_autoptr (GError) error = NULL;

  g_assert_false (bmap_signature_verifier_verify (verifier, other, fx.detached, "t.bmap",
                                                  "t.bmap.sig", TRUE, NULL, NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_assert_nonnull (strstr (error->message, "t.bmap: BAD signature in t.bmap.sig"));
  g_assert_nonnull (strstr (error->message, fx.fingerprint));
}

static void
test_clearsigned_gives_the_signed_text (void)
{
  g_autoptr (BmapSignatureVerifier) verifier = verifier_with_key ();
  g_autoptr (GBytes) plaintext = NULL;
  g_autoptr (GError) error = NULL;
  const char *data;
  gsize len;

  /* The length is read only after g_bytes_get_data() has set it. */
  data = g_bytes_get_data (fx.clearsigned, &len);
  g_assert_true (bmap_signature_is_clearsigned (data, len));
  data = g_bytes_get_data (fx.text, &len);
  g_assert_false (bmap_signature_is_clearsigned (data, len));
  g_assert_true (bmap_signature_verifier_verify (verifier, fx.clearsigned, NULL, "t.bmap.asc", NULL,
                                                 TRUE, &plaintext, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (plaintext, fx.text));
}

static void
test_key_file_without_key (void)
{
  g_autofree char *empty = g_build_filename (fx.dir, "empty.gpg", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSignatureVerifier) verifier = NULL;
  const char *const files[] = { empty, NULL };

  /* A file without a key is refused, naming it. */
  g_assert_true (g_file_set_contents (empty, "no key here\n", -1, NULL));
  verifier = bmap_signature_verifier_new (files, "test keys", &error);
  g_assert_null (verifier);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, empty));
}

static void
test_private_home_is_removed (void)
{
  guint before = count_private_homes ();
  BmapSignatureVerifier *verifier = verifier_with_key ();

  g_assert_cmpuint (count_private_homes (), ==, before + 1);
  g_assert_true (bmap_signature_verifier_verify (verifier, fx.text, fx.detached, "t.bmap",
                                                 "t.bmap.sig", TRUE, NULL, NULL, NULL));
  bmap_signature_verifier_free (verifier);
  g_assert_cmpuint (count_private_homes (), ==, before);
}

static void
test_fingerprint_match (void)
{
  g_autoptr (GPtrArray) signers
      = g_ptr_array_new_with_free_func ((GDestroyNotify) bmap_signer_free);
  BmapSigner *signer = g_new0 (BmapSigner, 1);
  GString *spaced = g_string_new (NULL);
  g_autofree char *lower = NULL;

  signer->fingerprint = g_strdup ("0123456789ABCDEF0123456789ABCDEF01234567");
  signer->signing_key = g_strdup ("FEDCBA9876543210FEDCBA9876543210FEDCBA98");
  signer->signer = g_strdup ("x");
  g_ptr_array_add (signers, signer);
  for (guint i = 0; i < 40; i += 4)
    g_string_append_printf (spaced, "%.4s ", signer->fingerprint + i);
  lower = g_ascii_strdown (spaced->str, -1);
  g_string_free (spaced, TRUE);

  g_assert_true (bmap_signature_signers_contain (signers, signer->fingerprint));
  g_assert_true (bmap_signature_signers_contain (signers, lower));
  g_assert_true (bmap_signature_signers_contain (signers, signer->signing_key));
  /* A key id, a prefix, junk: none of them is the key. */
  g_assert_false (bmap_signature_signers_contain (signers, "89ABCDEF01234567"));
  g_assert_false (bmap_signature_signers_contain (signers, "0123456789ABCDEF0123"));
  g_assert_false (bmap_signature_signers_contain (signers, "not-hex"));
  g_assert_false (bmap_signature_signers_contain (signers, ""));
}

/* Private homes go to a TMPDIR of this test only, so they can be counted
 * while other tests make theirs. */
static char *private_tmp;

static void
remove_private_tmp (void)
{
  bmap_test_sh ("rm -rf '%s'", private_tmp);
}

int
main (int argc, char **argv)
{
  const char *tmp = g_getenv ("TMPDIR");

  /* Before anything asks GLib for the temporary directory (it keeps it). */
  private_tmp = g_build_filename (tmp != NULL && *tmp != '\0' ? tmp : "/tmp",
                                  "test-bmap-signature-XXXXXX", NULL);
  g_assert_nonnull (g_mkdtemp (private_tmp));
  atexit (remove_private_tmp);
  g_setenv ("TMPDIR", private_tmp, TRUE);

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/signature/fingerprint-match", test_fingerprint_match);
  if (!bmap_test_have_program ("gpg") || !bmap_test_have_program ("gpgconf")) {
    g_test_skip ("gpg and gpgconf (gnupg) are not installed");
    return g_test_run ();
  }
  fixture_setup ();
  g_test_add_func ("/signature/detached", test_detached);
  g_test_add_func ("/signature/detached-other-text", test_detached_other_text);
  g_test_add_func ("/signature/clearsigned-gives-the-signed-text",
                   test_clearsigned_gives_the_signed_text);
  g_test_add_func ("/signature/key-file-without-key", test_key_file_without_key);
  g_test_add_func ("/signature/private-home-is-removed", test_private_home_is_removed);
  return g_test_run ();
}
