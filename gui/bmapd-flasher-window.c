/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <glib/gi18n.h>
#include <stdio.h>

#include "bmap-trusted-keys.h"
#include "bmapd-flasher-client.h"
#include "bmapd-flasher-job-row.h"
#include "bmapd-flasher-window.h"

/* The choices of the "When done" row, in its order. */
enum {
  WHEN_DONE_LEAVE,
  WHEN_DONE_EJECT,
  WHEN_DONE_POWER_OFF,
};

/* Our entries in the desktop's recent files, the recent images. */
#define RECENT_APP_NAME "bmapd-flasher"

struct _BmapdFlasherWindow {
  AdwApplicationWindow parent_instance;

  BmapdFlasherClient *client;
  GCancellable *cancellable;
  BmapdFlasherImage *image;
  GHashTable *selected;       /* device object paths */
  GPtrArray *wanted_nodes;    /* from the command line, not yet seen */
  GPtrArray *jobs;            /* BmapdFlasherJob of the current flash */
  GHashTable *reported_state; /* job -> last state printed */
  gboolean flash_when_ready;
  gboolean verbose;
  gboolean close_when_done;
  gboolean closing;
  char *screenshot_dir;
  guint shot_stage;         /* 0, 1 after progress.png, 2 after result.png */
  GPtrArray *pending_shots; /* paths to save at the next frame */
  guint tick_id;
  gboolean start_after_shot; /* --flash with screenshots: setup.png first */

  GtkWidget *stack;
  GtkWidget *toasts;
  GtkWidget *image_row;
  GtkWidget *devices_list;
  GtkWidget *show_system;
  GtkWidget *flash_button;
  GtkWidget *jobs_group;
  GtkWidget *jobs_list;
  GtkWidget *another_button;
  GtkWidget *status_page_error;
  GtkWidget *minimize_switch;
  GtkWidget *when_done_row;
  GtkWidget *options_row;
  GtkWidget *signature_icon;
  GtkFilter *device_filter;
  char *trusted_keys_dir;

  /* Station mode */
  BmapdFlasherStation *station;
  GVariant *station_match;
  guint station_count;
  gboolean station_when_ready;
  gboolean station_was_armed;
  GtkWidget *station_toggle;
  GtkWidget *station_when_done_row;
  GtkWidget *station_minimize_row;
  GtkWidget *station_group;
  GtkWidget *station_counter;
  GtkWidget *station_status;
  GtkWidget *station_button;
  GtkWidget *station_list;
};

G_DEFINE_TYPE (BmapdFlasherWindow, bmapd_flasher_window, ADW_TYPE_APPLICATION_WINDOW)

static void
bmapd_flasher_window_dispose (GObject *object)
{
  BmapdFlasherWindow *self = BMAPD_FLASHER_WINDOW (object);

  g_cancellable_cancel (self->cancellable);
  g_clear_object (&self->cancellable);
  if (self->tick_id != 0) {
    g_source_remove (self->tick_id);
    self->tick_id = 0;
  }
  if (self->jobs != NULL) {
    for (guint i = 0; i < self->jobs->len; i++)
      g_signal_handlers_disconnect_by_data (self->jobs->pdata[i], self);
  }
  if (self->station != NULL)
    g_signal_handlers_disconnect_by_data (self->station, self);
  g_clear_object (&self->station);
  g_clear_pointer (&self->station_match, g_variant_unref);
  g_clear_object (&self->client);
  g_clear_object (&self->image);
  g_clear_pointer (&self->selected, g_hash_table_unref);
  g_clear_pointer (&self->wanted_nodes, g_ptr_array_unref);
  g_clear_pointer (&self->jobs, g_ptr_array_unref);
  g_clear_pointer (&self->reported_state, g_hash_table_unref);
  g_clear_pointer (&self->pending_shots, g_ptr_array_unref);
  g_clear_pointer (&self->screenshot_dir, g_free);
  g_clear_pointer (&self->trusted_keys_dir, g_free);
  G_OBJECT_CLASS (bmapd_flasher_window_parent_class)->dispose (object);
}

static void
show_toast (BmapdFlasherWindow *self, const char *text)
{
  AdwToast *toast = adw_toast_new (text);

  adw_toast_set_timeout (toast, 0);
  adw_toast_overlay_add_toast (ADW_TOAST_OVERLAY (self->toasts), toast);
}

/* ---- screenshots ---- */

static void
save_window_png (BmapdFlasherWindow *self, const char *path)
{
  GtkWidget *widget = GTK_WIDGET (self);
  int width = gtk_widget_get_width (widget);
  int height = gtk_widget_get_height (widget);
  g_autoptr (GdkPaintable) paintable = gtk_widget_paintable_new (widget);
  g_autoptr (GtkSnapshot) snapshot = gtk_snapshot_new ();
  g_autoptr (GskRenderNode) node = NULL;
  g_autoptr (GdkTexture) texture = NULL;
  GskRenderer *renderer = gtk_native_get_renderer (GTK_NATIVE (self));

  gdk_paintable_snapshot (paintable, snapshot, width, height);
  node = gtk_snapshot_free_to_node (g_steal_pointer (&snapshot));
  if (node == NULL || renderer == NULL) {
    g_warning ("Nothing to save in %s: the window is not drawn", path);
    return;
  }
  texture = gsk_renderer_render_texture (renderer, node, &GRAPHENE_RECT_INIT (0, 0, width, height));
  if (!gdk_texture_save_to_png (texture, path))
    g_warning ("Cannot save the screenshot %s", path);
  else if (self->verbose) {
    /* With what it shows: "screenshot PATH /dev/sdb writing ...". */
    g_print ("screenshot %s", path);
    for (guint i = 0; i < self->jobs->len; i++)
      g_print (
          " %s %s", bmapd_flasher_job_get_device_node (self->jobs->pdata[i]),
          bmapd_flasher_job_state_to_string (bmapd_flasher_job_get_state (self->jobs->pdata[i])));
    g_print ("\n");
    fflush (stdout);
  }
}

static void bmapd_flasher_window_check_done (BmapdFlasherWindow *self);
static void start_flash (BmapdFlasherWindow *self);
static void maybe_arm_now (BmapdFlasherWindow *self);

/* After the frame is painted the layout shows the latest state. */
static void
on_after_paint (GdkFrameClock *clock, BmapdFlasherWindow *self)
{
  g_autoptr (GPtrArray) shots = NULL;

  /* A page half faded in is not what a person looks at: wait for the end
   * of the stack's transition. */
  if (gtk_stack_get_transition_running (GTK_STACK (self->stack))) {
    gdk_frame_clock_request_phase (clock, GDK_FRAME_CLOCK_PHASE_PAINT);
    return;
  }
  shots = g_steal_pointer (&self->pending_shots);
  g_signal_handlers_disconnect_by_func (clock, on_after_paint, self);
  self->pending_shots = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; shots != NULL && i < shots->len; i++)
    save_window_png (self, shots->pdata[i]);
  if (self->start_after_shot) {
    self->start_after_shot = FALSE;
    start_flash (self);
  }
  bmapd_flasher_window_check_done (self);
}

void
bmapd_flasher_window_save_screenshot (BmapdFlasherWindow *self, const char *path)
{
  GdkFrameClock *clock = gtk_widget_get_frame_clock (GTK_WIDGET (self));

  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));

  if (clock == NULL) {
    g_warning ("Cannot save %s: the window is not shown", path);
    return;
  }
  if (self->pending_shots->len == 0)
    g_signal_connect (clock, "after-paint", G_CALLBACK (on_after_paint), self);
  g_ptr_array_add (self->pending_shots, g_strdup (path));
  gtk_widget_queue_draw (GTK_WIDGET (self));
  gdk_frame_clock_request_phase (clock, GDK_FRAME_CLOCK_PHASE_PAINT);
}

static void
take_named_screenshot (BmapdFlasherWindow *self, const char *name)
{
  g_autofree char *path = NULL;

  if (self->screenshot_dir == NULL)
    return;
  path = g_build_filename (self->screenshot_dir, name, NULL);
  bmapd_flasher_window_save_screenshot (self, path);
}

/* ---- jobs ---- */

static gboolean
all_jobs_finished (BmapdFlasherWindow *self)
{
  for (guint i = 0; i < self->jobs->len; i++) {
    if (!bmapd_flasher_job_is_finished (self->jobs->pdata[i]))
      return FALSE;
  }
  return TRUE;
}

