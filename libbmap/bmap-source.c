/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-archive.h"
#include "bmap-decoder.h"
#include "bmap-error.h"
#include "bmap-source.h"

/* bmap_source_skip() decodes into this much at a time: small enough to stay
 * in the CPU's cache, which measured faster than decoding into the copy's
 * larger buffers. */
#define SKIP_BUF_SIZE (256 * 1024)

/* Enough for every magic number of a compressed format; an archive is
 * looked for in the first BMAP_ARCHIVE_SNIFF_LEN decoded bytes. */
#define SNIFF_LEN 9
/* The first read of a sniff: small, since a raw regular file is read again
 * through pread() and this buffer is dropped. */
#define SNIFF_FIRST_READ (64 * 1024)

struct _BmapSource {
  int fd;
  GCancellable *cancellable;
  gboolean owns_fd;
  char *name;
  BmapCompression compression;
  gboolean seekable;
  guint64 size;
  BmapInput input;
  const BmapDecoderVTable *vtable;
  gpointer decoder;
  GError *failure; /* the first error: a broken stream does not resume */
  /* Decoded bytes read ahead to look for an archive, served first, and the
   * error the decoder met while reading them, reported after them. */
  guint8 *head;
  gsize head_len;
  gsize head_pos;
  GError *head_error;
  BmapContainer container;
  BmapArchive *archive;
  char *format;
  guint8 *skip_buf;       /* allocated by the first bmap_source_skip() */
  gboolean decoder_skips; /* the decoder's skip() is used */
};

const char *
bmap_compression_to_string (BmapCompression compression)
{
  switch (compression) {
    case BMAP_COMPRESSION_GZIP:
      return "gzip";
    case BMAP_COMPRESSION_XZ:
      return "xz";
    case BMAP_COMPRESSION_BZIP2:
      return "bzip2";
    case BMAP_COMPRESSION_ZSTD:
      return "zstd";
    case BMAP_COMPRESSION_LZ4:
      return "lz4";
    case BMAP_COMPRESSION_LZO:
      return "lzo";
    case BMAP_COMPRESSION_NONE:
    default:
      return "none";
  }
}

static gssize
read_eintr (const BmapInput *in, int fd, void *buf, gsize len)
{
  gssize n;

  if (in->can_block && in->cancel_fd >= 0) {
    struct pollfd fds[2] = {
      { .fd = fd, .events = POLLIN },
      { .fd = in->cancel_fd, .events = POLLIN },
    };

    while (poll (fds, 2, -1) < 0) {
      if (errno != EINTR)
        return -1;
    }
    if (fds[1].revents & POLLIN) {
      errno = ECANCELED;
      return -1;
    }
  }
  do
    n = read (fd, buf, len);
  while (n < 0 && errno == EINTR);
  return n;
}

static void
set_read_error (GError **error, const char *name, guint64 offset, int errsv)
{
  if (errsv == ECANCELED)
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "%s: reading canceled", name);
  else
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: read at offset %" G_GUINT64_FORMAT ": %s",
                 name, offset, g_strerror (errsv));
}

static gboolean
input_read (BmapInput *in, gsize max, GError **error)
{
  gssize n;

  max = MIN (max, in->size - in->len);
  n = read_eintr (in, in->fd, in->buf + in->len, max);
  if (n < 0) {
    set_read_error (error, in->name, in->bytes_in, errno);
    return FALSE;
  }
  if (n == 0)
    in->eof = TRUE;
  in->len += (gsize) n;
  in->bytes_in += (guint64) n;
  return TRUE;
}

gboolean
bmap_input_fill (BmapInput *in, GError **error)
{
  if (bmap_input_avail (in) > 0 || in->eof)
    return TRUE;
  in->buf_offset += in->len;
  in->pos = in->len = 0;
  return input_read (in, in->size, error);
}

gboolean
bmap_input_ensure (BmapInput *in, gsize n, GError **error)
{
  g_assert (n <= in->size);
  while (bmap_input_avail (in) < n && !in->eof) {
    if (in->size - in->pos < n) {
      /* A few bytes at a stream boundary: move them to the front. */
      memmove (in->buf, in->buf + in->pos, bmap_input_avail (in));
      in->buf_offset += in->pos;
      in->len -= in->pos;
      in->pos = 0;
    }
    if (!input_read (in, in->size, error))
      return FALSE;
  }
  return TRUE;
}

