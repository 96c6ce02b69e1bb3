/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  BMAP_PHASE_PREPARING,
  BMAP_PHASE_WRITING, /* also "hashing" for create */
  BMAP_PHASE_SYNCING,
  BMAP_PHASE_VERIFYING,
} BmapPhase;

const char *bmap_phase_to_string (BmapPhase phase);

typedef struct {
  BmapPhase phase;
  guint64 bytes_done;
  guint64 bytes_total; /* 0 when not known (a compressed pipe without a bmap) */
  guint64 rate;        /* bytes per second over the last few seconds */
  /* Writing only what differs (minimize-writes): bytes compared with what
   * the target held, and bytes actually written. Without it bytes_checked
   * stays 0 and bytes_written counts every byte written. */
  guint64 bytes_checked;
  guint64 bytes_written;
} BmapProgress;

/* Called from the thread that runs the operation, at most about ten times
 * a second and at every phase change. It must not block. */
typedef void (*BmapProgressFunc) (const BmapProgress *progress, gpointer user_data);

/* Bytes per second over a sliding window of a few seconds. */
typedef struct {
  gint64 times[16];
  guint64 bytes[16];
  guint head;
  guint n;
} BmapRateMeter;

void bmap_rate_meter_init (BmapRateMeter *meter);
/* Records that @bytes_done were done at @now_us (monotonic). */
void bmap_rate_meter_add (BmapRateMeter *meter, gint64 now_us, guint64 bytes_done);
guint64 bmap_rate_meter_get_rate (const BmapRateMeter *meter);

/* Rate-limits and dispatches progress reports for an engine operation. */
typedef struct {
  BmapProgressFunc func;
  gpointer user_data;
  BmapRateMeter meter;
  BmapProgress last;
  gint64 last_report_us;
} BmapProgressReporter;

void bmap_progress_reporter_init (BmapProgressReporter *reporter, BmapProgressFunc func,
                                  gpointer user_data, guint64 bytes_total);
/* Sets the checked and written counts the next report carries. */
void bmap_progress_reporter_set_io (BmapProgressReporter *reporter, guint64 bytes_checked,
                                    guint64 bytes_written);
/* Reports when 100 ms passed since the last report, or @force. */
void bmap_progress_reporter_update (BmapProgressReporter *reporter, BmapPhase phase,
                                    guint64 bytes_done, gboolean force);

G_END_DECLS
