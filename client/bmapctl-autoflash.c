/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-text.h"
#include "bmapctl-bus.h"
#include "bmapctl-commands.h"
#include "bmapctl-write-args.h"
#include "bmapctl-flash-call.h"
#include "bmapctl-json.h"
#include "bmapctl-signature.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_event, sd_event_unref)

#define STATION_REDRAW_US (G_USEC_PER_SEC / 2)

typedef struct {
  BmapctlWriteArgs write;
  char **match_bus;
  char *match_serial;
  char *match_vendor;
  char *match_model;
  char *match_port;
  char *min_size;
  char *max_size;
  gboolean allow_non_removable;
  int count;
  gboolean keep;
  gboolean list;
  char *remove;
  char *description;
} AutoFlashArgs;

static void
autoflash_args_clear (AutoFlashArgs *args)
{
  bmapctl_write_args_clear (&args->write);
  g_strfreev (args->match_bus);
  g_free (args->match_serial);
  g_free (args->match_vendor);
  g_free (args->match_model);
  g_free (args->match_port);
  g_free (args->min_size);
  g_free (args->max_size);
  g_free (args->remove);
  g_free (args->description);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (AutoFlashArgs, autoflash_args_clear)

/* "4G", "512MiB", "1000000": sizes in bytes, suffixes in powers of 1024. */
static gboolean
parse_size (const char *str, guint64 *out)
{
  static const char units[] = "KMGTP";
  g_autofree char *s = g_strstrip (g_strdup (str));
  char *end = NULL;
  guint64 value;
  int shift = 0;

  if (s[0] == '\0' || !g_ascii_isdigit (s[0]))
    return FALSE;
  errno = 0;
  value = g_ascii_strtoull (s, &end, 10);
  if (errno != 0)
    return FALSE;
  if (*end != '\0') {
    const char *u = strchr (units, g_ascii_toupper (*end));

    if (u == NULL)
      return FALSE;
    shift = 10 * (int) (u - units + 1);
    end++;
    if (g_ascii_strcasecmp (end, "iB") != 0 && g_ascii_strcasecmp (end, "B") != 0 && *end != '\0')
      return FALSE;
  }
  if (shift > 0 && value > (G_MAXUINT64 >> shift))
    return FALSE;
  *out = value << shift;
  return TRUE;
}

/* ---- the station: following the rule's cards ------------------------------ */

typedef struct {
  char *path;
  char *node;
  char *serial;
  char *state;
  guint64 done;
  guint64 total;
  guint64 rate;
} Card;

static void
card_free (Card *card)
{
  g_free (card->path);
  g_free (card->node);
  g_free (card->serial);
  g_free (card->state);
  g_free (card);
}

typedef struct {
  const BmapctlOptions *options;
  sd_bus *bus;
  sd_event *event;
  char *rule_path;
  char *rule_description;
  guint32 rule_uid;
  GHashTable *cards;   /* job path -> Card */
  GHashTable *devices; /* device path -> BmapctlDevice */
  guint flashed;
  guint failed;
  gboolean status_shown;
  gint64 last_redraw;
  gboolean rule_gone;
  gboolean tty;
} Station;

static void
station_clear_status (Station *st)
{
  if (st->status_shown) {
    fputs ("\r\033[K", stderr);
    st->status_shown = FALSE;
  }
}

/* On a terminal, one status line at the bottom shows every running card. */
static void
station_draw_status (Station *st, gboolean force)
{
  g_autoptr (GString) line = g_string_new (NULL);
  gint64 now = g_get_monotonic_time ();
  GHashTableIter iter;
  Card *card;

  if (!st->tty || st->options->quiet || st->options->json)
    return;
  if (!force && now - st->last_redraw < STATION_REDRAW_US)
    return;
  st->last_redraw = now;
  g_string_append_printf (line, "waiting for cards: %u flashed, %u failed", st->flashed,
                          st->failed);
  g_hash_table_iter_init (&iter, st->cards);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *) &card)) {
    guint pct = card->total > 0 ? (guint) (MIN (card->done, card->total) * 100 / card->total) : 0;

    g_string_append_printf (line, " | %s %s %u%%", card->node, card->state, pct);
  }
  fprintf (stderr, "\r\033[K%s", line->str);
  fflush (stderr);
  st->status_shown = TRUE;
}

