/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <systemd/sd-event.h>

#include "bmap-error.h"
#include "bmapctl-follow.h"
#include "bmapctl-json.h"
#include "bmapctl-progress.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_event, sd_event_unref)

struct _BmapctlFollower {
  sd_bus *bus;
  sd_event *event;
  const BmapctlOptions *options;
  BmapctlProgress *progress;
  gboolean detach;

  sd_bus_slot *match_job;
  sd_bus_slot *match_props;
  sd_bus_slot *match_owner;
  sd_bus_slot *call_slot;
  sd_bus_slot *cancel_slot;
  sd_bus_slot *props_slot;

  const char *what;
  BmapctlJob *job; /* path set once the call returned */
  gboolean finished;
  guint interrupts;
  int exit_status;
  GError *error;
};

static void
follower_quit (BmapctlFollower *f, int status)
{
  f->exit_status = status;
  f->finished = TRUE;
  sd_event_exit (f->event, status);
}

static void
follower_fail (BmapctlFollower *f, GError *error)
{
  g_clear_error (&f->error);
  f->error = error;
  follower_quit (f, bmapctl_exit_status_for_error (error));
}

static gboolean
is_our_job (BmapctlFollower *f, sd_bus_message *m)
{
  return f->job->path != NULL && g_strcmp0 (sd_bus_message_get_path (m), f->job->path) == 0;
}

static void
show_progress (BmapctlFollower *f)
{
  bmapctl_progress_set_io (f->progress, f->job->bytes_checked, f->job->bytes_written);
  bmapctl_progress_update (f->progress, f->job->state != NULL ? f->job->state : "waiting",
                           f->job->bytes_done, f->job->bytes_total, f->job->rate);
}

static int
on_job_signal (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapctlFollower *f = userdata;
  const char *member = sd_bus_message_get_member (m);

  if (!is_our_job (f, m) || f->finished)
    return 0;

  if (g_strcmp0 (member, "Progress") == 0) {
    guint64 done, total, rate;

    if (sd_bus_message_read (m, "ttt", &done, &total, &rate) < 0)
      return 0;
    f->job->bytes_done = done;
    f->job->bytes_total = total;
    f->job->rate = rate;
    show_progress (f);
  } else if (g_strcmp0 (member, "Finished") == 0) {
    const char *state = NULL, *name = NULL, *message = NULL;
    BmapErrorCode code = BMAP_ERROR_IO;

    if (sd_bus_message_read (m, "sss", &state, &name, &message) < 0)
      return 0;
    g_free (f->job->state);
    f->job->state = g_strdup (state);
    bmapctl_progress_clear (f->progress);
    if (g_str_equal (state, "done")) {
      follower_quit (f, BMAPCTL_EXIT_OK);
    } else if (g_str_equal (state, "canceled")) {
      follower_fail (f, g_error_new (BMAP_ERROR, BMAP_ERROR_CANCELLED, "%s: canceled%s%s", f->what,
                                     message != NULL && *message ? ": " : "",
                                     message != NULL ? message : ""));
    } else {
      bmap_error_code_from_dbus_name (name, &code);
      follower_fail (
          f, g_error_new (BMAP_ERROR, code, "%s", message != NULL && *message ? message : name));
    }
  }
  return 0;
}

static int
on_properties_changed (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapctlFollower *f = userdata;
  const char *iface = NULL;

  if (!is_our_job (f, m) || f->finished)
    return 0;
  if (sd_bus_message_read (m, "s", &iface) < 0 || g_strcmp0 (iface, BMAPD_JOB_IFACE) != 0)
    return 0;
  {
    g_autofree char *old_state = g_strdup (f->job->state);

    if (bmapctl_read_job_props (m, f->job) < 0)
      return 0;
    if (g_strcmp0 (old_state, f->job->state) != 0)
      show_progress (f);
  }
  return 0;
}

