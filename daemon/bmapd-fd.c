/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmapd-fd.h"
#include "bmapd-sd.h"

/* How long a caller may take to write a bmap into a pipe. */
#define READER_TIMEOUT_USEC (60 * G_USEC_PER_SEC)

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
bmapd_fd_check (int fd, const char *what, BmapdFdMode mode, gboolean regular_only, struct stat *st,
                GError **error)
{
  struct stat local_st;
  int flags, accmode, dup_fd;

  if (st == NULL)
    st = &local_st;
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
  if (fstat (fd, st) < 0) {
    bmap_error_set_errno (error, errno, "%s: fstat", what);
    return -1;
  }
  if (!S_ISREG (st->st_mode) && (regular_only || !S_ISFIFO (st->st_mode))) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: the file descriptor is %s; expected a regular file%s", what,
                 describe_mode (st->st_mode), regular_only ? "" : " or a pipe");
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

struct _BmapdFdReader {
  sd_event_source *io_source;
  sd_event_source *timer_source;
  GByteArray *data;
  gsize limit;
  char *what;
  BmapdFdReadFunc func;
  gpointer user_data;
};

static void
reader_finish (BmapdFdReader *reader, GError *error)
{
  g_autoptr (GBytes) bytes = NULL;

  sd_event_source_set_enabled (reader->io_source, SD_EVENT_OFF);
  sd_event_source_set_enabled (reader->timer_source, SD_EVENT_OFF);
  if (error == NULL)
    bytes = g_byte_array_free_to_bytes (g_steal_pointer (&reader->data));
  /* The callback may free the reader. */
  reader->func (bytes, error, reader->user_data);
}

static int
on_readable (sd_event_source *source, int fd, uint32_t revents, void *user_data)
{
  BmapdFdReader *reader = user_data;
  guint8 buf[65536];
  g_autoptr (GError) error = NULL;
  ssize_t n;

  /* One read per wakeup never blocks, even on a blocking descriptor. */
  n = read (fd, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN))
    return 0;
  if (n < 0) {
    bmap_error_set_errno (&error, errno, "%s: read", reader->what);
    reader_finish (reader, error);
    return 0;
  }
  if (n == 0) {
    reader_finish (reader, NULL);
    return 0;
  }
  g_byte_array_append (reader->data, buf, (guint) n);
  if (reader->data->len > reader->limit) {
    set_too_large (&error, reader->what, reader->data->len, reader->limit);
    reader_finish (reader, error);
  }
  return 0;
}

static int
on_timeout (sd_event_source *source, uint64_t usec, void *user_data)
{
  BmapdFdReader *reader = user_data;
  g_autoptr (GError) error = NULL;

  g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
               "%s: the pipe was not closed within %d s (%u bytes read)", reader->what,
               (int) (READER_TIMEOUT_USEC / G_USEC_PER_SEC), reader->data->len);
  reader_finish (reader, error);
  return 0;
}

BmapdFdReader *
bmapd_fd_reader_new (sd_event *event, int fd, gsize limit, const char *what, BmapdFdReadFunc func,
                     gpointer user_data, GError **error)
{
  g_autoptr (BmapdFdReader) reader = g_new0 (BmapdFdReader, 1);
  int r;

  reader->data = g_byte_array_new ();
  reader->limit = limit;
  reader->what = g_strdup (what);
  reader->func = func;
  reader->user_data = user_data;
  r = sd_event_add_io (event, &reader->io_source, fd, EPOLLIN, on_readable, reader);
  if (r >= 0)
    r = sd_event_add_time_relative (event, &reader->timer_source, CLOCK_MONOTONIC,
                                    READER_TIMEOUT_USEC, 0, on_timeout, reader);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "%s: watching the pipe", what);
    return NULL;
  }
  return g_steal_pointer (&reader);
}

void
bmapd_fd_reader_free (BmapdFdReader *reader)
{
  if (reader == NULL)
    return;
  sd_event_source_disable_unref (reader->io_source);
  sd_event_source_disable_unref (reader->timer_source);
  if (reader->data != NULL)
    g_byte_array_unref (reader->data);
  g_free (reader->what);
  g_free (reader);
}
