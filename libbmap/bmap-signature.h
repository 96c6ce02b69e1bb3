/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* OpenPGP signatures of bmaps, checked with GPGME: a detached signature
 * (BMAP.asc, BMAP.sig, --bmap-sig) or a clearsigned bmap. Used by bmapctl
 * (the user's keyring, or --keyring) and by bmapd (the administrator's
 * trusted keys). */

#define BMAP_SIGNATURE_CLEARSIGN_MARKER "-----BEGIN PGP SIGNED MESSAGE-----"

/* Largest detached signature or key file read (a signature is a few hundred
 * bytes, a key a few KiB). */
#define BMAP_SIGNATURE_MAX_FILE_SIZE (1024 * 1024)
/* Largest key file imported (a keyring of many keys). */
#define BMAP_SIGNATURE_MAX_KEYRING_SIZE (64 * 1024 * 1024)

/* Initializes GPGME once (it ignores SIGPIPE from then on) and checks that
 * gpg can be run. Called by the first verifier; a threaded program calls
 * it first from its main thread, as GPGME asks. */
gboolean bmap_signature_init (GError **error);

typedef struct {
  char *fingerprint; /* the primary key's, upper-case hex */
  char *signing_key; /* the (sub)key that made the signature, as GnuPG names it */
  char *signer;      /* its first user id, "Name <mail>", or the fingerprint */
} BmapSigner;

void bmap_signer_free (BmapSigner *signer);

typedef struct _BmapSignatureVerifier BmapSignatureVerifier;

/* A verifier that trusts the keys in @key_files (binary or armored, as gpg
 * --export writes them, or a GnuPG keybox such as pubring.kbx), imported
 * into (a keybox: read from) a private GnuPG home made for it and removed
 * with it; the user's and root's homes are never read. With
 * @key_files NULL it uses the default home (GNUPGHOME or ~/.gnupg), as gpg
 * --verify does. @keyring_name names the keys in messages ("keyring
 * FILE"). Fails when a key file cannot be read or holds no key. */
BmapSignatureVerifier *bmap_signature_verifier_new (const char *const *key_files,
                                                    const char *keyring_name, GError **error);
void bmap_signature_verifier_free (BmapSignatureVerifier *verifier);

/* Whether @data begins as a clearsigned message does. */
gboolean bmap_signature_is_clearsigned (const char *data, gsize len);

/* Verifies @signature (a detached signature named @signature_name) over
 * @data, or with @signature NULL the clearsigned message @data. Every
 * signature in it must be good, by a key of the keyring, neither expired
 * nor revoked, and in the default home valid (ultimately trusted or
 * certified: GPGME's "valid" summary, as bmaptool asks); otherwise fails with BMAP_ERROR_BAD_BMAP
 * naming @bmap_name, the key and what is wrong. On success @signers (optional) gets the BmapSigner
 * of each signature and, for a clearsigned @data, @plaintext (optional) the text GPG verified: the
 * bmap to parse.
 *
 * With @check FALSE the signatures are not judged, only a clearsigned
 * message's text is extracted (bmaptool's --no-sig-verify). */
gboolean
bmap_signature_verifier_verify (BmapSignatureVerifier *verifier, GBytes *data, GBytes *signature,
                                const char *bmap_name, const char *signature_name, gboolean check,
                                GBytes **plaintext, GPtrArray **signers, GError **error);

/* Whether one of @signers (BmapSigner) was made by the key @fingerprint
 * (hex, any case, spaces allowed): its primary key or the subkey that
 * signed. The whole fingerprint must match, a key id is not enough. */
gboolean bmap_signature_signers_contain (GPtrArray *signers, const char *fingerprint);

/* Reads a file (or pipe) of at most @max_size bytes to its end: a bmap,
 * a signature or a key file. */
GBytes *bmap_signature_read_file (const char *path, gsize max_size, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapSigner, bmap_signer_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapSignatureVerifier, bmap_signature_verifier_free)

G_END_DECLS