static void
bmapd_flasher_window_check_done (BmapdFlasherWindow *self)
{
  if (self->pending_shots->len > 0)
    return;
  /* A station that has ended (on_station_changed) once station.png is saved. */
  if (self->closing && self->jobs->len == 0) {
    gtk_window_destroy (GTK_WINDOW (self));
    return;
  }
  if (self->jobs->len == 0 || !all_jobs_finished (self))
    return;
  if (self->closing
      || (self->close_when_done && (self->screenshot_dir == NULL || self->shot_stage == 2)))
    gtk_window_destroy (GTK_WINDOW (self));
}

static void
report_job (BmapdFlasherWindow *self, BmapdFlasherJob *job)
{
  BmapdFlasherJobState state = bmapd_flasher_job_get_state (job);
  gpointer last;

  if (!self->verbose)
    return;
  if (g_hash_table_lookup_extended (self->reported_state, job, NULL, &last)
      && GPOINTER_TO_UINT (last) == state + 1)
    return;
  g_hash_table_insert (self->reported_state, job, GUINT_TO_POINTER (state + 1));
  if (bmapd_flasher_job_is_finished (job)) {
    g_autofree char *result = bmapd_flasher_job_dup_result (job);
    g_autofree char *details = bmapd_flasher_job_dup_details (job);
    g_print ("result %s %s %s\n", bmapd_flasher_job_get_device_node (job),
             bmapd_flasher_job_state_to_string (state), result);
    if (details != NULL)
      g_print ("details %s %s\n", bmapd_flasher_job_get_device_node (job), details);
  } else {
    g_print ("state %s %s\n", bmapd_flasher_job_get_device_node (job),
             bmapd_flasher_job_state_to_string (state));
  }
  fflush (stdout);
}

static void
on_job_changed (BmapdFlasherJob *job, BmapdFlasherWindow *self)
{
  BmapdFlasherJobState state = bmapd_flasher_job_get_state (job);

  report_job (self, job);
  /* The progress screenshot: the first time bytes are being written and
   * the bar has moved, so that it shows what a person watches. */
  if (self->shot_stage == 0 && state >= BMAPD_FLASHER_JOB_WRITING
      && !bmapd_flasher_job_is_finished (job) && bmapd_flasher_job_get_fraction (job) > 0.0) {
    self->shot_stage = 1;
    take_named_screenshot (self, "progress.png");
  }
  if (all_jobs_finished (self)) {
    gtk_widget_set_visible (self->another_button, TRUE);
    gtk_widget_set_sensitive (self->station_toggle, TRUE);
    adw_preferences_group_set_description (ADW_PREFERENCES_GROUP (self->jobs_group),
                                           _ ("Finished."));
    if (self->shot_stage != 2) {
      self->shot_stage = 2;
      take_named_screenshot (self, "result.png");
    }
    bmapd_flasher_window_check_done (self);
  }
}

/* Rate and time left move between signals too. */
static gboolean
on_tick (gpointer user_data)
{
  BmapdFlasherWindow *self = user_data;

  for (guint i = 0; i < self->jobs->len; i++) {
    if (!bmapd_flasher_job_is_finished (self->jobs->pdata[i]))
      g_signal_emit_by_name (self->jobs->pdata[i], "changed");
  }
  return G_SOURCE_CONTINUE;
}

static void
on_row_cancel (BmapdFlasherJobRow *row, BmapdFlasherWindow *self)
{
  bmapd_flasher_client_cancel (self->client, bmapd_flasher_job_row_get_job (row));
}

static GPtrArray *selected_devices (BmapdFlasherWindow *self);

/* The switches under the devices, as Flash options. */
static BmapdFlasherFlashOptions
chosen_options (BmapdFlasherWindow *self)
{
  guint when_done = adw_combo_row_get_selected (ADW_COMBO_ROW (self->when_done_row));

  return (BmapdFlasherFlashOptions){
    .minimize_writes = gtk_switch_get_active (GTK_SWITCH (self->minimize_switch)),
    .eject = when_done == WHEN_DONE_EJECT,
    .power_off = when_done == WHEN_DONE_POWER_OFF,
  };
}

static void
start_flash (BmapdFlasherWindow *self)
{
  GtkWidget *child;
  g_autoptr (GPtrArray) devices = NULL;
  g_autoptr (GPtrArray) jobs = NULL;
  g_autofree char *title = NULL;
  BmapdFlasherFlashOptions options = chosen_options (self);

  for (guint i = 0; i < self->jobs->len; i++)
    g_signal_handlers_disconnect_by_data (self->jobs->pdata[i], self);
  g_ptr_array_set_size (self->jobs, 0);
  g_hash_table_remove_all (self->reported_state);
  self->shot_stage = 0;
  while ((child = gtk_widget_get_first_child (self->jobs_list)) != NULL)
    gtk_list_box_remove (GTK_LIST_BOX (self->jobs_list), child);

  title = g_strdup_printf (_ ("Flashing %s"), bmapd_flasher_image_get_basename (self->image));
  adw_preferences_group_set_title (ADW_PREFERENCES_GROUP (self->jobs_group), title);
  adw_preferences_group_set_description (ADW_PREFERENCES_GROUP (self->jobs_group),
                                         _ ("The cards can be removed once they say so."));
  gtk_widget_set_visible (self->another_button, FALSE);
  /* The progress page stays in sight until the flash has ended. */
  gtk_widget_set_sensitive (self->station_toggle, FALSE);
  gtk_stack_set_visible_child_name (GTK_STACK (self->stack), "flash");

  devices = selected_devices (self);
  jobs = g_ptr_array_new_with_free_func (g_object_unref);
  for (guint i = 0; i < devices->len; i++) {
    BmapdFlasherDevice *device = devices->pdata[i];
    g_autoptr (BmapdFlasherJob) job = NULL;
    g_autofree char *name = bmapd_flasher_device_dup_display_name (device);
    GtkWidget *row;

    job = bmapd_flasher_job_new (bmapd_flasher_device_get_object_path (device), name,
                                 bmapd_flasher_device_get_node (device));
    bmapd_flasher_job_set_minimize_writes (job, options.minimize_writes);
    g_ptr_array_add (self->jobs, g_object_ref (job));
    g_ptr_array_add (jobs, g_object_ref (job));
    row = bmapd_flasher_job_row_new (job, bmapd_flasher_device_get_icon_name (device));
    g_signal_connect (row, "cancel", G_CALLBACK (on_row_cancel), self);
    gtk_list_box_append (GTK_LIST_BOX (self->jobs_list), row);
    g_signal_connect (job, "changed", G_CALLBACK (on_job_changed), self);
    report_job (self, job);
  }
  if (devices->len > 0)
    bmapd_flasher_client_flash (self->client, self->image, devices, jobs, &options);
  g_hash_table_remove_all (self->selected);
  if (self->tick_id == 0)
    self->tick_id = g_timeout_add_seconds (1, on_tick, self);
}

/* ---- the setup page ---- */

static GPtrArray *
selected_devices (BmapdFlasherWindow *self)
{
  GPtrArray *devices = g_ptr_array_new_with_free_func (g_object_unref);
  GListModel *all = bmapd_flasher_client_get_devices (self->client);
  guint n = g_list_model_get_n_items (all);

  for (guint i = 0; i < n; i++) {
    g_autoptr (BmapdFlasherDevice) device = g_list_model_get_item (all, i);
    if (g_hash_table_contains (self->selected, bmapd_flasher_device_get_object_path (device)))
      g_ptr_array_add (devices, g_steal_pointer (&device));
  }
  return devices;
}

static guint64
image_size (BmapdFlasherWindow *self)
{
  return self->image != NULL ? bmapd_flasher_image_get_image_size (self->image) : 0;
}

static void
update_flash_button (BmapdFlasherWindow *self)
{
  g_autoptr (GPtrArray) devices = self->client != NULL ? selected_devices (self) : NULL;
  gboolean ready = self->image != NULL && devices != NULL && devices->len > 0;

  for (guint i = 0; ready && i < devices->len; i++) {
    g_autofree char *reason
        = bmapd_flasher_device_dup_unusable_reason (devices->pdata[i], image_size (self));
    if (reason != NULL)
      ready = FALSE;
  }
  gtk_widget_set_sensitive (self->flash_button, ready);
}

static void
maybe_flash_now (BmapdFlasherWindow *self)
{
  g_autoptr (GPtrArray) devices = NULL;

  /* The signature's verdict shown before anything is erased. */
  if (!self->flash_when_ready || self->image == NULL || self->client == NULL
      || self->wanted_nodes->len > 0
      || bmapd_flasher_image_get_signature_state (self->image) == BMAPD_FLASHER_SIGNATURE_CHECKING)
    return;
  devices = selected_devices (self);
  self->flash_when_ready = FALSE;
  update_flash_button (self);
  if (!gtk_widget_get_sensitive (self->flash_button)) {
    /* Each refused device has said why (select_wanted_nodes). */
    if (self->close_when_done)
      gtk_window_destroy (GTK_WINDOW (self));
    return;
  }
  if (self->screenshot_dir != NULL) {
    self->start_after_shot = TRUE;
    take_named_screenshot (self, "setup.png");
    return;
  }
  start_flash (self);
}

