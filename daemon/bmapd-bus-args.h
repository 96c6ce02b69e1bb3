/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

G_BEGIN_DECLS

/* Reading method arguments of type a{sv} (options, matches): every key is
 * handed to a parser, which reads the value with the helpers below. A value
 * of the wrong type is InvalidArgument naming the key and both types. */

typedef gboolean (*BmapdBusDictFunc) (sd_bus_message *m, const char *key, gpointer user_data,
                                      GError **error);

/* Reads one a{sv}; @func must read each value (the "v"). */
gboolean
bmapd_bus_read_dict (sd_bus_message *m, BmapdBusDictFunc func, gpointer user_data, GError **error);

/* A "v" holding the basic @type ('b' as int, 'u', 't', 'h' as int, 's'
 * as const char *). */
gboolean
bmapd_bus_read_basic (sd_bus_message *m, const char *key, char type, void *value, GError **error);
gboolean bmapd_bus_read_bool (sd_bus_message *m, const char *key, gboolean *out, GError **error);
/* Valid UTF-8 of at most 4096 bytes; replaces *@out. */
gboolean bmapd_bus_read_string (sd_bus_message *m, const char *key, char **out, GError **error);
/* An "as" of at most 64 non-empty UTF-8 strings of at most 256 bytes. */
gboolean bmapd_bus_read_strv (sd_bus_message *m, const char *key, char ***out, GError **error);

/* The effective uid of the sender of @m (NotAuthorized when unknown). */
gboolean bmapd_bus_get_caller_uid (sd_bus_message *m, uid_t *uid, GError **error);

G_END_DECLS
