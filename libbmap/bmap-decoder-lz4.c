/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <lz4.h>
#include <lz4frame.h>
#include <string.h>

#include "bmap-decoder.h"
#include "bmap-error.h"

#define LZ4_FRAME_MAGIC     0x184D2204u
#define LZ4_LEGACY_MAGIC    0x184C2102u
#define LZ4_SKIPPABLE_MASK  0xFFFFFFF0u
#define LZ4_SKIPPABLE_MAGIC 0x184D2A50u
/* The legacy format (lz4 -l, kernel initramfs): independent blocks that
 * each decode to at most 8 MiB, with no checksum. */
#define LEGACY_BLOCK_SIZE   (8 * 1024 * 1024)
#define LEGACY_BLOCK_MAX_IN LZ4_COMPRESSBOUND (LEGACY_BLOCK_SIZE)

typedef struct {
  BmapInput *in;
  LZ4F_dctx *dctx;
  gboolean frame_done; /* at a boundary between frames */
  gboolean legacy;     /* in a legacy frame */
  gboolean done;
  /* Legacy only, allocated on first use. */
  guint8 *block_in;
  guint8 *block_out;
  gsize block_out_pos;
  gsize block_out_len;
} Lz4Decoder;

static guint32
load_le32 (const guint8 *p)
{
  guint32 v;

  memcpy (&v, p, sizeof (v));
  return GUINT32_FROM_LE (v);
}

static void
lz4_free (gpointer self)
{
  Lz4Decoder *dec = self;

  if (dec->dctx != NULL)
    LZ4F_freeDecompressionContext (dec->dctx);
  g_free (dec->block_in);
  g_free (dec->block_out);
  g_free (dec);
}

static gpointer
lz4_new (BmapInput *in, GError **error)
{
  Lz4Decoder *dec = g_new0 (Lz4Decoder, 1);
  LZ4F_errorCode_t ret;

  dec->in = in;
  dec->frame_done = TRUE;
  ret = LZ4F_createDecompressionContext (&dec->dctx, LZ4F_VERSION);
  if (LZ4F_isError (ret)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT, "%s: cannot set up the lz4 decoder: %s",
                 in->name, LZ4F_getErrorName (ret));
    lz4_free (dec);
    return NULL;
  }
  return dec;
}

/* Reads one legacy block's @len compressed bytes and decodes them into
 * @out, which has room for LEGACY_BLOCK_SIZE. */
static gssize
legacy_decode_block (Lz4Decoder *dec, gsize len, guint8 *out, GError **error)
{
  BmapInput *in = dec->in;
  const guint8 *src;
  int n;

  if (bmap_input_avail (in) >= len) {
    src = bmap_input_data (in);
    n = LZ4_decompress_safe ((const char *) src, (char *) out, (int) len, LEGACY_BLOCK_SIZE);
    bmap_input_consume (in, len);
  } else {
    gsize got = 0;

    /* Larger than what is at hand: gather it. */
    if (dec->block_in == NULL)
      dec->block_in = g_malloc (LEGACY_BLOCK_MAX_IN);
    while (got < len) {
      gsize chunk;

      if (!bmap_input_fill (in, error))
        return -1;
      if (bmap_input_avail (in) == 0) {
        bmap_input_set_truncated (in, "lz4", error);
        return -1;
      }
      chunk = MIN (len - got, bmap_input_avail (in));
      memcpy (dec->block_in + got, bmap_input_data (in), chunk);
      bmap_input_consume (in, chunk);
      got += chunk;
    }
    n = LZ4_decompress_safe ((const char *) dec->block_in, (char *) out, (int) len,
                             LEGACY_BLOCK_SIZE);
  }
  if (n < 0) {
    bmap_input_set_corrupt (in, "lz4", "invalid legacy block", error);
    return -1;
  }
  return n;
}

/* One step of a legacy frame: a block into @buf (or staged), or the end of
 * the frame. Returns the bytes written to @buf, -1 on error. */
