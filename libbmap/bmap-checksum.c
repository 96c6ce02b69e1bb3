/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <openssl/evp.h>

#include "bmap-checksum.h"

struct _BmapHasher {
  BmapChecksumType type;
  const EVP_MD *md;
  EVP_MD_CTX *ctx;
};

const char *
bmap_checksum_type_to_string (BmapChecksumType type)
{
  switch (type) {
    case BMAP_CHECKSUM_SHA1:
      return "sha1";
    case BMAP_CHECKSUM_SHA256:
      return "sha256";
    case BMAP_CHECKSUM_SHA512:
      return "sha512";
    case BMAP_CHECKSUM_NONE:
    default:
      return "none";
  }
}

gboolean
bmap_checksum_type_from_string (const char *str, BmapChecksumType *type)
{
  static const struct {
    const char *name;
    BmapChecksumType type;
  } names[] = {
    { "none", BMAP_CHECKSUM_NONE },
    { "sha1", BMAP_CHECKSUM_SHA1 },
    { "sha256", BMAP_CHECKSUM_SHA256 },
    { "sha512", BMAP_CHECKSUM_SHA512 },
  };

  g_return_val_if_fail (type != NULL, FALSE);
  if (str == NULL)
    return FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS (names); i++) {
    if (g_ascii_strcasecmp (str, names[i].name) == 0) {
      *type = names[i].type;
      return TRUE;
    }
  }
  return FALSE;
}

gsize
bmap_checksum_type_get_length (BmapChecksumType type)
{
  switch (type) {
    case BMAP_CHECKSUM_SHA1:
      return 20;
    case BMAP_CHECKSUM_SHA256:
      return 32;
    case BMAP_CHECKSUM_SHA512:
      return 64;
    case BMAP_CHECKSUM_NONE:
    default:
      return 0;
  }
}

gboolean
bmap_checksum_from_hex (const char *hex, gsize hex_len, guint8 *out, gsize len)
{
  if (hex_len != 2 * len)
    return FALSE;
  for (gsize i = 0; i < len; i++) {
    int hi = g_ascii_xdigit_value (hex[2 * i]);
    int lo = g_ascii_xdigit_value (hex[2 * i + 1]);

    if (hi < 0 || lo < 0)
      return FALSE;
    out[i] = (guint8) ((hi << 4) | lo);
  }
  return TRUE;
}

void
bmap_checksum_to_hex (const guint8 *digest, gsize len, char *out)
{
  static const char digits[] = "0123456789abcdef";

  for (gsize i = 0; i < len; i++) {
    out[2 * i] = digits[digest[i] >> 4];
    out[2 * i + 1] = digits[digest[i] & 0xf];
  }
  out[2 * len] = '\0';
}

static const EVP_MD *
md_for_type (BmapChecksumType type)
{
  switch (type) {
    case BMAP_CHECKSUM_SHA1:
      return EVP_sha1 ();
    case BMAP_CHECKSUM_SHA256:
      return EVP_sha256 ();
    case BMAP_CHECKSUM_SHA512:
      return EVP_sha512 ();
    case BMAP_CHECKSUM_NONE:
    default:
      return NULL;
  }
}

BmapHasher *
bmap_hasher_new (BmapChecksumType type)
{
  BmapHasher *hasher;

  g_return_val_if_fail (type != BMAP_CHECKSUM_NONE, NULL);

  hasher = g_new0 (BmapHasher, 1);
  hasher->type = type;
  hasher->md = md_for_type (type);
  hasher->ctx = EVP_MD_CTX_new ();
  if (hasher->ctx == NULL || EVP_DigestInit_ex (hasher->ctx, hasher->md, NULL) != 1)
    g_error ("OpenSSL could not set up a %s digest", bmap_checksum_type_to_string (type));
  return hasher;
}

void
bmap_hasher_free (BmapHasher *hasher)
{
  if (hasher == NULL)
    return;
  EVP_MD_CTX_free (hasher->ctx);
  g_free (hasher);
}

BmapChecksumType
bmap_hasher_get_type (BmapHasher *hasher)
{
  return hasher->type;
}

void
bmap_hasher_update (BmapHasher *hasher, const void *data, gsize len)
{
  if (len > 0)
    EVP_DigestUpdate (hasher->ctx, data, len);
}

void
bmap_hasher_finish (BmapHasher *hasher, guint8 *out)
{
  unsigned int len = 0;

  EVP_DigestFinal_ex (hasher->ctx, out, &len);
  g_assert (len == bmap_checksum_type_get_length (hasher->type));
  EVP_DigestInit_ex (hasher->ctx, hasher->md, NULL);
}

void
bmap_checksum_compute (BmapChecksumType type, const void *data, gsize len, guint8 *out)
{
  g_autoptr (BmapHasher) hasher = bmap_hasher_new (type);

  bmap_hasher_update (hasher, data, len);
  bmap_hasher_finish (hasher, out);
}
