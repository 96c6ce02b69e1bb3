/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

#include "bmap-format.h"
#include "bmap-mapping.h"
#include "bmap-progress.h"

G_BEGIN_DECLS

typedef struct {
  BmapChecksumType checksum; /* SHA256 as bmaptool; NONE for --no-checksum */
  BmapMappingMethod mapping; /* AUTO by default */
  guint n_threads;           /* hashing threads, 0 = one per CPU */
  BmapProgressFunc progress_func;
  gpointer progress_data;
  GCancellable *cancellable;
} BmapCreateOptions;

/* Sets @options to the defaults (sha256, auto mapping, one thread per CPU). */
void bmap_create_options_init (BmapCreateOptions *options);

/* Maps the regular file (or block device) @fd and hashes every mapped range.
 * An empty image is an error (InvalidArgument). @used_method, when not
 * NULL, says which mapping method worked. The caller warns when the map is
 * fully mapped (mapped_blocks_count == blocks_count), as bmaptool does. */
BmapMap *bmap_create (int fd, const char *name, const BmapCreateOptions *options,
                      BmapMappingMethod *used_method, GError **error);

/* Writes @map's XML to @fd. A write that would block waits in poll() for
 * @fd or @cancellable, so a reader that never reads cannot hold the caller
 * for longer than until the cancel: pass a descriptor with O_NONBLOCK for
 * that (a blocking one works, but may block in write()). A reader that
 * closed a pipe is an error that says so (EPIPE); SIGPIPE must be ignored
 * or blocked by the program. @name is used in messages. */
gboolean bmap_create_write_bmap (const BmapMap *map, int fd, const char *name,
                                 GCancellable *cancellable, GError **error);

G_END_DECLS
