/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmap-progress.h"

#define RATE_WINDOW_US     (3 * G_USEC_PER_SEC)
#define REPORT_INTERVAL_US (G_USEC_PER_SEC / 10)
/* A rate is shown once this many samples over at least this long back it. */
#define RATE_MIN_SAMPLES 5
#define RATE_MIN_SPAN_US G_USEC_PER_SEC

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
    case BMAP_N_PHASES:
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
  meter->seen++;

  /* Drop samples older than the window, but keep two to measure over. */
  while (meter->n > 2 && now_us - meter->times[meter->head] > RATE_WINDOW_US) {
    meter->head = (meter->head + 1) % G_N_ELEMENTS (meter->times);
    meter->n--;
  }
}

static gint64
meter_span (const BmapRateMeter *meter)
{
  guint last;

  if (meter->n < 2)
    return 0;
  last = (meter->head + meter->n - 1) % G_N_ELEMENTS (meter->times);
  return meter->times[last] - meter->times[meter->head];
}

guint64
bmap_rate_meter_get_rate (const BmapRateMeter *meter)
{
  guint last;
  gint64 dt = meter_span (meter);

  if (dt <= 0)
    return 0;
  last = (meter->head + meter->n - 1) % G_N_ELEMENTS (meter->times);
  if (meter->bytes[last] < meter->bytes[meter->head])
    return 0;
  return (guint64) ((double) (meter->bytes[last] - meter->bytes[meter->head]) * G_USEC_PER_SEC
                    / (double) dt);
}

gboolean
bmap_rate_meter_is_meaningful (const BmapRateMeter *meter)
{
  return meter->seen >= RATE_MIN_SAMPLES && meter_span (meter) >= RATE_MIN_SPAN_US;
}

void
bmap_progress_reporter_init (BmapProgressReporter *reporter, BmapProgressFunc func,
                             gpointer user_data, guint64 bytes_total)
{
  memset (reporter, 0, sizeof (*reporter));
  reporter->func = func;
  reporter->user_data = user_data;
  reporter->work[BMAP_PHASE_WRITING] = bytes_total;
  reporter->last.phase = BMAP_PHASE_PREPARING;
  bmap_rate_meter_init (&reporter->meter);
}

void
bmap_progress_reporter_set_work (BmapProgressReporter *reporter, BmapPhase phase, guint64 bytes)
{
  g_return_if_fail (phase < BMAP_N_PHASES);

  if (phase < reporter->last.phase)
    return;
  reporter->work[phase] = bytes;
}

/* The whole operation's bytes before @phase and in all. */
static guint64
work_before (const BmapProgressReporter *reporter, BmapPhase phase)
{
  guint64 sum = 0;

  for (guint p = 0; p < (guint) phase; p++)
    sum += reporter->work[p];
  return sum;
}

static void
update_job (BmapProgressReporter *reporter)
{
  BmapProgress *last = &reporter->last;
  guint64 phase_work = reporter->work[last->phase];
  guint64 total = work_before (reporter, BMAP_N_PHASES);
  guint64 done = work_before (reporter, last->phase)
                 + (phase_work > 0 ? MIN (last->bytes_done, phase_work) : last->bytes_done);

  /* Until the writing phase's amount is known, so is not the whole. */
  if (reporter->work[BMAP_PHASE_WRITING] == 0)
    total = 0;
  if (total > 0)
    done = MIN (done, total);
  last->job_total = total;
  last->job_done = MAX (last->job_done, done);
  if (total > 0)
    last->fraction = MAX (last->fraction, MIN (1.0, (double) last->job_done / (double) total));

  /* The time left: what the whole operation still has to move, at the
   * current phase's pace. Between two meaningful rates the last estimate
   * stays. */
  if (total > 0 && last->rate > 0) {
    guint64 left_us
        = (guint64) ((double) (total - last->job_done) / (double) last->rate * G_USEC_PER_SEC);

    last->expected_end_time = (guint64) g_get_real_time () + left_us;
  }
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
  reporter->last.bytes_total = reporter->work[phase];
  reporter->last.rate = bmap_rate_meter_is_meaningful (&reporter->meter)
                            ? bmap_rate_meter_get_rate (&reporter->meter)
                            : 0;
  update_job (reporter);
  reporter->last_report_us = now;
  reporter->func (&reporter->last, reporter->user_data);
}
