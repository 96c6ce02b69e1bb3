/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

#include "bmap-format.h"

G_BEGIN_DECLS

typedef enum {
  BMAP_COMPRESSION_NONE,
  BMAP_COMPRESSION_GZIP,
  BMAP_COMPRESSION_XZ,
  BMAP_COMPRESSION_BZIP2,
  BMAP_COMPRESSION_ZSTD,
  BMAP_COMPRESSION_LZ4,
  BMAP_COMPRESSION_LZO,
} BmapCompression;

const char *bmap_compression_to_string (BmapCompression compression);

/* An archive found in the decoded bytes; the image is its first regular
 * member. */
typedef enum {
  BMAP_CONTAINER_NONE,
  BMAP_CONTAINER_TAR,
  BMAP_CONTAINER_ZIP,
} BmapContainer;

const char *bmap_container_to_string (BmapContainer container);

/* The image as a stream of decoded bytes, from a regular file, a pipe or
 * stdin. The compression is found from the first bytes (magic), never from
 * a file name; so is a tar or zip archive in the decoded bytes, whose first
 * regular member is then the image. Sources are used from one thread at a
 * time. */
typedef struct _BmapSource BmapSource;

/* Sniffs the first bytes of @fd (kept in a buffer, so pipes work). With
 * @take_fd the source closes @fd when freed. @name is used in messages.
 * An archive is opened up to its image's header here, so a 7z or rar
 * archive, an encrypted zip member or one compressed with another method
 * than deflate fails here with BMAP_ERROR_UNSUPPORTED naming it, and a
 * corrupt archive with BMAP_ERROR_BAD_IMAGE, before anything is written. */
BmapSource *bmap_source_new (int fd, gboolean take_fd, const char *name, GError **error);
/* The same, with bmap_source_set_cancellable() done before the first read,
 * so that the sniffing and the decoder's first reads from a pipe stop at a
 * cancel too. */
BmapSource *bmap_source_new_full (int fd, gboolean take_fd, const char *name,
                                  GCancellable *cancellable, GError **error);
BmapSource *bmap_source_new_for_path (const char *path, GError **error);
void bmap_source_free (BmapSource *source);

/* Makes reads from a pipe stop with BMAP_ERROR_CANCELLED as soon as
 * @cancellable is cancelled, even while no data arrives. */
void bmap_source_set_cancellable (BmapSource *source, GCancellable *cancellable);

BmapCompression bmap_source_get_compression (BmapSource *source);
BmapContainer bmap_source_get_container (BmapSource *source);
/* What was found, for messages: "raw", "gzip", "lzo", "tar", "tar.gz",
 * "zip". */
const char *bmap_source_get_format (BmapSource *source);
/* The archive member that is the image, NULL without an archive. */
const char *bmap_source_get_member (BmapSource *source);
const char *bmap_source_get_name (BmapSource *source);
int bmap_source_get_fd (BmapSource *source);

/* TRUE for an uncompressed regular file: pread() on the fd then gives the
 * image's bytes at any offset, so unmapped blocks need not be read. */
gboolean bmap_source_is_seekable (BmapSource *source);

/* Size of the decoded image when it is known without decoding it (an
 * uncompressed regular file, a tar member), 0 otherwise. */
guint64 bmap_source_get_size (BmapSource *source);

/* Bytes read from the fd so far (compressed bytes). */
guint64 bmap_source_get_bytes_in (BmapSource *source);

/* Reads up to @len decoded bytes into @buf. Returns the number of bytes (at
 * most @len, fewer only at the end or when the decoder has no more at
 * hand), 0 at the clean end of the image, -1 on error: BMAP_ERROR_BAD_IMAGE
 * for a truncated or corrupt compressed stream (it says which format and at
 * which offset), BMAP_ERROR_IO for a failing read. Multi-member gzip,
 * multi-stream xz and bzip2, and multi-frame zstd and lz4 are decoded to
 * their end. */
gssize bmap_source_read (BmapSource *source, void *buf, gsize len, GError **error);

/* Reads exactly @len bytes unless the image ends first; returns the count,
 * or -1 on error. */
gssize bmap_source_read_full (BmapSource *source, void *buf, gsize len, GError **error);

/* Decodes and drops the next @len bytes, as bmap_source_read_full() would
 * read them but without the caller's buffer: the copy skips what its bmap
 * does not map this way, through a small buffer that stays in the CPU's
 * cache. A decoder may skip whole blocks it need not decode (xz with an
 * index). Returns the count (fewer than @len only at the end of the image),
 * or -1 on error. */
gssize bmap_source_skip (BmapSource *source, guint64 len, GError **error);

/* Tells, before the first read, that only @map's ranges will be read and
 * the rest skipped: an xz file with an index then decodes only the blocks
 * that hold mapped bytes. Reading elsewhere afterwards is an error. */
void bmap_source_set_wanted (BmapSource *source, const BmapMap *map);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapSource, bmap_source_free)

G_END_DECLS
