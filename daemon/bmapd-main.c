/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "bmap-error.h"
#include "bmap-signature.h"
#include "bmapd-autoflash-config.h"
#include "bmapd-autoflash.h"
#include "bmapd-config.h"
#include "bmapd-device-registry.h"
#include "bmapd-job.h"
#include "bmapd-log.h"
#include "bmapd-manager.h"
#include "bmapd-sd.h"
#include "bmapd-trusted-keys.h"

#define DEFAULT_CONFIG_FILE SYSCONFDIR "/bmapd/bmapd.conf"
/* After SIGTERM, how long the jobs have to end. Every wait of a worker wakes
 * on the cancel, so they end well before; a worker still running after this
 * is stuck in the kernel (a device that stopped answering), and bmapd exits
 * without it: closing the process closes its device. */
#define STOP_TIMEOUT_USEC (5 * G_USEC_PER_SEC)

typedef struct {
  sd_event *event;
  sd_bus *bus;
  BmapdConfig config;
  char *config_path;
  gboolean config_explicit;
  gint idle_timeout_override; /* -1: from the config */
  char *autoflash_dir;
  BmapdDeviceRegistry *registry;
  BmapdManager *manager;
  BmapdAutoFlash *autoflash;
  sd_event_source *idle_source;
  sd_event_source *stop_timeout_source;
  gboolean stopping;
  gboolean abandon_workers; /* exit without joining the job threads */
} Daemon;

static guint
idle_timeout_sec (Daemon *daemon)
{
  if (daemon->idle_timeout_override >= 0)
    return (guint) daemon->idle_timeout_override;
  return daemon->config.idle_timeout_sec;
}

static gboolean
is_idle (Daemon *daemon)
{
  return bmapd_manager_get_n_active_jobs (daemon->manager) == 0
         && !bmapd_manager_get_auto_flash_armed (daemon->manager);
}

static int
on_idle_timeout (sd_event_source *source, uint64_t usec, void *user_data)
{
  Daemon *daemon = user_data;

  daemon->idle_source = sd_event_source_disable_unref (daemon->idle_source);
  if (!is_idle (daemon) || daemon->stopping)
    return 0;
  bmapd_log (LOG_INFO, "idle for %u s, exiting (D-Bus activation starts bmapd again)",
             idle_timeout_sec (daemon));
  /* New calls go to a new instance from now on. */
  (void) sd_bus_release_name (daemon->bus, BMAPD_BUS_NAME);
  sd_notify (0, "STOPPING=1\nSTATUS=exiting after idle timeout");
  sd_event_exit (daemon->event, 0);
  return 0;
}

/* STATUS= for systemctl status, and the idle timer. */
static void
on_activity (BmapdManager *manager, gpointer user_data)
{
  Daemon *daemon = user_data;
  guint n = bmapd_manager_get_n_active_jobs (manager);
  g_autofree char *status = NULL;

  if (daemon->stopping)
    return;
  if (n == 0)
    status = g_strdup_printf ("STATUS=%s", bmapd_manager_get_auto_flash_armed (manager)
                                               ? "waiting for cards (auto-flash armed)"
                                               : "idle");
  else
    status = g_strdup_printf ("STATUS=%u job%s running%s", n, n == 1 ? "" : "s",
                              bmapd_manager_get_auto_flash_armed (manager) ? ", auto-flash armed"
                                                                           : "");
  sd_notify (0, status);

  daemon->idle_source = sd_event_source_disable_unref (daemon->idle_source);
  if (is_idle (daemon) && idle_timeout_sec (daemon) > 0) {
    int r = sd_event_add_time_relative (daemon->event, &daemon->idle_source, CLOCK_MONOTONIC,
                                        (guint64) idle_timeout_sec (daemon) * G_USEC_PER_SEC, 0,
                                        on_idle_timeout, daemon);
    if (r < 0)
      bmapd_log (LOG_WARNING, "cannot arm the idle timer: %s", g_strerror (-r));
  }
}

static void
on_shutdown_done (BmapdManager *manager, gpointer user_data)
{
  Daemon *daemon = user_data;

  bmapd_log (LOG_INFO, "every job has ended, exiting");
  sd_event_exit (daemon->event, 0);
}

/* Jobs whose worker has not ended are reported failed, and bmapd exits
 * without waiting for their threads. */
