/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define BMAPD_CONFIG_DEFAULT_IDLE_TIMEOUT_SEC 120
#define BMAPD_CONFIG_DEFAULT_MAX_JOBS         8
/* MaxJobs above this is refused: each job holds a device and a few MiB. */
#define BMAPD_CONFIG_MAX_MAX_JOBS      64
#define BMAPD_CONFIG_DEFAULT_MAX_RULES 16
/* Auto-flash cards of one rule taken within this many seconds share one
 * read of the image. */
#define BMAPD_CONFIG_DEFAULT_SHARE_WINDOW_SEC 2
#define BMAPD_CONFIG_MAX_SHARE_WINDOW_SEC     60
/* Each rule holds its image and bmap open, and its bmap in memory. */
#define BMAPD_CONFIG_MAX_MAX_RULES 256
/* Per user (uid): one user at a limit does not stop the others. */
#define BMAPD_CONFIG_DEFAULT_MAX_REQUESTS_PER_USER 4
#define BMAPD_CONFIG_DEFAULT_MAX_JOBS_PER_USER     8
#define BMAPD_CONFIG_DEFAULT_MAX_RULES_PER_USER    4
#define BMAPD_CONFIG_DEFAULT_REQUEST_TIMEOUT_SEC   60
#define BMAPD_CONFIG_MAX_REQUEST_TIMEOUT_SEC       3600

/* /etc/bmapd/bmapd.conf, a GKeyFile:
 *
 *   [Daemon]
 *   IdleTimeoutSec=120   exit after this long without jobs; 0 = never
 *   MaxJobs=8            jobs (flash and create) running at once; more wait queued
 *   MaxJobsPerUser=8     jobs one uid may have queued or running
 *   MaxRequestsPerUser=4 calls of one uid reading their data or waiting for polkit
 *   RequestTimeoutSec=60 how long a call may take to give its bmap and first image bytes
 *
 *   [AutoFlash]
 *   MaxRules=16          auto-flash rules at once (rule files and AddAutoFlash)
 *   MaxRulesPerUser=4    rules one uid may have armed or being added
 */
typedef struct {
  guint idle_timeout_sec;
  guint max_jobs;
  guint max_jobs_per_user;
  guint max_requests_per_user;
  guint request_timeout_sec;
  guint max_rules;
  guint max_rules_per_user;
  guint share_window_sec;
} BmapdConfig;

void bmapd_config_init (BmapdConfig *config);

/* Loads @path over the defaults. A missing file is fine unless
 * @must_exist; an unknown group or key, or a value that does not parse,
 * fails with a message naming the file, the key and the value. */
gboolean
bmapd_config_load (BmapdConfig *config, const char *path, gboolean must_exist, GError **error);

G_END_DECLS
