/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdio.h>

#include "bmap-error.h"
#include "bmap-text.h"
#include "bmapctl-bus.h"
#include "bmapctl-commands.h"
#include "bmapctl-json.h"

static const char *
device_name (const char *path)
{
  const char *slash = path != NULL ? strrchr (path, '/') : NULL;

  return slash != NULL && slash[1] != '\0' ? slash + 1 : "-";
}

int
bmapctl_jobs (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus) bus = NULL;
  g_autoptr (GPtrArray) jobs = NULL;

  if (!bmapctl_parse (options, command, NULL,
                      "Lists running jobs and those that finished in the last minute.", &argc,
                      &argv))
    return BMAPCTL_EXIT_USAGE;
  if (argc != 1)
    return bmapctl_usage_error (command, "too many arguments");

  bus = bmapctl_bus_open (&error);
  if (bus == NULL || !bmapctl_get_managed_objects (bus, NULL, &jobs, NULL, &error))
    return bmapctl_report_error (options, error);

  if (options->json) {
    g_autoptr (GString) json = g_string_new ("[");

    for (guint i = 0; i < jobs->len; i++) {
      if (i > 0)
        g_string_append_c (json, ',');
      bmapctl_append_job_json (json, g_ptr_array_index (jobs, i));
    }
    g_string_append (json, "]\n");
    fputs (json->str, stdout);
    return BMAPCTL_EXIT_OK;
  }

  if (jobs->len > 0)
    printf ("%-5s %-8s %-11s %8s %-10s %-28s %s\n", "ID", "TYPE", "STATE", "PROGRESS", "DEVICE",
            "DESCRIPTION", "RESULT");
  for (guint i = 0; i < jobs->len; i++) {
    BmapctlJob *j = g_ptr_array_index (jobs, i);
    g_autofree char *progress = g_strdup_printf ("%.0f%%", MIN (j->progress, 1.0) * 100);
    /* Description is whatever the caller passed; the others come from
     * the bus too: none may drive the terminal. */
    g_autofree char *operation
        = bmap_text_escape (j->operation != NULL ? j->operation : "-", BMAP_TEXT_ESCAPE_DEFAULT);
    g_autofree char *state
        = bmap_text_escape (j->state != NULL ? j->state : "-", BMAP_TEXT_ESCAPE_DEFAULT);
    g_autofree char *device = bmap_text_escape (device_name (j->device), BMAP_TEXT_ESCAPE_DEFAULT);
    g_autofree char *description = bmap_text_escape (
        j->description != NULL && *j->description ? j->description : "-", BMAP_TEXT_ESCAPE_DEFAULT);
    g_autofree char *result
        = bmap_text_escape (j->error_message != NULL && *j->error_message ? j->error_message : "-",
                            BMAP_TEXT_ESCAPE_DEFAULT);

    printf ("%-5u %-8s %-11s %8s %-10s %-28s %s\n", j->id, operation, state, progress, device,
            description, result);
  }
  if (!options->quiet)
    printf ("%s%u job%s listed.\n", jobs->len > 0 ? "\n" : "", jobs->len,
            jobs->len == 1 ? "" : "s");
  return BMAPCTL_EXIT_OK;
}

int
bmapctl_cancel (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus) bus = NULL;
  g_autoptr (GPtrArray) jobs = NULL;
  g_autoptr (sd_bus_message) call = NULL;
  g_autoptr (sd_bus_message) reply = NULL;
  sd_bus_error bus_error = SD_BUS_ERROR_NULL;
  BmapctlJob *job;
  GPid agent;
  int r;

  if (!bmapctl_parse (options, command, NULL,
                      "Cancels a job: JOB is its id (see 'bmapctl jobs') or its object path.\n"
                      "Cancelling another user's job needs authorization.",
                      &argc, &argv))
    return BMAPCTL_EXIT_USAGE;
  if (argc != 2)
    return bmapctl_usage_error (command, argc < 2 ? "missing JOB" : "too many arguments");

  bus = bmapctl_bus_open (&error);
  if (bus == NULL || !bmapctl_get_managed_objects (bus, NULL, &jobs, NULL, &error))
    return bmapctl_report_error (options, error);
  job = bmapctl_find_job (jobs, argv[1]);
  if (job == NULL) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: no such job (see 'bmapctl jobs')", argv[1]);
    return bmapctl_report_error (options, error);
  }

  r = sd_bus_message_new_method_call (bus, &call, BMAPD_BUS_NAME, job->path, BMAPD_JOB_IFACE,
                                      "Cancel");
  if (r >= 0)
    r = bmapctl_bus_set_interaction (call, options);
  agent = bmapctl_polkit_agent_open (options);
  if (r >= 0)
    r = sd_bus_call (bus, call, (guint64) 3600 * G_USEC_PER_SEC, &bus_error, &reply);
  bmapctl_polkit_agent_close (agent);
  if (r < 0) {
    g_autofree char *what = g_strdup_printf ("job %u", job->id);

    bmapctl_bus_set_error (&error, &bus_error, r, what);
    sd_bus_error_free (&bus_error);
    return bmapctl_report_error (options, error);
  }
  if (options->json)
    printf ("{\"result\":\"canceled\",\"job\":\"%s\"}\n", job->path);
  else if (!options->quiet)
    printf ("Canceling job %u (%s).\n", job->id, job->path);
  return BMAPCTL_EXIT_OK;
}
