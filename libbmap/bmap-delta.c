/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "bmap-delta.h"
#include "bmap-error.h"
#include "bmap-io.h"

/* Reads go through O_DIRECT (bmap_open_uncached): 4096 aligns them on
 * every device in use. Blocks compared are as small as a card's pages
 * get, so that an image that changed in a few places writes little. */
#define DELTA_ALIGN ((guint64) 4096)
#define DELTA_BLOCK ((guint64) 4096)

struct _BmapDelta {
  BmapTarget *target;
  int rfd;
  guint8 *buf;
  gsize buf_size;
};

BmapDelta *
bmap_delta_new (BmapTarget *target, GError **error)
{
  g_autoptr (BmapDelta) delta = g_new0 (BmapDelta, 1);

  delta->target = target;
  delta->rfd
      = bmap_open_uncached (bmap_target_get_fd (target), bmap_target_get_name (target), error);
  if (delta->rfd < 0)
    return NULL;
  return g_steal_pointer (&delta);
}

void
bmap_delta_free (BmapDelta *delta)
{
  if (delta == NULL)
    return;
  if (delta->rfd >= 0)
    close (delta->rfd);
  free (delta->buf);
  g_free (delta);
}

static void
ensure_buffer (BmapDelta *delta, gsize size)
{
  if (delta->buf_size >= size)
    return;
  free (delta->buf);
  delta->buf = NULL;
  if (posix_memalign ((void **) &delta->buf, DELTA_ALIGN, size) != 0)
    g_error ("out of memory allocating the compare buffer");
  delta->buf_size = size;
}

/* Whether the block at @pos of the data differs from what the target has:
 * @have bytes of @old are the target's. */
static gboolean
block_differs (const guint8 *data, const guint8 *old, gsize have, gsize pos, gsize n)
{
  return pos + n > have || memcmp (data + pos, old + pos, n) != 0;
}

gboolean
bmap_delta_write (BmapDelta *delta, guint64 offset, const guint8 *data, gsize len, guint64 *written,
                  GError **error)
{
  guint64 aligned = offset - offset % DELTA_ALIGN;
  gsize skip = (gsize) (offset - aligned);
  gsize rlen = (gsize) (((skip + len + DELTA_ALIGN - 1) / DELTA_ALIGN) * DELTA_ALIGN);
  const guint8 *old;
  gsize got = 0;
  gsize have;
  gsize pos = 0;

  ensure_buffer (delta, rlen);
  if (!bmap_pread_full (delta->rfd, delta->buf, rlen, aligned, bmap_target_get_name (delta->target),
                        &got, error))
    return FALSE;
  old = delta->buf + skip;
  have = got > skip ? MIN (got - skip, len) : 0;

  while (pos < len) {
    gsize run_start;

    /* Blocks in place are skipped, runs of differing blocks written whole. */
    while (pos < len) {
      gsize n = (gsize) MIN (DELTA_BLOCK - (offset + pos) % DELTA_BLOCK, (guint64) (len - pos));

      if (block_differs (data, old, have, pos, n))
        break;
      pos += n;
    }
    run_start = pos;
    while (pos < len) {
      gsize n = (gsize) MIN (DELTA_BLOCK - (offset + pos) % DELTA_BLOCK, (guint64) (len - pos));

      if (!block_differs (data, old, have, pos, n))
        break;
      pos += n;
    }
    if (pos > run_start) {
      if (!bmap_target_write (delta->target, offset + run_start, data + run_start, pos - run_start,
                              error))
        return FALSE;
      *written += pos - run_start;
    }
  }
  return TRUE;
}
