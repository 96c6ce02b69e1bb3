/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <adwaita.h>

G_BEGIN_DECLS

#define BMAPD_FLASHER_APP_ID "org.bmapd.Flasher"

#define BMAPD_FLASHER_TYPE_APPLICATION (bmapd_flasher_application_get_type ())
G_DECLARE_FINAL_TYPE (BmapdFlasherApplication, bmapd_flasher_application, BMAPD_FLASHER,
                      APPLICATION, AdwApplication)

BmapdFlasherApplication *bmapd_flasher_application_new (void);

G_END_DECLS
