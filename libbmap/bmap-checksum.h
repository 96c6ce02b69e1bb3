/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  BMAP_CHECKSUM_NONE,
  BMAP_CHECKSUM_SHA1,
  BMAP_CHECKSUM_SHA256,
  BMAP_CHECKSUM_SHA512,
} BmapChecksumType;

/* Largest digest in bytes (SHA-512), and its hex length. */
#define BMAP_CHECKSUM_MAX_LEN     64
#define BMAP_CHECKSUM_MAX_HEX_LEN (2 * BMAP_CHECKSUM_MAX_LEN)

/* "sha256"; "none" for BMAP_CHECKSUM_NONE. */
const char *bmap_checksum_type_to_string (BmapChecksumType type);
/* Accepts sha1, sha256, sha512 (case-insensitive) and "none". */
gboolean bmap_checksum_type_from_string (const char *str, BmapChecksumType *type);
/* Digest length in bytes, 0 for NONE. */
gsize bmap_checksum_type_get_length (BmapChecksumType type);

/* Parses exactly 2 * @len hex digits into @out. */
gboolean bmap_checksum_from_hex (const char *hex, gsize hex_len, guint8 *out, gsize len);
/* Writes 2 * @len lower-case hex digits and a NUL into @out. */
void bmap_checksum_to_hex (const guint8 *digest, gsize len, char *out);

/* A reusable digest context on OpenSSL's EVP API (uses SHA CPU instructions). */
typedef struct _BmapHasher BmapHasher;

BmapHasher *bmap_hasher_new (BmapChecksumType type);
void bmap_hasher_free (BmapHasher *hasher);
BmapChecksumType bmap_hasher_get_type (BmapHasher *hasher);
void bmap_hasher_update (BmapHasher *hasher, const void *data, gsize len);
/* Writes the digest (bmap_checksum_type_get_length() bytes) into @out and
 * resets the hasher for the next use. */
void bmap_hasher_finish (BmapHasher *hasher, guint8 *out);

/* One-shot digest of a buffer. */
void bmap_checksum_compute (BmapChecksumType type, const void *data, gsize len, guint8 *out);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapHasher, bmap_hasher_free)

G_END_DECLS
