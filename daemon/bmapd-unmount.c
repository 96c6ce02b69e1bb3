/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mount.h>

#include "bmap-error.h"
#include "bmapd-fd.h"
#include "bmapd-log.h"
#include "bmapd-sd.h"
#include "bmapd-unmount.h"

#define UDISKS_NAME         "org.freedesktop.UDisks2"
#define UDISKS_BLOCK_PREFIX "/org/freedesktop/UDisks2/block_devices"
#define UDISKS_FILESYSTEM   "org.freedesktop.UDisks2.Filesystem"
/* umount2() flushes what was written to the filesystem: it may take a
 * while, on a thread; past this long the flash fails (the unmount goes on
 * in the background). */
#define UMOUNT_TIMEOUT_SEC 300

struct _BmapdUnmount {
  sd_bus *bus;
  char *node;
  char **partitions;
  char **mount_points;
  guint next; /* index into partitions for udisks */
  sd_bus_slot *slot;
  sd_event_source *defer_source;
  BmapdFdWorker *worker; /* umount2() without udisks2 */
  BmapdUnmountFunc func;
  gpointer user_data;
};

static void
done (BmapdUnmount *unmount, GError *error)
{
  /* The callback may free @unmount. */
  unmount->func (error, unmount->user_data);
}

/* Deeper mount points first, so nested mounts come off before their parents. */
static gint
compare_depth (gconstpointer a, gconstpointer b)
{
  const char *sa = *(const char *const *) a;
  const char *sb = *(const char *const *) b;
  return (gint) strlen (sb) - (gint) strlen (sa);
}

/* What the umount2() thread works on. */
typedef struct {
  char *node;
  GPtrArray *mount_points; /* char *, deepest first */
} DirectWork;

static void
direct_work_free (DirectWork *work)
{
  g_free (work->node);
  g_ptr_array_unref (work->mount_points);
  g_free (work);
}

static gboolean
direct_work_run (gpointer data, GCancellable *cancellable, GError **error)
{
  DirectWork *work = data;

  for (guint i = 0; i < work->mount_points->len; i++) {
    const char *mp = g_ptr_array_index (work->mount_points, i);
    if (umount2 (mp, UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT) {
      int errsv = errno;
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY, "%s: cannot unmount %s: %s",
                   work->node, mp, g_strerror (errsv));
      return FALSE;
    }
    bmapd_log (LOG_INFO, "%s: unmounted %s", work->node, mp);
  }
  return TRUE;
}

static void
on_direct_done (gpointer data, const GError *error, gpointer user_data)
{
  BmapdUnmount *unmount = user_data;
  /* The worker owns @error, and the callback may free the worker. */
  g_autoptr (GError) copy = error != NULL ? g_error_copy (error) : NULL;

  done (unmount, copy);
}

static void
unmount_directly (BmapdUnmount *unmount)
{
  g_autoptr (GError) error = NULL;
  DirectWork *work = g_new0 (DirectWork, 1);

  work->node = g_strdup (unmount->node);
  work->mount_points = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; unmount->mount_points[i] != NULL; i++)
    g_ptr_array_add (work->mount_points, g_strdup (unmount->mount_points[i]));
  g_ptr_array_sort (work->mount_points, compare_depth);
  unmount->worker = bmapd_fd_worker_start_full (
      sd_bus_get_event (unmount->bus), unmount->node, UMOUNT_TIMEOUT_SEC, NULL, direct_work_run,
      work, (GDestroyNotify) direct_work_free, on_direct_done, unmount, &error);
  if (unmount->worker == NULL)
    done (unmount, error);
}

static void udisks_next (BmapdUnmount *unmount);

