/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmapd-fd.h"
#include "bmapd-manager.h"
#include "bmapd-sd.h"

static const char *
describe_mode (mode_t mode)
{
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return "a directory";
    case S_IFSOCK:
      return "a socket";
    case S_IFBLK:
      return "a block device";
    case S_IFCHR:
      return "a character device";
    case S_IFLNK:
      return "a symbolic link";
    case S_IFIFO:
      return "a pipe";
    case S_IFREG:
      return "a regular file";
    default:
      return "of an unknown file type";
  }
}

int
bmapd_fd_dup (int fd, const char *what, BmapdFdMode mode, GError **error)
{
  int flags, accmode, dup_fd;

  flags = fcntl (fd, F_GETFL);
  if (flags < 0) {
    bmap_error_set_errno (error, errno, "%s: bad file descriptor", what);
    return -1;
  }
  /* O_PATH descriptors fstat() fine but cannot be read or written. */
  if (flags & O_PATH) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: got an O_PATH file descriptor, which cannot be read; open the file for "
                 "%s",
                 what, mode == BMAPD_FD_READ ? "reading" : "writing");
    return -1;
  }
  accmode = flags & O_ACCMODE;
  if (mode == BMAPD_FD_READ && accmode == O_WRONLY) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: the file descriptor is open for writing only; expected one open for "
                 "reading",
                 what);
    return -1;
  }
  if (mode == BMAPD_FD_WRITE && accmode == O_RDONLY) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: the file descriptor is open for reading only; expected one open for "
                 "writing",
                 what);
    return -1;
  }
  /* sd-bus owns the message's descriptors. */
  dup_fd = fcntl (fd, F_DUPFD_CLOEXEC, 3);
  if (dup_fd < 0) {
    bmap_error_set_errno (error, errno, "%s: dup", what);
    return -1;
  }
  return dup_fd;
}

gboolean
bmapd_fd_check_type (int fd, const char *what, gboolean regular_only, struct stat *st,
                     GError **error)
{
  struct stat local_st;

  if (st == NULL)
    st = &local_st;
  if (fstat (fd, st) < 0) {
    bmap_error_set_errno (error, errno, "%s: fstat", what);
    return FALSE;
  }
  if (!S_ISREG (st->st_mode) && (regular_only || !S_ISFIFO (st->st_mode))) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: the file descriptor is %s; expected a regular file%s", what,
                 describe_mode (st->st_mode), regular_only ? "" : " or a pipe");
    return FALSE;
  }
  return TRUE;
}

int
bmapd_fd_check (int fd, const char *what, BmapdFdMode mode, gboolean regular_only, struct stat *st,
                GError **error)
{
  int dup_fd = bmapd_fd_dup (fd, what, mode, error);

  if (dup_fd < 0)
    return -1;
  if (!bmapd_fd_check_type (dup_fd, what, regular_only, st, error)) {
    close (dup_fd);
    return -1;
  }
  return dup_fd;
}

static void
set_too_large (GError **error, const char *what, guint64 size, gsize limit)
{
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT,
               "%s: %" G_GUINT64_FORMAT "%s bytes, more than the %" G_GSIZE_FORMAT
               " bytes bmapd accepts",
               what, size, size > limit ? "" : "+", limit);
}

GBytes *
bmapd_fd_read_regular (int fd, gsize limit, const char *what, GError **error)
{
  struct stat st;
  g_autofree guint8 *buf = NULL;
  gsize done = 0;

  if (fstat (fd, &st) < 0) {
    bmap_error_set_errno (error, errno, "%s: fstat", what);
    return NULL;
  }
  if ((guint64) st.st_size > limit) {
    set_too_large (error, what, (guint64) st.st_size, limit);
    return NULL;
  }
  buf = g_malloc ((gsize) st.st_size + 1);
  /* One more byte than fstat said, to notice a file still growing. */
  while (done <= (gsize) st.st_size) {
    ssize_t n = pread (fd, buf + done, (gsize) st.st_size + 1 - done, (off_t) done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      bmap_error_set_errno (error, errno, "%s: read at offset %" G_GSIZE_FORMAT, what, done);
      return NULL;
    }
    if (n == 0)
      break;
    done += (gsize) n;
  }
  if (done > limit) {
    set_too_large (error, what, done, limit);
    return NULL;
  }
  return g_bytes_new_take (g_steal_pointer (&buf), done);
}

