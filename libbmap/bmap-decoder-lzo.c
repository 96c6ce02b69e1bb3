/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <lzo/lzo1x.h>
#include <string.h>

#include "bmap-decoder.h"
#include "bmap-error.h"

/* The lzop tool's container around LZO1X blocks: a header, then blocks of
 * at most 64 MiB each with their own checksums, then a zero length. Debian's
 * libarchive would run the lzop program for this, which a root daemon must
 * not do, so it is decoded here with liblzo2. */

static const guint8 lzop_magic[] = { 0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a };

/* lzop's own limit (MAX_BLOCK_SIZE); it writes 256 KiB blocks. Both buffers
 * grow to the largest block seen, so this also bounds the memory used. */
#define LZOP_MAX_BLOCK_SIZE (64u * 1024 * 1024)

/* The oldest format lzop reads, and the newest we know. */
#define LZOP_MIN_VERSION 0x0900
#define LZOP_MAX_VERSION 0x1fff

#define F_ADLER32_D     0x00000001u
#define F_ADLER32_C     0x00000002u
#define F_H_EXTRA_FIELD 0x00000040u
#define F_CRC32_D       0x00000100u
#define F_CRC32_C       0x00000200u
#define F_H_FILTER      0x00000800u
#define F_H_CRC32       0x00001000u
#define F_RESERVED      0x00ffc000u /* lzop refuses these too */

/* LZO1X-1, LZO1X-1(15) and LZO1X-999 all decode with lzo1x_decompress. */
#define M_LZO1X_1    1
#define M_LZO1X_1_15 2
#define M_LZO1X_999  3

typedef struct {
  BmapInput *in;
  gboolean in_stream; /* header read, end-of-stream block not yet seen */
  gboolean done;
  guint32 flags;
  guint8 *block;    /* decoded bytes of the current block */
  gsize block_size; /* allocated */
  gsize block_len;
  gsize block_pos;
  guint8 *cdata; /* compressed bytes of the current block, whole */
  gsize cdata_size;
} LzoDecoder;

static guint32
read_be32 (const guint8 *p)
{
  return ((guint32) p[0] << 24) | ((guint32) p[1] << 16) | ((guint32) p[2] << 8) | p[3];
}

static guint16
read_be16 (const guint8 *p)
{
  return (guint16) ((p[0] << 8) | p[1]);
}

static guint32
header_checksum (guint32 flags, const guint8 *p, gsize len)
{
  if (flags & F_H_CRC32)
    return lzo_crc32 (0, p, (lzo_uint) len);
  return lzo_adler32 (1, p, (lzo_uint) len);
}

/* Makes @n bytes available at once, failing with "truncated" at the end of
 * the input. @n is at most a header's size. */
static gboolean
need (BmapInput *in, gsize n, GError **error)
{
  if (!bmap_input_ensure (in, n, error))
    return FALSE;
  if (bmap_input_avail (in) < n) {
    bmap_input_set_truncated (in, "lzo", error);
    return FALSE;
  }
  return TRUE;
}

/* Reads the header at the input's position, magic included. All fields
 * and the name fit in 9 + 35 + 255 bytes, far less than the input buffer. */
