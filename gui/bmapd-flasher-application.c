/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <glib/gi18n.h>

#include "bmapd-flasher-application.h"
#include "bmapd-flasher-window.h"

struct _BmapdFlasherApplication {
  AdwApplication parent_instance;
};

G_DEFINE_TYPE (BmapdFlasherApplication, bmapd_flasher_application, ADW_TYPE_APPLICATION)

static BmapdFlasherWindow *
get_window (BmapdFlasherApplication *self)
{
  GtkWindow *window = gtk_application_get_active_window (GTK_APPLICATION (self));

  if (window == NULL)
    window = GTK_WINDOW (bmapd_flasher_window_new (GTK_APPLICATION (self)));
  return BMAPD_FLASHER_WINDOW (window);
}

static void
bmapd_flasher_application_activate (GApplication *application)
{
  gtk_window_present (GTK_WINDOW (get_window (BMAPD_FLASHER_APPLICATION (application))));
}

/* [IMAGE] [--device NODE]... [--flash] [--screenshot-dir DIR] [--verbose]
 * [--close-when-done]; from this process or one started later (the app is
 * unique: a second start goes to the window that is there). */
static int
bmapd_flasher_application_command_line (GApplication *application,
                                        GApplicationCommandLine *command_line)
{
  BmapdFlasherApplication *self = BMAPD_FLASHER_APPLICATION (application);
  GVariantDict *options = g_application_command_line_get_options_dict (command_line);
  BmapdFlasherWindow *window = get_window (self);
  g_autofree const char **devices = NULL;
  g_autofree char **images = NULL;
  const char *screenshot_dir = NULL;
  const char *trusted_keys_dir = NULL;
  const char *when_done = NULL;
  gboolean minimize_writes = FALSE;
  gboolean flag;

  if (g_variant_dict_lookup (options, "verbose", "b", &flag) && flag)
    bmapd_flasher_window_set_verbose (window, TRUE);
  if (g_variant_dict_lookup (options, "screenshot-dir", "^&ay", &screenshot_dir))
    bmapd_flasher_window_set_screenshot_dir (window, screenshot_dir);
  if (g_variant_dict_lookup (options, "close-when-done", "b", &flag) && flag)
    bmapd_flasher_window_set_close_when_done (window, TRUE);
  if (g_variant_dict_lookup (options, "trusted-keys-dir", "^&ay", &trusted_keys_dir))
    bmapd_flasher_window_set_trusted_keys_dir (window, trusted_keys_dir);
  g_variant_dict_lookup (options, "minimize-writes", "b", &minimize_writes);
  g_variant_dict_lookup (options, "when-done", "&s", &when_done);
  if (when_done != NULL && g_strcmp0 (when_done, "eject") != 0
      && g_strcmp0 (when_done, "power-off") != 0 && g_strcmp0 (when_done, "leave") != 0) {
    g_application_command_line_printerr (
        command_line, _ ("--when-done must be leave, eject or power-off, not %s\n"), when_done);
    return 2;
  }
  if (minimize_writes || when_done != NULL)
    bmapd_flasher_window_set_options (window, minimize_writes, when_done);
  if (g_variant_dict_lookup (options, "device", "^a&s", &devices)) {
    for (guint i = 0; devices[i] != NULL; i++)
      bmapd_flasher_window_select_node (window, devices[i]);
  }
  if (g_variant_dict_lookup (options, G_OPTION_REMAINING, "^a&ay", &images) && images[0] != NULL) {
    g_autoptr (GFile) file
        = g_application_command_line_create_file_for_arg (command_line, images[0]);
    if (images[1] != NULL) {
      g_application_command_line_printerr (command_line, _ ("Give one image, not %u\n"),
                                           g_strv_length (images));
      return 2;
    }
    bmapd_flasher_window_open_image (window, file);
  }
  gtk_window_present (GTK_WINDOW (window));
  if (g_variant_dict_lookup (options, "flash", "b", &flag) && flag)
    bmapd_flasher_window_flash_when_ready (window);
  if (g_variant_dict_lookup (options, "station", "b", &flag) && flag) {
    g_auto (GVariantDict) match;
    gint64 size = 0;
    gint count = 0;

    g_variant_dict_init (&match, NULL);
    if (g_variant_dict_lookup (options, "match-size", "x", &size)) {
      if (size <= 0) {
        g_application_command_line_printerr (
            command_line, _ ("--match-size must be a size in bytes, not %" G_GINT64_FORMAT "\n"),
            size);
        return 2;
      }
      g_variant_dict_insert (&match, "min-size", "t", (guint64) size);
      g_variant_dict_insert (&match, "max-size", "t", (guint64) size);
    }
    if (g_variant_dict_lookup (options, "match-fixed", "b", &flag) && flag)
      g_variant_dict_insert (&match, "allow-non-removable", "b", TRUE);
    g_variant_dict_lookup (options, "station-count", "i", &count);
    if (count < 0) {
      g_application_command_line_printerr (
          command_line, _ ("--station-count must be 0 or more, not %d\n"), count);
      return 2;
    }
    bmapd_flasher_window_start_station (window, g_variant_dict_end (&match), (guint) count);
  }
  return 0;
}

