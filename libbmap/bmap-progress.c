/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmap-progress.h"

#define RATE_WINDOW_US     (3 * G_USEC_PER_SEC)
#define REPORT_INTERVAL_US (G_USEC_PER_SEC / 10)

const char *
bmap_phase_to_string (BmapPhase phase)
{
  switch (phase) {
    case BMAP_PHASE_PREPARING:
      return "preparing";
    case BMAP_PHASE_WRITING:
      return "writing";
    case BMAP_PHASE_SYNCING:
      return "syncing";
    case BMAP_PHASE_VERIFYING:
      return "verifying";
    default:
      return "unknown";
  }
}

void
bmap_rate_meter_init (BmapRateMeter *meter)
{
  memset (meter, 0, sizeof (*meter));
}

void
bmap_rate_meter_add (BmapRateMeter *meter, gint64 now_us, guint64 bytes_done)
{
  guint idx = (meter->head + meter->n) % G_N_ELEMENTS (meter->times);

  if (meter->n == G_N_ELEMENTS (meter->times)) {
    meter->head = (meter->head + 1) % G_N_ELEMENTS (meter->times);
    meter->n--;
  }
  meter->times[idx] = now_us;
  meter->bytes[idx] = bytes_done;
  meter->n++;

  /* Drop samples older than the window, but keep two to measure over. */
  while (meter->n > 2 && now_us - meter->times[meter->head] > RATE_WINDOW_US) {
    meter->head = (meter->head + 1) % G_N_ELEMENTS (meter->times);
    meter->n--;
  }
}

guint64
bmap_rate_meter_get_rate (const BmapRateMeter *meter)
{
  guint last;
  gint64 dt;

  if (meter->n < 2)
    return 0;
  last = (meter->head + meter->n - 1) % G_N_ELEMENTS (meter->times);
  dt = meter->times[last] - meter->times[meter->head];
  if (dt <= 0 || meter->bytes[last] < meter->bytes[meter->head])
    return 0;
  return (guint64) ((double) (meter->bytes[last] - meter->bytes[meter->head]) * G_USEC_PER_SEC
                    / (double) dt);
}

void
bmap_progress_reporter_init (BmapProgressReporter *reporter, BmapProgressFunc func,
                             gpointer user_data, guint64 bytes_total)
{
  memset (reporter, 0, sizeof (*reporter));
  reporter->func = func;
  reporter->user_data = user_data;
  reporter->last.bytes_total = bytes_total;
  reporter->last.phase = BMAP_PHASE_PREPARING;
  bmap_rate_meter_init (&reporter->meter);
}

void
bmap_progress_reporter_set_io (BmapProgressReporter *reporter, guint64 bytes_checked,
                               guint64 bytes_written)
{
  reporter->last.bytes_checked = bytes_checked;
  reporter->last.bytes_written = bytes_written;
}

void
bmap_progress_reporter_update (BmapProgressReporter *reporter, BmapPhase phase, guint64 bytes_done,
                               gboolean force)
{
  gint64 now = g_get_monotonic_time ();

  if (reporter->func == NULL)
    return;
  if (!force && phase == reporter->last.phase
      && now - reporter->last_report_us < REPORT_INTERVAL_US)
    return;

  if (phase != reporter->last.phase)
    bmap_rate_meter_init (&reporter->meter);
  bmap_rate_meter_add (&reporter->meter, now, bytes_done);
  reporter->last.phase = phase;
  reporter->last.bytes_done = bytes_done;
  reporter->last.rate = bmap_rate_meter_get_rate (&reporter->meter);
  reporter->last_report_us = now;
  reporter->func (&reporter->last, reporter->user_data);
}
