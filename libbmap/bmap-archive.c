/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <archive.h>
#include <archive_entry.h>
#include <string.h>

#include "bmap-archive.h"
#include "bmap-error.h"

/* libarchive is handed the decoded bytes this much at a time. */
#define ARCHIVE_CHUNK_SIZE (256 * 1024)

/* libarchive keeps pax and GNU long-name headers whole in memory; what may
 * come before the image is capped so that a crafted archive cannot make the
 * root daemon allocate without bound. Real ones have a few KiB there. */
#define ARCHIVE_HEADERS_MAX (16 * 1024 * 1024)

struct _BmapArchive {
  struct archive *a;
  BmapContainer container;
  char *name;
  char *member;
  guint64 member_size;
  gboolean size_known;
  BmapArchiveReadFunc read_func;
  gpointer user_data;
  guint8 *chunk;
  guint64 bytes_in;      /* given to libarchive */
  gboolean found_member; /* its header was read: the cap no longer applies */
  GError *read_error;    /* from read_func, preferred to libarchive's */
  /* The data block at hand and the output offset reached. */
  const guint8 *block;
  gsize block_len;
  gint64 block_offset;
  guint64 pos;
  gboolean eof;
};

const char *
bmap_container_to_string (BmapContainer container)
{
  switch (container) {
    case BMAP_CONTAINER_TAR:
      return "tar";
    case BMAP_CONTAINER_ZIP:
      return "zip";
    case BMAP_CONTAINER_NONE:
    default:
      return "none";
  }
}

static guint64
parse_octal (const guint8 *p, gsize len, gboolean *ok)
{
  guint64 v = 0;
  gsize i = 0;

  while (i < len && p[i] == ' ')
    i++;
  if (i == len || p[i] < '0' || p[i] > '7') {
    *ok = FALSE;
    return 0;
  }
  for (; i < len && p[i] >= '0' && p[i] <= '7'; i++)
    v = v * 8 + (guint64) (p[i] - '0');
  /* Then only spaces or NULs. */
  for (; i < len; i++) {
    if (p[i] != ' ' && p[i] != '\0') {
      *ok = FALSE;
      return 0;
    }
  }
  *ok = TRUE;
  return v;
}

/* A tar header: the stored checksum (octal, at 148) equals the sum of the
 * header's bytes with the checksum field read as spaces. ustar and GNU tar
 * also have their magic at 257; old v7 archives only the checksum, so for
 * them the name must be there and the type one v7 knows. */
static gboolean
is_tar_header (const guint8 *p, gsize len)
{
  guint64 stored, sum = 0;
  gboolean ok;

  if (len < BMAP_ARCHIVE_SNIFF_LEN)
    return FALSE;
  stored = parse_octal (p + 148, 8, &ok);
  if (!ok)
    return FALSE;
  for (gsize i = 0; i < 512; i++)
    sum += (i >= 148 && i < 156) ? ' ' : p[i];
  if (sum != stored)
    return FALSE;
  if (memcmp (p + 257, "ustar", 5) == 0)
    return TRUE;
  return p[0] != '\0' && (p[156] == '\0' || (p[156] >= '0' && p[156] <= '7'));
}

gboolean
bmap_archive_sniff (const guint8 *p, gsize len, const char *name, BmapContainer *container,
                    GError **error)
{
  static const guint8 sevenzip_magic[] = { '7', 'z', 0xbc, 0xaf, 0x27, 0x1c };
  static const guint8 rar_magic[] = { 'R', 'a', 'r', '!', 0x1a, 0x07 };
  const char *refused = NULL;

  *container = BMAP_CONTAINER_NONE;
  if (len >= sizeof (sevenzip_magic) && memcmp (p, sevenzip_magic, sizeof (sevenzip_magic)) == 0)
    refused = "7z";
  else if (len >= sizeof (rar_magic) && memcmp (p, rar_magic, sizeof (rar_magic)) == 0)
    refused = "rar";
  if (refused != NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED,
                 "%s: is a %s archive, which cannot be read; extract the image first", name,
                 refused);
    return FALSE;
  }
  /* A local file header, an empty archive's end record, or the marker that
   * starts a split archive. */
  if (len >= 4 && p[0] == 'P' && p[1] == 'K'
      && ((p[2] == 3 && p[3] == 4) || (p[2] == 5 && p[3] == 6) || (p[2] == 7 && p[3] == 8)))
    *container = BMAP_CONTAINER_ZIP;
  else if (is_tar_header (p, len))
    *container = BMAP_CONTAINER_TAR;
  return TRUE;
}

