/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Which device kind gets which after-flash action (eject, power-off), read
 * from fake sysfs trees laid out as the kernel does; and power-off's steps
 * against a fake USB device. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "bmap-test-util.h"
#include "libbmap.h"

#define PCI          "pci0000:00/0000:00:14.0"
#define USB          PCI "/usb1/1-2"
#define READER_SCSI  USB "/1-2:1.0/host6/target6:0:0/6:0:0:0"
#define READER_SCSI2 USB "/1-2:1.0/host6/target6:0:0/6:0:0:1"
#define SATA_SCSI    "pci0000:00/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0"
#define CD_SCSI      "pci0000:00/0000:00:17.0/ata4/host3/target3:0:0/3:0:0:0"

typedef struct {
  char *root;
} Fixture;

static void
write_file (const char *path, const char *contents)
{
  g_autoptr (GError) error = NULL;

  g_assert_true (g_file_set_contents (path, contents, -1, &error));
  g_assert_no_error (error);
}

/* /sys/devices/@path, with its subsystem link and uevent's DEVTYPE. */
static void
add_device (Fixture *f, const char *path, const char *subsystem, const char *devtype)
{
  g_autofree char *dir = g_build_filename (f->root, "devices", path, NULL);
  g_autofree char *class_dir = g_build_filename (f->root, "bus", subsystem, NULL);
  g_autofree char *link = g_build_filename (dir, "subsystem", NULL);
  g_autofree char *uevent = g_build_filename (dir, "uevent", NULL);
  g_autofree char *contents = g_strdup_printf ("DEVTYPE=%s\n", devtype);

  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  g_assert_cmpint (g_mkdir_with_parents (class_dir, 0755), ==, 0);
  if (!g_file_test (link, G_FILE_TEST_IS_SYMLINK))
    g_assert_cmpint (symlink (class_dir, link), ==, 0);
  write_file (uevent, contents);
}

static void
add_attr (Fixture *f, const char *path, const char *attr, const char *value)
{
  g_autofree char *file = g_build_filename (f->root, "devices", path, attr, NULL);

  write_file (file, value);
}

/* A whole disk: its device, /sys/dev/block/MAJ:MIN and /sys/block/NAME. */
static void
add_disk (Fixture *f, const char *parent, const char *name, guint maj, guint min)
{
  g_autofree char *path = g_strdup_printf ("%s/block/%s", parent, name);
  g_autofree char *target = g_build_filename (f->root, "devices", path, NULL);
  g_autofree char *dev_block = g_build_filename (f->root, "dev", "block", NULL);
  g_autofree char *block = g_build_filename (f->root, "block", NULL);
  g_autofree char *devnum = g_strdup_printf ("%u:%u", maj, min);
  g_autofree char *devnum_link = g_build_filename (dev_block, devnum, NULL);
  g_autofree char *name_link = g_build_filename (block, name, NULL);

  add_device (f, path, "block", "disk");
  g_assert_cmpint (g_mkdir_with_parents (dev_block, 0755), ==, 0);
  g_assert_cmpint (g_mkdir_with_parents (block, 0755), ==, 0);
  g_assert_cmpint (symlink (target, devnum_link), ==, 0);
  g_assert_cmpint (symlink (target, name_link), ==, 0);
}

/* A partition: below its disk, with a "partition" attribute, and only in
 * /sys/dev/block. */
static void
add_partition (Fixture *f, const char *disk, const char *name, guint maj, guint min)
{
  g_autofree char *path = g_strdup_printf ("%s/%s", disk, name);
  g_autofree char *target = g_build_filename (f->root, "devices", path, NULL);
  g_autofree char *devnum = g_strdup_printf ("dev/block/%u:%u", maj, min);
  g_autofree char *link = g_build_filename (f->root, devnum, NULL);

  add_device (f, path, "block", "partition");
  add_attr (f, path, "partition", "1\n");
  g_assert_cmpint (symlink (target, link), ==, 0);
}

/* A USB card reader with two slots (sdx, sdy), a SATA disk (sda), a
 * SATA CD drive (sr0), a loop device and a virtio disk. */
