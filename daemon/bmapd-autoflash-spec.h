/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

#include "bmapd-device-info.h"
#include "bmapd-image.h"
#include "bmapd-job.h"
#include "libbmap.h"

G_BEGIN_DECLS

/* Which devices a rule flashes: AddAutoFlash's match, or a rule file's
 * [Match] group. Unset keys admit anything. */
typedef struct {
  char **bus;   /* exact names ("usb", "mmc"), NULL: any bus */
  char *serial; /* shell globs (fnmatch), NULL: any */
  char *vendor;
  char *model;
  char *port; /* against udev's ID_PATH */
  gboolean has_min_size;
  guint64 min_size;
  gboolean has_max_size;
  guint64 max_size;
  gboolean allow_non_removable;
} BmapdAutoFlashMatch;

/* Everything a rule is made of, checked, whether it came from
 * AddAutoFlash or from a rule file. */
typedef struct {
  BmapdAutoFlashMatch match;
  /* The Match and Options properties: what the caller or the file gave,
   * as a{sv} with D-Bus names, descriptors left out. */
  GVariant *match_variant;
  GVariant *options_variant;
  BmapdImage *image;
  BmapMap *map; /* NULL with nobmap */
  gboolean nobmap;
  gboolean verify;
  gboolean verify_written;
  gboolean eject;              /* each card, once flashed and verified */
  gboolean power_off;          /* each card's USB device, once flashed and verified */
  BmapdFlashFlags flash_flags; /* bmapd_autoflash_flags, for every card's job */
  gboolean keep;
  guint count; /* 0: no limit */
  char *description;
  char *config_file; /* NULL for a rule from AddAutoFlash */
} BmapdAutoFlashSpec;

/* The Flash options a rule passes on to its cards' jobs as they are: the
 * AddAutoFlash option and the rule file key for each. */
typedef struct {
  const char *option; /* "minimize-writes" */
  const char *key;    /* "MinimizeWrites" */
  BmapdFlashFlags flag;
} BmapdAutoFlashFlag;

/* Terminated by an entry with option NULL. */
extern const BmapdAutoFlashFlag bmapd_autoflash_flags[];

/* The entry for the AddAutoFlash option @option, NULL if it is not one. */
const BmapdAutoFlashFlag *bmapd_autoflash_flag_lookup (const char *option);

/* Defaults: verify, no count, no keep. */
BmapdAutoFlashSpec *bmapd_autoflash_spec_new (void);
void bmapd_autoflash_spec_free (BmapdAutoFlashSpec *spec);

/* The checks between the options and the match that need no file:
 * min-size above max-size, verify-written, discard or zero-unmapped with
 * nobmap. */
gboolean bmapd_autoflash_spec_check (BmapdAutoFlashSpec *spec, GError **error);

/* Takes @image_fd (a regular file, at the image's start) and @map (NULL
 * with nobmap) and checks them together: the bmap belongs to an image of
 * the file's size (uncompressed images), and has checksums when
 * verify-written asks for them. Both are taken even on failure. */
gboolean bmapd_autoflash_spec_set_image (BmapdAutoFlashSpec *spec, int image_fd,
                                         const char *image_name, BmapMap *map, GError **error);

/* A copy of the rule's bmap for one job (jobs free theirs); NULL with
 * nobmap. */
BmapMap *bmapd_autoflash_spec_copy_map (const BmapdAutoFlashSpec *spec);

/* Whether @match admits @info, whatever was present when the rule was
 * added: never System, read-only or busy devices, nor devices without a
 * medium; non-removable ones only with allow-non-removable. Otherwise
 * @why_not says why, for the debug log. */
gboolean bmapd_autoflash_match_admits (const BmapdAutoFlashMatch *match,
                                       const BmapdDeviceInfo *info, char **why_not);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapdAutoFlashSpec, bmapd_autoflash_spec_free)

G_END_DECLS
