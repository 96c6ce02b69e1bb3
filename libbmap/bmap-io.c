/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-io.h"

gboolean
bmap_pread_full (int fd, void *buf, gsize len, guint64 offset, const char *name, gsize *got,
                 GError **error)
{
  gsize done = 0;

  *got = 0;
  while (done < len) {
    ssize_t n = pread (fd, (guint8 *) buf + done, len - done, (off_t) (offset + done));

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      bmap_error_set_errno (error, errno, "%s%sread error at byte %" G_GUINT64_FORMAT,
                            name != NULL ? name : "", name != NULL ? ": " : "", offset + done);
      return FALSE;
    }
    if (n == 0)
      break;
    done += (gsize) n;
  }
  *got = done;
  return TRUE;
}

int
bmap_open_uncached (int fd, const char *name, GError **error)
{
  g_autofree char *proc = g_strdup_printf ("/proc/self/fd/%d", fd);
  int rfd = open (proc, O_RDONLY | O_DIRECT | O_CLOEXEC | O_NOCTTY);

  if (rfd >= 0)
    return rfd;
  rfd = open (proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (rfd < 0) {
    bmap_error_set_errno (error, errno, "%s: cannot reopen for reading back", name);
    return -1;
  }
  fdatasync (fd);
  posix_fadvise (rfd, 0, 0, POSIX_FADV_DONTNEED);
  return rfd;
}
