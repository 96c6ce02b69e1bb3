/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The flasher's models without a display or a bus: devices from property
 * dictionaries as bmapd sends them (old and new), jobs fed the signals a
 * flash sends, images with and without a bmap. */
#include "config.h"

#include <glib/gstdio.h>
#include <string.h>

#include "bmapd-flasher-device.h"
#include "bmapd-flasher-image.h"
#include "bmapd-flasher-job.h"
#include "bmapd-flasher-station.h"
#include "bmap-test-util.h"
#include "libbmap.h"

/* g_format_size() puts a no-break space before the unit. */
#define NBSP "\u00a0"
#define GB   (G_GUINT64_CONSTANT (1000) * 1000 * 1000)

/* The properties of a 16 GB USB card reader as bmapd before DisplayName,
 * IconName and Contents. */
static GVariant *
old_usb_properties (void)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "Node", g_variant_new_string ("/dev/sdb"));
  g_variant_builder_add (&b, "{sv}", "Name", g_variant_new_string ("sdb"));
  g_variant_builder_add (&b, "{sv}", "Size", g_variant_new_uint64 (16 * GB));
  g_variant_builder_add (&b, "{sv}", "Vendor", g_variant_new_string ("Generic"));
  g_variant_builder_add (&b, "{sv}", "Model", g_variant_new_string ("STORAGE DEVICE"));
  g_variant_builder_add (&b, "{sv}", "Bus", g_variant_new_string ("usb"));
  g_variant_builder_add (&b, "{sv}", "Removable", g_variant_new_boolean (TRUE));
  g_variant_builder_add (&b, "{sv}", "System", g_variant_new_boolean (FALSE));
  g_variant_builder_add (&b, "{sv}", "ReadOnly", g_variant_new_boolean (FALSE));
  g_variant_builder_add (&b, "{sv}", "MediaPresent", g_variant_new_boolean (TRUE));
  g_variant_builder_add (&b, "{sv}", "Busy", g_variant_new_boolean (FALSE));
  g_variant_builder_add (&b, "{sv}", "DiskSeq", g_variant_new_uint64 (42));
  g_variant_builder_add (&b, "{sv}", "Job", g_variant_new_object_path ("/"));
  return g_variant_builder_end (&b);
}

/* An a{sv} of name, value pairs (floating values), ended by NULL. */
static GVariant *
properties (const char *first_name, ...)
{
  GVariantBuilder b;
  va_list args;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  va_start (args, first_name);
  for (const char *name = first_name; name != NULL; name = va_arg (args, const char *))
    g_variant_builder_add (&b, "{sv}", name, va_arg (args, GVariant *));
  va_end (args);
  return g_variant_builder_end (&b);
}

static GVariant *
one_property (const char *name, GVariant *value)
{
  return properties (name, value, NULL);
}

/* A job of the app's for the card reader /dev/sdb, as the window makes it. */
static BmapdFlasherJob *
card_job (void)
{
  return bmapd_flasher_job_new ("/org/bmapd/bmapd1/device/sdb", "Card", "/dev/sdb");
}

static void
test_device_fallbacks (void)
{
  g_autoptr (BmapdFlasherDevice) device
      = bmapd_flasher_device_new ("/org/bmapd/bmapd1/device/sdb", old_usb_properties ());
  g_autofree char *name = bmapd_flasher_device_dup_display_name (device);
  g_autofree char *contents = bmapd_flasher_device_dup_contents (device);

  g_assert_cmpstr (name, ==, "Generic STORAGE DEVICE 16.0" NBSP "GB");
  g_assert_cmpstr (bmapd_flasher_device_get_icon_name (device), ==, "drive-removable-media-usb");
  /* No Contents property: nothing is said about partitions. */
  g_assert_null (contents);
  g_assert_cmpstr (bmapd_flasher_device_get_node (device), ==, "/dev/sdb");
  g_assert_cmpuint (bmapd_flasher_device_get_diskseq (device), ==, 42);
  g_assert_null (bmapd_flasher_device_get_job (device));
  g_assert_false (bmapd_flasher_device_get_system (device));
  /* No PartitionOf (a bmapd before partitions): a whole disk. */
  g_assert_false (bmapd_flasher_device_is_partition (device));
}

/* bmapd offers a card's partitions as Devices too; "/" marks the disk. */
static void
test_device_partition (void)
{
  g_autoptr (BmapdFlasherDevice) disk
      = bmapd_flasher_device_new ("/org/bmapd/bmapd1/device/sdb", old_usb_properties ());
  g_autoptr (BmapdFlasherDevice) part
      = bmapd_flasher_device_new ("/org/bmapd/bmapd1/device/sdb1", old_usb_properties ());

  bmapd_flasher_device_update (disk, one_property ("PartitionOf", g_variant_new_object_path ("/")),
                               NULL);
  bmapd_flasher_device_update (
      part,
      one_property ("PartitionOf", g_variant_new_object_path ("/org/bmapd/bmapd1/device/sdb")),
      NULL);
  g_assert_false (bmapd_flasher_device_is_partition (disk));
  g_assert_true (bmapd_flasher_device_is_partition (part));
}

