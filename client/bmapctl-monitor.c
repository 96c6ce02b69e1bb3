/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <systemd/sd-event.h>

#include "bmap-error.h"
#include "bmap-text.h"
#include "bmapctl-bus.h"
#include "bmapctl-commands.h"
#include "bmapctl-json.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_event, sd_event_unref)

#define TEXT_PROGRESS_INTERVAL_US G_USEC_PER_SEC

typedef struct {
  const BmapctlOptions *options;
  sd_event *event;
  GHashTable *devices;       /* path -> BmapctlDevice */
  GHashTable *jobs;          /* path -> BmapctlJob */
  GHashTable *last_progress; /* path -> last text progress time (gint64 *) */
} Monitor;

static void emit_text (const char *format, ...) G_GNUC_PRINTF (1, 2);

static void
emit_text (const char *format, ...)
{
  g_autoptr (GDateTime) now = g_date_time_new_now_local ();
  g_autofree char *stamp = g_date_time_format (now, "%H:%M:%S");
  g_autofree char *raw = NULL;
  g_autofree char *msg = NULL;
  va_list args;

  va_start (args, format);
  raw = g_strdup_vprintf (format, args);
  va_end (args);
  /* Descriptions, device strings and error messages are the callers' and
   * the devices': escaped, so that none can drive the terminal. */
  msg = bmap_text_escape (raw, BMAP_TEXT_ESCAPE_DEFAULT);
  printf ("%s %s\n", stamp, msg);
  fflush (stdout);
}

static void
emit_json (const char *event, const char *key, GString *object)
{
  g_autoptr (GString) json = g_string_new ("{\"event\":");

  bmapctl_json_append_string (json, event);
  g_string_append_printf (json, ",\"time\":%" G_GINT64_FORMAT, g_get_real_time ());
  if (key != NULL) {
    g_string_append_printf (json, ",\"%s\":", key);
    g_string_append (json, object->str);
  }
  g_string_append (json, "}\n");
  fputs (json->str, stdout);
  fflush (stdout);
}

static char *
describe_device (const BmapctlDevice *d)
{
  g_autofree char *size = d->media_present ? bmapctl_format_size (d->size) : g_strdup ("no media");

  return g_strdup_printf ("%s  %s  %s %s  %s%s%s", d->node != NULL ? d->node : d->path,
                          d->bus != NULL && *d->bus ? d->bus : "-",
                          d->vendor != NULL ? d->vendor : "", d->model != NULL ? d->model : "",
                          size, d->removable ? "  removable" : "", d->system ? "  system" : "");
}

static void
device_event (Monitor *mon, const char *event, const BmapctlDevice *d)
{
  if (mon->options->json) {
    g_autoptr (GString) obj = g_string_new (NULL);

    bmapctl_append_device_json (obj, d);
    emit_json (event, "device", obj);
  } else {
    g_autofree char *what = describe_device (d);

    emit_text ("%-15s %s", event, what);
  }
}

static void
job_event (Monitor *mon, const char *event, const BmapctlJob *j)
{
  if (mon->options->json) {
    g_autoptr (GString) obj = g_string_new (NULL);

    bmapctl_append_job_json (obj, j);
    emit_json (event, "job", obj);
    return;
  }
  if (g_str_equal (event, "job-progress")) {
    g_autofree char *done = bmapctl_format_size (j->bytes_done);
    g_autofree char *total = bmapctl_format_size (j->bytes_total);
    g_autofree char *rate = bmapctl_format_size (j->rate);

    emit_text ("job %-3u %-11s %3.0f%%  %s of %s  %s/s", j->id, j->state != NULL ? j->state : "",
               j->bytes_total > 0 ? MIN (1.0, (double) j->bytes_done / j->bytes_total) * 100 : 0.0,
               done, total, rate);
  } else if (g_str_equal (event, "job-added")) {
    const char *dev = j->device != NULL ? strrchr (j->device, '/') : NULL;

    emit_text ("job %-3u %-11s %s %s%s%s", j->id, "started",
               j->operation != NULL ? j->operation : "",
               j->description != NULL ? j->description : "", dev != NULL && dev[1] ? " onto " : "",
               dev != NULL && dev[1] ? dev + 1 : "");
  } else if (g_str_equal (event, "job-finished")) {
    emit_text ("job %-3u %-11s %s", j->id, j->state != NULL ? j->state : "",
               j->error_message != NULL ? j->error_message : "");
  } else if (g_str_equal (event, "job-state")) {
    emit_text ("job %-3u %-11s", j->id, j->state != NULL ? j->state : "");
  } else {
    emit_text ("job %-3u %s", j->id, event);
  }
}

