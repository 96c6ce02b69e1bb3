/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libfdisk/libfdisk.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-gpt.h"

typedef struct fdisk_context FdiskContext;
G_DEFINE_AUTOPTR_CLEANUP_FUNC (FdiskContext, fdisk_unref_context)

/* libfdisk's messages, kept to say why it failed. */
static int
on_fdisk_ask (struct fdisk_context *cxt, struct fdisk_ask *ask, void *data)
{
  GString *messages = data;
  const char *mesg;

  switch (fdisk_ask_get_type (ask)) {
    case FDISK_ASKTYPE_INFO:
    case FDISK_ASKTYPE_WARN:
    case FDISK_ASKTYPE_WARNX:
      mesg = fdisk_ask_print_get_mesg (ask);
      if (mesg != NULL && *mesg != '\0') {
        if (messages->len > 0)
          g_string_append (messages, "; ");
        g_string_append (messages, mesg);
        if (fdisk_ask_get_type (ask) == FDISK_ASKTYPE_WARN && fdisk_ask_print_get_errno (ask) != 0)
          g_string_append_printf (messages, ": %s", g_strerror (fdisk_ask_print_get_errno (ask)));
      }
      return 0;
    default:
      /* Nothing here asks questions; refuse any. */
      return -EINVAL;
  }
}

static FdiskContext *
context_new (int fd, const char *name, gboolean readonly, GString *messages, GError **error)
{
  g_autoptr (FdiskContext) cxt = fdisk_new_context ();
  int rc;

  if (cxt == NULL)
    g_error ("out of memory creating a libfdisk context");
  fdisk_set_ask (cxt, on_fdisk_ask, messages);
  rc = fdisk_assign_device_by_fd (cxt, fd, name, readonly);
  if (rc < 0) {
    bmap_error_set_errno (error, -rc, "%s: libfdisk cannot read the partition table", name);
    return NULL;
  }
  return g_steal_pointer (&cxt);
}

static gboolean
write_relocated (int fd, const char *name, GString *messages, GError **error)
{
  g_autoptr (FdiskContext) cxt = context_new (fd, name, FALSE, messages, error);
  int rc;

  if (cxt == NULL)
    return FALSE;
  /* sfdisk --relocate gpt-bak-std: libfdisk places the backup at the end
   * of the device it was given whenever it writes the label. */
  fdisk_label_set_changed (fdisk_get_label (cxt, "gpt"), 1);
  rc = fdisk_write_disklabel (cxt);
  if (rc == 0)
    rc = fdisk_deassign_device (cxt, 1);
  if (rc < 0) {
    bmap_error_set_errno (error, -rc, "%s: cannot write the relocated GPT (%s)", name,
                          messages->len > 0 ? messages->str : "libfdisk said nothing more");
    return FALSE;
  }
  return TRUE;
}

/* What `sfdisk --verify` checks, on the table as the device holds it now:
 * both headers and tables, their checksums, the backup at the end. */
static gboolean
verify_table (int fd, const char *name, GError **error)
{
  g_autoptr (GString) messages = g_string_new (NULL);
  g_autoptr (FdiskContext) cxt = context_new (fd, name, TRUE, messages, error);
  int rc;

  if (cxt == NULL)
    return FALSE;
  if (!fdisk_is_label (cxt, GPT)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "%s: no GPT found reading the device back after relocating its backup", name);
    return FALSE;
  }
  g_string_truncate (messages, 0);
  rc = fdisk_verify_disklabel (cxt);
  if (rc < 0) {
    bmap_error_set_errno (error, -rc, "%s: cannot check the relocated GPT", name);
    return FALSE;
  }
  if (rc > 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                 "%s: the relocated GPT does not verify (%d problems: %s)", name, rc,
                 messages->str);
    return FALSE;
  }
  return TRUE;
}

gboolean
bmap_gpt_relocate (BmapTarget *target, guint64 image_size, BmapGptStatus *status, GError **error)
{
  const char *name = bmap_target_get_name (target);
  g_autofree char *proc = NULL;
  g_autoptr (GString) messages = g_string_new (NULL);
  gboolean is_gpt;
  gboolean ok;
  int fd;

  *status = BMAP_GPT_NO_GPT;
  if (bmap_target_get_kind (target) == BMAP_TARGET_NULL)
    return TRUE;

  /* The target's descriptor is write-only; libfdisk reads and writes. */
  proc = g_strdup_printf ("/proc/self/fd/%d", bmap_target_get_fd (target));
  fd = open (proc, O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    bmap_error_set_errno (error, errno, "%s: cannot open for relocating the GPT", name);
    return FALSE;
  }

  {
    g_autoptr (FdiskContext) probe = context_new (fd, name, TRUE, messages, error);

    if (probe == NULL) {
      close (fd);
      return FALSE;
    }
    is_gpt = fdisk_is_label (probe, GPT);
  }
  if (!is_gpt) {
    close (fd);
    return TRUE;
  }
  if (bmap_target_get_kind (target) != BMAP_TARGET_BLOCK_DEVICE
      || bmap_target_get_size (target) <= image_size) {
    *status = BMAP_GPT_AT_END;
    close (fd);
    return TRUE;
  }

  ok = write_relocated (fd, name, messages, error) && verify_table (fd, name, error);
  close (fd);
  if (ok)
    *status = BMAP_GPT_RELOCATED;
  return ok;
}
