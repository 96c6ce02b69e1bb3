/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmapctl-write-args.h"

void
bmapctl_write_args_clear (BmapctlWriteArgs *args)
{
  g_free (args->bmap);
  g_free (args->bmap_sig);
  g_free (args->fingerprint);
  g_free (args->keyring);
}

BmapctlFlashOptions
bmapctl_write_args_flash (const BmapctlWriteArgs *args)
{
  BmapctlFlashOptions flash = { 0 };

  flash.nobmap = args->nobmap;
  flash.verify = !args->no_verify;
  flash.verify_written = args->verify_written;
  flash.minimize_writes = args->minimize_writes;
  flash.discard = args->discard;
  flash.zero_unmapped = args->zero_unmapped;
  flash.relocate_gpt = args->relocate_gpt;
  return flash;
}

BmapctlSignatureArgs
bmapctl_write_args_signature (const BmapctlWriteArgs *args)
{
  return (BmapctlSignatureArgs){ args->bmap_sig, args->no_sig_verify, args->fingerprint,
                                 args->keyring };
}
