/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmapd-fd.h"
#include "bmapd-source.h"

struct _BmapdSource {
  char *name;
  int fd;             /* a pipe not read yet, -1 once it is a source */
  BmapSource *source; /* NULL until then */
};

BmapdSource *
bmapd_source_new (int fd, const char *name, GError **error)
{
  g_autoptr (BmapdSource) source = g_new0 (BmapdSource, 1);
  struct stat st;

  source->name = g_strdup (name);
  source->fd = fd;
  if (!bmapd_fd_check_type (fd, name, FALSE, &st, error))
    return NULL;
  if (S_ISREG (st.st_mode)) {
    /* Taken by the libbmap source, even on failure. */
    source->fd = -1;
    source->source = bmap_source_new (fd, TRUE, name, error);
    if (source->source == NULL)
      return NULL;
  }
  return g_steal_pointer (&source);
}

void
bmapd_source_free (BmapdSource *source)
{
  if (source == NULL)
    return;
  if (source->fd >= 0)
    close (source->fd);
  g_clear_pointer (&source->source, bmap_source_free);
  g_free (source->name);
  g_free (source);
}

gboolean
bmapd_source_is_seekable (BmapdSource *source)
{
  return source->source != NULL && bmap_source_is_seekable (source->source);
}

guint64
bmapd_source_get_size (BmapdSource *source)
{
  return bmapd_source_is_seekable (source) ? bmap_source_get_size (source->source) : 0;
}

BmapSource *
bmapd_source_open (BmapdSource *source, GCancellable *cancellable, GError **error)
{
  if (source->source != NULL)
    return source->source;
  if (source->fd < 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE, "%s: could not be opened before",
                 source->name);
    return NULL;
  }
  /* The writer may not have started: wait here, where Cancel can
   * interrupt the wait. */
  if (!bmapd_fd_wait_readable (source->fd, source->name, cancellable, error))
    return NULL;
  /* The cancellable from the first read on: a writer that sends a few
   * bytes and stops does not block Cancel. */
  source->source
      = bmap_source_new_full (g_steal_fd (&source->fd), TRUE, source->name, cancellable, error);
  return source->source;
}
