/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <glib/gi18n.h>

#include "bmapd-flasher-device.h"

struct _BmapdFlasherDevice {
  GObject parent_instance;
  char *object_path;
  GHashTable *properties; /* name -> GVariant */
};

G_DEFINE_TYPE (BmapdFlasherDevice, bmapd_flasher_device, G_TYPE_OBJECT)

enum { SIGNAL_CHANGED, N_SIGNALS };
static guint signals[N_SIGNALS];

static void
bmapd_flasher_device_finalize (GObject *object)
{
  BmapdFlasherDevice *self = BMAPD_FLASHER_DEVICE (object);

  g_free (self->object_path);
  g_hash_table_unref (self->properties);
  G_OBJECT_CLASS (bmapd_flasher_device_parent_class)->finalize (object);
}

static void
bmapd_flasher_device_class_init (BmapdFlasherDeviceClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = bmapd_flasher_device_finalize;
  signals[SIGNAL_CHANGED] = g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                          0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
bmapd_flasher_device_init (BmapdFlasherDevice *self)
{
  self->properties
      = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_variant_unref);
}

static void
bmapd_flasher_device_set_properties (BmapdFlasherDevice *self, GVariant *properties)
{
  /* Floating (a test's literal) or not (a proxy's): ours for the call. */
  g_autoptr (GVariant) owned_properties
      = properties != NULL ? g_variant_ref_sink (properties) : NULL;
  GVariantIter iter;
  const char *name;
  GVariant *value;

  g_variant_iter_init (&iter, properties);
  while (g_variant_iter_next (&iter, "{&sv}", &name, &value))
    g_hash_table_replace (self->properties, g_strdup (name), value);
}

BmapdFlasherDevice *
bmapd_flasher_device_new (const char *object_path, GVariant *properties)
{
  BmapdFlasherDevice *self;

  g_return_val_if_fail (g_variant_is_of_type (properties, G_VARIANT_TYPE_VARDICT), NULL);

  self = g_object_new (BMAPD_FLASHER_TYPE_DEVICE, NULL);
  self->object_path = g_strdup (object_path);
  bmapd_flasher_device_set_properties (self, properties);
  return self;
}

void
bmapd_flasher_device_update (BmapdFlasherDevice *self, GVariant *changed,
                             const char *const *invalidated)
{
  /* Floating (a test's literal) or not (a proxy's): ours for the call. */
  g_autoptr (GVariant) owned_changed = changed != NULL ? g_variant_ref_sink (changed) : NULL;
  g_return_if_fail (BMAPD_FLASHER_IS_DEVICE (self));

  if (changed != NULL)
    bmapd_flasher_device_set_properties (self, changed);
  for (guint i = 0; invalidated != NULL && invalidated[i] != NULL; i++)
    g_hash_table_remove (self->properties, invalidated[i]);
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

/* A property of the expected type, or NULL: absent in this daemon's
 * version, or (defensively) of another type. */
static GVariant *
lookup (BmapdFlasherDevice *self, const char *name, const GVariantType *type)
{
  GVariant *value = g_hash_table_lookup (self->properties, name);

  if (value == NULL || !g_variant_is_of_type (value, type))
    return NULL;
  return value;
}

static const char *
lookup_string (BmapdFlasherDevice *self, const char *name)
{
  GVariant *value = lookup (self, name, G_VARIANT_TYPE_STRING);
  return value != NULL ? g_variant_get_string (value, NULL) : "";
}

static gboolean
lookup_boolean (BmapdFlasherDevice *self, const char *name, gboolean fallback)
{
  GVariant *value = lookup (self, name, G_VARIANT_TYPE_BOOLEAN);
  return value != NULL ? g_variant_get_boolean (value) : fallback;
}

static guint64
lookup_uint64 (BmapdFlasherDevice *self, const char *name)
{
  GVariant *value = lookup (self, name, G_VARIANT_TYPE_UINT64);
  return value != NULL ? g_variant_get_uint64 (value) : 0;
}

const char *
bmapd_flasher_device_get_object_path (BmapdFlasherDevice *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), NULL);
  return self->object_path;
}

const char *
bmapd_flasher_device_get_node (BmapdFlasherDevice *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), NULL);
  return lookup_string (self, "Node");
}