static void
on_confirm_response (AdwMessageDialog *dialog, const char *response, BmapdFlasherWindow *self)
{
  if (g_strcmp0 (response, "erase") == 0)
    start_flash (self);
}

/* Names every device and what it holds now: the last look before erasing. */
static void
confirm_flash (BmapdFlasherWindow *self)
{
  g_autoptr (GPtrArray) devices = selected_devices (self);
  g_autoptr (GString) body = g_string_new (NULL);
  g_autofree char *heading = NULL;
  AdwMessageDialog *dialog;

  if (devices->len == 1) {
    g_autofree char *name = bmapd_flasher_device_dup_display_name (devices->pdata[0]);
    heading = g_strdup_printf (_ ("Erase %s?"), name);
  } else {
    heading = g_strdup_printf (
        g_dngettext (GETTEXT_PACKAGE, "Erase %u device?", "Erase %u devices?", devices->len),
        devices->len);
  }
  for (guint i = 0; i < devices->len; i++) {
    BmapdFlasherDevice *device = devices->pdata[i];
    g_autofree char *warning = bmapd_flasher_device_dup_erase_warning (device);

    if (body->len > 0)
      g_string_append (body, "\n\n");
    g_string_append (body, warning);
  }
  g_string_append (body, "\n\n");
  /* TRANSLATORS: after what will be lost: "disk.img.xz will be written instead." */
  g_string_append_printf (body, _ ("%s will be written instead."),
                          bmapd_flasher_image_get_basename (self->image));
  /* The last look before erasing: a signature that does not hold is said
   * again (bmapd flashes it all the same; polkit may ask more). */
  if (bmapd_flasher_image_get_signature_state (self->image) == BMAPD_FLASHER_SIGNATURE_UNTRUSTED) {
    const char *why = bmapd_flasher_image_get_signature_distrust (self->image);
    g_string_append (body, "\n\n");
    /* TRANSLATORS: "The signature of its bmap is not trusted: <why>" */
    g_string_append_printf (body, _ ("The signature of its bmap is not trusted: %s%s"), why,
                            g_str_has_suffix (why, ".") ? "" : ".");
  }

  dialog = ADW_MESSAGE_DIALOG (adw_message_dialog_new (GTK_WINDOW (self), heading, body->str));
  adw_message_dialog_add_responses (dialog, "cancel", _ ("_Cancel"), "erase",
                                    _ ("_Erase and Flash"), NULL);
  adw_message_dialog_set_response_appearance (dialog, "erase", ADW_RESPONSE_DESTRUCTIVE);
  adw_message_dialog_set_default_response (dialog, "cancel");
  adw_message_dialog_set_close_response (dialog, "cancel");
  g_signal_connect (dialog, "response", G_CALLBACK (on_confirm_response), self);
  gtk_window_present (GTK_WINDOW (dialog));
}

static void
on_flash_clicked (GtkButton *button, BmapdFlasherWindow *self)
{
  confirm_flash (self);
}

static void
on_device_toggled (GtkCheckButton *check, BmapdFlasherWindow *self)
{
  const char *path = g_object_get_data (G_OBJECT (check), "device-path");

  if (gtk_check_button_get_active (check))
    g_hash_table_add (self->selected, g_strdup (path));
  else
    g_hash_table_remove (self->selected, path);
  update_flash_button (self);
}

static void
sync_device_row (BmapdFlasherDevice *device, GtkWidget *row)
{
  BmapdFlasherWindow *self
      = BMAPD_FLASHER_WINDOW (gtk_widget_get_ancestor (row, BMAPD_FLASHER_TYPE_WINDOW));
  GtkWidget *check = g_object_get_data (G_OBJECT (row), "check");
  GtkWidget *icon = g_object_get_data (G_OBJECT (row), "icon");
  g_autofree char *name = bmapd_flasher_device_dup_display_name (device);
  g_autofree char *contents = bmapd_flasher_device_dup_contents (device);
  g_autofree char *reason = NULL;
  g_autofree char *subtitle = NULL;
  g_autofree char *size = g_format_size (bmapd_flasher_device_get_size (device));
  const char *path = bmapd_flasher_device_get_object_path (device);

  reason = bmapd_flasher_device_dup_unusable_reason (
      device,
      self != NULL && self->image != NULL ? bmapd_flasher_image_get_image_size (self->image) : 0);
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), name);
  if (reason != NULL)
    subtitle = g_strdup_printf ("%s · %s", bmapd_flasher_device_get_node (device), reason);
  else if (contents != NULL && contents[0] != '\0')
    subtitle
        = g_strdup_printf ("%s · %s · %s", bmapd_flasher_device_get_node (device), size, contents);
  else if (contents != NULL)
    subtitle = g_strdup_printf ("%s · %s · %s", bmapd_flasher_device_get_node (device), size,
                                _ ("empty"));
  else
    subtitle = g_strdup_printf ("%s · %s", bmapd_flasher_device_get_node (device), size);
  adw_action_row_set_subtitle (ADW_ACTION_ROW (row), subtitle);
  gtk_image_set_from_icon_name (GTK_IMAGE (icon), bmapd_flasher_device_get_icon_name (device));
  gtk_widget_set_sensitive (row, reason == NULL);
  gtk_accessible_update_property (GTK_ACCESSIBLE (check), GTK_ACCESSIBLE_PROPERTY_LABEL, name, -1);
  if (reason != NULL && self != NULL && g_hash_table_remove (self->selected, path))
    gtk_check_button_set_active (GTK_CHECK_BUTTON (check), FALSE);
  if (self != NULL)
    update_flash_button (self);
}

static GtkWidget *
create_device_row (gpointer item, gpointer user_data)
{
  BmapdFlasherWindow *self = user_data;
  BmapdFlasherDevice *device = item;
  GtkWidget *row = adw_action_row_new ();
  GtkWidget *check = gtk_check_button_new ();
  GtkWidget *icon = gtk_image_new ();
  const char *path = bmapd_flasher_device_get_object_path (device);

  g_object_set_data_full (G_OBJECT (check), "device-path", g_strdup (path), g_free);
  gtk_check_button_set_active (GTK_CHECK_BUTTON (check),
                               g_hash_table_contains (self->selected, path));
  g_signal_connect (check, "toggled", G_CALLBACK (on_device_toggled), self);
  gtk_widget_set_valign (check, GTK_ALIGN_CENTER);
  adw_action_row_add_prefix (ADW_ACTION_ROW (row), check);
  gtk_image_set_icon_size (GTK_IMAGE (icon), GTK_ICON_SIZE_LARGE);
  adw_action_row_add_prefix (ADW_ACTION_ROW (row), icon);
  adw_action_row_set_activatable_widget (ADW_ACTION_ROW (row), check);
  adw_action_row_set_subtitle_lines (ADW_ACTION_ROW (row), 3);
  g_object_set_data (G_OBJECT (row), "check", check);
  g_object_set_data (G_OBJECT (row), "icon", icon);
  g_signal_connect_object (device, "changed", G_CALLBACK (sync_device_row), row, 0);
  if (self->verbose) {
    g_print ("listed %s\n", bmapd_flasher_device_get_node (device));
    fflush (stdout);
  }
  /* The window is its ancestor only once it is added: fill it then too. */
  g_signal_connect_swapped (row, "realize", G_CALLBACK (sync_device_row), device);
  sync_device_row (device, row);
  return row;
}

static gboolean
device_filter_func (gpointer item, gpointer user_data)
{
  BmapdFlasherWindow *self = user_data;
  BmapdFlasherDevice *device = item;

  return !bmapd_flasher_device_get_system (device)
         || gtk_check_button_get_active (GTK_CHECK_BUTTON (self->show_system))
         || g_hash_table_contains (self->selected, bmapd_flasher_device_get_object_path (device));
}

static void
on_show_system_toggled (GtkCheckButton *check, BmapdFlasherWindow *self)
{
  gtk_filter_changed (self->device_filter, GTK_FILTER_CHANGE_DIFFERENT);
}