static int
on_owner_changed (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapctlFollower *f = userdata;
  const char *name = NULL, *old_owner = NULL, *new_owner = NULL;

  if (sd_bus_message_read (m, "sss", &name, &old_owner, &new_owner) < 0)
    return 0;
  if (g_strcmp0 (name, BMAPD_BUS_NAME) == 0 && (new_owner == NULL || *new_owner == '\0')
      && f->job->path != NULL && !f->finished) {
    bmapctl_progress_clear (f->progress);
    follower_fail (f, g_error_new (BMAP_ERROR, BMAP_ERROR_IO,
                                   "%s: bmapd exited while job %s was running; the device may "
                                   "hold a partial image",
                                   f->what, f->job->path));
  }
  return 0;
}

static int
on_cancel_reply (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapctlFollower *f = userdata;
  const sd_bus_error *e = sd_bus_message_get_error (m);

  f->cancel_slot = sd_bus_slot_unref (f->cancel_slot);
  if (e != NULL && !f->finished) {
    GError *error = NULL;

    bmapctl_bus_set_error (&error, e, 0, "canceling the job");
    bmapctl_printerr ("%s", error->message);
    g_error_free (error);
  }
  return 0;
}

static int
on_signal (sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
  BmapctlFollower *f = userdata;

  if (++f->interrupts > 1 || f->job->path == NULL) {
    bmapctl_progress_clear (f->progress);
    follower_fail (f, g_error_new (BMAP_ERROR, BMAP_ERROR_CANCELLED,
                                   f->job->path != NULL
                                       ? "%s: left without waiting; job %s is being canceled"
                                       : "%s: interrupted before the job started%s",
                                   f->what, f->job->path != NULL ? f->job->path : ""));
    return 0;
  }
  bmapctl_progress_clear (f->progress);
  if (!f->options->quiet && !f->options->json)
    fprintf (stderr, "bmapctl: canceling %s (press Ctrl-C again to leave without waiting)\n",
             f->job->path);
  sd_bus_call_method_async (f->bus, &f->cancel_slot, BMAPD_BUS_NAME, f->job->path, BMAPD_JOB_IFACE,
                            "Cancel", on_cancel_reply, f, "");
  return 0;
}

/* The job's state when the call is answered: a job waiting for its turn
 * ("queued") says so before its first change. */
static int
on_job_props_reply (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapctlFollower *f = userdata;

  f->props_slot = sd_bus_slot_unref (f->props_slot);
  /* A signal may have told more already. */
  if (sd_bus_message_is_method_error (m, NULL) || f->finished || f->job->state != NULL)
    return 0;
  if (bmapctl_read_job_props (m, f->job) >= 0 && f->job->state != NULL)
    show_progress (f);
  return 0;
}

static int
on_call_reply (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  BmapctlFollower *f = userdata;
  const sd_bus_error *e = sd_bus_message_get_error (m);
  const char *path = NULL;

  f->call_slot = sd_bus_slot_unref (f->call_slot);
  if (e != NULL) {
    GError *error = NULL;

    bmapctl_progress_clear (f->progress);
    bmapctl_bus_set_error (&error, e, 0, f->what);
    follower_fail (f, error);
    return 0;
  }
  if (sd_bus_message_read (m, "o", &path) < 0) {
    follower_fail (f,
                   g_error_new (BMAP_ERROR, BMAP_ERROR_IO, "%s: bmapd sent a bad reply", f->what));
    return 0;
  }
  f->job->path = g_strdup (path);

  if (f->detach) {
    if (f->options->json)
      printf ("{\"job\":\"%s\"}\n", path);
    else if (!f->options->quiet)
      printf ("Started job %s.\nFollow it with 'bmapctl jobs' or 'bmapctl monitor'; "
              "cancel it with 'bmapctl cancel %s'.\n",
              path, path);
    follower_quit (f, BMAPCTL_EXIT_OK);
    return 0;
  }
  sd_bus_call_method_async (f->bus, &f->props_slot, BMAPD_BUS_NAME, path,
                            "org.freedesktop.DBus.Properties", "GetAll", on_job_props_reply, f, "s",
                            BMAPD_JOB_IFACE);
  if (f->interrupts > 0) {
    /* Ctrl-C came while the call was under way. */
    sd_bus_call_method_async (f->bus, &f->cancel_slot, BMAPD_BUS_NAME, path, BMAPD_JOB_IFACE,
                              "Cancel", on_cancel_reply, f, "");
  }
  return 0;
}