gboolean
bmapd_fd_check_diskseq (int fd, const char *node, guint64 expected, GError **error)
{
  guint64 diskseq = 0;

  if (expected == 0)
    return TRUE; /* the device has none to compare */
  if (ioctl (fd, BLKGETDISKSEQ, &diskseq) < 0) {
    /* Before Linux 5.15: unknown; the device was read again instead. */
    if (errno == ENOTTY || errno == EINVAL)
      return TRUE;
    bmap_error_set_errno (error, errno, "%s: BLKGETDISKSEQ", node);
    return FALSE;
  }
  if (diskseq != expected) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_MEDIA_CHANGED,
                 "the medium in %s changed: diskseq %" G_GUINT64_FORMAT
                 " was checked, the opened device has %" G_GUINT64_FORMAT "; nothing was written",
                 node, expected, diskseq);
    return FALSE;
  }
  return TRUE;
}

/* Waits until @fd is readable; FALSE with Cancelled when @cancellable
 * fires first. */
static gboolean
wait_readable (int fd, const char *what, GCancellable *cancellable, GError **error)
{
  GPollFD fds[2] = { { .fd = fd, .events = G_IO_IN | G_IO_HUP | G_IO_ERR } };
  guint n_fds = 1;
  gboolean ok = TRUE;

  if (cancellable != NULL && g_cancellable_make_pollfd (cancellable, &fds[1]))
    n_fds = 2;
  for (;;) {
    int n;

    if (g_cancellable_set_error_if_cancelled (cancellable, error)) {
      ok = FALSE;
      break;
    }
    n = g_poll (fds, n_fds, -1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      bmap_error_set_errno (error, errno, "%s: poll", what);
      ok = FALSE;
      break;
    }
    if (n_fds == 2 && fds[1].revents != 0)
      continue; /* reported at the top */
    if (fds[0].revents != 0)
      break;
  }
  if (n_fds == 2)
    g_cancellable_release_fd (cancellable);
  if (!ok && g_error_matches (*error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
    g_clear_error (error);
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "%s: reading canceled", what);
  }
  return ok;
}

gboolean
bmapd_fd_wait_readable (int fd, const char *what, GCancellable *cancellable, GError **error)
{
  return wait_readable (fd, what, cancellable, error);
}

