/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What a desktop imaging GUI written in C does with bmapd, using nothing
 * but the bindings gdbus-codegen generates from the installed
 * org.bmapd.bmapd1.xml: find the device through the object manager, show
 * what it is and what flashing erases, pass the image and bmap as file
 * descriptors, follow the job's Progress to Finished, cancel it. The calls
 * carry no message flags, as generated code's do not: polkit asks for a
 * password (through the session's agent) because bmapd lets it by default.
 *
 *   bmapd-gui-client flash NODE IMAGE BMAP [no-user-interaction]
 *   bmapd-gui-client cancel NODE IMAGE BMAP   (cancels once writing started)
 *
 * "no-user-interaction" passes that option, true: no password may be asked
 * for.
 *
 * Prints one line per event on stdout ("device ...", "content ...", "caller
 * UNIQUE-NAME", "job ...", "progress STATE DONE TOTAL RATE", "finished
 * STATE NAME MESSAGE", or "flash-failed NAME MESSAGE") and exits 0 when the
 * job ended as asked (done, or canceled). Built and run by
 * test_gdbus_codegen.py. */

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bmapd-generated.h"

typedef struct {
  GMainLoop *loop;
  GDBusObjectManager *manager;
  char *job_path;  /* once Flash replied */
  gboolean cancel; /* cancel once the job writes */
  gboolean cancel_sent;
  char *finished_state; /* the job's Finished, once heard */
  GHashTable *finished; /* object path -> "state\tname\tmessage", heard before the reply */
} Gui;

static BmapdDevice *
find_device (GDBusObjectManager *manager, const char *node)
{
  GList *objects = g_dbus_object_manager_get_objects (manager);
  BmapdDevice *found = NULL;

  for (GList *l = objects; l != NULL && found == NULL; l = l->next) {
    BmapdDevice *device = bmapd_object_peek_device (BMAPD_OBJECT (l->data));

    if (device != NULL && g_strcmp0 (bmapd_device_get_node (device), node) == 0)
      found = g_object_ref (device);
  }
  g_list_free_full (objects, g_object_unref);
  return found;
}

static void
show_device (BmapdDevice *device)
{
  GVariant *contents = bmapd_device_get_contents (device);
  GVariantIter iter;
  GVariant *entry;

  printf ("device %s\t%s\t%s\n", g_dbus_proxy_get_object_path (G_DBUS_PROXY (device)),
          bmapd_device_get_display_name (device), bmapd_device_get_icon_name (device));
  /* "this will erase BOOT (vfat, 8 MiB)" */
  g_variant_iter_init (&iter, contents);
  while ((entry = g_variant_iter_next_value (&iter)) != NULL) {
    GVariantDict dict;
    const char *node = "", *label = "", *type = "";
    guint64 size = 0;

    g_variant_dict_init (&dict, entry);
    g_variant_dict_lookup (&dict, "node", "&s", &node);
    g_variant_dict_lookup (&dict, "label", "&s", &label);
    g_variant_dict_lookup (&dict, "type", "&s", &type);
    g_variant_dict_lookup (&dict, "size", "t", &size);
    printf ("content %s\t%s\t%s\t%" G_GUINT64_FORMAT "\n", node, label, type, size);
    g_variant_dict_clear (&dict);
    g_variant_unref (entry);
  }
}

static void
on_finished (Gui *gui, const char *path, const char *state, const char *name, const char *message)
{
  if (gui->job_path == NULL) {
    /* The reply is not read yet: keep it for when it is. */
    g_hash_table_insert (gui->finished, g_strdup (path),
                         g_strdup_printf ("%s\t%s\t%s", state, name, message));
    return;
  }
  if (g_strcmp0 (path, gui->job_path) != 0 || gui->finished_state != NULL)
    return;
  printf ("finished %s\t%s\t%s\n", state, name, message);
  gui->finished_state = g_strdup (state);
  g_main_loop_quit (gui->loop);
}

static void
maybe_cancel (Gui *gui, BmapdJob *job)
{
  g_autoptr (GError) error = NULL;

  if (!gui->cancel || gui->cancel_sent || g_strcmp0 (bmapd_job_get_state (job), "writing") != 0)
    return;
  gui->cancel_sent = TRUE;
  printf ("cancel %s\n", gui->job_path);
  /* Answered once the device is closed. */
  if (!bmapd_job_call_cancel_sync (job, NULL, &error)) {
    printf ("cancel-failed %s\n", error->message);
    g_main_loop_quit (gui->loop);
  }
}

/* Every signal of every bmapd object, through the object manager's
 * proxies: subscribed before Flash is called, so nothing is missed. */
static void
on_proxy_signal (GDBusObjectManagerClient *manager, GDBusObjectProxy *object, GDBusProxy *proxy,
                 const char *sender, const char *signal, GVariant *params, gpointer user_data)
{
  Gui *gui = user_data;
  const char *path = g_dbus_proxy_get_object_path (proxy);

  if (!BMAPD_IS_JOB (proxy))
    return;
  if (g_str_equal (signal, "Finished")) {
    const char *state, *name, *message;

    g_variant_get (params, "(&s&s&s)", &state, &name, &message);
    on_finished (gui, path, state, name, message);
  } else if (g_str_equal (signal, "Progress") && g_strcmp0 (path, gui->job_path) == 0) {
    guint64 done, total, rate;

    g_variant_get (params, "(ttt)", &done, &total, &rate);
    printf ("progress %s\t%" G_GUINT64_FORMAT "\t%" G_GUINT64_FORMAT "\t%" G_GUINT64_FORMAT "\n",
            bmapd_job_get_state (BMAPD_JOB (proxy)), done, total, rate);
    maybe_cancel (gui, BMAPD_JOB (proxy));
  }
}

static void
on_proxy_properties_changed (GDBusObjectManagerClient *manager, GDBusObjectProxy *object,
                             GDBusProxy *proxy, GVariant *changed, const char *const *invalidated,
                             gpointer user_data)
{
  Gui *gui = user_data;

  if (BMAPD_IS_JOB (proxy) && g_strcmp0 (g_dbus_proxy_get_object_path (proxy), gui->job_path) == 0)
    maybe_cancel (gui, BMAPD_JOB (proxy));
}

static int
open_or_die (const char *path)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd < 0) {
    fprintf (stderr, "cannot open %s: %s\n", path, g_strerror (errno));
    exit (2);
  }
  return fd;
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GDBusObjectManager) manager = NULL;
  g_autoptr (BmapdDevice) device = NULL;
  g_autoptr (BmapdManager) bmapd = NULL;
  g_autoptr (GUnixFDList) fds = g_unix_fd_list_new ();
  g_autofree char *job_path = NULL;
  g_autofree char *description = NULL;
  GVariantBuilder options;
  Gui gui = { 0 };
  const char *early;
  gboolean no_user_interaction;
  int image_index, bmap_index;

  no_user_interaction = argc == 6 && strcmp (argv[5], "no-user-interaction") == 0;
  if ((argc != 5 && !no_user_interaction)
      || (strcmp (argv[1], "flash") != 0 && strcmp (argv[1], "cancel") != 0)) {
    fprintf (stderr, "usage: %s flash|cancel NODE IMAGE BMAP [no-user-interaction]\n", argv[0]);
    return 2;
  }
  gui.cancel = strcmp (argv[1], "cancel") == 0;
  gui.loop = g_main_loop_new (NULL, FALSE);
  gui.finished = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

  manager = bmapd_object_manager_client_new_for_bus_sync (
      G_BUS_TYPE_SYSTEM, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_NONE, "org.bmapd.bmapd1",
      "/org/bmapd/bmapd1", NULL, &error);
  if (manager == NULL) {
    fprintf (stderr, "object manager: %s\n", error->message);
    return 1;
  }
  g_signal_connect (manager, "interface-proxy-signal", G_CALLBACK (on_proxy_signal), &gui);
  g_signal_connect (manager, "interface-proxy-properties-changed",
                    G_CALLBACK (on_proxy_properties_changed), &gui);

  device = find_device (manager, argv[2]);
  if (device == NULL) {
    fprintf (stderr, "bmapd offers no device %s\n", argv[2]);
    return 1;
  }
  show_device (device);

  bmapd = bmapd_manager_proxy_new_for_bus_sync (G_BUS_TYPE_SYSTEM, G_DBUS_PROXY_FLAGS_NONE,
                                                "org.bmapd.bmapd1", "/org/bmapd/bmapd1", NULL,
                                                &error);
  if (bmapd == NULL) {
    fprintf (stderr, "manager proxy: %s\n", error->message);
    return 1;
  }
  image_index = g_unix_fd_list_append (fds, open_or_die (argv[3]), &error);
  bmap_index = g_unix_fd_list_append (fds, open_or_die (argv[4]), &error);
  if (image_index < 0 || bmap_index < 0) {
    fprintf (stderr, "fd list: %s\n", error->message);
    return 1;
  }
  description = g_path_get_basename (argv[3]);
  g_variant_builder_init (&options, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&options, "{sv}", "bmap", g_variant_new_handle (bmap_index));
  g_variant_builder_add (&options, "{sv}", "description", g_variant_new_string (description));
  g_variant_builder_add (&options, "{sv}", "diskseq",
                         g_variant_new_uint64 (bmapd_device_get_disk_seq (device)));
  if (no_user_interaction)
    g_variant_builder_add (&options, "{sv}", "no-user-interaction", g_variant_new_boolean (TRUE));
  /* The subject polkit is asked about. */
  printf ("caller %s\n",
          g_dbus_connection_get_unique_name (g_dbus_proxy_get_connection (G_DBUS_PROXY (bmapd))));
  if (!bmapd_manager_call_flash_sync (bmapd, g_dbus_proxy_get_object_path (G_DBUS_PROXY (device)),
                                      g_variant_new_handle (image_index),
                                      g_variant_builder_end (&options), fds, &job_path, NULL, NULL,
                                      &error)) {
    g_autofree char *name = g_dbus_error_get_remote_error (error);

    g_dbus_error_strip_remote_error (error);
    printf ("flash-failed %s\t%s\n", name != NULL ? name : "", error->message);
    return 1;
  }
  printf ("job %s\n", job_path);
  fflush (stdout);
  gui.job_path = job_path;

  early = g_hash_table_lookup (gui.finished, job_path);
  if (early != NULL) {
    g_auto (GStrv) parts = g_strsplit (early, "\t", 3);

    on_finished (&gui, job_path, parts[0], parts[1], parts[2]);
  } else {
    /* A fast job may be writing already: the first Progress signal or
     * State change will find it. */
    g_main_loop_run (gui.loop);
  }
  fflush (stdout);
  if (gui.finished_state == NULL)
    return 1;
  return g_str_equal (gui.finished_state, gui.cancel ? "canceled" : "done") ? 0 : 1;
}