static gssize
legacy_step (Lz4Decoder *dec, guint8 *buf, gsize len, GError **error)
{
  BmapInput *in = dec->in;
  guint32 block_len;
  gssize n;

  if (dec->block_out_pos < dec->block_out_len) {
    gsize chunk = MIN (len, dec->block_out_len - dec->block_out_pos);

    memcpy (buf, dec->block_out + dec->block_out_pos, chunk);
    dec->block_out_pos += chunk;
    return (gssize) chunk;
  }

  if (!bmap_input_ensure (in, 4, error))
    return -1;
  if (bmap_input_avail (in) == 0) {
    /* Legacy frames have no end mark: the end of the file is one. */
    dec->done = TRUE;
    return 0;
  }
  if (bmap_input_avail (in) < 4) {
    bmap_input_set_truncated (in, "lz4", error);
    return -1;
  }
  block_len = load_le32 (bmap_input_data (in));
  if (block_len == LZ4_LEGACY_MAGIC) {
    bmap_input_consume (in, 4);
    return 0;
  }
  if (block_len == LZ4_FRAME_MAGIC || (block_len & LZ4_SKIPPABLE_MASK) == LZ4_SKIPPABLE_MAGIC) {
    /* A frame follows: LZ4F takes it from its magic on. */
    dec->legacy = FALSE;
    dec->frame_done = TRUE;
    return 0;
  }
  if (block_len == 0 || block_len > LEGACY_BLOCK_MAX_IN) {
    bmap_input_set_corrupt (in, "lz4", "invalid legacy block size", error);
    return -1;
  }
  bmap_input_consume (in, 4);

  if (len >= LEGACY_BLOCK_SIZE)
    return legacy_decode_block (dec, block_len, buf, error);

  if (dec->block_out == NULL)
    dec->block_out = g_malloc (LEGACY_BLOCK_SIZE);
  n = legacy_decode_block (dec, block_len, dec->block_out, error);
  if (n < 0)
    return -1;
  dec->block_out_pos = 0;
  dec->block_out_len = (gsize) n;
  return 0;
}

static gssize
lz4_read (gpointer self, guint8 *buf, gsize len, GError **error)
{
  Lz4Decoder *dec = self;
  BmapInput *in = dec->in;
  gsize done = 0;

  while (done < len && !dec->done) {
    gsize src_len, dst_len;
    size_t hint;

    if (dec->legacy) {
      gssize n = legacy_step (dec, buf + done, len - done, error);

      if (n < 0)
        return -1;
      done += (gsize) n;
      continue;
    }

    if (!bmap_input_fill (in, error))
      return -1;
    if (dec->frame_done) {
      /* Between frames: the end, zero padding, a legacy frame, or the next
       * frame (which LZ4F checks). */
      if (bmap_input_avail (in) == 0) {
        dec->done = TRUE;
        break;
      }
      if (bmap_input_data (in)[0] == 0) {
        if (!bmap_input_skip_zero_padding (in, "lz4", error))
          return -1;
        dec->done = TRUE;
        break;
      }
      if (!bmap_input_ensure (in, 4, error))
        return -1;
      if (bmap_input_avail (in) >= 4 && load_le32 (bmap_input_data (in)) == LZ4_LEGACY_MAGIC) {
        bmap_input_consume (in, 4);
        dec->legacy = TRUE;
        continue;
      }
    }

    src_len = bmap_input_avail (in);
    dst_len = len - done;
    hint = LZ4F_decompress (dec->dctx, buf + done, &dst_len, bmap_input_data (in), &src_len, NULL);
    if (!bmap_input_consume_reported (
            in, bmap_input_avail (in),
            src_len <= bmap_input_avail (in) ? bmap_input_avail (in) - src_len : G_MAXUINT64, "lz4",
            error))
      return -1;
    if (dst_len > len - done) {
      bmap_input_set_corrupt (in, "lz4", "the decoder reports more output than it had room for",
                              error);
      return -1;
    }
    done += dst_len;
    if (LZ4F_isError (hint)) {
      bmap_input_set_corrupt (in, "lz4", LZ4F_getErrorName (hint), error);
      return -1;
    }
    /* 0: the frame is complete, its checksum checked, all of it out. */
    dec->frame_done = hint == 0;
    if (!dec->frame_done && src_len == 0 && dst_len == 0) {
      if (!bmap_input_need_more (in, "lz4", error))
        return -1;
    }
  }
  return (gssize) done;
}

const BmapDecoderVTable bmap_decoder_lz4 = {
  .compression = BMAP_COMPRESSION_LZ4,
  .name = "lz4",
  .new = lz4_new,
  .read = lz4_read,
  .free = lz4_free,
};