static void
exit_without_jobs (Daemon *daemon, const char *why)
{
  guint n = bmapd_job_abandon_running (why);

  if (n > 0)
    bmapd_log (LOG_WARNING, "%s: exiting without waiting for %u job%s still running", why, n,
               n == 1 ? "" : "s");
  daemon->abandon_workers = n > 0;
  sd_event_exit (daemon->event, 1);
}

static int
on_stop_timeout (sd_event_source *source, uint64_t usec, void *user_data)
{
  Daemon *daemon = user_data;
  g_autofree char *why = g_strdup_printf ("jobs still running %u s after the stop request",
                                          (guint) (STOP_TIMEOUT_USEC / G_USEC_PER_SEC));

  daemon->stop_timeout_source = sd_event_source_disable_unref (daemon->stop_timeout_source);
  exit_without_jobs (daemon, why);
  return 0;
}

static int
on_stop_signal (sd_event_source *source, const struct signalfd_siginfo *si, void *user_data)
{
  Daemon *daemon = user_data;
  const char *name = sigabbrev_np ((int) si->ssi_signo);
  g_autofree char *why = g_strdup_printf ("SIG%s", name != NULL ? name : "?");
  int r;

  if (daemon->stopping) {
    g_autofree char *again = g_strdup_printf ("%s again", why);

    exit_without_jobs (daemon, again);
    return 0;
  }
  daemon->stopping = TRUE;
  daemon->idle_source = sd_event_source_disable_unref (daemon->idle_source);
  bmapd_log (LOG_INFO, "%s: stopping every job, then exiting", why);
  sd_notify (0, "STOPPING=1\nSTATUS=stopping jobs");
  r = sd_event_add_time_relative (daemon->event, &daemon->stop_timeout_source, CLOCK_MONOTONIC,
                                  STOP_TIMEOUT_USEC, 0, on_stop_timeout, daemon);
  if (r < 0)
    bmapd_log (LOG_WARNING, "cannot arm the stop timer: %s", g_strerror (-r));
  bmapd_autoflash_shutdown (daemon->autoflash);
  bmapd_manager_shutdown (daemon->manager, why, on_shutdown_done, daemon);
  return 0;
}

static int
on_reload_signal (sd_event_source *source, const struct signalfd_siginfo *si, void *user_data)
{
  Daemon *daemon = user_data;
  BmapdConfig config;
  g_autoptr (GError) error = NULL;

  if (daemon->stopping)
    return 0;
  bmapd_config_init (&config);
  if (!bmapd_config_load (&config, daemon->config_path, daemon->config_explicit, &error)) {
    bmapd_log (LOG_ERR, "SIGHUP: keeping the old configuration: %s", error->message);
  } else {
    daemon->config = config;
    bmapd_manager_set_config (daemon->manager, &config);
    bmapd_autoflash_set_config (daemon->autoflash, &config);
    bmapd_log (LOG_INFO, "SIGHUP: reloaded %s (IdleTimeoutSec=%u, MaxJobs=%u, MaxRules=%u)",
               daemon->config_path, config.idle_timeout_sec, config.max_jobs, config.max_rules);
  }
  /* The rule files are independent of bmapd.conf: read them either way. */
  bmapd_autoflash_load_rule_files (daemon->autoflash);
  on_activity (daemon->manager, daemon);
  return 0;
}

static gboolean
open_bus (const char *address, sd_bus **out, GError **error)
{
  g_autoptr (sd_bus) bus = NULL;
  int r;

  if (address == NULL) {
    /* Honours DBUS_SYSTEM_BUS_ADDRESS. */
    r = sd_bus_open_system (&bus);
    if (r < 0) {
      bmap_error_set_errno (error, -r, "cannot connect to the system bus");
      return FALSE;
    }
  } else {
    r = sd_bus_new (&bus);
    if (r >= 0)
      r = sd_bus_set_address (bus, address);
    if (r >= 0)
      r = sd_bus_set_bus_client (bus, 1);
    if (r >= 0)
      r = sd_bus_negotiate_fds (bus, 1);
    if (r >= 0)
      r = sd_bus_start (bus);
    if (r < 0) {
      bmap_error_set_errno (error, -r, "cannot connect to the bus at %s", address);
      return FALSE;
    }
  }
  *out = g_steal_pointer (&bus);
  return TRUE;
}

