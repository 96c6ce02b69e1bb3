/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "bmap-error.h"
#include "bmapd-config.h"

void
bmapd_config_init (BmapdConfig *config)
{
  config->idle_timeout_sec = BMAPD_CONFIG_DEFAULT_IDLE_TIMEOUT_SEC;
  config->max_jobs = BMAPD_CONFIG_DEFAULT_MAX_JOBS;
  config->max_jobs_per_user = BMAPD_CONFIG_DEFAULT_MAX_JOBS_PER_USER;
  config->max_requests_per_user = BMAPD_CONFIG_DEFAULT_MAX_REQUESTS_PER_USER;
  config->request_timeout_sec = BMAPD_CONFIG_DEFAULT_REQUEST_TIMEOUT_SEC;
  config->max_rules = BMAPD_CONFIG_DEFAULT_MAX_RULES;
  config->max_rules_per_user = BMAPD_CONFIG_DEFAULT_MAX_RULES_PER_USER;
  config->share_window_sec = BMAPD_CONFIG_DEFAULT_SHARE_WINDOW_SEC;
}

/* Strict unsigned parsing: GKeyFile's integer parser accepts "-1" and
 * silently wraps, and ignores neither spaces nor units consistently. */
static gboolean
parse_uint (const char *path, const char *group, const char *key, const char *value, guint min,
            guint max, guint *out, GError **error)
{
  guint64 v = 0;
  g_autoptr (GError) local_error = NULL;

  if (!g_ascii_string_to_unsigned (value, 10, min, max, &v, &local_error)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: [%s] %s=%s: expected a whole number from %u to %u", path, group, key, value,
                 min, max);
    return FALSE;
  }
  *out = (guint) v;
  return TRUE;
}

gboolean
bmapd_config_load (BmapdConfig *config, const char *path, gboolean must_exist, GError **error)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) local_error = NULL;
  g_auto (GStrv) groups = NULL;

  if (!g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, &local_error)) {
    if (!must_exist && g_error_matches (local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      return TRUE;
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "%s: %s", path,
                 local_error->message);
    return FALSE;
  }

  groups = g_key_file_get_groups (kf, NULL);
  for (guint i = 0; groups[i] != NULL; i++) {
    g_auto (GStrv) keys = NULL;
    gboolean daemon_group = g_str_equal (groups[i], "Daemon");

    /* Unknown groups are refused rather than ignored: a typo in a group
     * name would otherwise silently drop the settings under it. */
    if (!daemon_group && !g_str_equal (groups[i], "AutoFlash")) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: unknown group [%s] (known: [Daemon], [AutoFlash])", path, groups[i]);
      return FALSE;
    }
    keys = g_key_file_get_keys (kf, groups[i], NULL, NULL);
    for (guint j = 0; keys != NULL && keys[j] != NULL; j++) {
      const char *key = keys[j];
      g_autofree char *value = g_key_file_get_value (kf, groups[i], key, NULL);

      g_strstrip (value);
      if (daemon_group && g_str_equal (key, "IdleTimeoutSec")) {
        if (!parse_uint (path, groups[i], key, value, 0, 7 * 24 * 3600, &config->idle_timeout_sec,
                         error))
          return FALSE;
      } else if (daemon_group && g_str_equal (key, "MaxJobs")) {
        if (!parse_uint (path, groups[i], key, value, 1, BMAPD_CONFIG_MAX_MAX_JOBS,
                         &config->max_jobs, error))
          return FALSE;
      } else if (daemon_group && g_str_equal (key, "MaxJobsPerUser")) {
        if (!parse_uint (path, groups[i], key, value, 1, 1024, &config->max_jobs_per_user, error))
          return FALSE;
      } else if (daemon_group && g_str_equal (key, "MaxRequestsPerUser")) {
        if (!parse_uint (path, groups[i], key, value, 1, 1024, &config->max_requests_per_user,
                         error))
          return FALSE;
      } else if (daemon_group && g_str_equal (key, "RequestTimeoutSec")) {
        if (!parse_uint (path, groups[i], key, value, 1, BMAPD_CONFIG_MAX_REQUEST_TIMEOUT_SEC,
                         &config->request_timeout_sec, error))
          return FALSE;
      } else if (!daemon_group && g_str_equal (key, "MaxRules")) {
        if (!parse_uint (path, groups[i], key, value, 0, BMAPD_CONFIG_MAX_MAX_RULES,
                         &config->max_rules, error))
          return FALSE;
      } else if (!daemon_group && g_str_equal (key, "MaxRulesPerUser")) {
        if (!parse_uint (path, groups[i], key, value, 0, BMAPD_CONFIG_MAX_MAX_RULES,
                         &config->max_rules_per_user, error))
          return FALSE;
      } else if (!daemon_group && g_str_equal (key, "ShareWindowSec")) {
        if (!parse_uint (path, groups[i], key, value, 0, BMAPD_CONFIG_MAX_SHARE_WINDOW_SEC,
                         &config->share_window_sec, error))
          return FALSE;
      } else {
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                     "%s: [%s] %s=%s: unknown key (known: %s)%s", path, groups[i], key, value,
                     daemon_group ? "IdleTimeoutSec, MaxJobs, MaxJobsPerUser, "
                                    "MaxRequestsPerUser, RequestTimeoutSec"
                                  : "MaxRules, MaxRulesPerUser, ShareWindowSec",
                     daemon_group && g_str_has_prefix (key, "MaxRules")
                         ? "; MaxRules= belongs in [AutoFlash]"
                         : "");
        return FALSE;
      }
    }
  }
  return TRUE;
}