static void
test_device_new_properties (void)
{
  g_autoptr (BmapdFlasherDevice) device
      = bmapd_flasher_device_new ("/org/bmapd/bmapd1/device/sdb", old_usb_properties ());
  GVariantBuilder contents;
  GVariantBuilder part;
  const char *mounts[] = { "/media/alice/rootfs", NULL };
  g_autofree char *name = NULL;
  g_autofree char *text = NULL;
  guint changed = 0;

  g_signal_connect_swapped (device, "changed", G_CALLBACK (g_atomic_int_inc), &changed);
  g_variant_builder_init (&contents, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_init (&part, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&part, "{sv}", "name", g_variant_new_string ("sdb1"));
  g_variant_builder_add (&part, "{sv}", "label", g_variant_new_string ("BOOT"));
  g_variant_builder_add (&part, "{sv}", "type", g_variant_new_string ("vfat"));
  g_variant_builder_add (&part, "{sv}", "size", g_variant_new_uint64 (268435456));
  g_variant_builder_add (&contents, "a{sv}", &part);
  g_variant_builder_init (&part, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&part, "{sv}", "name", g_variant_new_string ("sdb2"));
  g_variant_builder_add (&part, "{sv}", "label", g_variant_new_string (""));
  g_variant_builder_add (&part, "{sv}", "type", g_variant_new_string ("ext4"));
  g_variant_builder_add (&part, "{sv}", "size", g_variant_new_uint64 (3200000000));
  g_variant_builder_add (&part, "{sv}", "mount-points", g_variant_new_strv (mounts, -1));
  g_variant_builder_add (&part, "{sv}", "a-key-from-the-future", g_variant_new_uint32 (7));
  g_variant_builder_add (&contents, "a{sv}", &part);

  bmapd_flasher_device_update (device, one_property ("Contents", g_variant_builder_end (&contents)),
                               NULL);
  bmapd_flasher_device_update (
      device, one_property ("DisplayName", g_variant_new_string ("SanDisk Ultra 16 GB")), NULL);
  bmapd_flasher_device_update (
      device, one_property ("IconName", g_variant_new_string ("media-flash-sd")), NULL);
  g_assert_cmpuint (changed, ==, 3);

  name = bmapd_flasher_device_dup_display_name (device);
  g_assert_cmpstr (name, ==, "SanDisk Ultra 16 GB");
  g_assert_cmpstr (bmapd_flasher_device_get_icon_name (device), ==, "media-flash-sd");
  text = bmapd_flasher_device_dup_contents (device);
  g_assert_cmpstr (text, ==,
                   "BOOT (vfat, 268.4" NBSP "MB), sdb2 (ext4, 3.2" NBSP
                   "GB, mounted at /media/alice/rootfs)");

  /* An empty card says so (""), unlike a daemon that cannot tell (NULL). */
  g_clear_pointer (&text, g_free);
  bmapd_flasher_device_update (
      device, one_property ("Contents", g_variant_new_array (G_VARIANT_TYPE_VARDICT, NULL, 0)),
      NULL);
  text = bmapd_flasher_device_dup_contents (device);
  g_assert_cmpstr (text, ==, "");

  /* Invalidated: back to the fallback. */
  {
    const char *invalidated[] = { "DisplayName", NULL };
    g_autofree char *fallback = NULL;
    bmapd_flasher_device_update (device, NULL, invalidated);
    fallback = bmapd_flasher_device_dup_display_name (device);
    g_assert_cmpstr (fallback, ==, "Generic STORAGE DEVICE 16.0" NBSP "GB");
  }
}

static void
test_device_erase_warning (void)
{
  g_autoptr (BmapdFlasherDevice) device
      = bmapd_flasher_device_new ("/org/bmapd/bmapd1/device/sdb", old_usb_properties ());
  GVariantBuilder contents;
  GVariantBuilder part;
  const char *mounts[] = { "/media/alice/BOOT", NULL };
  g_autofree char *unknown = NULL;
  g_autofree char *empty = NULL;
  g_autofree char *mounted = NULL;

  /* A daemon without Contents: nothing is claimed about what is there. */
  unknown = bmapd_flasher_device_dup_erase_warning (device);
  g_assert_cmpstr (unknown, ==,
                   "Generic STORAGE DEVICE 16.0" NBSP
                   "GB (/dev/sdb): everything on it will be lost.");

  bmapd_flasher_device_update (
      device, one_property ("Contents", g_variant_new_array (G_VARIANT_TYPE_VARDICT, NULL, 0)),
      NULL);
  empty = bmapd_flasher_device_dup_erase_warning (device);
  g_assert_cmpstr (empty, ==,
                   "Generic STORAGE DEVICE 16.0" NBSP "GB (/dev/sdb): no partition or filesystem "
                   "was found on it; whatever it holds will be lost.");

  g_variant_builder_init (&contents, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_init (&part, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&part, "{sv}", "label", g_variant_new_string ("BOOT"));
  g_variant_builder_add (&part, "{sv}", "type", g_variant_new_string ("vfat"));
  g_variant_builder_add (&part, "{sv}", "size", g_variant_new_uint64 (268435456));
  g_variant_builder_add (&part, "{sv}", "mount-points", g_variant_new_strv (mounts, -1));
  g_variant_builder_add (&contents, "a{sv}", &part);
  bmapd_flasher_device_update (device, one_property ("Contents", g_variant_builder_end (&contents)),
                               NULL);
  bmapd_flasher_device_update (device, one_property ("Busy", g_variant_new_boolean (TRUE)), NULL);
  mounted = bmapd_flasher_device_dup_erase_warning (device);
  g_assert_cmpstr (mounted, ==,
                   "Generic STORAGE DEVICE 16.0" NBSP "GB (/dev/sdb): BOOT (vfat, 268.4" NBSP
                   "MB, mounted at /media/alice/BOOT) will be lost. Its mounted partitions will be "
                   "unmounted first.");
}

static void
test_device_wrong_types_ignored (void)
{
  g_autoptr (BmapdFlasherDevice) device
      = bmapd_flasher_device_new ("/org/bmapd/bmapd1/device/sdb", old_usb_properties ());
  g_autofree char *name = NULL;

  bmapd_flasher_device_update (device, one_property ("DisplayName", g_variant_new_uint32 (3)),
                               NULL);
  bmapd_flasher_device_update (device, one_property ("Contents", g_variant_new_string ("x")), NULL);
  name = bmapd_flasher_device_dup_display_name (device);
  g_assert_cmpstr (name, ==, "Generic STORAGE DEVICE 16.0" NBSP "GB");
  g_assert_null (bmapd_flasher_device_dup_contents (device));
}

static void
test_device_unusable (void)
{
  g_autoptr (BmapdFlasherDevice) device
      = bmapd_flasher_device_new ("/org/bmapd/bmapd1/device/sdb", old_usb_properties ());
  g_autofree char *fits = bmapd_flasher_device_dup_unusable_reason (device, 16 * GB);
  g_autofree char *too_small = bmapd_flasher_device_dup_unusable_reason (device, 16 * GB + 1);
  g_autofree char *unknown_size = bmapd_flasher_device_dup_unusable_reason (device, 0);
  g_autofree char *read_only = NULL;
  g_autofree char *busy_job = NULL;
  g_autofree char *no_medium = NULL;

  g_assert_null (fits);
  g_assert_null (unknown_size);
  g_assert_cmpstr (too_small, ==, "Too small: 16.0" NBSP "GB, the image needs 16.0" NBSP "GB");

  bmapd_flasher_device_update (device, one_property ("ReadOnly", g_variant_new_boolean (TRUE)),
                               NULL);
  read_only = bmapd_flasher_device_dup_unusable_reason (device, GB);
  g_assert_nonnull (g_strstr_len (read_only, -1, "Write-protected"));
  bmapd_flasher_device_update (device, one_property ("ReadOnly", g_variant_new_boolean (FALSE)),
                               NULL);

  bmapd_flasher_device_update (
      device, one_property ("Job", g_variant_new_object_path ("/org/bmapd/bmapd1/job/3")), NULL);
  busy_job = bmapd_flasher_device_dup_unusable_reason (device, GB);
  g_assert_cmpstr (busy_job, ==, "Being flashed");
  g_assert_cmpstr (bmapd_flasher_device_get_job (device), ==, "/org/bmapd/bmapd1/job/3");
  bmapd_flasher_device_update (device, one_property ("Job", g_variant_new_object_path ("/")), NULL);

  /* A reader whose card was pulled out. */
  bmapd_flasher_device_update (device, one_property ("Size", g_variant_new_uint64 (0)), NULL);
  bmapd_flasher_device_update (device, one_property ("MediaPresent", g_variant_new_boolean (FALSE)),
                               NULL);
  no_medium = bmapd_flasher_device_dup_unusable_reason (device, GB);
  g_assert_cmpstr (no_medium, ==, "No card in the reader");
}

static void
test_device_unknown_system (void)
{
  g_autoptr (BmapdFlasherDevice) device = bmapd_flasher_device_new (
      "/org/bmapd/bmapd1/device/loop3", one_property ("Name", g_variant_new_string ("loop3")));
  g_autofree char *name = bmapd_flasher_device_dup_display_name (device);

  /* A daemon that says nothing about System: treated as a system disk. */
  g_assert_true (bmapd_flasher_device_get_system (device));
  g_assert_cmpstr (name, ==, "Loop Device");
  g_assert_cmpstr (bmapd_flasher_device_get_icon_name (device), ==, "drive-harddisk");
}

static GVariant *
job_state (const char *state)
{
  return one_property ("State", g_variant_new_string (state));
}

static void
test_job_done (void)
{
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autofree char *status = NULL;
  g_autofree char *result = NULL;

  g_assert_cmpint (bmapd_flasher_job_get_state (job), ==, BMAPD_FLASHER_JOB_STARTING);
  g_assert_null (bmapd_flasher_job_dup_result (job));
  /* No job in bmapd while polkit asks: the app's own state. */
  bmapd_flasher_job_flash_called (job);
  g_assert_cmpint (bmapd_flasher_job_get_state (job), ==, BMAPD_FLASHER_JOB_AUTHORIZING);
  bmapd_flasher_job_update (job, job_state ("queued"));
  g_assert_cmpint (bmapd_flasher_job_get_state (job), ==, BMAPD_FLASHER_JOB_QUEUED);
  bmapd_flasher_job_update (job, job_state ("writing"));
  bmapd_flasher_job_progress (job, 50 * 1000 * 1000, 200 * 1000 * 1000, 10 * 1000 * 1000);
  g_assert_cmpfloat_with_epsilon (bmapd_flasher_job_get_fraction (job), 0.25, 1e-9);
  status = bmapd_flasher_job_dup_status (job, 0);
  g_assert_cmpstr (status, ==, "Writing · 10.0" NBSP "MB/s · 15 seconds left");

  /* A smaller fraction later (a new phase counted on its own by an older
   * daemon) does not take the bar back. */
  bmapd_flasher_job_progress (job, 1, 100, 0);
  g_assert_cmpfloat_with_epsilon (bmapd_flasher_job_get_fraction (job), 0.25, 1e-9);

  bmapd_flasher_job_finish (job, "done", "", "");
  /* A late PropertiesChanged does not take it back to writing. */
  bmapd_flasher_job_update (job, job_state ("writing"));
  g_assert_cmpint (bmapd_flasher_job_get_state (job), ==, BMAPD_FLASHER_JOB_DONE);
  g_assert_true (bmapd_flasher_job_is_finished (job));
  g_assert_cmpfloat (bmapd_flasher_job_get_fraction (job), ==, 1.0);
  result = bmapd_flasher_job_dup_result (job);
  g_assert_cmpstr (result, ==, "Done and verified. The card can be removed.");
  /* No Result from bmapd: nothing more to say. */
  g_assert_null (bmapd_flasher_job_dup_details (job));
}

/* Write only what differs: the result says what was compared and what
 * was written, from BytesChecked and BytesWritten; bmapd's Result (what
 * the options did, eject's outcome) is a sentence of its own. */
static void
test_job_minimize_writes (void)
{
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autofree char *result = NULL;
  g_autofree char *details = NULL;

  bmapd_flasher_job_set_minimize_writes (job, TRUE);
  bmapd_flasher_job_flash_called (job);
  bmapd_flasher_job_update (job, job_state ("writing"));
  bmapd_flasher_job_update (
      job, properties ("BytesChecked", g_variant_new_uint64 (58720256), "BytesWritten",
                       g_variant_new_uint64 (1048576), "Result",
                       g_variant_new_string ("55.0 MiB of 56.0 MiB found in place, not written; "
                                             "not ejected: /dev/loop3 is not a USB device"),
                       NULL));
  g_assert_cmpuint (bmapd_flasher_job_get_bytes_checked (job), ==, 58720256);
  g_assert_cmpuint (bmapd_flasher_job_get_bytes_written (job), ==, 1048576);
  g_assert_null (bmapd_flasher_job_dup_result (job));
  bmapd_flasher_job_finish (job, "done", "", "");
  result = bmapd_flasher_job_dup_result (job);
  g_assert_cmpstr (result, ==,
                   "Done and verified: checked 58.7" NBSP "MB, wrote 1.0" NBSP
                   "MB. The card can be removed.");
  details = bmapd_flasher_job_dup_details (job);
  g_assert_cmpstr (details, ==,
                   "55.0 MiB of 56.0 MiB found in place, not written; not ejected: /dev/loop3 "
                   "is not a USB device.");
  g_clear_pointer (&details, g_free);

  /* An empty Result (a job with no such options) says nothing. */
  bmapd_flasher_job_update (job, one_property ("Result", g_variant_new_string ("")));
  g_assert_null (bmapd_flasher_job_dup_details (job));
  bmapd_flasher_job_update (job, one_property ("Result", g_variant_new_string ("ejected")));
  details = bmapd_flasher_job_dup_details (job);
  g_assert_cmpstr (details, ==, "Ejected.");
}

static void
test_job_time_left_from_daemon (void)
{
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autofree char *status = NULL;

  bmapd_flasher_job_update (job, properties ("State", g_variant_new_string ("writing"),
                                             "ExpectedEndTime",
                                             g_variant_new_uint64 (1000 * G_USEC_PER_SEC), "Rate",
                                             g_variant_new_uint64 (2000000), "Progress",
                                             g_variant_new_double (0.5), NULL));
  status = bmapd_flasher_job_dup_status (job, 820 * G_USEC_PER_SEC);
  g_assert_cmpstr (status, ==, "Writing · 2.0" NBSP "MB/s · about 3 minutes left");
  g_assert_cmpfloat_with_epsilon (bmapd_flasher_job_get_fraction (job), 0.5, 1e-9);
}

static void
test_job_failed_partial (void)
{
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autofree char *result = NULL;

  bmapd_flasher_job_update (job, job_state ("preparing"));
  bmapd_flasher_job_update (job, job_state ("writing"));
  bmapd_flasher_job_finish (job, "failed", "org.bmapd.bmapd1.Error.IO",
                            "Writing /dev/sdb at 4096: Input/output error");
  result = bmapd_flasher_job_dup_result (job);
  g_assert_cmpstr (result, ==,
                   "Writing /dev/sdb at 4096: Input/output error. The card holds a partial "
                   "image: flash it again before using it.");
}

static void
test_job_canceled_before_writing (void)
{
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autofree char *result = NULL;

  bmapd_flasher_job_update (job, job_state ("preparing"));
  bmapd_flasher_job_finish (job, "canceled", "", "canceled by uid 1000");
  result = bmapd_flasher_job_dup_result (job);
  g_assert_cmpstr (result, ==, "Canceled. Nothing was written: the card is as it was.");
}

static void
test_job_call_failed (void)
{
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autoptr (GError) error = g_dbus_error_new_for_dbus_error (
      "org.bmapd.bmapd1.Error.NotAuthorized", "flashing /dev/sdb was not authorized");
  g_autofree char *result = NULL;

  bmapd_flasher_job_call_failed (job, error);
  g_assert_cmpint (bmapd_flasher_job_get_state (job), ==, BMAPD_FLASHER_JOB_FAILED);
  result = bmapd_flasher_job_dup_result (job);
  g_assert_cmpstr (result, ==,
                   "Permission to write to the card was not given. Nothing was written: the "
                   "card is as it was.");
}

static void
test_station (void)
{
  g_autoptr (BmapdFlasherStation) station = bmapd_flasher_station_new ("board.img (station)");
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autofree char *counter = NULL;
  guint changed = 0;

  g_signal_connect_swapped (station, "changed", G_CALLBACK (g_atomic_int_inc), &changed);
  g_assert_false (bmapd_flasher_station_is_armed (station));
  bmapd_flasher_station_set_rule (station, "/org/bmapd/bmapd1/autoflash/3");
  g_assert_true (bmapd_flasher_station_is_armed (station));

  bmapd_flasher_station_update (
      station, properties ("Flashed", g_variant_new_uint32 (1), "Failed", g_variant_new_uint32 (2),
                           "Description", g_variant_new_string ("board.img (station)"), NULL));
  counter = bmapd_flasher_station_dup_counter (station);
  g_assert_cmpstr (counter, ==, "1 card flashed, 2 failed");

  bmapd_flasher_station_add_job (station, job);
  g_assert_cmpuint (g_list_model_get_n_items (bmapd_flasher_station_get_jobs (station)), ==, 1);

  bmapd_flasher_station_disarm (station);
  g_assert_false (bmapd_flasher_station_is_armed (station));
  /* The rule's path is kept: its last counters still belong to it. */
  g_assert_cmpstr (bmapd_flasher_station_get_rule (station), ==, "/org/bmapd/bmapd1/autoflash/3");
  bmapd_flasher_station_disarm (station);
  g_assert_cmpuint (changed, ==, 3);

  bmapd_flasher_station_fail (station, "not authorized");
  g_assert_cmpstr (bmapd_flasher_station_get_error (station), ==, "not authorized");
}

/* Canceled while Flash was unanswered: remembered, sent once the job has a
 * path, and the job bmapd cancels while queued wrote nothing. */
static void
test_job_cancel_pending (void)
{
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autofree char *status = NULL;
  g_autofree char *result = NULL;

  bmapd_flasher_job_flash_called (job);
  g_assert_false (bmapd_flasher_job_take_pending_cancel (job));
  bmapd_flasher_job_request_cancel (job);
  g_assert_true (bmapd_flasher_job_get_cancel_requested (job));
  g_assert_cmpint (bmapd_flasher_job_get_state (job), ==, BMAPD_FLASHER_JOB_AUTHORIZING);
  status = bmapd_flasher_job_dup_status (job, 0);
  g_assert_cmpstr (status, ==, "Canceling");

  /* Flash answered: the cancel is sent once. */
  bmapd_flasher_job_set_object_path (job, "/org/bmapd/bmapd1/job/1");
  g_assert_true (bmapd_flasher_job_take_pending_cancel (job));
  g_assert_false (bmapd_flasher_job_take_pending_cancel (job));
  bmapd_flasher_job_update (job, job_state ("queued"));
  bmapd_flasher_job_finish (job, "canceled", "org.bmapd.bmapd1.Error.Cancelled",
                            "job 1 was canceled by uid 1000 before it started");
  g_assert_cmpint (bmapd_flasher_job_get_state (job), ==, BMAPD_FLASHER_JOB_CANCELED);
  result = bmapd_flasher_job_dup_result (job);
  g_assert_cmpstr (result, ==, "Canceled. Nothing was written: the card is as it was.");
}

/* Canceled while polkit asked, and then the password dialog was dismissed:
 * canceled, not "permission was not given". */
static void
test_job_cancel_pending_then_refused (void)
{
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autoptr (GError) error = g_dbus_error_new_for_dbus_error (
      "org.bmapd.bmapd1.Error.NotAuthorized", "not authorized to flash /dev/sdb");
  g_autofree char *result = NULL;

  bmapd_flasher_job_flash_called (job);
  bmapd_flasher_job_request_cancel (job);
  bmapd_flasher_job_call_failed (job, error);
  g_assert_cmpint (bmapd_flasher_job_get_state (job), ==, BMAPD_FLASHER_JOB_CANCELED);
  g_assert_false (bmapd_flasher_job_take_pending_cancel (job));
  result = bmapd_flasher_job_dup_result (job);
  g_assert_cmpstr (result, ==, "Canceled. Nothing was written: the card is as it was.");
}

static void
test_job_canceled_while_authorizing (void)
{
  g_autoptr (BmapdFlasherJob) job = card_job ();
  g_autoptr (GError) error = g_dbus_error_new_for_dbus_error (
      "org.bmapd.bmapd1.Error.Cancelled", "job 1 was canceled by uid 1000 before it started");
  g_autofree char *result = NULL;

  bmapd_flasher_job_flash_called (job);
  bmapd_flasher_job_call_failed (job, error);
  g_assert_cmpint (bmapd_flasher_job_get_state (job), ==, BMAPD_FLASHER_JOB_CANCELED);
  result = bmapd_flasher_job_dup_result (job);
  g_assert_cmpstr (result, ==, "Canceled. Nothing was written: the card is as it was.");
}

static char *
write_file (const char *dir, const char *name, const char *data, gsize len)
{
  char *path = g_build_filename (dir, name, NULL);
  g_autoptr (GError) error = NULL;

  g_file_set_contents (path, data, len, &error);
  g_assert_no_error (error);
  return path;
}

static void
test_image (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("bmapd-flasher-test-XXXXXX", &error);
  g_autofree char *data = g_malloc0 (8192);
  g_autofree char *image_path = NULL;
  g_autofree char *bmap_path = NULL;
  g_autofree char *badge = NULL;
  g_autofree char *bmap = NULL;
  g_autoptr (BmapdFlasherImage) image = NULL;

  g_assert_no_error (error);
  memset (data, 0x5a, 4096);
  image_path = write_file (dir, "disk.img", data, 8192);

  /* Without a bmap: every byte. */
  image = bmapd_flasher_image_new_for_path (image_path, &error);
  g_assert_no_error (error);
  g_assert_null (bmapd_flasher_image_get_bmap_path (image));
  g_assert_cmpuint (bmapd_flasher_image_get_image_size (image), ==, 8192);
  g_assert_cmpuint (bmapd_flasher_image_get_bytes_to_write (image), ==, 8192);
  g_assert_cmpstr (bmapd_flasher_image_get_basename (image), ==, "disk.img");
  badge = bmapd_flasher_image_dup_badge (image);
  g_assert_cmpstr (badge, ==, "no block map: all of 8.2" NBSP "kB is written");
  g_clear_object (&image);
  g_clear_pointer (&badge, g_free);

  /* With a bmap found next to it: the mapped bytes of the image. */
  {
    g_autoptr (BmapMap) map = bmap_map_new (8192, 4096, BMAP_CHECKSUM_SHA256);
    guint8 digest[32];
    gsize digest_len = sizeof digest;
    g_autoptr (GChecksum) checksum = g_checksum_new (G_CHECKSUM_SHA256);
    gsize len;

    g_checksum_update (checksum, (const guchar *) data, 4096);
    g_checksum_get_digest (checksum, digest, &digest_len);
    bmap_map_add_range (map, 0, 0, digest);
    bmap = bmap_map_to_xml (map, &len);
    bmap_path = write_file (dir, "disk.img.bmap", bmap, len);
  }
  image = bmapd_flasher_image_new_for_path (image_path, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (bmapd_flasher_image_get_bmap_path (image), ==, bmap_path);
  g_assert_cmpuint (bmapd_flasher_image_get_image_size (image), ==, 8192);
  g_assert_cmpuint (bmapd_flasher_image_get_bytes_to_write (image), ==, 4096);
  g_assert_cmpstr (bmapd_flasher_image_get_format (image), ==, "raw");
  badge = bmapd_flasher_image_dup_badge (image);
  g_assert_cmpstr (badge, ==, "block map: 4.1" NBSP "kB of 8.2" NBSP "kB to write");
  g_clear_object (&image);

  /* A bmap for another image size belongs to another image. */
  g_unlink (image_path);
  g_free (write_file (dir, "disk.img", data, 4096));
  image = bmapd_flasher_image_new_for_path (image_path, &error);
  g_assert_null (image);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_clear_error (&error);

  /* A broken bmap is said, not ignored. */
  g_free (write_file (dir, "disk.img.bmap", "<bmap", 5));
  image = bmapd_flasher_image_new_for_path (image_path, &error);
  g_assert_null (image);
  g_assert_error (error, BMAP_ERROR, BMAP_ERROR_BAD_BMAP);
  g_clear_error (&error);

  g_unlink (bmap_path);
  g_unlink (image_path);
  g_rmdir (dir);
}

/* gpg in @home (a key made there signs; verifying needs no agent). */
static char *
run_gpg (const char *home, const char *args)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autofree char *cmd
      = g_strdup_printf ("GNUPGHOME='%s' gpg --batch --no-tty --pinentry-mode loopback "
                         "--passphrase '' %s",
                         home, args);
  const char *argv[] = { "/bin/sh", "-c", cmd, NULL };

  if (bmap_test_run (argv, &out, &err) != 0)
    g_error ("gpg %s failed: %s", args, err);
  return g_steal_pointer (&out);
}

/* Makes the key @uid in @home and returns its fingerprint. */
static char *
make_key (const char *home, const char *uid)
{
  g_autofree char *gen = g_strdup_printf ("--quick-gen-key '%s' ed25519 sign 1y", uid);
  g_autofree char *list = g_strdup_printf ("--with-colons --list-keys '%s'", uid);
  g_autofree char *listing = NULL;
  g_auto (GStrv) lines = NULL;

  g_free (run_gpg (home, gen));
  listing = run_gpg (home, list);
  lines = g_strsplit (listing, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++) {
    if (g_str_has_prefix (lines[i], "fpr:")) {
      g_auto (GStrv) fields = g_strsplit (lines[i], ":", -1);
      return g_strdup (fields[9]);
    }
  }
  g_error ("no fingerprint for %s in %s", uid, listing);
}

static void
on_signature_checked (GObject *source, GAsyncResult *result, gpointer user_data)
{
  gboolean *done = user_data;
  g_autoptr (GError) error = NULL;

  g_assert_true (
      bmapd_flasher_image_check_signature_finish (BMAPD_FLASHER_IMAGE (source), result, &error));
  g_assert_no_error (error);
  *done = TRUE;
}

/* Loads @image_path and judges its signature by the keys of @trusted. */
static BmapdFlasherImage *
load_and_check (const char *image_path, const char *trusted)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapdFlasherImage) image = bmapd_flasher_image_new_for_path (image_path, &error);
  gboolean done = FALSE;

  g_assert_no_error (error);
  bmapd_flasher_image_check_signature_async (image, trusted, NULL, on_signature_checked, &done);
  while (!done)
    g_main_context_iteration (NULL, TRUE);
  return g_steal_pointer (&image);
}