static void
add_usb_reader (Fixture *f, gboolean with_remove)
{
  add_device (f, USB, "usb", "usb_device");
  if (with_remove)
    add_attr (f, USB, "remove", "");
  add_device (f, USB "/1-2:1.0", "usb", "usb_interface");
  add_device (f, USB "/1-2:1.0/host6", "scsi", "scsi_host");
  add_device (f, USB "/1-2:1.0/host6/target6:0:0", "scsi", "scsi_target");
  add_device (f, READER_SCSI, "scsi", "scsi_device");
  add_attr (f, READER_SCSI, "type", "0\n");
  add_disk (f, READER_SCSI, "sdx", 8, 16);
  add_partition (f, READER_SCSI "/block/sdx", "sdx1", 8, 17);
  add_partition (f, READER_SCSI "/block/sdx", "sdx2", 8, 18);
  add_device (f, READER_SCSI2, "scsi", "scsi_device");
  add_attr (f, READER_SCSI2, "type", "0\n");
  add_disk (f, READER_SCSI2, "sdy", 8, 32);
}

static void
add_others (Fixture *f)
{
  add_device (f, SATA_SCSI, "scsi", "scsi_device");
  add_attr (f, SATA_SCSI, "type", "0\n");
  add_disk (f, SATA_SCSI, "sda", 8, 0);
  add_device (f, CD_SCSI, "scsi", "scsi_device");
  add_attr (f, CD_SCSI, "type", "5\n");
  add_disk (f, CD_SCSI, "sr0", 11, 0);
  add_device (f, "virtual/block/loop3", "block", "disk");
  {
    g_autofree char *target = g_build_filename (f->root, "devices/virtual/block/loop3", NULL);
    g_autofree char *link = g_build_filename (f->root, "dev/block/7:3", NULL);
    g_assert_cmpint (symlink (target, link), ==, 0);
  }
  add_device (f, "pci0000:00/0000:00:05.0/virtio5", "virtio", "");
  add_disk (f, "pci0000:00/0000:00:05.0/virtio5", "vdb", 252, 16);
}

static void
fixture_set_up (Fixture *f, gconstpointer data)
{
  f->root = bmap_test_tmpdir ();
  add_usb_reader (f, GPOINTER_TO_INT (data) == 0);
  add_others (f);
}

static void
fixture_tear_down (Fixture *f, gconstpointer data)
{
  g_free (f->root);
}

static BmapEjectPlan *
plan_for (Fixture *f, guint maj, guint min, const char *node)
{
  return bmap_eject_plan_new (f->root, makedev (maj, min), node);
}

static void
test_usb_reader (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 8, 16, "/dev/sdx");
  g_autofree char *usb = g_build_filename (f->root, "devices", USB, NULL);
  g_autofree char *usb_real = realpath (usb, NULL);

  g_assert_cmpstr (plan->name, ==, "sdx");
  g_assert_true (plan->scsi);
  g_assert_cmpint (plan->eject, ==, BMAP_EJECT_METHOD_SCSI);
  g_assert_null (plan->eject_why_not);
  g_assert_cmpstr (plan->usb_device, ==, usb_real);
  g_assert_null (plan->power_off_why_not);
  /* The reader's other slot goes with it. */
  g_assert_cmpuint (g_strv_length (plan->siblings), ==, 1);
  g_assert_cmpstr (plan->siblings[0], ==, "/dev/sdy");
  /* A whole disk opened O_EXCL has no partition in use. */
  g_assert_cmpuint (g_strv_length (plan->partners), ==, 0);
}

/* A partition's disk decides, the disk is no sibling of its own, and its
 * other partitions are the partition's partners. */
static void
test_usb_reader_partition (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 8, 17, "/dev/sdx1");

  g_assert_cmpstr (plan->name, ==, "sdx");
  g_assert_cmpstr (plan->node, ==, "/dev/sdx1");
  g_assert_cmpint (plan->eject, ==, BMAP_EJECT_METHOD_SCSI);
  g_assert_null (plan->power_off_why_not);
  g_assert_cmpuint (g_strv_length (plan->siblings), ==, 1);
  g_assert_cmpstr (plan->siblings[0], ==, "/dev/sdy");
  /* The disk's other partition goes with it: checked before either. */
  g_assert_cmpuint (g_strv_length (plan->partners), ==, 1);
  g_assert_cmpstr (plan->partners[0], ==, "/dev/sdx2");
}