GBytes *
bmapd_fd_read_pipe (int fd, gsize limit, const char *what, GCancellable *cancellable,
                    GError **error)
{
  g_autoptr (GByteArray) data = g_byte_array_new ();
  g_autofree char *proc_path = g_strdup_printf ("/proc/self/fd/%d", fd);
  guint8 buf[65536];
  int own_fd;

  /* An open file description of our own, non-blocking whatever the
   * caller does to theirs: a caller that reads back the bytes that woke
   * us up gets EAGAIN here, not a reader stuck in read(). Without /proc
   * the caller's descriptor is used, and a stuck read is the deadline's. */
  own_fd = open (proc_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  for (;;) {
    int read_fd = own_fd >= 0 ? own_fd : fd;
    ssize_t n;

    if (!wait_readable (read_fd, what, cancellable, error))
      break;
    n = read (read_fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0) {
      bmap_error_set_errno (error, errno, "%s: read", what);
      break;
    }
    if (n == 0) {
      if (own_fd >= 0)
        close (own_fd);
      return g_byte_array_free_to_bytes (g_steal_pointer (&data));
    }
    g_byte_array_append (data, buf, (guint) n);
    if (data->len > limit) {
      set_too_large (error, what, data->len, limit);
      break;
    }
  }
  if (own_fd >= 0)
    close (own_fd);
  return NULL;
}

GBytes *
bmapd_fd_read_all (int fd, gsize limit, const char *what, GCancellable *cancellable, GError **error)
{
  struct stat st;

  if (!bmapd_fd_check_type (fd, what, FALSE, &st, error))
    return NULL;
  if (S_ISREG (st.st_mode))
    return bmapd_fd_read_regular (fd, limit, what, error);
  return bmapd_fd_read_pipe (fd, limit, what, cancellable, error);
}

/* ---- work on a thread, with a deadline ---- */

/* What the thread and the loop share; the last one to let go frees it.
 * After the loop has given up (deadline, or the call ended), the thread
 * finishes on its own and frees the work, and with it the caller's
 * descriptors and limit tickets. */
typedef struct {
  gint ref_count;
  GMutex lock;
  gboolean finished;
  gboolean abandoned;
  int event_fd; /* the loop's; written under the lock while not abandoned */
  GError *error;
  GCancellable *cancellable;
  BmapdFdWorkFunc func;
  gpointer work;
  GDestroyNotify work_free;
} WorkerShared;

struct _BmapdFdWorker {
  WorkerShared *shared;
  sd_event_source *io_source;
  sd_event_source *timer_source;
  char *what;
  char *timeout_key;
  guint timeout_sec;
  BmapdFdWorkDoneFunc done;
  gpointer user_data;
};

static void
shared_unref (WorkerShared *shared)
{
  if (!g_atomic_int_dec_and_test (&shared->ref_count))
    return;
  if (shared->work_free != NULL && shared->work != NULL)
    shared->work_free (shared->work);
  g_clear_error (&shared->error);
  g_clear_object (&shared->cancellable);
  g_mutex_clear (&shared->lock);
  g_free (shared);
}

static gpointer
worker_thread (gpointer data)
{
  WorkerShared *shared = data;
  GError *error = NULL;
  gboolean ok;

  ok = shared->func (shared->work, shared->cancellable, &error);
  if (!ok && error == NULL)
    g_set_error_literal (&error, BMAP_ERROR, BMAP_ERROR_IO, "failed without saying why");
  if (ok)
    g_clear_error (&error);
  g_mutex_lock (&shared->lock);
  shared->finished = TRUE;
  shared->error = error;
  if (!shared->abandoned)
    eventfd_write (shared->event_fd, 1);
  g_mutex_unlock (&shared->lock);
  shared_unref (shared);
  return NULL;
}

static void
worker_stop_watching (BmapdFdWorker *worker)
{
  worker->io_source = sd_event_source_disable_unref (worker->io_source);
  worker->timer_source = sd_event_source_disable_unref (worker->timer_source);
}

static int
on_worker_done (sd_event_source *source, int fd, uint32_t revents, void *user_data)
{
  BmapdFdWorker *worker = user_data;
  WorkerShared *shared = worker->shared;
  eventfd_t value;

  (void) eventfd_read (fd, &value);
  worker_stop_watching (worker);
  /* The thread wrote the eventfd after setting its result. The callback
   * may free the worker. */
  worker->done (shared->work, shared->error, worker->user_data);
  return 0;
}

static int
on_worker_timeout (sd_event_source *source, uint64_t usec, void *user_data)
{
  BmapdFdWorker *worker = user_data;
  WorkerShared *shared = worker->shared;
  g_autoptr (GError) error = NULL;
  gboolean finished;

  g_mutex_lock (&shared->lock);
  finished = shared->finished;
  g_mutex_unlock (&shared->lock);
  if (finished)
    return 0; /* its eventfd is pending: on_worker_done() reports it */
  worker_stop_watching (worker);
  if (worker->timeout_key != NULL)
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: the caller's descriptors gave no answer within %u s (%s=%u)", worker->what,
                 worker->timeout_sec, worker->timeout_key, worker->timeout_sec);
  else
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_IO, "%s: not done after %u s", worker->what,
                 worker->timeout_sec);
  worker->done (NULL, error, worker->user_data);
  return 0;
}

