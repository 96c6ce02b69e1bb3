/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdio.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "bmapctl-bus.h"
#include "bmapctl-copy-many.h"
#include "bmapctl-json.h"
#include "bmapctl-progress.h"
#include "bmapctl-signature.h"
#include "bmapctl-summary.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_event, sd_event_unref)

/* What the set's progress line shows: its least advanced destination, the
 * pace of the whole set. */
typedef struct {
  const char *state;
  guint64 done;
  guint64 total;
  guint64 rate;
  gboolean ended;
} CardProgress;

static gboolean
behind (const CardProgress *a, const CardProgress *b)
{
  /* a->done / a->total < b->done / b->total, without a division. */
  if (a->total == 0 || b->total == 0)
    return a->total == 0 && b->total != 0;
  return (double) a->done * (double) b->total < (double) b->done * (double) a->total;
}

static void
show_slowest (BmapctlProgress *progress, const CardProgress *cards, guint n)
{
  const CardProgress *slowest = NULL;

  for (guint i = 0; i < n; i++) {
    if (!cards[i].ended && cards[i].state != NULL
        && (slowest == NULL || behind (&cards[i], slowest)))
      slowest = &cards[i];
  }
  if (slowest != NULL)
    bmapctl_progress_update (progress, slowest->state, slowest->done, slowest->total,
                             slowest->rate);
}

static void
print_failure (BmapctlOptions *options, const char *dest, const char *error_name,
               const char *message)
{
  bmapctl_printerr ("%s: %s", dest, message);
  if (options->json) {
    g_autoptr (GString) json = g_string_new ("{\"result\":");

    bmapctl_json_append_string (json, g_str_has_suffix (error_name, ".Cancelled") ? "canceled"
                                                                                  : "failed");
    bmapctl_json_append_member (json, "destination", dest);
    bmapctl_json_append_member (json, "error_name", error_name);
    bmapctl_json_append_member (json, "error_message", message);
    g_string_append (json, "}\n");
    fputs (json->str, stdout);
    fflush (stdout);
  }
}

/* ---- in-process --------------------------------------------------------- */

typedef struct {
  GMutex lock;
  BmapctlProgress *progress;
  CardProgress *cards;
  guint n;
} LocalSet;

typedef struct {
  LocalSet *set;
  guint idx;
} LocalCard;

static void
on_local_progress (const BmapProgress *p, gpointer user_data)
{
  LocalCard *card = user_data;
  LocalSet *set = card->set;

  /* Each destination's writer reports from its own thread. */
  g_mutex_lock (&set->lock);
  set->cards[card->idx] = (CardProgress){ bmap_phase_to_string (p->phase), p->job_done,
                                          p->job_total, p->rate, FALSE };
  show_slowest (set->progress, set->cards, set->n);
  g_mutex_unlock (&set->lock);
}

static void
on_local_done (BmapCopyTarget *target, gpointer user_data)
{
  LocalCard *card = user_data;

  g_mutex_lock (&card->set->lock);
  card->set->cards[card->idx].ended = TRUE;
  g_mutex_unlock (&card->set->lock);
}