static void station_print (Station *st, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
station_print (Station *st, const char *format, ...)
{
  g_autoptr (GDateTime) now = g_date_time_new_now_local ();
  g_autofree char *stamp = g_date_time_format (now, "%H:%M:%S");
  g_autofree char *raw = NULL;
  g_autofree char *msg = NULL;
  va_list args;

  if (st->options->quiet || st->options->json)
    return;
  va_start (args, format);
  raw = g_strdup_vprintf (format, args);
  va_end (args);
  /* Serials and error messages come from cards and callers. */
  msg = bmap_text_escape (raw, BMAP_TEXT_ESCAPE_DEFAULT);
  station_clear_status (st);
  printf ("%s %s\n", stamp, msg);
  fflush (stdout);
  station_draw_status (st, TRUE);
}

static void
station_json (Station *st, const char *event, const Card *card, const char *error_name,
              const char *error_message)
{
  g_autoptr (GString) json = g_string_new ("{\"event\":");

  if (!st->options->json)
    return;
  bmapctl_json_append_string (json, event);
  bmapctl_json_append_member (json, "rule", st->rule_path);
  if (card != NULL) {
    bmapctl_json_append_member (json, "job", card->path);
    bmapctl_json_append_member (json, "device", card->node);
    bmapctl_json_append_member (json, "serial", card->serial);
    bmapctl_json_append_member (json, "state", card->state);
    g_string_append_printf (json,
                            ",\"bytes_done\":%" G_GUINT64_FORMAT
                            ",\"bytes_total\":%" G_GUINT64_FORMAT ",\"rate\":%" G_GUINT64_FORMAT,
                            card->done, card->total, card->rate);
  }
  if (error_name != NULL) {
    bmapctl_json_append_member (json, "error_name", error_name);
    bmapctl_json_append_member (json, "error_message", error_message);
  }
  g_string_append_printf (json, ",\"flashed\":%u,\"failed\":%u}\n", st->flashed, st->failed);
  fputs (json->str, stdout);
  fflush (stdout);
}

static int
on_interfaces_added (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Station *st = userdata;
  g_autoptr (GPtrArray) devs = g_ptr_array_new ();
  g_autoptr (GPtrArray) jobs = g_ptr_array_new_with_free_func ((GDestroyNotify) bmapctl_job_free);
  const char *path = NULL;

  if (sd_bus_message_read (m, "o", &path) < 0
      || bmapctl_read_interfaces (m, path, devs, jobs, NULL) < 0)
    return 0;
  bmapctl_index_by_path (st->devices, devs);
  for (guint i = 0; i < jobs->len; i++) {
    BmapctlJob *j = g_ptr_array_index (jobs, i);
    BmapctlDevice *d;
    Card *card;

    /* The rule's jobs carry its description and its owner's uid. */
    if (g_strcmp0 (j->operation, "flash") != 0 || j->started_by_uid != st->rule_uid
        || g_strcmp0 (j->description, st->rule_description) != 0)
      continue;
    d = g_hash_table_lookup (st->devices, j->device);
    card = g_new0 (Card, 1);
    card->path = g_strdup (j->path);
    card->node = g_strdup (d != NULL && d->node != NULL ? d->node : j->device);
    card->serial = g_strdup (d != NULL && d->serial != NULL && *d->serial ? d->serial : "-");
    card->state = g_strdup (j->state != NULL ? j->state : "preparing");
    g_hash_table_replace (st->cards, card->path, card);
    station_print (st, "%-14s serial %-20s started (job %u)", card->node, card->serial, j->id);
    station_json (st, "card-started", card, NULL, NULL);
  }
  return 0;
}

static int
on_interfaces_removed (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Station *st = userdata;
  const char *path = NULL;

  if (sd_bus_message_read (m, "o", &path) < 0)
    return 0;
  if (g_strcmp0 (path, st->rule_path) == 0) {
    /* Disarmed: the count was reached, or someone removed the rule. */
    st->rule_gone = TRUE;
    station_print (st, "rule %s was removed; stopping", st->rule_path);
    sd_event_exit (st->event, 0);
  }
  return 0;
}

static int
on_job_signal (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Station *st = userdata;
  Card *card = g_hash_table_lookup (st->cards, sd_bus_message_get_path (m));

  if (card == NULL)
    return 0;
  if (g_strcmp0 (sd_bus_message_get_member (m), "Progress") == 0
      && sd_bus_message_read (m, "ttt", &card->done, &card->total, &card->rate) >= 0) {
    station_draw_status (st, FALSE);
    if (st->options->json)
      station_json (st, "card-progress", card, NULL, NULL);
  }
  return 0;
}

static int
on_job_properties (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Station *st = userdata;
  Card *card = g_hash_table_lookup (st->cards, sd_bus_message_get_path (m));
  g_autoptr (BmapctlJob) job = g_new0 (BmapctlJob, 1);
  const char *iface = NULL;

  if (card == NULL || sd_bus_message_read (m, "s", &iface) < 0
      || g_strcmp0 (iface, BMAPD_JOB_IFACE) != 0 || bmapctl_read_job_props (m, job) < 0)
    return 0;
  if (job->state != NULL) {
    g_free (card->state);
    card->state = g_strdup (job->state);
    station_draw_status (st, TRUE);
  }
  return 0;
}

static int
on_card_finished (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Station *st = userdata;
  const char *device = NULL, *job = NULL, *state = NULL;
  g_autoptr (sd_bus_message) reply = NULL;
  g_autofree char *error_name = NULL;
  g_autofree char *error_message = NULL;
  Card *card;

  if (sd_bus_message_read (m, "oos", &device, &job, &state) < 0)
    return 0;
  if (g_str_equal (state, "done"))
    st->flashed++;
  else
    st->failed++;

  card = g_hash_table_lookup (st->cards, job);
  if (card == NULL) {
    BmapctlDevice *d = g_hash_table_lookup (st->devices, device);

    card = g_new0 (Card, 1);
    card->path = g_strdup (job);
    card->node = g_strdup (d != NULL && d->node != NULL ? d->node : device);
    card->serial = g_strdup (d != NULL && d->serial != NULL && *d->serial ? d->serial : "-");
    g_hash_table_replace (st->cards, card->path, card);
  }
  g_free (card->state);
  card->state = g_strdup (state);

  /* The job stays exported for a minute: its error tells why it failed. */
  if (!g_str_equal (state, "done")) {
    g_autoptr (BmapctlJob) j = bmapctl_get_job (st->bus, job, NULL);

    if (j != NULL) {
      error_name = g_steal_pointer (&j->error_name);
      error_message = g_steal_pointer (&j->error_message);
    }
  }
  if (g_str_equal (state, "done")) {
    g_autofree char *size = bmapctl_format_size (card->done);

    station_print (st, "%-14s serial %-20s done, %s written", card->node, card->serial, size);
  } else {
    station_print (st, "%-14s serial %-20s %s%s%s", card->node, card->serial, state,
                   error_message != NULL && *error_message ? ": " : "",
                   error_message != NULL ? error_message : "");
  }
  station_json (st, "card-finished", card, error_name != NULL ? error_name : "",
                error_message != NULL ? error_message : "");
  g_hash_table_remove (st->cards, job);
  station_draw_status (st, TRUE);
  return 0;
}

static int
on_owner_changed (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Station *st = userdata;
  const char *name = NULL, *old_owner = NULL, *new_owner = NULL;

  if (sd_bus_message_read (m, "sss", &name, &old_owner, &new_owner) >= 0
      && g_strcmp0 (name, BMAPD_BUS_NAME) == 0 && (new_owner == NULL || *new_owner == '\0')) {
    st->rule_gone = TRUE;
    station_print (st, "bmapd exited; the rule is gone");
    sd_event_exit (st->event, 1);
  }
  return 0;
}

static gboolean
remove_rule (sd_bus *bus, const BmapctlOptions *options, const char *path, GError **error)
{
  sd_bus_error bus_error = SD_BUS_ERROR_NULL;
  g_autoptr (sd_bus_message) call = NULL;
  g_autoptr (sd_bus_message) reply = NULL;
  GPid agent;
  int r;

  r = sd_bus_message_new_method_call (bus, &call, BMAPD_BUS_NAME, path, BMAPD_AUTOFLASH_IFACE,
                                      "Remove");
  if (r >= 0)
    r = bmapctl_bus_set_interaction (call, options);
  agent = bmapctl_polkit_agent_open (options);
  if (r >= 0)
    r = sd_bus_call (bus, call, (guint64) 3600 * G_USEC_PER_SEC, &bus_error, &reply);
  bmapctl_polkit_agent_close (agent);
  if (r < 0) {
    g_autofree char *what = g_strdup_printf ("removing rule %s", path);

    bmapctl_bus_set_error (error, &bus_error, r, what);
    sd_bus_error_free (&bus_error);
    return FALSE;
  }
  return TRUE;
}

/* Runs until Ctrl-C or until the rule is gone; removes it on the way out. */
static int
run_station (Station *st)
{
  g_autoptr (GPtrArray) devices = NULL;
  g_autoptr (GError) error = NULL;
  int r = 0;

  if (bmapctl_get_managed_objects (st->bus, &devices, NULL, NULL, NULL))
    bmapctl_index_by_path (st->devices, devices);

  r = bmapctl_event_add_exit_signals (st->event, NULL, NULL);
  if (r < 0)
    return BMAPCTL_EXIT_FAILED;

  if (!st->options->quiet && !st->options->json)
    printf ("Armed rule %s. Insert cards; Ctrl-C to stop.\n", st->rule_path);
  station_json (st, "armed", NULL, NULL, NULL);
  station_draw_status (st, TRUE);

  sd_event_loop (st->event);
  station_clear_status (st);

  if (!st->rule_gone && !remove_rule (st->bus, st->options, st->rule_path, &error))
    bmapctl_printerr ("%s", error->message);
  if (st->options->json) {
    station_json (st, "summary", NULL, NULL, NULL);
  } else if (!st->options->quiet) {
    printf ("Flashed %u card%s, %u failed.\n", st->flashed, st->flashed == 1 ? "" : "s",
            st->failed);
  }
  return st->failed > 0 ? BMAPCTL_EXIT_FAILED : BMAPCTL_EXIT_OK;
}

/* ---- arming, listing, removing ---------------------------------------- */

static int
append_match (sd_bus_message *call, const AutoFlashArgs *args, guint64 min_size, guint64 max_size)
{
  int r = sd_bus_message_open_container (call, SD_BUS_TYPE_ARRAY, "{sv}");

  if (r >= 0 && args->match_bus != NULL) {
    r = sd_bus_message_open_container (call, SD_BUS_TYPE_DICT_ENTRY, "sv");
    if (r >= 0)
      r = sd_bus_message_append (call, "s", "bus");
    if (r >= 0)
      r = sd_bus_message_open_container (call, SD_BUS_TYPE_VARIANT, "as");
    if (r >= 0)
      r = sd_bus_message_append_strv (call, args->match_bus);
    if (r >= 0)
      r = sd_bus_message_close_container (call);
    if (r >= 0)
      r = sd_bus_message_close_container (call);
  }
#define STR(key, field)                                                                            \
  if (r >= 0 && args->field != NULL)                                                               \
  r = sd_bus_message_append (call, "{sv}", key, "s", args->field)
  STR ("serial", match_serial);
  STR ("vendor", match_vendor);
  STR ("model", match_model);
  STR ("port", match_port);
#undef STR
  if (r >= 0 && args->min_size != NULL)
    r = sd_bus_message_append (call, "{sv}", "min-size", "t", min_size);
  if (r >= 0 && args->max_size != NULL)
    r = sd_bus_message_append (call, "{sv}", "max-size", "t", max_size);
  if (r >= 0 && args->allow_non_removable)
    r = sd_bus_message_append (call, "{sv}", "allow-non-removable", "b", 1);
  if (r >= 0)
    r = sd_bus_message_close_container (call);
  return r;
}

/* The rule's bmap, its signature checked here as copy checks it, before the
 * rule is armed: bmapd gets the verified bytes in a sealed memfd, so every
 * card is flashed with exactly what was verified (for a clearsigned bmap,
 * its signed text). */
static gboolean
open_verified_bmap (BmapctlOptions *options, const AutoFlashArgs *args, const char *image,
                    BmapctlFlashFds *fds, GError **error)
{
  const BmapctlSignatureArgs sig_args = bmapctl_write_args_signature (&args->write);
  g_autofree char *bmap_path = bmapctl_find_bmap (args->write.bmap, image, error);
  g_autoptr (GBytes) bmap = NULL;
  g_autoptr (GBytes) signature = NULL;

  if (bmap_path == NULL)
    return FALSE;
  bmap = bmapctl_signature_load_bmap (options, &sig_args, bmap_path, &signature, error);
  if (bmap == NULL)
    return FALSE;
  /* AddAutoFlash takes no signature: bmapd does not judge it again. */
  return bmapctl_flash_fds_open_bmap (fds, bmap, NULL, error);
}

static int
arm_rule (BmapctlOptions *options, AutoFlashArgs *args, const char *image)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus) bus = NULL;
  g_autoptr (sd_event) event = NULL;
  g_autoptr (sd_bus_message) call = NULL;
  g_autoptr (sd_bus_message) reply = NULL;
  g_autoptr (GHashTable) cards = NULL;
  g_autoptr (GHashTable) devices = NULL;
  g_autofree char *description = NULL;
  sd_bus_error bus_error = SD_BUS_ERROR_NULL;
  guint64 min_size = 0, max_size = 0;
  const char *rule_path = NULL;
  g_auto (BmapctlFlashFds) fds = BMAPCTL_FLASH_FDS_INIT;
  g_autofree char *basename = NULL;
  /* --eject and --power-off are not a rule's. */
  BmapctlFlashOptions flash = bmapctl_write_args_flash (&args->write);
  Station st = { 0 };
  GPid agent;
  int r;

  if (args->min_size != NULL && !parse_size (args->min_size, &min_size))
    return bmapctl_usage_error (NULL, "--min-size: '%s' is not a size (like 4G or 512M)",
                                args->min_size);
  if (args->max_size != NULL && !parse_size (args->max_size, &max_size))
    return bmapctl_usage_error (NULL, "--max-size: '%s' is not a size (like 32G)", args->max_size);
  if (args->min_size != NULL && args->max_size != NULL && min_size > max_size)
    return bmapctl_usage_error (NULL, "--min-size is larger than --max-size");

  if (!bmapctl_flash_fds_open_image (&fds, image, &basename, &error)
      || (!args->write.nobmap && !open_verified_bmap (options, args, image, &fds, &error)))
    return bmapctl_report_error (options, error);
  description
      = args->description != NULL ? g_strdup (args->description) : g_steal_pointer (&basename);

  bus = bmapctl_bus_open (&error);
  if (bus == NULL)
    return bmapctl_report_error (options, error);

  /* The station's matches go in before the rule exists, so that no card's
   * job or CardFinished signal is missed. */
  r = sd_event_default (&event);
  if (r >= 0)
    r = sd_bus_attach_event (bus, event, SD_EVENT_PRIORITY_NORMAL);
  if (r >= 0 && !args->keep) {
    cards = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) card_free);
    devices = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                     (GDestroyNotify) bmapctl_device_free);
    st.options = options;
    st.bus = bus;
    st.event = event;
    st.cards = cards;
    st.devices = devices;
    st.tty = isatty (STDERR_FILENO);
    st.rule_description = description;
    st.rule_uid = getuid ();
    r = sd_bus_match_signal (bus, NULL, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                             "org.freedesktop.DBus.ObjectManager", "InterfacesAdded",
                             on_interfaces_added, &st);
    if (r >= 0)
      r = sd_bus_match_signal (bus, NULL, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                               "org.freedesktop.DBus.ObjectManager", "InterfacesRemoved",
                               on_interfaces_removed, &st);
    if (r >= 0)
      r = sd_bus_match_signal (bus, NULL, BMAPD_BUS_NAME, NULL, BMAPD_JOB_IFACE, "Progress",
                               on_job_signal, &st);
    if (r >= 0)
      r = sd_bus_match_signal (bus, NULL, BMAPD_BUS_NAME, NULL, "org.freedesktop.DBus.Properties",
                               "PropertiesChanged", on_job_properties, &st);
    if (r >= 0)
      r = sd_bus_match_signal (bus, NULL, BMAPD_BUS_NAME, NULL, BMAPD_AUTOFLASH_IFACE,
                               "CardFinished", on_card_finished, &st);
    if (r >= 0)
      r = sd_bus_match_signal (bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "NameOwnerChanged", on_owner_changed, &st);
  }

  if (r >= 0)
    r = sd_bus_message_new_method_call (bus, &call, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                                        BMAPD_MANAGER_IFACE, "AddAutoFlash");
  if (r >= 0)
    r = sd_bus_message_append (call, "h", fds.image);
  if (r >= 0)
    r = append_match (call, args, min_size, max_size);
  if (r >= 0)
    r = sd_bus_message_open_container (call, SD_BUS_TYPE_ARRAY, "{sv}");
  if (r >= 0)
    r = sd_bus_message_append (call, "{sv}{sv}", "count", "u", (guint32) args->count, "keep", "b",
                               args->keep);
  if (r >= 0)
    r = bmapctl_flash_call_append_options (call, options, &flash, &fds, description);
  if (r >= 0)
    r = sd_bus_message_close_container (call);
  if (r >= 0)
    r = bmapctl_bus_set_interaction (call, options);
  bmapctl_flash_fds_clear (&fds);
  if (r < 0) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_IO, "cannot build the AddAutoFlash call: %s",
                 g_strerror (-r));
    return bmapctl_report_error (options, error);
  }

  agent = bmapctl_polkit_agent_open (options);
  r = sd_bus_call (bus, call, (guint64) 3600 * G_USEC_PER_SEC, &bus_error, &reply);
  bmapctl_polkit_agent_close (agent);
  if (r >= 0)
    r = sd_bus_message_read (reply, "o", &rule_path);
  if (r < 0) {
    bmapctl_bus_set_error (&error, &bus_error, r, "arming the auto-flash rule");
    sd_bus_error_free (&bus_error);
    return bmapctl_report_error (options, error);
  }

  if (args->keep) {
    if (options->json)
      printf ("{\"rule\":\"%s\"}\n", rule_path);
    else if (!options->quiet)
      printf ("Armed rule %s; it stays until removed with 'bmapctl auto-flash --remove %s'.\n",
              rule_path, rule_path);
    return BMAPCTL_EXIT_OK;
  }
  st.rule_path = g_strdup (rule_path);
  r = run_station (&st);
  g_free (st.rule_path);
  sd_bus_detach_event (bus);
  return r;
}

