/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <glib/gi18n.h>

#include "bmapd-flasher-station.h"

struct _BmapdFlasherStation {
  GObject parent_instance;
  char *description;
  char *rule;
  char *error;
  gboolean armed;
  guint flashed;
  guint failed;
  GListStore *jobs;
};

G_DEFINE_TYPE (BmapdFlasherStation, bmapd_flasher_station, G_TYPE_OBJECT)

enum { SIGNAL_CHANGED, N_SIGNALS };
static guint signals[N_SIGNALS];

static void
bmapd_flasher_station_finalize (GObject *object)
{
  BmapdFlasherStation *self = BMAPD_FLASHER_STATION (object);

  g_free (self->description);
  g_free (self->rule);
  g_free (self->error);
  g_object_unref (self->jobs);
  G_OBJECT_CLASS (bmapd_flasher_station_parent_class)->finalize (object);
}

static void
bmapd_flasher_station_class_init (BmapdFlasherStationClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = bmapd_flasher_station_finalize;
  signals[SIGNAL_CHANGED] = g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                          0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
bmapd_flasher_station_init (BmapdFlasherStation *self)
{
  self->jobs = g_list_store_new (BMAPD_FLASHER_TYPE_JOB);
}

BmapdFlasherStation *
bmapd_flasher_station_new (const char *description)
{
  BmapdFlasherStation *self = g_object_new (BMAPD_FLASHER_TYPE_STATION, NULL);

  self->description = g_strdup (description);
  return self;
}

const char *
bmapd_flasher_station_get_description (BmapdFlasherStation *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_STATION (self), NULL);
  return self->description;
}

void
bmapd_flasher_station_set_rule (BmapdFlasherStation *self, const char *object_path)
{
  g_return_if_fail (BMAPD_FLASHER_IS_STATION (self));

  g_free (self->rule);
  self->rule = g_strdup (object_path);
  self->armed = object_path != NULL;
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

const char *
bmapd_flasher_station_get_rule (BmapdFlasherStation *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_STATION (self), NULL);
  return self->rule;
}

gboolean
bmapd_flasher_station_is_armed (BmapdFlasherStation *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_STATION (self), FALSE);
  return self->armed;
}

void
bmapd_flasher_station_update (BmapdFlasherStation *self, GVariant *properties)
{
  /* Floating (a test's literal) or not (a proxy's): ours for the call. */
  g_autoptr (GVariant) owned_properties
      = properties != NULL ? g_variant_ref_sink (properties) : NULL;
  g_auto (GVariantDict) dict;

  g_return_if_fail (BMAPD_FLASHER_IS_STATION (self));
  g_return_if_fail (g_variant_is_of_type (properties, G_VARIANT_TYPE_VARDICT));

  g_variant_dict_init (&dict, properties);
  g_variant_dict_lookup (&dict, "Flashed", "u", &self->flashed);
  g_variant_dict_lookup (&dict, "Failed", "u", &self->failed);
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

void
bmapd_flasher_station_disarm (BmapdFlasherStation *self)
{
  g_return_if_fail (BMAPD_FLASHER_IS_STATION (self));

  if (!self->armed)
    return;
  self->armed = FALSE;
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

void
bmapd_flasher_station_fail (BmapdFlasherStation *self, const char *message)
{
  g_return_if_fail (BMAPD_FLASHER_IS_STATION (self));

  g_free (self->error);
  self->error = g_strdup (message);
  self->armed = FALSE;
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

const char *
bmapd_flasher_station_get_error (BmapdFlasherStation *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_STATION (self), NULL);
  return self->error;
}

guint
bmapd_flasher_station_get_flashed (BmapdFlasherStation *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_STATION (self), 0);
  return self->flashed;
}

guint
bmapd_flasher_station_get_failed (BmapdFlasherStation *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_STATION (self), 0);
  return self->failed;
}

char *
bmapd_flasher_station_dup_counter (BmapdFlasherStation *self)
{
  g_autofree char *flashed = NULL;
  g_autofree char *failed = NULL;

  g_return_val_if_fail (BMAPD_FLASHER_IS_STATION (self), NULL);

  flashed = g_strdup_printf (
      g_dngettext (GETTEXT_PACKAGE, "%u card flashed", "%u cards flashed", self->flashed),
      self->flashed);
  failed = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "%u failed", "%u failed", self->failed),
                            self->failed);
  /* TRANSLATORS: "2 cards flashed, 1 failed" */
  return g_strdup_printf (_ ("%s, %s"), flashed, failed);
}

GListModel *
bmapd_flasher_station_get_jobs (BmapdFlasherStation *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_STATION (self), NULL);
  return G_LIST_MODEL (self->jobs);
}

void
bmapd_flasher_station_add_job (BmapdFlasherStation *self, BmapdFlasherJob *job)
{
  g_return_if_fail (BMAPD_FLASHER_IS_STATION (self));
  g_list_store_append (self->jobs, job);
}