static void
test_image_signature (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = NULL;
  g_autofree char *home = NULL;
  g_autofree char *trusted = NULL;
  g_autofree char *empty = NULL;
  g_autofree char *release = NULL;
  g_autofree char *stranger = NULL;
  g_autofree char *image_path = NULL;
  g_autofree char *bmap_path = NULL;
  g_autofree char *badge = NULL;
  g_autofree char *want = NULL;
  g_autofree char *cmd = NULL;
  g_autofree char *data = g_malloc0 (8192);
  g_autofree char *bmap = NULL;
  g_autoptr (GBytes) bmap_bytes = NULL;
  g_autoptr (BmapdFlasherImage) image = NULL;
  gsize len;

  if (!bmap_test_have_program ("gpg") || !bmap_test_have_program ("gpgconf")) {
    g_test_skip ("gpg and gpgconf (gnupg) are not installed");
    return;
  }
  dir = bmap_test_tmpdir ();
  home = g_build_filename (dir, "home", NULL);
  trusted = g_build_filename (dir, "trusted-keys.d", NULL);
  empty = g_build_filename (dir, "no-keys.d", NULL);
  g_assert_cmpint (g_mkdir (home, 0700), ==, 0);
  g_assert_cmpint (g_mkdir (trusted, 0755), ==, 0);
  g_assert_cmpint (g_mkdir (empty, 0755), ==, 0);
  release = make_key (home, "Release Team <release@example.org>");
  stranger = make_key (home, "Stranger <stranger@example.org>");
  /* Only the release key is trusted, as bmapd's trusted-keys.d holds it. */
  cmd = g_strdup_printf ("--armor --output '%s/release.asc' --export %s", trusted, release);
  g_free (run_gpg (home, cmd));
  g_clear_pointer (&cmd, g_free);

  memset (data, 0x5a, 4096);
  image_path = write_file (dir, "disk.img", data, 8192);
  {
    g_autoptr (BmapMap) map = bmap_map_new (8192, 4096, BMAP_CHECKSUM_SHA256);
    guint8 digest[32];
    gsize digest_len = sizeof digest;
    g_autoptr (GChecksum) checksum = g_checksum_new (G_CHECKSUM_SHA256);

    g_checksum_update (checksum, (const guchar *) data, 4096);
    g_checksum_get_digest (checksum, digest, &digest_len);
    bmap_map_add_range (map, 0, 0, digest);
    bmap = bmap_map_to_xml (map, &len);
    bmap_path = write_file (dir, "disk.img.bmap", bmap, len);
    bmap_bytes = g_bytes_new (bmap, len);
  }

  /* No signature: nothing to say, nothing to pass. */
  image = load_and_check (image_path, trusted);
  g_assert_cmpint (bmapd_flasher_image_get_signature_state (image), ==,
                   BMAPD_FLASHER_SIGNATURE_NONE);
  g_assert_null (bmapd_flasher_image_dup_signature_badge (image));
  g_assert_null (bmapd_flasher_image_get_signature_distrust (image));
  g_assert_null (bmapd_flasher_image_get_signature (image));
  g_assert_true (g_bytes_equal (bmapd_flasher_image_get_bmap_data (image), bmap_bytes));
  g_clear_object (&image);

  /* BMAP.asc by the trusted key: said before the check, then who signed. */
  cmd = g_strdup_printf ("--local-user %s --armor --output '%s.asc' --detach-sign '%s'", release,
                         bmap_path, bmap_path);
  g_free (run_gpg (home, cmd));
  g_clear_pointer (&cmd, g_free);
  image = bmapd_flasher_image_new_for_path (image_path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bmapd_flasher_image_get_signature_state (image), ==,
                   BMAPD_FLASHER_SIGNATURE_CHECKING);
  badge = bmapd_flasher_image_dup_signature_badge (image);
  g_assert_cmpstr (badge, ==, "checking the signature…");
  g_clear_pointer (&badge, g_free);
  g_assert_nonnull (bmapd_flasher_image_get_signature (image));
  g_clear_object (&image);
  image = load_and_check (image_path, trusted);
  g_assert_cmpint (bmapd_flasher_image_get_signature_state (image), ==,
                   BMAPD_FLASHER_SIGNATURE_TRUSTED);
  badge = bmapd_flasher_image_dup_signature_badge (image);
  want = g_strdup_printf ("signed by Release Team <release@example.org> (%s)",
                          release + strlen (release) - 16);
  g_assert_cmpstr (badge, ==, want);
  g_clear_pointer (&badge, g_free);
  g_clear_object (&image);

  /* The same signature, but bmapd trusts no key: not trusted, and why. */
  image = load_and_check (image_path, empty);
  g_assert_cmpint (bmapd_flasher_image_get_signature_state (image), ==,
                   BMAPD_FLASHER_SIGNATURE_UNTRUSTED);
  badge = bmapd_flasher_image_dup_signature_badge (image);
  g_assert_true (g_str_has_prefix (badge, "signature not trusted: no trusted keys: "));
  g_assert_cmpstr (badge + strlen ("signature not trusted: "), ==,
                   bmapd_flasher_image_get_signature_distrust (image));
  g_clear_pointer (&badge, g_free);
  g_clear_object (&image);

  /* BMAP.sig by a key bmapd does not trust (.asc first, as bmaptool). */
  {
    g_autofree char *asc = g_strconcat (bmap_path, ".asc", NULL);
    g_assert_cmpint (g_unlink (asc), ==, 0);
  }
  cmd = g_strdup_printf ("--local-user %s --output '%s.sig' --detach-sign '%s'", stranger,
                         bmap_path, bmap_path);
  g_free (run_gpg (home, cmd));
  g_clear_pointer (&cmd, g_free);
  image = load_and_check (image_path, trusted);
  g_assert_cmpint (bmapd_flasher_image_get_signature_state (image), ==,
                   BMAPD_FLASHER_SIGNATURE_UNTRUSTED);
  badge = bmapd_flasher_image_dup_signature_badge (image);
  g_assert_true (g_str_has_prefix (
      badge, "signature not trusted: the signature in disk.img.bmap.sig is by key "));
  g_assert_nonnull (strstr (badge, "unknown signer"));
  g_clear_pointer (&badge, g_free);
  g_clear_object (&image);

  /* A signature of another bmap: BAD, not trusted. */
  {
    g_autofree char *sig = g_strconcat (bmap_path, ".sig", NULL);
    g_autofree char *other = g_strconcat (bmap, "\n", NULL);

    g_free (write_file (dir, "other.bmap", other, len + 1));
    cmd = g_strdup_printf ("--local-user %s --output '%s' --yes --detach-sign '%s/other.bmap'",
                           release, sig, dir);
    g_free (run_gpg (home, cmd));
    g_clear_pointer (&cmd, g_free);
    image = load_and_check (image_path, trusted);
    g_assert_cmpint (bmapd_flasher_image_get_signature_state (image), ==,
                     BMAPD_FLASHER_SIGNATURE_UNTRUSTED);
    badge = bmapd_flasher_image_dup_signature_badge (image);
    g_assert_nonnull (strstr (badge, "BAD signature"));
    g_clear_pointer (&badge, g_free);
    g_clear_object (&image);
    g_assert_cmpint (g_unlink (sig), ==, 0);
  }

  /* A clearsigned bmap: bmapd gets its signed text as the bmap and the
   * whole file as the signature. */
  g_free (write_file (dir, "plain.bmap", bmap, len));
  cmd = g_strdup_printf ("--local-user %s --output '%s' --yes --clearsign '%s/plain.bmap'", release,
                         bmap_path, dir);
  g_free (run_gpg (home, cmd));
  g_clear_pointer (&cmd, g_free);
  image = load_and_check (image_path, trusted);
  g_assert_cmpint (bmapd_flasher_image_get_signature_state (image), ==,
                   BMAPD_FLASHER_SIGNATURE_TRUSTED);
  g_assert_true (g_bytes_equal (bmapd_flasher_image_get_bmap_data (image), bmap_bytes));
  {
    g_autoptr (GBytes) file = bmap_test_read_file (bmap_path);
    g_assert_true (g_bytes_equal (bmapd_flasher_image_get_signature (image), file));
  }
  g_assert_cmpuint (bmapd_flasher_image_get_bytes_to_write (image), ==, 4096);
  g_clear_object (&image);

  {
    g_autofree char *kill = g_strdup_printf ("gpgconf --homedir '%s' --kill all", home);
    const char *argv[] = { "/bin/sh", "-c", kill, NULL };
    bmap_test_run (argv, NULL, NULL);
    g_free (kill);
    kill = g_strdup_printf ("rm -rf '%s'", dir);
    bmap_test_run (argv, NULL, NULL);
  }
}