static void
select_wanted_nodes (BmapdFlasherWindow *self)
{
  for (guint i = 0; i < self->wanted_nodes->len;) {
    BmapdFlasherDevice *device
        = bmapd_flasher_client_find_device_by_node (self->client, self->wanted_nodes->pdata[i]);
    g_autofree char *reason = NULL;
    if (device == NULL) {
      i++;
      continue;
    }
    reason = bmapd_flasher_device_dup_unusable_reason (device, image_size (self));
    if (reason == NULL) {
      g_hash_table_add (self->selected, g_strdup (bmapd_flasher_device_get_object_path (device)));
    } else {
      g_autofree char *text
          = g_strdup_printf ("%s: %s", bmapd_flasher_device_get_node (device), reason);
      show_toast (self, text);
      if (self->verbose) {
        g_print ("unusable %s %s\n", bmapd_flasher_device_get_node (device), reason);
        fflush (stdout);
      }
    }
    g_ptr_array_remove_index (self->wanted_nodes, i);
  }
}

static void
on_devices_changed (GListModel *model, guint position, guint removed, guint added,
                    BmapdFlasherWindow *self)
{
  if (self->wanted_nodes->len > 0) {
    select_wanted_nodes (self);
    gtk_filter_changed (self->device_filter, GTK_FILTER_CHANGE_DIFFERENT);
  }
  update_flash_button (self);
  maybe_flash_now (self);
}

static void
on_client_ready (GObject *source, GAsyncResult *result, gpointer user_data)
{
  BmapdFlasherWindow *self = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapdFlasherClient) client = bmapd_flasher_client_new_finish (result, &error);
  GListModel *devices;
  GtkFilterListModel *filtered;

  if (client == NULL) {
    if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
      adw_status_page_set_description (ADW_STATUS_PAGE (self->status_page_error), error->message);
      gtk_stack_set_visible_child_name (GTK_STACK (self->stack), "error");
    }
    return;
  }
  self->client = g_steal_pointer (&client);
  devices = bmapd_flasher_client_get_devices (self->client);
  select_wanted_nodes (self);
  self->device_filter = GTK_FILTER (gtk_custom_filter_new (device_filter_func, self, NULL));
  filtered = gtk_filter_list_model_new (g_object_ref (devices), self->device_filter);
  gtk_list_box_bind_model (GTK_LIST_BOX (self->devices_list), G_LIST_MODEL (filtered),
                           create_device_row, self, NULL);
  g_object_unref (filtered);
  g_signal_connect_object (devices, "items-changed", G_CALLBACK (on_devices_changed), self, 0);
  update_flash_button (self);
  maybe_flash_now (self);
  maybe_arm_now (self);
}

/* ---- station mode ---- */

static void
station_sync (BmapdFlasherWindow *self)
{
  g_autofree char *counter = NULL;
  g_autofree char *description = NULL;
  gboolean armed = self->station != NULL && bmapd_flasher_station_is_armed (self->station);
  const char *error
      = self->station != NULL ? bmapd_flasher_station_get_error (self->station) : NULL;

  if (self->image != NULL)
    description = g_strdup_printf (_ ("Every card inserted from now on is flashed with %s and "
                                      "verified. Cards already in are left alone."),
                                   bmapd_flasher_image_get_basename (self->image));
  else
    description = g_strdup (_ ("Choose an image first."));
  adw_preferences_group_set_description (ADW_PREFERENCES_GROUP (self->station_group), description);
  counter
      = self->station != NULL ? bmapd_flasher_station_dup_counter (self->station) : g_strdup ("");
  gtk_label_set_text (GTK_LABEL (self->station_counter), counter);
  if (error != NULL)
    gtk_label_set_text (GTK_LABEL (self->station_status), error);
  else if (armed)
    gtk_label_set_text (GTK_LABEL (self->station_status), _ ("Waiting for cards…"));
  else if (self->station_was_armed)
    gtk_label_set_text (GTK_LABEL (self->station_status), _ ("Stopped."));
  else
    gtk_label_set_text (GTK_LABEL (self->station_status), "");
  gtk_button_set_label (GTK_BUTTON (self->station_button), armed ? _ ("_Stop") : _ ("_Start"));
  gtk_widget_remove_css_class (self->station_button,
                               armed ? "suggested-action" : "destructive-action");
  gtk_widget_add_css_class (self->station_button,
                            armed ? "destructive-action" : "suggested-action");
  gtk_widget_set_sensitive (self->station_button,
                            self->client != NULL && (armed || self->image != NULL));
  /* A rule's options are set when it is armed. */
  gtk_widget_set_sensitive (self->station_when_done_row, !armed);
  gtk_widget_set_sensitive (self->station_minimize_row, !armed);
}

static gboolean
station_jobs_finished (BmapdFlasherWindow *self)
{
  GListModel *jobs = bmapd_flasher_station_get_jobs (self->station);
  guint n = g_list_model_get_n_items (jobs);

  for (guint i = 0; i < n; i++) {
    g_autoptr (BmapdFlasherJob) job = g_list_model_get_item (jobs, i);
    if (!bmapd_flasher_job_is_finished (job))
      return FALSE;
  }
  return TRUE;
}

static void
on_station_changed (BmapdFlasherStation *station, BmapdFlasherWindow *self)
{
  gboolean armed = bmapd_flasher_station_is_armed (station);

  station_sync (self);
  if (self->verbose) {
    if (armed && !self->station_was_armed)
      g_print ("armed %s\n", bmapd_flasher_station_get_rule (station));
    g_print ("counter %u %u\n", bmapd_flasher_station_get_flashed (station),
             bmapd_flasher_station_get_failed (station));
    if (bmapd_flasher_station_get_error (station) != NULL)
      g_print ("station-error %s\n", bmapd_flasher_station_get_error (station));
    fflush (stdout);
  }
  if (armed) {
    self->station_was_armed = TRUE;
    return;
  }
  /* The rule is gone (its count reached, or stopped): the station's end. */
  if (self->close_when_done && station_jobs_finished (self)) {
    if (self->screenshot_dir != NULL && self->shot_stage != 2) {
      self->shot_stage = 2;
      self->closing = TRUE;
      take_named_screenshot (self, "station.png");
    } else if (self->pending_shots->len == 0) {
      gtk_window_destroy (GTK_WINDOW (self));
    }
  }
}

static void
on_station_job_changed (BmapdFlasherJob *job, BmapdFlasherWindow *self)
{
  report_job (self, job);
}

static GtkWidget *
create_station_row (gpointer item, gpointer user_data)
{
  BmapdFlasherWindow *self = user_data;
  BmapdFlasherJob *job = item;
  GtkWidget *row = bmapd_flasher_job_row_new (job, "media-flash");

  g_signal_connect (row, "cancel", G_CALLBACK (on_row_cancel), self);
  g_signal_connect_object (job, "changed", G_CALLBACK (on_station_job_changed), self, 0);
  report_job (self, job);
  return row;
}

static void
station_arm (BmapdFlasherWindow *self)
{
  g_autofree char *description = NULL;
  BmapdFlasherFlashOptions choices;
  GVariant *match;

  if (self->station != NULL) {
    g_signal_handlers_disconnect_by_data (self->station, self);
    g_clear_object (&self->station);
  }
  /* The rule's label, and so its cards' jobs': how the station knows them. */
  description
      = g_strdup_printf (_ ("%s (station)"), bmapd_flasher_image_get_basename (self->image));
  self->station = bmapd_flasher_station_new (description);
  self->station_was_armed = FALSE;
  g_signal_connect (self->station, "changed", G_CALLBACK (on_station_changed), self);
  gtk_list_box_bind_model (GTK_LIST_BOX (self->station_list),
                           bmapd_flasher_station_get_jobs (self->station), create_station_row, self,
                           NULL);
  match = self->station_match != NULL ? g_variant_ref (self->station_match)
                                      : g_variant_ref_sink (g_variant_new ("a{sv}", NULL));
  choices = chosen_options (self);
  bmapd_flasher_client_arm_station (self->client, self->image, self->station, match,
                                    self->station_count, &choices);
  g_variant_unref (match);
  station_sync (self);
}

static void
on_station_button_clicked (GtkButton *button, BmapdFlasherWindow *self)
{
  if (self->station != NULL && bmapd_flasher_station_is_armed (self->station))
    bmapd_flasher_client_disarm_station (self->client, self->station);
  else if (self->image != NULL && self->client != NULL)
    station_arm (self);
}

static void
on_station_toggled (GtkToggleButton *toggle, BmapdFlasherWindow *self)
{
  const char *page = gtk_stack_get_visible_child_name (GTK_STACK (self->stack));

  if (gtk_toggle_button_get_active (toggle)) {
    station_sync (self);
    gtk_stack_set_visible_child_name (GTK_STACK (self->stack), "station");
  } else if (g_strcmp0 (page, "station") == 0) {
    gtk_stack_set_visible_child_name (GTK_STACK (self->stack), "setup");
  }
}