static gboolean
read_header (LzoDecoder *dec, GError **error)
{
  BmapInput *in = dec->in;
  const guint8 *p;
  gsize len = sizeof (lzop_magic);
  guint16 version;
  guint8 method;
  guint32 flags;
  guint32 stored;
  char detail[96];

  if (!need (in, sizeof (lzop_magic) + 7, error))
    return FALSE;
  p = bmap_input_data (in);
  if (memcmp (p, lzop_magic, sizeof (lzop_magic)) != 0) {
    bmap_input_set_corrupt (in, "lzo", "bad magic", error);
    return FALSE;
  }
  version = read_be16 (p + len);
  if (version < LZOP_MIN_VERSION || version > LZOP_MAX_VERSION) {
    g_snprintf (detail, sizeof (detail), "unsupported lzop format version 0x%04x", version);
    bmap_input_set_corrupt (in, "lzo", detail, error);
    return FALSE;
  }
  len += 4; /* version, library version */
  if (version >= 0x0940)
    len += 2; /* version needed to extract */
  if (!need (in, len + 1 + 1 + 4, error))
    return FALSE;
  p = bmap_input_data (in);
  method = p[len++];
  if (version >= 0x0940)
    len++; /* level */
  flags = read_be32 (p + len);
  len += 4;
  if (method != M_LZO1X_1 && method != M_LZO1X_1_15 && method != M_LZO1X_999) {
    g_snprintf (detail, sizeof (detail), "unsupported lzop method %u", method);
    bmap_input_set_corrupt (in, "lzo", detail, error);
    return FALSE;
  }
  if (flags & (F_H_FILTER | F_RESERVED)) {
    g_snprintf (detail, sizeof (detail), "unsupported lzop flags 0x%08x", flags);
    bmap_input_set_corrupt (in, "lzo", detail, error);
    return FALSE;
  }
  len += 8; /* mode, mtime low */
  if (version >= 0x0940)
    len += 4; /* mtime high */
  if (!need (in, len + 1, error))
    return FALSE;
  len += 1 + bmap_input_data (in)[len]; /* name */
  if (!need (in, len + 4, error))
    return FALSE;
  p = bmap_input_data (in);
  stored = read_be32 (p + len);
  if (header_checksum (flags, p + sizeof (lzop_magic), len - sizeof (lzop_magic)) != stored) {
    bmap_input_set_corrupt (in, "lzo", "header checksum mismatch", error);
    return FALSE;
  }
  bmap_input_consume (in, len + 4);

  if (flags & F_H_EXTRA_FIELD) {
    guint32 extra_len;

    /* lzop never writes one; it is a length, data and a checksum of both. */
    if (!need (in, 4, error))
      return FALSE;
    extra_len = read_be32 (bmap_input_data (in));
    if (extra_len > in->size - 8) {
      bmap_input_set_corrupt (in, "lzo", "header extra field too large", error);
      return FALSE;
    }
    if (!need (in, 4 + (gsize) extra_len + 4, error))
      return FALSE;
    p = bmap_input_data (in);
    if (header_checksum (flags, p, 4 + (gsize) extra_len) != read_be32 (p + 4 + extra_len)) {
      bmap_input_set_corrupt (in, "lzo", "header extra field checksum mismatch", error);
      return FALSE;
    }
    bmap_input_consume (in, 4 + (gsize) extra_len + 4);
  }
  dec->flags = flags;
  dec->in_stream = TRUE;
  return TRUE;
}

static void
lzo_free (gpointer self)
{
  LzoDecoder *dec = self;

  g_free (dec->block);
  g_free (dec->cdata);
  g_free (dec);
}

static gpointer
lzo_new (BmapInput *in, GError **error)
{
  LzoDecoder *dec;

  if (lzo_init () != LZO_E_OK) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: cannot set up the lzo decoder", in->name);
    return NULL;
  }
  dec = g_new0 (LzoDecoder, 1);
  dec->in = in;
  return dec;
}

/* Copies @len compressed bytes of the block into dec->cdata. */
static gboolean
read_block_data (LzoDecoder *dec, guint8 *dst, gsize len, GError **error)
{
  BmapInput *in = dec->in;
  gsize done = 0;

  while (done < len) {
    gsize n;

    if (!bmap_input_fill (in, error))
      return FALSE;
    if (bmap_input_avail (in) == 0) {
      bmap_input_set_truncated (in, "lzo", error);
      return FALSE;
    }
    n = MIN (len - done, bmap_input_avail (in));
    memcpy (dst + done, bmap_input_data (in), n);
    bmap_input_consume (in, n);
    done += n;
  }
  return TRUE;
}

static gboolean
check (LzoDecoder *dec, guint32 adler_flag, const guint8 *p, gsize len, guint32 expected,
       guint64 block_offset, const char *what, GError **error)
{
  guint32 sum;

  if (dec->flags & adler_flag)
    sum = lzo_adler32 (1, p, (lzo_uint) len);
  else
    sum = lzo_crc32 (0, p, (lzo_uint) len);
  if (sum != expected) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                 "%s: corrupt lzo data in the block at compressed offset %" G_GUINT64_FORMAT
                 ": %s checksum mismatch",
                 dec->in->name, block_offset, what);
    return FALSE;
  }
  return TRUE;
}

/* Reads and decodes the next block into dec->block; at the end-of-stream
 * block leaves the stream. */
