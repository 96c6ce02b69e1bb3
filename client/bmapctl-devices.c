/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdio.h>

#include "bmap-error.h"
#include "bmap-text.h"
#include "bmapctl-bus.h"
#include "bmapctl-commands.h"
#include "bmapctl-json.h"

static char *
device_flags (const BmapctlDevice *d)
{
  g_autoptr (GPtrArray) flags = g_ptr_array_new ();

  if (d->removable)
    g_ptr_array_add (flags, (gpointer) "removable");
  if (d->system)
    g_ptr_array_add (flags, (gpointer) "system");
  if (d->read_only)
    g_ptr_array_add (flags, (gpointer) "ro");
  if (d->busy)
    g_ptr_array_add (flags, (gpointer) "busy");
  if (!d->media_present)
    g_ptr_array_add (flags, (gpointer) "no-media");
  if (d->job != NULL && !g_str_equal (d->job, "/"))
    g_ptr_array_add (flags, (gpointer) "flashing");
  g_ptr_array_add (flags, NULL);
  return g_strjoinv (",", (char **) flags->pdata);
}

static const char *
or_dash (const char *s)
{
  return s != NULL && *s != '\0' ? s : "-";
}

static gboolean
is_partition (const BmapctlDevice *d)
{
  return d->partition_of != NULL && !g_str_equal (d->partition_of, "/");
}

/* Each disk followed by its partitions, which are listed, like their disk,
 * unless System hides them; a partition whose disk is not listed comes
 * last. */
static GPtrArray *
order_devices (GPtrArray *devices, gboolean all, guint *hidden)
{
  GPtrArray *shown = g_ptr_array_new ();

  for (guint i = 0; i < devices->len; i++) {
    BmapctlDevice *d = g_ptr_array_index (devices, i);

    if (is_partition (d))
      continue;
    if (d->system && !all) {
      (*hidden)++;
      continue;
    }
    g_ptr_array_add (shown, d);
    for (guint j = 0; j < devices->len; j++) {
      BmapctlDevice *p = g_ptr_array_index (devices, j);
      if (is_partition (p) && g_str_equal (p->partition_of, d->path))
        g_ptr_array_add (shown, p);
    }
  }
  for (guint i = 0; i < devices->len; i++) {
    BmapctlDevice *p = g_ptr_array_index (devices, i);
    gboolean placed = FALSE;

    if (!is_partition (p) || (p->system && !all))
      continue;
    for (guint j = 0; j < shown->len && !placed; j++)
      placed = g_ptr_array_index (shown, j) == p;
    if (!placed)
      g_ptr_array_add (shown, p);
  }
  return shown;
}

int
bmapctl_devices (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv)
{
  gboolean all = FALSE;
  const GOptionEntry entries[] = {
    { "all", 'a', 0, G_OPTION_ARG_NONE, &all, "Also list system disks (hidden by default)", NULL },
    { NULL },
  };
  g_autoptr (GError) error = NULL;
  g_autoptr (sd_bus) bus = NULL;
  g_autoptr (GPtrArray) devices = NULL;
  g_autoptr (GPtrArray) shown = NULL;
  guint hidden = 0;

  if (!bmapctl_parse (options, command, entries,
                      "Lists the disks bmapd can write to, each followed by its partitions "
                      "(indented). System\ndisks (the disk holding /, internal fixed disks) and "
                      "their partitions are hidden\nunless --all is given.",
                      &argc, &argv))
    return BMAPCTL_EXIT_USAGE;
  if (argc != 1)
    return bmapctl_usage_error (command, "too many arguments");

  bus = bmapctl_bus_open (&error);
  if (bus == NULL || !bmapctl_get_managed_objects (bus, &devices, NULL, NULL, &error))
    return bmapctl_report_error (options, error);

  shown = order_devices (devices, all, &hidden);

  if (options->json) {
    g_autoptr (GString) json = g_string_new ("[");

    for (guint i = 0; i < shown->len; i++) {
      if (i > 0)
        g_string_append_c (json, ',');
      bmapctl_append_device_json (json, g_ptr_array_index (shown, i));
    }
    g_string_append (json, "]\n");
    fputs (json->str, stdout);
    return BMAPCTL_EXIT_OK;
  }

  if (shown->len > 0)
    printf ("%-16s %10s %-8s %-24s %-20s %s\n", "NODE", "SIZE", "BUS", "MODEL", "SERIAL", "FLAGS");
  for (guint i = 0; i < shown->len; i++) {
    BmapctlDevice *d = g_ptr_array_index (shown, i);
    g_autofree char *size = d->media_present ? bmapctl_format_size (d->size) : g_strdup ("-");
    g_autofree char *flags = device_flags (d);
    g_autofree char *model
        = g_strjoin (" ", or_dash (d->vendor), d->model != NULL ? d->model : "", NULL);
    g_autofree char *node = NULL, *bus_name = NULL, *model_shown = NULL, *serial = NULL;

    if (d->vendor == NULL || *d->vendor == '\0') {
      g_free (model);
      model = g_strdup (or_dash (d->model));
    }
    /* Model, vendor and serial are what the device says about itself. */
    node = bmap_text_escape (or_dash (d->node), BMAP_TEXT_ESCAPE_DEFAULT);
    if (is_partition (d)) {
      char *indented = g_strconcat ("  ", node, NULL);
      g_free (node);
      node = indented;
    }
    bus_name = bmap_text_escape (or_dash (d->bus), BMAP_TEXT_ESCAPE_DEFAULT);
    model_shown = bmap_text_escape (g_strstrip (model), BMAP_TEXT_ESCAPE_DEFAULT);
    serial = bmap_text_escape (or_dash (d->serial), BMAP_TEXT_ESCAPE_DEFAULT);
    printf ("%-16s %10s %-8s %-24s %-20s %s\n", node, size, bus_name, model_shown, serial,
            or_dash (flags));
  }
  if (!options->quiet) {
    if (shown->len == 0)
      printf ("No devices.");
    else
      printf ("\n%u device%s listed.", shown->len, shown->len == 1 ? "" : "s");
    if (hidden > 0)
      printf (" %u system disk%s hidden; use --all to list them.", hidden, hidden == 1 ? "" : "s");
    printf ("\n");
  }
  return BMAPCTL_EXIT_OK;
}
