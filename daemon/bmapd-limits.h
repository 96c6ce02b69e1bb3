/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <sys/types.h>

G_BEGIN_DECLS

/* What one user (uid) may hold at once: calls not answered yet (reading
 * their descriptors, waiting for polkit), jobs (queued or running), and
 * auto-flash rules. One user at a limit is refused with Limit; others are
 * not affected.
 *
 * A place is a ticket: taken with bmapd_limits_take() and given back when
 * the last reference to it goes. A ticket may be dropped from any thread:
 * a reader thread that is abandoned (its caller's file blocks forever)
 * keeps the place of its call until it returns. */
typedef enum {
  BMAPD_LIMIT_REQUESTS,
  BMAPD_LIMIT_JOBS,
  BMAPD_LIMIT_RULES,
  BMAPD_LIMIT_N_KINDS,
} BmapdLimitKind;

typedef struct _BmapdLimits BmapdLimits;
typedef struct _BmapdLimitsTicket BmapdLimitsTicket;

BmapdLimits *bmapd_limits_new (void);
BmapdLimits *bmapd_limits_ref (BmapdLimits *limits);
void bmapd_limits_unref (BmapdLimits *limits);

/* The most one uid may hold of @kind (a reload changes it; tickets already
 * taken stay valid). */
void bmapd_limits_set_max (BmapdLimits *limits, BmapdLimitKind kind, guint max);
guint bmapd_limits_get_max (BmapdLimits *limits, BmapdLimitKind kind);

/* How many of @kind @uid holds now. */
guint bmapd_limits_count (BmapdLimits *limits, BmapdLimitKind kind, uid_t uid);

/* Fails with Limit, naming the uid, the count and the setting, when @uid
 * already holds the most it may; takes nothing. */
gboolean bmapd_limits_check (BmapdLimits *limits, BmapdLimitKind kind, uid_t uid, GError **error);
/* Like bmapd_limits_check(), and takes a place when there is one. */
BmapdLimitsTicket *
bmapd_limits_take (BmapdLimits *limits, BmapdLimitKind kind, uid_t uid, GError **error);

BmapdLimitsTicket *bmapd_limits_ticket_ref (BmapdLimitsTicket *ticket);
/* Any thread. */
void bmapd_limits_ticket_unref (BmapdLimitsTicket *ticket);

/* The bmapd.conf key of @kind's per-user limit ("MaxRequestsPerUser"). */
const char *bmapd_limits_kind_to_key (BmapdLimitKind kind);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdLimits, bmapd_limits_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdLimitsTicket, bmapd_limits_ticket_unref)

G_END_DECLS
