/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Private to libbmap: the image inside a tar or zip archive, streamed
 * through libarchive from the decoded bytes of a source. As bmaptool does,
 * the image is the archive's first regular member. */

#include <glib.h>

#include "bmap-source.h"

G_BEGIN_DECLS

/* How many decoded bytes bmap_archive_sniff() wants to see: a tar header. */
#define BMAP_ARCHIVE_SNIFF_LEN 512

/* Tells from the first decoded bytes whether they are an archive. Formats
 * that are recognised but not read (7z, rar) are refused by name with
 * BMAP_ERROR_UNSUPPORTED; @name is used in that message. */
gboolean bmap_archive_sniff (const guint8 *p, gsize len, const char *name, BmapContainer *container,
                             GError **error);

/* Where the archive's bytes come from: like read(), fills @buf with up to
 * @len bytes, returns 0 at the end, -1 with @error set. */
typedef gssize (*BmapArchiveReadFunc) (gpointer user_data, guint8 *buf, gsize len, GError **error);

typedef struct _BmapArchive BmapArchive;

/* Reads the archive's headers up to its first regular member and checks
 * that it can be read: a zip member stored or deflated and not encrypted.
 * Fails with BMAP_ERROR_BAD_IMAGE for a corrupt archive or one without a
 * regular member, BMAP_ERROR_UNSUPPORTED naming what cannot be read. */
BmapArchive *bmap_archive_new (BmapContainer container, const char *name,
                               BmapArchiveReadFunc read_func, gpointer user_data, GError **error);
void bmap_archive_free (BmapArchive *archive);

/* The member's path in the archive, and its size when the archive tells it
 * before the data (tar, and zip without a data descriptor); 0 otherwise. */
const char *bmap_archive_get_member (BmapArchive *archive);
guint64 bmap_archive_get_member_size (BmapArchive *archive);

/* Reads the member's bytes, as bmap_source_read(). Holes of a sparse tar
 * member are read as zeros. */
gssize bmap_archive_read (BmapArchive *archive, guint8 *buf, gsize len, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapArchive, bmap_archive_free)

G_END_DECLS