BmapctlFollower *
bmapctl_follower_new (sd_bus *bus, const BmapctlOptions *options, GError **error)
{
  g_autoptr (BmapctlFollower) f = g_new0 (BmapctlFollower, 1);
  int r;

  f->bus = sd_bus_ref (bus);
  f->options = options;
  f->job = g_new0 (BmapctlJob, 1);
  f->progress = bmapctl_progress_new (options);

  r = sd_event_default (&f->event);
  if (r >= 0)
    r = sd_bus_attach_event (bus, f->event, SD_EVENT_PRIORITY_NORMAL);
  if (r >= 0)
    r = bmapctl_event_add_exit_signals (f->event, on_signal, f);
  if (r >= 0)
    r = sd_bus_match_signal (bus, &f->match_job, BMAPD_BUS_NAME, NULL, BMAPD_JOB_IFACE, NULL,
                             on_job_signal, f);
  if (r >= 0)
    r = sd_bus_match_signal (bus, &f->match_props, BMAPD_BUS_NAME, NULL,
                             "org.freedesktop.DBus.Properties", "PropertiesChanged",
                             on_properties_changed, f);
  if (r >= 0)
    r = sd_bus_match_signal (bus, &f->match_owner, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "NameOwnerChanged", on_owner_changed, f);
  if (r < 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "cannot set up the bus connection: %s",
                 g_strerror (-r));
    return NULL;
  }
  return g_steal_pointer (&f);
}

void
bmapctl_follower_free (BmapctlFollower *f)
{
  if (f == NULL)
    return;
  sd_bus_slot_unref (f->match_job);
  sd_bus_slot_unref (f->match_props);
  sd_bus_slot_unref (f->match_owner);
  sd_bus_slot_unref (f->call_slot);
  sd_bus_slot_unref (f->cancel_slot);
  sd_bus_slot_unref (f->props_slot);
  if (f->bus != NULL)
    sd_bus_detach_event (f->bus);
  sd_bus_unref (f->bus);
  sd_event_unref (f->event);
  bmapctl_progress_free (f->progress);
  bmapctl_job_free (f->job);
  g_clear_error (&f->error);
  g_free (f);
}

void
bmapctl_follower_set_detach (BmapctlFollower *follower, gboolean detach)
{
  follower->detach = detach;
}

int
bmapctl_follower_run (BmapctlFollower *f, sd_bus_message *call, const char *what,
                      BmapctlJob **result_job)
{
  int r;

  f->what = what;
  bmapctl_bus_set_interaction (call, f->options);
  /* polkit may ask for a password: allow far longer than the default. */
  r = sd_bus_call_async (f->bus, &f->call_slot, call, on_call_reply, f,
                         (guint64) 24 * 3600 * G_USEC_PER_SEC);
  if (r < 0) {
    g_autoptr (GError) error = g_error_new (BMAP_ERROR, BMAP_ERROR_IO, "%s: cannot call bmapd: %s",
                                            what, g_strerror (-r));

    return bmapctl_report_error ((BmapctlOptions *) f->options, error);
  }
  r = sd_event_loop (f->event);
  if (r < 0 && !f->finished) {
    f->error = g_error_new (BMAP_ERROR, BMAP_ERROR_IO, "%s: event loop failed: %s", what,
                            g_strerror (-r));
    f->exit_status = BMAPCTL_EXIT_FAILED;
  }
  bmapctl_progress_clear (f->progress);
  if (f->error != NULL)
    return bmapctl_report_error ((BmapctlOptions *) f->options, f->error);
  if (result_job != NULL)
    *result_job = g_steal_pointer (&f->job);
  return f->exit_status;
}
