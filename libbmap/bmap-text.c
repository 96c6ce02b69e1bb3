/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "bmap-text.h"

/* Characters that reorder what follows on a terminal (Trojan Source):
 * LRE..RLO and LRI..PDI. */
static gboolean
is_bidi_control (gunichar c)
{
  return (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

char *
bmap_text_escape (const char *text, BmapTextEscapeFlags flags)
{
  GString *out;
  const char *p;

  if (text == NULL)
    return NULL;
  out = g_string_sized_new (strlen (text));
  p = text;
  while (*p != '\0') {
    guchar c = (guchar) *p;
    gunichar u;
    const char *next;

    if (c < 0x80) {
      if (c == '\\')
        g_string_append (out, "\\\\");
      else if (c == '\n' && (flags & BMAP_TEXT_ESCAPE_KEEP_NEWLINES))
        g_string_append_c (out, '\n');
      else if (c < 0x20 || c == 0x7f)
        g_string_append_printf (out, "\\x%02x", c);
      else
        g_string_append_c (out, (char) c);
      p++;
      continue;
    }
    /* -1 (invalid) or -2 (cut short): show the one byte and go on after
     * it, so that a valid character right behind is kept. */
    u = g_utf8_get_char_validated (p, -1);
    if (u == (gunichar) -1 || u == (gunichar) -2) {
      g_string_append_printf (out, "\\x%02x", c);
      p++;
      continue;
    }
    next = g_utf8_next_char (p);
    if ((u >= 0x80 && u <= 0x9f) || is_bidi_control (u))
      g_string_append_printf (out, "\\u%04x", u);
    else
      g_string_append_len (out, p, next - p);
    p = next;
  }
  return g_string_free (out, FALSE);
}