int
bmapctl_copy_many_local (BmapctlOptions *options, const BmapctlCopyMany *spec, const char *image,
                         const BmapctlTarget *targets, guint n_targets)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (BmapSource) source = NULL;
  g_autoptr (BmapctlProgress) progress = NULL;
  g_autofree BmapCopyTarget *copies = g_new0 (BmapCopyTarget, n_targets);
  g_autofree LocalCard *cards = g_new0 (LocalCard, n_targets);
  g_autofree CardProgress *card_progress = g_new0 (CardProgress, n_targets);
  LocalSet set = { 0 };
  BmapCopyOptions copy_options = { 0 };
  int status = BMAPCTL_EXIT_OK;
  gint64 start, elapsed;
  gboolean ok;

  if (g_str_equal (image, "-"))
    source = bmap_source_new (STDIN_FILENO, FALSE, "standard input", &error);
  else
    source = bmap_source_new_for_path (image, &error);
  if (source == NULL)
    return bmapctl_report_error (options, error);

  for (guint i = 0; i < n_targets; i++) {
    copies[i].target = bmap_target_open (targets[i].path, &error);
    if (copies[i].target == NULL)
      break;
  }
  if (error == NULL) {
    for (guint i = 0; i < n_targets; i++) {
      const BmapctlTarget *bt = &targets[i];

      if (bt->kind == BMAPCTL_TARGET_BLOCK_DEVICE && !bt->partition) {
        g_autofree char *summary = bmapctl_disk_summary (bt->path, bt->devnum);

        if (summary != NULL)
          bmapctl_info (options, "erasing %s", summary);
      }
    }
    bmapctl_cancel_on_signals (cancellable);
    progress = bmapctl_progress_new (options);
    g_mutex_init (&set.lock);
    set.progress = progress;
    set.cards = card_progress;
    set.n = n_targets;
    for (guint i = 0; i < n_targets; i++) {
      cards[i] = (LocalCard){ &set, i };
      copies[i].progress_func = on_local_progress;
      copies[i].progress_data = &cards[i];
      copies[i].done_func = on_local_done;
      copies[i].done_data = &cards[i];
    }
    copy_options.map = spec->map;
    bmapctl_flash_options_to_copy (&spec->flash, &copy_options);
    copy_options.cancellable = cancellable;

    start = g_get_monotonic_time ();
    ok = bmap_copy_many (source, copies, n_targets, &copy_options, &error);
    elapsed = g_get_monotonic_time () - start;
    bmapctl_progress_clear (progress);
    g_mutex_clear (&set.lock);
    if (ok) {
      for (guint i = 0; i < n_targets; i++) {
        const GError *card_error = copies[i].error;

        if (card_error != NULL) {
          BmapErrorCode code
              = card_error->domain == BMAP_ERROR ? (BmapErrorCode) card_error->code : BMAP_ERROR_IO;

          print_failure (options, targets[i].path, bmap_error_code_to_dbus_name (code),
                         card_error->message);
          if (status == BMAPCTL_EXIT_OK || code != BMAP_ERROR_CANCELLED)
            status = code == BMAP_ERROR_CANCELLED ? BMAPCTL_EXIT_CANCELED : BMAPCTL_EXIT_FAILED;
        } else {
          g_autofree char *notes = bmap_copy_result_describe (&copies[i].result);

          if (spec->flash.eject_flags != 0) {
            g_autofree char *after = bmapctl_copy_eject_local (spec->flash.eject_flags, &targets[i],
                                                               &copies[i].target);
            g_autofree char *all
                = g_strjoin (notes != NULL ? "; " : "", notes != NULL ? notes : "", after, NULL);

            g_free (notes);
            notes = g_steal_pointer (&all);
          }

          bmapctl_copy_print_result (options, image, targets[i].path, &copies[i].result, notes,
                                     elapsed);
        }
      }
    }
  }
  for (guint i = 0; i < n_targets; i++) {
    g_clear_pointer (&copies[i].target, bmap_target_free);
    g_clear_error (&copies[i].error);
  }
  if (error != NULL)
    return bmapctl_report_error (options, error);
  return status;
}

/* ---- through bmapd ------------------------------------------------------ */

typedef struct {
  sd_bus *bus;
  sd_event *event;
  BmapctlOptions *options;
  BmapctlProgress *progress;
  guint n;
  char **paths; /* the jobs, once FlashMany answered */
  CardProgress *cards;
  char **states;    /* final states */
  char **err_names; /* of the failed */
  char **messages;
  guint left;
  guint interrupts;
  GError *error; /* the call failed, or bmapd went away */
} Follow;

static int
find_job (Follow *f, sd_bus_message *m)
{
  const char *path = sd_bus_message_get_path (m);

  for (guint i = 0; f->paths != NULL && i < f->n; i++) {
    if (g_strcmp0 (path, f->paths[i]) == 0)
      return (int) i;
  }
  return -1;
}

