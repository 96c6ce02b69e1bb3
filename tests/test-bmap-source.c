/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <bzlib.h>
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <lz4.h>
#include <lz4frame.h>
#include <lzma.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "bmap-error.h"
#include "bmap-source.h"
#include "bmap-test-util.h"

#define MIB (1024 * 1024)

/* Compressors, through the libraries, so the tests need no tools. */

typedef enum { FMT_GZIP, FMT_XZ, FMT_BZIP2, FMT_ZSTD, FMT_LZ4, N_FMTS } Fmt;

static const BmapCompression fmt_compression[N_FMTS] = {
  BMAP_COMPRESSION_GZIP, BMAP_COMPRESSION_XZ,  BMAP_COMPRESSION_BZIP2,
  BMAP_COMPRESSION_ZSTD, BMAP_COMPRESSION_LZ4,
};

static GBytes *
compress_gzip (const guint8 *data, gsize len)
{
  z_stream zs = { 0 };
  gsize cap = deflateBound (&zs, len) + 64;
  guint8 *out;

  g_assert_cmpint (deflateInit2 (&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), ==,
                   Z_OK);
  cap = deflateBound (&zs, len) + 64;
  out = g_malloc (cap);
  zs.next_in = (guint8 *) data;
  zs.avail_in = (uInt) len;
  zs.next_out = out;
  zs.avail_out = (uInt) cap;
  g_assert_cmpint (deflate (&zs, Z_FINISH), ==, Z_STREAM_END);
  deflateEnd (&zs);
  return g_bytes_new_take (out, zs.total_out);
}

/* Multi-threaded with 1 MiB blocks, so that the decoder's threads get
 * blocks with sizes in their headers to work on. */
static GBytes *
compress_xz (const guint8 *data, gsize len)
{
  lzma_stream strm = LZMA_STREAM_INIT;
  lzma_mt mt = {
    .threads = 2,
    .block_size = MIB,
    .preset = 1,
    .check = LZMA_CHECK_CRC64,
  };
  gsize cap = lzma_stream_buffer_bound (len) + 4096;
  guint8 *out = g_malloc (cap);

  g_assert_cmpint (lzma_stream_encoder_mt (&strm, &mt), ==, LZMA_OK);
  strm.next_in = data;
  strm.avail_in = len;
  strm.next_out = out;
  strm.avail_out = cap;
  g_assert_cmpint (lzma_code (&strm, LZMA_FINISH), ==, LZMA_STREAM_END);
  len = strm.total_out;
  lzma_end (&strm);
  return g_bytes_new_take (out, len);
}

static GBytes *
compress_bzip2 (const guint8 *data, gsize len)
{
  unsigned int out_len = (unsigned int) (len + len / 100 + 600);
  guint8 *out = g_malloc (out_len);
  static char nothing;
  char *src = data != NULL ? (char *) data : &nothing;

  /* bzip2 refuses a NULL source even when empty. */
  g_assert_cmpint (
      BZ2_bzBuffToBuffCompress ((char *) out, &out_len, src, (unsigned int) len, 1, 0, 0), ==,
      BZ_OK);
  return g_bytes_new_take (out, out_len);
}

static GBytes *
compress_zstd (const guint8 *data, gsize len)
{
  ZSTD_CCtx *cctx = ZSTD_createCCtx ();
  gsize cap = ZSTD_compressBound (len);
  guint8 *out = g_malloc (cap);
  size_t n;

  ZSTD_CCtx_setParameter (cctx, ZSTD_c_checksumFlag, 1);
  n = ZSTD_compress2 (cctx, out, cap, data, len);
  g_assert_false (ZSTD_isError (n));
  ZSTD_freeCCtx (cctx);
  return g_bytes_new_take (out, n);
}

static GBytes *
compress_lz4 (const guint8 *data, gsize len)
{
  LZ4F_preferences_t prefs = { 0 };
  gsize cap, n;
  guint8 *out;

  prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
  cap = LZ4F_compressFrameBound (len, &prefs);
  out = g_malloc (cap);
  n = LZ4F_compressFrame (out, cap, data, len, &prefs);
  g_assert_false (LZ4F_isError (n));
  return g_bytes_new_take (out, n);
}

/* lz4 -l: magic, then (LE32 size, block) pairs of at most 8 MiB each. */
static GBytes *
compress_lz4_legacy (const guint8 *data, gsize len)
{
  GByteArray *out = g_byte_array_new ();
  static const guint8 magic[] = { 0x02, 0x21, 0x4c, 0x18 };
  const gsize block = 8 * MIB;

  g_byte_array_append (out, magic, 4);
  for (gsize off = 0; off < len; off += block) {
    int in_len = (int) MIN (block, len - off);
    int cap = LZ4_compressBound (in_len);
    guint8 *tmp = g_malloc (cap);
    int n = LZ4_compress_default ((const char *) data + off, (char *) tmp, in_len, cap);
    guint32 le;

    g_assert_cmpint (n, >, 0);
    le = GUINT32_TO_LE ((guint32) n);
    g_byte_array_append (out, (guint8 *) &le, 4);
    g_byte_array_append (out, tmp, (guint) n);
    g_free (tmp);
  }
  return g_byte_array_free_to_bytes (out);
}

static GBytes *
compress_fmt (Fmt fmt, GBytes *data)
{
  gsize len;
  const guint8 *p = g_bytes_get_data (data, &len);

  switch (fmt) {
    case FMT_GZIP:
      return compress_gzip (p, len);
    case FMT_XZ:
      return compress_xz (p, len);
    case FMT_BZIP2:
      return compress_bzip2 (p, len);
    case FMT_ZSTD:
      return compress_zstd (p, len);
    case FMT_LZ4:
    default:
      return compress_lz4 (p, len);
  }
}

/* Test data. */

/* Several MiB that are mostly zeros with random islands: a disk image. */
static GBytes *
make_sparse_data (gsize len)
{
  guint8 *p = g_malloc0 (len);

  for (gsize off = 4096; off + 70000 < len; off += 1536 * 1024)
    bmap_test_fill (p + off, 70000, (guint32) off);
  return g_bytes_new_take (p, len);
}

static GBytes *
make_random_data (gsize len, guint32 seed)
{
  guint8 *p = g_malloc (len);

  bmap_test_fill (p, len, seed);
  return g_bytes_new_take (p, len);
}

static GBytes *
concat (GBytes *a, GBytes *b)
{
  GByteArray *arr = g_byte_array_new ();

  g_byte_array_append (arr, g_bytes_get_data (a, NULL), (guint) g_bytes_get_size (a));
  g_byte_array_append (arr, g_bytes_get_data (b, NULL), (guint) g_bytes_get_size (b));
  return g_byte_array_free_to_bytes (arr);
}

static char *
write_tmp (const char *name, const void *data, gsize len)
{
  static char *dir;
  g_autoptr (GError) error = NULL;
  char *path;

  if (dir == NULL)
    dir = bmap_test_tmpdir ();
  path = g_build_filename (dir, name, NULL);
  g_file_set_contents (path, data, (gssize) len, &error);
  g_assert_no_error (error);
  return path;
}

static char *
write_tmp_bytes (const char *name, GBytes *bytes)
{
  return write_tmp (name, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
}

/* Reads the whole source with @chunk-sized reads. Returns NULL with
 * @error set when a read fails; checks that reads fill the buffer. */
static GBytes *
read_all (BmapSource *source, gsize chunk, GError **error)
{
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autofree guint8 *buf = g_malloc (chunk);

  for (;;) {
    gssize n = bmap_source_read (source, buf, chunk, error);

    if (n < 0)
      return NULL;
    if (n == 0)
      break;
    g_assert_cmpint (n, <=, (gssize) chunk);
    g_byte_array_append (out, buf, (guint) n);
  }
  /* The end stays the end. */
  g_assert_cmpint (bmap_source_read (source, buf, chunk, error), ==, 0);
  return g_byte_array_free_to_bytes (g_steal_pointer (&out));
}

static GBytes *
decode_path (const char *path, BmapCompression expected, gsize chunk, GError **error)
{
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GError) local_error = NULL;

  source = bmap_source_new_for_path (path, &local_error);
  g_assert_no_error (local_error);
  g_assert_cmpint (bmap_source_get_compression (source), ==, expected);
  g_assert_cmpstr (bmap_source_get_name (source), ==, path);
  return read_all (source, chunk, error);
}

