/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: the tar and zip layer (libbmap/bmap-archive.c and the
 * libarchive readers behind it), fed decoded bytes as BmapSource feeds it.
 *
 * Input: one control byte, then the archive. Bit 0 picks zip over tar (the
 * sniff is skipped, so any bytes reach the reader); bit 1 runs the sniff
 * first and goes on only when it agrees; bits 4-7 pick how many bytes each
 * pull hands over, from 1 up, so that headers are split at every place.
 * The member's output is capped. Every failure must be one of the errors
 * an archive can give, with a message. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bmap-archive.h"
#include "bmap-error.h"
#include "fuzz-common.h"

#define OUTPUT_CAP (4 * 1024 * 1024)

static const gsize pull_sizes[16] = {
  1, 2, 3, 7, 100, 511, 512, 513, 4096, 10240, 65536, 65537, 262144, 1 << 20, 5, 1000,
};

typedef struct {
  const guint8 *data;
  gsize len;
  gsize pos;
  gsize pull;
} Feed;

static gssize
feed_read (gpointer user_data, guint8 *buf, gsize len, GError **error)
{
  Feed *feed = user_data;
  gsize n = MIN (MIN (len, feed->pull), feed->len - feed->pos);

  memcpy (buf, feed->data + feed->pos, n);
  feed->pos += n;
  return (gssize) n;
}

/* What an archive may fail with. */
#define ARCHIVE_ERRORS                                                                             \
  (FUZZ_ERROR (BMAP_ERROR_BAD_IMAGE) | FUZZ_ERROR (BMAP_ERROR_LIMIT)                               \
   | FUZZ_ERROR (BMAP_ERROR_UNSUPPORTED))

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapArchive) archive = NULL;
  g_autofree guint8 *buf = NULL;
  BmapContainer container;
  Feed feed;
  gsize total = 0;
  guint64 member_size;

  if (size < 1)
    return 0;
  feed = (Feed){ data + 1, size - 1, 0, pull_sizes[data[0] >> 4] };
  container = (data[0] & 1) ? BMAP_CONTAINER_ZIP : BMAP_CONTAINER_TAR;

  if (data[0] & 2) {
    BmapContainer found;

    if (!bmap_archive_sniff (feed.data, feed.len, "fuzz", &found, &error)) {
      fuzz_check_input_error (error, "sniff", ARCHIVE_ERRORS);
      return 0;
    }
    if (found != container)
      return 0;
  }

  archive = bmap_archive_new (container, "fuzz", feed_read, &feed, &error);
  if (archive == NULL) {
    fuzz_check_input_error (error, "open", ARCHIVE_ERRORS);
    return 0;
  }
  if (bmap_archive_get_member (archive) == NULL)
    fuzz_die ("open", "no member name");
  member_size = bmap_archive_get_member_size (archive);

  buf = g_malloc (65536);
  for (;;) {
    gssize n = bmap_archive_read (archive, buf, 65536, &error);

    if (n < 0) {
      fuzz_check_input_error (error, "read", ARCHIVE_ERRORS);
      return 0;
    }
    if (error != NULL)
      fuzz_die ("read", "an error with a count");
    if (n == 0)
      break;
    total += (gsize) n;
    if (member_size > 0 && total > member_size)
      fuzz_die ("read", "more bytes than the member's size");
    if (total > OUTPUT_CAP)
      return 0;
  }
  /* A member that ends cleanly has the size its header gave. */
  if (member_size > 0 && total != member_size)
    fuzz_die ("read", "fewer bytes than the member's size without an error");
  return 0;
}
