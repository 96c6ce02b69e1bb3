/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmapd-image.h"
#include "bmapd-log.h"

/* The feeder reads this much at a time, and asks for a pipe this large
 * (the most an unprivileged process gets by default). */
#define FEED_CHUNK (1024 * 1024)

struct _BmapdImage {
  int fd;
  char *name;
  struct stat st;
  off_t start;
  gboolean seekable;
  guint64 size;
  BmapCompression compression;
  gboolean reopen_refused_logged;
};

typedef struct {
  int in_fd;
  int out_fd;
  off_t offset;
  char *name;
} Feeder;

BmapdImage *
bmapd_image_new (int fd, const char *name, GError **error)
{
  g_autoptr (BmapdImage) image = g_new0 (BmapdImage, 1);
  g_autoptr (BmapSource) source = NULL;
  int sniff_fd;

  image->fd = fd;
  image->name = g_strdup (name);
  if (fstat (fd, &image->st) < 0) {
    bmap_error_set_errno (error, errno, "%s: fstat", name);
    return NULL;
  }
  if (!S_ISREG (image->st.st_mode)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: an auto-flash image must be a regular file: a rule reads it again for "
                 "every card",
                 name);
    return NULL;
  }
  image->start = lseek (fd, 0, SEEK_CUR);
  if (image->start < 0) {
    bmap_error_set_errno (error, errno, "%s: lseek", name);
    return NULL;
  }
  sniff_fd = fcntl (fd, F_DUPFD_CLOEXEC, 3);
  if (sniff_fd < 0) {
    bmap_error_set_errno (error, errno, "%s: dup", name);
    return NULL;
  }
  /* Reads the first bytes through the shared offset: put it back after. */
  source = bmap_source_new (sniff_fd, TRUE, name, error);
  if (lseek (fd, image->start, SEEK_SET) < 0 && source != NULL) {
    bmap_error_set_errno (error, errno, "%s: lseek", name);
    return NULL;
  }
  if (source == NULL)
    return NULL;
  image->seekable = bmap_source_is_seekable (source);
  image->size = bmap_source_get_size (source);
  image->compression = bmap_source_get_compression (source);
  return g_steal_pointer (&image);
}

void
bmapd_image_free (BmapdImage *image)
{
  if (image == NULL)
    return;
  if (image->fd >= 0)
    close (image->fd);
  g_free (image->name);
  g_free (image);
}

BmapdImage *
bmapd_image_copy (BmapdImage *image, GError **error)
{
  g_autoptr (BmapdImage) copy = g_memdup2 (image, sizeof (*image));

  copy->name = g_strdup (image->name);
  copy->fd = fcntl (image->fd, F_DUPFD_CLOEXEC, 3);
  if (copy->fd < 0) {
    bmap_error_set_errno (error, errno, "%s: dup", image->name);
    return NULL;
  }
  return g_steal_pointer (&copy);
}

gboolean
bmapd_image_is_seekable (BmapdImage *image)
{
  return image->seekable;
}

guint64
bmapd_image_get_size (BmapdImage *image)
{
  return image->size;
}

BmapCompression
bmapd_image_get_compression (BmapdImage *image)
{
  return image->compression;
}

static gboolean
write_all (int fd, const guint8 *buf, gsize len)
{
  while (len > 0) {
    ssize_t n = write (fd, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return FALSE;
    buf += n;
    len -= (gsize) n;
  }
  return TRUE;
}

static gpointer
feeder_main (gpointer data)
{
  Feeder *feeder = data;
  g_autofree guint8 *buf = g_malloc (FEED_CHUNK);

  /* A job that ends (canceled, or bmapd stopping) closes its end of the
   * pipe: write() then fails with EPIPE (bmapd ignores SIGPIPE) and the
   * thread ends. The image is a regular file: pread() does not wait. */
  for (;;) {
    ssize_t n = pread (feeder->in_fd, buf, FEED_CHUNK, feeder->offset);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      /* The job sees a truncated image and fails with BadImage. */
      bmapd_log (LOG_WARNING, "%s: read error at byte %" G_GINT64_FORMAT ": %s", feeder->name,
                 (gint64) feeder->offset, g_strerror (errno));
      break;
    }
    if (n == 0 || !write_all (feeder->out_fd, buf, (gsize) n))
      break;
    feeder->offset += n;
  }
  close (feeder->in_fd);
  close (feeder->out_fd);
  g_free (feeder->name);
  g_free (feeder);
  return NULL;
}

static int
start_feeder (BmapdImage *image, GError **error)
{
  g_autoptr (GError) thread_error = NULL;
  Feeder *feeder;
  GThread *thread;
  int fds[2];

  if (pipe2 (fds, O_CLOEXEC) < 0) {
    bmap_error_set_errno (error, errno, "%s: pipe", image->name);
    return -1;
  }
  (void) fcntl (fds[1], F_SETPIPE_SZ, FEED_CHUNK);
  feeder = g_new0 (Feeder, 1);
  feeder->out_fd = fds[1];
  feeder->offset = image->start;
  feeder->name = g_strdup (image->name);
  /* pread() does not use the offset: a duplicate is as good as a reopen. */
  feeder->in_fd = fcntl (image->fd, F_DUPFD_CLOEXEC, 3);
  if (feeder->in_fd < 0) {
    bmap_error_set_errno (error, errno, "%s: dup", image->name);
    close (fds[0]);
    close (fds[1]);
    g_free (feeder->name);
    g_free (feeder);
    return -1;
  }
  thread = g_thread_try_new ("bmapd-feed", feeder_main, feeder, &thread_error);
  if (thread == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: cannot start a thread to read it: %s",
                 image->name, thread_error->message);
    close (feeder->in_fd);
    close (fds[0]);
    close (fds[1]);
    g_free (feeder->name);
    g_free (feeder);
    return -1;
  }
  /* It ends by itself at the end of the image or when the job closes the
   * pipe. */
  g_thread_unref (thread);
  return fds[0];
}

int
bmapd_image_open_reader (BmapdImage *image, GError **error)
{
  g_autofree char *proc_path = g_strdup_printf ("/proc/self/fd/%d", image->fd);
  int saved_errno;
  int fd;

  fd = open (proc_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd >= 0) {
    struct stat st;

    if (fstat (fd, &st) == 0 && st.st_dev == image->st.st_dev && st.st_ino == image->st.st_ino
        && lseek (fd, image->start, SEEK_SET) == image->start)
      return fd;
    close (fd);
    errno = ESTALE;
  }
  saved_errno = errno;
  if (!image->reopen_refused_logged) {
    bmapd_log (LOG_DEBUG, "%s: cannot open it again (%s): %s", image->name,
               g_strerror (saved_errno),
               image->seekable ? "jobs share its descriptor" : "a thread feeds each job");
    image->reopen_refused_logged = TRUE;
  }
  if (!image->seekable)
    return start_feeder (image, error);
  fd = fcntl (image->fd, F_DUPFD_CLOEXEC, 3);
  if (fd < 0)
    bmap_error_set_errno (error, errno, "%s: dup", image->name);
  return fd;
}