static int
on_interfaces_added (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Monitor *mon = userdata;
  g_autoptr (GPtrArray) devs = g_ptr_array_new ();
  g_autoptr (GPtrArray) jobs = g_ptr_array_new ();
  const char *path = NULL;

  if (sd_bus_message_read (m, "o", &path) < 0
      || bmapctl_read_interfaces (m, path, devs, jobs, NULL) < 0)
    return 0;
  for (guint i = 0; i < devs->len; i++) {
    BmapctlDevice *d = g_ptr_array_index (devs, i);

    g_hash_table_replace (mon->devices, d->path, d);
    device_event (mon, "device-added", d);
  }
  for (guint i = 0; i < jobs->len; i++) {
    BmapctlJob *j = g_ptr_array_index (jobs, i);

    g_hash_table_replace (mon->jobs, j->path, j);
    job_event (mon, "job-added", j);
  }
  return 0;
}

static int
on_interfaces_removed (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Monitor *mon = userdata;
  const char *path = NULL;
  BmapctlDevice *d;

  if (sd_bus_message_read (m, "o", &path) < 0)
    return 0;
  d = g_hash_table_lookup (mon->devices, path);
  if (d != NULL) {
    device_event (mon, "device-removed", d);
    g_hash_table_remove (mon->devices, path);
  }
  g_hash_table_remove (mon->jobs, path);
  g_hash_table_remove (mon->last_progress, path);
  return 0;
}

static int
on_properties_changed (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Monitor *mon = userdata;
  const char *path = sd_bus_message_get_path (m);
  const char *iface = NULL;

  if (sd_bus_message_read (m, "s", &iface) < 0)
    return 0;
  if (g_strcmp0 (iface, BMAPD_DEVICE_IFACE) == 0) {
    BmapctlDevice *d = g_hash_table_lookup (mon->devices, path);
    gboolean had_media;
    guint64 old_seq;

    if (d == NULL)
      return 0;
    had_media = d->media_present;
    old_seq = d->diskseq;
    if (bmapctl_read_device_props (m, d) < 0)
      return 0;
    if (had_media && !d->media_present)
      device_event (mon, "media-removed", d);
    else if (d->media_present && (!had_media || d->diskseq != old_seq))
      device_event (mon, "media-changed", d);
    else if (mon->options->json)
      device_event (mon, "device-changed", d);
  } else if (g_strcmp0 (iface, BMAPD_JOB_IFACE) == 0) {
    BmapctlJob *j = g_hash_table_lookup (mon->jobs, path);
    g_autofree char *old_state = NULL;

    if (j == NULL)
      return 0;
    old_state = g_strdup (j->state);
    if (bmapctl_read_job_props (m, j) < 0)
      return 0;
    if (g_strcmp0 (old_state, j->state) != 0 && !g_str_equal (j->state, "done")
        && !g_str_equal (j->state, "failed") && !g_str_equal (j->state, "canceled"))
      job_event (mon, "job-state", j);
  }
  return 0;
}

static int
on_job_signal (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Monitor *mon = userdata;
  const char *path = sd_bus_message_get_path (m);
  const char *member = sd_bus_message_get_member (m);
  BmapctlJob *j = g_hash_table_lookup (mon->jobs, path);

  if (j == NULL)
    return 0;
  if (g_strcmp0 (member, "Progress") == 0) {
    gint64 now = g_get_monotonic_time ();
    gint64 *last = g_hash_table_lookup (mon->last_progress, path);

    if (sd_bus_message_read (m, "ttt", &j->bytes_done, &j->bytes_total, &j->rate) < 0)
      return 0;
    if (!mon->options->json) {
      if (last != NULL && now - *last < TEXT_PROGRESS_INTERVAL_US)
        return 0;
      if (last == NULL) {
        last = g_new (gint64, 1);
        g_hash_table_insert (mon->last_progress, g_strdup (path), last);
      }
      *last = now;
    }
    job_event (mon, "job-progress", j);
  } else if (g_strcmp0 (member, "Finished") == 0) {
    const char *state = NULL, *name = NULL, *message = NULL;

    if (sd_bus_message_read (m, "sss", &state, &name, &message) < 0)
      return 0;
    g_free (j->state);
    j->state = g_strdup (state);
    g_free (j->error_name);
    j->error_name = g_strdup (name);
    g_free (j->error_message);
    j->error_message = g_strdup (message);
    job_event (mon, "job-finished", j);
  }
  return 0;
}