gboolean
bmap_input_need_more (BmapInput *in, const char *format, GError **error)
{
  if (in->eof) {
    bmap_input_set_truncated (in, format, error);
    return FALSE;
  }
  if (bmap_input_avail (in) == in->size) {
    /* A whole buffer that the decoder would not take. */
    bmap_input_set_corrupt (in, format, "the decoder makes no progress", error);
    return FALSE;
  }
  return bmap_input_ensure (in, bmap_input_avail (in) + 1, error);
}

gboolean
bmap_input_skip_zero_padding (BmapInput *in, const char *format, GError **error)
{
  for (;;) {
    const guint8 *p = bmap_input_data (in);
    gsize avail = bmap_input_avail (in);

    for (gsize i = 0; i < avail; i++) {
      if (p[i] != 0) {
        bmap_input_consume (in, i);
        g_set_error (
            error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
            "%s: trailing garbage after the %s data at compressed offset %" G_GUINT64_FORMAT,
            in->name, format, bmap_input_offset (in));
        return FALSE;
      }
    }
    bmap_input_consume (in, avail);
    if (in->eof)
      return TRUE;
    if (!bmap_input_fill (in, error))
      return FALSE;
  }
}

gboolean
bmap_input_consume_reported (BmapInput *in, gsize given, guint64 left, const char *format,
                             GError **error)
{
  if (given > bmap_input_avail (in) || left > given) {
    g_autofree char *detail
        = g_strdup_printf ("the decoder reports %" G_GUINT64_FORMAT
                           " bytes of input left of the %" G_GSIZE_FORMAT " it was given",
                           left, given);

    bmap_input_set_corrupt (in, format, detail, error);
    return FALSE;
  }
  in->pos += given - (gsize) left;
  return TRUE;
}

void
bmap_input_set_truncated (BmapInput *in, const char *format, GError **error)
{
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
               "%s: %s stream is truncated at compressed offset %" G_GUINT64_FORMAT, in->name,
               format, bmap_input_offset (in));
}

void
bmap_input_set_corrupt (BmapInput *in, const char *format, const char *detail, GError **error)
{
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
               "%s: corrupt %s data at compressed offset %" G_GUINT64_FORMAT ": %s", in->name,
               format, bmap_input_offset (in), detail);
}

static gboolean
is_skippable_frame (const guint8 *p)
{
  /* 0x184D2A50-0x184D2A5F, little endian: zstd and lz4 share these. */
  return (p[0] & 0xf0) == 0x50 && p[1] == 0x2a && p[2] == 0x4d && p[3] == 0x18;
}

static BmapCompression
compression_from_magic (const guint8 *p, gsize len)
{
  static const guint8 xz_magic[] = { 0xfd, '7', 'z', 'X', 'Z', 0x00 };
  static const guint8 zstd_magic[] = { 0x28, 0xb5, 0x2f, 0xfd };
  static const guint8 lz4_magic[] = { 0x04, 0x22, 0x4d, 0x18 };
  static const guint8 lz4_legacy_magic[] = { 0x02, 0x21, 0x4c, 0x18 };
  static const guint8 lzo_magic[] = { 0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a };

  /* gzip's method byte too: deflate is the only one there is. */
  if (len >= 3 && p[0] == 0x1f && p[1] == 0x8b && p[2] == 0x08)
    return BMAP_COMPRESSION_GZIP;
  if (len >= sizeof (xz_magic) && memcmp (p, xz_magic, sizeof (xz_magic)) == 0)
    return BMAP_COMPRESSION_XZ;
  if (len >= 4 && p[0] == 'B' && p[1] == 'Z' && p[2] == 'h' && p[3] >= '1' && p[3] <= '9')
    return BMAP_COMPRESSION_BZIP2;
  if (len >= 4 && memcmp (p, zstd_magic, 4) == 0)
    return BMAP_COMPRESSION_ZSTD;
  if (len >= 4 && (memcmp (p, lz4_magic, 4) == 0 || memcmp (p, lz4_legacy_magic, 4) == 0))
    return BMAP_COMPRESSION_LZ4;
  if (len >= sizeof (lzo_magic) && memcmp (p, lzo_magic, sizeof (lzo_magic)) == 0)
    return BMAP_COMPRESSION_LZO;
  return BMAP_COMPRESSION_NONE;
}