static gboolean
next_block (LzoDecoder *dec, GError **error)
{
  BmapInput *in = dec->in;
  gboolean d_sum = (dec->flags & (F_ADLER32_D | F_CRC32_D)) != 0;
  gboolean c_sum = (dec->flags & (F_ADLER32_C | F_CRC32_C)) != 0;
  guint32 dst_len, src_len, d_expected = 0, c_expected = 0;
  guint64 block_offset;
  const guint8 *p;
  gsize hdr = 8;

  if (!need (in, 4, error))
    return FALSE;
  block_offset = bmap_input_offset (in);
  dst_len = read_be32 (bmap_input_data (in));
  if (dst_len == 0) {
    bmap_input_consume (in, 4);
    dec->in_stream = FALSE;
    return TRUE;
  }
  if (!need (in, 8, error))
    return FALSE;
  src_len = read_be32 (bmap_input_data (in) + 4);
  if (dst_len > LZOP_MAX_BLOCK_SIZE || src_len == 0 || src_len > dst_len) {
    g_autofree char *detail
        = g_strdup_printf ("bad block sizes (%u bytes compressed, %u decoded; at most %u)", src_len,
                           dst_len, LZOP_MAX_BLOCK_SIZE);

    bmap_input_set_corrupt (in, "lzo", detail, error);
    return FALSE;
  }
  if (d_sum)
    hdr += 4;
  /* A stored block has one checksum for both. */
  if (c_sum && src_len < dst_len)
    hdr += 4;
  if (!need (in, hdr, error))
    return FALSE;
  p = bmap_input_data (in);
  if (d_sum)
    d_expected = read_be32 (p + 8);
  if (c_sum && src_len < dst_len)
    c_expected = read_be32 (p + 8 + (d_sum ? 4 : 0));
  bmap_input_consume (in, hdr);

  if (dec->block_size < dst_len) {
    g_free (dec->block);
    dec->block = g_malloc (dst_len);
    dec->block_size = dst_len;
  }
  if (src_len == dst_len) {
    if (!read_block_data (dec, dec->block, src_len, error))
      return FALSE;
  } else {
    lzo_uint out_len = dst_len;
    int ret;

    if (dec->cdata_size < src_len) {
      g_free (dec->cdata);
      dec->cdata = g_malloc (src_len);
      dec->cdata_size = src_len;
    }
    if (!read_block_data (dec, dec->cdata, src_len, error))
      return FALSE;
    if (c_sum
        && !check (dec, F_ADLER32_C, dec->cdata, src_len, c_expected, block_offset,
                   "compressed block", error))
      return FALSE;
    ret = lzo1x_decompress_safe (dec->cdata, src_len, dec->block, &out_len, NULL);
    if (ret != LZO_E_OK || out_len != dst_len) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                   "%s: corrupt lzo data in the block at compressed offset %" G_GUINT64_FORMAT
                   ": decoding failed (lzo error %d)",
                   in->name, block_offset, ret);
      return FALSE;
    }
  }
  if (d_sum
      && !check (dec, F_ADLER32_D, dec->block, dst_len, d_expected, block_offset, "decoded block",
                 error))
    return FALSE;
  dec->block_len = dst_len;
  dec->block_pos = 0;
  return TRUE;
}

/* After a stream: another one (cat joins lzop files), zero padding, or the
 * end. */
static gboolean
next_stream (LzoDecoder *dec, GError **error)
{
  BmapInput *in = dec->in;

  if (!bmap_input_ensure (in, 1, error))
    return FALSE;
  if (bmap_input_avail (in) == 0) {
    dec->done = TRUE;
    return TRUE;
  }
  if (bmap_input_data (in)[0] == lzop_magic[0])
    return read_header (dec, error);
  if (!bmap_input_skip_zero_padding (in, "lzo", error))
    return FALSE;
  dec->done = TRUE;
  return TRUE;
}

static gssize
lzo_read (gpointer self, guint8 *buf, gsize len, GError **error)
{
  LzoDecoder *dec = self;
  gsize done = 0;

  while (done < len && !dec->done) {
    gsize n;

    if (dec->block_pos == dec->block_len) {
      gboolean ok;

      if (!dec->in_stream)
        ok = next_stream (dec, error);
      else
        ok = next_block (dec, error);
      if (!ok)
        return -1;
      continue;
    }
    n = MIN (len - done, dec->block_len - dec->block_pos);
    memcpy (buf + done, dec->block + dec->block_pos, n);
    dec->block_pos += n;
    done += n;
  }
  return (gssize) done;
}

const BmapDecoderVTable bmap_decoder_lzo = {
  .compression = BMAP_COMPRESSION_LZO,
  .name = "lzo",
  .new = lzo_new,
  .read = lzo_read,
  .free = lzo_free,
};