static int
on_udisks_reply (sd_bus_message *reply, void *user_data, sd_bus_error *ret_error)
{
  BmapdUnmount *unmount = user_data;
  const char *name = unmount->partitions[unmount->next];

  unmount->slot = sd_bus_slot_unref (unmount->slot);
  if (sd_bus_message_is_method_error (reply, NULL)) {
    const sd_bus_error *e = sd_bus_message_get_error (reply);

    if (sd_bus_error_has_names (e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER)) {
      /* No udisks2 on this system. */
      unmount_directly (unmount);
      return 0;
    }
    /* Not mounted, or no filesystem on that partition: nothing to do. */
    if (!sd_bus_error_has_names (e, "org.freedesktop.UDisks2.Error.NotMounted",
                                 SD_BUS_ERROR_UNKNOWN_METHOD, SD_BUS_ERROR_UNKNOWN_OBJECT,
                                 SD_BUS_ERROR_UNKNOWN_INTERFACE)) {
      g_autoptr (GError) error = NULL;
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                   "%s: udisks2 cannot unmount /dev/%s: %s", unmount->node, name,
                   e->message != NULL ? e->message : e->name);
      done (unmount, error);
      return 0;
    }
  } else {
    bmapd_log (LOG_INFO, "%s: unmounted /dev/%s through udisks2", unmount->node, name);
  }
  unmount->next++;
  udisks_next (unmount);
  return 0;
}

static void
udisks_next (BmapdUnmount *unmount)
{
  g_autoptr (sd_bus_message) m = NULL;
  char *path = NULL;
  int r;

  if (unmount->partitions[unmount->next] == NULL) {
    done (unmount, NULL);
    return;
  }
  r = sd_bus_path_encode (UDISKS_BLOCK_PREFIX, unmount->partitions[unmount->next], &path);
  if (r >= 0)
    r = sd_bus_message_new_method_call (unmount->bus, &m, UDISKS_NAME, path, UDISKS_FILESYSTEM,
                                        "Unmount");
  free (path);
  if (r >= 0)
    r = sd_bus_message_append (m, "a{sv}", 0);
  if (r >= 0)
    r = sd_bus_call_async (unmount->bus, &unmount->slot, m, on_udisks_reply, unmount,
                           60 * G_USEC_PER_SEC);
  if (r < 0) {
    bmapd_log (LOG_WARNING, "%s: cannot ask udisks2 to unmount: %s", unmount->node,
               g_strerror (-r));
    unmount_directly (unmount);
  }
}

static int
on_start (sd_event_source *source, void *user_data)
{
  BmapdUnmount *unmount = user_data;

  unmount->defer_source = sd_event_source_disable_unref (unmount->defer_source);
  for (guint i = 0; unmount->mount_points[i] != NULL; i++) {
    if (g_str_equal (unmount->mount_points[i], "[SWAP]")) {
      g_autoptr (GError) error = NULL;
      g_set_error (&error, BMAP_ERROR, BMAP_ERROR_DEVICE_BUSY,
                   "%s is used as swap; bmapd does not turn swap off (swapoff it first)",
                   unmount->node);
      done (unmount, error);
      return 0;
    }
  }
  if (unmount->mount_points[0] == NULL) {
    done (unmount, NULL);
    return 0;
  }
  udisks_next (unmount);
  return 0;
}

BmapdUnmount *
bmapd_unmount_start (sd_bus *bus, const char *node, const char *const *partitions,
                     const char *const *mount_points, BmapdUnmountFunc func, gpointer user_data,
                     GError **error)
{
  g_autoptr (BmapdUnmount) unmount = g_new0 (BmapdUnmount, 1);
  int r;

  unmount->bus = sd_bus_ref (bus);
  unmount->node = g_strdup (node);
  unmount->partitions = g_strdupv ((char **) partitions);
  unmount->mount_points = g_strdupv ((char **) mount_points);
  unmount->func = func;
  unmount->user_data = user_data;
  /* Start from the loop so that @func never runs before we return. */
  r = sd_event_add_defer (sd_bus_get_event (bus), &unmount->defer_source, on_start, unmount);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "%s: cannot schedule unmounting", node);
    return NULL;
  }
  return g_steal_pointer (&unmount);
}

void
bmapd_unmount_free (BmapdUnmount *unmount)
{
  if (unmount == NULL)
    return;
  sd_bus_slot_unref (unmount->slot);
  sd_event_source_disable_unref (unmount->defer_source);
  bmapd_fd_worker_free (unmount->worker);
  sd_bus_unref (unmount->bus);
  g_free (unmount->node);
  g_strfreev (unmount->partitions);
  g_strfreev (unmount->mount_points);
  g_free (unmount);
}
