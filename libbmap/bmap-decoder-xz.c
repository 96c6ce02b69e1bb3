/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <lzma.h>
#include <unistd.h>

#include "bmap-decoder.h"
#include "bmap-error.h"
#include "bmap-xz-blocks.h"

/* A regular file with a valid index is decoded block by block
 * (bmap-xz-blocks.c): in parallel, and skipping blocks the bmap does not
 * need. Pipes, and files whose index is broken (which this decoder then
 * reports), go through liblzma's stream decoder: its threads decode blocks
 * in parallel while their buffers fit in this, and past it liblzma goes on
 * single-threaded instead of failing. A thread needs a whole block's
 * output (24 MiB for xz -6) plus the dictionary, so files made with the
 * default block size decode in one thread there: the price of keeping a
 * copy under 64 MiB. */
#define XZ_MEMLIMIT_THREADING ((guint64) 32 * 1024 * 1024)

typedef struct {
  BmapInput *in;
  BmapXzBlocks *blocks; /* NULL: the stream decoder */
  lzma_stream strm;
  gboolean done;
} XzDecoder;

static const char *
xz_strerror (lzma_ret ret)
{
  switch (ret) {
    case LZMA_FORMAT_ERROR:
      return "not an xz stream (LZMA_FORMAT_ERROR)";
    case LZMA_OPTIONS_ERROR:
      return "unsupported options (LZMA_OPTIONS_ERROR)";
    case LZMA_DATA_ERROR:
      return "compressed data is corrupt (LZMA_DATA_ERROR)";
    case LZMA_BUF_ERROR:
      return "unexpected end of input (LZMA_BUF_ERROR)";
    case LZMA_PROG_ERROR:
      return "internal error (LZMA_PROG_ERROR)";
    default:
      return "decoding failed";
  }
}

static void
xz_free (gpointer self)
{
  XzDecoder *dec = self;

  bmap_xz_blocks_free (dec->blocks);
  lzma_end (&dec->strm);
  g_free (dec);
}

static gpointer
xz_new (BmapInput *in, GError **error)
{
  XzDecoder *dec = g_new0 (XzDecoder, 1);
  lzma_mt mt = {
    /* Every stream of a concatenation, stream padding included. */
    .flags = LZMA_CONCATENATED,
    .threads = MAX (lzma_cputhreads (), 1),
    .timeout = 0,
    .memlimit_threading = XZ_MEMLIMIT_THREADING,
    .memlimit_stop = UINT64_MAX,
  };
  lzma_ret ret;

  dec->in = in;
  dec->strm = (lzma_stream) LZMA_STREAM_INIT;
  /* Only when the xz data is the whole file: what the sniff read from it
   * started at offset 0. */
  if (!in->can_block && lseek (in->fd, 0, SEEK_CUR) == (off_t) in->bytes_in) {
    dec->blocks = bmap_xz_blocks_new (in->fd, in->name);
    if (dec->blocks != NULL)
      return dec;
  }
  ret = lzma_stream_decoder_mt (&dec->strm, &mt);
  if (ret != LZMA_OK) {
    g_set_error (error, BMAP_ERROR, ret == LZMA_MEM_ERROR ? BMAP_ERROR_LIMIT : BMAP_ERROR_IO,
                 "%s: cannot set up the xz decoder (error %d)", in->name, (int) ret);
    xz_free (dec);
    return NULL;
  }
  return dec;
}

static gssize
xz_read (gpointer self, guint8 *buf, gsize len, GError **error)
{
  XzDecoder *dec = self;
  BmapInput *in = dec->in;
  lzma_stream *strm = &dec->strm;

  if (dec->blocks != NULL) {
    gssize n = bmap_xz_blocks_read (dec->blocks, buf, len, error);

    if (n == 0)
      in->bytes_in = bmap_xz_blocks_get_file_size (dec->blocks);
    return n;
  }

  strm->next_out = buf;
  strm->avail_out = len;
  while (strm->avail_out > 0 && !dec->done) {
    gsize avail;
    lzma_ret ret;

    if (!bmap_input_fill (in, error))
      return -1;
    avail = bmap_input_avail (in);
    strm->next_in = bmap_input_data (in);
    strm->avail_in = avail;
    /* With LZMA_CONCATENATED, LZMA_FINISH is how liblzma learns that no
     * other stream follows. */
    ret = lzma_code (strm, in->eof ? LZMA_FINISH : LZMA_RUN);
    if (!bmap_input_consume_reported (in, avail, strm->avail_in, "xz", error))
      return -1;
    switch (ret) {
      case LZMA_OK:
        break;
      case LZMA_STREAM_END:
        dec->done = TRUE;
        break;
      case LZMA_BUF_ERROR:
        /* No progress twice in a row with LZMA_FINISH: the data stops. */
        bmap_input_set_truncated (in, "xz", error);
        return -1;
      case LZMA_MEM_ERROR:
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT, "%s: out of memory decoding xz data",
                     in->name);
        return -1;
      default:
        bmap_input_set_corrupt (in, "xz", xz_strerror (ret), error);
        return -1;
    }
  }
  return (gssize) (len - strm->avail_out);
}

static gboolean
xz_set_wanted (gpointer self, const BmapMap *map)
{
  XzDecoder *dec = self;

  if (dec->blocks == NULL)
    return FALSE;
  bmap_xz_blocks_set_wanted (dec->blocks, map);
  return TRUE;
}

static gssize
xz_skip (gpointer self, guint64 len, GError **error)
{
  XzDecoder *dec = self;

  return bmap_xz_blocks_skip (dec->blocks, len, error);
}

const BmapDecoderVTable bmap_decoder_xz = {
  .compression = BMAP_COMPRESSION_XZ,
  .name = "xz",
  .new = xz_new,
  .read = xz_read,
  .set_wanted = xz_set_wanted,
  .skip = xz_skip,
  .free = xz_free,
};