static la_ssize_t
archive_read_cb (struct archive *a, void *user_data, const void **buf)
{
  BmapArchive *archive = user_data;
  gssize n;

  if (!archive->found_member && archive->bytes_in > ARCHIVE_HEADERS_MAX) {
    g_set_error (&archive->read_error, BMAP_ERROR, BMAP_ERROR_LIMIT,
                 "%s: more than %u MiB of %s headers before the first file", archive->name,
                 ARCHIVE_HEADERS_MAX / (1024 * 1024),
                 bmap_container_to_string (archive->container));
    archive_set_error (a, EFBIG, "headers too large");
    return -1;
  }
  n = archive->read_func (archive->user_data, archive->chunk, ARCHIVE_CHUNK_SIZE,
                          &archive->read_error);
  if (n < 0) {
    archive_set_error (a, EIO, "read failed");
    return -1;
  }
  archive->bytes_in += (guint64) n;
  *buf = archive->chunk;
  return n;
}

/* The error of the last failed libarchive call, for the archive's name. */
static void
set_archive_error (BmapArchive *archive, GError **error)
{
  const char *msg = archive_error_string (archive->a);

  if (archive->read_error != NULL) {
    g_propagate_error (error, g_error_copy (archive->read_error));
    return;
  }
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE, "%s: corrupt %s archive: %s", archive->name,
               bmap_container_to_string (archive->container), msg != NULL ? msg : "unknown error");
}

/* libarchive names the method of the zip member it read in the format
 * name: "ZIP 2.0 (deflation)". Only stored and deflated members are read:
 * they are what zip writes, and the other decoders of libarchive's zip
 * reader are left out of what untrusted input can reach. */
static gboolean
check_zip_member (BmapArchive *archive, struct archive_entry *entry, GError **error)
{
  const char *format = archive_format_name (archive->a);
  const char *open = format != NULL ? strrchr (format, '(') : NULL;
  g_autofree char *method = NULL;

  if (archive_entry_is_encrypted (entry)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED,
                 "%s: zip member '%s' is encrypted, which is not supported", archive->name,
                 archive->member);
    return FALSE;
  }
  if (open != NULL && g_str_has_suffix (open, ")"))
    method = g_strndup (open + 1, strlen (open) - 2);
  if (g_strcmp0 (method, "deflation") == 0 || g_strcmp0 (method, "uncompressed") == 0)
    return TRUE;
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED,
               "%s: zip member '%s' is compressed with %s, which is not supported (only stored "
               "and deflated members are)",
               archive->name, archive->member, method != NULL ? method : "an unknown method");
  return FALSE;
}

static gboolean
find_member (BmapArchive *archive, GError **error)
{
  for (;;) {
    struct archive_entry *entry;
    int r = archive_read_next_header (archive->a, &entry);

    if (r == ARCHIVE_EOF) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                   "%s: the %s archive holds no regular file to use as the image", archive->name,
                   bmap_container_to_string (archive->container));
      return FALSE;
    }
    if (r < ARCHIVE_WARN) {
      set_archive_error (archive, error);
      return FALSE;
    }
    if (archive_entry_filetype (entry) != AE_IFREG || archive_entry_hardlink (entry) != NULL)
      continue;

    archive->found_member = TRUE;
    archive->member = g_strdup (
        archive_entry_pathname (entry) != NULL ? archive_entry_pathname (entry) : "(unnamed)");
    archive->size_known = archive_entry_size_is_set (entry) && archive_entry_size (entry) >= 0;
    if (archive->size_known)
      archive->member_size = (guint64) archive_entry_size (entry);
    if (archive->container == BMAP_CONTAINER_ZIP)
      return check_zip_member (archive, entry, error);
    return TRUE;
  }
}

