/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <adwaita.h>
#include <glib/gi18n.h>

#include "bmapd-flasher-job-row.h"

struct _BmapdFlasherJobRow {
  GtkListBoxRow parent_instance;
  BmapdFlasherJob *job;
  GtkWidget *icon;
  GtkWidget *title;
  GtkWidget *status;
  GtkWidget *details;
  GtkWidget *progress;
  GtkWidget *cancel;
  GtkWidget *result_icon;
};

G_DEFINE_TYPE (BmapdFlasherJobRow, bmapd_flasher_job_row, GTK_TYPE_LIST_BOX_ROW)

enum { SIGNAL_CANCEL, N_SIGNALS };
static guint signals[N_SIGNALS];

static void
bmapd_flasher_job_row_dispose (GObject *object)
{
  BmapdFlasherJobRow *self = BMAPD_FLASHER_JOB_ROW (object);

  if (self->job != NULL)
    g_signal_handlers_disconnect_by_data (self->job, self);
  g_clear_object (&self->job);
  G_OBJECT_CLASS (bmapd_flasher_job_row_parent_class)->dispose (object);
}

static void
bmapd_flasher_job_row_class_init (BmapdFlasherJobRowClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = bmapd_flasher_job_row_dispose;
  /* Cancel was pressed; the window asks the daemon. */
  signals[SIGNAL_CANCEL] = g_signal_new ("cancel", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                                         NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
on_cancel_clicked (GtkButton *button, BmapdFlasherJobRow *self)
{
  gtk_widget_set_sensitive (self->cancel, FALSE);
  g_signal_emit (self, signals[SIGNAL_CANCEL], 0);
}

static void
bmapd_flasher_job_row_init (BmapdFlasherJobRow *self)
{
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 6);
  GtkWidget *top = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 12);
  GtkWidget *texts = gtk_box_new (GTK_ORIENTATION_VERTICAL, 2);

  gtk_list_box_row_set_activatable (GTK_LIST_BOX_ROW (self), FALSE);
  gtk_widget_set_margin_start (box, 12);
  gtk_widget_set_margin_end (box, 12);
  gtk_widget_set_margin_top (box, 12);
  gtk_widget_set_margin_bottom (box, 12);

  self->icon = gtk_image_new ();
  gtk_image_set_icon_size (GTK_IMAGE (self->icon), GTK_ICON_SIZE_LARGE);
  gtk_box_append (GTK_BOX (top), self->icon);

  self->title = gtk_label_new (NULL);
  gtk_label_set_xalign (GTK_LABEL (self->title), 0);
  gtk_label_set_ellipsize (GTK_LABEL (self->title), PANGO_ELLIPSIZE_END);
  gtk_widget_add_css_class (self->title, "heading");
  gtk_box_append (GTK_BOX (texts), self->title);

  self->status = gtk_label_new (NULL);
  gtk_label_set_xalign (GTK_LABEL (self->status), 0);
  gtk_label_set_wrap (GTK_LABEL (self->status), TRUE);
  gtk_widget_add_css_class (self->status, "dim-label");
  gtk_box_append (GTK_BOX (texts), self->status);

  /* What the flash's options did (bmapd's Result), under the result. */
  self->details = gtk_label_new (NULL);
  gtk_label_set_xalign (GTK_LABEL (self->details), 0);
  gtk_label_set_wrap (GTK_LABEL (self->details), TRUE);
  gtk_widget_add_css_class (self->details, "dim-label");
  gtk_widget_add_css_class (self->details, "caption");
  gtk_widget_set_visible (self->details, FALSE);
  gtk_box_append (GTK_BOX (texts), self->details);
  gtk_widget_set_hexpand (texts, TRUE);
  gtk_box_append (GTK_BOX (top), texts);

  self->result_icon = gtk_image_new ();
  gtk_image_set_icon_size (GTK_IMAGE (self->result_icon), GTK_ICON_SIZE_LARGE);
  gtk_widget_set_visible (self->result_icon, FALSE);
  gtk_box_append (GTK_BOX (top), self->result_icon);

  self->cancel = gtk_button_new_with_mnemonic (_ ("_Cancel"));
  gtk_widget_set_valign (self->cancel, GTK_ALIGN_CENTER);
  g_signal_connect (self->cancel, "clicked", G_CALLBACK (on_cancel_clicked), self);
  gtk_box_append (GTK_BOX (top), self->cancel);
  gtk_box_append (GTK_BOX (box), top);

  self->progress = gtk_progress_bar_new ();
  gtk_box_append (GTK_BOX (box), self->progress);

  gtk_list_box_row_set_child (GTK_LIST_BOX_ROW (self), box);
}

