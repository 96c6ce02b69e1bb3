/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <adwaita.h>

G_BEGIN_DECLS

/* The one window: choose an image, choose devices, Flash; then a row per
 * device with its progress and result. */
#define BMAPD_FLASHER_TYPE_WINDOW (bmapd_flasher_window_get_type ())
G_DECLARE_FINAL_TYPE (BmapdFlasherWindow, bmapd_flasher_window, BMAPD_FLASHER, WINDOW,
                      AdwApplicationWindow)

BmapdFlasherWindow *bmapd_flasher_window_new (GtkApplication *application);

/* Where the keys bmapd trusts are (bmapd --trusted-keys-dir), to judge an
 * image's signature as bmapd will; default /etc/bmapd/trusted-keys.d. Set
 * before open_image(). */
void bmapd_flasher_window_set_trusted_keys_dir (BmapdFlasherWindow *self, const char *dir);
/* Sets the options' switches: write only what differs, and what is done
 * with the card at the end (@when_done "eject", "power-off", or NULL to
 * leave it). */
void bmapd_flasher_window_set_options (BmapdFlasherWindow *self, gboolean minimize_writes,
                                       const char *when_done);

/* Loads @file as the image; errors are shown in the window. */
void bmapd_flasher_window_open_image (BmapdFlasherWindow *self, GFile *file);
/* Ticks the device with this node as soon as bmapd lists it. */
void bmapd_flasher_window_select_node (BmapdFlasherWindow *self, const char *node);
/* Starts flashing, without the confirmation, once the image is loaded and
 * every device given to select_node() is there (the command line's
 * --flash: the person said what to erase when starting the app). */
void bmapd_flasher_window_flash_when_ready (BmapdFlasherWindow *self);
/* Saves DIR/progress.png at the first progress shown and DIR/result.png
 * when every job has ended. */
void bmapd_flasher_window_set_screenshot_dir (BmapdFlasherWindow *self, const char *dir);
/* Prints each job's states and its result on stdout, one line each:
 * "state NODE STATE", "result NODE STATE TEXT", "details NODE TEXT"; and
 * "listed NODE" for each device row shown, "signature BADGE" once the
 * image's signature is judged. */
void bmapd_flasher_window_set_verbose (BmapdFlasherWindow *self, gboolean verbose);
/* Closes the window (and so quits) once every job has ended and the
 * result screenshot, if any, is saved. */
void bmapd_flasher_window_set_close_when_done (BmapdFlasherWindow *self, gboolean close);

/* Station mode, armed as soon as the image is loaded: every card inserted
 * from then on that @match (a{sv} of AddAutoFlash, floating is sunk; NULL
 * for removable cards) admits is flashed, @count cards at most (0: no
 * limit). With close_when_done the window closes once the rule is gone
 * and its cards have ended, after saving DIR/station.png. */
void bmapd_flasher_window_start_station (BmapdFlasherWindow *self, GVariant *match, guint count);

/* Cancels every flash of this window that is still going on, as the
 * Cancel of each row does. */
void bmapd_flasher_window_cancel_all (BmapdFlasherWindow *self);

/* Saves what the window shows now as a PNG once the next frame is drawn. */
void bmapd_flasher_window_save_screenshot (BmapdFlasherWindow *self, const char *path);

G_END_DECLS