static void
follow_stop (Follow *f, GError *error)
{
  if (error != NULL && f->error == NULL)
    f->error = error;
  else
    g_clear_error (&error);
  sd_event_exit (f->event, 0);
}

static int
on_job_signal (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Follow *f = userdata;
  const char *member = sd_bus_message_get_member (m);
  int i = find_job (f, m);

  if (i < 0 || f->cards[i].ended)
    return 0;
  if (g_strcmp0 (member, "Progress") == 0) {
    guint64 done, total, rate;

    if (sd_bus_message_read (m, "ttt", &done, &total, &rate) < 0)
      return 0;
    f->cards[i].done = done;
    f->cards[i].total = total;
    f->cards[i].rate = rate;
    if (f->cards[i].state == NULL)
      f->cards[i].state = "writing";
    show_slowest (f->progress, f->cards, f->n);
  } else if (g_strcmp0 (member, "Finished") == 0) {
    const char *state = NULL, *name = NULL, *message = NULL;

    if (sd_bus_message_read (m, "sss", &state, &name, &message) < 0)
      return 0;
    f->cards[i].ended = TRUE;
    f->states[i] = g_strdup (state);
    f->err_names[i] = g_strdup (name);
    f->messages[i] = g_strdup (message);
    if (--f->left == 0)
      follow_stop (f, NULL);
  }
  return 0;
}

static int
on_owner_changed (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Follow *f = userdata;
  const char *name = NULL, *old_owner = NULL, *new_owner = NULL;

  if (sd_bus_message_read (m, "sss", &name, &old_owner, &new_owner) < 0)
    return 0;
  if (g_strcmp0 (name, BMAPD_BUS_NAME) == 0 && (new_owner == NULL || *new_owner == '\0'))
    follow_stop (f, g_error_new (BMAP_ERROR, BMAP_ERROR_IO,
                                 "bmapd exited while writing the devices; they may hold a partial "
                                 "image"));
  return 0;
}

static void
cancel_all (Follow *f)
{
  for (guint i = 0; f->paths != NULL && i < f->n; i++) {
    if (!f->cards[i].ended)
      sd_bus_call_method_async (f->bus, NULL, BMAPD_BUS_NAME, f->paths[i], BMAPD_JOB_IFACE,
                                "Cancel", NULL, NULL, "");
  }
}

static int
on_signal (sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
  Follow *f = userdata;

  bmapctl_progress_clear (f->progress);
  if (++f->interrupts > 1 || f->paths == NULL) {
    follow_stop (f,
                 g_error_new (BMAP_ERROR, BMAP_ERROR_CANCELLED,
                              f->paths != NULL ? "left without waiting; the jobs are being canceled"
                                               : "interrupted before the jobs started"));
    return 0;
  }
  if (!f->options->quiet && !f->options->json)
    fprintf (stderr, "bmapctl: canceling %u jobs (press Ctrl-C again to leave without waiting)\n",
             f->left);
  cancel_all (f);
  return 0;
}

static int
on_call_reply (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Follow *f = userdata;
  const sd_bus_error *e = sd_bus_message_get_error (m);
  char **paths = NULL;

  if (e != NULL) {
    GError *error = NULL;

    bmapctl_bus_set_error (&error, e, 0, "FlashMany");
    follow_stop (f, error);
    return 0;
  }
  if (sd_bus_message_read_strv (m, &paths) < 0 || paths == NULL || g_strv_length (paths) != f->n) {
    g_strfreev (paths);
    follow_stop (f, g_error_new (BMAP_ERROR, BMAP_ERROR_IO, "bmapd sent a bad FlashMany reply"));
    return 0;
  }
  f->paths = paths;
  for (guint i = 0; i < f->n; i++)
    f->cards[i].state = "queued";
  show_slowest (f->progress, f->cards, f->n);
  if (f->interrupts > 0)
    cancel_all (f);
  return 0;
}