static char *
format_match (sd_bus *bus, const char *path)
{
  g_autoptr (sd_bus_message) reply = NULL;
  g_autoptr (GString) out = g_string_new (NULL);
  int r;

  r = sd_bus_get_property (bus, BMAPD_BUS_NAME, path, BMAPD_AUTOFLASH_IFACE, "Match", NULL, &reply,
                           "a{sv}");
  if (r < 0)
    return g_strdup ("?");
  r = sd_bus_message_enter_container (reply, SD_BUS_TYPE_ARRAY, "{sv}");
  while (r > 0 && (r = sd_bus_message_enter_container (reply, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
    const char *key = NULL, *contents = NULL;
    char type;

    if (sd_bus_message_read (reply, "s", &key) < 0
        || sd_bus_message_peek_type (reply, &type, &contents) < 0
        || sd_bus_message_enter_container (reply, SD_BUS_TYPE_VARIANT, contents) < 0)
      break;
    if (out->len > 0)
      g_string_append_c (out, ' ');
    g_string_append_printf (out, "%s=", key);
    if (g_str_equal (contents, "s")) {
      const char *s = NULL;

      sd_bus_message_read (reply, "s", &s);
      g_string_append (out, s);
    } else if (g_str_equal (contents, "as")) {
      g_auto (GStrv) strv = NULL;
      g_autofree char *joined = NULL;

      sd_bus_message_read_strv (reply, &strv);
      joined = g_strjoinv (",", strv);
      g_string_append (out, joined);
    } else if (g_str_equal (contents, "t")) {
      guint64 t = 0;
      g_autofree char *size = NULL;

      sd_bus_message_read (reply, "t", &t);
      size = bmapctl_format_size (t);
      g_string_append (out, size);
    } else if (g_str_equal (contents, "b")) {
      int b = 0;

      sd_bus_message_read (reply, "b", &b);
      g_string_append (out, b ? "yes" : "no");
    } else {
      sd_bus_message_skip (reply, contents);
      g_string_append (out, "?");
    }
    if (sd_bus_message_exit_container (reply) < 0 || sd_bus_message_exit_container (reply) < 0)
      break;
    r = 1;
  }
  return out->len > 0 ? g_string_free (g_steal_pointer (&out), FALSE)
                      : g_strdup ("(any removable)");
}

static int
list_rules (BmapctlOptions *options)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus) bus = bmapctl_bus_open (&error);
  g_autoptr (GPtrArray) rules = NULL;

  if (bus == NULL || !bmapctl_get_managed_objects (bus, NULL, NULL, &rules, &error))
    return bmapctl_report_error (options, error);

  if (options->json) {
    g_autoptr (GString) json = g_string_new ("[");

    for (guint i = 0; i < rules->len; i++) {
      BmapctlRule *rule = g_ptr_array_index (rules, i);

      g_string_append_printf (json, "%s{\"id\":%u,\"path\":", i > 0 ? "," : "", rule->id);
      bmapctl_json_append_string (json, rule->path);
      bmapctl_json_append_member (json, "source", rule->source);
      bmapctl_json_append_member (json, "config_file", rule->config_file);
      bmapctl_json_append_member (json, "description", rule->description);
      g_string_append_printf (json,
                              ",\"count\":%u,\"flashed\":%u,\"failed\":%u,\"started_by_uid\":%u}",
                              rule->count, rule->flashed, rule->failed, rule->started_by_uid);
    }
    g_string_append (json, "]\n");
    fputs (json->str, stdout);
    return BMAPCTL_EXIT_OK;
  }
  if (rules->len > 0)
    printf ("%-4s %-7s %-24s %7s %7s %6s  %s\n", "ID", "SOURCE", "DESCRIPTION", "FLASHED", "FAILED",
            "COUNT", "MATCH");
  for (guint i = 0; i < rules->len; i++) {
    BmapctlRule *rule = g_ptr_array_index (rules, i);
    g_autofree char *match = format_match (bus, rule->path);
    g_autofree char *count = rule->count > 0 ? g_strdup_printf ("%u", rule->count) : g_strdup ("-");
    g_autofree char *source
        = bmap_text_escape (rule->source != NULL ? rule->source : "-", BMAP_TEXT_ESCAPE_DEFAULT);
    g_autofree char *description = bmap_text_escape (
        rule->description != NULL && *rule->description ? rule->description : "-",
        BMAP_TEXT_ESCAPE_DEFAULT);
    g_autofree char *match_shown = bmap_text_escape (match, BMAP_TEXT_ESCAPE_DEFAULT);

    printf ("%-4u %-7s %-24s %7u %7u %6s  %s\n", rule->id, source, description, rule->flashed,
            rule->failed, count, match_shown);
  }
  if (!options->quiet)
    printf ("%s%u rule%s armed.\n", rules->len > 0 ? "\n" : "", rules->len,
            rules->len == 1 ? "" : "s");
  return BMAPCTL_EXIT_OK;
}

