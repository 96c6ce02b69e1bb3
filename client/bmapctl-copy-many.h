/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "bmapctl-common.h"
#include "bmapctl-flash-call.h"
#include "bmapctl-target.h"
#include "libbmap.h"

G_BEGIN_DECLS

/* bmapctl copy IMAGE DEST1 DEST2 ...: the image is read, decoded and
 * hashed once for every destination, through bmapd's FlashMany when every
 * destination is a whole disk it offers, in-process (bmap_copy_many())
 * otherwise. One progress line for the set, showing its slowest
 * destination; one result line for each destination; exit status 0 only
 * when every destination was written. */
typedef struct {
  /* In-process: the bmap parsed (NULL with --nobmap). */
  BmapMap *map;
  /* Through bmapd: the bmap's bytes as checked, and its signature. */
  GBytes *bmap_bytes;
  GBytes *signature;
  /* The write's options; --eject, --power-off apply to each card after
   * its last step. */
  BmapctlFlashOptions flash;
  gboolean unmount;
} BmapctlCopyMany;

int bmapctl_copy_many_local (BmapctlOptions *options, const BmapctlCopyMany *spec,
                             const char *image, const BmapctlTarget *targets, guint n_targets);
int bmapctl_copy_many_daemon (BmapctlOptions *options, const BmapctlCopyMany *spec,
                              const char *image, const BmapctlTarget *targets, guint n_targets,
                              sd_bus *bus, GPtrArray *devices);

/* bmapctl-copy.c: a destination's result line (or JSON object). */
void bmapctl_copy_print_result (BmapctlOptions *options, const char *image, const char *dest,
                                const BmapCopyResult *result, const char *notes, gint64 elapsed_us);

/* bmapctl-copy.c: --eject and --power-off in-process, as bmapd does them;
 * what was done, in words for the result line. Closes *@target. */
char *bmapctl_copy_eject_local (BmapEjectFlags flags, const BmapctlTarget *bt, BmapTarget **target);

G_END_DECLS
