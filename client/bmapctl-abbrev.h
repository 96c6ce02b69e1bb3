/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* bmaptool parses its command line with Python's argparse, which takes any
 * unambiguous prefix of a long option (--nob for --nobmap). GOption does
 * not, so the arguments are expanded before GOption sees them.
 *
 * Every "--PREFIX" and "--PREFIX=VALUE" in argv[1..argc) that names no
 * option of @tables exactly (a NULL-terminated list of GOptionEntry tables)
 * but begins exactly one of their long names is replaced by "--NAME" or
 * "--NAME=VALUE". When it begins several, and exactly one of them is in
 * @preferred (NULL-terminated long names without dashes, may be NULL), that
 * one is taken: bmaptool's options keep the prefixes they have in bmaptool
 * although bmapctl has more options. Otherwise it is refused as argparse
 * refuses it: "ambiguous option: --no could match --nobmap, --no-verify".
 * A prefix of no option is left for GOption to report.
 *
 * Nothing after "--" is touched, nor the value that follows an option
 * taking one ("--bmap --nob" reads a bmap named "--nob", as GOption does).
 *
 * The new strings are added to @expanded (which must free with g_free) and
 * argv points into it: keep it until argv has been parsed. */
gboolean bmapctl_abbrev_expand (int argc, char **argv, const GOptionEntry *const *tables,
                                const char *const *preferred, GPtrArray *expanded, GError **error);

G_END_DECLS
