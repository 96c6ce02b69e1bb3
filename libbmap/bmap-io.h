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

G_END_DECLS
