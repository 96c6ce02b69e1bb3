/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmapctl-ssh.h"

struct _BmapctlSsh {
  char *display;
  char *host; /* [USER@]HOST, as ssh takes it */
  char *port;
  char *path;
  GPid pid;
  int out;
  int err;
};

/* Where the URL's authority (USER@HOST:PORT) starts and ends. */
static const char *
url_authority (const char *url, const char **end)
{
  const char *start = strstr (url, "://");

  start = start != NULL ? start + 3 : url;
  *end = start + strcspn (start, "/?#");
  return start;
}

static gboolean
parse_url (BmapctlSsh *s, const char *url, GError **error)
{
  const char *end;
  const char *start = url_authority (url, &end);
  const char *at = g_strrstr_len (start, end - start, "@");
  const char *host = at != NULL ? at + 1 : start;
  const char *host_end = host[0] == '[' ? memchr (host, ']', (gsize) (end - host)) : host;
  const char *colon = NULL;
  g_autofree char *host_name = NULL;
  g_autofree char *path = NULL;

  if (at != NULL && memchr (start, ':', (gsize) (at - start)) != NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_UNSUPPORTED,
                 "%s: passwords in ssh:// URLs are not supported; log in with a key "
                 "(ssh-agent) instead",
                 s->display);
    return FALSE;
  }
  /* The port's colon comes after an [IPv6] address. */
  if (host_end != NULL)
    colon = memchr (host_end, ':', (gsize) (end - host_end));
  host_name = g_strndup (host, (gsize) ((colon != NULL ? colon : end) - host));
  if (host_name[0] == '[' && g_str_has_suffix (host_name, "]")) {
    memmove (host_name, host_name + 1, strlen (host_name) - 2);
    host_name[strlen (host_name) - 2] = '\0';
  }
  if (colon != NULL && colon + 1 < end
      && strspn (colon + 1, "0123456789") == (gsize) (end - colon - 1)) {
    s->port = g_strndup (colon + 1, (gsize) (end - colon - 1));
    path = g_uri_unescape_string (end, NULL);
  } else if (colon != NULL) {
    path = g_uri_unescape_string (colon + 1, NULL);
  } else {
    path = g_uri_unescape_string (end, NULL);
  }
  if (*host_name == '\0' || path == NULL || *path == '\0') {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: not an ssh://[USER@]HOST[:PORT]/PATH URL", s->display);
    return FALSE;
  }
  if (at != NULL) {
    g_autofree char *user = g_strndup (start, (gsize) (at - start));
    g_autofree char *user_name = g_uri_unescape_string (user, NULL);

    s->host = g_strdup_printf ("%s@%s", user_name != NULL ? user_name : user, host_name);
  } else {
    s->host = g_steal_pointer (&host_name);
  }
  s->path = g_steal_pointer (&path);
  return TRUE;
}

static GStrv
ssh_argv (const BmapctlSsh *s, const char *command)
{
  g_autoptr (GStrvBuilder) argv = g_strv_builder_new ();

  g_strv_builder_add_many (argv, "ssh", "-o", "BatchMode=yes", "-o", "ClearAllForwardings=yes",
                           "-o", "ForwardX11=no", NULL);
  if (s->port != NULL)
    g_strv_builder_add_many (argv, "-p", s->port, NULL);
  g_strv_builder_add_many (argv, "--", s->host, command, NULL);
  return g_strv_builder_end (argv);
}

static char *
ssh_cat_command (const char *path)
{
  g_autofree char *quoted = g_shell_quote (path);

  return g_strdup_printf ("cat -- %s", quoted);
}

/* ssh blocks nothing: undo bmapctl's blocked SIGINT/SIGTERM in the child. */
static void
ssh_child_setup (gpointer data)
{
  sigset_t set;

  sigemptyset (&set);
  pthread_sigmask (SIG_SETMASK, &set, NULL);
}

/* Runs ssh @command to its end. ssh's own failures exit with 255. */
static gboolean
ssh_run (const BmapctlSsh *s, const char *command, GBytes **out, int *exit_status, char **err_text,
         GError **error)
{
  g_auto (GStrv) argv = ssh_argv (s, command);
  g_autofree char *out_text = NULL;
  gsize out_len = 0;
  int wait_status;

  if (!g_spawn_sync (NULL, argv, NULL, G_SPAWN_SEARCH_PATH, ssh_child_setup, NULL, &out_text,
                     err_text, &wait_status, error)) {
    g_prefix_error (error, "%s: cannot run ssh: ", s->display);
    return FALSE;
  }
  if (out != NULL) {
    /* Text (a bmap): a NUL, which XML cannot hold, ends it. */
    out_len = out_text != NULL ? strlen (out_text) : 0;
    *out = g_bytes_new_take (g_steal_pointer (&out_text), out_len);
  }
  *exit_status = WIFEXITED (wait_status) ? WEXITSTATUS (wait_status) : 255;
  if (err_text != NULL && *err_text != NULL)
    g_strstrip (*err_text);
  return TRUE;
}

