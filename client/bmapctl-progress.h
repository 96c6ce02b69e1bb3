/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

#include "bmapctl-common.h"

G_BEGIN_DECLS

/* Shows a job's progress: one self-redrawing line on a terminal, a plain
 * line every few seconds otherwise, one JSON object per update with
 * --json, nothing with --quiet. */
typedef struct _BmapctlProgress BmapctlProgress;

BmapctlProgress *bmapctl_progress_new (const BmapctlOptions *options);
void bmapctl_progress_free (BmapctlProgress *progress);

/* @state is a Job state ("writing", "syncing", ...). @total is 0 when not
 * known. */
void bmapctl_progress_update (BmapctlProgress *progress, const char *state, guint64 done,
                              guint64 total, guint64 rate);
/* Bytes downloaded so far, shown after every progress line while @func is
 * set (NULL stops): bmapctl fetching a URL shows its side of the copy. */
void bmapctl_progress_show_fetched (guint64 (*func) (void));
/* With minimize-writes: the bytes compared and written so far, shown by
 * the next updates ("checked 1.1 GiB, wrote 36 MiB"). */
void bmapctl_progress_set_io (BmapctlProgress *progress, guint64 checked, guint64 written);
/* Clears the terminal line so that a result can be printed. */
void bmapctl_progress_clear (BmapctlProgress *progress);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapctlProgress, bmapctl_progress_free)

G_END_DECLS
