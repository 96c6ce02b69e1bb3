/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <zstd.h>
#include <zstd_errors.h>

#include "bmap-decoder.h"
#include "bmap-error.h"

/* Frames whose window needs more than this (128 MiB, zstd's own default
 * limit, which the zstd tool too needs --memory to pass) are refused with
 * a clear message rather than let an image take the memory. */
#define ZSTD_WINDOW_LOG_MAX 27

typedef struct {
  BmapInput *in;
  ZSTD_DCtx *dctx;
  gboolean frame_done; /* between frames: the end here is a clean one */
  gboolean done;
} ZstdDecoder;

static void
zstd_free (gpointer self)
{
  ZstdDecoder *dec = self;

  ZSTD_freeDCtx (dec->dctx);
  g_free (dec);
}

static gpointer
zstd_new (BmapInput *in, GError **error)
{
  ZstdDecoder *dec = g_new0 (ZstdDecoder, 1);

  dec->in = in;
  dec->dctx = ZSTD_createDCtx ();
  if (dec->dctx == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT, "%s: cannot set up the zstd decoder",
                 in->name);
    zstd_free (dec);
    return NULL;
  }
  ZSTD_DCtx_setParameter (dec->dctx, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX);
  return dec;
}

static gssize
zstd_read (gpointer self, guint8 *buf, gsize len, GError **error)
{
  ZstdDecoder *dec = self;
  BmapInput *in = dec->in;
  ZSTD_outBuffer out = { buf, len, 0 };

  while (out.pos < out.size && !dec->done) {
    ZSTD_inBuffer inb;
    gsize out_before = out.pos;
    size_t ret;

    if (!bmap_input_fill (in, error))
      return -1;
    if (dec->frame_done) {
      /* Between frames: the end, zero padding, or the next frame (which
       * the decoder checks). */
      if (bmap_input_avail (in) == 0) {
        dec->done = TRUE;
        break;
      }
      if (bmap_input_data (in)[0] == 0) {
        if (!bmap_input_skip_zero_padding (in, "zstd", error))
          return -1;
        dec->done = TRUE;
        break;
      }
    }
    inb = (ZSTD_inBuffer){ bmap_input_data (in), bmap_input_avail (in), 0 };
    ret = ZSTD_decompressStream (dec->dctx, &out, &inb);
    if (!bmap_input_consume_reported (
            in, inb.size, inb.pos <= inb.size ? inb.size - inb.pos : G_MAXUINT64, "zstd", error))
      return -1;
    if (ZSTD_isError (ret)) {
      if (ZSTD_getErrorCode (ret) == ZSTD_error_frameParameter_windowTooLarge) {
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT,
                     "%s: zstd frame needs a window larger than %u MiB", in->name,
                     1u << (ZSTD_WINDOW_LOG_MAX - 20));
        return -1;
      }
      bmap_input_set_corrupt (in, "zstd", ZSTD_getErrorName (ret), error);
      return -1;
    }
    /* 0: a frame is complete and all of it flushed. */
    dec->frame_done = ret == 0;
    if (!dec->frame_done && inb.pos == 0 && out.pos == out_before) {
      if (!bmap_input_need_more (in, "zstd", error))
        return -1;
    }
  }
  return (gssize) out.pos;
}

const BmapDecoderVTable bmap_decoder_zstd = {
  .compression = BMAP_COMPRESSION_ZSTD,
  .name = "zstd",
  .new = zstd_new,
  .read = zstd_read,
  .free = zstd_free,
};
