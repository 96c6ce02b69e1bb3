/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  BMAP_TEXT_ESCAPE_DEFAULT = 0,
  /* Leaves '\n' as it is: for messages of several lines whose parts that
   * came from a caller are escaped too. */
  BMAP_TEXT_ESCAPE_KEEP_NEWLINES = 1 << 0,
} BmapTextEscapeFlags;

/* Makes @text (from a caller, a device, a file) safe to print on a
 * terminal or log: C0 controls, DEL and bytes that are not valid UTF-8
 * become "\xNN" ("\x1b" for ESC), C1 controls and the bidirectional
 * overrides become "\uNNNN", and '\' becomes "\\" so that an escape can
 * not be faked. Everything else is kept. NULL gives NULL. */
char *bmap_text_escape (const char *text, BmapTextEscapeFlags flags);

G_END_DECLS
