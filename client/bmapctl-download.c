/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmapctl-download.h"

/* Breaks in a row, each without a byte more, before a download fails. */
#define RESUME_ATTEMPTS 5
/* Seconds with no byte at all before a connection counts as broken (and
 * resumes): a server that stalls is then treated as one that dropped.
 * BMAPCTL_STALL_TIMEOUT sets another. */
#define STALL_SECONDS          60
#define CONNECT_TIMEOUT_SECOND 60

static guint64 received_bytes;

guint64
bmapctl_download_get_received (void)
{
  return __atomic_load_n (&received_bytes, __ATOMIC_RELAXED);
}

void
bmapctl_download_add_received (guint64 n)
{
  __atomic_add_fetch (&received_bytes, n, __ATOMIC_RELAXED);
}

/* The state of one URL, its connection and its request under way. */
struct _BmapctlDownload {
  CURL *easy;
  CURLM *multi;
  char *display; /* the URL without its password, for messages */
  gboolean is_http;
  GCancellable *stop;
  int stop_fd;
  char errbuf[CURL_ERROR_SIZE];

  /* The body goes into a pipe (wfd, not owned), or into memory up to
   * memory_cap. */
  int wfd;
  GByteArray *memory;
  gsize memory_cap;
  gboolean probe; /* a 200 to the Range request is an answer, not an error */

  /* The request under way. */
  guint64 pos; /* image offset of the next byte */
  guint64 end; /* end of the range asked for, exclusive; 0: the file's end */
  gboolean ranged;
  gboolean sent_if_range;
  gboolean checked; /* the answer was checked at its first byte */
  GError *error;    /* from the callbacks */
  CURLcode result;

  /* Its answer. */
  long status;
  char *reason;
  char *etag;
  char *last_modified;
  gboolean have_content_range;
  guint64 range_start;
  guint64 total;

  char *validator;        /* the first answer's ETag or date, for If-Range */
  guint64 expected_total; /* ranges must come from a file of this size */
  gboolean answered;      /* an answer got through: later breaks resume */
  BmapctlDownloadFunc on_answered;
  gpointer on_answered_data;
};

static gpointer
init_curl (gpointer data)
{
  return GINT_TO_POINTER (curl_global_init (CURL_GLOBAL_DEFAULT) == CURLE_OK);
}

static void
clear_answer (BmapctlDownload *t)
{
  t->status = 0;
  t->have_content_range = FALSE;
  t->range_start = t->total = 0;
  g_clear_pointer (&t->reason, g_free);
  g_clear_pointer (&t->etag, g_free);
  g_clear_pointer (&t->last_modified, g_free);
}

void
bmapctl_download_free (BmapctlDownload *t)
{
  if (t == NULL)
    return;
  if (t->multi != NULL)
    curl_multi_cleanup (t->multi);
  if (t->easy != NULL)
    curl_easy_cleanup (t->easy);
  if (t->memory != NULL)
    g_byte_array_unref (t->memory);
  clear_answer (t);
  g_clear_error (&t->error);
  g_free (t->validator);
  g_free (t->display);
  if (t->stop != NULL) {
    g_cancellable_release_fd (t->stop);
    g_object_unref (t->stop);
  }
  g_free (t);
}

/* "Name: value" -> value, when the header is @name. */
static const char *
header_value (const char *line, const char *name)
{
  gsize len = strlen (name);

  if (g_ascii_strncasecmp (line, name, len) != 0 || line[len] != ':')
    return NULL;
  line += len + 1;
  while (*line == ' ' || *line == '\t')
    line++;
  return line;
}

/* "bytes 100-199/1000"; the total may be "*". */
static gboolean
parse_content_range (const char *value, guint64 *start, guint64 *total)
{
  char *end;

  if (g_ascii_strncasecmp (value, "bytes ", 6) != 0)
    return FALSE;
  *start = g_ascii_strtoull (value + 6, &end, 10);
  if (end == value + 6 || *end != '-')
    return FALSE;
  end = strchr (end, '/');
  if (end == NULL)
    return FALSE;
  *total = end[1] == '*' ? 0 : g_ascii_strtoull (end + 1, NULL, 10);
  return TRUE;
}

