/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* g_autoptr() / g_auto() for the sd-bus and sd-event types we use. */

#include <glib.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_bus, sd_bus_flush_close_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_bus_message, sd_bus_message_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_bus_creds, sd_bus_creds_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_bus_slot, sd_bus_slot_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_bus_track, sd_bus_track_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_event, sd_event_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_event_source, sd_event_source_disable_unref)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (sd_bus_error, sd_bus_error_free)
