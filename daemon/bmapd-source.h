/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

#include "libbmap.h"

G_BEGIN_DECLS

/* The image of a flash, from the caller's descriptor: the one place where
 * bmapd turns a descriptor into a libbmap source.
 *
 * A regular file is sniffed at once (its magic; an xz file's index), on
 * the request's reader thread: an uncompressed one has a known size before
 * polkit is asked. A pipe is read only once its job runs, on the job's
 * thread: its writer may wait for the call's answer before writing (as
 * "bmapctl copy --detach" lets it). */
typedef struct _BmapdSource BmapdSource;

/* Takes @fd, a regular file or a pipe at the image's start. May block (a
 * file on a FUSE mount) or take long (an xz index): for a thread. */
BmapdSource *bmapd_source_new (int fd, const char *name, GError **error);
void bmapd_source_free (BmapdSource *source);

/* Uncompressed regular file: its size is the image's. */
gboolean bmapd_source_is_seekable (BmapdSource *source);
/* The image's size when known before decoding, 0 otherwise. */
guint64 bmapd_source_get_size (BmapdSource *source);

/* The libbmap source, owned by @source: for a pipe, once its first bytes
 * are there; Cancelled when @cancellable fires first. For a thread. */
BmapSource *bmapd_source_open (BmapdSource *source, GCancellable *cancellable, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdSource, bmapd_source_free)

G_END_DECLS