static size_t
on_header (char *data, size_t size, size_t nitems, void *user_data)
{
  BmapctlDownload *t = user_data;
  g_autofree char *line = g_strndup (data, size * nitems);
  const char *value;

  g_strchomp (line);
  if (g_str_has_prefix (line, "HTTP/")) {
    /* A new answer: after a redirect, or a 100 Continue. */
    const char *code = strchr (line, ' ');
    char *rest = NULL;

    clear_answer (t);
    if (code != NULL) {
      t->status = strtol (code + 1, &rest, 10);
      t->reason = g_strdup (g_strstrip (rest));
    }
  } else if ((value = header_value (line, "ETag")) != NULL) {
    g_free (t->etag);
    t->etag = g_strdup (value);
  } else if ((value = header_value (line, "Last-Modified")) != NULL) {
    g_free (t->last_modified);
    t->last_modified = g_strdup (value);
  } else if ((value = header_value (line, "Content-Range")) != NULL) {
    t->have_content_range = parse_content_range (value, &t->range_start, &t->total);
  }
  return size * nitems;
}

static void
set_http_error (BmapctlDownload *t, GError **error)
{
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: HTTP %ld%s%s", t->display, t->status,
               t->reason != NULL && *t->reason != '\0' ? " " : "",
               t->reason != NULL ? t->reason : "");
}

/* Whether an HTTP answer is the one asked for. */
static gboolean
check_http_answer (BmapctlDownload *t, GError **error)
{
  if (t->status >= 400 || t->status < 200) {
    set_http_error (t, error);
    return FALSE;
  }
  if (t->ranged && t->status != 206) {
    /* The whole file again: the same one if it still has the validator. */
    gboolean changed = t->sent_if_range && g_strcmp0 (t->validator, t->etag) != 0
                       && g_strcmp0 (t->validator, t->last_modified) != 0;

    if (t->probe)
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "%s: no Range support", t->display);
    else
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                   "%s: asked for bytes from %" G_GUINT64_FORMAT
                   " on, the server sent HTTP %ld: %s",
                   t->display, t->pos, t->status,
                   changed ? "the file changed on the server during the download"
                           : "it does not resume a download");
    return FALSE;
  }
  if (t->ranged) {
    if (!t->have_content_range || t->range_start != t->pos) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                   "%s: asked for bytes from %" G_GUINT64_FORMAT
                   " on, the server sent others (Content-Range %s)",
                   t->display, t->pos, t->have_content_range ? "differs" : "missing");
      return FALSE;
    }
    if (t->expected_total > 0 && t->total != t->expected_total) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                   "%s: the file is now %" G_GUINT64_FORMAT " bytes, not %" G_GUINT64_FORMAT
                   ": it changed on the server during the download",
                   t->display, t->total, t->expected_total);
      return FALSE;
    }
    /* A file shorter than the range asked for ends where it ends. */
    if (t->total > 0 && t->end > t->total)
      t->end = t->total;
  }
  /* Resume only what the first answer sent: a strong ETag, else its date. */
  if (t->validator == NULL) {
    if (t->etag != NULL && !g_str_has_prefix (t->etag, "W/"))
      t->validator = g_strdup (t->etag);
    else if (t->last_modified != NULL)
      t->validator = g_strdup (t->last_modified);
  }
  return TRUE;
}

/* Checks the answer before a byte of it is used. */
static gboolean
check_answer (BmapctlDownload *t, GError **error)
{
  if (t->is_http && !check_http_answer (t, error))
    return FALSE;
  if (!t->answered) {
    t->answered = TRUE;
    if (t->on_answered != NULL)
      t->on_answered (t->on_answered_data);
  }
  return TRUE;
}

