/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <glib/gi18n.h>
#include <string.h>

#include "bmapd-flasher-job.h"

struct _BmapdFlasherJob {
  GObject parent_instance;
  char *object_path;
  char *device_path;
  char *device_name;
  char *device_node;
  BmapdFlasherJobState state;
  guint64 bytes_done;
  guint64 bytes_total;
  guint64 rate;
  guint64 expected_end_usec;
  double fraction;
  gboolean minimize_writes;
  guint64 bytes_checked;
  guint64 bytes_written;
  char *details; /* the Job's Result */
  /* Bytes may have reached the device: from writing on. */
  gboolean wrote;
  char *error_name;
  char *error_message;
  gboolean cancel_requested; /* by the person, maybe before the job had a path */
  gboolean cancel_sent;
};

G_DEFINE_TYPE (BmapdFlasherJob, bmapd_flasher_job, G_TYPE_OBJECT)

enum { SIGNAL_CHANGED, N_SIGNALS };
static guint signals[N_SIGNALS];

static const char *const state_names[] = {
  [BMAPD_FLASHER_JOB_STARTING] = "starting",   [BMAPD_FLASHER_JOB_AUTHORIZING] = "authorizing",
  [BMAPD_FLASHER_JOB_QUEUED] = "queued",       [BMAPD_FLASHER_JOB_PREPARING] = "preparing",
  [BMAPD_FLASHER_JOB_WRITING] = "writing",     [BMAPD_FLASHER_JOB_SYNCING] = "syncing",
  [BMAPD_FLASHER_JOB_VERIFYING] = "verifying", [BMAPD_FLASHER_JOB_DONE] = "done",
  [BMAPD_FLASHER_JOB_FAILED] = "failed",       [BMAPD_FLASHER_JOB_CANCELED] = "canceled",
};

const char *
bmapd_flasher_job_state_to_string (BmapdFlasherJobState state)
{
  g_return_val_if_fail (state < G_N_ELEMENTS (state_names), NULL);
  return state_names[state];
}

static gboolean
state_from_string (const char *name, BmapdFlasherJobState *state)
{
  for (guint i = 0; i < G_N_ELEMENTS (state_names); i++) {
    if (g_strcmp0 (name, state_names[i]) == 0) {
      *state = i;
      return TRUE;
    }
  }
  return FALSE;
}

static void
bmapd_flasher_job_finalize (GObject *object)
{
  BmapdFlasherJob *self = BMAPD_FLASHER_JOB (object);

  g_free (self->object_path);
  g_free (self->device_path);
  g_free (self->device_name);
  g_free (self->device_node);
  g_free (self->error_name);
  g_free (self->error_message);
  g_free (self->details);
  G_OBJECT_CLASS (bmapd_flasher_job_parent_class)->finalize (object);
}

static void
bmapd_flasher_job_class_init (BmapdFlasherJobClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = bmapd_flasher_job_finalize;
  signals[SIGNAL_CHANGED] = g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                          0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
bmapd_flasher_job_init (BmapdFlasherJob *self)
{}

BmapdFlasherJob *
bmapd_flasher_job_new (const char *device_path, const char *device_name, const char *device_node)
{
  BmapdFlasherJob *self = g_object_new (BMAPD_FLASHER_TYPE_JOB, NULL);

  self->device_path = g_strdup (device_path);
  self->device_name = g_strdup (device_name);
  self->device_node = g_strdup (device_node);
  return self;
}

void
bmapd_flasher_job_set_object_path (BmapdFlasherJob *self, const char *object_path)
{
  g_return_if_fail (BMAPD_FLASHER_IS_JOB (self));
  g_free (self->object_path);
  self->object_path = g_strdup (object_path);
}

const char *
bmapd_flasher_job_get_object_path (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), NULL);
  return self->object_path;
}

const char *
bmapd_flasher_job_get_device_path (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), NULL);
  return self->device_path;
}

const char *
bmapd_flasher_job_get_device_name (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), NULL);
  return self->device_name;
}

const char *
bmapd_flasher_job_get_device_node (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), NULL);
  return self->device_node;
}

gboolean
bmapd_flasher_job_is_finished (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), TRUE);
  return self->state >= BMAPD_FLASHER_JOB_DONE;
}

