/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bmapd-flasher-client.h"
#include "bmapd-flasher-dbus.h"

#define BMAPD_BUS_NAME        "org.bmapd.bmapd1"
#define BMAPD_MANAGER_PATH    "/org/bmapd/bmapd1"
#define BMAPD_JOB_IFACE       "org.bmapd.bmapd1.Job"
#define BMAPD_DEVICE_IFACE    "org.bmapd.bmapd1.Device"
#define BMAPD_AUTOFLASH_IFACE "org.bmapd.bmapd1.AutoFlash"

struct _BmapdFlasherClient {
  GObject parent_instance;
  GDBusObjectManager *manager;
  BmapdFlasherDbusManager *manager_proxy;
  GListStore *devices;
  /* Jobs this app started: object path -> BmapdFlasherJob; and those whose
   * Flash call has not been answered yet, by device path. */
  GHashTable *jobs;
  GHashTable *pending;
  /* Station mode: the rule's cards' jobs are followed too. */
  BmapdFlasherStation *station;
};

G_DEFINE_TYPE (BmapdFlasherClient, bmapd_flasher_client, G_TYPE_OBJECT)

static void
bmapd_flasher_client_dispose (GObject *object)
{
  BmapdFlasherClient *self = BMAPD_FLASHER_CLIENT (object);

  if (self->manager != NULL)
    g_signal_handlers_disconnect_by_data (self->manager, self);
  g_clear_object (&self->manager);
  g_clear_object (&self->manager_proxy);
  g_clear_object (&self->devices);
  g_clear_pointer (&self->jobs, g_hash_table_unref);
  g_clear_pointer (&self->pending, g_hash_table_unref);
  g_clear_object (&self->station);
  G_OBJECT_CLASS (bmapd_flasher_client_parent_class)->dispose (object);
}

static void
bmapd_flasher_client_class_init (BmapdFlasherClientClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = bmapd_flasher_client_dispose;
}

static void
bmapd_flasher_client_init (BmapdFlasherClient *self)
{
  self->devices = g_list_store_new (BMAPD_FLASHER_TYPE_DEVICE);
  self->jobs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_object_unref);
  self->pending = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_object_unref);
}

/* The proxy's cached properties as one a{sv}. */
static GVariant *
proxy_dup_properties (GDBusProxy *proxy)
{
  g_auto (GStrv) names = g_dbus_proxy_get_cached_property_names (proxy);
  GVariantBuilder builder;

  g_variant_builder_init (&builder, G_VARIANT_TYPE_VARDICT);
  for (guint i = 0; names != NULL && names[i] != NULL; i++) {
    g_autoptr (GVariant) value = g_dbus_proxy_get_cached_property (proxy, names[i]);
    if (value != NULL)
      g_variant_builder_add (&builder, "{sv}", names[i], value);
  }
  return g_variant_ref_sink (g_variant_builder_end (&builder));
}

static gboolean
is_station_rule (BmapdFlasherClient *self, const char *object_path)
{
  return self->station != NULL
         && g_strcmp0 (bmapd_flasher_station_get_rule (self->station), object_path) == 0;
}

static gboolean
find_device (BmapdFlasherClient *self, const char *object_path, guint *position)
{
  guint n = g_list_model_get_n_items (G_LIST_MODEL (self->devices));

  for (guint i = 0; i < n; i++) {
    g_autoptr (BmapdFlasherDevice) device = g_list_model_get_item (G_LIST_MODEL (self->devices), i);
    if (g_strcmp0 (bmapd_flasher_device_get_object_path (device), object_path) == 0) {
      *position = i;
      return TRUE;
    }
  }
  return FALSE;
}

static void
add_device (BmapdFlasherClient *self, GDBusProxy *proxy)
{
  g_autoptr (GVariant) properties = proxy_dup_properties (proxy);
  g_autoptr (BmapdFlasherDevice) device = NULL;
  guint position;

  if (find_device (self, g_dbus_proxy_get_object_path (proxy), &position))
    return;
  device = bmapd_flasher_device_new (g_dbus_proxy_get_object_path (proxy), properties);
  /* The app writes whole cards: a card's partitions are not listed. */
  if (bmapd_flasher_device_is_partition (device))
    return;
  g_list_store_append (self->devices, device);
}

/* A card the armed station's rule took: bmapd gives its job the rule's
 * description and the uid that armed it. */