/* Looks at the first bytes, reading them into the input buffer. */
static gboolean
sniff (BmapSource *source, GError **error)
{
  BmapInput *in = &source->input;
  gsize off = 0;

  while (bmap_input_avail (in) < SNIFF_LEN && !in->eof) {
    if (!input_read (in, SNIFF_FIRST_READ, error))
      return FALSE;
  }

  /* Skippable frames may lead a zstd or lz4 file: the frame after them
   * tells which. Past the input buffer, zstd is the likely one. */
  for (;;) {
    guint32 frame_len;

    if (!bmap_input_ensure (in, off + 8, error))
      return FALSE;
    if (bmap_input_avail (in) < off + 8 || !is_skippable_frame (in->buf + off))
      break;
    memcpy (&frame_len, in->buf + off + 4, sizeof (frame_len));
    frame_len = GUINT32_FROM_LE (frame_len);
    if ((guint64) off + 8 + frame_len + 8 > in->size) {
      source->compression = BMAP_COMPRESSION_ZSTD;
      return TRUE;
    }
    off += 8 + frame_len;
  }
  if (off > 0) {
    source->compression = BMAP_COMPRESSION_ZSTD;
    if (bmap_input_avail (in) > off)
      source->compression = compression_from_magic (in->buf + off, bmap_input_avail (in) - off);
    if (source->compression != BMAP_COMPRESSION_LZ4)
      source->compression = BMAP_COMPRESSION_ZSTD;
    return TRUE;
  }
  source->compression = compression_from_magic (in->buf, bmap_input_avail (in));
  return TRUE;
}

static const BmapDecoderVTable *
vtable_for_compression (BmapCompression compression)
{
  switch (compression) {
    case BMAP_COMPRESSION_GZIP:
      return &bmap_decoder_gzip;
    case BMAP_COMPRESSION_XZ:
      return &bmap_decoder_xz;
    case BMAP_COMPRESSION_BZIP2:
      return &bmap_decoder_bzip2;
    case BMAP_COMPRESSION_ZSTD:
      return &bmap_decoder_zstd;
    case BMAP_COMPRESSION_LZ4:
      return &bmap_decoder_lz4;
    case BMAP_COMPRESSION_LZO:
      return &bmap_decoder_lzo;
    case BMAP_COMPRESSION_NONE:
    default:
      return NULL;
  }
}

static gssize raw_read (BmapSource *source, guint8 *buf, gsize len, GError **error);

/* Decoded bytes: the look-ahead first, then the decoder's (or the raw
 * input's). What an archive reads from. */
static gssize
decoded_read (BmapSource *source, guint8 *buf, gsize len, GError **error)
{
  GError **err;
  gsize done = 0;
  gssize n;

  if (source->head_pos < source->head_len) {
    done = MIN (len, source->head_len - source->head_pos);
    memcpy (buf, source->head + source->head_pos, done);
    source->head_pos += done;
    if (done == len)
      return (gssize) done;
  }
  if (source->head_error != NULL) {
    if (done > 0)
      return (gssize) done;
    g_propagate_error (error, g_steal_pointer (&source->head_error));
    return -1;
  }
  /* The bytes at hand go out now; an error after them with the next read. */
  err = done > 0 ? &source->head_error : error;
  if (source->decoder == NULL)
    n = raw_read (source, buf + done, len - done, err);
  else
    n = source->vtable->read (source->decoder, buf + done, len - done, err);
  if (n < 0)
    return done > 0 ? (gssize) done : -1;
  return (gssize) (done + (gsize) n);
}

static gssize
archive_pull (gpointer user_data, guint8 *buf, gsize len, GError **error)
{
  return decoded_read (user_data, buf, len, error);
}

/* The first decoded bytes of a decoder that may skip blocks (xz with an
 * index), from a throwaway stream decoder over what the sniff read: reading
 * the real one would start it before it is told what to skip. A regular
 * file's first read brought SNIFF_FIRST_READ bytes, plenty for a header. */
static gsize
probe_decoded (BmapSource *source, guint8 *buf, gsize len)
{
  BmapInput probe = {
    .fd = -1,
    .name = source->name,
    .size = source->input.size,
    .len = source->input.len,
    .eof = TRUE,
    .cancel_fd = -1,
    .can_block = TRUE, /* a stream decoder, not the block reader */
  };
  g_autofree guint8 *probe_buf = g_malloc (probe.size);
  gpointer decoder;
  gsize done = 0;

  memcpy (probe_buf, source->input.buf, probe.len);
  probe.buf = probe_buf;
  decoder = source->vtable->new (&probe, NULL);
  if (decoder == NULL)
    return 0;
  while (done < len) {
    /* An error here is the real decoder's to report. */
    gssize n = source->vtable->read (decoder, buf + done, len - done, NULL);

    if (n <= 0)
      break;
    done += (gsize) n;
  }
  source->vtable->free (decoder);
  return done;
}