static int
remove_rule_command (BmapctlOptions *options, const char *which)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus) bus = bmapctl_bus_open (&error);
  g_autoptr (GPtrArray) rules = NULL;
  BmapctlRule *found = NULL;

  if (bus == NULL || !bmapctl_get_managed_objects (bus, NULL, NULL, &rules, &error))
    return bmapctl_report_error (options, error);
  for (guint i = 0; i < rules->len && found == NULL; i++) {
    BmapctlRule *rule = g_ptr_array_index (rules, i);
    g_autofree char *id = g_strdup_printf ("%u", rule->id);

    if (g_str_equal (rule->path, which) || g_str_equal (id, which))
      found = rule;
  }
  if (found == NULL) {
    g_set_error (&error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: no such rule (see 'bmapctl auto-flash --list')", which);
    return bmapctl_report_error (options, error);
  }
  if (!remove_rule (bus, options, found->path, &error))
    return bmapctl_report_error (options, error);
  if (!options->quiet && !options->json)
    printf ("Removed rule %u (%s).\n", found->id, found->path);
  return BMAPCTL_EXIT_OK;
}

int
bmapctl_autoflash (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv)
{
  g_auto (AutoFlashArgs) args = { 0 };
  const GOptionEntry entries[] = {
    BMAPCTL_WRITE_ARGS_BMAP_ENTRIES (&args.write),
    { "verify-written", 0, 0, G_OPTION_ARG_NONE, &args.write.verify_written,
      "Read each card back after writing and check it", NULL },
    { "minimize-writes", 0, 0, G_OPTION_ARG_NONE, &args.write.minimize_writes,
      "Read each card first and write only the blocks that differ (boards refreshed in place)",
      NULL },
    { "discard", 0, 0, G_OPTION_ARG_NONE, &args.write.discard,
      "After writing, discard the ranges the bmap does not map, where the card can", NULL },
    { "zero-unmapped", 0, 0, G_OPTION_ARG_NONE, &args.write.zero_unmapped,
      "After writing, make the ranges the bmap does not map read back as zeros", NULL },
    { "relocate-gpt", 0, 0, G_OPTION_ARG_NONE, &args.write.relocate_gpt,
      "After writing, move a GPT's backup header and table to the end of a larger card", NULL },
    { "match-bus", 0, 0, G_OPTION_ARG_STRING_ARRAY, &args.match_bus,
      "Only devices on this bus (usb, mmc, ...); may be repeated", "BUS" },
    { "match-serial", 0, 0, G_OPTION_ARG_STRING, &args.match_serial,
      "Only devices whose serial matches the shell glob", "GLOB" },
    { "match-vendor", 0, 0, G_OPTION_ARG_STRING, &args.match_vendor,
      "Only devices whose vendor matches the shell glob", "GLOB" },
    { "match-model", 0, 0, G_OPTION_ARG_STRING, &args.match_model,
      "Only devices whose model matches the shell glob", "GLOB" },
    { "match-port", 0, 0, G_OPTION_ARG_STRING, &args.match_port,
      "Only devices whose udev ID_PATH (the port) matches the shell glob", "GLOB" },
    { "min-size", 0, 0, G_OPTION_ARG_STRING, &args.min_size,
      "Only devices of at least SIZE (bytes, or with K, M, G, T)", "SIZE" },
    { "max-size", 0, 0, G_OPTION_ARG_STRING, &args.max_size, "Only devices of at most SIZE",
      "SIZE" },
    { "allow-non-removable", 0, 0, G_OPTION_ARG_NONE, &args.allow_non_removable,
      "Also flash non-removable devices that are not system disks (fixed card slots, loop "
      "devices); needs the flash-system authorization",
      NULL },
    { "count", 0, 0, G_OPTION_ARG_INT, &args.count, "Disarm after N cards (default: no limit)",
      "N" },
    { "keep", 0, 0, G_OPTION_ARG_NONE, &args.keep,
      "Keep the rule in bmapd after bmapctl leaves, and return at once", NULL },
    { "description", 0, 0, G_OPTION_ARG_STRING, &args.description,
      "Label of the rule and its jobs (default: the image's file name)", "TEXT" },
    { "list", 0, 0, G_OPTION_ARG_NONE, &args.list, "List the armed rules", NULL },
    { "remove", 0, 0, G_OPTION_ARG_STRING, &args.remove, "Remove a rule (its id or object path)",
      "RULE" },
    BMAPCTL_WRITE_ARGS_SIGNATURE_ENTRIES (&args.write),
    { NULL },
  };

  if (!bmapctl_parse (options, command, entries,
                      "Arms a rule in bmapd: every card inserted from now on that matches is "
                      "flashed with IMAGE\nand verified. Cards present now are never touched, nor "
                      "system, read-only or busy\ndevices. Unless --keep is given, bmapctl stays "
                      "as a station display (one line per card)\nand Ctrl-C removes the rule.",
                      &argc, &argv))
    return BMAPCTL_EXIT_USAGE;

  if (args.list || args.remove != NULL) {
    if (argc != 1)
      return bmapctl_usage_error (command, "--list and --remove take no IMAGE");
    if (args.list && args.remove != NULL)
      return bmapctl_usage_error (command, "--list and --remove exclude each other");
    return args.list ? list_rules (options) : remove_rule_command (options, args.remove);
  }
  if (argc != 2)
    return bmapctl_usage_error (command, argc < 2 ? "missing IMAGE" : "too many arguments");
  if (args.write.bmap != NULL && args.write.nobmap)
    return bmapctl_usage_error (command, "--bmap and --nobmap exclude each other");
  if (args.write.nobmap && (args.write.discard || args.write.zero_unmapped))
    return bmapctl_usage_error (command, "%s needs a bmap (the ranges it does not map)",
                                args.write.discard ? "--discard" : "--zero-unmapped");
  {
    const BmapctlSignatureArgs sig_args = bmapctl_write_args_signature (&args.write);
    const char *conflict = bmapctl_signature_check_args (&sig_args, args.write.nobmap);

    if (conflict != NULL)
      return bmapctl_usage_error (command, "%s", conflict);
  }
  if (args.count < 0)
    return bmapctl_usage_error (command, "--count must be 0 or more");
  if (g_str_equal (argv[1], "-"))
    return bmapctl_usage_error (command,
                                "the image of a rule is read once per card: it must be a file, "
                                "not standard input");
  return arm_rule (options, &args, argv[1]);
}