static void
assert_bytes_equal (GBytes *a, GBytes *b)
{
  g_assert_nonnull (a);
  g_assert_nonnull (b);
  g_assert_cmpuint (g_bytes_get_size (a), ==, g_bytes_get_size (b));
  g_assert_true (g_bytes_equal (a, b));
}

/* Every format, several kinds of data, big and tiny read buffers. */
static void
test_round_trip (void)
{
  g_autoptr (GBytes) sparse = make_sparse_data (6 * MIB + 123);
  g_autoptr (GBytes) random = make_random_data (3 * MIB + 7, 42);
  g_autoptr (GBytes) small = make_random_data (1000, 7);
  g_autoptr (GBytes) empty = g_bytes_new (NULL, 0);
  GBytes *inputs[] = { sparse, random, small, empty };

  for (Fmt fmt = 0; fmt < N_FMTS; fmt++) {
    for (gsize i = 0; i < G_N_ELEMENTS (inputs); i++) {
      g_autoptr (GBytes) packed = compress_fmt (fmt, inputs[i]);
      /* The name says nothing true: only the magic counts. */
      g_autofree char *path = write_tmp_bytes ("image.img", packed);
      g_autoptr (BmapSource) source = NULL;
      g_autoptr (GBytes) out = NULL;
      g_autoptr (GError) error = NULL;

      g_test_message ("%s, %" G_GSIZE_FORMAT " bytes",
                      bmap_compression_to_string (fmt_compression[fmt]),
                      g_bytes_get_size (inputs[i]));
      source = bmap_source_new_for_path (path, &error);
      g_assert_no_error (error);
      g_assert_cmpint (bmap_source_get_compression (source), ==, fmt_compression[fmt]);
      g_assert_false (bmap_source_is_seekable (source));
      g_assert_cmpuint (bmap_source_get_size (source), ==, 0);
      out = read_all (source, 4 * MIB, &error);
      g_assert_no_error (error);
      assert_bytes_equal (out, inputs[i]);
      g_assert_cmpuint (bmap_source_get_bytes_in (source), ==, g_bytes_get_size (packed));

      /* Odd, tiny reads walk every state boundary of the decoder. */
      if (g_bytes_get_size (inputs[i]) <= 1000) {
        g_autoptr (GBytes) out2 = decode_path (path, fmt_compression[fmt], 7, &error);

        g_assert_no_error (error);
        assert_bytes_equal (out2, inputs[i]);
      }
    }
  }
}

/* Skipping decodes what it drops: what is read between skips is the image
 * at the right offsets, the end is found, and a broken stream is an error
 * even where everything is skipped. */
static void
test_skip (void)
{
  g_autoptr (GBytes) head = make_random_data (MIB + 333, 21);
  g_autoptr (GBytes) tail = make_sparse_data (5 * MIB);
  g_autoptr (GBytes) data = concat (head, tail);
  const guint8 *want = g_bytes_get_data (data, NULL);
  gsize size = g_bytes_get_size (data);
  /* (skip, read) pairs: inside and across the xz test blocks (1 MiB). */
  static const gsize steps[][2] = {
    { 0, 100 }, { 5000, 4096 }, { MIB, 10 }, { 3 * MIB / 2, MIB + 1 }, { 1, 1 },
  };

  for (Fmt fmt = 0; fmt < N_FMTS; fmt++) {
    g_autoptr (GBytes) packed = compress_fmt (fmt, data);
    g_autofree char *path = write_tmp_bytes ("skip.img", packed);
    g_autofree char *cut = write_tmp ("skip-cut.img", g_bytes_get_data (packed, NULL),
                                      g_bytes_get_size (packed) - 5);
    g_autoptr (BmapSource) source = bmap_source_new_for_path (path, NULL);
    g_autoptr (BmapSource) cut_source = bmap_source_new_for_path (cut, NULL);
    g_autoptr (GError) error = NULL;
    g_autofree guint8 *buf = g_malloc (2 * MIB);
    gsize pos = 0;

    g_test_message ("%s", bmap_compression_to_string (fmt_compression[fmt]));
    g_assert_nonnull (source);
    for (gsize i = 0; i < G_N_ELEMENTS (steps); i++) {
      g_assert_cmpint (bmap_source_skip (source, steps[i][0], &error), ==, (gssize) steps[i][0]);
      g_assert_no_error (error);
      pos += steps[i][0];
      g_assert_cmpint (bmap_source_read_full (source, buf, steps[i][1], &error), ==,
                       (gssize) steps[i][1]);
      g_assert_no_error (error);
      g_assert_cmpmem (buf, steps[i][1], want + pos, steps[i][1]);
      pos += steps[i][1];
    }
    /* Past the end: the rest, then nothing. */
    g_assert_cmpint (bmap_source_skip (source, G_MAXUINT64, &error), ==, (gssize) (size - pos));
    g_assert_no_error (error);
    g_assert_cmpint (bmap_source_skip (source, 1, &error), ==, 0);
    g_assert_cmpint (bmap_source_read (source, buf, 1, &error), ==, 0);
    g_assert_no_error (error);

    g_assert_nonnull (cut_source);
    g_assert_cmpint (bmap_source_skip (cut_source, G_MAXUINT64, &error), ==, -1);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
  }
}

/* An xz file told which bytes will be read decodes only the blocks that
 * hold them (1 MiB blocks here): it reads them right, skips the others,
 * and refuses a read in a block it was told would be skipped. */
static void
test_xz_wanted (void)
{
  g_autoptr (GBytes) data = make_random_data (6 * MIB, 31);
  g_autoptr (GBytes) packed = compress_fmt (FMT_XZ, data);
  g_autofree char *path = write_tmp_bytes ("wanted.xz", packed);
  g_autoptr (BmapSource) source = bmap_source_new_for_path (path, NULL);
  g_autoptr (BmapMap) map = bmap_map_new (6 * MIB, 4096, BMAP_CHECKSUM_NONE);
  const guint8 *want = g_bytes_get_data (data, NULL);
  g_autofree guint8 *buf = g_malloc (2 * MIB);
  g_autoptr (GError) error = NULL;

  g_assert_nonnull (source);
  /* Blocks 1 and 2 hold bytes [MIB + 8 KiB, 2 MiB + 4 KiB); 0, 3, 4, 5 none. */
  bmap_map_add_range (map, MIB / 4096 + 2, 2 * MIB / 4096, NULL);
  bmap_source_set_wanted (source, map);

  g_assert_cmpint (bmap_source_skip (source, MIB + 8192, &error), ==, MIB + 8192);
  g_assert_no_error (error);
  g_assert_cmpint (bmap_source_read_full (source, buf, MIB - 4096, &error), ==, MIB - 4096);
  g_assert_no_error (error);
  g_assert_cmpmem (buf, MIB - 4096, want + MIB + 8192, MIB - 4096);
  /* The rest of block 2 is dropped, block 3 passed over. */
  g_assert_cmpint (bmap_source_skip (source, 2 * MIB - 4096, &error), ==, 2 * MIB - 4096);
  g_assert_no_error (error);
  g_assert_cmpint (bmap_source_read (source, buf, 10, &error), ==, -1);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT);
}

/* Reads fill the caller's buffer, so the copy engine gets full chunks. */
static void
test_read_fills_buffer (void)
{
  g_autoptr (GBytes) data = make_sparse_data (5 * MIB);

  for (Fmt fmt = 0; fmt < N_FMTS; fmt++) {
    g_autoptr (GBytes) packed = compress_fmt (fmt, data);
    g_autofree char *path = write_tmp_bytes ("fill", packed);
    g_autoptr (BmapSource) source = NULL;
    g_autoptr (GError) error = NULL;
    g_autofree guint8 *buf = g_malloc (2 * MIB);

    source = bmap_source_new_for_path (path, &error);
    g_assert_no_error (error);
    g_assert_cmpint (bmap_source_read (source, buf, 2 * MIB, &error), ==, 2 * MIB);
    g_assert_cmpint (bmap_source_read (source, buf, 2 * MIB, &error), ==, 2 * MIB);
    g_assert_cmpint (bmap_source_read_full (source, buf, 2 * MIB, &error), ==, MIB);
    g_assert_no_error (error);
    g_assert_cmpint (bmap_source_read_full (source, buf, 2 * MIB, &error), ==, 0);
  }
}

/* Multi-member gzip (pigz, cat a.gz b.gz), multi-stream xz and bzip2,
 * multi-frame zstd and lz4 decode to the concatenation. */
