/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmapctl-bus.h"

int
bmapctl_event_add_exit_signals (sd_event *event, sd_event_signal_handler_t handler, void *userdata)
{
  static const int signals[] = { SIGINT, SIGTERM };
  sigset_t mask;
  int r = 0;

  sigemptyset (&mask);
  for (gsize i = 0; i < G_N_ELEMENTS (signals); i++)
    sigaddset (&mask, signals[i]);
  sigprocmask (SIG_BLOCK, &mask, NULL);
  for (gsize i = 0; r >= 0 && i < G_N_ELEMENTS (signals); i++)
    r = sd_event_add_signal (event, NULL, signals[i], handler, userdata);
  return r;
}

sd_bus *
bmapctl_bus_open (GError **error)
{
  sd_bus *bus = NULL;
  int r = sd_bus_open_system (&bus);

  if (r < 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "cannot connect to the system bus, where bmapd answers: %s", g_strerror (-r));
    return NULL;
  }
  return bus;
}

/* The bus answered for bmapd: nobody owns its name and activating it
 * failed. */
static gboolean
is_not_running_error (const char *name)
{
  return g_str_equal (name, "org.freedesktop.DBus.Error.ServiceUnknown")
         || g_str_equal (name, "org.freedesktop.DBus.Error.NameHasNoOwner")
         || g_str_equal (name, "org.freedesktop.systemd1.NoSuchUnit")
         || g_str_has_prefix (name, "org.freedesktop.DBus.Error.Spawn.");
}

/* Why the last call told bmapd that polkit must not ask for a password,
 * for the error when authorization then fails; NULL when it may ask. */
static const char *no_password_reason;

static const char *
get_no_password_reason (const BmapctlOptions *options)
{
  if (options->no_ask_password)
    return "--no-ask-password was given";
  /* Nobody could type a password: scripts must not hang on a prompt. */
  if (!isatty (STDIN_FILENO))
    return "standard input is not a terminal";
  return NULL;
}

gboolean
bmapctl_may_ask_password (const BmapctlOptions *options)
{
  return get_no_password_reason (options) == NULL;
}

int
bmapctl_bus_set_interaction (sd_bus_message *call, const BmapctlOptions *options)
{
  no_password_reason = get_no_password_reason (options);
  /* bmapd lets polkit ask by default; bmapd 0.1 only with this flag. */
  return sd_bus_message_set_allow_interactive_authorization (call, no_password_reason == NULL);
}

int
bmapctl_bus_append_no_user_interaction (sd_bus_message *call, const BmapctlOptions *options)
{
  no_password_reason = get_no_password_reason (options);
  /* Sent only when true, so that the call stays one bmapd 0.1 takes. */
  if (no_password_reason == NULL)
    return 0;
  return sd_bus_message_append (call, "{sv}", "no-user-interaction", "b", 1);
}

void
bmapctl_bus_set_error (GError **error, const sd_bus_error *bus_error, int r, const char *what)
{
  const char *name = bus_error != NULL && sd_bus_error_is_set (bus_error) ? bus_error->name : NULL;
  const char *message = name != NULL && bus_error->message != NULL ? bus_error->message
                                                                   : g_strerror (r < 0 ? -r : r);
  BmapErrorCode code;

  if (name != NULL && bmap_error_code_from_dbus_name (name, &code)) {
    if (code == BMAP_ERROR_NOT_AUTHORIZED && no_password_reason != NULL)
      g_set_error (error, BMAP_ERROR, code,
                   "%s (bmapctl did not let polkit ask for a password: %s)", message,
                   no_password_reason);
    else
      g_set_error (error, BMAP_ERROR, code, "%s", message);
    return;
  }
  if (g_strcmp0 (name, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired") == 0) {
    /* The daemon's message names the polkit action. */
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NOT_AUTHORIZED,
                 "%s: %s; no password can be asked for here (run bmapctl from a terminal "
                 "without --no-ask-password, or ask the administrator for a polkit rule)",
                 what, message);
    return;
  }
  if (g_strcmp0 (name, "org.freedesktop.DBus.Error.AccessDenied") == 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NOT_AUTHORIZED, "%s: %s", what, message);
    return;
  }
  if (name != NULL && is_not_running_error (name)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "bmapd is not running and could not be activated: %s", message);
    return;
  }
  if (name != NULL && g_str_equal (name, "org.freedesktop.DBus.Error.NoReply")) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: bmapd did not answer: %s", what, message);
    return;
  }
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: %s%s%s", what, message,
               name != NULL ? " " : "", name != NULL ? name : "");
}

