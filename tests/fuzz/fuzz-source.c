/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: every decoder, through the public source API as bmapd
 * and bmapctl use it (and the tar and zip layer above them).
 *
 * Input: one control byte, then the compressed stream. The control byte's
 * low 3 bits pick the format, whose magic number is put in front of the
 * stream unless it starts with a known magic already (so any stream reaches
 * the decoder it is meant for); bit 3 feeds it through a pipe instead of a
 * memfd (a regular file: xz then goes through its block index); bits 4-7
 * pick how much each read asks for, from 1 byte up, so that decoders are
 * stopped and resumed at every kind of place. Decoded output is capped,
 * as a bomb would otherwise only measure the machine. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-source.h"
#include "fuzz-common.h"

#define OUTPUT_CAP (1024 * 1024)
/* What a pipe holds without a reader: the input is written before reading. */
#define PIPE_MAX (60 * 1024)

static const struct {
  const guint8 *magic;
  gsize len;
} formats[] = {
  { NULL, 0 },
  { (const guint8 *) "\x1f\x8b\x08", 3 },
  { (const guint8 *) "\xfd"
                     "7zXZ\0",
    6 },
  { (const guint8 *) "BZh9", 4 },
  { (const guint8 *) "\x28\xb5\x2f\xfd", 4 },
  { (const guint8 *) "\x04\x22\x4d\x18", 4 },
  { (const guint8 *) "\x02\x21\x4c\x18", 4 }, /* lz4 legacy */
  { (const guint8 *) "\x89LZO\0\r\n\x1a\n", 9 },
};

static gboolean
has_known_magic (const guint8 *p, gsize len)
{
  /* A skippable frame (zstd and lz4) may lead either. */
  if (len >= 4 && (p[0] & 0xf0) == 0x50 && p[1] == 0x2a && p[2] == 0x4d && p[3] == 0x18)
    return TRUE;
  for (gsize i = 1; i < G_N_ELEMENTS (formats); i++) {
    if (len >= formats[i].len && memcmp (p, formats[i].magic, formats[i].len) == 0)
      return TRUE;
  }
  return FALSE;
}

static const gsize read_sizes[16] = {
  1, 2, 3, 7, 16, 100, 511, 4096, 4097, 65536, 65537, 131072, 1 << 20, 3 << 20, 1 << 22, 5,
};

static gboolean
write_all (int fd, const guint8 *buf, gsize len)
{
  while (len > 0) {
    gssize n = write (fd, buf, len);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return FALSE;
    buf += n;
    len -= (gsize) n;
  }
  return TRUE;
}

/* What a source may fail with. */
#define SOURCE_ERRORS                                                                              \
  (FUZZ_ERROR (BMAP_ERROR_BAD_IMAGE) | FUZZ_ERROR (BMAP_ERROR_LIMIT)                               \
   | FUZZ_ERROR (BMAP_ERROR_UNSUPPORTED))

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSource) source = NULL;
  g_autofree guint8 *buf = NULL;
  const guint8 *stream;
  gsize stream_len, chunk, total = 0;
  gboolean use_pipe;
  guint fmt;
  int fds[2] = { -1, -1 };
  int fd;

  if (size < 1)
    return 0;
  fmt = data[0] & 7;
  use_pipe = (data[0] & 8) != 0;
  chunk = read_sizes[data[0] >> 4];
  stream = data + 1;
  stream_len = size - 1;
  if (use_pipe && stream_len + formats[fmt].len > PIPE_MAX)
    use_pipe = FALSE;

  if (use_pipe) {
    if (pipe2 (fds, O_CLOEXEC) < 0)
      fuzz_die ("pipe2", g_strerror (errno));
    fd = fds[0];
  } else {
    fd = memfd_create ("fuzz-image", MFD_CLOEXEC);
    if (fd < 0)
      fuzz_die ("memfd_create", g_strerror (errno));
    fds[1] = fd;
  }
  if (formats[fmt].len > 0 && !has_known_magic (stream, stream_len)
      && !write_all (fds[1], formats[fmt].magic, formats[fmt].len))
    fuzz_die ("write", g_strerror (errno));
  if (!write_all (fds[1], stream, stream_len))
    fuzz_die ("write", g_strerror (errno));
  if (use_pipe)
    close (fds[1]);
  else if (lseek (fd, 0, SEEK_SET) < 0)
    fuzz_die ("lseek", g_strerror (errno));

  source = bmap_source_new (fd, TRUE, "fuzz-image", &error);
  if (source == NULL) {
    fuzz_check_input_error (error, "bmap_source_new", SOURCE_ERRORS);
    return 0;
  }

  buf = g_malloc (chunk);
  while (total < OUTPUT_CAP) {
    gssize n = bmap_source_read (source, buf, MIN (chunk, OUTPUT_CAP - total), &error);

    if (n < 0) {
      fuzz_check_input_error (error, "bmap_source_read", SOURCE_ERRORS);
      /* A broken stream stays broken. */
      g_clear_error (&error);
      if (bmap_source_read (source, buf, 1, &error) != -1)
        fuzz_die ("a read after an error succeeded", NULL);
      return 0;
    }
    if (n == 0)
      break;
    if ((gsize) n > chunk)
      fuzz_die ("bmap_source_read returned more than asked for", NULL);
    total += (gsize) n;
  }
  if (total < OUTPUT_CAP && bmap_source_read (source, buf, chunk, &error) != 0)
    fuzz_die ("a read after the end did not return 0", error != NULL ? error->message : NULL);
  return 0;
}
