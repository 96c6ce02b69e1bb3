/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmapctl-json.h"

void
bmapctl_json_append_string(GString *json, const char *str)
{
  g_string_append_c(json, '"');
  for (const char *p = str; p != NULL && *p != '\0'; p++) {
    guchar c = (guchar) *p;

    switch (c) {
      case '"':
        g_string_append(json, "\\\"");
        break;
      case '\\':
        g_string_append(json, "\\\\");
        break;
      case '\n':
        g_string_append(json, "\\n");
        break;
      case '\t':
        g_string_append(json, "\\t");
        break;
      default:
        if (c < 0x20)
          g_string_append_printf(json, "\\u%04x", c);
        else
          g_string_append_c(json, (char) c);
    }
  }
  g_string_append_c(json, '"');
}
