/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

#include "libbmap.h"

G_BEGIN_DECLS

/* An auto-flash rule's image: a regular file opened once (passed to
 * AddAutoFlash, or named by a rule file) and read by every card's job from
 * its start, independently of the other jobs running at the same time.
 *
 * Each job gets a descriptor of its own (bmapd_image_open_reader()):
 *
 * - the file opened again through /proc/self/fd: a new open file
 *   description, with its own offset. The page cache is shared, so N cards
 *   at once read the image from the disk once.
 * - when that is refused (the service runs as root without
 *   CAP_DAC_OVERRIDE, and another user's file of mode 0600 cannot be opened
 *   again even through its descriptor): for an uncompressed image a
 *   duplicate of the descriptor, since the engine reads uncompressed images
 *   with pread() only and never uses the shared offset; for a compressed
 *   image a pipe fed by a thread that preads the file, because decoders
 *   read sequentially.
 *
 * One descriptor per job rather than one shared: a shared offset would
 * interleave the decoders' reads. Measured on the 2-core development VM,
 * two cards at once (loop devices) from a 64 MiB gzip image (13 MiB
 * compressed, 12 MiB mapped): 0.31-0.32 s with reopened files, 0.29-0.37 s
 * through feeder threads; the decoders are the limit, the extra copy is
 * not. */
typedef struct _BmapdImage BmapdImage;

/* Takes @fd, a regular file open for reading. Its first bytes say whether
 * it is compressed; its offset now is where every job starts reading.
 * @name is used in messages. */
BmapdImage *bmapd_image_new (int fd, const char *name, GError **error);
void bmapd_image_free (BmapdImage *image);

/* Uncompressed: any byte can be read at its offset. */
gboolean bmapd_image_is_seekable (BmapdImage *image);
/* The decoded image's size when it is known without decoding (an
 * uncompressed file), 0 otherwise. */
guint64 bmapd_image_get_size (BmapdImage *image);
BmapCompression bmapd_image_get_compression (BmapdImage *image);

/* A descriptor for one job, at the image's start, whose offset no other
 * job moves: a regular file or a pipe (see above). The caller owns it.
 * Opening a file again may block (a FUSE mount): for a thread, on a copy
 * (bmapd_image_copy()). */
int bmapd_image_open_reader (BmapdImage *image, GError **error);

/* The same image through a duplicate of its descriptor, for a thread that
 * opens a reader while the rule (and its image) may go away. Does not
 * block. */
BmapdImage *bmapd_image_copy (BmapdImage *image, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdImage, bmapd_image_free)

G_END_DECLS