BmapArchive *
bmap_archive_new (BmapContainer container, const char *name, BmapArchiveReadFunc read_func,
                  gpointer user_data, GError **error)
{
  g_autoptr (BmapArchive) archive = g_new0 (BmapArchive, 1);
  int r;

  g_return_val_if_fail (container != BMAP_CONTAINER_NONE, NULL);
  g_return_val_if_fail (read_func != NULL, NULL);

  archive->container = container;
  archive->name = g_strdup (name);
  archive->read_func = read_func;
  archive->user_data = user_data;
  archive->chunk = g_malloc (ARCHIVE_CHUNK_SIZE);
  archive->a = archive_read_new ();
  if (archive->a == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT, "%s: cannot set up the archive reader", name);
    return NULL;
  }
  /* One format each, no filters: the decoders did the decompression, and
   * nothing else of libarchive is exposed to the input. */
  if (container == BMAP_CONTAINER_TAR)
    r = archive_read_support_format_tar (archive->a);
  else
    r = archive_read_support_format_zip_streamable (archive->a);
  if (r != ARCHIVE_OK) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: cannot set up the %s reader: %s", name,
                 bmap_container_to_string (container), archive_error_string (archive->a));
    return NULL;
  }
  if (archive_read_open (archive->a, archive, NULL, archive_read_cb, NULL) != ARCHIVE_OK) {
    set_archive_error (archive, error);
    return NULL;
  }
  if (!find_member (archive, error))
    return NULL;
  return g_steal_pointer (&archive);
}

void
bmap_archive_free (BmapArchive *archive)
{
  if (archive == NULL)
    return;
  if (archive->a != NULL)
    archive_read_free (archive->a);
  g_clear_error (&archive->read_error);
  g_free (archive->chunk);
  g_free (archive->member);
  g_free (archive->name);
  g_free (archive);
}

const char *
bmap_archive_get_member (BmapArchive *archive)
{
  g_return_val_if_fail (archive != NULL, NULL);
  return archive->member;
}

guint64
bmap_archive_get_member_size (BmapArchive *archive)
{
  g_return_val_if_fail (archive != NULL, 0);
  return archive->size_known ? archive->member_size : 0;
}

/* Gets the next data block; at the member's end archive->eof. */
static gboolean
next_block (BmapArchive *archive, GError **error)
{
  const void *buf;
  size_t len;
  la_int64_t offset;
  int r = archive_read_data_block (archive->a, &buf, &len, &offset);

  if (r == ARCHIVE_EOF) {
    archive->eof = TRUE;
    return TRUE;
  }
  if (r < ARCHIVE_WARN) {
    set_archive_error (archive, error);
    return FALSE;
  }
  if (offset < 0 || (guint64) offset < archive->pos
      || (archive->size_known && (guint64) offset + len > archive->member_size)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                 "%s: corrupt %s archive: data of member '%s' at offset %" G_GINT64_FORMAT
                 " is out of order or past its size",
                 archive->name, bmap_container_to_string (archive->container), archive->member,
                 (gint64) offset);
    return FALSE;
  }
  archive->block = buf;
  archive->block_len = len;
  archive->block_offset = offset;
  return TRUE;
}

gssize
bmap_archive_read (BmapArchive *archive, guint8 *buf, gsize len, GError **error)
{
  gsize done = 0;

  g_return_val_if_fail (archive != NULL, -1);

  while (done < len) {
    guint64 data_start, end;
    gsize n;

    if (archive->block_len == 0) {
      if (archive->eof) {
        if (archive->container != BMAP_CONTAINER_TAR && archive->size_known
            && archive->pos != archive->member_size) {
          g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                       "%s: corrupt %s archive: member '%s' ends at byte %" G_GUINT64_FORMAT
                       ", but its header says it has %" G_GUINT64_FORMAT,
                       archive->name, bmap_container_to_string (archive->container),
                       archive->member, archive->pos, archive->member_size);
          return -1;
        }
        /* A sparse tar member may end in a hole. */
        if (archive->size_known && archive->pos < archive->member_size) {
          n = (gsize) MIN (len - done, archive->member_size - archive->pos);
          memset (buf + done, 0, n);
          archive->pos += n;
          done += n;
          continue;
        }
        break;
      }
      if (!next_block (archive, error))
        return -1;
      continue;
    }
    data_start = (guint64) archive->block_offset;
    if (archive->pos < data_start) {
      /* A hole before the data. */
      n = (gsize) MIN (len - done, data_start - archive->pos);
      memset (buf + done, 0, n);
    } else {
      end = data_start + archive->block_len;
      n = (gsize) MIN (len - done, end - archive->pos);
      memcpy (buf + done, archive->block + (archive->pos - data_start), n);
      if (archive->pos + n == end)
        archive->block_len = 0;
    }
    archive->pos += n;
    done += n;
  }
  return (gssize) done;
}
