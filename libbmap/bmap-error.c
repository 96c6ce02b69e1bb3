/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <gio/gio.h>

#include "bmap-error.h"

static const char *const error_names[BMAP_ERROR_N_CODES] = {
  [BMAP_ERROR_NOT_AUTHORIZED] = "NotAuthorized",
  [BMAP_ERROR_INVALID_ARGUMENT] = "InvalidArgument",
  [BMAP_ERROR_BAD_BMAP] = "BadBmap",
  [BMAP_ERROR_BAD_IMAGE] = "BadImage",
  [BMAP_ERROR_NO_BMAP] = "NoBmap",
  [BMAP_ERROR_CHECKSUM_MISMATCH] = "ChecksumMismatch",
  [BMAP_ERROR_DEVICE_BUSY] = "DeviceBusy",
  [BMAP_ERROR_DEVICE_GONE] = "DeviceGone",
  [BMAP_ERROR_DEVICE_TOO_SMALL] = "DeviceTooSmall",
  [BMAP_ERROR_READ_ONLY] = "ReadOnly",
  [BMAP_ERROR_MEDIA_CHANGED] = "MediaChanged",
  [BMAP_ERROR_CANCELLED] = "Cancelled",
  [BMAP_ERROR_IO] = "IO",
  [BMAP_ERROR_UNSUPPORTED] = "Unsupported",
  [BMAP_ERROR_LIMIT] = "Limit",
};

static const char *const error_dbus_names[BMAP_ERROR_N_CODES] = {
#define NAME(code, name) [code] = BMAP_DBUS_ERROR_PREFIX name
  NAME (BMAP_ERROR_NOT_AUTHORIZED, "NotAuthorized"),
  NAME (BMAP_ERROR_INVALID_ARGUMENT, "InvalidArgument"),
  NAME (BMAP_ERROR_BAD_BMAP, "BadBmap"),
  NAME (BMAP_ERROR_BAD_IMAGE, "BadImage"),
  NAME (BMAP_ERROR_NO_BMAP, "NoBmap"),
  NAME (BMAP_ERROR_CHECKSUM_MISMATCH, "ChecksumMismatch"),
  NAME (BMAP_ERROR_DEVICE_BUSY, "DeviceBusy"),
  NAME (BMAP_ERROR_DEVICE_GONE, "DeviceGone"),
  NAME (BMAP_ERROR_DEVICE_TOO_SMALL, "DeviceTooSmall"),
  NAME (BMAP_ERROR_READ_ONLY, "ReadOnly"),
  NAME (BMAP_ERROR_MEDIA_CHANGED, "MediaChanged"),
  NAME (BMAP_ERROR_CANCELLED, "Cancelled"),
  NAME (BMAP_ERROR_IO, "IO"),
  NAME (BMAP_ERROR_UNSUPPORTED, "Unsupported"),
  NAME (BMAP_ERROR_LIMIT, "Limit"),
#undef NAME
};

/* clang-format off */
G_DEFINE_QUARK (bmap-error-quark, bmap_error)
/* clang-format on */

const char *
bmap_error_code_to_name (BmapErrorCode code)
{
  if ((guint) code >= BMAP_ERROR_N_CODES)
    return error_names[BMAP_ERROR_IO];
  return error_names[code];
}

const char *
bmap_error_code_to_dbus_name (BmapErrorCode code)
{
  if ((guint) code >= BMAP_ERROR_N_CODES)
    return error_dbus_names[BMAP_ERROR_IO];
  return error_dbus_names[code];
}

gboolean
bmap_error_code_from_dbus_name (const char *name, BmapErrorCode *code)
{
  g_return_val_if_fail (code != NULL, FALSE);

  if (name == NULL || !g_str_has_prefix (name, BMAP_DBUS_ERROR_PREFIX))
    return FALSE;
  name += strlen (BMAP_DBUS_ERROR_PREFIX);
  for (guint i = 0; i < BMAP_ERROR_N_CODES; i++) {
    if (g_str_equal (name, error_names[i])) {
      *code = (BmapErrorCode) i;
      return TRUE;
    }
  }
  return FALSE;
}

BmapErrorCode
bmap_error_code_from_errno (int errsv)
{
  switch (errsv) {
    case EBUSY:
      return BMAP_ERROR_DEVICE_BUSY;
    case ENODEV:
    case ENXIO:
    case ENOMEDIUM:
      return BMAP_ERROR_DEVICE_GONE;
    case EROFS:
      return BMAP_ERROR_READ_ONLY;
    case ENOSPC:
    case EFBIG:
      return BMAP_ERROR_DEVICE_TOO_SMALL;
    case ECANCELED:
      return BMAP_ERROR_CANCELLED;
    case EINVAL:
    case EISDIR:
    case ENOTDIR:
    case ENOENT:
    case ELOOP:
      return BMAP_ERROR_INVALID_ARGUMENT;
    case EACCES:
    case EPERM:
      return BMAP_ERROR_NOT_AUTHORIZED;
    default:
      return BMAP_ERROR_IO;
  }
}

void
bmap_error_set_errno (GError **error, int errsv, const char *format, ...)
{
  va_list args;
  g_autofree char *what = NULL;

  va_start (args, format);
  what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, BMAP_ERROR, bmap_error_code_from_errno (errsv), "%s: %s", what,
               g_strerror (errsv));
}

gboolean
bmap_error_set_if_cancelled (GCancellable *cancellable, GError **error)
{
  if (cancellable == NULL || !g_cancellable_is_cancelled (cancellable))
    return FALSE;
  g_set_error_literal (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "Operation was cancelled");
  return TRUE;
}

void
bmap_error_normalize (GError **error)
{
  GError *e;

  if (error == NULL || *error == NULL || (*error)->domain == BMAP_ERROR)
    return;
  e = *error;
  if (g_error_matches (e, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    e->code = BMAP_ERROR_CANCELLED;
  else
    e->code = BMAP_ERROR_IO;
  e->domain = BMAP_ERROR;
}
