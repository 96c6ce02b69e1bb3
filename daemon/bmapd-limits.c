/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmap-error.h"
#include "bmapd-limits.h"

struct _BmapdLimits {
  gint ref_count;
  /* Tickets are dropped by reader threads too. */
  GMutex lock;
  guint max[BMAPD_LIMIT_N_KINDS];
  GHashTable *counts[BMAPD_LIMIT_N_KINDS]; /* uid -> count, entries removed at 0 */
};

struct _BmapdLimitsTicket {
  gint ref_count;
  BmapdLimits *limits;
  BmapdLimitKind kind;
  uid_t uid;
};

BmapdLimits *
bmapd_limits_new (void)
{
  BmapdLimits *limits = g_new0 (BmapdLimits, 1);

  limits->ref_count = 1;
  g_mutex_init (&limits->lock);
  for (guint i = 0; i < BMAPD_LIMIT_N_KINDS; i++) {
    limits->max[i] = G_MAXUINT;
    limits->counts[i] = g_hash_table_new (g_direct_hash, g_direct_equal);
  }
  return limits;
}

BmapdLimits *
bmapd_limits_ref (BmapdLimits *limits)
{
  g_atomic_int_inc (&limits->ref_count);
  return limits;
}

void
bmapd_limits_unref (BmapdLimits *limits)
{
  if (limits == NULL || !g_atomic_int_dec_and_test (&limits->ref_count))
    return;
  for (guint i = 0; i < BMAPD_LIMIT_N_KINDS; i++)
    g_hash_table_unref (limits->counts[i]);
  g_mutex_clear (&limits->lock);
  g_free (limits);
}

const char *
bmapd_limits_kind_to_key (BmapdLimitKind kind)
{
  switch (kind) {
    case BMAPD_LIMIT_REQUESTS:
      return "MaxRequestsPerUser";
    case BMAPD_LIMIT_JOBS:
      return "MaxJobsPerUser";
    case BMAPD_LIMIT_RULES:
    default:
      return "MaxRulesPerUser";
  }
}

static const char *
describe_kind (BmapdLimitKind kind)
{
  switch (kind) {
    case BMAPD_LIMIT_REQUESTS:
      return "calls waiting for their data or for authorization";
    case BMAPD_LIMIT_JOBS:
      return "jobs queued or running";
    case BMAPD_LIMIT_RULES:
    default:
      return "auto-flash rules armed or being added";
  }
}

void
bmapd_limits_set_max (BmapdLimits *limits, BmapdLimitKind kind, guint max)
{
  g_mutex_lock (&limits->lock);
  limits->max[kind] = max;
  g_mutex_unlock (&limits->lock);
}

guint
bmapd_limits_get_max (BmapdLimits *limits, BmapdLimitKind kind)
{
  guint max;

  g_mutex_lock (&limits->lock);
  max = limits->max[kind];
  g_mutex_unlock (&limits->lock);
  return max;
}

static guint
count_locked (BmapdLimits *limits, BmapdLimitKind kind, uid_t uid)
{
  return GPOINTER_TO_UINT (g_hash_table_lookup (limits->counts[kind], GUINT_TO_POINTER (uid)));
}

guint
bmapd_limits_count (BmapdLimits *limits, BmapdLimitKind kind, uid_t uid)
{
  guint n;

  g_mutex_lock (&limits->lock);
  n = count_locked (limits, kind, uid);
  g_mutex_unlock (&limits->lock);
  return n;
}

static gboolean
check_locked (BmapdLimits *limits, BmapdLimitKind kind, uid_t uid, GError **error)
{
  guint n = count_locked (limits, kind, uid);

  if (n >= limits->max[kind]) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT,
                 "uid %u has %u %s, the most one user may have (%s=%u)", (guint) uid, n,
                 describe_kind (kind), bmapd_limits_kind_to_key (kind), limits->max[kind]);
    return FALSE;
  }
  return TRUE;
}

gboolean
bmapd_limits_check (BmapdLimits *limits, BmapdLimitKind kind, uid_t uid, GError **error)
{
  gboolean ok;

  g_mutex_lock (&limits->lock);
  ok = check_locked (limits, kind, uid, error);
  g_mutex_unlock (&limits->lock);
  return ok;
}

BmapdLimitsTicket *
bmapd_limits_take (BmapdLimits *limits, BmapdLimitKind kind, uid_t uid, GError **error)
{
  BmapdLimitsTicket *ticket;

  g_mutex_lock (&limits->lock);
  if (!check_locked (limits, kind, uid, error)) {
    g_mutex_unlock (&limits->lock);
    return NULL;
  }
  g_hash_table_insert (limits->counts[kind], GUINT_TO_POINTER (uid),
                       GUINT_TO_POINTER (count_locked (limits, kind, uid) + 1));
  g_mutex_unlock (&limits->lock);

  ticket = g_new0 (BmapdLimitsTicket, 1);
  ticket->ref_count = 1;
  ticket->limits = bmapd_limits_ref (limits);
  ticket->kind = kind;
  ticket->uid = uid;
  return ticket;
}

BmapdLimitsTicket *
bmapd_limits_ticket_ref (BmapdLimitsTicket *ticket)
{
  g_atomic_int_inc (&ticket->ref_count);
  return ticket;
}

void
bmapd_limits_ticket_unref (BmapdLimitsTicket *ticket)
{
  BmapdLimits *limits;
  guint n;

  if (ticket == NULL || !g_atomic_int_dec_and_test (&ticket->ref_count))
    return;
  limits = ticket->limits;
  g_mutex_lock (&limits->lock);
  n = count_locked (limits, ticket->kind, ticket->uid);
  g_warn_if_fail (n > 0);
  if (n <= 1)
    g_hash_table_remove (limits->counts[ticket->kind], GUINT_TO_POINTER (ticket->uid));
  else
    g_hash_table_insert (limits->counts[ticket->kind], GUINT_TO_POINTER (ticket->uid),
                         GUINT_TO_POINTER (n - 1));
  g_mutex_unlock (&limits->lock);
  bmapd_limits_unref (limits);
  g_free (ticket);
}