static void
maybe_arm_now (BmapdFlasherWindow *self)
{
  if (!self->station_when_ready || self->image == NULL || self->client == NULL)
    return;
  self->station_when_ready = FALSE;
  station_arm (self);
}

/* ---- the image ---- */

/* Rows say "too small" against the image: have them look again. */
static void
refresh_device_rows (BmapdFlasherWindow *self)
{
  GListModel *devices;
  guint n;

  if (self->client == NULL)
    return;
  devices = bmapd_flasher_client_get_devices (self->client);
  n = g_list_model_get_n_items (devices);
  for (guint i = 0; i < n; i++) {
    g_autoptr (GObject) device = g_list_model_get_item (devices, i);
    g_signal_emit_by_name (device, "changed");
  }
}

/* The image's name, its badges (block map, signature) and the
 * signature's icon. */
static void
sync_image_row (BmapdFlasherWindow *self)
{
  g_autofree char *badge = bmapd_flasher_image_dup_badge (self->image);
  g_autofree char *signature = bmapd_flasher_image_dup_signature_badge (self->image);
  g_autofree char *subtitle = NULL;
  /* Markup: the file name and gpg's words may hold '<' and '&'. */
  g_autofree char *escaped_badge = g_markup_escape_text (badge, -1);
  g_autofree char *escaped_signature
      = signature != NULL ? g_markup_escape_text (signature, -1) : NULL;
  g_autofree char *escaped_name
      = g_markup_escape_text (bmapd_flasher_image_get_basename (self->image), -1);
  BmapdFlasherSignatureState state = bmapd_flasher_image_get_signature_state (self->image);

  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->image_row), escaped_name);
  subtitle = escaped_signature != NULL
                 ? g_strdup_printf ("%s\n%s", escaped_badge, escaped_signature)
                 : g_steal_pointer (&escaped_badge);
  adw_action_row_set_subtitle (ADW_ACTION_ROW (self->image_row), subtitle);

  gtk_widget_set_visible (self->signature_icon, state == BMAPD_FLASHER_SIGNATURE_TRUSTED
                                                    || state == BMAPD_FLASHER_SIGNATURE_UNTRUSTED);
  gtk_widget_remove_css_class (self->signature_icon, "success");
  gtk_widget_remove_css_class (self->signature_icon, "warning");
  if (state == BMAPD_FLASHER_SIGNATURE_TRUSTED) {
    gtk_image_set_from_icon_name (GTK_IMAGE (self->signature_icon), "security-high-symbolic");
    gtk_widget_add_css_class (self->signature_icon, "success");
    gtk_accessible_update_property (GTK_ACCESSIBLE (self->signature_icon),
                                    GTK_ACCESSIBLE_PROPERTY_LABEL, _ ("Signed by a trusted key"),
                                    -1);
  } else if (state == BMAPD_FLASHER_SIGNATURE_UNTRUSTED) {
    gtk_image_set_from_icon_name (GTK_IMAGE (self->signature_icon), "dialog-warning-symbolic");
    gtk_widget_add_css_class (self->signature_icon, "warning");
    gtk_accessible_update_property (GTK_ACCESSIBLE (self->signature_icon),
                                    GTK_ACCESSIBLE_PROPERTY_LABEL, _ ("Signature not trusted"), -1);
  }
  gtk_widget_set_tooltip_text (self->signature_icon, signature);
}

static void
on_signature_checked (GObject *source, GAsyncResult *result, gpointer user_data)
{
  BmapdFlasherImage *image = BMAPD_FLASHER_IMAGE (source);
  g_autoptr (GError) error = NULL;
  BmapdFlasherWindow *self;

  bmapd_flasher_image_check_signature_finish (image, result, &error);
  /* The window is gone (its cancellable cancelled): nothing to show. */
  if (g_task_had_error (G_TASK (result))
      && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  self = user_data;
  if (image != self->image)
    return;
  sync_image_row (self);
  if (self->verbose
      && bmapd_flasher_image_get_signature_state (image) != BMAPD_FLASHER_SIGNATURE_NONE) {
    g_autofree char *badge = bmapd_flasher_image_dup_signature_badge (image);
    g_print ("signature %s\n", badge);
    fflush (stdout);
  }
  maybe_flash_now (self);
}

void
bmapd_flasher_window_open_image (BmapdFlasherWindow *self, GFile *file)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = g_file_get_path (file);
  g_autoptr (BmapdFlasherImage) image = NULL;
  g_autofree char *uri = NULL;

  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));

  if (path == NULL) {
    g_autofree char *name = g_file_get_parse_name (file);
    g_autofree char *text = g_strdup_printf (_ ("%s is not a local file"), name);
    show_toast (self, text);
    return;
  }
  image = bmapd_flasher_image_new_for_path (path, &error);
  if (image == NULL) {
    show_toast (self, error->message);
    return;
  }
  g_set_object (&self->image, image);
  sync_image_row (self);
  bmapd_flasher_image_check_signature_async (
      image,
      self->trusted_keys_dir != NULL ? self->trusted_keys_dir : BMAP_TRUSTED_KEYS_DEFAULT_DIR,
      self->cancellable, on_signature_checked, self);
  uri = g_file_get_uri (file);
  {
    GtkRecentData recent = {
      .mime_type = (char *) "application/octet-stream",
      .app_name = (char *) RECENT_APP_NAME,
      .app_exec = (char *) "bmapd-flasher %u",
    };
    gtk_recent_manager_add_full (gtk_recent_manager_get_default (), uri, &recent);
  }
  refresh_device_rows (self);
  update_flash_button (self);
  maybe_flash_now (self);
  if (self->station_group != NULL)
    station_sync (self);
  maybe_arm_now (self);
}

static void
on_chooser_response (GtkNativeDialog *chooser, int response, BmapdFlasherWindow *self)
{
  if (response == GTK_RESPONSE_ACCEPT) {
    g_autoptr (GFile) file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (chooser));
    bmapd_flasher_window_open_image (self, file);
  }
  g_object_unref (chooser);
}

static void
on_choose_clicked (GtkButton *button, BmapdFlasherWindow *self)
{
  GtkFileChooserNative *chooser
      = gtk_file_chooser_native_new (_ ("Choose an Image"), GTK_WINDOW (self),
                                     GTK_FILE_CHOOSER_ACTION_OPEN, _ ("_Open"), _ ("_Cancel"));
  g_autoptr (GtkFileFilter) images = gtk_file_filter_new ();
  g_autoptr (GtkFileFilter) all = gtk_file_filter_new ();
  const char *const patterns[] = {
    "*.img", "*.img.*", "*.raw", "*.iso", "*.wic",   "*.wic.*", "*.gz",  "*.xz",
    "*.bz2", "*.zst",   "*.lz4", "*.tar", "*.tar.*", "*.zip",   "*.lzo", "*.sdcard",
  };

  gtk_file_filter_set_name (images, _ ("Disk images"));
  for (guint i = 0; i < G_N_ELEMENTS (patterns); i++)
    gtk_file_filter_add_pattern (images, patterns[i]);
  gtk_file_filter_set_name (all, _ ("All files"));
  gtk_file_filter_add_pattern (all, "*");
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (chooser), images);
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (chooser), all);
  g_signal_connect (chooser, "response", G_CALLBACK (on_chooser_response), self);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (chooser));
}

static gboolean
on_drop (GtkDropTarget *target, const GValue *value, double x, double y, BmapdFlasherWindow *self)
{
  GSList *files;

  if (!G_VALUE_HOLDS (value, GDK_TYPE_FILE_LIST))
    return FALSE;
  files = g_value_get_boxed (value);
  if (files == NULL)
    return FALSE;
  bmapd_flasher_window_open_image (self, files->data);
  return TRUE;
}

static void
on_recent_activated (GtkListBox *list, GtkListBoxRow *row, BmapdFlasherWindow *self)
{
  const char *uri = g_object_get_data (G_OBJECT (row), "uri");
  g_autoptr (GFile) file = g_file_new_for_uri (uri);
  GtkWidget *popover = gtk_widget_get_ancestor (GTK_WIDGET (list), GTK_TYPE_POPOVER);

  if (popover != NULL)
    gtk_popover_popdown (GTK_POPOVER (popover));
  bmapd_flasher_window_open_image (self, file);
}

