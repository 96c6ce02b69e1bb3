/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <stdlib.h>
#include <sys/sysmacros.h>

#include "bmapctl-summary.h"

typedef struct {
  char *name;
  guint32 number;
  guint64 size;
  char *label;
  char *type;
  char **mount_points;
} Part;

static void
part_clear (Part *part)
{
  g_free (part->name);
  g_free (part->label);
  g_free (part->type);
  g_strfreev (part->mount_points);
}

static GArray *
parts_new (void)
{
  GArray *parts = g_array_new (FALSE, TRUE, sizeof (Part));

  g_array_set_clear_func (parts, (GDestroyNotify) part_clear);
  return parts;
}

static int
read_part (sd_bus_message *m, Part *part)
{
  int r;

  while ((r = sd_bus_message_enter_container (m, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
    const char *key = NULL;
    const char *contents = NULL;
    char **string = NULL;

    r = sd_bus_message_read (m, "s", &key);
    if (r >= 0)
      r = sd_bus_message_peek_type (m, NULL, &contents);
    if (r < 0)
      return r;
    if (g_str_equal (key, "name"))
      string = &part->name;
    else if (g_str_equal (key, "label"))
      string = &part->label;
    else if (g_str_equal (key, "type"))
      string = &part->type;

    if (string != NULL && g_str_equal (contents, "s")) {
      const char *s = NULL;

      r = sd_bus_message_read (m, "v", "s", &s);
      if (r >= 0) {
        g_free (*string);
        *string = g_strdup (s);
      }
    } else if (g_str_equal (key, "size") && g_str_equal (contents, "t")) {
      r = sd_bus_message_read (m, "v", "t", &part->size);
    } else if (g_str_equal (key, "number") && g_str_equal (contents, "u")) {
      r = sd_bus_message_read (m, "v", "u", &part->number);
    } else if (g_str_equal (key, "mount-points") && g_str_equal (contents, "as")) {
      r = sd_bus_message_enter_container (m, SD_BUS_TYPE_VARIANT, "as");
      if (r >= 0) {
        g_strfreev (part->mount_points);
        part->mount_points = NULL;
        r = sd_bus_message_read_strv (m, &part->mount_points);
      }
      if (r >= 0)
        r = sd_bus_message_exit_container (m);
    } else {
      r = sd_bus_message_skip (m, "v");
    }
    if (r >= 0)
      r = sd_bus_message_exit_container (m);
    if (r < 0)
      return r;
  }
  return r;
}

/* The Device's Contents, when this bmapd publishes it. */
static GArray *
read_contents (sd_bus *bus, const char *path)
{
  sd_bus_error bus_error = SD_BUS_ERROR_NULL;
  g_autoptr (sd_bus_message) reply = NULL;
  g_autoptr (GArray) parts = parts_new ();
  int r;

  r = sd_bus_get_property (bus, BMAPD_BUS_NAME, path, BMAPD_DEVICE_IFACE, "Contents", &bus_error,
                           &reply, "aa{sv}");
  sd_bus_error_free (&bus_error);
  if (r < 0)
    return NULL;
  r = sd_bus_message_enter_container (reply, SD_BUS_TYPE_ARRAY, "a{sv}");
  while (r >= 0 && (r = sd_bus_message_enter_container (reply, SD_BUS_TYPE_ARRAY, "{sv}")) > 0) {
    Part part = { 0 };

    r = read_part (reply, &part);
    if (r >= 0)
      r = sd_bus_message_exit_container (reply);
    if (r < 0) {
      part_clear (&part);
      break;
    }
    g_array_append_val (parts, part);
  }
  if (r < 0) {
    g_debug ("%s: cannot read Contents: %s", path, g_strerror (-r));
    return NULL;
  }
  return g_steal_pointer (&parts);
}

/* udev escapes a label's unsafe bytes in its by-label link as \xNN. */
static char *
unescape_udev (const char *s)
{
  GString *out = g_string_new (NULL);

  while (*s != '\0') {
    if (s[0] == '\\' && s[1] == 'x' && g_ascii_isxdigit (s[2]) && g_ascii_isxdigit (s[3])) {
      g_string_append_c (out,
                         (char) (g_ascii_xdigit_value (s[2]) * 16 + g_ascii_xdigit_value (s[3])));
      s += 4;
    } else {
      g_string_append_c (out, *s++);
    }
  }
  return g_string_free (out, FALSE);
}

/* Filesystem labels by kernel name, from udev's /dev/disk/by-label. */
static GHashTable *
read_labels (void)
{
  GHashTable *labels = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_autoptr (GDir) dir = g_dir_open ("/dev/disk/by-label", 0, NULL);
  const char *entry;

  while (dir != NULL && (entry = g_dir_read_name (dir)) != NULL) {
    g_autofree char *link = g_build_filename ("/dev/disk/by-label", entry, NULL);
    g_autofree char *target = g_file_read_link (link, NULL);

    if (target != NULL)
      g_hash_table_replace (labels, g_path_get_basename (target), unescape_udev (entry));
  }
  return labels;
}

static gboolean
read_sysfs_u64 (const char *dir, const char *file, guint64 *value)
{
  g_autofree char *path = g_build_filename (dir, file, NULL);
  g_autofree char *text = NULL;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    return FALSE;
  return g_ascii_string_to_unsigned (g_strstrip (text), 10, 0, G_MAXUINT64, value, NULL);
}

static gint
compare_parts (gconstpointer a, gconstpointer b)
{
  const Part *pa = a, *pb = b;

  return pa->number < pb->number ? -1 : pa->number > pb->number;
}

/* The disk's partitions from sysfs (readable by anyone), with labels. */
static GArray *
read_sysfs_partitions (const char *name)
{
  g_autofree char *disk_dir = g_build_filename ("/sys/class/block", name, NULL);
  g_autoptr (GDir) dir = g_dir_open (disk_dir, 0, NULL);
  g_autoptr (GHashTable) labels = read_labels ();
  GArray *parts = parts_new ();
  const char *entry;

  while (dir != NULL && (entry = g_dir_read_name (dir)) != NULL) {
    g_autofree char *part_dir = g_build_filename (disk_dir, entry, NULL);
    guint64 number, sectors;
    Part part = { 0 };

    if (!g_str_has_prefix (entry, name) || !read_sysfs_u64 (part_dir, "partition", &number))
      continue;
    part.name = g_strdup (entry);
    part.number = (guint32) number;
    /* sysfs counts 512-byte sectors whatever the disk's block size. */
    if (read_sysfs_u64 (part_dir, "size", &sectors))
      part.size = sectors * 512;
    part.label = g_strdup (g_hash_table_lookup (labels, entry));
    g_array_append_val (parts, part);
  }
  g_array_sort (parts, compare_parts);
  return parts;
}

static void
append_part (GString *s, const Part *part)
{
  g_autofree char *size = bmapctl_format_size (part->size);

  g_string_append (s, part->name != NULL && part->name[0] != '\0' ? part->name : "?");
  if (part->label != NULL && part->label[0] != '\0')
    g_string_append_printf (s, " \"%s\"", part->label);
  if (part->type != NULL && part->type[0] != '\0')
    g_string_append_printf (s, " %s", part->type);
  if (part->size > 0)
    g_string_append_printf (s, " %s", size);
  if (part->mount_points != NULL && part->mount_points[0] != NULL) {
    g_autofree char *mounts = g_strjoinv (", ", part->mount_points);

    g_string_append_printf (s, " (mounted at %s)", mounts);
  }
}

char *
bmapctl_device_summary (sd_bus *bus, const BmapctlDevice *device)
{
  g_autoptr (GString) s = g_string_new (device->node);
  g_autoptr (GArray) parts = bus != NULL ? read_contents (bus, device->path) : NULL;
  g_autofree char *display = NULL;
  g_autofree char *size = bmapctl_format_size (device->size);
  gboolean from_contents = parts != NULL;

  if (from_contents) {
    char *raw = NULL;

    if (sd_bus_get_property_string (bus, BMAPD_BUS_NAME, device->path, BMAPD_DEVICE_IFACE,
                                    "DisplayName", NULL, &raw)
        >= 0)
      display = g_strdup (raw);
    free (raw);
  }
  if (display == NULL || display[0] == '\0') {
    g_autofree char *joined = g_strjoin (" ", device->vendor != NULL ? device->vendor : "",
                                         device->model != NULL ? device->model : "", NULL);

    g_free (display);
    display = g_strdup (g_strstrip (joined));
  }
  if (display[0] != '\0')
    g_string_append_printf (s, ", %s", display);
  g_string_append_printf (s, " (%s)", size);

  if (!from_contents)
    parts = read_sysfs_partitions (device->name);
  if (parts->len == 0) {
    g_string_append (s,
                     from_contents ? ": no partition or filesystem recognised" : ": no partitions");
  } else if (parts->len == 1
             && (g_array_index (parts, Part, 0).number == 0
                 || g_strcmp0 (g_array_index (parts, Part, 0).name, device->name) == 0)) {
    /* A filesystem on the whole disk, no partition table; or a partition's
     * own. */
    g_string_append (s, ": ");
    append_part (s, &g_array_index (parts, Part, 0));
  } else {
    g_string_append_printf (s, ": %u partition%s: ", parts->len, parts->len == 1 ? "" : "s");
    for (guint i = 0; i < parts->len; i++) {
      if (i > 0)
        g_string_append (s, ", ");
      append_part (s, &g_array_index (parts, Part, i));
    }
  }
  return g_string_free (g_steal_pointer (&s), FALSE);
}

static char *
read_sysfs_string (const char *dir, const char *file)
{
  g_autofree char *path = g_build_filename (dir, file, NULL);
  g_autofree char *text = NULL;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    return NULL;
  return g_strdup (g_strstrip (text));
}

char *
bmapctl_disk_summary (const char *node, dev_t devnum)
{
  g_autofree char *link = g_strdup_printf ("/sys/dev/block/%u:%u", major (devnum), minor (devnum));
  g_autofree char *dir = realpath (link, NULL);
  g_autofree char *name = NULL;
  g_autofree char *device_dir = NULL;
  BmapctlDevice device = { 0 };
  guint64 sectors = 0;
  char *summary;

  if (dir == NULL)
    return NULL;
  name = g_path_get_basename (dir);
  device_dir = g_build_filename (dir, "device", NULL);
  if (read_sysfs_u64 (dir, "size", &sectors))
    device.size = sectors * 512;
  device.node = (char *) node;
  device.name = name;
  device.vendor = read_sysfs_string (device_dir, "vendor");
  device.model = read_sysfs_string (device_dir, "model");
  summary = bmapctl_device_summary (NULL, &device);
  g_free (device.vendor);
  g_free (device.model);
  return summary;
}