static void
test_concatenated (void)
{
  g_autoptr (GBytes) a = make_random_data (300 * 1024, 1);
  g_autoptr (GBytes) b = make_sparse_data (2 * MIB);
  g_autoptr (GBytes) c = make_random_data (10, 3);
  g_autoptr (GBytes) ab = concat (a, b);
  g_autoptr (GBytes) expected = concat (ab, c);

  for (Fmt fmt = 0; fmt < N_FMTS; fmt++) {
    g_autoptr (GBytes) pa = compress_fmt (fmt, a);
    g_autoptr (GBytes) pb = compress_fmt (fmt, b);
    g_autoptr (GBytes) pc = compress_fmt (fmt, c);
    g_autoptr (GBytes) pab = concat (pa, pb);
    g_autoptr (GBytes) packed = concat (pab, pc);
    g_autofree char *path = write_tmp_bytes ("multi.img", packed);
    g_autoptr (GBytes) out = NULL;
    g_autoptr (GError) error = NULL;

    out = decode_path (path, fmt_compression[fmt], MIB, &error);
    g_assert_no_error (error);
    assert_bytes_equal (out, expected);
  }
}

/* xz stream padding; zstd and lz4 skippable frames, leading ones too (the
 * frame after them tells the format). */
static void
test_padding_and_skippable_frames (void)
{
  g_autoptr (GBytes) data = make_random_data (100000, 5);
  g_autoptr (GBytes) twice = concat (data, data);
  static const guint8 four_zeros[4] = { 0 };
  static const guint8 skippable[] = { 0x5e, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5 };
  g_autoptr (GBytes) pad = g_bytes_new_static (four_zeros, sizeof (four_zeros));
  g_autoptr (GBytes) skip = g_bytes_new_static (skippable, sizeof (skippable));

  {
    g_autoptr (GBytes) x = compress_fmt (FMT_XZ, data);
    g_autoptr (GBytes) x_pad = concat (x, pad);
    g_autoptr (GBytes) x_pad_x = concat (x_pad, x);
    g_autoptr (GBytes) packed = concat (x_pad_x, pad);
    g_autofree char *path = write_tmp_bytes ("padded.xz", packed);
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) out = decode_path (path, BMAP_COMPRESSION_XZ, MIB, &error);

    g_assert_no_error (error);
    assert_bytes_equal (out, twice);
  }

  for (Fmt fmt = FMT_ZSTD; fmt <= FMT_LZ4; fmt++) {
    g_autoptr (GBytes) f = compress_fmt (fmt, data);
    g_autoptr (GBytes) s_f = concat (skip, f);
    g_autoptr (GBytes) s_f_s = concat (s_f, skip);
    g_autoptr (GBytes) packed = concat (s_f_s, f);
    g_autofree char *path = write_tmp_bytes ("skippable", packed);
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) out = decode_path (path, fmt_compression[fmt], MIB, &error);

    g_assert_no_error (error);
    assert_bytes_equal (out, twice);
  }
}

/* Zeros after the last member (tape padding) are accepted, as gzip -d
 * does; anything else after it is refused. */
static void
test_trailing_data (void)
{
  g_autoptr (GBytes) data = make_random_data (50000, 9);
  g_autofree guint8 *zeros = g_malloc0 (3 * MIB);
  g_autoptr (GBytes) zero_pad = g_bytes_new_static (zeros, 3 * MIB);
  static const char junk[] = "\0\0\0junk after the end";
  g_autoptr (GBytes) garbage = g_bytes_new_static (junk, sizeof (junk) - 1);

  for (Fmt fmt = 0; fmt < N_FMTS; fmt++) {
    g_autoptr (GBytes) packed = compress_fmt (fmt, data);
    g_autoptr (GBytes) padded = concat (packed, zero_pad);
    g_autoptr (GBytes) junked = concat (packed, garbage);
    g_autofree char *path_pad = write_tmp_bytes ("padded", padded);
    g_autofree char *path_junk = write_tmp_bytes ("junked", junked);
    g_autoptr (GBytes) out = NULL;
    g_autoptr (GBytes) out2 = NULL;
    g_autoptr (GError) error = NULL;

    /* xz allows only its own stream padding (multiples of 4): 3 MiB is. */
    out = decode_path (path_pad, fmt_compression[fmt], MIB, &error);
    g_assert_no_error (error);
    assert_bytes_equal (out, data);

    out2 = decode_path (path_junk, fmt_compression[fmt], MIB, &error);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
    g_assert_null (out2);
    g_test_message ("%s", error->message);
  }
}

/* A cut anywhere is an error, never a short success. */
static void
test_truncated (void)
{
  g_autoptr (GBytes) data = NULL;
  g_autoptr (GBytes) head = make_random_data (200000, 11);
  g_autoptr (GBytes) tail = make_sparse_data (2 * MIB);

  data = concat (head, tail);
  for (Fmt fmt = 0; fmt < N_FMTS; fmt++) {
    g_autoptr (GBytes) packed = compress_fmt (fmt, data);
    gsize len = g_bytes_get_size (packed);
    const gsize cuts[] = { 8, 12, 100, len / 3, len / 2, len - 9, len - 4, len - 1 };

    for (gsize i = 0; i < G_N_ELEMENTS (cuts); i++) {
      g_autofree char *path = write_tmp ("cut.img", g_bytes_get_data (packed, NULL), cuts[i]);
      g_autoptr (GBytes) out = NULL;
      g_autoptr (GError) error = NULL;

      out = decode_path (path, fmt_compression[fmt], MIB, &error);
      g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
      g_assert_null (out);
      g_assert_nonnull (strstr (error->message, path));
      /* A cut inside the final checksum reads as what it is. */
      if (i == G_N_ELEMENTS (cuts) - 1) {
        g_autofree char *want = g_strdup_printf ("%s stream is truncated",
                                                 bmap_compression_to_string (fmt_compression[fmt]));

        g_assert_nonnull (strstr (error->message, want));
      }
      g_test_message ("cut at %" G_GSIZE_FORMAT ": %s", cuts[i], error->message);
    }
  }
}

/* Every format here carries a checksum (gzip CRC32, xz CRC64, bzip2 CRCs,
 * zstd and lz4 with their content checksums on): a flipped byte fails. */
static void
test_corrupt (void)
{
  g_autoptr (GBytes) head = make_random_data (400000, 13);
  g_autoptr (GBytes) tail = make_sparse_data (2 * MIB);
  g_autoptr (GBytes) data = concat (head, tail);

  for (Fmt fmt = 0; fmt < N_FMTS; fmt++) {
    g_autoptr (GBytes) packed = compress_fmt (fmt, data);
    gsize len = g_bytes_get_size (packed);
    const gsize flips[] = { len / 4, len / 2, 2 * len / 3 };

    for (gsize i = 0; i < G_N_ELEMENTS (flips); i++) {
      g_autofree guint8 *bad = g_memdup2 (g_bytes_get_data (packed, NULL), len);
      g_autofree char *path = NULL;
      g_autoptr (GBytes) out = NULL;
      g_autoptr (GError) error = NULL;

      bad[flips[i]] ^= 0x55;
      path = write_tmp ("corrupt.img", bad, len);
      out = decode_path (path, fmt_compression[fmt], MIB, &error);
      g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
      g_assert_null (out);
      g_test_message ("flip at %" G_GSIZE_FORMAT ": %s", flips[i], error->message);
    }
  }

  /* A failed source keeps failing rather than going on past the hole. */
  {
    g_autoptr (GBytes) packed = compress_fmt (FMT_GZIP, data);
    gsize len = g_bytes_get_size (packed);
    g_autofree guint8 *bad = g_memdup2 (g_bytes_get_data (packed, NULL), len);
    g_autofree char *path = NULL;
    g_autoptr (BmapSource) source = NULL;
    g_autoptr (GError) error = NULL;
    g_autoptr (GError) error2 = NULL;
    g_autoptr (GBytes) out = NULL;
    guint8 buf[4096];

    bad[len / 3] ^= 0xff;
    path = write_tmp ("corrupt.gz", bad, len);
    source = bmap_source_new_for_path (path, &error);
    g_assert_no_error (error);
    out = read_all (source, MIB, &error);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
    g_assert_cmpint (bmap_source_read (source, buf, sizeof (buf), &error2), ==, -1);
    g_assert_error (error2, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
  }
}

typedef struct {
  int fd;
  GBytes *data;
  gsize chunk;
} Feeder;

/* Writes in small uneven pieces, so reads see every boundary. */
static gpointer
feed_pipe (gpointer user_data)
{
  Feeder *f = user_data;
  gsize len;
  const guint8 *p = g_bytes_get_data (f->data, &len);
  gsize off = 0;

  while (off < len) {
    gsize n = MIN (f->chunk + off % 7, len - off);
    gssize w = write (f->fd, p + off, n);

    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      break; /* the reader gave up; it fails the test itself */
    off += (gsize) w;
  }
  close (f->fd);
  return NULL;
}

static GBytes *
decode_through_pipe (GBytes *packed, gsize chunk, BmapCompression expected, GError **error)
{
  int fds[2];
  Feeder feeder;
  GThread *thread;
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GError) local_error = NULL;
  GBytes *out;

  g_assert_cmpint (pipe2 (fds, O_CLOEXEC), ==, 0);
  feeder = (Feeder){ fds[1], packed, chunk };
  thread = g_thread_new ("feeder", feed_pipe, &feeder);
  source = bmap_source_new (fds[0], TRUE, "<pipe>", &local_error);
  g_assert_no_error (local_error);
  g_assert_cmpint (bmap_source_get_compression (source), ==, expected);
  g_assert_false (bmap_source_is_seekable (source));
  g_assert_cmpuint (bmap_source_get_size (source), ==, 0);
  out = read_all (source, MIB, error);
  if (out != NULL)
    g_assert_cmpuint (bmap_source_get_bytes_in (source), ==, g_bytes_get_size (packed));
  /* Closing the read end lets a feeder blocked on a full pipe finish. */
  g_clear_pointer (&source, bmap_source_free);
  g_thread_join (thread);
  return out;
}

