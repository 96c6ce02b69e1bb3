/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Appends @str as a JSON string literal (quoted, escaped). */
void bmapctl_json_append_string(GString *json, const char *str);

G_END_DECLS
