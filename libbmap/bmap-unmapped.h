/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Private to libbmap: what becomes of the ranges of an image its bmap does
 * not map, once the mapped ones are written. Only the image's extent is
 * touched, never a larger device's bytes beyond it. */

#include "bmap-format.h"
#include "bmap-target.h"

G_BEGIN_DECLS

/* A discard of the unmapped ranges stops after this long, however much is
 * left: a card can take seconds per GiB, and the flash is done already. */
#define BMAP_DISCARD_TIME_LIMIT_US (20 * G_USEC_PER_SEC)

/* Discards the unmapped ranges (BLKDISCARD; a hole punched in a regular
 * file). A device that refuses is not an error: *@refused_errno says why
 * (0 when it did not refuse), *@timed_out that the time limit stopped it.
 * Fails only when cancelled. */
gboolean bmap_unmapped_discard (BmapTarget *target, const BmapMap *map, GCancellable *cancellable,
                                guint64 *bytes_done, int *refused_errno, gboolean *timed_out,
                                GError **error);

/* Makes the unmapped ranges read back as zeros: the device's write-zeroes
 * command (which may unmap), else BLKZEROOUT (which writes zeros as the
 * last resort); a hole in a regular file. Bytes that are not aligned to
 * 4 KiB are written as zeros. */
gboolean bmap_unmapped_zero (BmapTarget *target, const BmapMap *map, GCancellable *cancellable,
                             guint64 *bytes_done, GError **error);

G_END_DECLS