static int
on_owner_changed (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Monitor *mon = userdata;
  const char *name = NULL, *old_owner = NULL, *new_owner = NULL;

  if (sd_bus_message_read (m, "sss", &name, &old_owner, &new_owner) < 0
      || g_strcmp0 (name, BMAPD_BUS_NAME) != 0)
    return 0;
  if (new_owner == NULL || *new_owner == '\0') {
    g_hash_table_remove_all (mon->devices);
    g_hash_table_remove_all (mon->jobs);
    if (mon->options->json)
      emit_json ("daemon-stopped", NULL, NULL);
    else
      emit_text ("bmapd stopped");
  } else {
    if (mon->options->json)
      emit_json ("daemon-started", NULL, NULL);
    else
      emit_text ("bmapd started");
  }
  return 0;
}

int
bmapctl_monitor (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus) bus = NULL;
  g_autoptr (sd_event) event = NULL;
  g_autoptr (GPtrArray) devices = NULL;
  g_autoptr (GPtrArray) jobs = NULL;
  g_autoptr (GHashTable) dev_table = NULL;
  g_autoptr (GHashTable) job_table = NULL;
  g_autoptr (GHashTable) progress_table = NULL;
  Monitor mon = { 0 };
  int r;

  if (!bmapctl_parse (options, command, NULL,
                      "Prints devices coming and going, media changes, and jobs with their "
                      "progress, until Ctrl-C.\nWith --json, one JSON object per event.",
                      &argc, &argv))
    return BMAPCTL_EXIT_USAGE;
  if (argc != 1)
    return bmapctl_usage_error (command, "too many arguments");

  bus = bmapctl_bus_open (&error);
  if (bus == NULL)
    return bmapctl_report_error (options, error);

  dev_table
      = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) bmapctl_device_free);
  job_table
      = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) bmapctl_job_free);
  progress_table = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  mon.options = options;
  mon.devices = dev_table;
  mon.jobs = job_table;
  mon.last_progress = progress_table;

  r = sd_event_default (&event);
  mon.event = event;
  if (r >= 0)
    r = sd_bus_attach_event (bus, event, SD_EVENT_PRIORITY_NORMAL);
  /* Matches first, then the initial list, so nothing falls in between. */
  if (r >= 0)
    r = sd_bus_match_signal (bus, NULL, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                             "org.freedesktop.DBus.ObjectManager", "InterfacesAdded",
                             on_interfaces_added, &mon);
  if (r >= 0)
    r = sd_bus_match_signal (bus, NULL, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                             "org.freedesktop.DBus.ObjectManager", "InterfacesRemoved",
                             on_interfaces_removed, &mon);
  if (r >= 0)
    r = sd_bus_match_signal (bus, NULL, BMAPD_BUS_NAME, NULL, "org.freedesktop.DBus.Properties",
                             "PropertiesChanged", on_properties_changed, &mon);
  if (r >= 0)
    r = sd_bus_match_signal (bus, NULL, BMAPD_BUS_NAME, NULL, BMAPD_JOB_IFACE, NULL, on_job_signal,
                             &mon);
  if (r >= 0)
    r = sd_bus_match_signal (bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "NameOwnerChanged", on_owner_changed, &mon);
  if (r >= 0)
    r = bmapctl_event_add_exit_signals (event, NULL, NULL);
  if (r < 0) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_IO, "cannot set up the bus connection: %s",
                 g_strerror (-r));
    return bmapctl_report_error (options, error);
  }

  if (!bmapctl_get_managed_objects (bus, &devices, &jobs, NULL, &error))
    return bmapctl_report_error (options, error);
  if (!options->quiet && !options->json)
    emit_text ("monitoring bmapd: %u devices, %u jobs; Ctrl-C to stop", devices->len, jobs->len);
  bmapctl_index_by_path (dev_table, devices);
  bmapctl_index_by_path (job_table, jobs);

  r = sd_event_loop (event);
  sd_bus_detach_event (bus);
  return r < 0 ? BMAPCTL_EXIT_FAILED : BMAPCTL_EXIT_OK;
}