static void
test_usb_without_remove (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 8, 16, "/dev/sdx");

  g_assert_cmpint (plan->eject, ==, BMAP_EJECT_METHOD_SCSI);
  g_assert_nonnull (plan->power_off_why_not);
  g_assert_true (
      g_str_has_prefix (plan->power_off_why_not, "the USB device of /dev/sdx cannot be removed: "));
  g_assert_true (g_str_has_suffix (plan->power_off_why_not, "/remove does not exist"));
}

static void
test_sata_disk (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 8, 0, "/dev/sda");

  g_assert_true (plan->scsi);
  g_assert_cmpint (plan->eject, ==, BMAP_EJECT_METHOD_SCSI);
  g_assert_null (plan->usb_device);
  g_assert_cmpstr (plan->power_off_why_not, ==, "/dev/sda is not a USB device");
  g_assert_cmpuint (g_strv_length (plan->siblings), ==, 0);
}

static void
test_cdrom (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 11, 0, "/dev/sr0");

  g_assert_cmpint (plan->eject, ==, BMAP_EJECT_METHOD_CDROM);
  g_assert_cmpstr (plan->power_off_why_not, ==, "/dev/sr0 is not a USB device");
}

static void
test_loop (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 7, 3, "/dev/loop3");

  g_assert_cmpstr (plan->name, ==, "loop3");
  g_assert_false (plan->scsi);
  g_assert_cmpint (plan->eject, ==, BMAP_EJECT_METHOD_NONE);
  g_assert_cmpstr (plan->eject_why_not, ==, "/dev/loop3 is not a SCSI, USB or CD-ROM drive");
  g_assert_cmpstr (plan->power_off_why_not, ==, "/dev/loop3 is not a USB device");
}

static void
test_virtio (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 252, 16, "/dev/vdb");

  g_assert_cmpint (plan->eject, ==, BMAP_EJECT_METHOD_NONE);
  g_assert_cmpstr (plan->eject_why_not, ==, "/dev/vdb is not a SCSI, USB or CD-ROM drive");
  g_assert_cmpstr (plan->power_off_why_not, ==, "/dev/vdb is not a USB device");
}

static void
test_unknown_devnum (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 259, 9, "/dev/nvme9n1");
  g_autofree char *why = g_strdup_printf ("/dev/nvme9n1 has no entry in %s", f->root);

  g_assert_cmpint (plan->eject, ==, BMAP_EJECT_METHOD_NONE);
  g_assert_cmpstr (plan->eject_why_not, ==, why);
  g_assert_cmpstr (plan->power_off_why_not, ==, why);
}

/* Neither possible: the flash is not failed, the words say why. */
static void
test_run_not_possible (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 7, 3, "/dev/loop3");
  g_autofree char *both = NULL;
  g_autofree char *power_off = NULL;
  g_autofree char *eject = NULL;

  both = bmap_eject_run (plan, BMAP_EJECT_FLAG_EJECT | BMAP_EJECT_FLAG_POWER_OFF, -1, NULL, NULL);
  g_assert_cmpstr (both, ==,
                   "not powered off: /dev/loop3 is not a USB device; not ejected: /dev/loop3 is "
                   "not a SCSI, USB or CD-ROM drive");
  power_off = bmap_eject_run (plan, BMAP_EJECT_FLAG_POWER_OFF, -1, NULL, NULL);
  g_assert_cmpstr (power_off, ==, "not powered off: /dev/loop3 is not a USB device");
  eject = bmap_eject_run (plan, BMAP_EJECT_FLAG_EJECT, -1, NULL, NULL);
  g_assert_cmpstr (eject, ==, "not ejected: /dev/loop3 is not a SCSI, USB or CD-ROM drive");
}

typedef struct {
  int fd;
  char *remove;
  char *remove_when_closed; /* what the remove attribute held at close */
} CloseData;

