/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bmapctl-common.h"

G_BEGIN_DECLS

#define BMAPD_BUS_NAME        "org.bmapd.bmapd1"
#define BMAPD_MANAGER_PATH    "/org/bmapd/bmapd1"
#define BMAPD_MANAGER_IFACE   "org.bmapd.bmapd1.Manager"
#define BMAPD_DEVICE_IFACE    "org.bmapd.bmapd1.Device"
#define BMAPD_JOB_IFACE       "org.bmapd.bmapd1.Job"
#define BMAPD_AUTOFLASH_IFACE "org.bmapd.bmapd1.AutoFlash"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_bus, sd_bus_flush_close_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_bus_message, sd_bus_message_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (sd_bus_slot, sd_bus_slot_unref)

/* Blocks SIGINT and SIGTERM and hands them to @handler on @event; with
 * @handler NULL they end the event loop with status 0. */
int
bmapctl_event_add_exit_signals (sd_event *event, sd_event_signal_handler_t handler, void *userdata);

/* The system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured). */
sd_bus *bmapctl_bus_open (GError **error);

/* The system bus with bmapd on it, and bmapd's devices. On failure
 * @unreachable says whether neither the bus nor bmapd could be reached (a
 * caller that can do the work itself may then go on without them), as
 * opposed to bmapd answering with an error. */
sd_bus *bmapctl_bus_open_bmapd (GPtrArray **devices, gboolean *unreachable, GError **error);

/* Turns a D-Bus error into a BMAP_ERROR: our own names map one to one
 * (NotAuthorized saying why no password was asked for, when bmapctl told
 * bmapd so), InteractiveAuthorizationRequired (bmapd 0.1) and AccessDenied
 * become NotAuthorized, an absent or failing service says that bmapd is
 * not running. */
void bmapctl_bus_set_error (GError **error, const sd_bus_error *bus_error, int r, const char *what);

/* Whether polkit may ask for a password here: standard input is a terminal
 * and --no-ask-password was not given. */
gboolean bmapctl_may_ask_password (const BmapctlOptions *options);
/* For a call that polkit checks: the allow-interactive-authorization flag
 * when a password may be asked for (bmapd 0.1 needed it; bmapd now lets
 * polkit ask by default). Remembers why not, for bmapctl_bus_set_error(). */
int bmapctl_bus_set_interaction (sd_bus_message *call, const BmapctlOptions *options);
/* Into an open a{sv} of options: "no-user-interaction" true when no
 * password may be asked for. */
int bmapctl_bus_append_no_user_interaction (sd_bus_message *call, const BmapctlOptions *options);

/* Runs pkttyagent for the duration of a call when stdin is a terminal,
 * --no-ask-password was not given and the caller is not root (who is never
 * asked), so a password prompt appears here; its stderr is kept.
 * Returns the agent's pid, or 0 when none was started. */
GPid bmapctl_polkit_agent_open (const BmapctlOptions *options);
void bmapctl_polkit_agent_close (GPid pid);
/* What the last agent printed (e.g. that polkit is not running), or NULL:
 * for the error when authorization failed. */
const char *bmapctl_polkit_agent_failure (void);

/* One object as GetManagedObjects lists it. */
typedef struct {
  char *path;
  /* Device */
  char *node;
  char *name;
  guint64 size;
  guint32 logical_block_size;
  char *vendor;
  char *model;
  char *serial;
  char *bus;
  gboolean removable;
  gboolean system;
  gboolean read_only;
  gboolean media_present;
  gboolean busy;
  guint64 diskseq;
  char *job;
  char *partition_of; /* a partition's disk (its object path), "/" or NULL for a disk */
} BmapctlDevice;

typedef struct {
  char *path;
  guint32 id;
  char *operation;
  char *device;
  char *description;
  char *state;
  guint64 bytes_total;
  guint64 bytes_done;
  double progress;
  guint64 rate;
  guint64 start_time;
  guint64 expected_end_time;
  guint32 started_by_uid;
  char *error_name;
  char *error_message;
  guint64 bytes_checked; /* minimize-writes */
  guint64 bytes_written;
  char *result;
} BmapctlJob;

typedef struct {
  char *path;
  guint32 id;
  char *source;
  char *config_file;
  char *description;
  guint32 count;
  guint32 flashed;
  guint32 failed;
  guint32 started_by_uid;
} BmapctlRule;

void bmapctl_device_free (BmapctlDevice *device);
void bmapctl_job_free (BmapctlJob *job);
void bmapctl_rule_free (BmapctlRule *rule);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapctlDevice, bmapctl_device_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapctlJob, bmapctl_job_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BmapctlRule, bmapctl_rule_free)

/* Reads an a{sv} of Device / Job / AutoFlash properties into @object,
 * skipping properties it does not know. */
int bmapctl_read_device_props (sd_bus_message *m, BmapctlDevice *device);
int bmapctl_read_job_props (sd_bus_message *m, BmapctlJob *job);
int bmapctl_read_rule_props (sd_bus_message *m, BmapctlRule *rule);

/* Reads the a{sa{sv}} of one object (GetManagedObjects, InterfacesAdded)
 * and appends what it holds to the arrays that are not NULL. */
int bmapctl_read_interfaces (sd_bus_message *m, const char *path, GPtrArray *devices,
                             GPtrArray *jobs, GPtrArray *rules);

/* Lists every device, job and rule with one GetManagedObjects call. Each
 * array may be NULL when the caller does not want it. Sorted by path. */
gboolean bmapctl_get_managed_objects (sd_bus *bus, GPtrArray **devices, GPtrArray **jobs,
                                      GPtrArray **rules, GError **error);

/* Moves every object of @objects (BmapctlDevice, BmapctlJob or BmapctlRule:
 * structs that start with their path) into @table, keyed by that path.
 * @table owns them from then on; @objects is left empty. */
void bmapctl_index_by_path (GHashTable *table, GPtrArray *objects);

/* The properties of one job, read with a single GetAll call. */
BmapctlJob *bmapctl_get_job (sd_bus *bus, const char *path, GError **error);

/* Finds the device whose node, name or real path is @dest ("/dev/sdb",
 * "sdb", "/dev/disk/by-id/..."). */
BmapctlDevice *bmapctl_find_device (GPtrArray *devices, const char *dest);

/* Finds a job by id ("7") or object path. */
BmapctlJob *bmapctl_find_job (GPtrArray *jobs, const char *id_or_path);

G_END_DECLS