/* States only move forward: a late PropertiesChanged must not take a
 * finished job back to "writing". */
static void
set_state (BmapdFlasherJob *self, BmapdFlasherJobState state)
{
  if (bmapd_flasher_job_is_finished (self) || state < self->state)
    return;
  self->state = state;
  if (state >= BMAPD_FLASHER_JOB_WRITING && state <= BMAPD_FLASHER_JOB_VERIFYING)
    self->wrote = TRUE;
  if (state == BMAPD_FLASHER_JOB_DONE)
    self->fraction = 1.0;
}

static void
set_fraction (BmapdFlasherJob *self, double fraction)
{
  if (bmapd_flasher_job_is_finished (self))
    return;
  self->fraction = MAX (self->fraction, CLAMP (fraction, 0.0, 1.0));
}

void
bmapd_flasher_job_update (BmapdFlasherJob *self, GVariant *properties)
{
  /* Floating (a test's literal) or not (a proxy's): ours for the call. */
  g_autoptr (GVariant) owned_properties
      = properties != NULL ? g_variant_ref_sink (properties) : NULL;
  g_auto (GVariantDict) dict;
  const char *state_name = NULL;
  const char *str = NULL;
  BmapdFlasherJobState state;
  double progress;

  g_return_if_fail (BMAPD_FLASHER_IS_JOB (self));
  g_return_if_fail (g_variant_is_of_type (properties, G_VARIANT_TYPE_VARDICT));

  g_variant_dict_init (&dict, properties);
  if (g_variant_dict_lookup (&dict, "State", "&s", &state_name)
      && state_from_string (state_name, &state) && state != BMAPD_FLASHER_JOB_STARTING)
    set_state (self, state);
  g_variant_dict_lookup (&dict, "BytesDone", "t", &self->bytes_done);
  g_variant_dict_lookup (&dict, "BytesTotal", "t", &self->bytes_total);
  g_variant_dict_lookup (&dict, "Rate", "t", &self->rate);
  g_variant_dict_lookup (&dict, "ExpectedEndTime", "t", &self->expected_end_usec);
  g_variant_dict_lookup (&dict, "BytesChecked", "t", &self->bytes_checked);
  g_variant_dict_lookup (&dict, "BytesWritten", "t", &self->bytes_written);
  if (g_variant_dict_lookup (&dict, "Result", "&s", &str)) {
    g_free (self->details);
    self->details = str[0] != '\0' ? g_strdup (str) : NULL;
  }
  if (g_variant_dict_lookup (&dict, "Progress", "d", &progress))
    set_fraction (self, progress);
  if (g_variant_dict_lookup (&dict, "ErrorName", "&s", &str) && str[0] != '\0') {
    g_free (self->error_name);
    self->error_name = g_strdup (str);
  }
  if (g_variant_dict_lookup (&dict, "ErrorMessage", "&s", &str) && str[0] != '\0') {
    g_free (self->error_message);
    self->error_message = g_strdup (str);
  }
  if (self->bytes_done > 0)
    self->wrote = TRUE;
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

void
bmapd_flasher_job_progress (BmapdFlasherJob *self, guint64 bytes_done, guint64 bytes_total,
                            guint64 rate)
{
  g_return_if_fail (BMAPD_FLASHER_IS_JOB (self));

  self->bytes_done = bytes_done;
  self->bytes_total = bytes_total;
  self->rate = rate;
  if (bytes_total > 0)
    set_fraction (self, (double) bytes_done / (double) bytes_total);
  if (bytes_done > 0)
    self->wrote = TRUE;
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

void
bmapd_flasher_job_finish (BmapdFlasherJob *self, const char *state, const char *error_name,
                          const char *error_message)
{
  BmapdFlasherJobState end;

  g_return_if_fail (BMAPD_FLASHER_IS_JOB (self));

  if (!state_from_string (state, &end) || end < BMAPD_FLASHER_JOB_DONE)
    end = BMAPD_FLASHER_JOB_FAILED;
  if (error_name != NULL && error_name[0] != '\0') {
    g_free (self->error_name);
    self->error_name = g_strdup (error_name);
  }
  if (error_message != NULL && error_message[0] != '\0') {
    g_free (self->error_message);
    self->error_message = g_strdup (error_message);
  }
  set_state (self, end);
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

void
bmapd_flasher_job_call_failed (BmapdFlasherJob *self, const GError *error)
{
  g_autofree char *remote = NULL;
  g_autofree char *message = NULL;

  g_return_if_fail (BMAPD_FLASHER_IS_JOB (self));

  remote = g_dbus_error_get_remote_error (error);
  message = g_strdup (error->message);
  /* "GDBus.Error:org.bmapd.bmapd1.Error.X: text" -> "text" */
  if (remote != NULL && g_str_has_prefix (message, "GDBus.Error:")) {
    const char *text = strstr (message + strlen ("GDBus.Error:"), ": ");
    if (text != NULL) {
      char *stripped = g_strdup (text + 2);
      g_free (message);
      message = stripped;
    }
  }
  /* Every failure of the Flash call comes before the first byte. A flash
   * the person canceled while polkit asked (the password dialog then
   * dismissed, or bmapd's Cancelled) was canceled, not broken. */
  self->wrote = FALSE;
  bmapd_flasher_job_finish (self,
                            self->cancel_requested
                                    || g_strcmp0 (remote, "org.bmapd.bmapd1.Error.Cancelled") == 0
                                ? "canceled"
                                : "failed",
                            remote, message);
}

void
bmapd_flasher_job_flash_called (BmapdFlasherJob *self)
{
  g_return_if_fail (BMAPD_FLASHER_IS_JOB (self));

  set_state (self, BMAPD_FLASHER_JOB_AUTHORIZING);
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

void
bmapd_flasher_job_request_cancel (BmapdFlasherJob *self)
{
  g_return_if_fail (BMAPD_FLASHER_IS_JOB (self));

  if (bmapd_flasher_job_is_finished (self) || self->cancel_requested)
    return;
  self->cancel_requested = TRUE;
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

gboolean
bmapd_flasher_job_get_cancel_requested (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), FALSE);
  return self->cancel_requested;
}

gboolean
bmapd_flasher_job_take_pending_cancel (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), FALSE);

  if (!self->cancel_requested || self->cancel_sent || bmapd_flasher_job_is_finished (self))
    return FALSE;
  self->cancel_sent = TRUE;
  return TRUE;
}

BmapdFlasherJobState
bmapd_flasher_job_get_state (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), BMAPD_FLASHER_JOB_FAILED);
  return self->state;
}

