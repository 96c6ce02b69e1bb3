/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* What the bmap's signature says, judged by the keys bmapd trusts. */
typedef enum {
  BMAPD_FLASHER_SIGNATURE_NONE,      /* no signature next to the bmap, nor clearsigned */
  BMAPD_FLASHER_SIGNATURE_CHECKING,  /* there is one, not judged yet */
  BMAPD_FLASHER_SIGNATURE_TRUSTED,   /* good, by a trusted key */
  BMAPD_FLASHER_SIGNATURE_UNTRUSTED, /* anything else, with why */
} BmapdFlasherSignatureState;

/* The image a person chose: its file, the bmap found next to it, and what
 * both say about the bytes that flashing will write. No GTK, no D-Bus: the
 * window shows it, the unit tests check it without a display. */
#define BMAPD_FLASHER_TYPE_IMAGE (bmapd_flasher_image_get_type ())
G_DECLARE_FINAL_TYPE (BmapdFlasherImage, bmapd_flasher_image, BMAPD_FLASHER, IMAGE, GObject)

/* Opens @path far enough to know its format (compression, archive) and
 * finds and parses its bmap as bmaptool does. A missing bmap is no error
 * (the image is then copied whole); a bmap that is there but broken is,
 * and so is an image that cannot be read. Does blocking I/O. */
BmapdFlasherImage *bmapd_flasher_image_new_for_path (const char *path, GError **error);

const char *bmapd_flasher_image_get_path (BmapdFlasherImage *self);
/* The file name, shown as the image's title and sent as the job's
 * "description" (bmapd never sees paths). */
const char *bmapd_flasher_image_get_basename (BmapdFlasherImage *self);
/* NULL when no bmap was found next to the image. */
const char *bmapd_flasher_image_get_bmap_path (BmapdFlasherImage *self);
/* "raw", "xz", "tar.gz", ... */
const char *bmapd_flasher_image_get_format (BmapdFlasherImage *self);
/* Size of the decoded image: from the bmap, else from the file when it is
 * not compressed; 0 when unknown (a compressed image without a bmap). */
guint64 bmapd_flasher_image_get_image_size (BmapdFlasherImage *self);
/* The bytes a flash writes: the bmap's mapped bytes, else the image size
 * (0 when unknown). */
guint64 bmapd_flasher_image_get_bytes_to_write (BmapdFlasherImage *self);
/* The line under the image's name: "block map: 1.2 GB of 8.6 GB to write",
 * or why every byte is written. */
char *bmapd_flasher_image_dup_badge (BmapdFlasherImage *self);

/* The bmap as bmapd is to get it (a clearsigned bmap's signed text), and
 * its signature (BMAP.asc or BMAP.sig next to it, or the clearsigned bmap
 * itself) for Flash's "bmap-signature"; NULL without a bmap or signature. */
GBytes *bmapd_flasher_image_get_bmap_data (BmapdFlasherImage *self);
GBytes *bmapd_flasher_image_get_signature (BmapdFlasherImage *self);

/* Judges the signature by the key files in @trusted_keys_dir, the
 * directory bmapd trusts (bmap-trusted-keys.c, the code bmapd runs), on a
 * thread: gpg may take a while. The state is CHECKING until then. Does
 * nothing for an image without a signature. */
void
bmapd_flasher_image_check_signature_async (BmapdFlasherImage *self, const char *trusted_keys_dir,
                                           GCancellable *cancellable, GAsyncReadyCallback callback,
                                           gpointer user_data);
gboolean bmapd_flasher_image_check_signature_finish (BmapdFlasherImage *self, GAsyncResult *result,
                                                     GError **error);
BmapdFlasherSignatureState bmapd_flasher_image_get_signature_state (BmapdFlasherImage *self);
/* The badge beside the block map's: "signed by Name <mail> (KEYID)",
 * "signature not trusted: why", "checking the signature…"; NULL without a
 * signature. */
char *bmapd_flasher_image_dup_signature_badge (BmapdFlasherImage *self);
/* UNTRUSTED: why, as gpg and the trusted keys say it; NULL otherwise. */
const char *bmapd_flasher_image_get_signature_distrust (BmapdFlasherImage *self);

G_END_DECLS