static size_t
on_body (char *data, size_t size, size_t nmemb, void *user_data)
{
  BmapctlDownload *t = user_data;
  gsize len = size * nmemb;

  if (!t->checked) {
    if (!check_answer (t, &t->error))
      return CURL_WRITEFUNC_ERROR;
    t->checked = TRUE;
  }
  if (t->end > 0 && t->pos + len > t->end) {
    g_set_error (&t->error, BMAP_ERROR, BMAP_ERROR_IO,
                 "%s: asked for bytes up to %" G_GUINT64_FORMAT ", the server sent more",
                 t->display, t->end);
    return CURL_WRITEFUNC_ERROR;
  }
  if (t->memory != NULL) {
    if (t->memory->len + len > t->memory_cap) {
      g_set_error (&t->error, BMAP_ERROR, BMAP_ERROR_LIMIT,
                   "%s: larger than %" G_GSIZE_FORMAT " bytes, too large for a bmap", t->display,
                   t->memory_cap);
      return CURL_WRITEFUNC_ERROR;
    }
    g_byte_array_append (t->memory, (const guint8 *) data, (guint) len);
  } else if (!bmapctl_pipe_write_all (t->wfd, t->stop_fd, (const guint8 *) data, len, &t->error)) {
    return CURL_WRITEFUNC_ERROR;
  }
  t->pos += len;
  bmapctl_download_add_received (len);
  return len;
}

