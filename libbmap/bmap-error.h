/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* One error vocabulary end to end: every code maps one to one onto a D-Bus
 * error name org.bmapd.bmapd1.Error.<Name> and onto bmapctl's messages. */
#define BMAP_ERROR (bmap_error_quark ())

typedef enum {
  BMAP_ERROR_NOT_AUTHORIZED,
  BMAP_ERROR_INVALID_ARGUMENT,
  BMAP_ERROR_BAD_BMAP,
  BMAP_ERROR_BAD_IMAGE,
  BMAP_ERROR_NO_BMAP,
  BMAP_ERROR_CHECKSUM_MISMATCH,
  BMAP_ERROR_DEVICE_BUSY,
  BMAP_ERROR_DEVICE_GONE,
  BMAP_ERROR_DEVICE_TOO_SMALL,
  BMAP_ERROR_READ_ONLY,
  BMAP_ERROR_MEDIA_CHANGED,
  BMAP_ERROR_CANCELLED,
  BMAP_ERROR_IO,
  BMAP_ERROR_UNSUPPORTED,
  BMAP_ERROR_LIMIT,
} BmapErrorCode;

#define BMAP_ERROR_N_CODES     (BMAP_ERROR_LIMIT + 1)
#define BMAP_DBUS_ERROR_PREFIX "org.bmapd.bmapd1.Error."

GQuark bmap_error_quark (void);

/* "org.bmapd.bmapd1.Error.ChecksumMismatch" for BMAP_ERROR_CHECKSUM_MISMATCH. */
const char *bmap_error_code_to_dbus_name (BmapErrorCode code);
/* The short name, "ChecksumMismatch". */
const char *bmap_error_code_to_name (BmapErrorCode code);
/* Returns FALSE when @name is not one of ours. */
gboolean bmap_error_code_from_dbus_name (const char *name, BmapErrorCode *code);

/* Maps an errno onto the closest code: EBUSY -> DeviceBusy, ENODEV/ENXIO/
 * ENOMEDIUM -> DeviceGone, EROFS/EACCES on write -> ReadOnly, ENOSPC/EFBIG ->
 * DeviceTooSmall, ECANCELED -> Cancelled, everything else -> IO. */
BmapErrorCode bmap_error_code_from_errno (int errsv);

/* Sets @error from @errsv with a message "<formatted>: <strerror>". */
void bmap_error_set_errno (GError **error, int errsv, const char *format, ...) G_GNUC_PRINTF (3, 4);

/* Sets BMAP_ERROR_CANCELLED when @cancellable is cancelled. */
gboolean bmap_error_set_if_cancelled (GCancellable *cancellable, GError **error);

/* Turns any GError into a BMAP_ERROR one (G_IO_ERROR_CANCELLED -> Cancelled,
 * other domains -> IO), keeping the message. */
void bmap_error_normalize (GError **error);

G_END_DECLS