static int
build_call (sd_bus *bus, sd_bus_message **call, const BmapctlOptions *options, GPtrArray *devices,
            const BmapctlFlashFds *fds, const BmapctlCopyMany *spec, const char *description)
{
  int r = sd_bus_message_new_method_call (bus, call, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                                          BMAPD_MANAGER_IFACE, "FlashMany");

  if (r >= 0)
    r = sd_bus_message_open_container (*call, 'a', "o");
  for (guint i = 0; r >= 0 && i < devices->len; i++)
    r = sd_bus_message_append (*call, "o", ((BmapctlDevice *) devices->pdata[i])->path);
  if (r >= 0)
    r = sd_bus_message_close_container (*call);
  if (r >= 0)
    r = sd_bus_message_append (*call, "h", fds->image);
  if (r >= 0)
    r = sd_bus_message_open_container (*call, 'a', "{sv}");
  if (r >= 0)
    r = sd_bus_message_append (*call, "{sv}{sv}", "unmount", "b", spec->unmount, "bind-to-caller",
                               "b", 1);
  /* diskseqs: each medium written is the one the user saw listed. */
  if (r >= 0)
    r = sd_bus_message_open_container (*call, 'e', "sv");
  if (r >= 0)
    r = sd_bus_message_append (*call, "s", "diskseqs");
  if (r >= 0)
    r = sd_bus_message_open_container (*call, 'v', "at");
  if (r >= 0)
    r = sd_bus_message_open_container (*call, 'a', "t");
  for (guint i = 0; r >= 0 && i < devices->len; i++)
    r = sd_bus_message_append (*call, "t", ((BmapctlDevice *) devices->pdata[i])->diskseq);
  for (guint i = 0; r >= 0 && i < 3; i++)
    r = sd_bus_message_close_container (*call);
  if (r >= 0)
    r = bmapctl_flash_call_append_options (*call, options, &spec->flash, fds, description);
  if (r >= 0)
    r = sd_bus_message_close_container (*call);
  return r;
}

static void
follow_clear (Follow *f)
{
  for (guint i = 0; i < f->n; i++) {
    g_free (f->states[i]);
    g_free (f->err_names[i]);
    g_free (f->messages[i]);
  }
  g_free (f->states);
  g_free (f->err_names);
  g_free (f->messages);
  g_free (f->cards);
  g_strfreev (f->paths);
  g_clear_pointer (&f->progress, bmapctl_progress_free);
  g_clear_error (&f->error);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Follow, follow_clear)