double
bmapd_flasher_job_get_fraction (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), 0.0);
  return self->fraction;
}

static const char *
phase_label (BmapdFlasherJobState state)
{
  switch (state) {
    case BMAPD_FLASHER_JOB_STARTING:
      return _ ("Starting");
    case BMAPD_FLASHER_JOB_AUTHORIZING:
      return _ ("Waiting for permission");
    case BMAPD_FLASHER_JOB_QUEUED:
      return _ ("Waiting for other flashes to end");
    case BMAPD_FLASHER_JOB_PREPARING:
      return _ ("Preparing");
    case BMAPD_FLASHER_JOB_WRITING:
      return _ ("Writing");
    case BMAPD_FLASHER_JOB_SYNCING:
      return _ ("Flushing to the card");
    case BMAPD_FLASHER_JOB_VERIFYING:
      return _ ("Reading back to verify");
    case BMAPD_FLASHER_JOB_DONE:
      return _ ("Done");
    case BMAPD_FLASHER_JOB_FAILED:
      return _ ("Failed");
    case BMAPD_FLASHER_JOB_CANCELED:
      return _ ("Canceled");
    default:
      g_assert_not_reached ();
  }
}

/* Seconds left: the daemon's expected end when it has one, else the bytes
 * left at the current rate; -1 when neither is known. */
static gint64
seconds_left (BmapdFlasherJob *self, gint64 now_usec)
{
  if (self->expected_end_usec > 0) {
    gint64 left = (gint64) self->expected_end_usec - now_usec;
    return MAX (left, 0) / G_USEC_PER_SEC;
  }
  if (self->rate > 0 && self->bytes_total > self->bytes_done)
    return (gint64) ((self->bytes_total - self->bytes_done) / self->rate);
  return -1;
}