sd_bus *
bmapctl_bus_open_bmapd (GPtrArray **devices, gboolean *unreachable, GError **error)
{
  g_autoptr (sd_bus) bus = NULL;
  sd_bus_error bus_error = SD_BUS_ERROR_NULL;
  int r;

  *unreachable = FALSE;
  r = sd_bus_open_system (&bus);
  if (r < 0) {
    *unreachable = TRUE;
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "cannot connect to the system bus: %s",
                 g_strerror (-r));
    return NULL;
  }
  /* Ping first: it activates bmapd, and a failure here is about reaching
   * it, not about what it answered. The connection itself is made on the
   * first call, so a dead bus socket shows up here too. */
  r = sd_bus_call_method (bus, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH, "org.freedesktop.DBus.Peer",
                          "Ping", &bus_error, NULL, "");
  if (r < 0) {
    const char *name = sd_bus_error_is_set (&bus_error) ? bus_error.name : NULL;

    if (name == NULL || is_not_running_error (name)) {
      *unreachable = TRUE;
      if (name == NULL)
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "cannot connect to the system bus: %s",
                     g_strerror (-r));
      else
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                     "bmapd is not running and could not be activated: %s", bus_error.message);
    } else {
      bmapctl_bus_set_error (error, &bus_error, r, "reaching bmapd");
    }
    sd_bus_error_free (&bus_error);
    return NULL;
  }
  if (!bmapctl_get_managed_objects (bus, devices, NULL, NULL, error))
    return NULL;
  return g_steal_pointer (&bus);
}

/* ---- polkit agent ------------------------------------------------------ */

/* What the last agent said on stderr: shown only when authorization then
 * fails, since a missing agent matters only when a password was needed. */
static char *agent_failure;
static int agent_stderr = -1;

GPid
bmapctl_polkit_agent_open (const BmapctlOptions *options)
{
  g_autofree char *agent = NULL;
  int pipe_fds[2];
  pid_t pid;

  /* polkit authorizes root without asking, and bmapd without polkit
   * allows root only: no prompt can ever be needed. */
  if (!bmapctl_may_ask_password (options) || geteuid () == 0)
    return 0;
  agent = g_find_program_in_path ("pkttyagent");
  if (agent == NULL)
    return 0;
  if (pipe2 (pipe_fds, O_CLOEXEC) < 0)
    return 0;
  /* Its prompts go to the terminal, its complaints (no polkit on the bus,
   * another agent registered) here. */
  agent_stderr = memfd_create ("pkttyagent-stderr", MFD_CLOEXEC);

  pid = fork ();
  if (pid < 0) {
    close (pipe_fds[0]);
    close (pipe_fds[1]);
    return 0;
  }
  if (pid == 0) {
    char fd_str[16];
    int fd = fcntl (pipe_fds[1], F_DUPFD, 3);

    if (agent_stderr >= 0)
      dup2 (agent_stderr, STDERR_FILENO);
    /* Without --process the agent registers for its parent, us, and
     * says so on the notify fd (as systemctl runs it). */
    g_snprintf (fd_str, sizeof (fd_str), "%d", fd);
    execl (agent, agent, "--notify-fd", fd_str, "--fallback", NULL);
    _exit (127);
  }
  close (pipe_fds[1]);

  /* Wait until the agent is registered (it closes the notify fd), so the
   * call that follows can already prompt. */
  {
    struct pollfd pfd = { .fd = pipe_fds[0], .events = POLLIN };

    poll (&pfd, 1, 5000);
  }
  close (pipe_fds[0]);
  return pid;
}

void
bmapctl_polkit_agent_close (GPid pid)
{
  char buf[1024];
  ssize_t n;

  if (pid <= 0)
    return;
  kill (pid, SIGTERM);
  waitpid (pid, NULL, 0);
  if (agent_stderr < 0)
    return;
  n = pread (agent_stderr, buf, sizeof (buf) - 1, 0);
  close (agent_stderr);
  agent_stderr = -1;
  g_clear_pointer (&agent_failure, g_free);
  if (n > 0) {
    buf[n] = '\0';
    agent_failure = g_strstrip (g_strdup (buf));
    g_debug ("pkttyagent: %s", agent_failure);
  }
}