guint64
bmapd_flasher_device_get_size (BmapdFlasherDevice *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), 0);
  return lookup_uint64 (self, "Size");
}

guint64
bmapd_flasher_device_get_diskseq (BmapdFlasherDevice *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), 0);
  return lookup_uint64 (self, "DiskSeq");
}

gboolean
bmapd_flasher_device_get_system (BmapdFlasherDevice *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), TRUE);
  /* Unknown counts as a system disk: hidden and asked about, not erased. */
  return lookup_boolean (self, "System", TRUE);
}

gboolean
bmapd_flasher_device_is_partition (BmapdFlasherDevice *self)
{
  GVariant *value;

  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), FALSE);

  /* No PartitionOf: a bmapd from before partitions, whose Devices are all
   * whole disks. */
  value = g_hash_table_lookup (self->properties, "PartitionOf");
  return value != NULL && g_variant_is_of_type (value, G_VARIANT_TYPE_OBJECT_PATH)
         && g_strcmp0 (g_variant_get_string (value, NULL), "/") != 0;
}

gboolean
bmapd_flasher_device_get_busy (BmapdFlasherDevice *self)
{
  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), FALSE);
  return lookup_boolean (self, "Busy", FALSE);
}

const char *
bmapd_flasher_device_get_job (BmapdFlasherDevice *self)
{
  GVariant *value;

  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), NULL);
  value = lookup (self, "Job", G_VARIANT_TYPE_OBJECT_PATH);
  if (value == NULL || g_strcmp0 (g_variant_get_string (value, NULL), "/") == 0)
    return NULL;
  return g_variant_get_string (value, NULL);
}

/* What a disk without vendor and model is called, from its bus. */
static const char *
kind_for_bus (const char *bus, const char *name)
{
  if (g_str_equal (bus, "mmc") || g_str_equal (bus, "sdio"))
    return _ ("SD Card");
  if (g_str_equal (bus, "usb"))
    return _ ("USB Drive");
  if (g_str_has_prefix (name, "loop"))
    return _ ("Loop Device");
  return _ ("Disk");
}

char *
bmapd_flasher_device_dup_display_name (BmapdFlasherDevice *self)
{
  const char *display_name;
  g_autoptr (GString) name = g_string_new (NULL);
  const char *vendor;
  const char *model;

  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), NULL);

  display_name = lookup_string (self, "DisplayName");
  if (display_name[0] != '\0')
    return g_strdup (display_name);

  vendor = lookup_string (self, "Vendor");
  model = lookup_string (self, "Model");
  if (vendor[0] != '\0')
    g_string_append (name, vendor);
  if (model[0] != '\0') {
    if (name->len > 0)
      g_string_append_c (name, ' ');
    g_string_append (name, model);
  }
  if (name->len == 0)
    g_string_append (name,
                     kind_for_bus (lookup_string (self, "Bus"), lookup_string (self, "Name")));
  if (bmapd_flasher_device_get_size (self) > 0) {
    g_autofree char *size = g_format_size (bmapd_flasher_device_get_size (self));
    g_string_append_printf (name, " %s", size);
  }
  return g_string_free (g_steal_pointer (&name), FALSE);
}

const char *
bmapd_flasher_device_get_icon_name (BmapdFlasherDevice *self)
{
  const char *icon_name;
  const char *bus;

  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), NULL);

  icon_name = lookup_string (self, "IconName");
  if (icon_name[0] != '\0')
    return icon_name;
  bus = lookup_string (self, "Bus");
  if (g_str_equal (bus, "mmc") || g_str_equal (bus, "sdio"))
    return "media-flash";
  if (g_str_equal (bus, "usb"))
    return "drive-removable-media-usb";
  if (lookup_boolean (self, "Removable", FALSE))
    return "drive-removable-media";
  return "drive-harddisk";
}

