/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmap-error.h"
#include "bmapd-limits.h"

/* One user at its limit is refused; another user is not. */
static void
test_per_uid (void)
{
  g_autoptr (BmapdLimits) limits = bmapd_limits_new ();
  g_autoptr (GError) error = NULL;
  BmapdLimitsTicket *tickets[3];
  g_autoptr (BmapdLimitsTicket) root = NULL;

  bmapd_limits_set_max (limits, BMAPD_LIMIT_REQUESTS, 3);
  for (guint i = 0; i < 3; i++) {
    tickets[i] = bmapd_limits_take (limits, BMAPD_LIMIT_REQUESTS, 65534, &error);
    g_assert_no_error (error);
    g_assert_nonnull (tickets[i]);
  }
  g_assert_cmpuint (bmapd_limits_count (limits, BMAPD_LIMIT_REQUESTS, 65534), ==, 3);
  g_assert_null (bmapd_limits_take (limits, BMAPD_LIMIT_REQUESTS, 65534, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT);
  g_assert_nonnull (strstr (error->message, "uid 65534"));
  g_assert_nonnull (strstr (error->message, "MaxRequestsPerUser=3"));
  g_clear_error (&error);
  g_assert_false (bmapd_limits_check (limits, BMAPD_LIMIT_REQUESTS, 65534, &error));
  g_clear_error (&error);

  /* Another uid, and another kind, are counted apart. */
  root = bmapd_limits_take (limits, BMAPD_LIMIT_REQUESTS, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (bmapd_limits_count (limits, BMAPD_LIMIT_REQUESTS, 0), ==, 1);
  g_assert_true (bmapd_limits_check (limits, BMAPD_LIMIT_JOBS, 65534, &error));
  g_assert_cmpuint (bmapd_limits_count (limits, BMAPD_LIMIT_JOBS, 65534), ==, 0);

  /* A place comes back when the last reference to its ticket goes. */
  bmapd_limits_ticket_ref (tickets[0]);
  bmapd_limits_ticket_unref (tickets[0]);
  g_assert_cmpuint (bmapd_limits_count (limits, BMAPD_LIMIT_REQUESTS, 65534), ==, 3);
  bmapd_limits_ticket_unref (tickets[0]);
  g_assert_cmpuint (bmapd_limits_count (limits, BMAPD_LIMIT_REQUESTS, 65534), ==, 2);
  tickets[0] = bmapd_limits_take (limits, BMAPD_LIMIT_REQUESTS, 65534, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < 3; i++)
    bmapd_limits_ticket_unref (tickets[i]);
  g_assert_cmpuint (bmapd_limits_count (limits, BMAPD_LIMIT_REQUESTS, 65534), ==, 0);
}

/* A lower maximum after a reload refuses new places; those taken stay. */
static void
test_reload (void)
{
  g_autoptr (BmapdLimits) limits = bmapd_limits_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapdLimitsTicket) a = NULL;
  g_autoptr (BmapdLimitsTicket) b = NULL;

  bmapd_limits_set_max (limits, BMAPD_LIMIT_RULES, 2);
  a = bmapd_limits_take (limits, BMAPD_LIMIT_RULES, 1000, &error);
  b = bmapd_limits_take (limits, BMAPD_LIMIT_RULES, 1000, &error);
  g_assert_no_error (error);
  bmapd_limits_set_max (limits, BMAPD_LIMIT_RULES, 1);
  g_assert_null (bmapd_limits_take (limits, BMAPD_LIMIT_RULES, 1000, &error));
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_LIMIT);
  g_assert_nonnull (strstr (error->message, "MaxRulesPerUser=1"));
  g_clear_pointer (&a, bmapd_limits_ticket_unref);
  g_clear_pointer (&b, bmapd_limits_ticket_unref);
  g_clear_error (&error);
  a = bmapd_limits_take (limits, BMAPD_LIMIT_RULES, 1000, &error);
  g_assert_no_error (error);
}

static gpointer
drop_ticket (gpointer data)
{
  bmapd_limits_ticket_unref (data);
  return NULL;
}

/* Threads drop tickets (an abandoned reader), and the limits object lives
 * as long as a ticket does. */
static void
test_threads (void)
{
  BmapdLimits *limits = bmapd_limits_new ();
  g_autoptr (GPtrArray) threads = g_ptr_array_new ();

  for (guint i = 0; i < 64; i++) {
    BmapdLimitsTicket *t = bmapd_limits_take (limits, BMAPD_LIMIT_JOBS, i % 4, NULL);
    g_assert_nonnull (t);
    g_ptr_array_add (threads, g_thread_new ("drop", drop_ticket, t));
  }
  for (guint i = 0; i < threads->len; i++)
    g_thread_join (g_ptr_array_index (threads, i));
  for (uid_t uid = 0; uid < 4; uid++)
    g_assert_cmpuint (bmapd_limits_count (limits, BMAPD_LIMIT_JOBS, uid), ==, 0);
  bmapd_limits_unref (limits);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/bmapd/limits/per-uid", test_per_uid);
  g_test_add_func ("/bmapd/limits/reload", test_reload);
  g_test_add_func ("/bmapd/limits/threads", test_threads);
  return g_test_run ();
}