static void
test_pipe (void)
{
  g_autoptr (GBytes) data = make_sparse_data (3 * MIB + 5);

  for (Fmt fmt = 0; fmt < N_FMTS; fmt++) {
    g_autoptr (GBytes) packed = compress_fmt (fmt, data);
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) out = decode_through_pipe (packed, 1000, fmt_compression[fmt], &error);

    g_assert_no_error (error);
    assert_bytes_equal (out, data);
  }

  /* Raw through a pipe: the sniffed bytes are not lost. */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) out = decode_through_pipe (data, 3, BMAP_COMPRESSION_NONE, &error);

    g_assert_no_error (error);
    assert_bytes_equal (out, data);
  }

  /* A cut stream through a pipe fails too. */
  {
    g_autoptr (GBytes) packed = compress_fmt (FMT_GZIP, data);
    g_autoptr (GBytes) cut = g_bytes_new_from_bytes (packed, 0, g_bytes_get_size (packed) / 2);
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) out = decode_through_pipe (cut, 4096, BMAP_COMPRESSION_GZIP, &error);

    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
    g_assert_null (out);
  }

  /* An empty pipe is an empty raw image. */
  {
    g_autoptr (GBytes) nothing = g_bytes_new (NULL, 0);
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) out = decode_through_pipe (nothing, 1, BMAP_COMPRESSION_NONE, &error);

    g_assert_no_error (error);
    g_assert_cmpuint (g_bytes_get_size (out), ==, 0);
  }
}

/* An uncompressed regular file: seekable, sized, and the fd's offset is
 * where the caller left it. */
static void
test_raw_file (void)
{
  g_autoptr (GBytes) data = make_random_data (2 * MIB + 17, 21);
  g_autofree char *path = write_tmp_bytes ("raw.img.gz", data);
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) out = NULL;
  guint8 buf[16];

  source = bmap_source_new_for_path (path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bmap_source_get_compression (source), ==, BMAP_COMPRESSION_NONE);
  g_assert_true (bmap_source_is_seekable (source));
  g_assert_cmpuint (bmap_source_get_size (source), ==, g_bytes_get_size (data));
  g_assert_cmpint (lseek (bmap_source_get_fd (source), 0, SEEK_CUR), ==, 0);
  g_assert_cmpint (pread (bmap_source_get_fd (source), buf, sizeof (buf), MIB), ==, sizeof (buf));
  g_assert_cmpmem (buf, sizeof (buf), (const guint8 *) g_bytes_get_data (data, NULL) + MIB,
                   sizeof (buf));
  out = read_all (source, MIB, &error);
  g_assert_no_error (error);
  assert_bytes_equal (out, data);
  g_assert_cmpuint (bmap_source_get_bytes_in (source), ==, g_bytes_get_size (data));
}

/* bmap_source_new() on an fd the caller owns: not closed unless taken. */
static void
test_fd_ownership (void)
{
  g_autoptr (GBytes) data = make_random_data (1000, 3);
  g_autoptr (GBytes) packed = compress_fmt (FMT_ZSTD, data);
  g_autofree char *path = write_tmp_bytes ("fd.img", packed);
  g_autoptr (GError) error = NULL;
  BmapSource *source;
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  g_assert_cmpint (fd, >=, 0);
  source = bmap_source_new (fd, FALSE, "my image", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (bmap_source_get_name (source), ==, "my image");
  g_assert_cmpint (bmap_source_get_fd (source), ==, fd);
  bmap_source_free (source);
  /* Still open. */
  g_assert_cmpint (fcntl (fd, F_GETFD), >=, 0);
  close (fd);
}

/* The magic decides, never the name. */
static void
test_magic_not_name (void)
{
  g_autoptr (GBytes) data = make_random_data (5000, 4);
  g_autoptr (GBytes) gz = compress_fmt (FMT_GZIP, data);
  g_autoptr (GBytes) zst = compress_fmt (FMT_ZSTD, data);
  g_autofree char *gz_as_xz = write_tmp_bytes ("image.img.xz", gz);
  g_autofree char *zst_as_gz = write_tmp_bytes ("image.gz", zst);
  g_autofree char *raw_as_bz2 = write_tmp_bytes ("image.bz2", data);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) a = decode_path (gz_as_xz, BMAP_COMPRESSION_GZIP, MIB, &error);
  g_autoptr (GBytes) b = decode_path (zst_as_gz, BMAP_COMPRESSION_ZSTD, MIB, &error);
  g_autoptr (GBytes) c = decode_path (raw_as_bz2, BMAP_COMPRESSION_NONE, MIB, &error);

  g_assert_no_error (error);
  assert_bytes_equal (a, data);
  assert_bytes_equal (b, data);
  assert_bytes_equal (c, data);
}

static void
test_empty_file (void)
{
  g_autofree char *path = write_tmp ("empty.img.gz", "", 0);
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GError) error = NULL;
  guint8 buf[16];

  source = bmap_source_new_for_path (path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bmap_source_get_compression (source), ==, BMAP_COMPRESSION_NONE);
  g_assert_true (bmap_source_is_seekable (source));
  g_assert_cmpuint (bmap_source_get_size (source), ==, 0);
  g_assert_cmpint (bmap_source_read (source, buf, sizeof (buf), &error), ==, 0);
  g_assert_no_error (error);
}

/* Data shorter than a magic number, and data that only starts like one, is
 * raw. */
static void
test_short_and_near_magic (void)
{
  static const guint8 near_gzip[] = { 0x1f, 0x8b, 0x07, 0x00, 0x01 };
  static const guint8 one_byte[] = { 0x28 };
  const struct {
    const guint8 *data;
    gsize len;
  } cases[] = { { near_gzip, sizeof (near_gzip) }, { one_byte, 1 } };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *path = write_tmp ("short", cases[i].data, cases[i].len);
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) out = decode_path (path, BMAP_COMPRESSION_NONE, 3, &error);

    g_assert_no_error (error);
    g_assert_cmpmem (g_bytes_get_data (out, NULL), g_bytes_get_size (out), cases[i].data,
                     cases[i].len);
  }
}

static void
test_bad_paths (void)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  g_autofree char *missing = g_build_filename (dir, "missing.img", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSource) source = NULL;

  source = bmap_source_new_for_path (dir, &error);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT);
  g_assert_null (source);
  g_assert_nonnull (strstr (error->message, dir));
  g_clear_error (&error);

  source = bmap_source_new_for_path (missing, &error);
  g_assert_nonnull (error);
  g_assert_null (source);
  g_assert_nonnull (strstr (error->message, missing));
}

/* A failing read() is an I/O error, not a bad image. */
static void
test_read_error (void)
{
  g_autofree char *path = write_tmp ("write-only.img", "data", 4);
  int fd = open (path, O_WRONLY | O_CLOEXEC);
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSource) source = NULL;

  g_assert_cmpint (fd, >=, 0);
  source = bmap_source_new (fd, TRUE, path, &error);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_IO);
  g_assert_null (source);
  g_assert_nonnull (strstr (error->message, path));
}

