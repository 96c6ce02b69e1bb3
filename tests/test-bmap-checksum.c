/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmap-checksum.h"
#include "bmap-error.h"

static void
test_known_digests (void)
{
  static const struct {
    BmapChecksumType type;
    const char *hex;
  } cases[] = {
    { BMAP_CHECKSUM_SHA1, "a9993e364706816aba3e25717850c26c9cd0d89d" },
    { BMAP_CHECKSUM_SHA256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
    { BMAP_CHECKSUM_SHA512, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    guint8 digest[BMAP_CHECKSUM_MAX_LEN];
    char hex[BMAP_CHECKSUM_MAX_HEX_LEN + 1];
    g_autoptr (BmapHasher) hasher = bmap_hasher_new (cases[i].type);

    /* Split updates and reuse after finish must give the same digest. */
    for (int round = 0; round < 2; round++) {
      bmap_hasher_update (hasher, "a", 1);
      bmap_hasher_update (hasher, "bc", 2);
      bmap_hasher_finish (hasher, digest);
      bmap_checksum_to_hex (digest, bmap_checksum_type_get_length (cases[i].type), hex);
      g_assert_cmpstr (hex, ==, cases[i].hex);
    }
  }
}

static void
test_hex_parsing (void)
{
  guint8 out[4];

  g_assert_true (bmap_checksum_from_hex ("0aFf10", 6, out, 3));
  g_assert_cmpuint (out[0], ==, 0x0a);
  g_assert_cmpuint (out[1], ==, 0xff);
  g_assert_cmpuint (out[2], ==, 0x10);
  g_assert_false (bmap_checksum_from_hex ("0aFf1", 5, out, 3));
  g_assert_false (bmap_checksum_from_hex ("0aFg10", 6, out, 3));
}

static void
test_type_names (void)
{
  BmapChecksumType type;

  g_assert_true (bmap_checksum_type_from_string ("SHA256", &type));
  g_assert_cmpint (type, ==, BMAP_CHECKSUM_SHA256);
  g_assert_false (bmap_checksum_type_from_string ("md5", &type));
  g_assert_cmpstr (bmap_checksum_type_to_string (BMAP_CHECKSUM_SHA1), ==, "sha1");
  g_assert_cmpuint (bmap_checksum_type_get_length (BMAP_CHECKSUM_SHA512), ==, 64);
}

static void
test_error_names (void)
{
  BmapErrorCode code;

  for (guint i = 0; i < BMAP_ERROR_N_CODES; i++) {
    g_assert_true (bmap_error_code_from_dbus_name (bmap_error_code_to_dbus_name (i), &code));
    g_assert_cmpuint (code, ==, i);
  }
  g_assert_cmpstr (bmap_error_code_to_dbus_name (BMAP_ERROR_CHECKSUM_MISMATCH), ==,
                   "org.bmapd.bmapd1.Error.ChecksumMismatch");
  g_assert_false (bmap_error_code_from_dbus_name ("org.bmapd.bmapd1.Error.Nope", &code));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/checksum/known-digests", test_known_digests);
  g_test_add_func ("/checksum/hex", test_hex_parsing);
  g_test_add_func ("/checksum/type-names", test_type_names);
  g_test_add_func ("/error/dbus-names", test_error_names);
  return g_test_run ();
}
