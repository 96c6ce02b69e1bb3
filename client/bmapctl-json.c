/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmapctl-json.h"

void
bmapctl_json_append_string (GString *json, const char *str)
{
  g_string_append_c (json, '"');
  for (const char *p = str; p != NULL && *p != '\0'; p++) {
    guchar c = (guchar) *p;

    switch (c) {
      case '"':
        g_string_append (json, "\\\"");
        break;
      case '\\':
        g_string_append (json, "\\\\");
        break;
      case '\n':
        g_string_append (json, "\\n");
        break;
      case '\t':
        g_string_append (json, "\\t");
        break;
      default:
        if (c < 0x20)
          g_string_append_printf (json, "\\u%04x", c);
        else
          g_string_append_c (json, (char) c);
    }
  }
  g_string_append_c (json, '"');
}

void
bmapctl_append_device_json (GString *json, const BmapctlDevice *d)
{
  g_string_append (json, "{\"node\":");
  bmapctl_json_append_string (json, d->node);
  g_string_append (json, ",\"name\":");
  bmapctl_json_append_string (json, d->name);
  g_string_append (json, ",\"path\":");
  bmapctl_json_append_string (json, d->path);
  g_string_append_printf (json, ",\"size\":%" G_GUINT64_FORMAT ",\"logical_block_size\":%u",
                          d->size, d->logical_block_size);
  g_string_append (json, ",\"bus\":");
  bmapctl_json_append_string (json, d->bus);
  g_string_append (json, ",\"vendor\":");
  bmapctl_json_append_string (json, d->vendor);
  g_string_append (json, ",\"model\":");
  bmapctl_json_append_string (json, d->model);
  g_string_append (json, ",\"serial\":");
  bmapctl_json_append_string (json, d->serial);
  g_string_append_printf (json,
                          ",\"removable\":%s,\"system\":%s,\"read_only\":%s,\"media_present\":%s"
                          ",\"busy\":%s,\"diskseq\":%" G_GUINT64_FORMAT ",\"job\":",
                          d->removable ? "true" : "false", d->system ? "true" : "false",
                          d->read_only ? "true" : "false", d->media_present ? "true" : "false",
                          d->busy ? "true" : "false", d->diskseq);
  bmapctl_json_append_string (json, d->job != NULL ? d->job : "/");
  g_string_append_c (json, '}');
}

void
bmapctl_append_job_json (GString *json, const BmapctlJob *j)
{
  g_string_append_printf (json, "{\"id\":%u,\"path\":", j->id);
  bmapctl_json_append_string (json, j->path);
  g_string_append (json, ",\"operation\":");
  bmapctl_json_append_string (json, j->operation);
  g_string_append (json, ",\"device\":");
  bmapctl_json_append_string (json, j->device);
  g_string_append (json, ",\"description\":");
  bmapctl_json_append_string (json, j->description);
  g_string_append (json, ",\"state\":");
  bmapctl_json_append_string (json, j->state);
  g_string_append_printf (json,
                          ",\"bytes_done\":%" G_GUINT64_FORMAT ",\"bytes_total\":%" G_GUINT64_FORMAT
                          ",\"progress\":%.4f,\"rate\":%" G_GUINT64_FORMAT
                          ",\"start_time\":%" G_GUINT64_FORMAT ",\"started_by_uid\":%u"
                          ",\"error_name\":",
                          j->bytes_done, j->bytes_total, j->progress, j->rate, j->start_time,
                          j->started_by_uid);
  bmapctl_json_append_string (json, j->error_name);
  g_string_append (json, ",\"error_message\":");
  bmapctl_json_append_string (json, j->error_message);
  g_string_append_c (json, '}');
}
