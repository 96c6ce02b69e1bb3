/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "bmapctl-common.h"
#include "libbmap.h"

G_BEGIN_DECLS

/* What a write asks of bmapd the same way in Flash, FlashMany and
 * AddAutoFlash. */
typedef struct {
  gboolean nobmap;
  gboolean verify;
  gboolean verify_written;
  gboolean minimize_writes;
  gboolean discard;
  gboolean zero_unmapped;
  gboolean relocate_gpt;
  /* --eject, --power-off (Flash and FlashMany only). */
  BmapEjectFlags eject_flags;
} BmapctlFlashOptions;

/* In-process, the same options for bmap_copy() and bmap_copy_many(). */
void bmapctl_flash_options_to_copy (const BmapctlFlashOptions *flash, BmapCopyOptions *copy);

/* The descriptors a call carries. The message holds duplicates of them, so
 * they are closed once it is built; standard input is never closed. */
typedef struct {
  int image;
  int bmap;
  int signature;
} BmapctlFlashFds;

#define BMAPCTL_FLASH_FDS_INIT                                                                     \
  {                                                                                                \
    -1, -1, -1                                                                                     \
  }

void bmapctl_flash_fds_clear (BmapctlFlashFds *fds);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (BmapctlFlashFds, bmapctl_flash_fds_clear)

/* @image opened with the caller's own rights (- is standard input), and
 * @description set to what bmapd's job shows for it. */
gboolean bmapctl_flash_fds_open_image (BmapctlFlashFds *fds, const char *image, char **description,
                                       GError **error);

/* Sealed memfds of the bmap bytes verified here and of their signature
 * (none when @signature is NULL). */
gboolean
bmapctl_flash_fds_open_bmap (BmapctlFlashFds *fds, GBytes *bmap, GBytes *signature, GError **error);

/* Appends to the open a{sv} of options the entries common to Flash,
 * FlashMany and AddAutoFlash: the bmap and its signature when @fds has
 * them, nobmap, verify, verify-written, description, the writing options
 * asked for, and no-user-interaction. A negative errno on failure. */
int bmapctl_flash_call_append_options (sd_bus_message *call, const BmapctlOptions *options,
                                       const BmapctlFlashOptions *flash, const BmapctlFlashFds *fds,
                                       const char *description);

G_END_DECLS