/* The recent images, newest first, refreshed each time the menu opens. */
static void
on_recent_show (GtkWidget *popover, GtkListBox *list)
{
  GList *items = gtk_recent_manager_get_items (gtk_recent_manager_get_default ());
  GtkWidget *child;
  guint shown = 0;

  while ((child = gtk_widget_get_first_child (GTK_WIDGET (list))) != NULL)
    gtk_list_box_remove (list, child);
  for (GList *l = items; l != NULL && shown < 8; l = l->next) {
    GtkRecentInfo *info = l->data;
    const char *uri = gtk_recent_info_get_uri (info);
    GtkWidget *row;
    GtkWidget *label;

    if (!gtk_recent_info_is_local (info) || !gtk_recent_info_exists (info)
        || !gtk_recent_info_has_application (info, RECENT_APP_NAME))
      continue;
    label = gtk_label_new (gtk_recent_info_get_display_name (info));
    gtk_label_set_xalign (GTK_LABEL (label), 0);
    gtk_widget_set_margin_start (label, 6);
    gtk_widget_set_margin_end (label, 6);
    gtk_widget_set_margin_top (label, 6);
    gtk_widget_set_margin_bottom (label, 6);
    row = gtk_list_box_row_new ();
    gtk_list_box_row_set_child (GTK_LIST_BOX_ROW (row), label);
    g_object_set_data_full (G_OBJECT (row), "uri", g_strdup (uri), g_free);
    gtk_list_box_append (list, row);
    shown++;
  }
  if (shown == 0) {
    GtkWidget *label = gtk_label_new (_ ("No recent images"));
    gtk_widget_add_css_class (label, "dim-label");
    gtk_widget_set_margin_top (label, 6);
    gtk_widget_set_margin_bottom (label, 6);
    gtk_list_box_append (list, label);
  }
  g_list_free_full (items, (GDestroyNotify) gtk_recent_info_unref);
}

/* ---- closing ---- */

static void
on_close_response (AdwMessageDialog *dialog, const char *response, BmapdFlasherWindow *self)
{
  if (g_strcmp0 (response, "background") == 0) {
    /* bmapd goes on without us: the jobs are not bound to this process. */
    self->closing = TRUE;
    gtk_window_destroy (GTK_WINDOW (self));
  } else if (g_strcmp0 (response, "cancel-flash") == 0) {
    self->closing = TRUE;
    for (guint i = 0; i < self->jobs->len; i++)
      bmapd_flasher_client_cancel (self->client, self->jobs->pdata[i]);
    gtk_widget_set_sensitive (GTK_WIDGET (self), FALSE);
    bmapd_flasher_window_check_done (self);
  }
}

static gboolean
on_close_request (GtkWindow *window, BmapdFlasherWindow *self)
{
  AdwMessageDialog *dialog;

  if (self->closing || self->jobs->len == 0 || all_jobs_finished (self))
    return FALSE;
  dialog = ADW_MESSAGE_DIALOG (
      adw_message_dialog_new (GTK_WINDOW (self), _ ("Flashing Is Not Finished"),
                              _ ("The flash can go on in the background: the cards are done when "
                                 "bmapd says so (bmapctl jobs). Canceling leaves a partial image "
                                 "on them.")));
  adw_message_dialog_add_responses (dialog, "stay", _ ("_Keep Window Open"), "cancel-flash",
                                    _ ("_Cancel the Flash"), "background",
                                    _ ("Go On in the _Background"), NULL);
  adw_message_dialog_set_response_appearance (dialog, "cancel-flash", ADW_RESPONSE_DESTRUCTIVE);
  adw_message_dialog_set_response_appearance (dialog, "background", ADW_RESPONSE_SUGGESTED);
  adw_message_dialog_set_default_response (dialog, "background");
  adw_message_dialog_set_close_response (dialog, "stay");
  g_signal_connect (dialog, "response", G_CALLBACK (on_close_response), self);
  gtk_window_present (GTK_WINDOW (dialog));
  return TRUE;
}

static void
on_another_clicked (GtkButton *button, BmapdFlasherWindow *self)
{
  /* Same image; the person only picks the next card. */
  gtk_stack_set_visible_child_name (GTK_STACK (self->stack), "setup");
  refresh_device_rows (self);
  update_flash_button (self);
}

/* ---- building the window ---- */

static GtkWidget *
clamped_page (GtkWidget *content)
{
  GtkWidget *scrolled = gtk_scrolled_window_new ();
  GtkWidget *clamp = adw_clamp_new ();

  gtk_widget_set_margin_start (content, 12);
  gtk_widget_set_margin_end (content, 12);
  gtk_widget_set_margin_top (content, 24);
  gtk_widget_set_margin_bottom (content, 24);
  adw_clamp_set_maximum_size (ADW_CLAMP (clamp), 640);
  adw_clamp_set_child (ADW_CLAMP (clamp), content);
  gtk_scrolled_window_set_policy (GTK_SCROLLED_WINDOW (scrolled), GTK_POLICY_NEVER,
                                  GTK_POLICY_AUTOMATIC);
  gtk_scrolled_window_set_child (GTK_SCROLLED_WINDOW (scrolled), clamp);
  gtk_widget_set_vexpand (scrolled, TRUE);
  return scrolled;
}

/* The options' row says what is chosen while folded. */
static void
sync_options_summary (BmapdFlasherWindow *self)
{
  BmapdFlasherFlashOptions options = chosen_options (self);
  const char *write = options.minimize_writes ? _ ("only what differs is written")
                                              : _ ("every mapped block is written");
  const char *after = options.power_off ? _ ("powered off when done")
                      : options.eject   ? _ ("ejected when done")
                                        : _ ("left in place when done");
  g_autofree char *summary = g_strdup_printf ("%s · %s", write, after);

  adw_expander_row_set_subtitle (ADW_EXPANDER_ROW (self->options_row), summary);
}

static void
on_option_changed (GObject *object, GParamSpec *pspec, BmapdFlasherWindow *self)
{
  sync_options_summary (self);
}

static GtkWidget *
build_options_group (BmapdFlasherWindow *self)
{
  GtkWidget *group = adw_preferences_group_new ();
  GtkWidget *minimize_row = adw_action_row_new ();
  const char *const when_done[] = {
    [WHEN_DONE_LEAVE] = _ ("Leave it in place"),
    [WHEN_DONE_EJECT] = _ ("Eject it"),
    [WHEN_DONE_POWER_OFF] = _ ("Power it off"),
    NULL,
  };
  g_autoptr (GtkStringList) choices = gtk_string_list_new (when_done);

  /* Folded: the three steps fit the window; the summary says the rest. */
  self->options_row = adw_expander_row_new ();
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->options_row), _ ("_Options"));
  adw_preferences_row_set_use_underline (ADW_PREFERENCES_ROW (self->options_row), TRUE);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->options_row), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _ ("Options"), -1);
  adw_preferences_group_add (ADW_PREFERENCES_GROUP (group), self->options_row);

  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (minimize_row),
                                 _ ("_Write only what differs"));
  adw_preferences_row_set_use_underline (ADW_PREFERENCES_ROW (minimize_row), TRUE);
  adw_action_row_set_subtitle (
      ADW_ACTION_ROW (minimize_row),
      _ ("Reads the card first: quicker when it holds this image or an earlier one"));
  self->minimize_switch = gtk_switch_new ();
  gtk_widget_set_valign (self->minimize_switch, GTK_ALIGN_CENTER);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->minimize_switch),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, _ ("Write only what differs"), -1);
  adw_action_row_add_suffix (ADW_ACTION_ROW (minimize_row), self->minimize_switch);
  adw_action_row_set_activatable_widget (ADW_ACTION_ROW (minimize_row), self->minimize_switch);
  adw_expander_row_add_row (ADW_EXPANDER_ROW (self->options_row), minimize_row);

  self->when_done_row = adw_combo_row_new ();
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->when_done_row),
                                 _ ("When the card is _done"));
  adw_preferences_row_set_use_underline (ADW_PREFERENCES_ROW (self->when_done_row), TRUE);
  adw_action_row_set_subtitle (ADW_ACTION_ROW (self->when_done_row),
                               _ ("Ejected or powered off, it can be pulled at once"));
  adw_combo_row_set_model (ADW_COMBO_ROW (self->when_done_row), G_LIST_MODEL (choices));
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->when_done_row),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, _ ("When the card is done"), -1);
  adw_expander_row_add_row (ADW_EXPANDER_ROW (self->options_row), self->when_done_row);

  g_signal_connect (self->minimize_switch, "notify::active", G_CALLBACK (on_option_changed), self);
  g_signal_connect (self->when_done_row, "notify::selected", G_CALLBACK (on_option_changed), self);
  sync_options_summary (self);
  return group;
}

