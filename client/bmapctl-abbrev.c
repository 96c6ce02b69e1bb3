/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <string.h>

#include "bmapctl-abbrev.h"

/* Whether GOption takes the argument after the option as its value. */
static gboolean
takes_value (const GOptionEntry *entry)
{
  if (entry->flags & G_OPTION_FLAG_OPTIONAL_ARG)
    return FALSE;
  if (entry->arg == G_OPTION_ARG_NONE)
    return FALSE;
  if (entry->arg == G_OPTION_ARG_CALLBACK && (entry->flags & G_OPTION_FLAG_NO_ARG))
    return FALSE;
  return TRUE;
}

static gboolean
is_preferred (const char *const *preferred, const char *long_name)
{
  return preferred != NULL && g_strv_contains (preferred, long_name);
}

/* The entry whose long name @name (not NUL-terminated, @len bytes) names or
 * abbreviates; NULL with @error set when it is ambiguous, NULL without when
 * it is no option's. */
static const GOptionEntry *
lookup_long (const GOptionEntry *const *tables, const char *const *preferred, const char *arg,
             const char *name, gsize len, GError **error)
{
  g_autoptr (GPtrArray) matches = g_ptr_array_new ();
  const GOptionEntry *favourite = NULL;
  guint n_preferred = 0;

  if (len == 0)
    return NULL;
  for (gsize t = 0; tables[t] != NULL; t++) {
    for (const GOptionEntry *e = tables[t]; e->long_name != NULL; e++) {
      if (strncmp (e->long_name, name, len) != 0)
        continue;
      if (e->long_name[len] == '\0')
        return e;
      g_ptr_array_add (matches, (gpointer) e);
      if (is_preferred (preferred, e->long_name)) {
        favourite = e;
        n_preferred++;
      }
    }
  }
  if (matches->len == 1)
    return g_ptr_array_index (matches, 0);
  if (matches->len > 1 && n_preferred == 1)
    return favourite;
  if (matches->len > 1) {
    g_autoptr (GString) names = g_string_new (NULL);

    for (guint i = 0; i < matches->len; i++) {
      const GOptionEntry *e = g_ptr_array_index (matches, i);

      g_string_append_printf (names, "%s--%s", i > 0 ? ", " : "", e->long_name);
    }
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "ambiguous option: %s could match %s", arg, names->str);
  }
  return NULL;
}

static const GOptionEntry *
lookup_short (const GOptionEntry *const *tables, char short_name)
{
  for (gsize t = 0; tables[t] != NULL; t++) {
    for (const GOptionEntry *e = tables[t]; e->long_name != NULL; e++) {
      if (e->short_name == short_name)
        return e;
    }
  }
  return NULL;
}

gboolean
bmapctl_abbrev_expand (int argc, char **argv, const GOptionEntry *const *tables,
                       const char *const *preferred, GPtrArray *expanded, GError **error)
{
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];

    if (g_str_equal (arg, "--"))
      break;
    if (g_str_has_prefix (arg, "--")) {
      const char *name = arg + 2;
      const char *eq = strchr (name, '=');
      gsize len = eq != NULL ? (gsize) (eq - name) : strlen (name);
      g_autoptr (GError) local_error = NULL;
      const GOptionEntry *entry = lookup_long (tables, preferred, arg, name, len, &local_error);

      if (local_error != NULL) {
        g_propagate_error (error, g_steal_pointer (&local_error));
        return FALSE;
      }
      if (entry == NULL)
        continue;
      if (strlen (entry->long_name) != len) {
        char *full = g_strconcat ("--", entry->long_name, eq, NULL);

        g_ptr_array_add (expanded, full);
        argv[i] = full;
      }
      /* GOption takes the next argument whatever it looks like. */
      if (eq == NULL && takes_value (entry))
        i++;
    } else if (arg[0] == '-' && arg[1] != '\0') {
      /* A cluster of short options (-qd): one that takes a value takes
       * the next argument, as in GOption. */
      for (const char *c = arg + 1; *c != '\0'; c++) {
        const GOptionEntry *entry = lookup_short (tables, *c);

        if (entry != NULL && takes_value (entry)) {
          i++;
          break;
        }
      }
    }
  }
  return TRUE;
}
