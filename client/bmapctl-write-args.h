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

void bmapctl_write_args_clear (BmapctlWriteArgs *args);

/* What bmapd or bmap_copy() is asked for; eject_flags is left 0. */
BmapctlFlashOptions bmapctl_write_args_flash (const BmapctlWriteArgs *args);

BmapctlSignatureArgs bmapctl_write_args_signature (const BmapctlWriteArgs *args);

G_END_DECLS