int
bmapctl_copy_many_daemon (BmapctlOptions *options, const BmapctlCopyMany *spec, const char *image,
                          const BmapctlTarget *targets, guint n_targets, sd_bus *bus,
                          GPtrArray *all_devices)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) devices = g_ptr_array_new ();
  g_autoptr (sd_bus_message) call = NULL;
  g_autoptr (sd_event) event = NULL;
  g_autoptr (sd_bus_slot) match_job = NULL;
  g_autoptr (sd_bus_slot) match_owner = NULL;
  g_autoptr (sd_bus_slot) call_slot = NULL;
  g_autofree char *description = NULL;
  g_auto (Follow) f = { 0 };
  g_auto (BmapctlFlashFds) fds = BMAPCTL_FLASH_FDS_INIT;
  int status = BMAPCTL_EXIT_OK;
  gint64 start, elapsed;
  GPid agent;
  int r;

  for (guint i = 0; i < n_targets; i++) {
    BmapctlDevice *device = bmapctl_find_device (all_devices, targets[i].path);

    if (device == NULL) {
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: bmapd does not offer this device (see 'bmapctl devices --all')",
                   targets[i].path);
      return bmapctl_report_error (options, error);
    }
    g_ptr_array_add (devices, device);
  }
  for (guint i = 0; i < devices->len; i++) {
    g_autofree char *summary = bmapctl_device_summary (bus, devices->pdata[i]);

    bmapctl_info (options, "erasing %s", summary);
  }

  if (!bmapctl_flash_fds_open_image (&fds, image, &description, &error)
      || (spec->bmap_bytes != NULL
          && !bmapctl_flash_fds_open_bmap (&fds, spec->bmap_bytes, spec->signature, &error)))
    return bmapctl_report_error (options, error);
  r = build_call (bus, &call, options, devices, &fds, spec, description);
  bmapctl_flash_fds_clear (&fds);
  if (r < 0) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_IO, "cannot build the FlashMany call: %s",
                 g_strerror (-r));
    return bmapctl_report_error (options, error);
  }

  f.bus = bus;
  f.options = options;
  f.n = n_targets;
  f.left = n_targets;
  f.cards = g_new0 (CardProgress, n_targets);
  f.states = g_new0 (char *, n_targets);
  f.err_names = g_new0 (char *, n_targets);
  f.messages = g_new0 (char *, n_targets);
  f.progress = bmapctl_progress_new (options);
  r = sd_event_default (&event);
  f.event = event;
  if (r >= 0)
    r = sd_bus_attach_event (bus, event, SD_EVENT_PRIORITY_NORMAL);
  /* The jobs' results are read once the loop has ended: sd-bus would
   * close the connection then. */
  if (r >= 0)
    r = sd_bus_set_close_on_exit (bus, 0);
  if (r >= 0)
    r = bmapctl_event_add_exit_signals (event, on_signal, &f);
  /* The matches go in before the call, so no signal of a job is missed. */
  if (r >= 0)
    r = sd_bus_match_signal (bus, &match_job, BMAPD_BUS_NAME, NULL, BMAPD_JOB_IFACE, NULL,
                             on_job_signal, &f);
  if (r >= 0)
    r = sd_bus_match_signal (bus, &match_owner, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "NameOwnerChanged", on_owner_changed, &f);
  if (r >= 0)
    r = bmapctl_bus_set_interaction (call, options);
  if (r >= 0) {
    /* polkit may ask for a password: allow far longer than the default. */
    r = sd_bus_call_async (bus, &call_slot, call, on_call_reply, &f,
                           (guint64) 24 * 3600 * G_USEC_PER_SEC);
  }
  if (r < 0) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_IO, "cannot call bmapd: %s", g_strerror (-r));
    return bmapctl_report_error (options, error);
  }
  agent = bmapctl_polkit_agent_open (options);
  start = g_get_monotonic_time ();
  r = sd_event_loop (event);
  elapsed = g_get_monotonic_time () - start;
  bmapctl_polkit_agent_close (agent);
  bmapctl_progress_clear (f.progress);
  sd_bus_detach_event (bus);
  if (f.error != NULL)
    return bmapctl_report_error (options, f.error);

  for (guint i = 0; i < n_targets; i++) {
    const char *dest = targets[i].path;

    if (g_strcmp0 (f.states[i], "done") == 0) {
      g_autoptr (GError) job_error = NULL;
      g_autoptr (BmapctlJob) job = bmapctl_get_job (bus, f.paths[i], &job_error);
      BmapCopyResult result = { 0 };

      result.bytes_written = job != NULL ? job->bytes_written : 0;
      result.verified = spec->flash.verify && !spec->flash.nobmap;
      result.verified_written = spec->flash.verify_written;
      if (spec->flash.minimize_writes && job != NULL) {
        result.bytes_checked = job->bytes_checked;
        result.bytes_skipped = job->bytes_checked - MIN (job->bytes_checked, job->bytes_written);
      }
      bmapctl_copy_print_result (options, image, dest, &result, job != NULL ? job->result : NULL,
                                 elapsed);
      continue;
    }
    print_failure (options, dest,
                   g_strcmp0 (f.states[i], "canceled") == 0
                       ? BMAP_DBUS_ERROR_PREFIX "Cancelled"
                       : (f.err_names[i] != NULL ? f.err_names[i] : ""),
                   f.messages[i] != NULL ? f.messages[i] : "failed");
    if (g_strcmp0 (f.states[i], "canceled") == 0 && status == BMAPCTL_EXIT_OK)
      status = BMAPCTL_EXIT_CANCELED;
    else if (g_strcmp0 (f.states[i], "canceled") != 0)
      status = BMAPCTL_EXIT_FAILED;
  }
  return status;
}
