/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

/* Tests build this file a second time with BMAP_GZIP_FORCE_ZLIB, so that
 * both backends are tested on a machine that has ISA-L. */
#if HAVE_ISAL && !defined(BMAP_GZIP_FORCE_ZLIB)
#define USE_ISAL 1
#else
#define USE_ISAL 0
#endif

#if USE_ISAL
#include <isa-l.h>
#else
#include <zlib.h>
#endif

#include "bmap-decoder.h"
#include "bmap-error.h"

/* ISA-L and zlib count in 32 bits. */
#define MAX_STEP_OUT (1u << 30)

typedef struct {
  BmapInput *in;
#if USE_ISAL
  struct inflate_state *state;
#else
  z_stream zs;
  gboolean zs_ready;
#endif
  gboolean in_member; /* a member started and its trailer is not yet checked */
  gboolean done;
} GzipDecoder;

/* What the library says it took and gave, checked against what it was
 * given: its two counts of each (pointer and remaining length) must agree
 * and stay within the buffers. A library's bookkeeping is not trusted
 * blindly: an inconsistency is a corrupt image, never an abort. */
static gboolean
take_counts (GzipDecoder *dec, gsize in_len, const guint8 *next_in, guint64 avail_in,
             const guint8 *out, gsize out_len, const guint8 *next_out, guint64 avail_out,
             gsize *consumed, gsize *produced, GError **error)
{
  const guint8 *in_start = bmap_input_data (dec->in);

  if (avail_in > in_len || next_in != in_start + (in_len - avail_in) || avail_out > out_len
      || next_out != out + (out_len - avail_out)) {
    g_autofree char *detail = g_strdup_printf (
        "the decoder's counts are inconsistent (%" G_GUINT64_FORMAT " of %" G_GSIZE_FORMAT
        " input bytes left, %" G_GUINT64_FORMAT " of %" G_GSIZE_FORMAT " output bytes)",
        avail_in, in_len, avail_out, out_len);

    bmap_input_set_corrupt (dec->in, "gzip", detail, error);
    return FALSE;
  }
  *consumed = in_len - (gsize) avail_in;
  *produced = out_len - (gsize) avail_out;
  return bmap_input_consume_reported (dec->in, in_len, avail_in, "gzip", error);
}

#if USE_ISAL

static const char *
isal_strerror (int ret)
{
  switch (ret) {
    case ISAL_INVALID_BLOCK:
      return "invalid deflate block";
    case ISAL_INVALID_SYMBOL:
      return "invalid deflate symbol";
    case ISAL_INVALID_LOOKBACK:
      return "back-reference before the start of the data";
    case ISAL_INVALID_WRAPPER:
      return "invalid gzip member header";
    case ISAL_UNSUPPORTED_METHOD:
      return "unsupported compression method";
    case ISAL_INCORRECT_CHECKSUM:
      return "CRC32 or size in the member trailer does not match the data";
    default:
      return "inflate failed";
  }
}

static gboolean
backend_init (GzipDecoder *dec, GError **error)
{
  /* About 50 KiB: on the heap, not in a thread's stack. */
  dec->state = g_new0 (struct inflate_state, 1);
  isal_inflate_init (dec->state);
  return TRUE;
}

static void
backend_start_member (GzipDecoder *dec)
{
  isal_inflate_reset (dec->state);
  /* ISA-L parses the header, keeps the CRC32 and checks it and ISIZE
   * against the trailer. */
  dec->state->crc_flag = ISAL_GZIP;
}

/* One inflate call on what is at hand. Sets @finished when the member's
 * trailer was checked. */
static gboolean
backend_step (GzipDecoder *dec, guint8 *out, gsize out_len, gsize *consumed, gsize *produced,
              gboolean *finished, GError **error)
{
  struct inflate_state *state = dec->state;
  gsize avail = bmap_input_avail (dec->in);
  int ret;

  state->next_in = bmap_input_data (dec->in);
  state->avail_in = (uint32_t) avail;
  state->next_out = out;
  state->avail_out = (uint32_t) out_len;
  ret = isal_inflate (state);
  if (ret != ISAL_DECOMP_OK) {
    /* After an error ISA-L's counts mean nothing (2.30 leaves avail_in
     * wrapped around): the offset is where this call started. */
    bmap_input_set_corrupt (dec->in, "gzip", isal_strerror (ret), error);
    return FALSE;
  }
  if (!take_counts (dec, avail, state->next_in, state->avail_in, out, out_len, state->next_out,
                    state->avail_out, consumed, produced, error))
    return FALSE;
  *finished = state->block_state == ISAL_BLOCK_FINISH;
  return TRUE;
}

static void
backend_free (GzipDecoder *dec)
{
  g_free (dec->state);
}

