/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Private to libbmap: the input buffer that BmapSource shares with its
 * decoder, and the table of functions every decoder provides. */

#include <glib.h>

#include "bmap-format.h"
#include "bmap-source.h"

G_BEGIN_DECLS

/* Compressed bytes are read in chunks this large: few syscalls, and big
 * enough that the fast decoders (ISA-L, zstd, lz4) rarely wait for input. */
#define BMAP_INPUT_BUF_SIZE (1024 * 1024)

/* The compressed side of a source. buf[pos..len) is read but not yet
 * consumed; decoders point their library's next_in there and advance pos. */
typedef struct {
  int fd;
  const char *name; /* the source's name, for messages */
  guint8 *buf;
  gsize size;
  gsize pos;
  gsize len;
  guint64 buf_offset; /* compressed offset of buf[0] */
  guint64 bytes_in;   /* bytes read from fd */
  gboolean eof;
  /* A GCancellable's fd, polled with @fd when @fd can block (a pipe), so
   * that a cancel is seen even while the writer of the pipe stalls. */
  int cancel_fd;
  gboolean can_block;
} BmapInput;

static inline gsize
bmap_input_avail (const BmapInput *in)
{
  return in->len - in->pos;
}

static inline guint8 *
bmap_input_data (const BmapInput *in)
{
  return in->buf + in->pos;
}

/* Compressed offset of the next unconsumed byte. */
static inline guint64
bmap_input_offset (const BmapInput *in)
{
  return in->buf_offset + in->pos;
}

/* For counts the decoder computed itself from what is at hand (never for a
 * count a decoding library reports: see bmap_input_consume_reported()). */
static inline void
bmap_input_consume (BmapInput *in, gsize n)
{
  g_assert (n <= bmap_input_avail (in));
  in->pos += n;
}

/* A decoding library was given @given bytes at bmap_input_data() and says
 * @left of them are left: consumes the difference. Libraries' counts are
 * not trusted (ISA-L leaves its count wrapped around after some errors):
 * more left than given is BMAP_ERROR_BAD_IMAGE naming @format, never an
 * abort. */
gboolean bmap_input_consume_reported (BmapInput *in, gsize given, guint64 left, const char *format,
                                      GError **error);

/* Reads more when everything at hand was consumed (one read(), EINTR
 * retried). Returns FALSE with BMAP_ERROR_IO when read() fails; at the end of
 * the fd sets in->eof and returns TRUE with nothing at hand. */
gboolean bmap_input_fill (BmapInput *in, GError **error);

/* Reads until at least @n bytes are at hand or the fd ends (@n is small:
 * a magic number at a stream boundary). */
gboolean bmap_input_ensure (BmapInput *in, gsize n, GError **error);

/* For a decoder that made no progress with what is at hand: reads more,
 * keeping it. At the end of the input it is a truncated @format stream:
 * FALSE with BMAP_ERROR_BAD_IMAGE. */
gboolean bmap_input_need_more (BmapInput *in, const char *format, GError **error);

/* At a boundary between streams: TRUE when the rest of the input is zeros
 * (tape padding, as gzip -d accepts), consuming it; otherwise FALSE with
 * BMAP_ERROR_BAD_IMAGE naming @format and the offset of the garbage. */
gboolean bmap_input_skip_zero_padding (BmapInput *in, const char *format, GError **error);

/* "NAME: FORMAT stream is truncated at compressed offset N". */
void bmap_input_set_truncated (BmapInput *in, const char *format, GError **error);

/* "NAME: corrupt FORMAT data at compressed offset N: DETAIL". */
void bmap_input_set_corrupt (BmapInput *in, const char *format, const char *detail, GError **error);

/* One per compressed format. A decoder reads @input (which outlives it) and
 * writes decoded bytes into the caller's buffer. */
typedef struct {
  BmapCompression compression;
  const char *name;
  gpointer (*new) (BmapInput *input, GError **error);
  /* Fills @buf as far as it can; 0 only at the clean end of the last stream,
   * -1 with a GError when the data is truncated or corrupt. */
  gssize (*read) (gpointer decoder, guint8 *buf, gsize len, GError **error);
  /* Optional: told which bytes will be read (@map's ranges; the rest is
   * skipped), returns TRUE when skip() below then does better than
   * decoding into a buffer and dropping it. */
  gboolean (*set_wanted) (gpointer decoder, const BmapMap *map);
  /* Drops @len decoded bytes; the count (fewer only at the end), -1 with a
   * GError. Called only after set_wanted() returned TRUE. */
  gssize (*skip) (gpointer decoder, guint64 len, GError **error);
  void (*free) (gpointer decoder);
} BmapDecoderVTable;

extern const BmapDecoderVTable bmap_decoder_gzip;
extern const BmapDecoderVTable bmap_decoder_xz;
extern const BmapDecoderVTable bmap_decoder_bzip2;
extern const BmapDecoderVTable bmap_decoder_zstd;
extern const BmapDecoderVTable bmap_decoder_lz4;
extern const BmapDecoderVTable bmap_decoder_lzo;

G_END_DECLS
