/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-event.h>

#include "bmap-trusted-keys.h"

G_BEGIN_DECLS

/* The OpenPGP keys an administrator trusts for bmaps, one or more per file
 * (*.gpg, *.asc or *.pgp, as gpg --export writes them). A Flash call may
 * pass the bmap's signature ("bmap-signature"); bmapd checks it against
 * these keys only, never root's GnuPG home, and tells polkit the outcome
 * (bmap.signature, bmap.signer), so a rule can let users flash images
 * signed by a release key without a password. */
#define BMAPD_TRUSTED_KEYS_DEFAULT_DIR BMAP_TRUSTED_KEYS_DEFAULT_DIR

/* How long a check may take before the signature counts as untrusted
 * (GPGME runs gpg; a stuck one must not hold the call forever). */
#define BMAPD_TRUSTED_KEYS_TIMEOUT_USEC (30 * G_USEC_PER_SEC)

typedef enum {
  BMAPD_SIGNATURE_NONE,      /* no signature was passed */
  BMAPD_SIGNATURE_TRUSTED,   /* good, by a trusted key */
  BMAPD_SIGNATURE_UNTRUSTED, /* anything else: bad, unknown key, expired, no keys */
} BmapdSignatureState;

/* "none", "trusted", "untrusted": the values of the bmap.signature detail. */
const char *bmapd_signature_state_to_string (BmapdSignatureState state);

typedef struct {
  BmapdSignatureState state;
  char *signer;      /* TRUSTED: the fingerprint of the key that signed */
  char *signer_name; /* TRUSTED: its first user id */
  char *why;         /* UNTRUSTED: what was wrong, for the log */
} BmapdSignatureResult;

void bmapd_signature_result_free (BmapdSignatureResult *result);

/* Where the keys are; set once, before any check starts (bmapd
 * --trusted-keys-dir, for tests). */
void bmapd_trusted_keys_set_dir (const char *dir);
const char *bmapd_trusted_keys_get_dir (void);

/* One check on a worker thread, never on the event loop. */
typedef struct _BmapdTrustedKeysCheck BmapdTrustedKeysCheck;

/* Called once, on the event loop; @result is the callee's to read only. */
typedef void (*BmapdTrustedKeysFunc) (const BmapdSignatureResult *result, gpointer user_data);

/* Checks @signature over @bmap: a detached signature, or a clearsigned
 * message whose signed text must be @bmap byte for byte. After
 * BMAPD_TRUSTED_KEYS_TIMEOUT_USEC the result is UNTRUSTED and the worker is
 * left to finish alone. @hold (may be NULL; taken, even on failure) is
 * freed with @hold_free once both the worker and the check let go: what
 * the caller's call holds (its place under MaxRequestsPerUser) stays held
 * while a worker given up on still runs. */
BmapdTrustedKeysCheck *
bmapd_trusted_keys_check_new (sd_event *event, GBytes *bmap, GBytes *signature, gpointer hold,
                              GDestroyNotify hold_free, BmapdTrustedKeysFunc func,
                              gpointer user_data, GError **error);
/* The callback is not called after this; may be called from it. */
void bmapd_trusted_keys_check_free (BmapdTrustedKeysCheck *check);

/* The verification itself, synchronous (the worker's body). */
BmapdSignatureResult *bmapd_trusted_keys_verify (const char *dir, GBytes *bmap, GBytes *signature);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdSignatureResult, bmapd_signature_result_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdTrustedKeysCheck, bmapd_trusted_keys_check_free)

G_END_DECLS
