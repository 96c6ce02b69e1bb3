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
bmapctl_json_append_member (GString *json, const char *key, const char *value)
{
  g_string_append_printf (json, ",\"%s\":", key);
  bmapctl_json_append_string (json, value);
}

void
bmapctl_append_device_json (GString *json, const BmapctlDevice *d)
{
  g_string_append (json, "{\"node\":");
  bmapctl_json_append_string (json, d->node);
  bmapctl_json_append_member (json, "name", d->name);
  bmapctl_json_append_member (json, "path", d->path);
  g_string_append_printf (json, ",\"size\":%" G_GUINT64_FORMAT ",\"logical_block_size\":%u",
                          d->size, d->logical_block_size);
  bmapctl_json_append_member (json, "bus", d->bus);
  bmapctl_json_append_member (json, "vendor", d->vendor);
  bmapctl_json_append_member (json, "model", d->model);
  bmapctl_json_append_member (json, "serial", d->serial);
  g_string_append_printf (json,
                          ",\"removable\":%s,\"system\":%s,\"read_only\":%s,\"media_present\":%s"
                          ",\"busy\":%s,\"diskseq\":%" G_GUINT64_FORMAT,
                          d->removable ? "true" : "false", d->system ? "true" : "false",
                          d->read_only ? "true" : "false", d->media_present ? "true" : "false",
                          d->busy ? "true" : "false", d->diskseq);
  bmapctl_json_append_member (json, "job", d->job != NULL ? d->job : "/");
  bmapctl_json_append_member (json, "partition_of",
                              d->partition_of != NULL ? d->partition_of : "/");
  g_string_append_c (json, '}');
}

void
bmapctl_append_job_json (GString *json, const BmapctlJob *j)
{
  g_string_append_printf (json, "{\"id\":%u,\"path\":", j->id);
  bmapctl_json_append_string (json, j->path);
  bmapctl_json_append_member (json, "operation", j->operation);
  bmapctl_json_append_member (json, "device", j->device);
  bmapctl_json_append_member (json, "description", j->description);
  bmapctl_json_append_member (json, "state", j->state);
  g_string_append_printf (json,
                          ",\"bytes_done\":%" G_GUINT64_FORMAT ",\"bytes_total\":%" G_GUINT64_FORMAT
                          ",\"progress\":%.4f,\"rate\":%" G_GUINT64_FORMAT
                          ",\"start_time\":%" G_GUINT64_FORMAT ",\"started_by_uid\":%u"
                          ",\"error_name\":",
                          j->bytes_done, j->bytes_total, j->progress, j->rate, j->start_time,
                          j->started_by_uid);
  bmapctl_json_append_string (json, j->error_name);
  bmapctl_json_append_member (json, "error_message", j->error_message);
  g_string_append_c (json, '}');
}
