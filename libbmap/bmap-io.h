/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Private to libbmap: reading a file at an offset, whole. */

#include <glib.h>

G_BEGIN_DECLS

/* pread() until @len bytes are read or the file ends, EINTR retried;
 * *@got is how many were read. FALSE with an error from errno ("NAME: read
 * error at byte N", without "NAME: " when @name is NULL) when pread()
 * fails. */
gboolean bmap_pread_full (int fd, void *buf, gsize len, guint64 offset, const char *name,
                          gsize *got, GError **error);

/* A descriptor of @fd's file for reading the medium, not the page cache: a
 * new open file description with O_DIRECT, so O_DIRECT rules apply (4096
 * aligned offsets, lengths and buffers cover every device in use). Falls
 * back to dropping the cached pages when the filesystem refuses O_DIRECT
 * (tmpfs on older kernels). -1 with an error naming @name on failure. */
int bmap_open_uncached (int fd, const char *name, GError **error);

G_END_DECLS