static void
test_lz4_legacy (void)
{
  g_autoptr (GBytes) data = make_sparse_data (17 * MIB + 3);
  g_autoptr (GBytes) packed
      = compress_lz4_legacy (g_bytes_get_data (data, NULL), g_bytes_get_size (data));
  g_autoptr (GBytes) twice_packed = concat (packed, packed);
  g_autoptr (GBytes) twice = concat (data, data);
  g_autofree char *path = write_tmp_bytes ("legacy.img", twice_packed);
  g_autofree char *cut = write_tmp ("legacy-cut.img", g_bytes_get_data (packed, NULL),
                                    g_bytes_get_size (packed) - 10);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) out = decode_path (path, BMAP_COMPRESSION_LZ4, MIB, &error);
  g_autoptr (GBytes) out_big = decode_path (path, BMAP_COMPRESSION_LZ4, 9 * MIB, &error);
  g_autoptr (GBytes) out_cut = NULL;

  g_assert_no_error (error);
  assert_bytes_equal (out, twice);
  assert_bytes_equal (out_big, twice);

  out_cut = decode_path (cut, BMAP_COMPRESSION_LZ4, MIB, &error);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
  g_assert_null (out_cut);
}

/* Files made by the real tools, with their headers (gzip stores the file
 * name when given a file, xz -T writes blocks, lz4 -l the legacy format),
 * when the tools are installed. */
static void
test_command_line_tools (void)
{
  const struct {
    const char *program;
    const char *args;
    BmapCompression compression;
  } tools[] = {
    { "gzip", "-c", BMAP_COMPRESSION_GZIP },
    { "pigz", "-c -b 128", BMAP_COMPRESSION_GZIP },
    { "xz", "-c -T2 --block-size=1MiB", BMAP_COMPRESSION_XZ },
    { "xz", "-c --format=xz -0", BMAP_COMPRESSION_XZ },
    { "bzip2", "-c", BMAP_COMPRESSION_BZIP2 },
    { "pbzip2", "-c", BMAP_COMPRESSION_BZIP2 },
    { "zstd", "-c -q -T2", BMAP_COMPRESSION_ZSTD },
    { "lz4", "-c -q", BMAP_COMPRESSION_LZ4 },
    { "lz4", "-c -q -l", BMAP_COMPRESSION_LZ4 },
  };
  g_autoptr (GBytes) data = make_sparse_data (4 * MIB + 11);
  g_autofree char *input = write_tmp_bytes ("tool-input.img", data);
  guint ran = 0;

  for (gsize i = 0; i < G_N_ELEMENTS (tools); i++) {
    g_autofree char *output = g_strdup_printf ("%s.out%" G_GSIZE_FORMAT, input, i);
    g_autofree char *q_in = g_shell_quote (input);
    g_autofree char *q_out = g_shell_quote (output);
    g_autoptr (GBytes) out = NULL;
    g_autoptr (GError) error = NULL;

    if (!bmap_test_have_program (tools[i].program)) {
      g_test_message ("%s is not installed: not tested", tools[i].program);
      continue;
    }
    g_assert_cmpint (bmap_test_sh ("%s %s %s > %s", tools[i].program, tools[i].args, q_in, q_out),
                     ==, 0);
    out = decode_path (output, tools[i].compression, MIB, &error);
    g_assert_no_error (error);
    assert_bytes_equal (out, data);
    ran++;
  }
  if (ran == 0)
    g_test_skip ("none of gzip, xz, bzip2, zstd, lz4 is installed");
}

/* The fuzzers' gzip reproducers (tests/fuzz/regress/): ISA-L 2.30 leaves
 * avail_in wrapped around after this one's bad back-reference, and the
 * decoder took that as a count and aborted. Each is a corrupt image, with
 * either backend (this file is built for both), whatever the read size. */
static void
test_gzip_regressions (void)
{
  static const char *const files[] = { "gzip-isal-invalid-lookback.gz" };
  static const gsize chunks[] = { 1, 2, 4096, MIB };

  for (gsize f = 0; f < G_N_ELEMENTS (files); f++) {
    g_autofree char *path = g_test_build_filename (G_TEST_DIST, "fuzz", "regress", files[f], NULL);

    for (gsize c = 0; c < G_N_ELEMENTS (chunks); c++) {
      g_autoptr (GError) error = NULL;
      g_autoptr (GBytes) out = NULL;

      g_test_message ("%s, reads of %" G_GSIZE_FORMAT, files[f], chunks[c]);
      out = decode_path (path, BMAP_COMPRESSION_GZIP, chunks[c], &error);
      g_assert_null (out);
      g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
      g_assert_nonnull (strstr (error->message, "corrupt gzip data at compressed offset"));
    }
  }
}

/* bmaptool's own test image, when the shared corpus is beside the tree. */
static void
test_compat_image (void)
{
  g_autofree char *dir = g_test_build_filename (G_TEST_DIST, "..", "..", "shared", "compat", NULL);
  g_autofree char *image = g_build_filename (dir, "test.image.gz", NULL);
  g_autofree char *bmap = g_build_filename (dir, "test.image.bmap.v2.0", NULL);
  g_autofree char *bmap_text = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) out = NULL;
  const char *size_tag;

  if (!g_file_test (image, G_FILE_TEST_EXISTS) || !g_file_test (bmap, G_FILE_TEST_EXISTS)) {
    g_test_skip ("shared/compat/test.image.gz is not there");
    return;
  }
  g_assert_true (g_file_get_contents (bmap, &bmap_text, NULL, NULL));
  size_tag = strstr (bmap_text, "<ImageSize>");
  g_assert_nonnull (size_tag);
  out = decode_path (image, BMAP_COMPRESSION_GZIP, MIB, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (out), ==,
                    g_ascii_strtoull (size_tag + strlen ("<ImageSize>"), NULL, 10));
}

/* As decode_through_pipe(), for an archive: the size is the member's. */
static GBytes *
decode_through_pipe_archive (GBytes *packed, BmapCompression expected, GError **error)
{
  int fds[2];
  Feeder feeder;
  GThread *thread;
  g_autoptr (BmapSource) source = NULL;
  GBytes *out = NULL;

  g_assert_cmpint (pipe2 (fds, O_CLOEXEC), ==, 0);
  feeder = (Feeder){ fds[1], packed, 999 };
  thread = g_thread_new ("feeder", feed_pipe, &feeder);
  source = bmap_source_new (fds[0], TRUE, "<pipe>", error);
  if (source != NULL) {
    g_assert_cmpint (bmap_source_get_compression (source), ==, expected);
    g_assert_cmpint (bmap_source_get_container (source), !=, BMAP_CONTAINER_NONE);
    g_assert_false (bmap_source_is_seekable (source));
    out = read_all (source, MIB, error);
  }
  g_clear_pointer (&source, bmap_source_free);
  g_thread_join (thread);
  return out;
}

/* ---- archives and lzop (issue 11) ---------------------------------------- */

/* A sparse image of an odd size in a directory of its own, named "disk.img",
 * so archives of it hold "disk.img". */
static char *
make_archive_image (GBytes **contents)
{
  g_autofree char *dir = bmap_test_tmpdir ();
  char *path = g_build_filename (dir, "disk.img", NULL);
  const BmapTestExtent extents[] = {
    { 0, 5000 },
    { 1 * MIB + 3, 300000 },
    { 3 * MIB - 77, 77 },
  };

  bmap_test_make_image (path, 3 * MIB + 4093, extents, G_N_ELEMENTS (extents));
  *contents = bmap_test_read_file (path);
  return path;
}

/* Runs "@command" in the image's directory with {} for the image's name and
 * returns the path it wrote; NULL when @program is not installed. */
static char *
make_archive (const char *image, const char *program, const char *command, const char *suffix)
{
  g_autofree char *dir = g_path_get_dirname (image);
  g_autofree char *q_dir = g_shell_quote (dir);
  g_autofree char *out = g_strconcat (image, suffix, NULL);
  g_autofree char *q_out = g_shell_quote (out);
  g_autoptr (GString) cmd = g_string_new (command);

  if (!bmap_test_have_program (program)) {
    g_test_message ("%s is not installed: %s not tested", program, suffix);
    return NULL;
  }
  g_string_replace (cmd, "{}", "disk.img", 0);
  g_assert_cmpint (bmap_test_sh ("cd %s && (%s) > %s", q_dir, cmd->str, q_out), ==, 0);
  return g_steal_pointer (&out);
}