BmapdFdWorker *
bmapd_fd_worker_start (sd_event *event, const char *what, guint timeout_sec, BmapdFdWorkFunc func,
                       gpointer work, GDestroyNotify work_free, BmapdFdWorkDoneFunc done,
                       gpointer user_data, GError **error)
{
  return bmapd_fd_worker_start_full (event, what, timeout_sec, "RequestTimeoutSec", func, work,
                                     work_free, done, user_data, error);
}

BmapdFdWorker *
bmapd_fd_worker_start_full (sd_event *event, const char *what, guint timeout_sec,
                            const char *timeout_key, BmapdFdWorkFunc func, gpointer work,
                            GDestroyNotify work_free, BmapdFdWorkDoneFunc done, gpointer user_data,
                            GError **error)
{
  g_autoptr (BmapdFdWorker) worker = g_new0 (BmapdFdWorker, 1);
  WorkerShared *shared = g_new0 (WorkerShared, 1);
  g_autoptr (GError) thread_error = NULL;
  GThread *thread;
  int r;

  shared->ref_count = 1;
  g_mutex_init (&shared->lock);
  shared->cancellable = g_cancellable_new ();
  shared->func = func;
  shared->work = work;
  shared->work_free = work_free;
  shared->event_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  worker->shared = shared;
  worker->what = g_strdup (what);
  worker->timeout_key = g_strdup (timeout_key);
  worker->timeout_sec = timeout_sec;
  worker->done = done;
  worker->user_data = user_data;
  if (shared->event_fd < 0) {
    bmap_error_set_errno (error, errno, "%s: eventfd", what);
    return NULL;
  }
  r = sd_event_add_io (event, &worker->io_source, shared->event_fd, EPOLLIN, on_worker_done,
                       worker);
  if (r >= 0)
    r = sd_event_add_time_relative (event, &worker->timer_source, CLOCK_MONOTONIC,
                                    (guint64) timeout_sec * G_USEC_PER_SEC, 0, on_worker_timeout,
                                    worker);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "%s: watching the reader thread", what);
    return NULL;
  }
  g_atomic_int_inc (&shared->ref_count);
  thread = g_thread_try_new ("bmapd-reader", worker_thread, shared, &thread_error);
  if (thread == NULL) {
    g_atomic_int_dec_and_test (&shared->ref_count);
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: cannot start a thread: %s", what,
                 thread_error->message);
    return NULL;
  }
  /* Never joined: a thread stuck in a caller's file is left behind. */
  g_thread_unref (thread);
  return g_steal_pointer (&worker);
}

void
bmapd_fd_worker_free (BmapdFdWorker *worker)
{
  WorkerShared *shared;

  if (worker == NULL)
    return;
  worker_stop_watching (worker);
  shared = worker->shared;
  g_mutex_lock (&shared->lock);
  if (!shared->finished) {
    shared->abandoned = TRUE;
    g_cancellable_cancel (shared->cancellable);
  }
  g_mutex_unlock (&shared->lock);
  /* Not written any more: either finished or abandoned. */
  if (shared->event_fd >= 0)
    close (shared->event_fd);
  shared_unref (shared);
  g_free (worker->what);
  g_free (worker->timeout_key);
  g_free (worker);
}

BmapMap *
bmapd_fd_read_bmap (int fd, GCancellable *cancellable, GBytes **out_bytes, GError **error)
{
  g_autoptr (GBytes) bytes = NULL;
  BmapMap *map;
  gsize len = 0;
  const char *text;

  bytes = bmapd_fd_read_all (fd, BMAPD_MAX_BMAP_SIZE, "bmap", cancellable, error);
  if (bytes == NULL)
    return NULL;
  text = g_bytes_get_data (bytes, &len);
  map = bmap_map_load_data (text, len, "bmap", error);
  if (map != NULL && out_bytes != NULL)
    *out_bytes = g_steal_pointer (&bytes);
  return map;
}
