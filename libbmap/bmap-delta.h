/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Private to libbmap: writing only the blocks of a target that differ
 * from the image (minimize-writes). */

#include "bmap-target.h"

G_BEGIN_DECLS

typedef struct _BmapDelta BmapDelta;

/* Compares with what @target holds, read through a descriptor of its own
 * that bypasses the page cache. @target must be prepared and outlive the
 * delta. */
BmapDelta *bmap_delta_new (BmapTarget *target, GError **error);
void bmap_delta_free (BmapDelta *delta);

/* Reads [@offset, @offset + @len) of the target and writes the blocks of
 * @data (4 KiB, aligned to target offsets) that differ from it; bytes the
 * target does not have (a shorter file) differ. Adds the bytes written to
 * *@written. */
gboolean bmap_delta_write (BmapDelta *delta, guint64 offset, const guint8 *data, gsize len,
                           guint64 *written, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapDelta, bmap_delta_free)

G_END_DECLS