static void
set_ssh_error (GError **error, const BmapctlSsh *s, int exit_status, const char *err_text)
{
  const char *sep = err_text != NULL && *err_text != '\0' ? ": " : "";

  if (err_text == NULL)
    err_text = "";
  if (exit_status == 255)
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: cannot connect to %s with ssh%s%s",
                 s->display, s->host, sep, err_text);
  else
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: %s on %s cannot be read%s%s", s->display,
                 s->path, s->host, sep, err_text);
}

/* Keeps what ssh says on stderr (the last of it), for the error. */
static void
read_stderr (BmapctlSsh *s, GString *err_text)
{
  char buf[1024];
  gssize n = read (s->err, buf, sizeof (buf));

  if (n <= 0) {
    close (s->err);
    s->err = -1;
    return;
  }
  g_string_append_len (err_text, buf, n);
  if (err_text->len > 4096)
    g_string_erase (err_text, 0, (gssize) (err_text->len - 4096));
}

static void
stop_ssh (BmapctlSsh *s)
{
  kill (s->pid, SIGTERM);
  waitpid (s->pid, NULL, 0);
  g_spawn_close_pid (s->pid);
  s->pid = 0;
}

gboolean
bmapctl_ssh_pump (BmapctlSsh *s, int wfd, int stop_fd, BmapctlDownloadFunc func, gpointer data,
                  GError **error)
{
  g_autoptr (GString) err_text = g_string_new (NULL);
  g_autofree guint8 *buf = g_malloc (256 * 1024);
  gboolean any = FALSE;
  int status;

  while (s->out >= 0) {
    struct pollfd fds[3] = {
      { .fd = s->out, .events = POLLIN },
      { .fd = stop_fd, .events = POLLIN },
      { .fd = s->err, .events = POLLIN },
    };
    gssize n;

    if (poll (fds, s->err >= 0 ? 3 : 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      bmap_error_set_errno (error, errno, "poll");
      stop_ssh (s);
      return FALSE;
    }
    if (fds[1].revents & POLLIN) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "%s: download canceled", s->display);
      stop_ssh (s);
      return FALSE;
    }
    if (s->err >= 0 && fds[2].revents != 0)
      read_stderr (s, err_text);
    if (fds[0].revents == 0)
      continue;
    n = read (s->out, buf, 256 * 1024);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n <= 0) {
      close (s->out);
      s->out = -1;
      break;
    }
    if (!any) {
      any = TRUE;
      if (func != NULL)
        func (data);
    }
    if (!bmapctl_pipe_write_all (wfd, stop_fd, buf, (gsize) n, error)) {
      stop_ssh (s);
      return FALSE;
    }
    bmapctl_download_add_received ((guint64) n);
  }
  while (s->err >= 0)
    read_stderr (s, err_text);

  while (waitpid (s->pid, &status, 0) < 0 && errno == EINTR)
    ;
  g_spawn_close_pid (s->pid);
  s->pid = 0;
  if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
    return TRUE;
  g_strstrip (err_text->str);
  set_ssh_error (error, s, WIFEXITED (status) ? WEXITSTATUS (status) : 255, err_text->str);
  return FALSE;
}

BmapctlSsh *
bmapctl_ssh_new (const char *url, const char *display, GError **error)
{
  g_autoptr (BmapctlSsh) s = g_new0 (BmapctlSsh, 1);

  s->out = s->err = -1;
  s->display = g_strdup (display);
  if (!parse_url (s, url, error))
    return NULL;
  return g_steal_pointer (&s);
}

void
bmapctl_ssh_free (BmapctlSsh *s)
{
  if (s == NULL)
    return;
  if (s->pid != 0)
    stop_ssh (s);
  if (s->out >= 0)
    close (s->out);
  if (s->err >= 0)
    close (s->err);
  g_free (s->display);
  g_free (s->host);
  g_free (s->port);
  g_free (s->path);
  g_free (s);
}

gboolean
bmapctl_ssh_start (BmapctlSsh *s, GError **error)
{
  g_autofree char *command = ssh_cat_command (s->path);
  g_auto (GStrv) argv = ssh_argv (s, command);

  if (!g_spawn_async_with_pipes (
          NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_CLOEXEC_PIPES,
          ssh_child_setup, NULL, &s->pid, NULL, &s->out, &s->err, error)) {
    g_prefix_error (error, "%s: cannot run ssh: ", s->display);
    return FALSE;
  }
  return TRUE;
}

GBytes *
bmapctl_ssh_fetch (BmapctlSsh *s, gboolean *absent, GError **error)
{
  g_autofree char *command = NULL;
  g_autofree char *err_text = NULL;
  g_autoptr (GBytes) data = NULL;
  int exit_status;

  *absent = FALSE;
  command = ssh_cat_command (s->path);
  if (!ssh_run (s, command, &data, &exit_status, &err_text, error))
    return NULL;
  if (exit_status != 0) {
    *absent = exit_status != 255;
    set_ssh_error (error, s, exit_status, err_text);
    return NULL;
  }
  return g_steal_pointer (&data);
}
