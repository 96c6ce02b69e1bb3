/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "bmap-error.h"
#include "bmapd-bus-args.h"
#include "bmapd-sd.h"

static gboolean
check_type (sd_bus_message *m, const char *key, const char *expected, GError **error)
{
  const char *contents = NULL;
  int r;

  r = sd_bus_message_peek_type (m, NULL, &contents);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "option \"%s\"", key);
    return FALSE;
  }
  if (g_strcmp0 (contents, expected) != 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "option \"%s\" has type \"%s\", expected \"%s\"", key, contents, expected);
    return FALSE;
  }
  return TRUE;
}

gboolean
bmapd_bus_read_basic (sd_bus_message *m, const char *key, char type, void *value, GError **error)
{
  char sig[2] = { type, '\0' };
  int r;

  if (!check_type (m, key, sig, error))
    return FALSE;
  r = sd_bus_message_read (m, "v", sig, value);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "option \"%s\"", key);
    return FALSE;
  }
  return TRUE;
}

gboolean
bmapd_bus_read_bool (sd_bus_message *m, const char *key, gboolean *out, GError **error)
{
  int v = 0;

  if (!bmapd_bus_read_basic (m, key, 'b', &v, error))
    return FALSE;
  *out = v != 0;
  return TRUE;
}

gboolean
bmapd_bus_read_string (sd_bus_message *m, const char *key, char **out, GError **error)
{
  const char *s = NULL;

  if (!bmapd_bus_read_basic (m, key, 's', &s, error))
    return FALSE;
  if (!g_utf8_validate (s, -1, NULL) || strlen (s) > 4096) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "option \"%s\" is not valid UTF-8 of at most 4096 bytes", key);
    return FALSE;
  }
  g_free (*out);
  *out = g_strdup (s);
  return TRUE;
}

gboolean
bmapd_bus_read_strv (sd_bus_message *m, const char *key, char ***out, GError **error)
{
  char **strv = NULL;
  g_auto (GStrv) owned = NULL;
  int r;

  if (!check_type (m, key, "as", error))
    return FALSE;
  r = sd_bus_message_enter_container (m, 'v', "as");
  if (r >= 0)
    r = sd_bus_message_read_strv (m, &strv);
  if (r >= 0)
    r = sd_bus_message_exit_container (m);
  if (r < 0) {
    g_strfreev (strv);
    bmap_error_set_errno (error, -r, "option \"%s\"", key);
    return FALSE;
  }
  /* sd-bus allocates with malloc: hand out GLib memory. */
  owned = g_strdupv (strv != NULL ? strv : (char *[]){ NULL });
  for (guint i = 0; strv != NULL && strv[i] != NULL; i++)
    free (strv[i]);
  free (strv);
  if (g_strv_length (owned) > 64) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "option \"%s\" has %u strings, more than 64", key, g_strv_length (owned));
    return FALSE;
  }
  for (guint i = 0; owned[i] != NULL; i++) {
    if (owned[i][0] == '\0' || strlen (owned[i]) > 256 || !g_utf8_validate (owned[i], -1, NULL)) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "option \"%s\": string %u is empty, longer than 256 bytes or not UTF-8", key, i);
      return FALSE;
    }
  }
  g_strfreev (*out);
  *out = g_steal_pointer (&owned);
  return TRUE;
}

gboolean
bmapd_bus_read_dict (sd_bus_message *m, BmapdBusDictFunc func, gpointer user_data, GError **error)
{
  int r;

  r = sd_bus_message_enter_container (m, 'a', "{sv}");
  while (r >= 0) {
    const char *key = NULL;

    r = sd_bus_message_enter_container (m, 'e', "sv");
    if (r <= 0)
      break;
    r = sd_bus_message_read (m, "s", &key);
    if (r < 0)
      break;
    if (!func (m, key, user_data, error))
      return FALSE;
    r = sd_bus_message_exit_container (m);
  }
  if (r >= 0)
    r = sd_bus_message_exit_container (m);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "cannot parse the options");
    return FALSE;
  }
  return TRUE;
}

gboolean
bmapd_bus_get_caller_uid (sd_bus_message *m, uid_t *uid, GError **error)
{
  g_autoptr (sd_bus_creds) creds = NULL;
  int r;

  r = sd_bus_query_sender_creds (m, SD_BUS_CREDS_EUID, &creds);
  if (r >= 0)
    r = sd_bus_creds_get_euid (creds, uid);
  if (r < 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NOT_AUTHORIZED,
                 "cannot find out the uid of the caller %s: %s", sd_bus_message_get_sender (m),
                 g_strerror (-r));
    return FALSE;
  }
  return TRUE;
}
