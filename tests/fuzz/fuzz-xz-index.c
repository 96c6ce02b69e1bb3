/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: the xz block index reader (bmap-xz-blocks.c), which
 * trusts nothing of the index: the block sizes and offsets it says are
 * checked against the file as the blocks are decoded.
 *
 * Input: a control byte, then the xz file. Bit 0 of the control byte
 * leaves the CRC32s of the stream header, the last index and the stream
 * footer as mutated; otherwise they are put right, so that mutations reach
 * the index's contents and the blocks instead of failing a CRC. Bits 1-7
 * pick which blocks of 64 KiB of the image are wanted (none: all are read);
 * the others are skipped, as the copy does with what its bmap leaves out. */
#include "config.h"

#include <errno.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-format.h"
#include "bmap-xz-blocks.h"
#include "fuzz-common.h"

#define OUTPUT_CAP (8 * 1024 * 1024)
#define BLOCK_SIZE 4096
/* A wanted bit stands for this many blocks of the image. */
#define SPAN_BLOCKS 16

static void
put_crc32 (guint8 *at, const guint8 *over, gsize len)
{
  guint32 crc = GUINT32_TO_LE (lzma_crc32 (over, len, 0));

  memcpy (at, &crc, 4);
}

static void
fix_crcs (guint8 *xz, gsize len)
{
  guint32 backward;
  guint64 index_size;

  if (len >= 12)
    put_crc32 (xz + 8, xz + 6, 2);
  if (len < 24)
    return;
  memcpy (&backward, xz + len - 8, 4);
  index_size = ((guint64) GUINT32_FROM_LE (backward) + 1) * 4;
  put_crc32 (xz + len - 12, xz + len - 8, 6);
  if (index_size + 24 <= len) {
    guint8 *index = xz + len - 12 - index_size;

    put_crc32 (index + index_size - 4, index, index_size - 4);
  }
}

/* What the xz index reader may fail with. */
#define XZ_ERRORS (FUZZ_ERROR (BMAP_ERROR_BAD_IMAGE) | FUZZ_ERROR (BMAP_ERROR_LIMIT))

/* Reads or skips @len bytes; FALSE at an error or the end. */
static gboolean
advance (BmapXzBlocks *xb, guint8 *buf, guint64 len, gboolean read, guint64 *total)
{
  g_autoptr (GError) error = NULL;

  while (len > 0 && *total < OUTPUT_CAP) {
    gsize want = (gsize) MIN (len, MIN (64 * 1024, OUTPUT_CAP - *total));
    gssize n = read ? bmap_xz_blocks_read (xb, buf, want, &error)
                    : bmap_xz_blocks_skip (xb, want, &error);

    if (n < 0) {
      fuzz_check_input_error (error, read ? "bmap_xz_blocks_read" : "bmap_xz_blocks_skip",
                              XZ_ERRORS);
      return FALSE;
    }
    if (n == 0)
      return FALSE;
    if ((gsize) n > want)
      fuzz_die ("more than asked for", NULL);
    len -= (guint64) n;
    *total += (guint64) n;
  }
  return *total < OUTPUT_CAP;
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (BmapXzBlocks) xb = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autofree guint8 *copy = NULL;
  g_autofree guint8 *buf = g_malloc (64 * 1024);
  guint8 wanted;
  guint64 total = 0;
  gsize len;
  int fd;

  if (size < 1)
    return 0;
  wanted = data[0] >> 1;
  copy = g_memdup2 (data + 1, size - 1);
  len = size - 1;
  if ((data[0] & 1) == 0)
    fix_crcs (copy, len);

  fd = memfd_create ("fuzz-xz", MFD_CLOEXEC);
  if (fd < 0)
    fuzz_die ("memfd_create", g_strerror (errno));
  if (write (fd, copy, len) != (gssize) len)
    fuzz_die ("write", g_strerror (errno));

  xb = bmap_xz_blocks_new (fd, "fuzz.xz");
  if (xb == NULL) {
    close (fd);
    return 0;
  }
  if (wanted == 0) {
    advance (xb, buf, G_MAXUINT64, TRUE, &total);
  } else {
    guint64 pos = 0;

    /* Seven spans of SPAN_BLOCKS blocks, then nothing. */
    map = bmap_map_new (7 * SPAN_BLOCKS * BLOCK_SIZE, BLOCK_SIZE, BMAP_CHECKSUM_NONE);
    for (guint i = 0; i < 7; i++) {
      if (wanted & (1u << i))
        bmap_map_add_range (map, i * SPAN_BLOCKS, (i + 1) * SPAN_BLOCKS - 1, NULL);
    }
    bmap_xz_blocks_set_wanted (xb, map);
    for (guint i = 0; i < bmap_map_get_n_ranges (map); i++) {
      const BmapRange *r = bmap_map_get_range (map, i);

      if (!advance (xb, buf, r->first * BLOCK_SIZE - pos, FALSE, &total)
          || !advance (xb, buf, (r->last - r->first + 1) * BLOCK_SIZE, TRUE, &total))
        break;
      pos = (r->last + 1) * BLOCK_SIZE;
    }
  }
  g_clear_pointer (&xb, bmap_xz_blocks_free);
  close (fd);
  return 0;
}
