/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-trusted-keys.h"
#include "bmapd-log.h"
#include "bmapd-trusted-keys.h"

static char *trusted_keys_dir;

void
bmapd_trusted_keys_set_dir (const char *dir)
{
  g_free (trusted_keys_dir);
  trusted_keys_dir = g_strdup (dir);
}

const char *
bmapd_trusted_keys_get_dir (void)
{
  return trusted_keys_dir != NULL ? trusted_keys_dir : BMAPD_TRUSTED_KEYS_DEFAULT_DIR;
}

const char *
bmapd_signature_state_to_string (BmapdSignatureState state)
{
  switch (state) {
    case BMAPD_SIGNATURE_TRUSTED:
      return "trusted";
    case BMAPD_SIGNATURE_UNTRUSTED:
      return "untrusted";
    case BMAPD_SIGNATURE_NONE:
    default:
      return "none";
  }
}

void
bmapd_signature_result_free (BmapdSignatureResult *result)
{
  if (result == NULL)
    return;
  g_free (result->signer);
  g_free (result->signer_name);
  g_free (result->why);
  g_free (result);
}

static BmapdSignatureResult *untrusted (const char *format, ...) G_GNUC_PRINTF (1, 2);

static BmapdSignatureResult *
untrusted (const char *format, ...)
{
  BmapdSignatureResult *result = g_new0 (BmapdSignatureResult, 1);
  va_list args;

  va_start (args, format);
  result->state = BMAPD_SIGNATURE_UNTRUSTED;
  result->why = g_strdup_vprintf (format, args);
  va_end (args);
  return result;
}

BmapdSignatureResult *
bmapd_trusted_keys_verify (const char *dir, GBytes *bmap, GBytes *signature)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BmapSigner) signer
      = bmap_trusted_keys_verify (dir, bmap, signature, "bmap", "bmap-signature", &error);
  BmapdSignatureResult *result;

  if (signer == NULL)
    return untrusted ("%s", error->message);
  result = g_new0 (BmapdSignatureResult, 1);
  result->state = BMAPD_SIGNATURE_TRUSTED;
  result->signer = g_steal_pointer (&signer->fingerprint);
  result->signer_name = g_steal_pointer (&signer->signer);
  return result;
}

/* What the worker and the event loop share; the last one to let go frees
 * it, so a check given up (timeout, cancelled call) leaves the worker
 * nothing to trip over. */
typedef struct {
  gint ref;
  int efd;
  char *dir;
  GBytes *bmap;
  GBytes *signature;
  gpointer hold; /* the caller's, released with the work */
  GDestroyNotify hold_free;
  BmapdSignatureResult *result; /* set by the worker before it signals efd */
} Work;

static void
work_unref (Work *work)
{
  if (!g_atomic_int_dec_and_test (&work->ref))
    return;
  close (work->efd);
  g_free (work->dir);
  g_bytes_unref (work->bmap);
  g_bytes_unref (work->signature);
  if (work->hold_free != NULL && work->hold != NULL)
    work->hold_free (work->hold);
  bmapd_signature_result_free (work->result);
  g_free (work);
}

static gpointer
worker (gpointer data)
{
  Work *work = data;
  uint64_t one = 1;

  work->result = bmapd_trusted_keys_verify (work->dir, work->bmap, work->signature);
  if (write (work->efd, &one, sizeof (one)) < 0)
    g_warning ("cannot signal the end of a signature check: %s", g_strerror (errno));
  work_unref (work);
  return NULL;
}

/* bmapd blocks SIGTERM, SIGINT and SIGHUP in every thread for its
 * signalfd, and a child inherits the mask: gpg, run by GPGME from a worker,
 * would ignore the SIGTERM that stops it (a stuck one given up on, or
 * systemd stopping the service). Children get the default mask back. */
static void
child_unblock_signals (void)
{
  sigset_t none;

  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
}