/* Reads the first decoded bytes ahead (kept for the reads) and looks for an
 * archive in them. */
static gboolean
look_ahead (BmapSource *source, GError **error)
{
  if (source->vtable->set_wanted != NULL && !source->input.can_block) {
    guint8 probe[BMAP_ARCHIVE_SNIFF_LEN];
    gsize n = probe_decoded (source, probe, sizeof (probe));

    return bmap_archive_sniff (probe, n, source->name, &source->container, error);
  }

  source->head = g_malloc (BMAP_ARCHIVE_SNIFF_LEN);
  while (source->head_len < BMAP_ARCHIVE_SNIFF_LEN) {
    /* A corrupt or truncated stream is reported after what it yielded, by
     * the read that reaches it, as without the look-ahead. */
    gssize n
        = source->vtable->read (source->decoder, source->head + source->head_len,
                                BMAP_ARCHIVE_SNIFF_LEN - source->head_len, &source->head_error);

    if (n <= 0)
      break;
    source->head_len += (gsize) n;
  }
  /* A cancel or a failing read is not the data's fault: nothing to yield. */
  if (source->head_error != NULL
      && !g_error_matches (source->head_error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE)) {
    g_propagate_error (error, g_steal_pointer (&source->head_error));
    return FALSE;
  }
  return bmap_archive_sniff (source->head, source->head_len, source->name, &source->container,
                             error);
}

static const char *
compression_suffix (BmapCompression compression)
{
  switch (compression) {
    case BMAP_COMPRESSION_GZIP:
      return ".gz";
    case BMAP_COMPRESSION_XZ:
      return ".xz";
    case BMAP_COMPRESSION_BZIP2:
      return ".bz2";
    case BMAP_COMPRESSION_ZSTD:
      return ".zst";
    case BMAP_COMPRESSION_LZ4:
      return ".lz4";
    case BMAP_COMPRESSION_LZO:
      return ".lzo";
    case BMAP_COMPRESSION_NONE:
    default:
      return "";
  }
}

static char *
format_name (BmapContainer container, BmapCompression compression)
{
  if (container != BMAP_CONTAINER_NONE)
    return g_strconcat (bmap_container_to_string (container), compression_suffix (compression),
                        NULL);
  if (compression == BMAP_COMPRESSION_NONE)
    return g_strdup ("raw");
  return g_strdup (bmap_compression_to_string (compression));
}

BmapSource *
bmap_source_new (int fd, gboolean take_fd, const char *name, GError **error)
{
  return bmap_source_new_full (fd, take_fd, name, NULL, error);
}