static void
bmapd_flasher_application_class_init (BmapdFlasherApplicationClass *klass)
{
  GApplicationClass *app_class = G_APPLICATION_CLASS (klass);

  app_class->activate = bmapd_flasher_application_activate;
  app_class->command_line = bmapd_flasher_application_command_line;
}

static void
on_quit (GSimpleAction *action, GVariant *parameter, gpointer user_data)
{
  GtkWindow *window = gtk_application_get_active_window (GTK_APPLICATION (user_data));

  /* Through the window, which asks when a flash is going on. */
  if (window != NULL)
    gtk_window_close (window);
}

/* Also reachable from outside (org.gtk.Actions on the session bus). */
static void
on_cancel_all (GSimpleAction *action, GVariant *parameter, gpointer user_data)
{
  GtkWindow *window = gtk_application_get_active_window (GTK_APPLICATION (user_data));

  if (window != NULL)
    bmapd_flasher_window_cancel_all (BMAPD_FLASHER_WINDOW (window));
}

static void
bmapd_flasher_application_init (BmapdFlasherApplication *self)
{
  static const GOptionEntry entries[] = {
    { "device", 'd', 0, G_OPTION_ARG_STRING_ARRAY, NULL,
      N_ ("Tick this device (its node, /dev/sdb) once bmapd lists it; may be repeated"),
      N_ ("NODE") },
    { "flash", 0, 0, G_OPTION_ARG_NONE, NULL,
      N_ ("Flash the image onto the ticked devices at once, without asking again"), NULL },
    { "screenshot-dir", 0, 0, G_OPTION_ARG_FILENAME, NULL,
      N_ ("Save the window as DIR/progress.png while flashing and DIR/result.png at the end"),
      N_ ("DIR") },
    { "trusted-keys-dir", 0, 0, G_OPTION_ARG_FILENAME, NULL,
      N_ ("Judge bmap signatures by the keys in DIR, the directory bmapd trusts (default "
          "/etc/bmapd/trusted-keys.d)"),
      N_ ("DIR") },
    { "minimize-writes", 0, 0, G_OPTION_ARG_NONE, NULL, N_ ("Turn on \"Write only what differs\""),
      NULL },
    { "when-done", 0, 0, G_OPTION_ARG_STRING, NULL,
      N_ ("What to do with each card once flashed: leave, eject or power-off"), N_ ("WHAT") },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, NULL,
      N_ ("Print each device's flash states and result on standard output"), NULL },
    { "close-when-done", 0, 0, G_OPTION_ARG_NONE, NULL,
      N_ ("Close the window once every flash has ended"), NULL },
    { "station", 0, 0, G_OPTION_ARG_NONE, NULL,
      N_ ("Station mode: flash the image onto every card inserted from now on"), NULL },
    { "station-count", 0, 0, G_OPTION_ARG_INT, NULL,
      N_ ("Station mode: stop after this many cards (0, the default: no limit)"), N_ ("N") },
    { "match-size", 0, 0, G_OPTION_ARG_INT64, NULL,
      N_ ("Station mode: only cards of exactly this many bytes"), N_ ("BYTES") },
    { "match-fixed", 0, 0, G_OPTION_ARG_NONE, NULL,
      N_ ("Station mode: non-removable disks too (fixed card slots, loop devices); asks for "
          "the right to flash system disks"),
      NULL },
    { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, NULL, NULL, N_ ("[IMAGE]") },
    { NULL },
  };
  static const GActionEntry actions[] = {
    { "quit", on_quit, NULL, NULL, NULL, { 0 } },
    { "cancel-all", on_cancel_all, NULL, NULL, NULL, { 0 } },
  };
  const char *quit_accels[] = { "<Control>q", NULL };
  const char *close_accels[] = { "<Control>w", NULL };

  g_application_add_main_option_entries (G_APPLICATION (self), entries);
  g_application_set_option_context_summary (
      G_APPLICATION (self), _ ("Write a disk image onto SD cards and USB sticks through bmapd."));
  g_action_map_add_action_entries (G_ACTION_MAP (self), actions, G_N_ELEMENTS (actions), self);
  gtk_application_set_accels_for_action (GTK_APPLICATION (self), "app.quit", quit_accels);
  gtk_application_set_accels_for_action (GTK_APPLICATION (self), "window.close", close_accels);
}

BmapdFlasherApplication *
bmapd_flasher_application_new (void)
{
  return g_object_new (BMAPD_FLASHER_TYPE_APPLICATION, "application-id", BMAPD_FLASHER_APP_ID,
                       "flags", G_APPLICATION_HANDLES_COMMAND_LINE, NULL);
}