static void
on_close (gpointer user_data)
{
  CloseData *data = user_data;

  g_assert_true (g_file_get_contents (data->remove, &data->remove_when_closed, NULL, NULL));
  close (data->fd);
  data->fd = -1;
}

/* Power-off on the fake reader: the descriptor is closed first, then "1"
 * goes into the USB device's remove attribute (SG_IO fails on a regular
 * file: ignored, as udisks2 does). */
static void
test_run_power_off (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 8, 16, "/dev/sdx");
  g_autofree char *disk = g_build_filename (f->root, "disk.img", NULL);
  g_autofree char *words = NULL;
  g_autofree char *removed = NULL;
  CloseData close_data = { -1, NULL, NULL };

  write_file (disk, "flashed");
  close_data.fd = open (disk, O_WRONLY | O_CLOEXEC);
  g_assert_cmpint (close_data.fd, >=, 0);
  close_data.remove = g_build_filename (plan->usb_device, "remove", NULL);

  words = bmap_eject_run (plan, BMAP_EJECT_FLAG_POWER_OFF | BMAP_EJECT_FLAG_EJECT, close_data.fd,
                          on_close, &close_data);
  g_assert_cmpstr (words, ==, "powered off");
  g_assert_cmpint (close_data.fd, ==, -1);
  g_assert_cmpstr (close_data.remove_when_closed, ==, "");
  g_assert_true (g_file_get_contents (close_data.remove, &removed, NULL, NULL));
  g_assert_cmpstr (removed, ==, "1");
  g_free (close_data.remove);
  g_free (close_data.remove_when_closed);
}

/* A remove attribute that cannot be opened leaves the descriptor open and
 * the device as it was; eject is tried next when asked. */
static void
test_run_power_off_refused (Fixture *f, gconstpointer data)
{
  g_autoptr (BmapEjectPlan) plan = plan_for (f, 8, 16, "/dev/sdx");
  g_autofree char *remove = g_build_filename (plan->usb_device, "remove", NULL);
  g_autofree char *disk = g_build_filename (f->root, "disk.img", NULL);
  g_autofree char *words = NULL;
  CloseData close_data = { -1, NULL, NULL };

  /* A directory in its place: EISDIR, whoever runs the test. */
  g_assert_cmpint (g_unlink (remove), ==, 0);
  g_assert_cmpint (g_mkdir (remove, 0755), ==, 0);
  write_file (disk, "flashed");
  close_data.fd = open (disk, O_WRONLY | O_CLOEXEC);
  g_assert_cmpint (close_data.fd, >=, 0);
  close_data.remove = g_strdup (remove);

  words = bmap_eject_run (plan, BMAP_EJECT_FLAG_POWER_OFF, close_data.fd, on_close, &close_data);
  g_assert_true (g_str_has_prefix (words, "not powered off: cannot open "));
  g_assert_nonnull (strstr (words, "/remove to remove the USB device of /dev/sdx"));
  g_assert_cmpint (close_data.fd, >=, 0);
  close (close_data.fd);
  g_free (close_data.remove);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

#define ADD(path, fn, variant)                                                                     \
  g_test_add (path, Fixture, GINT_TO_POINTER (variant), fixture_set_up, fn, fixture_tear_down)
  ADD ("/eject/plan/usb-reader", test_usb_reader, 0);
  ADD ("/eject/plan/usb-reader-partition", test_usb_reader_partition, 0);
  ADD ("/eject/plan/usb-without-remove", test_usb_without_remove, 1);
  ADD ("/eject/plan/sata-disk", test_sata_disk, 0);
  ADD ("/eject/plan/cdrom", test_cdrom, 0);
  ADD ("/eject/plan/loop", test_loop, 0);
  ADD ("/eject/plan/virtio", test_virtio, 0);
  ADD ("/eject/plan/unknown-devnum", test_unknown_devnum, 0);
  ADD ("/eject/run/not-possible", test_run_not_possible, 0);
  ADD ("/eject/run/power-off", test_run_power_off, 0);
  ADD ("/eject/run/power-off-refused", test_run_power_off_refused, 0);
#undef ADD
  return g_test_run ();
}