static void
children_unblock_signals_once (void)
{
  static gsize done = 0;

  if (g_once_init_enter (&done)) {
    pthread_atfork (NULL, NULL, child_unblock_signals);
    g_once_init_leave (&done, 1);
  }
}

struct _BmapdTrustedKeysCheck {
  Work *work;
  sd_event_source *io;
  sd_event_source *timer;
  BmapdTrustedKeysFunc func;
  gpointer user_data;
};

static void
check_finish (BmapdTrustedKeysCheck *check, const BmapdSignatureResult *result)
{
  BmapdTrustedKeysFunc func = g_steal_pointer (&check->func);

  check->io = sd_event_source_disable_unref (check->io);
  check->timer = sd_event_source_disable_unref (check->timer);
  if (result->state == BMAPD_SIGNATURE_TRUSTED)
    bmapd_log (LOG_INFO, "bmap signed by trusted key %s (%s)", result->signer, result->signer_name);
  else
    bmapd_log (LOG_INFO, "bmap signature not trusted: %s", result->why);
  /* Last: the callback may free the check. */
  if (func != NULL)
    func (result, check->user_data);
}

static int
on_work_done (sd_event_source *source, int fd, uint32_t revents, void *user_data)
{
  BmapdTrustedKeysCheck *check = user_data;
  uint64_t n;

  if (read (fd, &n, sizeof (n)) < 0 && errno == EAGAIN)
    return 0;
  check_finish (check, check->work->result);
  return 0;
}

static int
on_timeout (sd_event_source *source, uint64_t usec, void *user_data)
{
  BmapdTrustedKeysCheck *check = user_data;
  g_autoptr (BmapdSignatureResult) result
      = untrusted ("the signature check took longer than %d s; given up",
                   (int) (BMAPD_TRUSTED_KEYS_TIMEOUT_USEC / G_USEC_PER_SEC));

  check_finish (check, result);
  return 0;
}

BmapdTrustedKeysCheck *
bmapd_trusted_keys_check_new (sd_event *event, GBytes *bmap, GBytes *signature, gpointer hold,
                              GDestroyNotify hold_free, BmapdTrustedKeysFunc func,
                              gpointer user_data, GError **error)
{
  g_autoptr (BmapdTrustedKeysCheck) check = g_new0 (BmapdTrustedKeysCheck, 1);
  g_autoptr (GThread) thread = NULL;
  Work *work;
  int r;

  children_unblock_signals_once ();
  work = g_new0 (Work, 1);
  work->ref = 1;
  work->efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  work->dir = g_strdup (bmapd_trusted_keys_get_dir ());
  work->bmap = g_bytes_ref (bmap);
  work->signature = g_bytes_ref (signature);
  work->hold = hold;
  work->hold_free = hold_free;
  check->work = work;
  check->func = func;
  check->user_data = user_data;
  if (work->efd < 0) {
    bmap_error_set_errno (error, errno, "cannot check the bmap signature: eventfd");
    return NULL;
  }
  r = sd_event_add_io (event, &check->io, work->efd, EPOLLIN, on_work_done, check);
  if (r >= 0)
    r = sd_event_add_time_relative (event, &check->timer, CLOCK_MONOTONIC,
                                    BMAPD_TRUSTED_KEYS_TIMEOUT_USEC, 0, on_timeout, check);
  if (r < 0) {
    bmap_error_set_errno (error, -r, "cannot check the bmap signature: event sources");
    return NULL;
  }
  g_atomic_int_inc (&work->ref);
  thread = g_thread_try_new ("bmapd-signature", worker, work, error);
  if (thread == NULL) {
    g_atomic_int_add (&work->ref, -1);
    bmap_error_normalize (error);
    return NULL;
  }
  return g_steal_pointer (&check);
}

void
bmapd_trusted_keys_check_free (BmapdTrustedKeysCheck *check)
{
  if (check == NULL)
    return;
  check->io = sd_event_source_disable_unref (check->io);
  check->timer = sd_event_source_disable_unref (check->timer);
  work_unref (check->work);
  g_free (check);
}
