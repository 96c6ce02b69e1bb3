/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "bmapctl-bus.h"

G_BEGIN_DECLS

/* Starts a job with a method call that returns its path (Flash, Create)
 * and follows it to its end: progress, Ctrl-C cancelling, the result. The
 * signal matches are installed before the call, as importctl does, so no
 * Progress or Finished signal can be missed. */
typedef struct _BmapctlFollower BmapctlFollower;

BmapctlFollower *bmapctl_follower_new (sd_bus *bus, const BmapctlOptions *options, GError **error);
void bmapctl_follower_free (BmapctlFollower *follower);

/* With @detach, the job path is printed with how to follow it and the run
 * ends as soon as the job exists. */
void bmapctl_follower_set_detach (BmapctlFollower *follower, gboolean detach);

/* Sends @call (with the allow-interactive-authorization flag), runs the
 * event loop until the job ends, and returns bmapctl's exit status. On
 * success @result_job (when not NULL) receives the job's last properties. */
int bmapctl_follower_run (BmapctlFollower *follower, sd_bus_message *call, const char *what,
                          BmapctlJob **result_job);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapctlFollower, bmapctl_follower_free)

G_END_DECLS
