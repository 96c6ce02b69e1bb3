/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>
#include <sys/stat.h>
#include <systemd/sd-event.h>

#include "bmap-format.h"

G_BEGIN_DECLS

typedef enum {
  BMAPD_FD_READ,
  BMAPD_FD_WRITE,
} BmapdFdMode;

/* The part of the checks of a descriptor a caller passed that cannot
 * block, for the event loop: not O_PATH, open for @mode. Returns a
 * duplicate (O_CLOEXEC) that the caller owns, -1 on error. */
int bmapd_fd_dup (int fd, const char *what, BmapdFdMode mode, GError **error);

/* The rest, for a thread (fstat() of a file on a FUSE mount can block): a
 * regular file or (unless @regular_only) a pipe. Everything else
 * (directories, sockets, devices) is InvalidArgument naming what it is. */
gboolean bmapd_fd_check_type (int fd, const char *what, gboolean regular_only, struct stat *st,
                              GError **error);

/* Both: for descriptors bmapd opened itself. */
int bmapd_fd_check (int fd, const char *what, BmapdFdMode mode, gboolean regular_only,
                    struct stat *st, GError **error);

/* Reads all of a regular file from offset 0; Limit when it is larger than
 * @limit. */
GBytes *bmapd_fd_read_regular (int fd, gsize limit, const char *what, GError **error);

/* Reads a pipe to its end through a non-blocking descriptor of our own;
 * stops with Cancelled when @cancellable fires. For a thread. */
GBytes *bmapd_fd_read_pipe (int fd, gsize limit, const char *what, GCancellable *cancellable,
                            GError **error);

/* A regular file or a pipe, whichever @fd is. For a thread. */
GBytes *bmapd_fd_read_all (int fd, gsize limit, const char *what, GCancellable *cancellable,
                           GError **error);

/* A caller's bmap: read whole (at most BMAPD_MAX_BMAP_SIZE) and parsed.
 * @out_bytes, when given, gets the bytes parsed (for a signature check).
 * For a thread. */
BmapMap *bmapd_fd_read_bmap (int fd, GCancellable *cancellable, GBytes **out_bytes, GError **error);

/* Waits until @fd has data (or its end); Cancelled when @cancellable
 * fires first. For a thread. */
gboolean
bmapd_fd_wait_readable (int fd, const char *what, GCancellable *cancellable, GError **error);

/* The medium behind an opened block device is the one checked
 * (@expected, 0: none to compare): a medium swapped between the check and
 * open(), or while a job waited, has another diskseq (MediaChanged).
 * Without BLKGETDISKSEQ (before Linux 5.15): TRUE, unknown. */
gboolean bmapd_fd_check_diskseq (int fd, const char *node, guint64 expected, GError **error);

/* Work on a caller's descriptors, run on a thread of its own so that
 * nothing a caller does (a pipe never closed, a byte read back, a FUSE
 * file that never answers, an image that takes long to parse) stalls the
 * event loop. */
typedef struct _BmapdFdWorker BmapdFdWorker;

/* On the thread: @cancellable fires when the loop gives up. */
typedef gboolean (*BmapdFdWorkFunc) (gpointer work, GCancellable *cancellable, GError **error);
/* On the loop, once: @work is the finished work (take what it made from
 * it), @error set when it failed. When the deadline passed first, @work is
 * NULL and @error says so: the thread is left to finish on its own, and
 * frees the work then (whatever the work holds, such as a caller's limit
 * ticket, is held until then). */
typedef void (*BmapdFdWorkDoneFunc) (gpointer work, const GError *error, gpointer user_data);

/* Runs @func (@work) on a new thread; @done within @timeout_sec. @work is
 * taken (@work_free, from whichever thread lets go last). */
BmapdFdWorker *bmapd_fd_worker_start (sd_event *event, const char *what, guint timeout_sec,
                                      BmapdFdWorkFunc func, gpointer work, GDestroyNotify work_free,
                                      BmapdFdWorkDoneFunc done, gpointer user_data, GError **error);
/* The same, for work that is not a caller's: past the deadline, IO "not
 * done after N s" rather than InvalidArgument naming @timeout_key. */
BmapdFdWorker *
bmapd_fd_worker_start_full (sd_event *event, const char *what, guint timeout_sec,
                            const char *timeout_key, BmapdFdWorkFunc func, gpointer work,
                            GDestroyNotify work_free, BmapdFdWorkDoneFunc done, gpointer user_data,
                            GError **error);
/* Stops waiting: @done is not called afterwards; a thread still running is
 * cancelled and left to finish on its own. */
void bmapd_fd_worker_free (BmapdFdWorker *worker);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdFdWorker, bmapd_fd_worker_free)

G_END_DECLS