static BmapdFlasherJob *
lookup_station_job (BmapdFlasherClient *self, GDBusProxy *proxy, const char *device_path)
{
  const char *path = g_dbus_proxy_get_object_path (proxy);
  g_autoptr (GVariant) description = g_dbus_proxy_get_cached_property (proxy, "Description");
  g_autoptr (GVariant) uid = g_dbus_proxy_get_cached_property (proxy, "StartedByUid");
  g_autoptr (BmapdFlasherJob) job = NULL;
  g_autofree char *name = NULL;
  g_autofree char *node = NULL;
  guint position;

  if (self->station == NULL || !bmapd_flasher_station_is_armed (self->station)
      || description == NULL || !g_variant_is_of_type (description, G_VARIANT_TYPE_STRING)
      || uid == NULL || !g_variant_is_of_type (uid, G_VARIANT_TYPE_UINT32)
      || g_variant_get_uint32 (uid) != getuid ()
      || g_strcmp0 (g_variant_get_string (description, NULL),
                    bmapd_flasher_station_get_description (self->station))
             != 0)
    return NULL;
  if (find_device (self, device_path, &position)) {
    g_autoptr (BmapdFlasherDevice) device
        = g_list_model_get_item (G_LIST_MODEL (self->devices), position);
    name = bmapd_flasher_device_dup_display_name (device);
    node = g_strdup (bmapd_flasher_device_get_node (device));
  }
  job = bmapd_flasher_job_new (device_path, name != NULL ? name : device_path,
                               node != NULL ? node : "");
  bmapd_flasher_job_set_object_path (job, path);
  g_hash_table_insert (self->jobs, g_strdup (path), g_object_ref (job));
  bmapd_flasher_station_add_job (self->station, job);
  return job;
}

static void send_cancel (BmapdFlasherClient *self, BmapdFlasherJob *job);

/* The job has its path: followed from here on, and a cancel the person
 * asked for while Flash was unanswered is sent now (the job is queued,
 * the earliest it can be canceled). */
static void
job_found (BmapdFlasherClient *self, BmapdFlasherJob *job, const char *path)
{
  bmapd_flasher_job_set_object_path (job, path);
  g_hash_table_replace (self->jobs, g_strdup (path), g_object_ref (job));
  if (bmapd_flasher_job_take_pending_cancel (job))
    send_cancel (self, job);
}

/* Our job, known by its path, or the pending one for its device. */
static BmapdFlasherJob *
lookup_job (BmapdFlasherClient *self, GDBusProxy *proxy)
{
  const char *path = g_dbus_proxy_get_object_path (proxy);
  BmapdFlasherJob *job = g_hash_table_lookup (self->jobs, path);
  g_autoptr (GVariant) device = NULL;

  if (job != NULL)
    return job;
  device = g_dbus_proxy_get_cached_property (proxy, "Device");
  if (device == NULL || !g_variant_is_of_type (device, G_VARIANT_TYPE_OBJECT_PATH))
    return NULL;
  job = g_hash_table_lookup (self->pending, g_variant_get_string (device, NULL));
  if (job == NULL)
    return lookup_station_job (self, proxy, g_variant_get_string (device, NULL));
  /* bmapd adds the job once polkit said yes, and its signals may come
   * before Flash's answer: follow it from its first state on. */
  job_found (self, job, path);
  return job;
}

static void
on_interface_added (GDBusObjectManager *manager, GDBusObject *object, GDBusInterface *interface,
                    gpointer user_data)
{
  BmapdFlasherClient *self = user_data;
  const char *name = g_dbus_proxy_get_interface_name (G_DBUS_PROXY (interface));
  const char *object_path = g_dbus_proxy_get_object_path (G_DBUS_PROXY (interface));

  if (g_strcmp0 (name, BMAPD_DEVICE_IFACE) == 0) {
    add_device (self, G_DBUS_PROXY (interface));
  } else if (g_strcmp0 (name, BMAPD_AUTOFLASH_IFACE) == 0 && is_station_rule (self, object_path)) {
    g_autoptr (GVariant) properties = proxy_dup_properties (G_DBUS_PROXY (interface));
    bmapd_flasher_station_update (self->station, properties);
  } else if (g_strcmp0 (name, BMAPD_JOB_IFACE) == 0) {
    BmapdFlasherJob *job = lookup_job (self, G_DBUS_PROXY (interface));
    if (job != NULL) {
      g_autoptr (GVariant) properties = proxy_dup_properties (G_DBUS_PROXY (interface));
      bmapd_flasher_job_update (job, properties);
    }
  }
}

static void
on_object_added (GDBusObjectManager *manager, GDBusObject *object, gpointer user_data)
{
  g_autolist (GDBusInterface) interfaces = g_dbus_object_get_interfaces (object);

  for (GList *l = interfaces; l != NULL; l = l->next)
    on_interface_added (manager, object, l->data, user_data);
}

