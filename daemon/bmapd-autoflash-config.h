/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

#include "bmapd-autoflash-spec.h"

G_BEGIN_DECLS

#define BMAPD_AUTOFLASH_DEFAULT_DIR SYSCONFDIR "/bmapd/autoflash.d"

/* Auto-flash rules armed by the administrator: one GKeyFile per rule,
 * /etc/bmapd/autoflash.d/NAME.conf (documented in
 * data/autoflash-example.conf):
 *
 *   [Rule]
 *   Image=/srv/images/board.img.xz   absolute path, a regular file
 *   Bmap=/srv/images/board.img.bmap  default: found next to the image
 *   NoBmap=false                     copy every block instead
 *   Verify=true
 *   VerifyWritten=false
 *   MinimizeWrites=false             and Discard=, ZeroUnmapped=,
 *                                    RelocateGPT=: the Flash options
 *   Count=0                          cards, then the rule is disarmed
 *   Description=                     default: the image's file name
 *
 *   [Match]
 *   Bus=usb;mmc                      the Device's Bus, any of these
 *   Serial= Vendor= Model= Port=     shell globs; Port against ID_PATH
 *   MinSize= MaxSize=                bytes, or with K, M, G, T (1024s)
 *   AllowNonRemovable=false
 *
 * Paths are fine here where the D-Bus API takes descriptors, because only
 * root's files are used: the rule file, its Image= and its Bmap= are each
 * refused unless every component of the path is owned by root (or by the
 * user bmapd runs as) and not writable by group or others (a sticky
 * directory excepted); symbolic links are followed only when root's. */

/* Reads @path: the keys, then the image and the bmap (opened and parsed
 * now, so that a bad rule is reported when it is loaded, not when a card
 * is inserted). Errors name the file, the key and the value, or the path
 * component refused and its owner or mode. */
BmapdAutoFlashSpec *bmapd_autoflash_config_load_file (const char *path, GError **error);

/* The text of a rule file (@path is for messages): its keys checked, as
 * bmapd_autoflash_config_load_file() checks them, into a spec without image
 * or bmap; Image= and Bmap= (NULL when not set) are returned, not opened. */
BmapdAutoFlashSpec *
bmapd_autoflash_config_parse_data (const char *data, gsize len, const char *path, char **image_path,
                                   char **bmap_path, GError **error);

/* The paths of the *.conf files of @dir, sorted by name; empty when @dir
 * does not exist. */
GPtrArray *bmapd_autoflash_config_list_dir (const char *dir, GError **error);

G_END_DECLS