BmapctlDownload *
bmapctl_download_new (const char *url, const char *display, GCancellable *stop, GError **error)
{
  static GOnce curl_once = G_ONCE_INIT;
  g_autoptr (BmapctlDownload) t = g_new0 (BmapctlDownload, 1);
  const char *ca_file = g_getenv ("CURL_CA_BUNDLE");
  const char *ca_dir = g_getenv ("SSL_CERT_DIR");
  const char *stall = g_getenv ("BMAPCTL_STALL_TIMEOUT");
  guint64 stall_seconds = STALL_SECONDS;

  t->wfd = -1;
  t->display = g_strdup (display);
  t->stop = g_object_ref (stop);
  t->stop_fd = g_cancellable_get_fd (stop);
  t->is_http
      = g_ascii_strncasecmp (url, "http:", 5) == 0 || g_ascii_strncasecmp (url, "https:", 6) == 0;
  if (!GPOINTER_TO_INT (g_once (&curl_once, init_curl, NULL))
      || (t->easy = curl_easy_init ()) == NULL || (t->multi = curl_multi_init ()) == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: cannot initialize libcurl", t->display);
    return NULL;
  }
  if (ca_file == NULL)
    ca_file = g_getenv ("SSL_CERT_FILE");
  if (stall != NULL
      && (!g_ascii_string_to_unsigned (stall, 10, 1, G_MAXINT32, &stall_seconds, NULL))) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "BMAPCTL_STALL_TIMEOUT=%s: not a number of seconds from 1 up", stall);
    return NULL;
  }

  curl_easy_setopt (t->easy, CURLOPT_URL, url);
  curl_easy_setopt (t->easy, CURLOPT_PROTOCOLS_STR, "http,https,ftp,ftps");
  curl_easy_setopt (t->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https,ftp,ftps");
  curl_easy_setopt (t->easy, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt (t->easy, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt (t->easy, CURLOPT_NETRC, (long) CURL_NETRC_OPTIONAL);
  curl_easy_setopt (t->easy, CURLOPT_USERAGENT, "bmapctl/" PACKAGE_VERSION);
  curl_easy_setopt (t->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (t->easy, CURLOPT_CONNECTTIMEOUT, (long) CONNECT_TIMEOUT_SECOND);
  curl_easy_setopt (t->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt (t->easy, CURLOPT_LOW_SPEED_TIME, (long) stall_seconds);
  curl_easy_setopt (t->easy, CURLOPT_BUFFERSIZE, 512L * 1024);
  curl_easy_setopt (t->easy, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt (t->easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt (t->easy, CURLOPT_HEADERDATA, t);
  curl_easy_setopt (t->easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt (t->easy, CURLOPT_WRITEDATA, t);
  /* libcurl reads no CA variables itself; these are the curl tool's. */
  if (ca_file != NULL)
    curl_easy_setopt (t->easy, CURLOPT_CAINFO, ca_file);
  if (ca_dir != NULL)
    curl_easy_setopt (t->easy, CURLOPT_CAPATH, ca_dir);
  return g_steal_pointer (&t);
}

/* curl_easy_perform(), but through a multi handle so that cancelling @stop
 * wakes the wait at once, stalled connection or not. */
static CURLcode
perform (BmapctlDownload *t)
{
  struct curl_waitfd stop_wait = { .fd = t->stop_fd, .events = CURL_WAIT_POLLIN };
  CURLcode result = CURLE_OK;
  int running = 1;
  CURLMsg *msg;
  int left;

  curl_multi_add_handle (t->multi, t->easy);
  while (running) {
    CURLMcode mc = curl_multi_perform (t->multi, &running);

    if (mc == CURLM_OK && running)
      mc = curl_multi_poll (t->multi, &stop_wait, 1, 1000, NULL);
    if (mc != CURLM_OK) {
      g_strlcpy (t->errbuf, curl_multi_strerror (mc), sizeof (t->errbuf));
      result = CURLE_RECV_ERROR;
      break;
    }
    if (g_cancellable_is_cancelled (t->stop)) {
      result = CURLE_ABORTED_BY_CALLBACK;
      break;
    }
  }
  while (running == 0 && (msg = curl_multi_info_read (t->multi, &left)) != NULL) {
    if (msg->msg == CURLMSG_DONE)
      result = msg->data.result;
  }
  curl_multi_remove_handle (t->multi, t->easy);
  return result;
}

/* Breaks that a new request may get past. */
static gboolean
is_break (CURLcode result)
{
  switch (result) {
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_COULDNT_CONNECT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return TRUE;
    default:
      return FALSE;
  }
}

static const char *
curl_message (BmapctlDownload *t, CURLcode result)
{
  return t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror (result);
}

/* Waits a little longer after each break, unless cancelled. */
static gboolean
wait_before_resuming (BmapctlDownload *t, guint attempt)
{
  struct pollfd pfd = { .fd = t->stop_fd, .events = POLLIN };
  int r;

  while ((r = poll (&pfd, 1, (int) MIN (attempt * 250, 2000))) < 0 && errno == EINTR)
    ;
  return r == 0;
}

gboolean
bmapctl_download_run (BmapctlDownload *t, guint64 start, guint64 end, GError **error)
{
  guint failures = 0;

  t->pos = start;
  t->end = end;
  for (;;) {
    g_autofree char *range = NULL;
    g_autofree char *if_range = NULL;
    struct curl_slist *headers = NULL;
    guint64 before = t->pos;
    CURLcode result;

    t->checked = FALSE;
    t->errbuf[0] = '\0';
    g_clear_error (&t->error);
    clear_answer (t);
    t->ranged = t->pos > 0 || t->end > 0;
    t->sent_if_range = FALSE;
    if (t->is_http) {
      if (t->ranged)
        range = t->end > 0 ? g_strdup_printf ("%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT, t->pos,
                                              t->end - 1)
                           : g_strdup_printf ("%" G_GUINT64_FORMAT "-", t->pos);
      if (t->ranged && t->validator != NULL) {
        if_range = g_strconcat ("If-Range: ", t->validator, NULL);
        headers = curl_slist_append (NULL, if_range);
        t->sent_if_range = TRUE;
      }
      curl_easy_setopt (t->easy, CURLOPT_RANGE, range);
      curl_easy_setopt (t->easy, CURLOPT_HTTPHEADER, headers);
    } else {
      curl_easy_setopt (t->easy, CURLOPT_RESUME_FROM_LARGE, (curl_off_t) t->pos);
    }
    result = perform (t);
    curl_easy_setopt (t->easy, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all (headers);
    t->result = result;

    if (t->error != NULL) {
      g_propagate_error (error, g_steal_pointer (&t->error));
      return FALSE;
    }
    if (result == CURLE_ABORTED_BY_CALLBACK || g_cancellable_is_cancelled (t->stop)) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "%s: download canceled", t->display);
      return FALSE;
    }
    if (result == CURLE_OK) {
      if (!t->checked && !check_answer (t, error))
        return FALSE;
      if (t->end == 0 || t->pos >= t->end)
        return TRUE;
      /* Fewer bytes than the range asked for, and a clean end. */
      result = CURLE_PARTIAL_FILE;
      g_strlcpy (t->errbuf, "the answer ended early", sizeof (t->errbuf));
    }
    /* A server that never answered is not there to resume from. */
    if (!is_break (result) || !t->answered) {
      if (t->is_http && t->status >= 400)
        set_http_error (t, error);
      else
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: %s", t->display,
                     curl_message (t, result));
      return FALSE;
    }
    if (t->pos > before)
      failures = 0;
    if (++failures > RESUME_ATTEMPTS) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                   "%s: the connection broke at byte %" G_GUINT64_FORMAT
                   " and %u attempts to resume got no further: %s",
                   t->display, t->pos, RESUME_ATTEMPTS, curl_message (t, result));
      return FALSE;
    }
    g_debug ("%s: the connection broke at byte %" G_GUINT64_FORMAT " (%s), resuming", t->display,
             t->pos, curl_message (t, result));
    if (!wait_before_resuming (t, failures)) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "%s: download canceled", t->display);
      return FALSE;
    }
  }
}

gboolean
bmapctl_download_found_nothing (BmapctlDownload *t)
{
  /* S3 and its kind answer 403 for a missing object when listing is not
   * allowed. */
  if (t->is_http)
    return t->status == 404 || t->status == 410 || t->status == 403;
  return t->result == CURLE_REMOTE_FILE_NOT_FOUND;
}

gboolean
bmapctl_pipe_write_all (int fd, int stop_fd, const guint8 *data, gsize len, GError **error)
{
  while (len > 0) {
    struct pollfd fds[2] = {
      { .fd = fd, .events = POLLOUT },
      { .fd = stop_fd, .events = POLLIN },
    };
    gssize n = write (fd, data, len);

    if (n > 0) {
      data += n;
      len -= (gsize) n;
      continue;
    }
    if (n < 0 && errno == EPIPE) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE, "the image's reader went away");
      return FALSE;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      bmap_error_set_errno (error, errno, "writing the download into a pipe");
      return FALSE;
    }
    if (poll (fds, 2, -1) < 0 && errno != EINTR) {
      bmap_error_set_errno (error, errno, "poll");
      return FALSE;
    }
    if (fds[1].revents & POLLIN) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "download canceled");
      return FALSE;
    }
  }
  return TRUE;
}