int
main (int argc, char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/flasher/device/fallbacks", test_device_fallbacks);
  g_test_add_func ("/flasher/device/new-properties", test_device_new_properties);
  g_test_add_func ("/flasher/device/partition", test_device_partition);
  g_test_add_func ("/flasher/device/erase-warning", test_device_erase_warning);
  g_test_add_func ("/flasher/device/wrong-types", test_device_wrong_types_ignored);
  g_test_add_func ("/flasher/device/unusable", test_device_unusable);
  g_test_add_func ("/flasher/device/unknown-system", test_device_unknown_system);
  g_test_add_func ("/flasher/job/done", test_job_done);
  g_test_add_func ("/flasher/job/minimize-writes", test_job_minimize_writes);
  g_test_add_func ("/flasher/job/time-left-from-daemon", test_job_time_left_from_daemon);
  g_test_add_func ("/flasher/job/failed-partial", test_job_failed_partial);
  g_test_add_func ("/flasher/job/canceled-before-writing", test_job_canceled_before_writing);
  g_test_add_func ("/flasher/job/call-failed", test_job_call_failed);
  g_test_add_func ("/flasher/job/canceled-while-authorizing", test_job_canceled_while_authorizing);
  g_test_add_func ("/flasher/job/cancel-pending", test_job_cancel_pending);
  g_test_add_func ("/flasher/job/cancel-pending-then-refused",
                   test_job_cancel_pending_then_refused);
  g_test_add_func ("/flasher/station", test_station);
  g_test_add_func ("/flasher/image", test_image);
  g_test_add_func ("/flasher/image/signature", test_image_signature);
  return g_test_run ();
}