static void
on_interface_removed (GDBusObjectManager *manager, GDBusObject *object, GDBusInterface *interface,
                      gpointer user_data)
{
  BmapdFlasherClient *self = user_data;
  const char *name = g_dbus_proxy_get_interface_name (G_DBUS_PROXY (interface));
  guint position;

  if (g_strcmp0 (name, BMAPD_DEVICE_IFACE) == 0
      && find_device (self, g_dbus_object_get_object_path (object), &position))
    g_list_store_remove (self->devices, position);
  else if (g_strcmp0 (name, BMAPD_AUTOFLASH_IFACE) == 0
           && is_station_rule (self, g_dbus_object_get_object_path (object)))
    bmapd_flasher_station_disarm (self->station);
}

static void
on_object_removed (GDBusObjectManager *manager, GDBusObject *object, gpointer user_data)
{
  g_autolist (GDBusInterface) interfaces = g_dbus_object_get_interfaces (object);

  for (GList *l = interfaces; l != NULL; l = l->next)
    on_interface_removed (manager, object, l->data, user_data);
}

static void
on_properties_changed (GDBusObjectManagerClient *manager, GDBusObjectProxy *object,
                       GDBusProxy *proxy, GVariant *changed, const char *const *invalidated,
                       gpointer user_data)
{
  BmapdFlasherClient *self = user_data;
  const char *name = g_dbus_proxy_get_interface_name (proxy);
  guint position;

  if (g_strcmp0 (name, BMAPD_DEVICE_IFACE) == 0
      && find_device (self, g_dbus_proxy_get_object_path (proxy), &position)) {
    g_autoptr (BmapdFlasherDevice) device
        = g_list_model_get_item (G_LIST_MODEL (self->devices), position);
    bmapd_flasher_device_update (device, changed, invalidated);
  } else if (g_strcmp0 (name, BMAPD_JOB_IFACE) == 0) {
    BmapdFlasherJob *job = lookup_job (self, proxy);
    if (job != NULL)
      bmapd_flasher_job_update (job, changed);
  } else if (g_strcmp0 (name, BMAPD_AUTOFLASH_IFACE) == 0
             && is_station_rule (self, g_dbus_proxy_get_object_path (proxy))) {
    bmapd_flasher_station_update (self->station, changed);
  }
}

static void
on_signal (GDBusObjectManagerClient *manager, GDBusObjectProxy *object, GDBusProxy *proxy,
           const char *sender, const char *signal_name, GVariant *parameters, gpointer user_data)
{
  BmapdFlasherClient *self = user_data;
  BmapdFlasherJob *job;

  if (g_strcmp0 (g_dbus_proxy_get_interface_name (proxy), BMAPD_JOB_IFACE) != 0)
    return;
  job = lookup_job (self, proxy);
  if (job == NULL)
    return;
  if (g_strcmp0 (signal_name, "Progress") == 0
      && g_variant_is_of_type (parameters, G_VARIANT_TYPE ("(ttt)"))) {
    guint64 done, total, rate;
    g_variant_get (parameters, "(ttt)", &done, &total, &rate);
    bmapd_flasher_job_progress (job, done, total, rate);
  } else if (g_strcmp0 (signal_name, "Finished") == 0
             && g_variant_is_of_type (parameters, G_VARIANT_TYPE ("(sss)"))) {
    const char *state, *error_name, *error_message;
    g_variant_get (parameters, "(&s&s&s)", &state, &error_name, &error_message);
    bmapd_flasher_job_finish (job, state, error_name, error_message);
  }
}

/* bmapd stopped (or crashed, or was restarted): its jobs went with it, and
 * no Finished will come for them. */
static void
on_name_owner (GDBusObjectManagerClient *manager, GParamSpec *pspec, gpointer user_data)
{
  BmapdFlasherClient *self = user_data;
  g_autofree char *owner = g_dbus_object_manager_client_get_name_owner (manager);
  GHashTableIter iter;
  gpointer job;

  if (owner != NULL)
    return;
  g_hash_table_iter_init (&iter, self->jobs);
  while (g_hash_table_iter_next (&iter, NULL, &job)) {
    if (!bmapd_flasher_job_is_finished (job))
      bmapd_flasher_job_finish (job, "failed", "org.freedesktop.DBus.Error.NameHasNoOwner",
                                _ ("bmapd stopped before the flash ended."));
  }
}

static void
on_manager_proxy_ready (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  BmapdFlasherClient *self = g_task_get_task_data (task);
  g_autoptr (GError) error = NULL;

  self->manager_proxy = bmapd_flasher_dbus_manager_proxy_new_for_bus_finish (result, &error);
  if (self->manager_proxy == NULL) {
    g_task_return_error (task, g_steal_pointer (&error));
    return;
  }
  g_task_return_pointer (task, g_object_ref (self), g_object_unref);
}