gboolean
bmapctl_pipe_write_zeros (int fd, int stop_fd, guint64 len, GError **error)
{
  static const guint8 zeros[64 * 1024];

  while (len > 0) {
    gsize n = (gsize) MIN (len, sizeof (zeros));

    if (!bmapctl_pipe_write_all (fd, stop_fd, zeros, n, error))
      return FALSE;
    len -= n;
  }
  return TRUE;
}

gboolean
bmapctl_download_is_http (BmapctlDownload *t)
{
  return t->is_http;
}

void
bmapctl_download_to_pipe (BmapctlDownload *t, int fd)
{
  g_clear_pointer (&t->memory, g_byte_array_unref);
  t->wfd = fd;
}

void
bmapctl_download_to_memory (BmapctlDownload *t, gsize cap)
{
  g_clear_pointer (&t->memory, g_byte_array_unref);
  t->memory = g_byte_array_new ();
  t->memory_cap = cap;
}

GBytes *
bmapctl_download_steal_memory (BmapctlDownload *t)
{
  return t->memory != NULL ? g_byte_array_free_to_bytes (g_steal_pointer (&t->memory)) : NULL;
}

void
bmapctl_download_set_answered_func (BmapctlDownload *t, BmapctlDownloadFunc func, gpointer data)
{
  t->on_answered = func;
  t->on_answered_data = data;
}

gboolean
bmapctl_download_probe (BmapctlDownload *t, gsize len, GBytes **head, guint64 *size, GError **error)
{
  g_autoptr (GError) local_error = NULL;
  gboolean ok;

  bmapctl_download_to_memory (t, len);
  t->probe = TRUE;
  ok = bmapctl_download_run (t, 0, len, &local_error);
  t->probe = FALSE;
  if (!ok) {
    g_clear_pointer (&t->memory, g_byte_array_unref);
    /* A server without ranges, or a file too small for the probe. */
    if (g_error_matches (local_error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED) || t->status == 416) {
      g_debug ("%s", local_error->message);
      bmapctl_download_reset (t);
      return FALSE;
    }
    g_propagate_error (error, g_steal_pointer (&local_error));
    return FALSE;
  }
  *head = bmapctl_download_steal_memory (t);
  *size = t->total;
  t->expected_total = t->total;
  return TRUE;
}

void
bmapctl_download_reset (BmapctlDownload *t)
{
  /* The stream's own answer is then the first. */
  t->answered = FALSE;
  t->expected_total = 0;
  g_clear_pointer (&t->validator, g_free);
  g_clear_pointer (&t->memory, g_byte_array_unref);
}
