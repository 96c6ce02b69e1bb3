/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "bmapctl-bus.h"
#include "bmapctl-flash-call.h"
#include "bmapctl-signature.h"

void
bmapctl_flash_options_to_copy (const BmapctlFlashOptions *flash, BmapCopyOptions *copy)
{
  copy->verify = flash->verify;
  copy->verify_written = flash->verify_written;
  copy->minimize_writes = flash->minimize_writes;
  copy->discard = flash->discard;
  copy->zero_unmapped = flash->zero_unmapped;
  copy->relocate_gpt = flash->relocate_gpt;
}

void
bmapctl_flash_fds_clear (BmapctlFlashFds *fds)
{
  if (fds->image >= 0 && fds->image != STDIN_FILENO)
    close (fds->image);
  if (fds->bmap >= 0)
    close (fds->bmap);
  if (fds->signature >= 0)
    close (fds->signature);
  fds->image = fds->bmap = fds->signature = -1;
}

gboolean
bmapctl_flash_fds_open_image (BmapctlFlashFds *fds, const char *image, char **description,
                              GError **error)
{
  if (g_str_equal (image, "-")) {
    fds->image = STDIN_FILENO;
    *description = g_strdup ("standard input");
    return TRUE;
  }
  fds->image = open (image, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fds->image < 0) {
    bmap_error_set_errno (error, errno, "%s", image);
    return FALSE;
  }
  *description = g_path_get_basename (image);
  return TRUE;
}

gboolean
bmapctl_flash_fds_open_bmap (BmapctlFlashFds *fds, GBytes *bmap, GBytes *signature, GError **error)
{
  fds->bmap = bmapctl_signature_memfds (bmap, signature, &fds->signature, error);
  return fds->bmap >= 0;
}

int
bmapctl_flash_call_append_options (sd_bus_message *call, const BmapctlOptions *options,
                                   const BmapctlFlashOptions *flash, const BmapctlFlashFds *fds,
                                   const char *description)
{
  int r = 0;

  if (fds->bmap >= 0)
    r = sd_bus_message_append (call, "{sv}", "bmap", "h", fds->bmap);
  if (r >= 0 && fds->signature >= 0)
    r = sd_bus_message_append (call, "{sv}", "bmap-signature", "h", fds->signature);
  if (r >= 0 && flash->nobmap)
    r = sd_bus_message_append (call, "{sv}", "nobmap", "b", 1);
  if (r >= 0)
    r = sd_bus_message_append (call, "{sv}{sv}{sv}", "verify", "b", flash->verify, "verify-written",
                               "b", flash->verify_written, "description", "s", description);
  /* Sent only when asked, so that a bmapd without them refuses only then,
   * and a rule's Options list what was given. */
  if (r >= 0 && flash->minimize_writes)
    r = sd_bus_message_append (call, "{sv}", "minimize-writes", "b", 1);
  if (r >= 0 && flash->discard)
    r = sd_bus_message_append (call, "{sv}", "discard", "b", 1);
  if (r >= 0 && flash->zero_unmapped)
    r = sd_bus_message_append (call, "{sv}", "zero-unmapped", "b", 1);
  if (r >= 0 && flash->relocate_gpt)
    r = sd_bus_message_append (call, "{sv}", "relocate-gpt", "b", 1);
  if (r >= 0 && (flash->eject_flags & BMAP_EJECT_FLAG_EJECT))
    r = sd_bus_message_append (call, "{sv}", "eject", "b", 1);
  if (r >= 0 && (flash->eject_flags & BMAP_EJECT_FLAG_POWER_OFF))
    r = sd_bus_message_append (call, "{sv}", "power-off", "b", 1);
  if (r >= 0)
    r = bmapctl_bus_append_no_user_interaction (call, options);
  return r;
}