/* "BOOT (vfat, 268 MB, mounted at /boot)" for one entry of Contents. */
static void
append_content (GString *out, GVariant *entry)
{
  g_auto (GVariantDict) dict;
  const char *label = NULL;
  const char *type = NULL;
  const char *name = NULL;
  guint64 size = 0;
  g_autofree const char **mount_points = NULL;
  g_autoptr (GPtrArray) details = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *joined_details = NULL;

  g_variant_dict_init (&dict, entry);
  g_variant_dict_lookup (&dict, "label", "&s", &label);
  g_variant_dict_lookup (&dict, "type", "&s", &type);
  g_variant_dict_lookup (&dict, "name", "&s", &name);
  g_variant_dict_lookup (&dict, "size", "t", &size);
  g_variant_dict_lookup (&dict, "mount-points", "^a&s", &mount_points);

  if (out->len > 0)
    g_string_append (out, ", ");
  if (label != NULL && label[0] != '\0')
    g_string_append (out, label);
  else if (name != NULL && name[0] != '\0')
    g_string_append (out, name);
  else
    g_string_append (out, _ ("unnamed"));

  g_ptr_array_add (details, g_strdup (type != NULL && type[0] != '\0' ? type : _ ("unknown")));
  if (size > 0)
    g_ptr_array_add (details, g_format_size (size));
  if (mount_points != NULL && mount_points[0] != NULL) {
    g_autofree char *joined = g_strjoinv (", ", (char **) mount_points);
    /* TRANSLATORS: a partition's mount points, "mounted at /media/alice/BOOT" */
    g_ptr_array_add (details, g_strdup_printf (_ ("mounted at %s"), joined));
  }
  g_ptr_array_add (details, NULL);
  joined_details = g_strjoinv (", ", (char **) details->pdata);
  g_string_append_printf (out, " (%s)", joined_details);
}

char *
bmapd_flasher_device_dup_contents (BmapdFlasherDevice *self)
{
  GVariant *contents;
  GVariantIter iter;
  GVariant *entry;
  g_autoptr (GString) out = g_string_new (NULL);

  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), NULL);

  contents = lookup (self, "Contents", G_VARIANT_TYPE ("aa{sv}"));
  if (contents == NULL)
    return NULL;
  g_variant_iter_init (&iter, contents);
  while ((entry = g_variant_iter_next_value (&iter)) != NULL) {
    append_content (out, entry);
    g_variant_unref (entry);
  }
  return g_string_free (g_steal_pointer (&out), FALSE);
}

char *
bmapd_flasher_device_dup_erase_warning (BmapdFlasherDevice *self)
{
  g_autofree char *name = NULL;
  g_autofree char *contents = NULL;
  g_autoptr (GString) text = g_string_new (NULL);

  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), NULL);

  name = bmapd_flasher_device_dup_display_name (self);
  contents = bmapd_flasher_device_dup_contents (self);
  g_string_append_printf (text, "%s (%s): ", name, bmapd_flasher_device_get_node (self));
  if (contents != NULL && contents[0] != '\0')
    /* TRANSLATORS: "BOOT (vfat, 268 MB), rootfs (ext4, 3.2 GB) will be lost." */
    g_string_append_printf (text, _ ("%s will be lost."), contents);
  else if (contents != NULL)
    g_string_append (text, _ ("no partition or filesystem was found on it; whatever it holds "
                              "will be lost."));
  else
    g_string_append (text, _ ("everything on it will be lost."));
  if (bmapd_flasher_device_get_busy (self)) {
    g_string_append_c (text, ' ');
    g_string_append (text, _ ("Its mounted partitions will be unmounted first."));
  }
  return g_string_free (g_steal_pointer (&text), FALSE);
}

char *
bmapd_flasher_device_dup_unusable_reason (BmapdFlasherDevice *self, guint64 image_size)
{
  guint64 size;

  g_return_val_if_fail (BMAPD_FLASHER_IS_DEVICE (self), NULL);

  size = bmapd_flasher_device_get_size (self);
  if (!lookup_boolean (self, "MediaPresent", size > 0) || size == 0)
    return g_strdup (_ ("No card in the reader"));
  if (lookup_boolean (self, "ReadOnly", FALSE))
    return g_strdup (_ ("Write-protected: slide the card's lock switch up"));
  if (bmapd_flasher_device_get_job (self) != NULL)
    return g_strdup (_ ("Being flashed"));
  if (image_size > size) {
    g_autofree char *have = g_format_size (size);
    g_autofree char *need = g_format_size (image_size);
    /* TRANSLATORS: "Too small: 4.0 GB, the image needs 8.6 GB" */
    return g_strdup_printf (_ ("Too small: %s, the image needs %s"), have, need);
  }
  return NULL;
}
