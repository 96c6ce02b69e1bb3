/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Private to libbmap: moving a GPT's backup to the end of a device larger
 * than the image (relocate-gpt), the way `sfdisk --relocate gpt-bak-std`
 * does it, through libfdisk. */

#include "bmap-copy.h"
#include "bmap-target.h"

G_BEGIN_DECLS

/* Relocates the backup GPT header and table of what @target now holds to
 * the end of @target, then reads the table back and checks it (what
 * `sfdisk --verify` checks). *@status says what was done: a target that is
 * not larger than @image_size has the backup at its end already, and a
 * target without a GPT is left as it is; neither is an error. */
gboolean
bmap_gpt_relocate (BmapTarget *target, guint64 image_size, BmapGptStatus *status, GError **error);

G_END_DECLS