static void
on_manager_ready (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  BmapdFlasherClient *self = g_task_get_task_data (task);
  g_autoptr (GError) error = NULL;
  g_autolist (GDBusObject) objects = NULL;
  GCancellable *cancellable;

  self->manager = bmapd_flasher_dbus_object_manager_client_new_for_bus_finish (result, &error);
  if (self->manager == NULL) {
    g_prefix_error (&error, _ ("Cannot reach bmapd on the system bus: "));
    g_task_return_error (task, g_steal_pointer (&error));
    return;
  }
  g_signal_connect (self->manager, "object-added", G_CALLBACK (on_object_added), self);
  g_signal_connect (self->manager, "object-removed", G_CALLBACK (on_object_removed), self);
  g_signal_connect (self->manager, "interface-added", G_CALLBACK (on_interface_added), self);
  g_signal_connect (self->manager, "interface-removed", G_CALLBACK (on_interface_removed), self);
  g_signal_connect (self->manager, "interface-proxy-properties-changed",
                    G_CALLBACK (on_properties_changed), self);
  g_signal_connect (self->manager, "interface-proxy-signal", G_CALLBACK (on_signal), self);
  g_signal_connect (self->manager, "notify::name-owner", G_CALLBACK (on_name_owner), self);

  objects = g_dbus_object_manager_get_objects (self->manager);
  for (GList *l = objects; l != NULL; l = l->next)
    on_object_added (self->manager, l->data, self);

  /* Read before the task is handed on: argument order is unspecified. */
  cancellable = g_task_get_cancellable (task);
  bmapd_flasher_dbus_manager_proxy_new_for_bus (G_BUS_TYPE_SYSTEM, G_DBUS_PROXY_FLAGS_NONE,
                                                BMAPD_BUS_NAME, BMAPD_MANAGER_PATH, cancellable,
                                                on_manager_proxy_ready, g_steal_pointer (&task));
}

void
bmapd_flasher_client_new (GCancellable *cancellable, GAsyncReadyCallback callback,
                          gpointer user_data)
{
  BmapdFlasherClient *self = g_object_new (BMAPD_FLASHER_TYPE_CLIENT, NULL);
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);

  g_task_set_task_data (task, self, g_object_unref);
  bmapd_flasher_dbus_object_manager_client_new_for_bus (
      G_BUS_TYPE_SYSTEM, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_NONE, BMAPD_BUS_NAME,
      BMAPD_MANAGER_PATH, cancellable, on_manager_ready, task);
}

BmapdFlasherClient *
bmapd_flasher_client_new_finish (GAsyncResult *result, GError **error)
{
  return g_task_propagate_pointer (G_TASK (result), error);
}

GListModel *
bmapd_flasher_client_get_devices (BmapdFlasherClient *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_CLIENT (self), NULL);
  return G_LIST_MODEL (self->devices);
}

BmapdFlasherDevice *
bmapd_flasher_client_find_device_by_node (BmapdFlasherClient *self, const char *node)
{
  guint n;

  g_return_val_if_fail (BMAPD_FLASHER_IS_CLIENT (self), NULL);

  n = g_list_model_get_n_items (G_LIST_MODEL (self->devices));
  for (guint i = 0; i < n; i++) {
    g_autoptr (BmapdFlasherDevice) device = g_list_model_get_item (G_LIST_MODEL (self->devices), i);
    if (g_strcmp0 (bmapd_flasher_device_get_node (device), node) == 0)
      return device;
  }
  return NULL;
}

/* One Flash or FlashMany call and the jobs it is for. */
typedef struct {
  BmapdFlasherClient *client;
  BmapdFlasherImage *image;
  GPtrArray *devices;
  GPtrArray *jobs;
  BmapdFlasherFlashOptions options;
} FlashCall;

