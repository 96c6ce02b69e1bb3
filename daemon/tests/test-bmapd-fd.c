/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmapd-fd.h"
#include "bmapd-limits.h"
#include "bmapd-sd.h"

/* A pipe is read to its end; beyond the limit is Limit. */
static void
test_read_pipe (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) bytes = NULL;
  int fds[2];

  g_assert_no_errno (pipe2 (fds, O_CLOEXEC));
  g_assert_cmpint (write (fds[1], "<bmap/>", 7), ==, 7);
  close (fds[1]);
  bytes = bmapd_fd_read_pipe (fds[0], 64, "bmap", NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), "<bmap/>", 7);
  close (fds[0]);

  g_assert_no_errno (pipe2 (fds, O_CLOEXEC));
  g_assert_cmpint (write (fds[1], "0123456789", 10), ==, 10);
  close (fds[1]);
  g_assert_null (bmapd_fd_read_pipe (fds[0], 4, "bmap", NULL, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT);
  close (fds[0]);
}

typedef struct {
  int fd;
  GCancellable *cancellable;
  GError *error;
  GBytes *bytes;
  gint returned;
} ReadData;

static gpointer
read_thread (gpointer data)
{
  ReadData *rd = data;
  rd->bytes = bmapd_fd_read_pipe (rd->fd, 1024 * 1024, "bmap", rd->cancellable, &rd->error);
  g_atomic_int_set (&rd->returned, 1);
  return NULL;
}

/* A writer that never closes: the read stops when cancelled, with what
 * the caller's thief took back meanwhile going unnoticed (EAGAIN on the
 * reader's own non-blocking description). */
static void
test_read_pipe_cancelled (void)
{
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  ReadData rd = { .cancellable = cancellable };
  g_autofree char *proc_path = NULL;
  GThread *thread;
  int fds[2], thief;
  char c;

  g_assert_no_errno (pipe2 (fds, O_CLOEXEC));
  rd.fd = fds[0];
  proc_path = g_strdup_printf ("/proc/self/fd/%d", fds[0]);
  thief = open (proc_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  g_assert_cmpint (thief, >=, 0);
  thread = g_thread_new ("reader", read_thread, &rd);
  for (guint i = 0; i < 1000; i++) {
    g_assert_cmpint (write (fds[1], "<", 1), ==, 1);
    if (read (thief, &c, 1) < 0)
      g_assert_cmpint (errno, ==, EAGAIN);
  }
  g_cancellable_cancel (cancellable);
  /* A reader stuck in read() would not see the cancellation. */
  for (guint i = 0; i < 500 && !g_atomic_int_get (&rd.returned); i++)
    g_usleep (10000);
  if (!g_atomic_int_get (&rd.returned))
    g_assert_cmpint (write (fds[1], "!", 1), ==, 1); /* to end the thread */
  g_thread_join (thread);
  g_assert_cmpint (rd.returned, ==, 1);
  g_assert_null (rd.bytes);
  g_assert_error (rd.error, BMAP_ERROR, BMAP_ERROR_CANCELLED);
  g_clear_error (&rd.error);
  close (thief);
  close (fds[0]);
  close (fds[1]);
}

typedef struct {
  int fd;
  BmapdLimitsTicket *ticket;
  gboolean done;
  char byte;
} Work;

static void
work_free (Work *work)
{
  bmapd_limits_ticket_unref (work->ticket);
  g_free (work);
}

/* Ignores @cancellable: like a read of a FUSE file that never answers. */
static gboolean
work_run (gpointer data, GCancellable *cancellable, GError **error)
{
  Work *work = data;

  if (read (work->fd, &work->byte, 1) != 1) {
    g_set_error_literal (error, BMAP_ERROR, BMAP_ERROR_IO, "no byte");
    return FALSE;
  }
  return TRUE;
}

typedef struct {
  sd_event *event;
  GError *error;
  gboolean got_work;
  char byte;
} DoneData;

static void
on_done (gpointer data, const GError *error, gpointer user_data)
{
  DoneData *dd = user_data;
  Work *work = data;

  dd->got_work = work != NULL;
  if (work != NULL)
    dd->byte = work->byte;
  if (error != NULL)
    dd->error = g_error_copy (error);
  sd_event_exit (dd->event, 0);
}

/* The work finishes: its result reaches the loop. */
static void
test_worker_done (void)
{
  g_autoptr (sd_event) event = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapdFdWorker) worker = NULL;
  DoneData dd = { 0 };
  Work *work = g_new0 (Work, 1);
  int fds[2];

  g_assert_cmpint (sd_event_new (&event), >=, 0);
  dd.event = event;
  g_assert_no_errno (pipe2 (fds, O_CLOEXEC));
  g_assert_cmpint (write (fds[1], "x", 1), ==, 1);
  work->fd = fds[0];
  worker = bmapd_fd_worker_start (event, "reading", 60, work_run, work, (GDestroyNotify) work_free,
                                  on_done, &dd, &error);
  g_assert_no_error (error);
  g_assert_cmpint (sd_event_loop (event), ==, 0);
  g_assert_no_error (dd.error);
  g_assert_true (dd.got_work);
  g_assert_cmpint (dd.byte, ==, 'x');
  g_clear_pointer (&worker, bmapd_fd_worker_free);
  close (fds[0]);
  close (fds[1]);
}

/* A thread stuck past the deadline: the loop hears of the timeout, and the
 * caller's place (a ticket the work holds) stays taken until the thread
 * comes back. */
static void
test_worker_deadline (void)
{
  g_autoptr (sd_event) event = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapdLimits) limits = bmapd_limits_new ();
  BmapdFdWorker *worker;
  DoneData dd = { 0 };
  Work *work = g_new0 (Work, 1);
  int fds[2];

  g_assert_cmpint (sd_event_new (&event), >=, 0);
  dd.event = event;
  g_assert_no_errno (pipe2 (fds, O_CLOEXEC));
  work->fd = fds[0];
  work->ticket = bmapd_limits_take (limits, BMAPD_LIMIT_REQUESTS, 65534, NULL);
  worker = bmapd_fd_worker_start (event, "reading the bmap", 1, work_run, work,
                                  (GDestroyNotify) work_free, on_done, &dd, &error);
  g_assert_no_error (error);
  g_assert_cmpint (sd_event_loop (event), ==, 0);
  g_assert_false (dd.got_work);
  g_assert_error (dd.error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (dd.error->message, "RequestTimeoutSec=1"));
  g_assert_nonnull (strstr (dd.error->message, "reading the bmap"));
  g_clear_error (&dd.error);
  bmapd_fd_worker_free (worker);
  /* Abandoned, still stuck: the place is still taken. */
  g_assert_cmpuint (bmapd_limits_count (limits, BMAPD_LIMIT_REQUESTS, 65534), ==, 1);
  /* Unstuck, it frees its work on its own. */
  g_assert_cmpint (write (fds[1], "x", 1), ==, 1);
  for (guint i = 0; i < 1000 && bmapd_limits_count (limits, BMAPD_LIMIT_REQUESTS, 65534) > 0; i++)
    g_usleep (10000);
  g_assert_cmpuint (bmapd_limits_count (limits, BMAPD_LIMIT_REQUESTS, 65534), ==, 0);
  close (fds[0]);
  close (fds[1]);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/bmapd/fd/read-pipe", test_read_pipe);
  g_test_add_func ("/bmapd/fd/read-pipe-cancelled", test_read_pipe_cancelled);
  g_test_add_func ("/bmapd/fd/worker-done", test_worker_done);
  g_test_add_func ("/bmapd/fd/worker-deadline", test_worker_deadline);
  return g_test_run ();
}
