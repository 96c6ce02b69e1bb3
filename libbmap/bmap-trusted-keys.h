/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

#include "bmap-signature.h"

G_BEGIN_DECLS

/* The OpenPGP keys an administrator trusts for bmaps: a directory of key
 * files, one or more keys each (*.gpg, *.asc or *.pgp, as gpg --export
 * writes them). bmapd judges Flash's "bmap-signature" by them; the desktop
 * flasher reads the same directory, so that what it shows is what bmapd
 * will decide. */
#define BMAP_TRUSTED_KEYS_DEFAULT_DIR SYSCONFDIR "/bmapd/trusted-keys.d"

/* The key files of @dir, sorted; other files (a README) are left out. */
GPtrArray *bmap_trusted_keys_list (const char *dir, GError **error);

/* Checks @signature over @bmap with the keys of @dir only: a detached
 * signature, or a clearsigned bmap whose signed text must be @bmap byte for
 * byte. Returns the signer of the first signature when every signature is
 * good and by a trusted key; otherwise NULL with @error saying why it is not
 * trusted (no keys, unknown signer, bad, expired, another bmap), naming
 * them @bmap_name and @signature_name. Runs gpg: blocking, for a worker
 * thread. */
BmapSigner *
bmap_trusted_keys_verify (const char *dir, GBytes *bmap, GBytes *signature, const char *bmap_name,
                          const char *signature_name, GError **error);

G_END_DECLS