BmapSource *
bmap_source_new_full (int fd, gboolean take_fd, const char *name, GCancellable *cancellable,
                      GError **error)
{
  g_autoptr (BmapSource) source = g_new0 (BmapSource, 1);
  struct stat st;
  off_t start = -1;

  g_return_val_if_fail (fd >= 0, NULL);

  source->fd = fd;
  source->owns_fd = take_fd;
  source->name = g_strdup (name != NULL ? name : "image");
  source->input.fd = fd;
  source->input.cancel_fd = -1;
  source->input.name = source->name;
  /* Before the first read: a pipe's writer may send a few bytes and stop. */
  bmap_source_set_cancellable (source, cancellable);

  if (fstat (fd, &st) < 0) {
    bmap_error_set_errno (error, errno, "%s: fstat", source->name);
    return NULL;
  }
  source->input.can_block = !S_ISREG (st.st_mode);
  if (S_ISDIR (st.st_mode)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "%s: is a directory, not an image",
                 source->name);
    return NULL;
  }
  if (S_ISREG (st.st_mode)) {
    start = lseek (fd, 0, SEEK_CUR);
    if (start < 0) {
      bmap_error_set_errno (error, errno, "%s: lseek", source->name);
      return NULL;
    }
  }

  source->input.size = BMAP_INPUT_BUF_SIZE;
  source->input.buf = g_malloc (source->input.size);
  if (!sniff (source, error))
    return NULL;

  if (source->compression == BMAP_COMPRESSION_NONE) {
    BmapInput *in = &source->input;

    if (!bmap_input_ensure (in, BMAP_ARCHIVE_SNIFF_LEN, error))
      return NULL;
    if (!bmap_archive_sniff (bmap_input_data (in), bmap_input_avail (in), source->name,
                             &source->container, error))
      return NULL;
  }
  source->format = format_name (source->container, source->compression);

  if (source->compression == BMAP_COMPRESSION_NONE && source->container == BMAP_CONTAINER_NONE
      && S_ISREG (st.st_mode)) {
    /* Raw regular file: the copy engine preads it, and read() goes on from
     * where the caller's offset was, so put the offset back. */
    if (lseek (fd, start, SEEK_SET) < 0) {
      bmap_error_set_errno (error, errno, "%s: lseek", source->name);
      return NULL;
    }
    g_clear_pointer (&source->input.buf, g_free);
    source->input.size = source->input.len = source->input.pos = 0;
    source->input.bytes_in = 0;
    source->input.eof = FALSE;
    source->seekable = TRUE;
    source->size = (guint64) st.st_size;
    return g_steal_pointer (&source);
  }

  source->vtable = vtable_for_compression (source->compression);
  if (source->vtable != NULL) {
    source->decoder = source->vtable->new (&source->input, error);
    if (source->decoder == NULL)
      return NULL;
    if (!look_ahead (source, error))
      return NULL;
    g_free (source->format);
    source->format = format_name (source->container, source->compression);
  }
  if (source->container != BMAP_CONTAINER_NONE) {
    source->archive
        = bmap_archive_new (source->container, source->name, archive_pull, source, error);
    if (source->archive == NULL)
      return NULL;
    source->size = bmap_archive_get_member_size (source->archive);
    g_debug ("%s: %s archive, image is its member '%s'", source->name, source->format,
             bmap_archive_get_member (source->archive));
  }
  return g_steal_pointer (&source);
}

BmapSource *
bmap_source_new_for_path (const char *path, GError **error)
{
  int fd;

  g_return_val_if_fail (path != NULL, NULL);

  do
    fd = open (path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    bmap_error_set_errno (error, errno, "%s", path);
    return NULL;
  }
  return bmap_source_new (fd, TRUE, path, error);
}

void
bmap_source_free (BmapSource *source)
{
  if (source == NULL)
    return;
  /* The archive reads through the decoder: it goes first. */
  g_clear_pointer (&source->archive, bmap_archive_free);
  if (source->decoder != NULL)
    source->vtable->free (source->decoder);
  if (source->owns_fd && source->fd >= 0)
    close (source->fd);
  if (source->cancellable != NULL) {
    g_cancellable_release_fd (source->cancellable);
    g_object_unref (source->cancellable);
  }
  g_free (source->input.buf);
  g_free (source->skip_buf);
  g_free (source->name);
  g_free (source->head);
  g_free (source->format);
  g_clear_error (&source->head_error);
  g_clear_error (&source->failure);
  g_free (source);
}

void
bmap_source_set_cancellable (BmapSource *source, GCancellable *cancellable)
{
  if (source->cancellable == cancellable)
    return;
  if (source->cancellable != NULL) {
    g_cancellable_release_fd (source->cancellable);
    g_clear_object (&source->cancellable);
    source->input.cancel_fd = -1;
  }
  if (cancellable == NULL)
    return;
  source->cancellable = g_object_ref (cancellable);
  source->input.cancel_fd = g_cancellable_get_fd (cancellable);
}

BmapCompression
bmap_source_get_compression (BmapSource *source)
{
  g_return_val_if_fail (source != NULL, BMAP_COMPRESSION_NONE);
  return source->compression;
}

BmapContainer
bmap_source_get_container (BmapSource *source)
{
  g_return_val_if_fail (source != NULL, BMAP_CONTAINER_NONE);
  return source->container;
}

const char *
bmap_source_get_format (BmapSource *source)
{
  g_return_val_if_fail (source != NULL, NULL);
  return source->format;
}

const char *
bmap_source_get_member (BmapSource *source)
{
  g_return_val_if_fail (source != NULL, NULL);
  return source->archive != NULL ? bmap_archive_get_member (source->archive) : NULL;
}

const char *
bmap_source_get_name (BmapSource *source)
{
  g_return_val_if_fail (source != NULL, NULL);
  return source->name;
}

