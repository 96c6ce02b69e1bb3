/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "bmap-format.h"
#include "bmapctl-common.h"

G_BEGIN_DECLS

/* bmaptool copy's signature options. */
typedef struct {
  const char *bmap_sig; /* --bmap-sig FILE */
  gboolean no_sig_verify;
  const char *fingerprint; /* --fingerprint FPR */
  const char *keyring;     /* --keyring FILE */
} BmapctlSignatureArgs;

/* The options that exclude each other, as bmaptool says it; NULL when the
 * combination is fine. */
const char *bmapctl_signature_check_args (const BmapctlSignatureArgs *args, gboolean nobmap);

/* Reads the bmap at @bmap_path and checks its signature as bmaptool copy
 * does: the clearsigned bmap itself, else --bmap-sig, else BMAP.asc or
 * BMAP.sig next to it; none is fine unless --fingerprint or --keyring asks
 * for one. Prints one line naming each good signer. Returns the bmap to
 * parse (for a clearsigned bmap the text GPG verified, never the file's
 * own) and, in @signature, what bmapd can check again with its trusted
 * keys (the detached signature, or the whole clearsigned bmap; NULL when
 * no signature was checked). NULL with BMAP_ERROR_BAD_BMAP naming the bmap,
 * the key and the fault on a bad signature. */
GBytes *bmapctl_signature_load_bmap (BmapctlOptions *options, const BmapctlSignatureArgs *args,
                                     const char *bmap_path, GBytes **signature, GError **error);

/* bmapctl_signature_load_bmap() on a bmap already read from @bmap_location,
 * a path or a URL (bmapctl-url's check hook): BMAP.asc and BMAP.sig are
 * looked for next to it there, --bmap-sig may be a URL too, and a missing
 * one (HTTP 404, 410 or 403) is "not there". @bmap_name is the bmap without
 * its URL's password, for messages; @stop (may be NULL) cancels a fetch. */
GBytes *
bmapctl_signature_verify_bmap (BmapctlOptions *options, const BmapctlSignatureArgs *args,
                               GBytes *data, const char *bmap_location, const char *bmap_name,
                               GCancellable *stop, GBytes **signature, GError **error);

/* bmapctl_signature_load_bmap(), parsed. */
BmapMap *bmapctl_signature_load_map (BmapctlOptions *options, const BmapctlSignatureArgs *args,
                                     const char *bmap_path, GError **error);

/* For a copy through bmapd: sealed memfds of the bmap to parse and (when
 * not NULL) of @signature, so bmapd parses exactly what was verified here
 * and can judge the signature by its own trusted keys. Returns the bmap's,
 * @sig_fd gets the signature's or -1; -1 with @error set. */
int bmapctl_signature_memfds (GBytes *bmap, GBytes *signature, int *sig_fd, GError **error);

G_END_DECLS
