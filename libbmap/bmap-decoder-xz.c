/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <lzma.h>

#include "bmap-decoder.h"
#include "bmap-error.h"

/* Threads decode blocks in parallel while their buffers fit in this; past
 * it liblzma goes on single-threaded instead of failing. A thread needs a
 * whole block's output (24 MiB for xz -6) plus the dictionary, so files
 * made with the default block size decode in one thread: the price of
 * keeping a copy under 64 MiB (measured: 46-54 MiB peak RSS; 70+ MiB with
 * two threads). Files with smaller blocks still decode in parallel. */
#define XZ_MEMLIMIT_THREADING ((guint64) 32 * 1024 * 1024)

typedef struct {
  BmapInput *in;
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
    bmap_input_consume (in, avail - strm->avail_in);
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

const BmapDecoderVTable bmap_decoder_xz = {
  .compression = BMAP_COMPRESSION_XZ,
  .name = "xz",
  .new = xz_new,
  .read = xz_read,
  .free = xz_free,
};
