/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <gtk/gtk.h>

#include "bmapd-flasher-job.h"

G_BEGIN_DECLS

/* One device's flash on the progress page: its name, a bar for the whole
 * job, the phase with rate and time left, Cancel; then the result. */
#define BMAPD_FLASHER_TYPE_JOB_ROW (bmapd_flasher_job_row_get_type ())
G_DECLARE_FINAL_TYPE (BmapdFlasherJobRow, bmapd_flasher_job_row, BMAPD_FLASHER, JOB_ROW,
                      GtkListBoxRow)

GtkWidget *bmapd_flasher_job_row_new (BmapdFlasherJob *job, const char *icon_name);
BmapdFlasherJob *bmapd_flasher_job_row_get_job (BmapdFlasherJobRow *self);

G_END_DECLS
