/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* One http, https, ftp or ftps URL downloaded with libcurl, request after
 * request on one connection, into a pipe or into memory.
 *
 * A connection that breaks, or brings nothing for 60 s (or
 * BMAPCTL_STALL_TIMEOUT seconds), is asked for the rest with a Range
 * request carrying If-Range (the first answer's strong ETag, else its
 * Last-Modified), 5 times in a row without a byte more before the download
 * fails. Every answer is checked before a
 * byte of it is used: an HTTP error, a whole file where a range was asked
 * for, or another range, stops the download with an error that names the
 * URL and the status. ~/.netrc gives credentials; CURL_CA_BUNDLE,
 * SSL_CERT_FILE and SSL_CERT_DIR replace the system's CA store, as for the
 * curl tool (libcurl itself reads none of them). */
typedef struct _BmapctlDownload BmapctlDownload;

typedef void (*BmapctlDownloadFunc) (gpointer data);

/* @display is @url without its password, for messages. Cancelling @stop
 * stops a request at once, stalled or not. */
BmapctlDownload *
bmapctl_download_new (const char *url, const char *display, GCancellable *stop, GError **error);
void bmapctl_download_free (BmapctlDownload *d);

gboolean bmapctl_download_is_http (BmapctlDownload *d);

/* Where the bytes go: the non-blocking write end of a pipe (not owned), or
 * memory, up to @cap bytes (more is BMAP_ERROR_LIMIT). */
void bmapctl_download_to_pipe (BmapctlDownload *d, int fd);
void bmapctl_download_to_memory (BmapctlDownload *d, gsize cap);
GBytes *bmapctl_download_steal_memory (BmapctlDownload *d);

/* Called from the downloading thread at the first answer accepted. */
void
bmapctl_download_set_answered_func (BmapctlDownload *d, BmapctlDownloadFunc func, gpointer data);

/* Downloads bytes [@start, @end) of the file (@end 0: to its end). */
gboolean bmapctl_download_run (BmapctlDownload *d, guint64 start, guint64 end, GError **error);

/* After a failed run: the file is not there (HTTP 404, 410 or 403, FTP
 * 550), as opposed to a failing server. */
gboolean bmapctl_download_found_nothing (BmapctlDownload *d);

/* Asks for the first @len bytes with a Range request. FALSE without @error
 * when the server does not answer Range requests; else the bytes and the
 * file's size. Later ranges must come from a file of that size. */
gboolean bmapctl_download_probe (BmapctlDownload *d, gsize len, GBytes **head, guint64 *size,
                                 GError **error);
/* Forgets the probe's answer when the file is streamed after all. */
void bmapctl_download_reset (BmapctlDownload *d);

/* Bytes received from the network by every download and ssh so far, for
 * the progress line. */
guint64 bmapctl_download_get_received (void);
void bmapctl_download_add_received (guint64 n);

/* Writes into the non-blocking @fd, waiting for room until @stop_fd is
 * readable (BMAP_ERROR_CANCELLED). A reader that went away is
 * G_IO_ERROR_BROKEN_PIPE: not the download's fault. */
gboolean
bmapctl_pipe_write_all (int fd, int stop_fd, const guint8 *data, gsize len, GError **error);
gboolean bmapctl_pipe_write_zeros (int fd, int stop_fd, guint64 len, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapctlDownload, bmapctl_download_free)

G_END_DECLS