static GtkWidget *
build_setup_page (BmapdFlasherWindow *self)
{
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 24);
  GtkWidget *image_group = adw_preferences_group_new ();
  GtkWidget *devices_group = adw_preferences_group_new ();
  GtkWidget *choose = gtk_button_new_with_mnemonic (_ ("_Choose…"));
  GtkWidget *recent = gtk_menu_button_new ();
  GtkWidget *recent_popover = gtk_popover_new ();
  GtkWidget *recent_list = gtk_list_box_new ();
  GtkWidget *image_icon = gtk_image_new_from_icon_name ("media-optical");
  GtkWidget *placeholder = gtk_label_new (_ ("Insert an SD card or a USB stick"));
  GtkWidget *page;

  adw_preferences_group_set_title (ADW_PREFERENCES_GROUP (image_group), _ ("1. Image"));
  self->image_row = adw_action_row_new ();
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->image_row), _ ("No image chosen"));
  adw_action_row_set_subtitle (ADW_ACTION_ROW (self->image_row),
                               _ ("Choose a disk image, or drop one on this window"));
  gtk_image_set_icon_size (GTK_IMAGE (image_icon), GTK_ICON_SIZE_LARGE);
  adw_action_row_add_prefix (ADW_ACTION_ROW (self->image_row), image_icon);
  adw_action_row_set_subtitle_lines (ADW_ACTION_ROW (self->image_row), 0);
  /* The signature's verdict at a glance; the subtitle says it in words. */
  self->signature_icon = gtk_image_new ();
  gtk_widget_set_valign (self->signature_icon, GTK_ALIGN_CENTER);
  gtk_widget_set_visible (self->signature_icon, FALSE);
  adw_action_row_add_suffix (ADW_ACTION_ROW (self->image_row), self->signature_icon);
  gtk_widget_set_valign (choose, GTK_ALIGN_CENTER);
  g_signal_connect (choose, "clicked", G_CALLBACK (on_choose_clicked), self);
  adw_action_row_add_suffix (ADW_ACTION_ROW (self->image_row), choose);
  gtk_menu_button_set_icon_name (GTK_MENU_BUTTON (recent), "document-open-recent-symbolic");
  gtk_widget_set_tooltip_text (recent, _ ("Recent images"));
  gtk_accessible_update_property (GTK_ACCESSIBLE (recent), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _ ("Recent images"), -1);
  gtk_widget_set_valign (recent, GTK_ALIGN_CENTER);
  gtk_list_box_set_selection_mode (GTK_LIST_BOX (recent_list), GTK_SELECTION_NONE);
  g_signal_connect (recent_list, "row-activated", G_CALLBACK (on_recent_activated), self);
  gtk_popover_set_child (GTK_POPOVER (recent_popover), recent_list);
  g_signal_connect (recent_popover, "show", G_CALLBACK (on_recent_show), recent_list);
  gtk_menu_button_set_popover (GTK_MENU_BUTTON (recent), recent_popover);
  adw_action_row_add_suffix (ADW_ACTION_ROW (self->image_row), recent);
  adw_preferences_group_add (ADW_PREFERENCES_GROUP (image_group), self->image_row);
  gtk_box_append (GTK_BOX (box), image_group);

  adw_preferences_group_set_title (ADW_PREFERENCES_GROUP (devices_group), _ ("2. Devices"));
  adw_preferences_group_set_description (ADW_PREFERENCES_GROUP (devices_group),
                                         _ ("Tick one or more cards to write the image to."));
  self->show_system = gtk_check_button_new_with_mnemonic (_ ("Show _system disks"));
  g_signal_connect (self->show_system, "toggled", G_CALLBACK (on_show_system_toggled), self);
  adw_preferences_group_set_header_suffix (ADW_PREFERENCES_GROUP (devices_group),
                                           self->show_system);
  self->devices_list = gtk_list_box_new ();
  gtk_list_box_set_selection_mode (GTK_LIST_BOX (self->devices_list), GTK_SELECTION_NONE);
  gtk_widget_add_css_class (self->devices_list, "boxed-list");
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->devices_list),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, _ ("Devices"), -1);
  gtk_widget_add_css_class (placeholder, "dim-label");
  gtk_widget_set_margin_top (placeholder, 18);
  gtk_widget_set_margin_bottom (placeholder, 18);
  gtk_list_box_set_placeholder (GTK_LIST_BOX (self->devices_list), placeholder);
  adw_preferences_group_add (ADW_PREFERENCES_GROUP (devices_group), self->devices_list);
  gtk_box_append (GTK_BOX (box), devices_group);
  gtk_box_append (GTK_BOX (box), build_options_group (self));

  self->flash_button = gtk_button_new_with_mnemonic (_ ("_Flash"));
  gtk_widget_add_css_class (self->flash_button, "pill");
  gtk_widget_add_css_class (self->flash_button, "suggested-action");
  gtk_widget_set_halign (self->flash_button, GTK_ALIGN_CENTER);
  gtk_widget_set_margin_top (self->flash_button, 12);
  gtk_widget_set_margin_bottom (self->flash_button, 12);
  gtk_widget_set_sensitive (self->flash_button, FALSE);
  g_signal_connect (self->flash_button, "clicked", G_CALLBACK (on_flash_clicked), self);
  /* 3.: always in sight, however many devices the list holds. */
  page = gtk_box_new (GTK_ORIENTATION_VERTICAL, 0);
  gtk_box_append (GTK_BOX (page), clamped_page (box));
  gtk_box_append (GTK_BOX (page), gtk_separator_new (GTK_ORIENTATION_HORIZONTAL));
  gtk_box_append (GTK_BOX (page), self->flash_button);
  return page;
}

static GtkWidget *
build_flash_page (BmapdFlasherWindow *self)
{
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 24);

  self->jobs_group = adw_preferences_group_new ();
  self->jobs_list = gtk_list_box_new ();
  gtk_list_box_set_selection_mode (GTK_LIST_BOX (self->jobs_list), GTK_SELECTION_NONE);
  gtk_widget_add_css_class (self->jobs_list, "boxed-list");
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->jobs_list), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _ ("Flashing"), -1);
  adw_preferences_group_add (ADW_PREFERENCES_GROUP (self->jobs_group), self->jobs_list);
  gtk_box_append (GTK_BOX (box), self->jobs_group);

  self->another_button = gtk_button_new_with_mnemonic (_ ("Flash _Another Card"));
  gtk_widget_add_css_class (self->another_button, "pill");
  gtk_widget_set_halign (self->another_button, GTK_ALIGN_CENTER);
  g_signal_connect (self->another_button, "clicked", G_CALLBACK (on_another_clicked), self);
  gtk_box_append (GTK_BOX (box), self->another_button);
  return clamped_page (box);
}

static GtkWidget *
build_station_page (BmapdFlasherWindow *self)
{
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 18);

  self->station_group = adw_preferences_group_new ();
  adw_preferences_group_set_title (ADW_PREFERENCES_GROUP (self->station_group), _ ("Station Mode"));
  gtk_box_append (GTK_BOX (box), self->station_group);

  /* The setup page's choice, shown here too: one setting for both. */
  self->station_when_done_row = adw_combo_row_new ();
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->station_when_done_row),
                                 _ ("When a card is _done"));
  adw_preferences_row_set_use_underline (ADW_PREFERENCES_ROW (self->station_when_done_row), TRUE);
  adw_combo_row_set_model (ADW_COMBO_ROW (self->station_when_done_row),
                           adw_combo_row_get_model (ADW_COMBO_ROW (self->when_done_row)));
  g_object_bind_property (self->when_done_row, "selected", self->station_when_done_row, "selected",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->station_when_done_row),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, _ ("When a card is done"), -1);
  adw_preferences_group_add (ADW_PREFERENCES_GROUP (self->station_group),
                             self->station_when_done_row);

  /* A lab station refreshing boards: the setup page's switch, here too. */
  {
    GtkWidget *station_switch = gtk_switch_new ();

    self->station_minimize_row = adw_action_row_new ();
    adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->station_minimize_row),
                                   _ ("Write only what _differs"));
    adw_preferences_row_set_use_underline (ADW_PREFERENCES_ROW (self->station_minimize_row), TRUE);
    gtk_widget_set_valign (station_switch, GTK_ALIGN_CENTER);
    gtk_accessible_update_property (GTK_ACCESSIBLE (station_switch), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                    _ ("Write only what differs"), -1);
    g_object_bind_property (self->minimize_switch, "active", station_switch, "active",
                            G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
    adw_action_row_add_suffix (ADW_ACTION_ROW (self->station_minimize_row), station_switch);
    adw_action_row_set_activatable_widget (ADW_ACTION_ROW (self->station_minimize_row),
                                           station_switch);
    adw_preferences_group_add (ADW_PREFERENCES_GROUP (self->station_group),
                               self->station_minimize_row);
  }

  self->station_counter = gtk_label_new (NULL);
  gtk_widget_add_css_class (self->station_counter, "title-1");
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->station_counter),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, _ ("Cards flashed and failed"),
                                  -1);
  gtk_box_append (GTK_BOX (box), self->station_counter);
  self->station_status = gtk_label_new (NULL);
  gtk_label_set_wrap (GTK_LABEL (self->station_status), TRUE);
  gtk_widget_add_css_class (self->station_status, "dim-label");
  gtk_box_append (GTK_BOX (box), self->station_status);

  self->station_button = gtk_button_new_with_mnemonic (_ ("_Start"));
  gtk_widget_add_css_class (self->station_button, "pill");
  gtk_widget_set_halign (self->station_button, GTK_ALIGN_CENTER);
  g_signal_connect (self->station_button, "clicked", G_CALLBACK (on_station_button_clicked), self);
  gtk_box_append (GTK_BOX (box), self->station_button);

  self->station_list = gtk_list_box_new ();
  gtk_list_box_set_selection_mode (GTK_LIST_BOX (self->station_list), GTK_SELECTION_NONE);
  gtk_widget_add_css_class (self->station_list, "boxed-list");
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->station_list),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, _ ("Cards"), -1);
  gtk_box_append (GTK_BOX (box), self->station_list);
  return clamped_page (box);
}

