/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <bzlib.h>
#include <string.h>

#include "bmap-decoder.h"
#include "bmap-error.h"

typedef struct {
  BmapInput *in;
  bz_stream strm;
  gboolean in_stream; /* BZ2_bzDecompressInit done, end not yet seen */
  gboolean done;
} Bzip2Decoder;

static const char *
bzip2_strerror (int ret)
{
  switch (ret) {
    case BZ_DATA_ERROR:
      return "CRC or structure check failed (BZ_DATA_ERROR)";
    case BZ_DATA_ERROR_MAGIC:
      return "bad stream header (BZ_DATA_ERROR_MAGIC)";
    case BZ_PARAM_ERROR:
      return "bad parameters (BZ_PARAM_ERROR)";
    default:
      return "decoding failed";
  }
}

static void
end_stream (Bzip2Decoder *dec)
{
  if (dec->in_stream) {
    BZ2_bzDecompressEnd (&dec->strm);
    dec->in_stream = FALSE;
  }
}

static gboolean
start_stream (Bzip2Decoder *dec, GError **error)
{
  int ret;

  memset (&dec->strm, 0, sizeof (dec->strm));
  ret = BZ2_bzDecompressInit (&dec->strm, 0, 0);
  if (ret != BZ_OK) {
    g_set_error (error, BMAP_ERROR, ret == BZ_MEM_ERROR ? BMAP_ERROR_LIMIT : BMAP_ERROR_IO,
                 "%s: cannot set up the bzip2 decoder (error %d)", dec->in->name, ret);
    return FALSE;
  }
  dec->in_stream = TRUE;
  return TRUE;
}

static void
bzip2_free (gpointer self)
{
  Bzip2Decoder *dec = self;

  end_stream (dec);
  g_free (dec);
}

static gpointer
bzip2_new (BmapInput *in, GError **error)
{
  Bzip2Decoder *dec = g_new0 (Bzip2Decoder, 1);

  dec->in = in;
  if (!start_stream (dec, error)) {
    bzip2_free (dec);
    return NULL;
  }
  return dec;
}

/* After a stream: another one (pbzip2 writes many, cat joins files), zero
 * padding up to the end, or the end. */
static gboolean
next_stream (Bzip2Decoder *dec, GError **error)
{
  BmapInput *in = dec->in;

  if (!bmap_input_ensure (in, 1, error))
    return FALSE;
  if (bmap_input_avail (in) == 0) {
    dec->done = TRUE;
    return TRUE;
  }
  if (bmap_input_data (in)[0] == 'B')
    return start_stream (dec, error);
  if (!bmap_input_skip_zero_padding (in, "bzip2", error))
    return FALSE;
  dec->done = TRUE;
  return TRUE;
}

static gssize
bzip2_read (gpointer self, guint8 *buf, gsize len, GError **error)
{
  Bzip2Decoder *dec = self;
  BmapInput *in = dec->in;
  gsize done = 0;

  while (done < len && !dec->done) {
    bz_stream *strm = &dec->strm;
    gsize avail, out_len, consumed, produced;
    int ret;

    if (!dec->in_stream) {
      if (!next_stream (dec, error))
        return -1;
      continue;
    }
    if (!bmap_input_fill (in, error))
      return -1;
    /* bz_stream counts in unsigned int. */
    avail = MIN (bmap_input_avail (in), G_MAXUINT);
    out_len = MIN (len - done, 1u << 30);
    strm->next_in = (char *) bmap_input_data (in);
    strm->avail_in = (unsigned int) avail;
    strm->next_out = (char *) buf + done;
    strm->avail_out = (unsigned int) out_len;
    ret = BZ2_bzDecompress (strm);
    if (ret != BZ_OK && ret != BZ_STREAM_END) {
      if (ret == BZ_MEM_ERROR)
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT, "%s: out of memory decoding bzip2 data",
                     in->name);
      else
        bmap_input_set_corrupt (in, "bzip2", bzip2_strerror (ret), error);
      return -1;
    }
    if (strm->avail_out > out_len) {
      bmap_input_set_corrupt (in, "bzip2", "the decoder reports more output room than it had",
                              error);
      return -1;
    }
    if (!bmap_input_consume_reported (in, avail, strm->avail_in, "bzip2", error))
      return -1;
    consumed = avail - strm->avail_in;
    produced = out_len - strm->avail_out;
    done += produced;
    if (ret == BZ_STREAM_END) {
      end_stream (dec);
    } else if (consumed == 0 && produced == 0) {
      if (!bmap_input_need_more (in, "bzip2", error))
        return -1;
    }
  }
  return (gssize) done;
}

const BmapDecoderVTable bmap_decoder_bzip2 = {
  .compression = BMAP_COMPRESSION_BZIP2,
  .name = "bzip2",
  .new = bzip2_new,
  .read = bzip2_read,
  .free = bzip2_free,
};