static void
flash_call_free (FlashCall *call)
{
  g_object_unref (call->client);
  g_object_unref (call->image);
  g_ptr_array_unref (call->devices);
  g_ptr_array_unref (call->jobs);
  g_free (call);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (FlashCall, flash_call_free)

static FlashCall *
flash_call_new (BmapdFlasherClient *self, BmapdFlasherImage *image, GPtrArray *devices,
                GPtrArray *jobs, const BmapdFlasherFlashOptions *options)
{
  FlashCall *call = g_new0 (FlashCall, 1);

  call->client = g_object_ref (self);
  call->image = g_object_ref (image);
  call->devices = g_ptr_array_ref (devices);
  call->jobs = g_ptr_array_ref (jobs);
  call->options = *options;
  return call;
}

/* The Job's path is known: followed from here, with what it did before. */
static void
flash_call_job_found (FlashCall *call, BmapdFlasherJob *job, const char *path)
{
  g_autoptr (GDBusInterface) proxy = NULL;

  job_found (call->client, job, path);
  proxy = g_dbus_object_manager_get_interface (call->client->manager, path, BMAPD_JOB_IFACE);
  if (proxy != NULL) {
    g_autoptr (GVariant) properties = proxy_dup_properties (G_DBUS_PROXY (proxy));
    bmapd_flasher_job_update (job, properties);
  }
}

static void
flash_call_unpend (FlashCall *call)
{
  for (guint i = 0; i < call->jobs->len; i++)
    g_hash_table_remove (call->client->pending,
                         bmapd_flasher_job_get_device_path (call->jobs->pdata[i]));
}

static void
on_flash_reply (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (FlashCall) call = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply = NULL;
  const char *path;

  flash_call_unpend (call);
  reply = g_dbus_proxy_call_with_unix_fd_list_finish (G_DBUS_PROXY (source), NULL, result, &error);
  if (reply == NULL) {
    bmapd_flasher_job_call_failed (call->jobs->pdata[0], error);
    return;
  }
  g_variant_get (reply, "(&o)", &path);
  flash_call_job_found (call, call->jobs->pdata[0], path);
}

static int
open_for_reading (const char *path, GError **error)
{
  int fd = g_open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY, 0);

  if (fd < 0) {
    int saved_errno = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved_errno), _ ("Cannot open %s: %s"),
                 path, g_strerror (saved_errno));
  }
  return fd;
}

/* A sealed memfd holding @bytes: bmapd reads exactly what the app parsed
 * and judged, even if the file changes meanwhile. */
static int
memfd_failed (int fd, const char *name, GError **error)
{
  int saved_errno = errno;

  if (fd >= 0)
    g_close (fd, NULL);
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved_errno),
               _ ("Cannot hand the %s to bmapd: %s"), name, g_strerror (saved_errno));
  return -1;
}