#else /* zlib */

static gboolean
backend_init (GzipDecoder *dec, GError **error)
{
  /* 16 + MAX_WBITS: a gzip wrapper, whose CRC32 and ISIZE zlib checks. */
  int ret = inflateInit2 (&dec->zs, 16 + MAX_WBITS);

  if (ret != Z_OK) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT, "%s: cannot set up the gzip decoder: %s",
                 dec->in->name, dec->zs.msg != NULL ? dec->zs.msg : zError (ret));
    return FALSE;
  }
  dec->zs_ready = TRUE;
  return TRUE;
}

static void
backend_start_member (GzipDecoder *dec)
{
  inflateReset (&dec->zs);
}

static gboolean
backend_step (GzipDecoder *dec, guint8 *out, gsize out_len, gsize *consumed, gsize *produced,
              gboolean *finished, GError **error)
{
  z_stream *zs = &dec->zs;
  gsize avail = bmap_input_avail (dec->in);
  int ret;

  zs->next_in = bmap_input_data (dec->in);
  zs->avail_in = (uInt) avail;
  zs->next_out = out;
  zs->avail_out = (uInt) out_len;
  ret = inflate (zs, Z_NO_FLUSH);
  *finished = ret == Z_STREAM_END;
  switch (ret) {
    case Z_OK:
    case Z_STREAM_END:
    case Z_BUF_ERROR: /* no progress: the caller tells truncation apart */
      return take_counts (dec, avail, zs->next_in, zs->avail_in, out, out_len, zs->next_out,
                          zs->avail_out, consumed, produced, error);
    case Z_MEM_ERROR:
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT, "%s: out of memory decoding gzip data",
                   dec->in->name);
      return FALSE;
    default:
      /* zlib's counts stay right after an error: the offset is where it
       * stopped, when they are consistent. */
      (void) take_counts (dec, avail, zs->next_in, zs->avail_in, out, out_len, zs->next_out,
                          zs->avail_out, consumed, produced, NULL);
      bmap_input_set_corrupt (dec->in, "gzip", zs->msg != NULL ? zs->msg : zError (ret), error);
      return FALSE;
  }
}

static void
backend_free (GzipDecoder *dec)
{
  if (dec->zs_ready)
    inflateEnd (&dec->zs);
}

#endif

static void
gzip_free (gpointer self)
{
  GzipDecoder *dec = self;

  backend_free (dec);
  g_free (dec);
}

static gpointer
gzip_new (BmapInput *in, GError **error)
{
  GzipDecoder *dec = g_new0 (GzipDecoder, 1);

  dec->in = in;
  if (!backend_init (dec, error)) {
    gzip_free (dec);
    return NULL;
  }
  return dec;
}

/* Between members: another member, zero padding up to the end, or the end.
 * Anything else is garbage, which gzip -d too refuses to call a success. */
static gboolean
next_member (GzipDecoder *dec, GError **error)
{
  BmapInput *in = dec->in;
  const guint8 *p;

  if (!bmap_input_ensure (in, 2, error))
    return FALSE;
  if (bmap_input_avail (in) == 0) {
    dec->done = TRUE;
    return TRUE;
  }
  p = bmap_input_data (in);
  if (p[0] == 0x1f && (bmap_input_avail (in) < 2 || p[1] == 0x8b)) {
    /* A lone 0x1f at the end is a cut header: the member reports it. */
    backend_start_member (dec);
    dec->in_member = TRUE;
    return TRUE;
  }
  if (!bmap_input_skip_zero_padding (in, "gzip", error))
    return FALSE;
  dec->done = TRUE;
  return TRUE;
}

static gssize
gzip_read (gpointer self, guint8 *buf, gsize len, GError **error)
{
  GzipDecoder *dec = self;
  BmapInput *in = dec->in;
  gsize done = 0;

  while (done < len && !dec->done) {
    gsize consumed, produced;
    gboolean finished = FALSE;

    if (!dec->in_member) {
      if (!next_member (dec, error))
        return -1;
      continue;
    }
    if (!bmap_input_fill (in, error))
      return -1;
    if (!backend_step (dec, buf + done, MIN (len - done, MAX_STEP_OUT), &consumed, &produced,
                       &finished, error))
      return -1;
    done += produced;
    if (finished) {
      dec->in_member = FALSE;
    } else if (consumed == 0 && produced == 0) {
      if (!bmap_input_need_more (in, "gzip", error))
        return -1;
    }
  }
  return (gssize) done;
}

const BmapDecoderVTable bmap_decoder_gzip = {
  .compression = BMAP_COMPRESSION_GZIP,
  .name = "gzip",
  .new = gzip_new,
  .read = gzip_read,
  .free = gzip_free,
};
