/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

#include "bmap-format.h"
#include "bmapctl-common.h"

G_BEGIN_DECLS

/* The bmaptool release whose options and output bmapctl follows. */
#define BMAPCTL_BMAPTOOL_VERSION "3.9.0"

/* bmaptool 3.9's long options, argparse's --help included, without the
 * dashes: those before the command (--version, -q, -d), and those of
 * @command ("create", "copy"; "flash" is bmapctl's copy). NULL for a
 * command bmaptool does not have. Their prefixes mean in bmapctl what
 * they mean in bmaptool (bmapctl-abbrev.h). */
const char *const *bmapctl_bmaptool_global_options (void);
const char *const *bmapctl_bmaptool_command_options (const char *command);

/* bmaptool 3.9's "bmaptool: info:" lines of a copy, word for word and in
 * its number formats, for the tools that wait for them (LAVA, labgrid's
 * logs). Printed only when bmapctl runs as bmaptool; -q and --json keep
 * them quiet as they do every informative line. */

/* BmapHelpers.human_size(): "1 byte", "100 bytes", "4.0 KiB", ... */
char *bmapctl_bmaptool_human_size (double size);
/* BmapHelpers.human_time(): "1h 2m 3.4s", "0.5s". */
char *bmapctl_bmaptool_human_time (double seconds);

/* Before the copy: "block map format version", the blocks line and the
 * "copying image ... using bmap file" line; with no bmap (@map NULL) the
 * "no bmap given" line. @image and @dest as given on the command line. */
void bmapctl_bmaptool_copy_begin (const BmapctlOptions *options, const BmapMap *map,
                                  const char *bmap_path, const char *image, const char *dest,
                                  gboolean dest_is_block_device);

/* After it: "synchronizing" and "copying time: ..., copying speed .../sec",
 * where the speed is the mapped size (bmaptool's: mapped blocks times the
 * block size, or the image size without a bmap) over the time. */
void bmapctl_bmaptool_copy_end (const BmapctlOptions *options, const char *dest,
                                guint64 mapped_size, double seconds);

G_END_DECLS
