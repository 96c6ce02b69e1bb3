/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <sys/stat.h>
#include <systemd/sd-event.h>

G_BEGIN_DECLS

typedef enum {
  BMAPD_FD_READ,
  BMAPD_FD_WRITE,
} BmapdFdMode;

/* Checks a descriptor a caller passed: a regular file or (unless
 * @regular_only) a pipe, not O_PATH, open for @mode. Everything else
 * (directories, sockets, devices) is InvalidArgument naming what it is.
 * Returns a duplicate (O_CLOEXEC) that the caller owns, -1 on error. */
int bmapd_fd_check (int fd, const char *what, BmapdFdMode mode, gboolean regular_only,
                    struct stat *st, GError **error);

/* Reads all of a regular file from offset 0; Limit when it is larger than
 * @limit. */
GBytes *bmapd_fd_read_regular (int fd, gsize limit, const char *what, GError **error);

/* Reads a pipe to its end on the event loop, without blocking it. */
typedef struct _BmapdFdReader BmapdFdReader;
/* @bytes is NULL and @error set on failure (Limit when more than the limit,
 * InvalidArgument when the writer does not finish in time). */
typedef void (*BmapdFdReadFunc) (GBytes *bytes, const GError *error, gpointer user_data);

/* @fd stays the caller's and must stay open while reading. */
BmapdFdReader *bmapd_fd_reader_new (sd_event *event, int fd, gsize limit, const char *what,
                                    BmapdFdReadFunc func, gpointer user_data, GError **error);
/* Stops reading; the callback is not called afterwards. */
void bmapd_fd_reader_free (BmapdFdReader *reader);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdFdReader, bmapd_fd_reader_free)

G_END_DECLS