static void
bmapd_flasher_job_row_sync (BmapdFlasherJobRow *self)
{
  BmapdFlasherJobState state = bmapd_flasher_job_get_state (self->job);
  g_autofree char *status = NULL;
  g_autofree char *result = bmapd_flasher_job_dup_result (self->job);
  double fraction = bmapd_flasher_job_get_fraction (self->job);
  g_autofree char *title = NULL;

  title = g_strdup_printf ("%s (%s)", bmapd_flasher_job_get_device_name (self->job),
                           bmapd_flasher_job_get_device_node (self->job));
  gtk_label_set_text (GTK_LABEL (self->title), title);

  if (result != NULL) {
    gboolean done = state == BMAPD_FLASHER_JOB_DONE;
    g_autofree char *details = bmapd_flasher_job_dup_details (self->job);

    gtk_label_set_text (GTK_LABEL (self->status), result);
    gtk_label_set_text (GTK_LABEL (self->details), details);
    gtk_widget_set_visible (self->details, details != NULL);
    gtk_widget_set_visible (self->cancel, FALSE);
    gtk_widget_set_visible (self->progress, FALSE);
    gtk_image_set_from_icon_name (GTK_IMAGE (self->result_icon),
                                  done ? "emblem-ok-symbolic" : "dialog-warning-symbolic");
    gtk_widget_remove_css_class (self->result_icon, done ? "error" : "success");
    gtk_widget_add_css_class (self->result_icon, done ? "success" : "error");
    gtk_widget_set_visible (self->result_icon, TRUE);
    gtk_accessible_update_property (GTK_ACCESSIBLE (self->result_icon),
                                    GTK_ACCESSIBLE_PROPERTY_LABEL,
                                    done ? _ ("Flashed") : _ ("Not flashed"), -1);
    return;
  }
  status = bmapd_flasher_job_dup_status (self->job, g_get_real_time ());
  gtk_label_set_text (GTK_LABEL (self->status), status);
  /* Cancel works from the Flash call on: before the job has a path, the
   * client remembers it. */
  gtk_widget_set_sensitive (self->cancel,
                            state >= BMAPD_FLASHER_JOB_AUTHORIZING
                                && !bmapd_flasher_job_get_cancel_requested (self->job));
  if (state < BMAPD_FLASHER_JOB_WRITING && fraction == 0.0) {
    gtk_progress_bar_pulse (GTK_PROGRESS_BAR (self->progress));
  } else {
    g_autofree char *percent = g_strdup_printf ("%.0f %%", fraction * 100.0);
    gtk_progress_bar_set_fraction (GTK_PROGRESS_BAR (self->progress), fraction);
    gtk_progress_bar_set_text (GTK_PROGRESS_BAR (self->progress), percent);
    gtk_progress_bar_set_show_text (GTK_PROGRESS_BAR (self->progress), TRUE);
  }
}

static void
on_job_changed (BmapdFlasherJob *job, BmapdFlasherJobRow *self)
{
  bmapd_flasher_job_row_sync (self);
}

GtkWidget *
bmapd_flasher_job_row_new (BmapdFlasherJob *job, const char *icon_name)
{
  BmapdFlasherJobRow *self = g_object_new (BMAPD_FLASHER_TYPE_JOB_ROW, NULL);
  g_autofree char *cancel_label = NULL;

  self->job = g_object_ref (job);
  gtk_image_set_from_icon_name (GTK_IMAGE (self->icon), icon_name);
  cancel_label
      = g_strdup_printf (_ ("Cancel flashing %s"), bmapd_flasher_job_get_device_node (job));
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->cancel), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  cancel_label, -1);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->progress), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _ ("Progress"), -1);
  g_signal_connect (job, "changed", G_CALLBACK (on_job_changed), self);
  bmapd_flasher_job_row_sync (self);
  return GTK_WIDGET (self);
}

BmapdFlasherJob *
bmapd_flasher_job_row_get_job (BmapdFlasherJobRow *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_JOB_ROW (self), NULL);
  return self->job;
}