int
bmap_source_get_fd (BmapSource *source)
{
  g_return_val_if_fail (source != NULL, -1);
  return source->fd;
}

gboolean
bmap_source_is_seekable (BmapSource *source)
{
  g_return_val_if_fail (source != NULL, FALSE);
  return source->seekable;
}

guint64
bmap_source_get_size (BmapSource *source)
{
  g_return_val_if_fail (source != NULL, 0);
  return source->size;
}

guint64
bmap_source_get_bytes_in (BmapSource *source)
{
  g_return_val_if_fail (source != NULL, 0);
  return source->input.bytes_in;
}

/* Uncompressed: first what the sniff kept, then straight into @buf. */
static gssize
raw_read (BmapSource *source, guint8 *buf, gsize len, GError **error)
{
  BmapInput *in = &source->input;
  gsize done = 0;

  if (in->buf != NULL && bmap_input_avail (in) > 0) {
    done = MIN (len, bmap_input_avail (in));
    memcpy (buf, bmap_input_data (in), done);
    bmap_input_consume (in, done);
    if (bmap_input_avail (in) == 0)
      g_clear_pointer (&in->buf, g_free);
  }
  while (done < len && !in->eof) {
    gssize n = read_eintr (in, source->fd, buf + done, len - done);

    if (n < 0) {
      set_read_error (error, source->name, in->bytes_in, errno);
      return -1;
    }
    if (n == 0)
      in->eof = TRUE;
    done += (gsize) n;
    in->bytes_in += (guint64) n;
  }
  return (gssize) done;
}

gssize
bmap_source_read (BmapSource *source, void *buf, gsize len, GError **error)
{
  gssize n;

  g_return_val_if_fail (source != NULL, -1);
  g_return_val_if_fail (buf != NULL || len == 0, -1);

  if (source->failure != NULL) {
    g_propagate_error (error, g_error_copy (source->failure));
    return -1;
  }
  if (len == 0)
    return 0;
  len = MIN (len, (gsize) G_MAXSSIZE);

  if (source->archive != NULL)
    n = bmap_archive_read (source->archive, buf, len, &source->failure);
  else
    n = decoded_read (source, buf, len, &source->failure);
  if (n < 0) {
    /* A decoder that fails without saying why still fails, with a message. */
    if (source->failure == NULL)
      g_set_error (&source->failure, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                   "%s: decoding the %s data failed", source->name,
                   bmap_compression_to_string (source->compression));
    g_propagate_error (error, g_error_copy (source->failure));
    return -1;
  }
  return n;
}

gssize
bmap_source_read_full (BmapSource *source, void *buf, gsize len, GError **error)
{
  gsize done = 0;

  len = MIN (len, (gsize) G_MAXSSIZE);
  while (done < len) {
    gssize n = bmap_source_read (source, (guint8 *) buf + done, len - done, error);

    if (n < 0)
      return -1;
    if (n == 0)
      break;
    done += (gsize) n;
  }
  return (gssize) done;
}

void
bmap_source_set_wanted (BmapSource *source, const BmapMap *map)
{
  g_return_if_fail (source != NULL && map != NULL);

  /* Offsets in an archive are not the image's; bytes read ahead are not
   * the decoder's to skip. */
  if (source->decoder != NULL && source->vtable->set_wanted != NULL && source->archive == NULL
      && source->head_len == 0)
    source->decoder_skips = source->vtable->set_wanted (source->decoder, map);
}

gssize
bmap_source_skip (BmapSource *source, guint64 len, GError **error)
{
  guint64 done = 0;

  g_return_val_if_fail (source != NULL, -1);

  len = MIN (len, (guint64) G_MAXSSIZE);
  if (source->failure == NULL && source->decoder_skips) {
    gssize n = source->vtable->skip (source->decoder, len, &source->failure);

    if (n < 0)
      g_propagate_error (error, g_error_copy (source->failure));
    return n;
  }

  if (source->skip_buf == NULL)
    source->skip_buf = g_malloc (SKIP_BUF_SIZE);
  while (done < len) {
    gssize n = bmap_source_read (source, source->skip_buf, (gsize) MIN (SKIP_BUF_SIZE, len - done),
                                 error);

    if (n < 0)
      return -1;
    if (n == 0)
      break;
    done += (guint64) n;
  }
  return (gssize) done;
}