static int
memfd_for_bytes (GBytes *bytes, const char *name, GError **error)
{
  gsize len, done = 0;
  const char *buf = g_bytes_get_data (bytes, &len);
  int fd = memfd_create (name, MFD_CLOEXEC | MFD_ALLOW_SEALING);

  if (fd < 0)
    return memfd_failed (fd, name, error);
  while (done < len) {
    gssize n = write (fd, buf + done, len - done);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return memfd_failed (fd, name, error);
    done += (gsize) n;
  }
  if (lseek (fd, 0, SEEK_SET) != 0
      || fcntl (fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
    return memfd_failed (fd, name, error);
  return fd;
}

static gboolean
append_fd (GUnixFDList *fds, int fd, int *index, GError **error)
{
  if (fd < 0)
    return FALSE;
  *index = g_unix_fd_list_append (fds, fd, error);
  g_close (fd, NULL);
  return *index >= 0;
}

/* The image and its bmap as descriptors in @fds, with "bmap" (or
 * "nobmap"), "bmap-signature" when the bmap has one and @signature is
 * asked for (Flash and FlashMany take it, AddAutoFlash does not), "verify"
 * and "description" in @options; returns the image's index in @fds, -1 on
 * error. */
static int
add_image (BmapdFlasherImage *image, GUnixFDList *fds, GVariantBuilder *options,
           const char *description, gboolean with_signature, GError **error)
{
  int image_index;
  GBytes *bmap = bmapd_flasher_image_get_bmap_data (image);
  GBytes *signature = bmapd_flasher_image_get_signature (image);

  if (!append_fd (fds, open_for_reading (bmapd_flasher_image_get_path (image), error), &image_index,
                  error))
    return -1;
  if (bmap != NULL) {
    int bmap_index;

    if (!append_fd (fds, memfd_for_bytes (bmap, "bmap", error), &bmap_index, error))
      return -1;
    g_variant_builder_add (options, "{sv}", "bmap", g_variant_new_handle (bmap_index));
  } else {
    g_variant_builder_add (options, "{sv}", "nobmap", g_variant_new_boolean (TRUE));
  }
  /* bmapd judges it by its own trusted keys (the badge said what it will
   * find) and tells polkit: a rule may then ask no password. */
  if (with_signature && bmap != NULL && signature != NULL) {
    int sig_index;

    if (!append_fd (fds, memfd_for_bytes (signature, "bmap-signature", error), &sig_index, error))
      return -1;
    g_variant_builder_add (options, "{sv}", "bmap-signature", g_variant_new_handle (sig_index));
  }
  g_variant_builder_add (options, "{sv}", "verify", g_variant_new_boolean (TRUE));
  g_variant_builder_add (options, "{sv}", "description", g_variant_new_string (description));
  return image_index;
}

/* The person's choices, only those that are on. */
static void
add_choices (GVariantBuilder *builder, const BmapdFlasherFlashOptions *options)
{
  if (options->minimize_writes)
    g_variant_builder_add (builder, "{sv}", "minimize-writes", g_variant_new_boolean (TRUE));
  if (options->eject)
    g_variant_builder_add (builder, "{sv}", "eject", g_variant_new_boolean (TRUE));
  if (options->power_off)
    g_variant_builder_add (builder, "{sv}", "power-off", g_variant_new_boolean (TRUE));
}

/* Until Flash (or FlashMany) answers there is no job in bmapd: its jobs
 * are matched by device (lookup_job), and the app says it waits for
 * permission. */
static void
flash_call_pend (FlashCall *call)
{
  for (guint i = 0; i < call->jobs->len; i++) {
    g_hash_table_replace (call->client->pending,
                          g_strdup (bmapd_flasher_device_get_object_path (call->devices->pdata[i])),
                          g_object_ref (call->jobs->pdata[i]));
  }
}

static void
flash_call_failed (FlashCall *call, const GError *error)
{
  for (guint i = 0; i < call->jobs->len; i++)
    bmapd_flasher_job_call_failed (call->jobs->pdata[i], error);
}

/* Flash for one device. */
static void
flash_one (BmapdFlasherClient *self, BmapdFlasherImage *image, BmapdFlasherDevice *device,
           BmapdFlasherJob *job, const BmapdFlasherFlashOptions *choices)
{
  g_autoptr (GUnixFDList) fds = g_unix_fd_list_new ();
  g_autoptr (GError) error = NULL;
  g_auto (GVariantBuilder) options = G_VARIANT_BUILDER_INIT (G_VARIANT_TYPE_VARDICT);
  g_autoptr (GPtrArray) devices = g_ptr_array_new_with_free_func (g_object_unref);
  g_autoptr (GPtrArray) jobs = g_ptr_array_new_with_free_func (g_object_unref);
  FlashCall *call;
  int image_index;

  image_index
      = add_image (image, fds, &options, bmapd_flasher_image_get_basename (image), TRUE, &error);
  if (image_index < 0) {
    bmapd_flasher_job_call_failed (job, error);
    return;
  }
  /* The card the person saw, not one swapped in since. */
  if (bmapd_flasher_device_get_diskseq (device) != 0)
    g_variant_builder_add (&options, "{sv}", "diskseq",
                           g_variant_new_uint64 (bmapd_flasher_device_get_diskseq (device)));
  if (bmapd_flasher_device_get_busy (device))
    g_variant_builder_add (&options, "{sv}", "unmount", g_variant_new_boolean (TRUE));
  add_choices (&options, choices);
  /* No bind-to-caller: closing the window may leave the flash going on. */

  g_ptr_array_add (devices, g_object_ref (device));
  g_ptr_array_add (jobs, g_object_ref (job));
  call = flash_call_new (self, image, devices, jobs, choices);
  flash_call_pend (call);
  /* The generated call cannot carry the interactive-authorization flag:
   * call through the generated proxy's GDBusProxy. No timeout: polkit's
   * agent may wait for the person to type a password. */
  g_dbus_proxy_call_with_unix_fd_list (
      G_DBUS_PROXY (self->manager_proxy), "Flash",
      g_variant_new ("(oha{sv})", bmapd_flasher_device_get_object_path (device), image_index,
                     &options),
      G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, G_MAXINT, fds, NULL, on_flash_reply, call);
  bmapd_flasher_job_flash_called (job);
}

static void flash_many (BmapdFlasherClient *self, BmapdFlasherImage *image, GPtrArray *devices,
                        GPtrArray *jobs, const BmapdFlasherFlashOptions *choices);

/* Whether the interface the app was built with has FlashMany. */
static gboolean
have_flash_many (void)
{
  return g_dbus_interface_info_lookup_method (bmapd_flasher_dbus_manager_interface_info (),
                                              "FlashMany")
         != NULL;
}

static void
flash_each (BmapdFlasherClient *self, BmapdFlasherImage *image, GPtrArray *devices, GPtrArray *jobs,
            const BmapdFlasherFlashOptions *choices)
{
  for (guint i = 0; i < devices->len; i++)
    flash_one (self, image, devices->pdata[i], jobs->pdata[i], choices);
}

void
bmapd_flasher_client_flash (BmapdFlasherClient *self, BmapdFlasherImage *image, GPtrArray *devices,
                            GPtrArray *jobs, const BmapdFlasherFlashOptions *options)
{
  g_return_if_fail (BMAPD_FLASHER_IS_CLIENT (self));
  g_return_if_fail (devices->len == jobs->len);

  if (devices->len > 1 && have_flash_many ())
    flash_many (self, image, devices, jobs, options);
  else
    flash_each (self, image, devices, jobs, options);
}

static void
on_flash_many_reply (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (FlashCall) call = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply = NULL;
  g_autoptr (GVariantIter) paths = NULL;
  const char *path;
  guint i = 0;

  flash_call_unpend (call);
  reply = g_dbus_proxy_call_with_unix_fd_list_finish (G_DBUS_PROXY (source), NULL, result, &error);
  /* A bmapd older than the app: one Flash per device, as before. */
  if (reply == NULL && g_error_matches (error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD)) {
    g_debug ("bmapd has no FlashMany (%s): one Flash per device", error->message);
    flash_each (call->client, call->image, call->devices, call->jobs, &call->options);
    return;
  }
  if (reply == NULL) {
    flash_call_failed (call, error);
    return;
  }
  g_variant_get (reply, "(ao)", &paths);
  while (g_variant_iter_next (paths, "&o", &path) && i < call->jobs->len)
    flash_call_job_found (call, call->jobs->pdata[i++], path);
}

/* FlashMany for several devices: the image decoded once, one polkit
 * check for the set. */
static void
flash_many (BmapdFlasherClient *self, BmapdFlasherImage *image, GPtrArray *devices, GPtrArray *jobs,
            const BmapdFlasherFlashOptions *choices)
{
  g_autoptr (GUnixFDList) fds = g_unix_fd_list_new ();
  g_autoptr (GError) error = NULL;
  g_auto (GVariantBuilder) options = G_VARIANT_BUILDER_INIT (G_VARIANT_TYPE_VARDICT);
  g_auto (GVariantBuilder) paths = G_VARIANT_BUILDER_INIT (G_VARIANT_TYPE ("ao"));
  g_auto (GVariantBuilder) diskseqs = G_VARIANT_BUILDER_INIT (G_VARIANT_TYPE ("at"));
  FlashCall *call;
  gboolean unmount = FALSE;
  gboolean all_diskseqs = TRUE;
  int image_index;

  call = flash_call_new (self, image, devices, jobs, choices);
  image_index
      = add_image (image, fds, &options, bmapd_flasher_image_get_basename (image), TRUE, &error);
  if (image_index < 0) {
    flash_call_failed (call, error);
    flash_call_free (call);
    return;
  }
  for (guint i = 0; i < devices->len; i++) {
    guint64 diskseq = bmapd_flasher_device_get_diskseq (devices->pdata[i]);

    g_variant_builder_add (&paths, "o", bmapd_flasher_device_get_object_path (devices->pdata[i]));
    g_variant_builder_add (&diskseqs, "t", diskseq);
    unmount |= bmapd_flasher_device_get_busy (devices->pdata[i]);
    all_diskseqs &= diskseq != 0;
  }
  /* The cards the person saw, not ones swapped in since: FlashMany's
   * "diskseqs", one for each device, when bmapd told every one. */
  if (all_diskseqs)
    g_variant_builder_add (&options, "{sv}", "diskseqs", g_variant_builder_end (&diskseqs));
  if (unmount)
    g_variant_builder_add (&options, "{sv}", "unmount", g_variant_new_boolean (TRUE));
  add_choices (&options, choices);
  flash_call_pend (call);
  g_dbus_proxy_call_with_unix_fd_list (G_DBUS_PROXY (self->manager_proxy), "FlashMany",
                                       g_variant_new ("(aoha{sv})", &paths, image_index, &options),
                                       G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, G_MAXINT,
                                       fds, NULL, on_flash_many_reply, call);
  for (guint i = 0; i < jobs->len; i++)
    bmapd_flasher_job_flash_called (jobs->pdata[i]);
}

static void
on_add_auto_flash_reply (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (BmapdFlasherClient) self = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply = NULL;
  g_autoptr (GDBusInterface) proxy = NULL;
  const char *path;

  reply = g_dbus_proxy_call_with_unix_fd_list_finish (G_DBUS_PROXY (source), NULL, result, &error);
  if (self->station == NULL)
    return;
  if (reply == NULL) {
    g_dbus_error_strip_remote_error (error);
    bmapd_flasher_station_fail (self->station, error->message);
    return;
  }
  g_variant_get (reply, "(&o)", &path);
  bmapd_flasher_station_set_rule (self->station, path);
  proxy = g_dbus_object_manager_get_interface (self->manager, path, BMAPD_AUTOFLASH_IFACE);
  if (proxy != NULL) {
    g_autoptr (GVariant) properties = proxy_dup_properties (G_DBUS_PROXY (proxy));
    bmapd_flasher_station_update (self->station, properties);
  }
}

void
bmapd_flasher_client_arm_station (BmapdFlasherClient *self, BmapdFlasherImage *image,
                                  BmapdFlasherStation *station, GVariant *match, guint count,
                                  const BmapdFlasherFlashOptions *choices)
{
  /* Rules take minimize-writes too: a lab station refreshing boards. */
  BmapdFlasherFlashOptions card_choices = { .minimize_writes = choices->minimize_writes,
                                            .eject = choices->eject,
                                            .power_off = choices->power_off };
  g_autoptr (GUnixFDList) fds = g_unix_fd_list_new ();
  g_autoptr (GError) error = NULL;
  g_auto (GVariantBuilder) options = G_VARIANT_BUILDER_INIT (G_VARIANT_TYPE_VARDICT);
  g_autoptr (GVariant) match_ref = g_variant_ref_sink (match);
  int image_index;

  g_return_if_fail (BMAPD_FLASHER_IS_CLIENT (self));

  g_set_object (&self->station, station);
  image_index = add_image (image, fds, &options, bmapd_flasher_station_get_description (station),
                           FALSE, &error);
  if (image_index < 0) {
    bmapd_flasher_station_fail (station, error->message);
    return;
  }
  if (count > 0)
    g_variant_builder_add (&options, "{sv}", "count", g_variant_new_uint32 (count));
  add_choices (&options, &card_choices);
  /* No "keep": the rule goes when this app leaves the bus, so that no card
   * is flashed with nobody watching the station. */
  g_dbus_proxy_call_with_unix_fd_list (
      G_DBUS_PROXY (self->manager_proxy), "AddAutoFlash",
      g_variant_new ("(h@a{sv}a{sv})", image_index, match_ref, &options),
      G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, G_MAXINT, fds, NULL,
      on_add_auto_flash_reply, g_object_ref (self));
}

static void
on_remove_reply (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (BmapdFlasherStation) station = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply
      = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), result, &error);

  if (reply == NULL) {
    g_dbus_error_strip_remote_error (error);
    bmapd_flasher_station_fail (station, error->message);
    return;
  }
  bmapd_flasher_station_disarm (station);
}

