/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmapctl-abbrev.h"

/* bmaptool 3.9's copy options and some of bmapctl's own, as bmapctl's
 * copy has them. */
static const GOptionEntry copy_entries[] = {
  { "bmap", 0, 0, G_OPTION_ARG_FILENAME, NULL, NULL, NULL },
  { "nobmap", 0, 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { "no-verify", 0, 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { "relocate-gpt", 0, 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { "removable-device", 0, 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { "bmap-sig", 0, 0, G_OPTION_ARG_FILENAME, NULL, NULL, NULL },
  { "no-sig-verify", 0, 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { "psplash-pipe", 0, 0, G_OPTION_ARG_FILENAME, NULL, NULL, NULL },
  { "output", 'o', 0, G_OPTION_ARG_FILENAME, NULL, NULL, NULL },
  { "maybe", 0, G_OPTION_FLAG_OPTIONAL_ARG, G_OPTION_ARG_CALLBACK, NULL, NULL, NULL },
  { "flag-callback", 0, G_OPTION_FLAG_NO_ARG, G_OPTION_ARG_CALLBACK, NULL, NULL, NULL },
  { NULL },
};
static const GOptionEntry global_entries[] = {
  { "quiet", 'q', 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { "no-ask-password", 0, 0, G_OPTION_ARG_NONE, NULL, NULL, NULL },
  { NULL },
};
static const GOptionEntry *const tables[] = { copy_entries, global_entries, NULL };
static const char *const bmaptool_copy[]
    = { "help",      "bmap",         "nobmap",           "bmap-sig", "no-sig-verify",
        "no-verify", "psplash-pipe", "removable-device", NULL };

/* Expands @args (a space-separated command line after "copy") and
 * returns it joined again; NULL with @error set. */
static char *
expand (const char *args, const char *const *preferred, GError **error)
{
  g_autoptr (GPtrArray) expanded = g_ptr_array_new_with_free_func (g_free);
  g_auto (GStrv) words = g_strsplit (args, " ", -1);
  g_autofree char **argv = g_new0 (char *, g_strv_length (words) + 2);
  int argc = 0;

  argv[argc++] = (char *) "copy";
  for (gsize i = 0; words[i] != NULL; i++)
    argv[argc++] = words[i];
  if (!bmapctl_abbrev_expand (argc, argv, tables, preferred, expanded, error))
    return NULL;
  return g_strjoinv (" ", argv + 1);
}

static void
check (const char *args, const char *want)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *got = expand (args, bmaptool_copy, &error);

  g_assert_no_error (error);
  g_assert_cmpstr (got, ==, want);
}

static void
check_ambiguous (const char *args, const char *const *preferred, const char *message)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *got = expand (args, preferred, &error);

  g_assert_null (got);
  g_assert_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE);
  g_assert_cmpstr (error->message, ==, message);
}

static void
test_unique_prefix (void)
{
  check ("--nob img dev", "--nobmap img dev");
  check ("--no-v img dev", "--no-verify img dev");
  check ("--no-s img dev", "--no-sig-verify img dev");
  check ("--q img dev", "--quiet img dev");
  check ("--no-a img dev", "--no-ask-password img dev");
  /* Each full name stays as it is, --bmap too though --bmap-sig begins
   * with it. */
  check ("--nobmap --bmap b --bmap-sig s img dev", "--nobmap --bmap b --bmap-sig s img dev");
  /* Options after the positional arguments, as labgrid writes them. */
  check ("img dev --nob", "img dev --nobmap");
}

static void
test_values (void)
{
  /* --opt=value keeps its value; the value is never expanded. */
  check ("--bmap-s=--nob img dev", "--bmap-sig=--nob img dev");
  check ("--bmap=x img dev", "--bmap=x img dev");
  /* The argument after an option taking a value is that value, whatever
   * it looks like, as in GOption. */
  check ("--bmap --nob img dev", "--bmap --nob img dev");
  check ("--bmap-s --nob img dev", "--bmap-sig --nob img dev");
  check ("-o --nob img", "-o --nob img");
  check ("-qo --nob img", "-qo --nob img");
  /* An optional argument comes only with "=". */
  check ("--may --nob", "--maybe --nobmap");
  check ("--flag --nob", "--flag-callback --nobmap");
  check ("-q --nob", "-q --nobmap");
}

static void
test_double_dash (void)
{
  check ("--nob -- --nob dev", "--nobmap -- --nob dev");
  check ("-- --no img", "-- --no img");
}

static void
test_unknown (void)
{
  /* Left for GOption to refuse by name. */
  check ("--frobnicate --nob=1 img", "--frobnicate --nobmap=1 img");
  check ("--=x --", "--=x --");
  check ("- img", "- img");
}

static void
test_ambiguous (void)
{
  check_ambiguous ("img dev --no", bmaptool_copy,
                   "ambiguous option: --no could match --nobmap, --no-verify, --no-sig-verify, "
                   "--no-ask-password");
  check_ambiguous ("--b img dev", bmaptool_copy,
                   "ambiguous option: --b could match --bmap, --bmap-sig");
  check ("--bmap- img dev", "--bmap-sig img dev");
}

static void
test_preferred (void)
{
  /* bmaptool has --removable-device alone: its prefixes keep meaning it
   * although bmapctl has --relocate-gpt too. */
  check ("--r img dev", "--removable-device img dev");
  check ("--re img dev", "--removable-device img dev");
  check ("--rel img dev", "--relocate-gpt img dev");
  /* bmaptool's own ambiguity stays one: several of its options match. */
  check_ambiguous ("--no- img dev", bmaptool_copy,
                   "ambiguous option: --no- could match --no-verify, --no-sig-verify, "
                   "--no-ask-password");
  /* Without a preference, bmapctl's own options count as much. */
  check_ambiguous ("--r=1 img dev", NULL,
                   "ambiguous option: --r=1 could match --relocate-gpt, --removable-device");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/bmapctl-abbrev/unique-prefix", test_unique_prefix);
  g_test_add_func ("/bmapctl-abbrev/values", test_values);
  g_test_add_func ("/bmapctl-abbrev/double-dash", test_double_dash);
  g_test_add_func ("/bmapctl-abbrev/unknown", test_unknown);
  g_test_add_func ("/bmapctl-abbrev/ambiguous", test_ambiguous);
  g_test_add_func ("/bmapctl-abbrev/preferred", test_preferred);
  return g_test_run ();
}
