/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

#include "bmap-format.h"

G_BEGIN_DECLS

/* bmapctl copy's IMAGE and --bmap when either is a URL. bmapctl fetches
 * them itself (bmapd never touches the network) and hands on descriptors:
 *
 *  - http, https, ftp, ftps: a BmapctlDownload (libcurl, resuming broken
 *    connections) in a thread writing into a pipe.
 *  - an uncompressed image over http(s) with a bmap, from a server that
 *    answers Range requests: only the mapped ranges are downloaded, and the
 *    pipe carries zeros in between, which the copy skips without looking
 *    (it checks the mapped ranges against the bmap as ever).
 *  - ssh://: a BmapctlSsh (`ssh HOST cat PATH`, as bmaptool does), its
 *    output copied into the pipe by the same thread.
 *  - file: URLs are opened as the local files they name.
 *
 * The bmap is fetched into memory and discovered next to an image URL as
 * next to a file: IMAGE.bmap, then with one extension stripped at a time;
 * a missing file (HTTP 404) means "not there". */
typedef struct _BmapctlUrlSource BmapctlUrlSource;

/* Checks the bmap fetched from @location (a URL or path; @name is it
 * without a password, for messages) before it is parsed, and returns the
 * bytes to parse (the signature module's verified text); NULL with @error
 * refuses the bmap. @stop cancels what the hook fetches. */
typedef GBytes *(*BmapctlUrlBmapFunc) (GBytes *bmap, const char *location, const char *name,
                                       GCancellable *stop, gpointer user_data, GError **error);

/* TRUE for http://, https://, ftp://, ftps://, ssh:// and file: */
gboolean bmapctl_url_is_url (const char *arg);

/* Fetches the bmap (none with @nobmap), hands it to @check_bmap (when not
 * NULL), and starts fetching the image: it returns once the image's server
 * answered. @cancellable stops every transfer. Errors name the URL and
 * what failed (the HTTP status, the curl or ssh error). */
BmapctlUrlSource *bmapctl_url_source_open (const char *image, const char *bmap_arg, gboolean nobmap,
                                           BmapctlUrlBmapFunc check_bmap, gpointer check_data,
                                           GCancellable *cancellable, GError **error);
/* The image's bytes, read-only: a pipe (or the file of a file: URL). The
 * caller owns it. */
int bmapctl_url_source_steal_image_fd (BmapctlUrlSource *self);
/* One small file (a signature) at @url, up to @cap bytes (more is
 * BMAP_ERROR_LIMIT); @cancellable may be NULL. NULL with @absent TRUE when
 * it is not there (HTTP 404, 410 or 403, FTP 550, no such file), as for
 * the bmap's discovery. */
GBytes *bmapctl_url_fetch (const char *url, gsize cap, GCancellable *cancellable, gboolean *absent,
                           GError **error);
/* @url without its password, for messages. */
char *bmapctl_url_display (const char *url);
/* @url with @suffix appended to the file its path names (before any query
 * or fragment); a path gets it at the end. */
char *bmapctl_url_with_suffix (const char *url, const char *suffix);

/* The parsed bmap, NULL without one; the caller owns it. */
BmapMap *bmapctl_url_source_steal_map (BmapctlUrlSource *self);
/* The bmap's text in a sealed memfd for bmapd, -1 without a bmap (error
 * not set) or on error (set). */
int bmapctl_url_source_dup_bmap_fd (BmapctlUrlSource *self, GError **error);
/* The image's URL without its password, for messages. */
const char *bmapctl_url_source_get_name (BmapctlUrlSource *self);
/* The image file's name, for the job's description. */
const char *bmapctl_url_source_get_description (BmapctlUrlSource *self);
/* Where the bmap came from, NULL without one. */
const char *bmapctl_url_source_get_bmap_name (BmapctlUrlSource *self);

/* TRUE when bmapctl itself feeds the image (curl or ssh), so it must stay
 * until the copy ends. */
gboolean bmapctl_url_source_needs_client (BmapctlUrlSource *self);

/* After the copy read the image: FALSE with the transfer's own error when
 * it failed (the copy then only saw a short or broken stream). A transfer
 * still running, or stopped because the reader went away, is no error. */
gboolean bmapctl_url_source_check (BmapctlUrlSource *self, GError **error);
/* Stops the transfer if it still runs and waits for it. */
void bmapctl_url_source_free (BmapctlUrlSource *self);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapctlUrlSource, bmapctl_url_source_free)

G_END_DECLS