static void
bmapd_flasher_window_class_init (BmapdFlasherWindowClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = bmapd_flasher_window_dispose;
}

static void
bmapd_flasher_window_init (BmapdFlasherWindow *self)
{
  GtkWidget *content = gtk_box_new (GTK_ORIENTATION_VERTICAL, 0);
  GtkWidget *header = adw_header_bar_new ();
  GtkDropTarget *drop = gtk_drop_target_new (GDK_TYPE_FILE_LIST, GDK_ACTION_COPY);

  self->cancellable = g_cancellable_new ();
  self->selected = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->wanted_nodes = g_ptr_array_new_with_free_func (g_free);
  self->jobs = g_ptr_array_new_with_free_func (g_object_unref);
  self->reported_state = g_hash_table_new (NULL, NULL);
  self->pending_shots = g_ptr_array_new_with_free_func (g_free);

  gtk_window_set_title (GTK_WINDOW (self), _ ("Image Flasher"));
  gtk_window_set_default_size (GTK_WINDOW (self), 640, 700);
  adw_header_bar_set_title_widget (ADW_HEADER_BAR (header),
                                   adw_window_title_new (_ ("Image Flasher"), _ ("through bmapd")));
  self->station_toggle = gtk_toggle_button_new ();
  gtk_button_set_icon_name (GTK_BUTTON (self->station_toggle), "media-playlist-repeat-symbolic");
  gtk_widget_set_tooltip_text (self->station_toggle,
                               _ ("Station mode: flash every card that is inserted"));
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->station_toggle),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, _ ("Station mode"), -1);
  g_signal_connect (self->station_toggle, "toggled", G_CALLBACK (on_station_toggled), self);
  adw_header_bar_pack_start (ADW_HEADER_BAR (header), self->station_toggle);
  gtk_box_append (GTK_BOX (content), header);

  self->stack = gtk_stack_new ();
  gtk_stack_set_transition_type (GTK_STACK (self->stack), GTK_STACK_TRANSITION_TYPE_CROSSFADE);
  gtk_stack_add_named (GTK_STACK (self->stack), build_setup_page (self), "setup");
  gtk_stack_add_named (GTK_STACK (self->stack), build_flash_page (self), "flash");
  gtk_stack_add_named (GTK_STACK (self->stack), build_station_page (self), "station");
  self->status_page_error = adw_status_page_new ();
  adw_status_page_set_icon_name (ADW_STATUS_PAGE (self->status_page_error),
                                 "dialog-error-symbolic");
  adw_status_page_set_title (ADW_STATUS_PAGE (self->status_page_error), _ ("bmapd Is Not There"));
  gtk_stack_add_named (GTK_STACK (self->stack), self->status_page_error, "error");
  self->toasts = adw_toast_overlay_new ();
  adw_toast_overlay_set_child (ADW_TOAST_OVERLAY (self->toasts), self->stack);
  gtk_box_append (GTK_BOX (content), self->toasts);
  adw_application_window_set_content (ADW_APPLICATION_WINDOW (self), content);

  g_signal_connect (drop, "drop", G_CALLBACK (on_drop), self);
  gtk_widget_add_controller (GTK_WIDGET (self), GTK_EVENT_CONTROLLER (drop));
  g_signal_connect (self, "close-request", G_CALLBACK (on_close_request), self);

  bmapd_flasher_client_new (self->cancellable, on_client_ready, self);
}

BmapdFlasherWindow *
bmapd_flasher_window_new (GtkApplication *application)
{
  return g_object_new (BMAPD_FLASHER_TYPE_WINDOW, "application", application, NULL);
}

void
bmapd_flasher_window_select_node (BmapdFlasherWindow *self, const char *node)
{
  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));
  g_ptr_array_add (self->wanted_nodes, g_strdup (node));
  if (self->client != NULL)
    on_devices_changed (NULL, 0, 0, 0, self);
}

void
bmapd_flasher_window_flash_when_ready (BmapdFlasherWindow *self)
{
  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));
  self->flash_when_ready = TRUE;
  maybe_flash_now (self);
}

void
bmapd_flasher_window_set_screenshot_dir (BmapdFlasherWindow *self, const char *dir)
{
  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));
  g_free (self->screenshot_dir);
  self->screenshot_dir = g_strdup (dir);
  /* A screenshot taken mid-animation shows colours between two states (a
   * button fading from red to blue): pictures of what is, not of how it
   * got there. */
  g_object_set (gtk_widget_get_settings (GTK_WIDGET (self)), "gtk-enable-animations", FALSE, NULL);
}

void
bmapd_flasher_window_set_verbose (BmapdFlasherWindow *self, gboolean verbose)
{
  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));
  self->verbose = verbose;
}

void
bmapd_flasher_window_set_close_when_done (BmapdFlasherWindow *self, gboolean close)
{
  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));
  self->close_when_done = close;
}

void
bmapd_flasher_window_start_station (BmapdFlasherWindow *self, GVariant *match, guint count)
{
  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));

  g_clear_pointer (&self->station_match, g_variant_unref);
  self->station_match = match != NULL ? g_variant_ref_sink (match) : NULL;
  self->station_count = count;
  self->station_when_ready = TRUE;
  gtk_toggle_button_set_active (GTK_TOGGLE_BUTTON (self->station_toggle), TRUE);
  maybe_arm_now (self);
}

void
bmapd_flasher_window_cancel_all (BmapdFlasherWindow *self)
{
  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));

  for (guint i = 0; i < self->jobs->len; i++)
    bmapd_flasher_client_cancel (self->client, self->jobs->pdata[i]);
  if (self->station != NULL) {
    GListModel *jobs = bmapd_flasher_station_get_jobs (self->station);
    guint n = g_list_model_get_n_items (jobs);

    for (guint i = 0; i < n; i++) {
      g_autoptr (BmapdFlasherJob) job = g_list_model_get_item (jobs, i);
      bmapd_flasher_client_cancel (self->client, job);
    }
  }
}

void
bmapd_flasher_window_set_trusted_keys_dir (BmapdFlasherWindow *self, const char *dir)
{
  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));
  g_free (self->trusted_keys_dir);
  self->trusted_keys_dir = g_strdup (dir);
}

void
bmapd_flasher_window_set_options (BmapdFlasherWindow *self, gboolean minimize_writes,
                                  const char *when_done)
{
  g_return_if_fail (BMAPD_FLASHER_IS_WINDOW (self));

  /* Chosen from the command line: shown unfolded. */
  adw_expander_row_set_expanded (ADW_EXPANDER_ROW (self->options_row), TRUE);
  gtk_switch_set_active (GTK_SWITCH (self->minimize_switch), minimize_writes);
  if (g_strcmp0 (when_done, "eject") == 0)
    adw_combo_row_set_selected (ADW_COMBO_ROW (self->when_done_row), WHEN_DONE_EJECT);
  else if (g_strcmp0 (when_done, "power-off") == 0)
    adw_combo_row_set_selected (ADW_COMBO_ROW (self->when_done_row), WHEN_DONE_POWER_OFF);
  else
    adw_combo_row_set_selected (ADW_COMBO_ROW (self->when_done_row), WHEN_DONE_LEAVE);
}