void
bmapd_flasher_client_disarm_station (BmapdFlasherClient *self, BmapdFlasherStation *station)
{
  GDBusConnection *connection;

  g_return_if_fail (BMAPD_FLASHER_IS_CLIENT (self));

  if (bmapd_flasher_station_get_rule (station) == NULL || !bmapd_flasher_station_is_armed (station))
    return;
  connection = g_dbus_proxy_get_connection (G_DBUS_PROXY (self->manager_proxy));
  g_dbus_connection_call (connection, BMAPD_BUS_NAME, bmapd_flasher_station_get_rule (station),
                          BMAPD_AUTOFLASH_IFACE, "Remove", NULL, NULL,
                          G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, G_MAXINT, NULL,
                          on_remove_reply, g_object_ref (station));
}

static void
on_cancel_reply (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (BmapdFlasherJob) job = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply
      = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), result, &error);

  if (reply == NULL)
    g_warning ("Cancel of %s failed: %s", bmapd_flasher_job_get_object_path (job), error->message);
}

static void
send_cancel (BmapdFlasherClient *self, BmapdFlasherJob *job)
{
  GDBusConnection *connection;

  connection = g_dbus_proxy_get_connection (G_DBUS_PROXY (self->manager_proxy));
  g_dbus_connection_call (connection, BMAPD_BUS_NAME, bmapd_flasher_job_get_object_path (job),
                          BMAPD_JOB_IFACE, "Cancel", NULL, NULL,
                          G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, G_MAXINT, NULL,
                          on_cancel_reply, g_object_ref (job));
}

void
bmapd_flasher_client_cancel (BmapdFlasherClient *self, BmapdFlasherJob *job)
{
  g_return_if_fail (BMAPD_FLASHER_IS_CLIENT (self));

  if (bmapd_flasher_job_is_finished (job))
    return;
  /* Before Flash answered there is no job to cancel: remembered, and sent
   * by job_found(). */
  if (bmapd_flasher_job_get_object_path (job) == NULL) {
    bmapd_flasher_job_request_cancel (job);
    return;
  }
  bmapd_flasher_job_request_cancel (job);
  if (bmapd_flasher_job_take_pending_cancel (job))
    send_cancel (self, job);
}
