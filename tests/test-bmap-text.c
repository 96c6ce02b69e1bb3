/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <string.h>

#include "bmap-text.h"

static void
check (const char *in, BmapTextEscapeFlags flags, const char *want)
{
  g_autofree char *got = bmap_text_escape (in, flags);

  g_assert_cmpstr (got, ==, want);
}

static void
test_plain (void)
{
  check ("", 0, "");
  check ("disk.img", 0, "disk.img");
  /* Valid UTF-8 that is not a control is kept. */
  check ("Kingston DataTraveler \xc3\xa9t\xc3\xa9 \xe2\x82\xac", 0,
         "Kingston DataTraveler \xc3\xa9t\xc3\xa9 \xe2\x82\xac");
  g_assert_null (bmap_text_escape (NULL, 0));
}

static void
test_controls (void)
{
  /* The escape sequences of the report: set the window title, clear the
   * screen. */
  check ("\x1b]0;pwned\x07\x1b[2J", 0, "\\x1b]0;pwned\\x07\\x1b[2J");
  check ("a\rb\tc\x7f", 0, "a\\x0db\\x09c\\x7f");
  check ("line1\nline2", 0, "line1\\x0aline2");
  check ("line1\nline2\x1b", BMAP_TEXT_ESCAPE_KEEP_NEWLINES, "line1\nline2\\x1b");
}

static void
test_backslash (void)
{
  /* A literal "\x1b" in the input must not look like an escaped ESC. */
  check ("a\\x1b", 0, "a\\\\x1b");
}

static void
test_invalid_utf8 (void)
{
  /* A lone continuation byte, a truncated sequence at the end, an overlong
   * encoding of '/', and a valid character right after a bad byte. */
  check ("a\x80z", 0, "a\\x80z");
  check ("a\xe2\x82", 0, "a\\xe2\\x82");
  check ("\xc0\xaf", 0, "\\xc0\\xaf");
  check ("\xff\xc3\xa9", 0, "\\xff\xc3\xa9");
}

static void
test_c1_and_bidi (void)
{
  /* U+009B is CSI on terminals that take C1 controls; U+202E reverses
   * what follows. */
  check ("x\xc2\x9b"
         "2J",
         0, "x\\u009b2J");
  check ("evil\xe2\x80\xae"
         "gpj.exe",
         0, "evil\\u202egpj.exe");
  check ("\xe2\x81\xa6", 0, "\\u2066");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/text/plain", test_plain);
  g_test_add_func ("/text/controls", test_controls);
  g_test_add_func ("/text/backslash", test_backslash);
  g_test_add_func ("/text/invalid-utf8", test_invalid_utf8);
  g_test_add_func ("/text/c1-and-bidi", test_c1_and_bidi);
  return g_test_run ();
}