static BmapSource *
open_archive (const char *path, BmapCompression compression, BmapContainer container,
              const char *format)
{
  g_autoptr (GError) error = NULL;
  BmapSource *source = bmap_source_new_for_path (path, &error);

  g_assert_no_error (error);
  g_assert_cmpint (bmap_source_get_compression (source), ==, compression);
  g_assert_cmpint (bmap_source_get_container (source), ==, container);
  g_assert_cmpstr (bmap_source_get_format (source), ==, format);
  g_assert_false (bmap_source_is_seekable (source));
  return source;
}

/* Every tar that bmaptool's tests make, and plain tar: the image comes out,
 * not the archive, from a file and from a pipe, read in odd pieces. */
static void
test_archive_tar (void)
{
  const struct {
    const char *program;
    const char *command;
    const char *suffix;
    BmapCompression compression;
    const char *format;
  } cases[] = {
    { "tar", "tar -c {}", ".tar", BMAP_COMPRESSION_NONE, "tar" },
    { "gzip", "tar -c -z {}", ".tar.gz", BMAP_COMPRESSION_GZIP, "tar.gz" },
    { "bzip2", "tar -c -j {}", ".tar.bz2", BMAP_COMPRESSION_BZIP2, "tar.bz2" },
    { "xz", "tar -c -J {}", ".tar.xz", BMAP_COMPRESSION_XZ, "tar.xz" },
    /* With an index: the block reader's first bytes come from a probe. */
    { "xz", "tar -c {} | xz -T2 --block-size=1MiB", ".blocks.tar.xz", BMAP_COMPRESSION_XZ,
      "tar.xz" },
    { "lzop", "tar -c --lzo {}", ".tar.lzo", BMAP_COMPRESSION_LZO, "tar.lzo" },
    { "lz4", "tar -c -Ilz4 {}", ".tar.lz4", BMAP_COMPRESSION_LZ4, "tar.lz4" },
    { "zstd", "tar -c -Izstd {}", ".tar.zst", BMAP_COMPRESSION_ZSTD, "tar.zst" },
    /* GNU sparse members: holes come out as zeros, a trailing one too. */
    { "gzip", "tar -c -S -z {}", ".sparse.tar.gz", BMAP_COMPRESSION_GZIP, "tar.gz" },
    { "tar", "tar -c --format=pax {}", ".pax.tar", BMAP_COMPRESSION_NONE, "tar" },
  };
  g_autoptr (GBytes) data = NULL;
  g_autofree char *image = make_archive_image (&data);

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *path
        = make_archive (image, cases[i].program, cases[i].command, cases[i].suffix);
    g_autoptr (BmapSource) source = NULL;
    g_autoptr (GBytes) out = NULL;
    g_autoptr (GBytes) packed = NULL;
    g_autoptr (GBytes) piped = NULL;
    g_autoptr (GError) error = NULL;

    if (path == NULL)
      continue;
    g_test_message ("%s", cases[i].suffix);
    source = open_archive (path, cases[i].compression, BMAP_CONTAINER_TAR, cases[i].format);
    g_assert_cmpstr (bmap_source_get_member (source), ==, "disk.img");
    g_assert_cmpuint (bmap_source_get_size (source), ==, g_bytes_get_size (data));
    out = read_all (source, 4093, &error);
    g_assert_no_error (error);
    assert_bytes_equal (out, data);

    packed = bmap_test_read_file (path);
    piped = decode_through_pipe_archive (packed, cases[i].compression, &error);
    g_assert_no_error (error);
    assert_bytes_equal (piped, data);
  }
}

/* zip as bmaptool's tests make it (to stdout, so with data descriptors),
 * to a file, and stored. */
static void
test_archive_zip (void)
{
  const struct {
    const char *command;
    const char *suffix;
  } cases[] = {
    { "zip -q -j - {}", ".zip" },
    { "zip -q -j -0 - {}", ".stored.zip" },
    { "zip -q -j out.zip {} && cat out.zip && rm out.zip", ".file.zip" },
    { "mkdir -p d && cp {} d && zip -q -r - d && rm -r d", ".dir.zip" },
  };
  g_autoptr (GBytes) data = NULL;
  g_autofree char *image = make_archive_image (&data);

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *path = make_archive (image, "zip", cases[i].command, cases[i].suffix);
    g_autoptr (BmapSource) source = NULL;
    g_autoptr (GBytes) out = NULL;
    g_autoptr (GBytes) packed = NULL;
    g_autoptr (GBytes) piped = NULL;
    g_autoptr (GError) error = NULL;

    if (path == NULL)
      return;
    g_test_message ("%s", cases[i].suffix);
    source = open_archive (path, BMAP_COMPRESSION_NONE, BMAP_CONTAINER_ZIP, "zip");
    g_assert_true (g_str_has_suffix (bmap_source_get_member (source), "disk.img"));
    out = read_all (source, 4093, &error);
    g_assert_no_error (error);
    assert_bytes_equal (out, data);

    packed = bmap_test_read_file (path);
    piped = decode_through_pipe_archive (packed, BMAP_COMPRESSION_NONE, &error);
    g_assert_no_error (error);
    assert_bytes_equal (piped, data);
  }
}

/* 7z and rar are named and refused, as are zip members that are encrypted
 * or compressed with a method other than deflate: never read as raw. */
static void
test_archive_refused (void)
{
  static const guint8 sevenzip[] = { '7', 'z', 0xbc, 0xaf, 0x27, 0x1c, 0, 4, 1, 2, 3, 4 };
  static const guint8 rar4[] = { 'R', 'a', 'r', '!', 0x1a, 0x07, 0x00, 0xcf, 0x90, 0x73 };
  static const guint8 rar5[] = { 'R', 'a', 'r', '!', 0x1a, 0x07, 0x01, 0x00, 0x33, 0x92 };
  const struct {
    const char *name;
    const guint8 *data;
    gsize len;
    const char *says;
  } magics[] = {
    { "a.7z", sevenzip, sizeof (sevenzip), "7z archive" },
    { "a.rar", rar4, sizeof (rar4), "rar archive" },
    { "a5.rar", rar5, sizeof (rar5), "rar archive" },
  };
  g_autoptr (GBytes) data = NULL;
  g_autofree char *image = make_archive_image (&data);
  const struct {
    const char *command;
    const char *suffix;
    const char *says;
  } zips[] = {
    { "zip -q -j -P secret - {}", ".enc.zip", "is encrypted" },
    { "zip -q -j -Z bzip2 - {}", ".bz2.zip", "is compressed with bzip" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (magics); i++) {
    g_autofree char *path = write_tmp (magics[i].name, magics[i].data, magics[i].len);
    g_autoptr (GBytes) bytes = g_bytes_new_static (magics[i].data, magics[i].len);
    g_autoptr (GBytes) packed = compress_gzip (magics[i].data, magics[i].len);
    g_autoptr (GError) error = NULL;
    g_autoptr (BmapSource) source = bmap_source_new_for_path (path, &error);
    g_autoptr (GBytes) piped = NULL;

    g_assert_null (source);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED);
    g_assert_nonnull (strstr (error->message, magics[i].says));
    g_assert_nonnull (strstr (error->message, path));
    g_clear_error (&error);

    /* Compressed or through a pipe, the same. */
    piped = decode_through_pipe_archive (packed, BMAP_COMPRESSION_GZIP, &error);
    g_assert_null (piped);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED);
    g_clear_error (&error);
    piped = decode_through_pipe_archive (bytes, BMAP_COMPRESSION_NONE, &error);
    g_assert_null (piped);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED);
  }

  for (gsize i = 0; i < G_N_ELEMENTS (zips); i++) {
    g_autofree char *path = make_archive (image, "zip", zips[i].command, zips[i].suffix);
    g_autoptr (GError) error = NULL;
    g_autoptr (BmapSource) source = NULL;

    if (path == NULL)
      return;
    source = bmap_source_new_for_path (path, &error);
    g_assert_null (source);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED);
    g_test_message ("%s", error->message);
    g_assert_nonnull (strstr (error->message, zips[i].says));
    g_assert_nonnull (strstr (error->message, "disk.img"));
  }
}

/* A 512-byte tar header block with a valid checksum. */
static void
append_tar_header (GByteArray *out, const char *name, char type, guint64 size)
{
  guint8 h[512] = { 0 };
  guint sum = 0;

  g_strlcpy ((char *) h, name, 100);
  g_snprintf ((char *) h + 100, 8, "%07o", 0644);
  g_snprintf ((char *) h + 124, 12, "%011" G_GINT64_MODIFIER "o", size);
  g_snprintf ((char *) h + 136, 12, "%011o", 0);
  h[156] = (guint8) type;
  memcpy (h + 257,
          "ustar\0"
          "00",
          8);
  memset (h + 148, ' ', 8);
  for (gsize i = 0; i < 512; i++)
    sum += h[i];
  g_snprintf ((char *) h + 148, 8, "%06o", sum);
  g_byte_array_append (out, h, 512);
}

