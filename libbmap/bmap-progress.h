/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  BMAP_PHASE_PREPARING,
  BMAP_PHASE_WRITING, /* also "hashing" for create */
  BMAP_PHASE_SYNCING,
  BMAP_PHASE_VERIFYING,
  BMAP_N_PHASES,
} BmapPhase;

const char *bmap_phase_to_string (BmapPhase phase);

typedef struct {
  BmapPhase phase;
  /* The current phase. */
  guint64 bytes_done;
  guint64 bytes_total; /* 0 when not known (a compressed pipe without a bmap) */
  /* Bytes per second of the current phase over the last few seconds; 0
   * until enough samples were taken for it to mean something. */
  guint64 rate;
  /* The whole operation, from start to end: each phase counts the bytes it
   * moves (writing and verifying the mapped bytes, syncing what may still
   * be in the page cache), so that one bar covers every phase and never
   * goes backwards. @job_total is 0 while the amount is not known. */
  guint64 job_done;
  guint64 job_total;
  double fraction; /* 0..1, never decreasing; 0 while @job_total is 0 */
  /* Microseconds since the epoch; 0 until the rate means something. */
  guint64 expected_end_time;
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
  guint seen; /* samples since init, the window's and older ones */
} BmapRateMeter;

void bmap_rate_meter_init (BmapRateMeter *meter);
/* Records that @bytes_done were done at @now_us (monotonic). */
void bmap_rate_meter_add (BmapRateMeter *meter, gint64 now_us, guint64 bytes_done);
guint64 bmap_rate_meter_get_rate (const BmapRateMeter *meter);
/* Whether enough samples over a long enough time were taken for the rate
 * to be shown (as udisks2 does, an estimate from one or two samples jumps
 * about too much to be useful). */
gboolean bmap_rate_meter_is_meaningful (const BmapRateMeter *meter);

/* Rate-limits and dispatches progress reports for an engine operation,
 * and keeps the whole operation's progress across its phases. */
typedef struct {
  BmapProgressFunc func;
  gpointer user_data;
  BmapRateMeter meter;
  BmapProgress last;
  gint64 last_report_us;
  guint64 work[BMAP_N_PHASES]; /* bytes each phase moves; 0 for one it skips */
} BmapProgressReporter;

/* @bytes_total: the bytes the writing phase moves, 0 when not known. */
void bmap_progress_reporter_init (BmapProgressReporter *reporter, BmapProgressFunc func,
                                  gpointer user_data, guint64 bytes_total);
/* Sets the bytes @phase moves (the writing phase's once known, the sync's
 * and the verification's when they will run). Phases before the current one
 * are not changed any more: what they did is done. */
void
bmap_progress_reporter_set_work (BmapProgressReporter *reporter, BmapPhase phase, guint64 bytes);
/* Sets the checked and written counts the next report carries. */
void bmap_progress_reporter_set_io (BmapProgressReporter *reporter, guint64 bytes_checked,
                                    guint64 bytes_written);
/* Reports when 100 ms passed since the last report, or @force. */
void bmap_progress_reporter_update (BmapProgressReporter *reporter, BmapPhase phase,
                                    guint64 bytes_done, gboolean force);

G_END_DECLS
