/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "bmapctl-flash-call.h"
#include "bmapctl-signature.h"

G_BEGIN_DECLS

/* The options of a write that bmapctl copy and auto-flash both take, as
 * their command lines give them. */
typedef struct {
  char *bmap;
  gboolean nobmap;
  gboolean no_verify;
  gboolean verify_written;
  gboolean minimize_writes;
  gboolean discard;
  gboolean zero_unmapped;
  gboolean relocate_gpt;
  char *bmap_sig;
  gboolean no_sig_verify;
  char *fingerprint;
  char *keyring;
} BmapctlWriteArgs;

/* The option entries copy and auto-flash share word for word, for their
 * tables (@w: a BmapctlWriteArgs *); the others' help speaks of a device
 * or of a card. */
/* clang-format off */
#define BMAPCTL_WRITE_ARGS_BMAP_ENTRIES(w)                                                         \
  { "bmap", 0, 0, G_OPTION_ARG_FILENAME, &(w)->bmap,                                              \
    "The bmap of the image (default: found next to the image)", "FILE" },                         \
  { "nobmap", 0, 0, G_OPTION_ARG_NONE, &(w)->nobmap, "Write every block of the image, no bmap",   \
    NULL },                                                                                        \
  { "no-verify", 0, 0, G_OPTION_ARG_NONE, &(w)->no_verify,                                        \
    "Do not check the bmap's checksums while writing", NULL }

#define BMAPCTL_WRITE_ARGS_SIGNATURE_ENTRIES(w)                                                    \
  { "bmap-sig", 0, 0, G_OPTION_ARG_FILENAME, &(w)->bmap_sig,                                      \
    "The bmap's detached signature (default: BMAP.asc or BMAP.sig if there)", "FILE" },            \
  { "no-sig-verify", 0, 0, G_OPTION_ARG_NONE, &(w)->no_sig_verify,                                \
    "Do not check the bmap's signature", NULL },                                                   \
  { "fingerprint", 0, 0, G_OPTION_ARG_STRING, &(w)->fingerprint,                                  \
    "The bmap must be signed by the key with this fingerprint", "FPR" },                           \
  { "keyring", 0, 0, G_OPTION_ARG_FILENAME, &(w)->keyring,                                        \
    "Check the signature against the keys in FILE only, not the GnuPG home", "FILE" }
/* clang-format on */

void bmapctl_write_args_clear (BmapctlWriteArgs *args);

/* What bmapd or bmap_copy() is asked for; eject_flags is left 0. */
BmapctlFlashOptions bmapctl_write_args_flash (const BmapctlWriteArgs *args);

BmapctlSignatureArgs bmapctl_write_args_signature (const BmapctlWriteArgs *args);

G_END_DECLS
