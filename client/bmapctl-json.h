/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

#include "bmapctl-bus.h"

G_BEGIN_DECLS

/* Appends @str as a JSON string literal (quoted, escaped). */
void bmapctl_json_append_string (GString *json, const char *str);

/* Appends ,"@key":@value, the value as a JSON string: a member after the
 * first of an object. */
void bmapctl_json_append_member (GString *json, const char *key, const char *value);

/* Appends a device or job as one JSON object. */
void bmapctl_append_device_json (GString *json, const BmapctlDevice *device);
void bmapctl_append_job_json (GString *json, const BmapctlJob *job);

G_END_DECLS