static void
daemon_clear (Daemon *daemon)
{
  g_clear_pointer (&daemon->autoflash, bmapd_autoflash_free);
  g_clear_pointer (&daemon->manager, bmapd_manager_free);
  g_clear_pointer (&daemon->registry, bmapd_device_registry_free);
  daemon->idle_source = sd_event_source_disable_unref (daemon->idle_source);
  daemon->stop_timeout_source = sd_event_source_disable_unref (daemon->stop_timeout_source);
  if (daemon->bus != NULL)
    daemon->bus = sd_bus_flush_close_unref (daemon->bus);
  if (daemon->event != NULL)
    daemon->event = sd_event_unref (daemon->event);
  g_free (daemon->config_path);
  g_free (daemon->autoflash_dir);
}

static gboolean
run (Daemon *daemon, const char *bus_address, GError **error)
{
  sigset_t mask;
  int r;

  r = sd_event_default (&daemon->event);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "cannot create the event loop");
    return FALSE;
  }
  /* Blocked before any thread starts, so that only signalfd sees them. */
  sigemptyset (&mask);
  sigaddset (&mask, SIGTERM);
  sigaddset (&mask, SIGINT);
  sigaddset (&mask, SIGHUP);
  sigprocmask (SIG_BLOCK, &mask, NULL);
  if ((r = sd_event_add_signal (daemon->event, NULL, SIGTERM, on_stop_signal, daemon)) < 0
      || (r = sd_event_add_signal (daemon->event, NULL, SIGINT, on_stop_signal, daemon)) < 0
      || (r = sd_event_add_signal (daemon->event, NULL, SIGHUP, on_reload_signal, daemon)) < 0) {
    bmap_error_set_errno (error, -r, "cannot watch signals");
    return FALSE;
  }
  /* Pings WATCHDOG=1 at half of WATCHDOG_USEC when systemd asks for it. */
  r = sd_event_set_watchdog (daemon->event, 1);
  if (r < 0)
    bmapd_log (LOG_WARNING, "cannot enable the watchdog: %s", g_strerror (-r));

  if (!open_bus (bus_address, &daemon->bus, error))
    return FALSE;
  r = sd_bus_attach_event (daemon->bus, daemon->event, SD_EVENT_PRIORITY_NORMAL);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "cannot attach the bus to the event loop");
    return FALSE;
  }

  daemon->registry = bmapd_device_registry_new (daemon->event, error);
  if (daemon->registry == NULL)
    return FALSE;
  daemon->manager = bmapd_manager_new (daemon->bus, &daemon->config, daemon->registry, error);
  if (daemon->manager == NULL)
    return FALSE;
  bmapd_manager_set_activity_func (daemon->manager, on_activity, daemon);
  /* After the manager: its registry listener must run first. */
  daemon->autoflash = bmapd_autoflash_new (daemon->bus, daemon->manager, daemon->registry,
                                           &daemon->config, daemon->autoflash_dir);
  if (!bmapd_device_registry_start (daemon->registry, error))
    return FALSE;
  /* After the devices are known: those there now are not flashed. */
  bmapd_autoflash_load_rule_files (daemon->autoflash);

  /* Objects first, then the name: a caller activated us may call at once. */
  r = sd_bus_request_name (daemon->bus, BMAPD_BUS_NAME, 0);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "cannot own the bus name %s", BMAPD_BUS_NAME);
    return FALSE;
  }

  on_activity (daemon->manager, daemon);
  sd_notify (0, "READY=1");
  bmapd_log (LOG_INFO, "bmapd %s ready on %s (IdleTimeoutSec=%u, MaxJobs=%u, MaxRules=%u)",
             PACKAGE_VERSION, bus_address != NULL ? bus_address : "the system bus",
             idle_timeout_sec (daemon), daemon->config.max_jobs, daemon->config.max_rules);

  r = sd_event_loop (daemon->event);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "event loop");
    return FALSE;
  }
  /* Deliver the last Finished signals before the connection goes. */
  sd_bus_flush (daemon->bus);
  return TRUE;
}