static void
append_tar_data (GByteArray *out, const guint8 *data, gsize len)
{
  static const guint8 zeros[512];

  g_byte_array_append (out, data, (guint) len);
  if (len % 512 != 0)
    g_byte_array_append (out, zeros, (guint) (512 - len % 512));
}

/* The first regular member is the image: directories, links and pax
 * headers before it are passed over, files after it are not read. */
static void
test_archive_first_member (void)
{
  g_autoptr (GByteArray) tar = g_byte_array_new ();
  g_autoptr (GBytes) first = make_random_data (10007, 1);
  g_autoptr (GBytes) second = make_random_data (5000, 2);
  static const char pax[] = "21 path=images/a.img\n";
  g_autofree char *path = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GBytes) out = NULL;
  g_autoptr (GError) error = NULL;

  append_tar_header (tar, "images/", '5', 0);
  append_tar_header (tar, "images/link", '2', 0);
  append_tar_header (tar, "PaxHeader", 'x', strlen (pax));
  append_tar_data (tar, (const guint8 *) pax, strlen (pax));
  append_tar_header (tar, "images/x", '0', g_bytes_get_size (first));
  append_tar_data (tar, g_bytes_get_data (first, NULL), g_bytes_get_size (first));
  append_tar_header (tar, "images/b.img", '0', g_bytes_get_size (second));
  append_tar_data (tar, g_bytes_get_data (second, NULL), g_bytes_get_size (second));
  g_byte_array_set_size (tar, tar->len + 1024); /* the end: two zero blocks */
  memset (tar->data + tar->len - 1024, 0, 1024);

  path = write_tmp ("members.tar", tar->data, tar->len);
  source = open_archive (path, BMAP_COMPRESSION_NONE, BMAP_CONTAINER_TAR, "tar");
  g_assert_cmpstr (bmap_source_get_member (source), ==, "images/a.img");
  out = read_all (source, MIB, &error);
  g_assert_no_error (error);
  assert_bytes_equal (out, first);
}

/* An archive without a regular file, and one cut inside the image, fail;
 * neither is taken for a raw image. */
static void
test_archive_broken (void)
{
  g_autoptr (GByteArray) dirs = g_byte_array_new ();
  g_autoptr (GByteArray) cut = g_byte_array_new ();
  g_autoptr (GBytes) data = make_random_data (100000, 3);
  g_autofree char *dirs_path = NULL;
  g_autofree char *cut_path = NULL;
  g_autoptr (GBytes) packed = NULL;
  g_autoptr (GBytes) out = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GError) error = NULL;

  append_tar_header (dirs, "a/", '5', 0);
  append_tar_header (dirs, "a/b/", '5', 0);
  g_byte_array_set_size (dirs, dirs->len + 1024);
  memset (dirs->data + dirs->len - 1024, 0, 1024);
  dirs_path = write_tmp ("dirs.tar", dirs->data, dirs->len);
  source = bmap_source_new_for_path (dirs_path, &error);
  g_assert_null (source);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
  g_assert_nonnull (strstr (error->message, "no regular file"));
  g_clear_error (&error);

  append_tar_header (cut, "disk.img", '0', g_bytes_get_size (data));
  g_byte_array_append (cut, g_bytes_get_data (data, NULL), 60000);
  packed = compress_gzip (cut->data, cut->len);
  cut_path = write_tmp_bytes ("cut.tar.gz", packed);
  source = open_archive (cut_path, BMAP_COMPRESSION_GZIP, BMAP_CONTAINER_TAR, "tar.gz");
  out = read_all (source, MIB, &error);
  g_assert_null (out);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
}

/* What libarchive holds in memory is bounded: it refuses a special header
 * over 1 MiB itself (a pax header of 17 MiB here is not allocated), and
 * more than 16 MiB of headers before the image is refused as a limit. */
static void
test_archive_header_limit (void)
{
  g_autoptr (GByteArray) tar = g_byte_array_new ();
  g_autoptr (GByteArray) dirs = g_byte_array_new ();
  gsize pax_len = 17 * MIB;
  g_autofree guint8 *pax = g_malloc (pax_len);
  g_autofree char *path = NULL;
  g_autofree char *dirs_path = NULL;
  g_autoptr (GBytes) packed = NULL;
  g_autoptr (GBytes) dirs_packed = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *prefix = g_strdup_printf ("%" G_GSIZE_FORMAT " comment=", pax_len);

  memset (pax, 'x', pax_len);
  memcpy (pax, prefix, strlen (prefix));
  pax[pax_len - 1] = '\n';
  append_tar_header (tar, "PaxHeader", 'x', pax_len);
  append_tar_data (tar, pax, pax_len);
  append_tar_header (tar, "disk.img", '0', 0);
  g_byte_array_set_size (tar, tar->len + 1024);
  memset (tar->data + tar->len - 1024, 0, 1024);
  packed = compress_zstd (tar->data, tar->len);
  path = write_tmp_bytes ("big-header.tar.zst", packed);
  source = bmap_source_new_for_path (path, &error);
  g_assert_null (source);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
  g_assert_nonnull (strstr (error->message, "too large"));
  g_clear_error (&error);

  for (guint i = 0; i < 40000; i++) {
    g_autofree char *name = g_strdup_printf ("d%u/", i);

    append_tar_header (dirs, name, '5', 0);
  }
  append_tar_header (dirs, "disk.img", '0', 0);
  g_byte_array_set_size (dirs, dirs->len + 1024);
  memset (dirs->data + dirs->len - 1024, 0, 1024);
  dirs_packed = compress_zstd (dirs->data, dirs->len);
  dirs_path = write_tmp_bytes ("many-dirs.tar.zst", dirs_packed);
  source = bmap_source_new_for_path (dirs_path, &error);
  g_assert_null (source);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT);
  g_assert_nonnull (strstr (error->message, "headers before the first file"));
}

/* A raw image is not taken for a tar because of a stray "ustar" or a block
 * that only looks like a header: the checksum must match. */
static void
test_archive_near_tar (void)
{
  g_autoptr (GByteArray) tar = g_byte_array_new ();
  g_autoptr (GBytes) data = make_random_data (8192, 4);
  g_autofree guint8 *raw = g_memdup2 (g_bytes_get_data (data, NULL), 8192);
  g_autofree char *path = NULL;
  g_autofree char *path2 = NULL;
  g_autoptr (GBytes) out = NULL;
  g_autoptr (GBytes) out2 = NULL;
  g_autoptr (GError) error = NULL;

  memcpy (raw + 257, "ustar", 5);
  path = write_tmp ("ustar.img", raw, 8192);
  out = decode_path (path, BMAP_COMPRESSION_NONE, MIB, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (out, NULL), g_bytes_get_size (out), raw, 8192);

  append_tar_header (tar, "disk.img", '0', 100);
  tar->data[0] ^= 1; /* the checksum no longer matches */
  g_byte_array_append (tar, raw, 4096);
  path2 = write_tmp ("bad-sum.img", tar->data, tar->len);
  out2 = decode_path (path2, BMAP_COMPRESSION_NONE, MIB, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (out2), ==, tar->len);
}

/* lzop files as the lzop tool writes them: compressed and stored blocks,
 * each compression level, CRC-32 instead of Adler-32, several files
 * joined, from a file and a pipe. */