char *
bmapd_flasher_job_dup_status (BmapdFlasherJob *self, gint64 now_usec)
{
  g_autoptr (GString) status = NULL;

  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), NULL);

  /* Canceled before Flash answered: said until bmapd ends the job. */
  status = g_string_new (self->cancel_requested ? _ ("Canceling") : phase_label (self->state));
  if (self->state >= BMAPD_FLASHER_JOB_WRITING && self->state <= BMAPD_FLASHER_JOB_VERIFYING) {
    gint64 left = seconds_left (self, now_usec);

    if (self->rate > 0) {
      g_autofree char *rate = g_format_size (self->rate);
      /* TRANSLATORS: a write rate, "45.2 MB/s" */
      g_string_append (status, " · ");
      g_string_append_printf (status, _ ("%s/s"), rate);
    }
    /* In int: gettext cannot see through G_GINT64_FORMAT, and no flash
     * takes 68 years. */
    if (left >= 60) {
      int minutes = (int) MIN ((left + 30) / 60, G_MAXINT);
      g_string_append (status, " · ");
      g_string_append_printf (status,
                              g_dngettext (GETTEXT_PACKAGE, "about %d minute left",
                                           "about %d minutes left", (gulong) minutes),
                              minutes);
    } else if (left >= 0) {
      g_string_append (status, " · ");
      g_string_append_printf (
          status, g_dngettext (GETTEXT_PACKAGE, "%d second left", "%d seconds left", (gulong) left),
          (int) left);
    }
  }
  return g_string_free (g_steal_pointer (&status), FALSE);
}

char *
bmapd_flasher_job_dup_result (BmapdFlasherJob *self)
{
  const char *card;

  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), NULL);

  if (!bmapd_flasher_job_is_finished (self))
    return NULL;
  if (self->state == BMAPD_FLASHER_JOB_DONE && (self->minimize_writes || self->bytes_checked > 0)) {
    g_autofree char *checked = g_format_size (self->bytes_checked);
    g_autofree char *written = g_format_size (self->bytes_written);
    /* TRANSLATORS: minimize-writes: "checked 58.7 MB, wrote 1.0 MB": read
     * from the card and compared, and written because it differed */
    return g_strdup_printf (_ ("Done and verified: checked %s, wrote %s. The card can be removed."),
                            checked, written);
  }
  if (self->state == BMAPD_FLASHER_JOB_DONE)
    return g_strdup (_ ("Done and verified. The card can be removed."));

  card = self->wrote ? _ ("The card holds a partial image: flash it again before using it.")
                     : _ ("Nothing was written: the card is as it was.");
  if (self->state == BMAPD_FLASHER_JOB_CANCELED)
    return g_strdup_printf ("%s %s", _ ("Canceled."), card);
  if (g_strcmp0 (self->error_name, "org.bmapd.bmapd1.Error.NotAuthorized") == 0)
    return g_strdup_printf ("%s %s", _ ("Permission to write to the card was not given."), card);
  if (self->error_message == NULL)
    return g_strdup_printf ("%s %s", _ ("Failed."), card);
  /* bmapd's messages are one sentence, mostly without its full stop. */
  return g_strdup_printf ("%s%s %s", self->error_message,
                          g_str_has_suffix (self->error_message, ".") ? "" : ".", card);
}

char *
bmapd_flasher_job_dup_details (BmapdFlasherJob *self)
{
  g_autofree char *first = NULL;

  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), NULL);

  if (self->details == NULL)
    return NULL;
  /* bmapd's Result is notes joined by "; ", lower case, no full stop. */
  first = g_utf8_strup (self->details, g_utf8_next_char (self->details) - self->details);
  return g_strdup_printf ("%s%s%s", first, g_utf8_next_char (self->details),
                          g_str_has_suffix (self->details, ".") ? "" : ".");
}

void
bmapd_flasher_job_set_minimize_writes (BmapdFlasherJob *self, gboolean minimize_writes)
{
  g_return_if_fail (BMAPD_FLASHER_IS_JOB (self));
  self->minimize_writes = minimize_writes;
}

guint64
bmapd_flasher_job_get_bytes_checked (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), 0);
  return self->bytes_checked;
}

guint64
bmapd_flasher_job_get_bytes_written (BmapdFlasherJob *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB (self), 0);
  return self->bytes_written;
}