int
main (int argc, char **argv)
{
  g_autoptr (GOptionContext) context = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *bus_address = NULL;
  g_autofree char *config_path = NULL;
  g_autofree char *autoflash_dir = NULL;
  g_autofree char *trusted_keys_dir = NULL;
  gint idle_timeout = -1;
  gboolean version = FALSE;
  gboolean debug = FALSE;
  Daemon daemon = { 0 };
  gboolean ok;
  const GOptionEntry entries[] = {
    { "bus-address", 0, 0, G_OPTION_ARG_STRING, &bus_address,
      "Connect to the bus at ADDRESS instead of the system bus", "ADDRESS" },
    { "config", 0, 0, G_OPTION_ARG_FILENAME, &config_path,
      "Read the configuration from FILE (default " DEFAULT_CONFIG_FILE ")", "FILE" },
    { "autoflash-dir", 0, 0, G_OPTION_ARG_FILENAME, &autoflash_dir,
      "Read auto-flash rules from DIR/*.conf (default " BMAPD_AUTOFLASH_DEFAULT_DIR ")", "DIR" },
    { "trusted-keys-dir", 0, 0, G_OPTION_ARG_FILENAME, &trusted_keys_dir,
      "Trust the bmap signing keys in DIR (default " BMAPD_TRUSTED_KEYS_DEFAULT_DIR ")", "DIR" },
    { "idle-timeout", 0, 0, G_OPTION_ARG_INT, &idle_timeout,
      "Exit after SECONDS without jobs, 0 never (overrides IdleTimeoutSec=)", "SECONDS" },
    { "debug", 0, 0, G_OPTION_ARG_NONE, &debug, "Log debug messages", NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL },
    { NULL },
  };

  context = g_option_context_new ("- flash disk images onto block devices, as a service");
  g_option_context_set_summary (context,
                                "bmapd owns org.bmapd.bmapd1 on the system bus; bmapctl and "
                                "desktop imaging tools talk to it.");
  g_option_context_add_main_entries (context, entries, NULL);
  if (!g_option_context_parse (context, &argc, &argv, &error)) {
    fprintf (stderr, "bmapd: %s\n", error->message);
    return 2;
  }
  if (version) {
    printf ("bmapd %s\n", PACKAGE_VERSION);
    return 0;
  }
  if (argc > 1) {
    fprintf (stderr, "bmapd: unexpected argument \"%s\"\n", argv[1]);
    return 2;
  }
  /* A write into a pipe whose reader is gone (a caller's bmap_out, a
   * feeder's pipe) must fail with EPIPE for the job that wrote, not end
   * bmapd: systemd takes death by SIGPIPE for a clean exit and would not
   * restart it. Before any thread starts, so that all inherit it. */
  signal (SIGPIPE, SIG_IGN);
  if (idle_timeout < -1) {
    fprintf (stderr, "bmapd: --idle-timeout %d: expected 0 or more seconds\n", idle_timeout);
    return 2;
  }
  bmapd_log_init (debug || g_getenv ("BMAPD_DEBUG") != NULL);
  if (trusted_keys_dir != NULL)
    bmapd_trusted_keys_set_dir (trusted_keys_dir);
  /* GPGME wants its first call on the main thread, before the workers. */
  if (!bmap_signature_init (&error)) {
    bmapd_log (LOG_WARNING, "%s; signed bmaps will be reported untrusted", error->message);
    g_clear_error (&error);
  }

  daemon.config_explicit = config_path != NULL;
  daemon.config_path = g_strdup (config_path != NULL ? config_path : DEFAULT_CONFIG_FILE);
  daemon.idle_timeout_override = idle_timeout;
  daemon.autoflash_dir
      = g_strdup (autoflash_dir != NULL ? autoflash_dir : BMAPD_AUTOFLASH_DEFAULT_DIR);
  bmapd_config_init (&daemon.config);
  if (!bmapd_config_load (&daemon.config, daemon.config_path, daemon.config_explicit, &error)) {
    bmapd_log (LOG_ERR, "%s", error->message);
    sd_notifyf (0, "STATUS=bad configuration: %s", error->message);
    g_free (daemon.config_path);
    g_free (daemon.autoflash_dir);
    return 1;
  }

  ok = run (&daemon, bus_address, &error);
  if (!ok) {
    bmapd_log (LOG_ERR, "%s", error->message);
    sd_notifyf (0, "STATUS=failed: %s", error->message);
  }
  if (daemon.abandon_workers) {
    /* Freeing the jobs would join threads that do not end; the kernel
     * closes their devices and descriptors. The Finished signals went out
     * with the bus flush in run(). */
    fflush (stderr);
    _exit (1);
  }
  daemon_clear (&daemon);
  return ok ? 0 : 1;
}