static void
test_lzo (void)
{
  const char *const options[] = { "-c", "-1 -c", "-9 -c", "--crc32 -c" };
  g_autoptr (GBytes) sparse = make_sparse_data (3 * MIB + 5);
  g_autoptr (GBytes) random = make_random_data (600007, 5);
  g_autoptr (GBytes) both = concat (sparse, random);
  g_autofree char *sparse_path = write_tmp_bytes ("lzo-in-sparse", sparse);
  g_autofree char *random_path = write_tmp_bytes ("lzo-in-random", random);
  g_autofree char *q_sparse = g_shell_quote (sparse_path);
  g_autofree char *q_random = g_shell_quote (random_path);

  if (!bmap_test_have_program ("lzop")) {
    g_test_skip ("lzop is not installed");
    return;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (options); i++) {
    g_autofree char *path = g_strdup_printf ("%s.%" G_GSIZE_FORMAT ".lzo", sparse_path, i);
    g_autofree char *q_path = g_shell_quote (path);
    g_autoptr (GBytes) out = NULL;
    g_autoptr (GBytes) out_small = NULL;
    g_autoptr (GBytes) packed = NULL;
    g_autoptr (GBytes) piped = NULL;
    g_autoptr (GError) error = NULL;

    g_test_message ("lzop %s", options[i]);
    g_assert_cmpint (bmap_test_sh ("(lzop %s < %s; lzop %s < %s) > %s", options[i], q_sparse,
                                   options[i], q_random, q_path),
                     ==, 0);
    out = decode_path (path, BMAP_COMPRESSION_LZO, MIB, &error);
    g_assert_no_error (error);
    assert_bytes_equal (out, both);
    out_small = decode_path (path, BMAP_COMPRESSION_LZO, 4093, &error);
    g_assert_no_error (error);
    assert_bytes_equal (out_small, both);
    packed = bmap_test_read_file (path);
    piped = decode_through_pipe (packed, 1000, BMAP_COMPRESSION_LZO, &error);
    g_assert_no_error (error);
    assert_bytes_equal (piped, both);
  }
}

/* Corrupt lzop data fails with the offset; nothing corrupt is returned. */
static void
test_lzo_corrupt (void)
{
  g_autoptr (GBytes) random = make_random_data (300000, 6);
  g_autofree char *in_path = write_tmp_bytes ("lzo-corrupt-in", random);
  g_autofree char *q_in = g_shell_quote (in_path);
  g_autofree char *lzo_path = g_strconcat (in_path, ".lzo", NULL);
  g_autofree char *empty_path = g_strconcat (in_path, ".empty.lzo", NULL);
  g_autofree char *q_lzo = g_shell_quote (lzo_path);
  g_autofree char *q_empty = g_shell_quote (empty_path);
  g_autoptr (GBytes) packed = NULL;
  g_autoptr (GBytes) empty = NULL;
  gsize len, hdr_len;
  const guint8 *p;
  const struct {
    const char *what;
    gsize offset; /* from the end of the header; G_MAXSIZE: cut */
    const char *says;
  } cases[] = {
    { "a stored block's byte", 1000, "decoded block checksum mismatch" },
    { "the header", G_MAXSIZE - 1, "header checksum mismatch" },
    { "cut", G_MAXSIZE, "truncated" },
  };

  if (!bmap_test_have_program ("lzop")) {
    g_test_skip ("lzop is not installed");
    return;
  }
  g_assert_cmpint (
      bmap_test_sh ("lzop -c < %s > %s && lzop -c < /dev/null > %s", q_in, q_lzo, q_empty), ==, 0);
  packed = bmap_test_read_file (lzo_path);
  empty = bmap_test_read_file (empty_path);
  p = g_bytes_get_data (packed, &len);
  /* An empty file is the header and the end marker. */
  hdr_len = g_bytes_get_size (empty) - 4;

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree guint8 *bad = g_memdup2 (p, len);
    gsize bad_len = len;
    g_autofree char *path = NULL;
    g_autoptr (GBytes) out = NULL;
    g_autoptr (GError) error = NULL;

    if (cases[i].offset == G_MAXSIZE)
      bad_len = len - 100;
    else if (cases[i].offset == G_MAXSIZE - 1)
      bad[hdr_len - 6] ^= 0x40; /* in the mtime */
    else
      bad[hdr_len + 12 + cases[i].offset] ^= 0x01;
    path = write_tmp (cases[i].what, bad, bad_len);
    out = decode_path (path, BMAP_COMPRESSION_LZO, MIB, &error);
    g_test_message ("%s: %s", cases[i].what, error != NULL ? error->message : "no error");
    g_assert_null (out);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
    g_assert_nonnull (strstr (error->message, cases[i].says));
  }

  /* A block larger than lzop's 64 MiB is refused before any allocation. */
  {
    static const guint8 block[]
        = { 0x04, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x01 };
    g_autoptr (GByteArray) huge = g_byte_array_new ();
    g_autofree char *path = NULL;
    g_autoptr (GBytes) out = NULL;
    g_autoptr (GError) error = NULL;

    g_byte_array_append (huge, g_bytes_get_data (empty, NULL), (guint) hdr_len);
    g_byte_array_append (huge, block, sizeof (block));
    g_byte_array_set_size (huge, huge->len + 16);
    path = write_tmp ("huge-block.lzo", huge->data, huge->len);
    out = decode_path (path, BMAP_COMPRESSION_LZO, MIB, &error);
    g_assert_null (out);
    g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
    g_assert_nonnull (strstr (error->message, "bad block sizes"));
  }
}

/* A zip member whose data ends before the size in its local header is
 * corrupt: it is not padded with zeros as a sparse tar member's end is. */
static void
test_archive_zip_short_member (void)
{
  g_autoptr (GBytes) data = NULL;
  g_autofree char *image = make_archive_image (&data);
  g_autofree char *path = make_archive (
      image, "zip", "zip -q -j out.zip {} && cat out.zip && rm out.zip", ".short.zip");
  g_autoptr (GBytes) packed = NULL;
  g_autofree guint8 *bad = NULL;
  g_autofree char *bad_path = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (GBytes) out = NULL;
  g_autoptr (GError) error = NULL;
  gsize len;
  guint32 size;

  if (path == NULL)
    return;
  packed = bmap_test_read_file (path);
  g_bytes_get_data (packed, &len);
  bad = g_memdup2 (g_bytes_get_data (packed, NULL), len);
  /* The uncompressed size of the first local header, at offset 22. */
  g_assert_cmpmem (bad, 4, "PK\3\4", 4);
  memcpy (&size, bad + 22, 4);
  g_assert_cmpuint (GUINT32_FROM_LE (size), ==, g_bytes_get_size (data));
  size = GUINT32_TO_LE (GUINT32_FROM_LE (size) + 100);
  memcpy (bad + 22, &size, 4);
  bad_path = write_tmp ("short-member.zip", bad, len);

  source = open_archive (bad_path, BMAP_COMPRESSION_NONE, BMAP_CONTAINER_ZIP, "zip");
  out = read_all (source, MIB, &error);
  g_assert_null (out);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE);
  g_assert_nonnull (strstr (error->message, "but its header says"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* A feeder thread writing to a pipe whose reader gave up gets EPIPE. */
  signal (SIGPIPE, SIG_IGN);

  g_test_add_func ("/source/round-trip", test_round_trip);
  g_test_add_func ("/source/read-fills-buffer", test_read_fills_buffer);
  g_test_add_func ("/source/skip", test_skip);
  g_test_add_func ("/source/xz-wanted", test_xz_wanted);
  g_test_add_func ("/source/concatenated", test_concatenated);
  g_test_add_func ("/source/padding-and-skippable-frames", test_padding_and_skippable_frames);
  g_test_add_func ("/source/trailing-data", test_trailing_data);
  g_test_add_func ("/source/truncated", test_truncated);
  g_test_add_func ("/source/corrupt", test_corrupt);
  g_test_add_func ("/source/pipe", test_pipe);
  g_test_add_func ("/source/raw-file", test_raw_file);
  g_test_add_func ("/source/fd-ownership", test_fd_ownership);
  g_test_add_func ("/source/magic-not-name", test_magic_not_name);
  g_test_add_func ("/source/empty-file", test_empty_file);
  g_test_add_func ("/source/short-and-near-magic", test_short_and_near_magic);
  g_test_add_func ("/source/bad-paths", test_bad_paths);
  g_test_add_func ("/source/read-error", test_read_error);
  g_test_add_func ("/source/lz4-legacy", test_lz4_legacy);
  g_test_add_func ("/source/gzip-regressions", test_gzip_regressions);
  g_test_add_func ("/source/command-line-tools", test_command_line_tools);
  g_test_add_func ("/source/compat-image", test_compat_image);
  g_test_add_func ("/source/archive/tar", test_archive_tar);
  g_test_add_func ("/source/archive/zip", test_archive_zip);
  g_test_add_func ("/source/archive/refused", test_archive_refused);
  g_test_add_func ("/source/archive/first-member", test_archive_first_member);
  g_test_add_func ("/source/archive/broken", test_archive_broken);
  g_test_add_func ("/source/archive/header-limit", test_archive_header_limit);
  g_test_add_func ("/source/archive/near-tar", test_archive_near_tar);
  g_test_add_func ("/source/archive/zip-short-member", test_archive_zip_short_member);
  g_test_add_func ("/source/lzo", test_lzo);
  g_test_add_func ("/source/lzo-corrupt", test_lzo_corrupt);

  return g_test_run ();
}
