/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

#include "bmapctl-download.h"

G_BEGIN_DECLS

/* A file read through the ssh program, as bmaptool reads ssh:// URLs:
 * `ssh HOST cat PATH`, without prompts (BatchMode: a passphrase or a new
 * host key would hang a flash) and without forwarding. Logging in is the
 * user's ssh configuration's business: keys, ssh-agent, known hosts.
 *
 * ssh://[USER@]HOST[:PORT]/PATH, and bmaptool's ssh://[USER@]HOST:PATH,
 * where a PATH without a leading slash is relative to the login directory,
 * as for scp. Passwords in the URL are refused. */
typedef struct _BmapctlSsh BmapctlSsh;

/* Parses @url; @display is the URL without its password, for messages. */
BmapctlSsh *bmapctl_ssh_new (const char *url, const char *display, GError **error);
/* Stops ssh if it still runs. */
void bmapctl_ssh_free (BmapctlSsh *ssh);

/* The whole file, read to its end (a bmap: text). @absent tells a file
 * that is not there (cat failed) from ssh failing to connect (255). */
GBytes *bmapctl_ssh_fetch (BmapctlSsh *ssh, gboolean *absent, GError **error);

/* Starts `ssh HOST cat PATH`, then copies its output into the
 * non-blocking pipe @wfd until the end, @stop_fd readable or the pipe's
 * reader gone; @func is called at the first byte. A cat or ssh that fails
 * is an error with what ssh said on stderr. Run from one thread. */
gboolean bmapctl_ssh_start (BmapctlSsh *ssh, GError **error);
gboolean bmapctl_ssh_pump (BmapctlSsh *ssh, int wfd, int stop_fd, BmapctlDownloadFunc func,
                           gpointer data, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapctlSsh, bmapctl_ssh_free)

G_END_DECLS