const char *
bmapctl_polkit_agent_failure (void)
{
  return agent_failure != NULL && agent_failure[0] != '\0' ? agent_failure : NULL;
}

/* ---- properties -------------------------------------------------------- */

typedef struct {
  const char *name;
  char type;
  gsize offset;
} PropSpec;

static int
read_props (sd_bus_message *m, const PropSpec *specs, gsize n_specs, gpointer object)
{
  int r = sd_bus_message_enter_container (m, SD_BUS_TYPE_ARRAY, "{sv}");

  if (r < 0)
    return r;
  while ((r = sd_bus_message_enter_container (m, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
    const char *name = NULL;
    const char *contents = NULL;
    const PropSpec *spec = NULL;
    char type;

    r = sd_bus_message_read (m, "s", &name);
    if (r < 0)
      return r;
    r = sd_bus_message_peek_type (m, &type, &contents);
    if (r < 0)
      return r;
    for (gsize i = 0; i < n_specs; i++) {
      if (g_str_equal (specs[i].name, name) && contents != NULL && contents[0] == specs[i].type
          && contents[1] == '\0') {
        spec = &specs[i];
        break;
      }
    }
    if (spec == NULL) {
      r = sd_bus_message_skip (m, "v");
    } else {
      gpointer field = G_STRUCT_MEMBER_P (object, spec->offset);

      r = sd_bus_message_enter_container (m, SD_BUS_TYPE_VARIANT, contents);
      if (r < 0)
        return r;
      switch (spec->type) {
        case 's':
        case 'o': {
          const char *s = NULL;

          r = sd_bus_message_read_basic (m, spec->type, &s);
          if (r >= 0) {
            g_free (*(char **) field);
            *(char **) field = g_strdup (s);
          }
          break;
        }
        case 'b': {
          int b = 0;

          r = sd_bus_message_read_basic (m, 'b', &b);
          *(gboolean *) field = b != 0;
          break;
        }
        default:
          r = sd_bus_message_read_basic (m, spec->type, field);
          break;
      }
      if (r < 0)
        return r;
      r = sd_bus_message_exit_container (m);
    }
    if (r < 0)
      return r;
    r = sd_bus_message_exit_container (m);
    if (r < 0)
      return r;
  }
  if (r < 0)
    return r;
  return sd_bus_message_exit_container (m);
}

#define DEV(name, type, field)                                                                     \
  {                                                                                                \
    name, type, G_STRUCT_OFFSET (BmapctlDevice, field)                                             \
  }
static const PropSpec device_props[] = {
  DEV ("Node", 's', node),
  DEV ("Name", 's', name),
  DEV ("Size", 't', size),
  DEV ("LogicalBlockSize", 'u', logical_block_size),
  DEV ("Vendor", 's', vendor),
  DEV ("Model", 's', model),
  DEV ("Serial", 's', serial),
  DEV ("Bus", 's', bus),
  DEV ("Removable", 'b', removable),
  DEV ("System", 'b', system),
  DEV ("ReadOnly", 'b', read_only),
  DEV ("MediaPresent", 'b', media_present),
  DEV ("Busy", 'b', busy),
  DEV ("DiskSeq", 't', diskseq),
  DEV ("Job", 'o', job),
  DEV ("PartitionOf", 'o', partition_of),
};
#undef DEV

#define JOB(name, type, field)                                                                     \
  {                                                                                                \
    name, type, G_STRUCT_OFFSET (BmapctlJob, field)                                                \
  }
static const PropSpec job_props[] = {
  JOB ("Id", 'u', id),
  JOB ("Operation", 's', operation),
  JOB ("Device", 'o', device),
  JOB ("Description", 's', description),
  JOB ("State", 's', state),
  JOB ("BytesTotal", 't', bytes_total),
  JOB ("BytesDone", 't', bytes_done),
  JOB ("Progress", 'd', progress),
  JOB ("Rate", 't', rate),
  JOB ("StartTime", 't', start_time),
  JOB ("ExpectedEndTime", 't', expected_end_time),
  JOB ("StartedByUid", 'u', started_by_uid),
  JOB ("ErrorName", 's', error_name),
  JOB ("ErrorMessage", 's', error_message),
  JOB ("BytesChecked", 't', bytes_checked),
  JOB ("BytesWritten", 't', bytes_written),
  JOB ("Result", 's', result),
};
#undef JOB

#define RULE(name, type, field)                                                                    \
  {                                                                                                \
    name, type, G_STRUCT_OFFSET (BmapctlRule, field)                                               \
  }
static const PropSpec rule_props[] = {
  RULE ("Id", 'u', id),
  RULE ("Source", 's', source),
  RULE ("ConfigFile", 's', config_file),
  RULE ("Description", 's', description),
  RULE ("Count", 'u', count),
  RULE ("Flashed", 'u', flashed),
  RULE ("Failed", 'u', failed),
  RULE ("StartedByUid", 'u', started_by_uid),
};
#undef RULE

int
bmapctl_read_device_props (sd_bus_message *m, BmapctlDevice *device)
{
  return read_props (m, device_props, G_N_ELEMENTS (device_props), device);
}

int
bmapctl_read_job_props (sd_bus_message *m, BmapctlJob *job)
{
  return read_props (m, job_props, G_N_ELEMENTS (job_props), job);
}

int
bmapctl_read_rule_props (sd_bus_message *m, BmapctlRule *rule)
{
  return read_props (m, rule_props, G_N_ELEMENTS (rule_props), rule);
}

void
bmapctl_device_free (BmapctlDevice *device)
{
  if (device == NULL)
    return;
  g_free (device->path);
  g_free (device->node);
  g_free (device->name);
  g_free (device->vendor);
  g_free (device->model);
  g_free (device->serial);
  g_free (device->bus);
  g_free (device->job);
  g_free (device->partition_of);
  g_free (device);
}

void
bmapctl_job_free (BmapctlJob *job)
{
  if (job == NULL)
    return;
  g_free (job->path);
  g_free (job->operation);
  g_free (job->device);
  g_free (job->description);
  g_free (job->state);
  g_free (job->error_name);
  g_free (job->error_message);
  g_free (job->result);
  g_free (job);
}

void
bmapctl_rule_free (BmapctlRule *rule)
{
  if (rule == NULL)
    return;
  g_free (rule->path);
  g_free (rule->source);
  g_free (rule->config_file);
  g_free (rule->description);
  g_free (rule);
}

static int
compare_by_path (gconstpointer a, gconstpointer b)
{
  /* Every listed struct starts with its path. */
  const char *pa = **(char *const *const *) a;
  const char *pb = **(char *const *const *) b;
  gsize la = strlen (pa), lb = strlen (pb);

  /* Shorter first, so job/9 sorts before job/10. */
  return la != lb ? (la < lb ? -1 : 1) : strcmp (pa, pb);
}

int
bmapctl_read_interfaces (sd_bus_message *m, const char *path, GPtrArray *devices, GPtrArray *jobs,
                         GPtrArray *rules)
{
  int r = sd_bus_message_enter_container (m, SD_BUS_TYPE_ARRAY, "{sa{sv}}");

  while (r > 0 && (r = sd_bus_message_enter_container (m, SD_BUS_TYPE_DICT_ENTRY, "sa{sv}")) > 0) {
    const char *iface = NULL;

    r = sd_bus_message_read (m, "s", &iface);
    if (r < 0)
      break;
    if (g_str_equal (iface, BMAPD_DEVICE_IFACE) && devices != NULL) {
      BmapctlDevice *d = g_new0 (BmapctlDevice, 1);

      d->path = g_strdup (path);
      g_ptr_array_add (devices, d);
      r = bmapctl_read_device_props (m, d);
    } else if (g_str_equal (iface, BMAPD_JOB_IFACE) && jobs != NULL) {
      BmapctlJob *j = g_new0 (BmapctlJob, 1);

      j->path = g_strdup (path);
      g_ptr_array_add (jobs, j);
      r = bmapctl_read_job_props (m, j);
    } else if (g_str_equal (iface, BMAPD_AUTOFLASH_IFACE) && rules != NULL) {
      BmapctlRule *rule = g_new0 (BmapctlRule, 1);

      rule->path = g_strdup (path);
      g_ptr_array_add (rules, rule);
      r = bmapctl_read_rule_props (m, rule);
    } else {
      r = sd_bus_message_skip (m, "a{sv}");
    }
    if (r >= 0)
      r = sd_bus_message_exit_container (m);
    if (r >= 0)
      r = 1;
  }
  if (r < 0)
    return r;
  return sd_bus_message_exit_container (m);
}

gboolean
bmapctl_get_managed_objects (sd_bus *bus, GPtrArray **devices, GPtrArray **jobs, GPtrArray **rules,
                             GError **error)
{
  sd_bus_error bus_error = SD_BUS_ERROR_NULL;
  g_autoptr (sd_bus_message) reply = NULL;
  g_autoptr (GPtrArray) devs
      = g_ptr_array_new_with_free_func ((GDestroyNotify) bmapctl_device_free);
  g_autoptr (GPtrArray) js = g_ptr_array_new_with_free_func ((GDestroyNotify) bmapctl_job_free);
  g_autoptr (GPtrArray) rs = g_ptr_array_new_with_free_func ((GDestroyNotify) bmapctl_rule_free);
  int r;

  r = sd_bus_call_method (bus, BMAPD_BUS_NAME, BMAPD_MANAGER_PATH,
                          "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", &bus_error,
                          &reply, "");
  if (r < 0) {
    bmapctl_bus_set_error (error, &bus_error, r, "listing the devices");
    sd_bus_error_free (&bus_error);
    return FALSE;
  }

  r = sd_bus_message_enter_container (reply, SD_BUS_TYPE_ARRAY, "{oa{sa{sv}}}");
  while (r > 0
         && (r = sd_bus_message_enter_container (reply, SD_BUS_TYPE_DICT_ENTRY, "oa{sa{sv}}"))
                > 0) {
    const char *path = NULL;

    r = sd_bus_message_read (reply, "o", &path);
    if (r >= 0)
      r = bmapctl_read_interfaces (reply, path, devs, js, rs);
    if (r >= 0)
      r = sd_bus_message_exit_container (reply); /* dict entry */
    if (r >= 0)
      r = 1;
  }
  if (r < 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "cannot read bmapd's object list: %s",
                 g_strerror (-r));
    return FALSE;
  }

  g_ptr_array_sort (devs, compare_by_path);
  g_ptr_array_sort (js, compare_by_path);
  g_ptr_array_sort (rs, compare_by_path);
  if (devices != NULL)
    *devices = g_steal_pointer (&devs);
  if (jobs != NULL)
    *jobs = g_steal_pointer (&js);
  if (rules != NULL)
    *rules = g_steal_pointer (&rs);
  return TRUE;
}

void
bmapctl_index_by_path (GHashTable *table, GPtrArray *objects)
{
  g_ptr_array_set_free_func (objects, NULL);
  for (guint i = 0; i < objects->len; i++) {
    char **object = g_ptr_array_index (objects, i);

    g_hash_table_replace (table, *object, object);
  }
  g_ptr_array_set_size (objects, 0);
}

BmapctlJob *
bmapctl_get_job (sd_bus *bus, const char *path, GError **error)
{
  sd_bus_error bus_error = SD_BUS_ERROR_NULL;
  g_autoptr (sd_bus_message) reply = NULL;
  g_autoptr (BmapctlJob) job = g_new0 (BmapctlJob, 1);
  int r;

  r = sd_bus_call_method (bus, BMAPD_BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll",
                          &bus_error, &reply, "s", BMAPD_JOB_IFACE);
  if (r >= 0)
    r = bmapctl_read_job_props (reply, job);
  if (r < 0) {
    bmapctl_bus_set_error (error, &bus_error, r, path);
    sd_bus_error_free (&bus_error);
    return NULL;
  }
  job->path = g_strdup (path);
  return g_steal_pointer (&job);
}

BmapctlDevice *
bmapctl_find_device (GPtrArray *devices, const char *dest)
{
  g_autofree char *real = realpath (dest, NULL);
  const char *base = strrchr (dest, '/');

  for (guint i = 0; i < devices->len; i++) {
    BmapctlDevice *d = g_ptr_array_index (devices, i);

    if (g_strcmp0 (d->node, dest) == 0 || g_strcmp0 (d->path, dest) == 0
        || (real != NULL && g_strcmp0 (d->node, real) == 0)
        || (base == NULL && g_strcmp0 (d->name, dest) == 0))
      return d;
  }
  return NULL;
}

BmapctlJob *
bmapctl_find_job (GPtrArray *jobs, const char *id_or_path)
{
  for (guint i = 0; i < jobs->len; i++) {
    BmapctlJob *j = g_ptr_array_index (jobs, i);
    g_autofree char *id = g_strdup_printf ("%u", j->id);

    if (g_str_equal (j->path, id_or_path) || g_str_equal (id, id_or_path))
      return j;
  }
  return NULL;
}
