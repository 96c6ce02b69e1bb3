/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-locate.h"
#include "bmap-source.h"
#include "bmapctl-progress.h"
#include "bmapctl-url.h"

/* Breaks in a row, each without a byte more, before a download fails. */
#define RESUME_ATTEMPTS 5
/* Seconds with no byte at all before a connection counts as broken (and
 * resumes): a server that stalls is then treated as one that dropped. */
#define STALL_SECONDS          60
#define CONNECT_TIMEOUT_SECOND 60
/* Mapped ranges closer than this are fetched as one: a request costs a
 * round trip, worth about this many bytes on a 100 Mbit/s link 20 ms away. */
#define RANGE_MERGE_GAP (256 * 1024)
/* The first bytes asked for, to see whether the image is compressed. */
#define PROBE_LEN 16
/* Bigger than the default 64 KiB: fewer wake-ups for both sides. */
#define PIPE_SIZE (1024 * 1024)

/* Bytes received from the network, shown in the progress line. */
static guint64 fetched_bytes;

static guint64
get_fetched_bytes (void)
{
  return __atomic_load_n (&fetched_bytes, __ATOMIC_RELAXED);
}

typedef struct {
  guint64 start;
  guint64 end; /* exclusive */
} Segment;

typedef struct _SshUrl SshUrl;
typedef struct _Transfer Transfer;
typedef void (*TransferAnsweredFunc) (gpointer data);

/* One URL fetched with libcurl, request after request on one connection. */
struct _Transfer {
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
  TransferAnsweredFunc on_answered;
  gpointer on_answered_data;
};

struct _BmapctlUrlSource {
  GCancellable *stop;
  int stop_fd;
  GCancellable *cancellable;
  gulong cancelled_id;

  char *name;        /* the image, for messages */
  char *description; /* its file name */
  char *bmap_name;
  GBytes *bmap_data;
  BmapMap *map;

  int image_fd;       /* the pipe's read end, until stolen */
  int wfd;            /* its write end, for the thread */
  Transfer *transfer; /* an image fetched with curl */
  GArray *segments;   /* Segment: with Range requests, only these */
  guint64 image_size;
  SshUrl *ssh; /* an image read through ssh */
  GPid ssh_pid;
  int ssh_out;
  int ssh_err;
  GThread *thread;

  GMutex lock;
  GCond cond;
  gboolean answered;
  gboolean finished;
  GError *outcome;
};

static gpointer
init_curl (gpointer data)
{
  return GINT_TO_POINTER (curl_global_init (CURL_GLOBAL_DEFAULT) == CURLE_OK);
}

static gboolean
has_scheme (const char *arg, const char *scheme)
{
  gsize len = strlen (scheme);

  return g_ascii_strncasecmp (arg, scheme, len) == 0 && arg[len] == ':';
}

static gboolean
is_curl_url (const char *arg)
{
  return has_scheme (arg, "http") || has_scheme (arg, "https") || has_scheme (arg, "ftp")
         || has_scheme (arg, "ftps");
}

gboolean
bmapctl_url_is_url (const char *arg)
{
  if (arg == NULL)
    return FALSE;
  if (has_scheme (arg, "file"))
    return TRUE;
  return (is_curl_url (arg) || has_scheme (arg, "ssh"))
         && g_str_has_prefix (strchr (arg, ':'), "://");
}

/* Where a URL's authority (USER:PASSWORD@HOST:PORT) starts and ends. */
static const char *
url_authority (const char *url, const char **end)
{
  const char *start = strstr (url, "://");

  start = start != NULL ? start + 3 : url;
  *end = start + strcspn (start, "/?#");
  return start;
}

/* The URL as given, without its password: also when it is no valid URI,
 * since it goes into messages. */
static char *
display_url (const char *url)
{
  const char *end;
  const char *start = url_authority (url, &end);
  const char *at = g_strrstr_len (start, end - start, "@");
  const char *colon = at != NULL ? memchr (start, ':', (gsize) (at - start)) : NULL;
  g_autofree char *head = NULL;

  if (colon == NULL)
    return g_strdup (url);
  head = g_strndup (url, (gsize) (colon - url));
  return g_strconcat (head, at, NULL);
}

/* The last component of the URL's path, decoded. */
static char *
url_basename (const char *url)
{
  g_autoptr (GUri) uri = g_uri_parse (url, G_URI_FLAGS_HAS_PASSWORD, NULL);

  if (uri == NULL || *g_uri_get_path (uri) == '\0')
    return g_strdup (url);
  return g_path_get_basename (g_uri_get_path (uri));
}

/* --- the pipe ---------------------------------------------------------- */

/* Writes all of @data into the non-blocking @fd, waiting for room as long
 * as @stop is not cancelled. A reader that went away is
 * G_IO_ERROR_BROKEN_PIPE: not the transfer's fault. */
static gboolean
pipe_write_all (int fd, int stop_fd, const guint8 *data, gsize len, GError **error)
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

static gboolean
pipe_write_zeros (int fd, int stop_fd, guint64 len, GError **error)
{
  static const guint8 zeros[64 * 1024];

  while (len > 0) {
    gsize n = (gsize) MIN (len, sizeof (zeros));

    if (!pipe_write_all (fd, stop_fd, zeros, n, error))
      return FALSE;
    len -= n;
  }
  return TRUE;
}

/* --- one URL through libcurl ------------------------------------------- */

static void
transfer_clear_answer (Transfer *t)
{
  t->status = 0;
  t->have_content_range = FALSE;
  t->range_start = t->total = 0;
  g_clear_pointer (&t->reason, g_free);
  g_clear_pointer (&t->etag, g_free);
  g_clear_pointer (&t->last_modified, g_free);
}

static void
transfer_free (Transfer *t)
{
  if (t == NULL)
    return;
  if (t->multi != NULL)
    curl_multi_cleanup (t->multi);
  if (t->easy != NULL)
    curl_easy_cleanup (t->easy);
  if (t->memory != NULL)
    g_byte_array_unref (t->memory);
  transfer_clear_answer (t);
  g_clear_error (&t->error);
  g_free (t->validator);
  g_free (t->display);
  g_free (t);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (Transfer, transfer_free)

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
  Transfer *t = user_data;
  g_autofree char *line = g_strndup (data, size * nitems);
  const char *value;

  g_strchomp (line);
  if (g_str_has_prefix (line, "HTTP/")) {
    /* A new answer: after a redirect, or a 100 Continue. */
    const char *code = strchr (line, ' ');
    char *rest = NULL;

    transfer_clear_answer (t);
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
set_http_error (Transfer *t, GError **error)
{
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: HTTP %ld%s%s", t->display, t->status,
               t->reason != NULL && *t->reason != '\0' ? " " : "",
               t->reason != NULL ? t->reason : "");
}

/* Whether an HTTP answer is the one asked for. */
static gboolean
check_http_answer (Transfer *t, GError **error)
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
check_answer (Transfer *t, GError **error)
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
  Transfer *t = user_data;
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
  } else if (!pipe_write_all (t->wfd, t->stop_fd, (const guint8 *) data, len, &t->error)) {
    return CURL_WRITEFUNC_ERROR;
  }
  t->pos += len;
  __atomic_add_fetch (&fetched_bytes, len, __ATOMIC_RELAXED);
  return len;
}

static Transfer *
transfer_new (const char *url, GCancellable *stop, int stop_fd, GError **error)
{
  static GOnce curl_once = G_ONCE_INIT;
  g_autoptr (Transfer) t = g_new0 (Transfer, 1);
  const char *ca_file = g_getenv ("CURL_CA_BUNDLE");
  const char *ca_dir = g_getenv ("SSL_CERT_DIR");

  t->wfd = -1;
  t->display = display_url (url);
  t->stop = stop;
  t->stop_fd = stop_fd;
  t->is_http = has_scheme (url, "http") || has_scheme (url, "https");
  if (!GPOINTER_TO_INT (g_once (&curl_once, init_curl, NULL))
      || (t->easy = curl_easy_init ()) == NULL || (t->multi = curl_multi_init ()) == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: cannot initialize libcurl", t->display);
    return NULL;
  }
  if (ca_file == NULL)
    ca_file = g_getenv ("SSL_CERT_FILE");

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
  curl_easy_setopt (t->easy, CURLOPT_LOW_SPEED_TIME, (long) STALL_SECONDS);
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
transfer_perform (Transfer *t)
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
curl_message (Transfer *t, CURLcode result)
{
  return t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror (result);
}

/* Waits a little longer after each break, unless cancelled. */
static gboolean
wait_before_resuming (Transfer *t, guint attempt)
{
  struct pollfd pfd = { .fd = t->stop_fd, .events = POLLIN };
  int r;

  while ((r = poll (&pfd, 1, (int) MIN (attempt * 250, 2000))) < 0 && errno == EINTR)
    ;
  return r == 0;
}

/* Fetches [start, end) (end 0: to the end of the file) into the sink. A
 * connection that breaks is asked again for the rest: RESUME_ATTEMPTS
 * times in a row without progress, then the download fails. */
static gboolean
transfer_run (Transfer *t, guint64 start, guint64 end, GError **error)
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
    transfer_clear_answer (t);
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
    result = transfer_perform (t);
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

/* A missing file, as opposed to a failing server. S3 and its kind answer
 * 403 for a missing object when listing is not allowed. */
static gboolean
transfer_found_nothing (Transfer *t)
{
  if (t->is_http)
    return t->status == 404 || t->status == 410 || t->status == 403;
  return t->result == CURLE_REMOTE_FILE_NOT_FOUND;
}

/* --- ssh:// -------------------------------------------------------------- */

struct _SshUrl {
  char *display;
  char *host; /* [user@]host */
  char *port;
  char *path;
};

static void
ssh_url_clear (SshUrl *s)
{
  g_free (s->display);
  g_free (s->host);
  g_free (s->port);
  g_free (s->path);
}

static void
ssh_url_free (SshUrl *s)
{
  ssh_url_clear (s);
  g_free (s);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (SshUrl, ssh_url_clear)

/* ssh://[USER@]HOST[:PORT]/PATH, and bmaptool's ssh://[USER@]HOST:PATH,
 * where a PATH without a leading slash is relative to the login
 * directory, as for scp. */
static gboolean
ssh_url_parse (const char *url, SshUrl *s, GError **error)
{
  const char *end;
  const char *start = url_authority (url, &end);
  const char *at = g_strrstr_len (start, end - start, "@");
  const char *host = at != NULL ? at + 1 : start;
  const char *host_end = host[0] == '[' ? memchr (host, ']', (gsize) (end - host)) : host;
  const char *colon = NULL;
  g_autofree char *host_name = NULL;
  g_autofree char *path = NULL;

  s->display = display_url (url);
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
ssh_argv (const SshUrl *s, const char *command)
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
ssh_run (const SshUrl *s, const char *command, GBytes **out, int *exit_status, char **err_text,
         GError **error)
{
  g_auto (GStrv) argv = ssh_argv (s, command);
  g_autofree char *out_text = NULL;
  gsize out_len = 0;
  int wait_status;

  /* stdout as bytes: g_spawn_sync's strings stop at no NUL. */
  if (!g_spawn_sync (NULL, argv, NULL, G_SPAWN_SEARCH_PATH, ssh_child_setup, NULL, &out_text,
                     err_text, &wait_status, error)) {
    g_prefix_error (error, "%s: cannot run ssh: ", s->display);
    return FALSE;
  }
  if (out != NULL) {
    out_len = out_text != NULL ? strlen (out_text) : 0;
    *out = g_bytes_new_take (g_steal_pointer (&out_text), out_len);
  }
  *exit_status = WIFEXITED (wait_status) ? WEXITSTATUS (wait_status) : 255;
  if (err_text != NULL && *err_text != NULL)
    g_strstrip (*err_text);
  return TRUE;
}

static void
set_ssh_error (GError **error, const SshUrl *s, int exit_status, const char *err_text)
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

/* --- the bmap ------------------------------------------------------------ */

static GBytes *
fetch_bmap_ssh (const char *url, gboolean *absent, GError **error)
{
  g_auto (SshUrl) s = { 0 };
  g_autofree char *command = NULL;
  g_autofree char *err_text = NULL;
  g_autoptr (GBytes) data = NULL;
  int exit_status;

  if (!ssh_url_parse (url, &s, error))
    return NULL;
  /* The bmap is text: a NUL would end it early, and is not valid XML. */
  command = ssh_cat_command (s.path);
  if (!ssh_run (&s, command, &data, &exit_status, &err_text, error))
    return NULL;
  if (exit_status != 0) {
    *absent = exit_status != 255;
    set_ssh_error (error, &s, exit_status, err_text);
    return NULL;
  }
  return g_steal_pointer (&data);
}

static GBytes *
fetch_bmap_file (const char *path, const char *name, gboolean *absent, GError **error)
{
  g_autofree char *contents = NULL;
  g_autoptr (GError) local_error = NULL;
  gsize len;

  if (!g_file_get_contents (path, &contents, &len, &local_error)) {
    *absent = g_error_matches (local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: %s", name, local_error->message);
    return NULL;
  }
  return g_bytes_new_take (g_steal_pointer (&contents), len);
}

/* The bmap at @url. @absent tells a missing file from a failure. */
static GBytes *
fetch_bmap (BmapctlUrlSource *self, const char *url, gboolean *absent, GError **error)
{
  g_autoptr (Transfer) t = NULL;

  *absent = FALSE;
  if (has_scheme (url, "ssh"))
    return fetch_bmap_ssh (url, absent, error);
  if (has_scheme (url, "file")) {
    g_autofree char *path = g_filename_from_uri (url, NULL, error);

    return path != NULL ? fetch_bmap_file (path, url, absent, error) : NULL;
  }
  if (!is_curl_url (url))
    return fetch_bmap_file (url, url, absent, error);

  t = transfer_new (url, self->stop, self->stop_fd, error);
  if (t == NULL)
    return NULL;
  t->memory = g_byte_array_new ();
  t->memory_cap = BMAP_FORMAT_MAX_FILE_SIZE;
  if (!transfer_run (t, 0, 0, error)) {
    *absent = transfer_found_nothing (t);
    return NULL;
  }
  return g_byte_array_free_to_bytes (g_steal_pointer (&t->memory));
}

/* Python's os.path.splitext() on a URL's path: the length of the root. */
static gsize
splitext_root_len (const char *path)
{
  const char *slash = strrchr (path, '/');
  const char *base = slash != NULL ? slash + 1 : path;
  const char *dot = strrchr (base, '.');

  if (dot == NULL)
    return strlen (path);
  for (const char *p = base; p < dot; p++) {
    if (*p != '.')
      return (gsize) (dot - path);
  }
  return strlen (path);
}

/* bmaptool's candidates: ".bmap" appended to the URL's path (before any
 * query), then to the path with one extension stripped at a time. */
static GPtrArray *
bmap_candidates (const char *url)
{
  GPtrArray *candidates = g_ptr_array_new_with_free_func (g_free);
  const char *path_start;
  const char *path_end;
  g_autofree char *prefix = NULL;
  g_autofree char *path = NULL;

  url_authority (url, &path_start);
  path_end = path_start + strcspn (path_start, "?#");
  prefix = g_strndup (url, (gsize) (path_start - url));
  path = g_strndup (path_start, (gsize) (path_end - path_start));
  /* No file name, no file next to it. */
  if (*path == '\0' || g_str_has_suffix (path, "/"))
    return candidates;
  for (;;) {
    gsize root_len;

    g_ptr_array_add (candidates, g_strconcat (prefix, path, ".bmap", path_end, NULL));
    root_len = splitext_root_len (path);
    if (root_len == strlen (path))
      break;
    path[root_len] = '\0';
  }
  return candidates;
}

static gboolean
discover_bmap (BmapctlUrlSource *self, const char *image, GError **error)
{
  g_autoptr (GPtrArray) candidates = bmap_candidates (image);
  g_autoptr (GPtrArray) tried = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *tried_list = NULL;
  g_autofree char *display = display_url (image);

  if (candidates->len == 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NO_BMAP,
                 "%s names no file, so no bmap is looked for next to it; give one with --bmap, "
                 "or copy every block with --nobmap",
                 display);
    return FALSE;
  }
  for (guint i = 0; i < candidates->len; i++) {
    const char *url = candidates->pdata[i];
    g_autoptr (GError) local_error = NULL;
    gboolean absent;

    self->bmap_data = fetch_bmap (self, url, &absent, &local_error);
    if (self->bmap_data != NULL) {
      self->bmap_name = display_url (url);
      g_debug ("found the bmap %s", self->bmap_name);
      return TRUE;
    }
    if (!absent) {
      g_propagate_error (error, g_steal_pointer (&local_error));
      return FALSE;
    }
    g_debug ("no bmap there: %s", local_error->message);
    g_ptr_array_add (tried, display_url (url));
  }
  g_ptr_array_add (tried, NULL);
  tried_list = g_strjoinv (", ", (char **) tried->pdata);
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_NO_BMAP,
               "no bmap found for %s (tried %s); give one with --bmap, or copy every block "
               "with --nobmap",
               display, tried_list);
  return FALSE;
}

static gboolean
load_bmap (BmapctlUrlSource *self, const char *image, const char *image_path, const char *bmap_arg,
           GError **error)
{
  gboolean absent;

  if (bmap_arg != NULL) {
    self->bmap_data = fetch_bmap (self, bmap_arg, &absent, error);
    if (self->bmap_data == NULL)
      return FALSE;
    self->bmap_name = display_url (bmap_arg);
  } else if (image_path != NULL) {
    g_autofree char *path = NULL;

    if (g_str_equal (image_path, "-")) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_NO_BMAP,
                   "no bmap can be looked for next to standard input: give --bmap FILE, or "
                   "--nobmap to write every block");
      return FALSE;
    }
    path = bmap_locate_for_image (image_path, error);
    if (path == NULL)
      return FALSE;
    self->bmap_data = fetch_bmap_file (path, path, &absent, error);
    if (self->bmap_data == NULL)
      return FALSE;
    self->bmap_name = g_steal_pointer (&path);
  } else if (!discover_bmap (self, image, error)) {
    return FALSE;
  }

  self->map = bmap_map_load_data (g_bytes_get_data (self->bmap_data, NULL),
                                  g_bytes_get_size (self->bmap_data), self->bmap_name, error);
  return self->map != NULL;
}

/* --- the image ----------------------------------------------------------- */

static void
on_image_answered (gpointer data)
{
  BmapctlUrlSource *self = data;

  g_mutex_lock (&self->lock);
  self->answered = TRUE;
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
}

static gboolean
fetch_segments (BmapctlUrlSource *self, GError **error)
{
  Transfer *t = self->transfer;
  guint64 pos = 0;

  for (guint i = 0; i < self->segments->len; i++) {
    const Segment *s = &g_array_index (self->segments, Segment, i);

    if (!pipe_write_zeros (self->wfd, self->stop_fd, s->start - pos, error)
        || !transfer_run (t, s->start, s->end, error))
      return FALSE;
    pos = s->end;
  }
  return pipe_write_zeros (self->wfd, self->stop_fd, self->image_size - pos, error);
}

/* Keeps what ssh says on stderr (the last of it), for the error. */
static void
ssh_read_stderr (BmapctlUrlSource *self, GString *err_text)
{
  char buf[1024];
  gssize n = read (self->ssh_err, buf, sizeof (buf));

  if (n <= 0) {
    close (self->ssh_err);
    self->ssh_err = -1;
    return;
  }
  g_string_append_len (err_text, buf, n);
  if (err_text->len > 4096)
    g_string_erase (err_text, 0, (gssize) (err_text->len - 4096));
}

static void
ssh_stop (BmapctlUrlSource *self)
{
  kill (self->ssh_pid, SIGTERM);
  waitpid (self->ssh_pid, NULL, 0);
  g_spawn_close_pid (self->ssh_pid);
  self->ssh_pid = 0;
}

/* ssh's stdout into the pipe, through this thread: a reader that goes away
 * is then told from ssh failing, and cancelling stops a stalled ssh. */
static gboolean
ssh_pump (BmapctlUrlSource *self, GError **error)
{
  g_autoptr (GString) err_text = g_string_new (NULL);
  g_autofree guint8 *buf = g_malloc (256 * 1024);
  gboolean any = FALSE;
  int status;

  while (self->ssh_out >= 0) {
    struct pollfd fds[3] = {
      { .fd = self->ssh_out, .events = POLLIN },
      { .fd = self->stop_fd, .events = POLLIN },
      { .fd = self->ssh_err, .events = POLLIN },
    };
    gssize n;

    if (poll (fds, self->ssh_err >= 0 ? 3 : 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      bmap_error_set_errno (error, errno, "poll");
      ssh_stop (self);
      return FALSE;
    }
    if (fds[1].revents & POLLIN) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_CANCELLED, "%s: download canceled",
                   self->ssh->display);
      ssh_stop (self);
      return FALSE;
    }
    if (self->ssh_err >= 0 && fds[2].revents != 0)
      ssh_read_stderr (self, err_text);
    if (fds[0].revents == 0)
      continue;
    n = read (self->ssh_out, buf, 256 * 1024);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n <= 0) {
      close (self->ssh_out);
      self->ssh_out = -1;
      break;
    }
    if (!any) {
      any = TRUE;
      on_image_answered (self);
    }
    if (!pipe_write_all (self->wfd, self->stop_fd, buf, (gsize) n, error)) {
      ssh_stop (self);
      return FALSE;
    }
    __atomic_add_fetch (&fetched_bytes, (guint64) n, __ATOMIC_RELAXED);
  }
  while (self->ssh_err >= 0)
    ssh_read_stderr (self, err_text);

  while (waitpid (self->ssh_pid, &status, 0) < 0 && errno == EINTR)
    ;
  g_spawn_close_pid (self->ssh_pid);
  self->ssh_pid = 0;
  if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
    return TRUE;
  g_strstrip (err_text->str);
  set_ssh_error (error, self->ssh, WIFEXITED (status) ? WEXITSTATUS (status) : 255, err_text->str);
  return FALSE;
}

static gpointer
fetch_thread (gpointer data)
{
  BmapctlUrlSource *self = data;
  g_autoptr (GError) error = NULL;
  gboolean ok;

  if (self->ssh != NULL)
    ok = ssh_pump (self, &error);
  else if (self->segments != NULL)
    ok = fetch_segments (self, &error);
  else
    ok = transfer_run (self->transfer, 0, 0, &error);

  g_mutex_lock (&self->lock);
  self->finished = TRUE;
  if (!ok)
    self->outcome = g_steal_pointer (&error);
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
  /* Only now does the reader see the end: the outcome is there to ask. */
  close (self->wfd);
  self->wfd = -1;
  return NULL;
}

/* The mapped ranges, merged across small gaps. */
static GArray *
segments_for_map (const BmapMap *map)
{
  GArray *segments = g_array_new (FALSE, FALSE, sizeof (Segment));

  for (guint i = 0; i < bmap_map_get_n_ranges (map); i++) {
    const BmapRange *range = bmap_map_get_range (map, i);
    Segment s = { range->first * map->block_size, 0 };

    s.end = s.start + bmap_map_range_bytes (map, range);
    if (segments->len > 0) {
      Segment *last = &g_array_index (segments, Segment, segments->len - 1);

      if (s.start - last->end < RANGE_MERGE_GAP) {
        last->end = s.end;
        continue;
      }
    }
    g_array_append_val (segments, s);
  }
  return segments;
}

static BmapCompression
compression_of (GByteArray *head, const char *name)
{
  g_autoptr (BmapSource) source = NULL;
  int fds[2];

  /* The engine's own rule, on the bytes seen so far. */
  if (pipe2 (fds, O_CLOEXEC) < 0)
    return BMAP_COMPRESSION_GZIP;
  if (write (fds[1], head->data, head->len) != (gssize) head->len) {
    close (fds[0]);
    close (fds[1]);
    return BMAP_COMPRESSION_GZIP;
  }
  close (fds[1]);
  source = bmap_source_new (fds[0], TRUE, name, NULL);
  return source != NULL ? bmap_source_get_compression (source) : BMAP_COMPRESSION_GZIP;
}

/* Whether only the mapped ranges can be fetched: an uncompressed image of
 * the size the bmap says, from a server that answers Range requests. FALSE
 * without @error when not; then the whole image is streamed. */
static gboolean
probe_ranges (BmapctlUrlSource *self, GError **error)
{
  Transfer *t = self->transfer;
  g_autoptr (GError) local_error = NULL;
  gboolean ok;

  t->memory = g_byte_array_new ();
  t->memory_cap = PROBE_LEN;
  t->probe = TRUE;
  ok = transfer_run (t, 0, PROBE_LEN, &local_error);
  t->probe = FALSE;
  if (!ok) {
    g_clear_pointer (&t->memory, g_byte_array_unref);
    /* A server without ranges, or an image too small for the probe. */
    if (g_error_matches (local_error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED) || t->status == 416) {
      g_debug ("%s; fetching all of it", local_error->message);
      g_clear_pointer (&t->validator, g_free);
      return FALSE;
    }
    g_propagate_error (error, g_steal_pointer (&local_error));
    return FALSE;
  }
  if (t->total != self->map->image_size
      || compression_of (t->memory, t->display) != BMAP_COMPRESSION_NONE) {
    g_debug ("%s: %" G_GUINT64_FORMAT " bytes, compressed or not the bmap's image; fetching all "
             "of it",
             t->display, t->total);
    g_clear_pointer (&t->memory, g_byte_array_unref);
    /* The stream's own answer is the one the open waits for. */
    t->answered = FALSE;
    return FALSE;
  }
  g_clear_pointer (&t->memory, g_byte_array_unref);
  t->expected_total = t->total;
  self->image_size = t->total;
  self->segments = segments_for_map (self->map);
  g_debug ("%s: fetching the %u mapped ranges only (%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
           " bytes)",
           t->display, self->segments->len, bmap_map_get_mapped_bytes (self->map), t->total);
  return TRUE;
}

/* Starts the thread that feeds the pipe, and waits for the first answer
 * (or the failure to get one), which decides the open. */
static gboolean
start_feeding (BmapctlUrlSource *self, GError **error)
{
  sigset_t blocked, old;
  int fds[2];

  if (pipe2 (fds, O_CLOEXEC) < 0) {
    bmap_error_set_errno (error, errno, "%s: pipe", self->name);
    return FALSE;
  }
  self->image_fd = fds[0];
  self->wfd = fds[1];
  fcntl (fds[1], F_SETFL, O_NONBLOCK);
  fcntl (fds[1], F_SETPIPE_SZ, PIPE_SIZE); /* best effort */
  if (self->transfer != NULL)
    self->transfer->wfd = self->wfd;

  /* Signals are for the main thread; a reader that went away is EPIPE. */
  sigemptyset (&blocked);
  sigaddset (&blocked, SIGINT);
  sigaddset (&blocked, SIGTERM);
  sigaddset (&blocked, SIGHUP);
  sigaddset (&blocked, SIGPIPE);
  pthread_sigmask (SIG_BLOCK, &blocked, &old);
  self->thread = g_thread_new ("bmapctl-fetch", fetch_thread, self);
  pthread_sigmask (SIG_SETMASK, &old, NULL);

  g_mutex_lock (&self->lock);
  while (!self->answered && !self->finished)
    g_cond_wait (&self->cond, &self->lock);
  if (!self->answered && self->outcome != NULL) {
    g_propagate_error (error, g_steal_pointer (&self->outcome));
    g_mutex_unlock (&self->lock);
    return FALSE;
  }
  g_mutex_unlock (&self->lock);
  return TRUE;
}

static gboolean
open_curl_image (BmapctlUrlSource *self, const char *url, GError **error)
{
  g_autoptr (GError) local_error = NULL;

  self->transfer = transfer_new (url, self->stop, self->stop_fd, error);
  if (self->transfer == NULL)
    return FALSE;
  if (self->map != NULL && self->transfer->is_http && !probe_ranges (self, &local_error)
      && local_error != NULL) {
    g_propagate_error (error, g_steal_pointer (&local_error));
    return FALSE;
  }
  self->transfer->on_answered = on_image_answered;
  self->transfer->on_answered_data = self;
  if (self->segments != NULL)
    self->answered = TRUE; /* the probe got its answer */
  return start_feeding (self, error);
}

static gboolean
open_ssh_image (BmapctlUrlSource *self, const char *url, GError **error)
{
  g_autofree char *command = NULL;
  g_auto (GStrv) argv = NULL;

  self->ssh = g_new0 (SshUrl, 1);
  if (!ssh_url_parse (url, self->ssh, error))
    return FALSE;
  command = ssh_cat_command (self->ssh->path);
  argv = ssh_argv (self->ssh, command);
  if (!g_spawn_async_with_pipes (
          NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_CLOEXEC_PIPES,
          ssh_child_setup, NULL, &self->ssh_pid, NULL, &self->ssh_out, &self->ssh_err, error)) {
    g_prefix_error (error, "%s: cannot run ssh: ", self->ssh->display);
    return FALSE;
  }
  return start_feeding (self, error);
}

static gboolean
open_remote_image (BmapctlUrlSource *self, const char *url, GError **error)
{
  if (has_scheme (url, "ssh"))
    return open_ssh_image (self, url, error);
  return open_curl_image (self, url, error);
}

static void
on_cancelled (GCancellable *cancellable, gpointer data)
{
  g_cancellable_cancel (G_CANCELLABLE (data));
}

BmapctlUrlSource *
bmapctl_url_source_open (const char *image, const char *bmap_arg, gboolean nobmap,
                         GCancellable *cancellable, GError **error)
{
  g_autoptr (BmapctlUrlSource) self = g_new0 (BmapctlUrlSource, 1);
  g_autoptr (GError) local_error = NULL;
  g_autofree char *image_path = NULL;

  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
  self->image_fd = self->wfd = self->ssh_out = self->ssh_err = -1;
  self->stop = g_cancellable_new ();
  self->stop_fd = g_cancellable_get_fd (self->stop);
  if (cancellable != NULL) {
    self->cancellable = g_object_ref (cancellable);
    self->cancelled_id = g_cancellable_connect (cancellable, G_CALLBACK (on_cancelled),
                                                g_object_ref (self->stop), g_object_unref);
  }

  self->name = display_url (image);
  if (has_scheme (image, "file")) {
    image_path = g_filename_from_uri (image, NULL, error);
    if (image_path == NULL) {
      g_prefix_error (error, "%s: ", image);
      return NULL;
    }
    self->description = g_path_get_basename (image_path);
  } else if (!bmapctl_url_is_url (image)) {
    /* Only the bmap is a URL. */
    image_path = g_strdup (image);
    self->description
        = g_strcmp0 (image, "-") == 0 ? g_strdup ("standard input") : g_path_get_basename (image);
  } else {
    self->description = url_basename (image);
  }

  if (has_scheme (image, "ssh")) {
    g_auto (SshUrl) s = { 0 };

    /* A malformed URL says so, not that its bmap was not found. */
    if (!ssh_url_parse (image, &s, error))
      return NULL;
  }

  /* The bmap first: it tells which parts of the image to fetch. */
  if (!nobmap && !load_bmap (self, image, image_path, bmap_arg, &local_error)) {
    g_autoptr (GError) image_error = NULL;

    /* A missing image says more than its missing bmap. */
    if (g_error_matches (local_error, BMAP_ERROR, BMAP_ERROR_NO_BMAP) && image_path == NULL
        && !open_remote_image (self, image, &image_error))
      g_propagate_error (error, g_steal_pointer (&image_error));
    else
      g_propagate_error (error, g_steal_pointer (&local_error));
    return NULL;
  }

  if (image_path != NULL && g_str_equal (image_path, "-")) {
    self->image_fd = fcntl (STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
    if (self->image_fd < 0) {
      bmap_error_set_errno (error, errno, "standard input");
      return NULL;
    }
  } else if (image_path != NULL) {
    self->image_fd = open (image_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (self->image_fd < 0) {
      bmap_error_set_errno (error, errno, "%s", image_path);
      return NULL;
    }
  } else if (!open_remote_image (self, image, error)) {
    return NULL;
  }

  if (self->transfer != NULL)
    bmapctl_progress_show_fetched (get_fetched_bytes);
  return g_steal_pointer (&self);
}

int
bmapctl_url_source_steal_image_fd (BmapctlUrlSource *self)
{
  int fd = self->image_fd;

  self->image_fd = -1;
  return fd;
}

BmapMap *
bmapctl_url_source_steal_map (BmapctlUrlSource *self)
{
  return g_steal_pointer (&self->map);
}

int
bmapctl_url_source_dup_bmap_fd (BmapctlUrlSource *self, GError **error)
{
  gsize len;
  const guint8 *data;
  int fd;

  if (self->bmap_data == NULL)
    return -1;
  data = g_bytes_get_data (self->bmap_data, &len);
  fd = memfd_create ("bmap", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    bmap_error_set_errno (error, errno, "%s: memfd_create", self->bmap_name);
    return -1;
  }
  while (len > 0) {
    gssize n = write (fd, data, len);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      bmap_error_set_errno (error, errno, "%s: writing a memfd", self->bmap_name);
      close (fd);
      return -1;
    }
    data += n;
    len -= (gsize) n;
  }
  /* bmapd reads it from the start, and nobody changes it meanwhile. */
  if (lseek (fd, 0, SEEK_SET) < 0
      || fcntl (fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
    bmap_error_set_errno (error, errno, "%s: sealing a memfd", self->bmap_name);
    close (fd);
    return -1;
  }
  return fd;
}

const char *
bmapctl_url_source_get_description (BmapctlUrlSource *self)
{
  return self->description;
}

const char *
bmapctl_url_source_get_name (BmapctlUrlSource *self)
{
  return self->name;
}

const char *
bmapctl_url_source_get_bmap_name (BmapctlUrlSource *self)
{
  return self->bmap_name;
}

gboolean
bmapctl_url_source_needs_client (BmapctlUrlSource *self)
{
  return self->thread != NULL;
}

gboolean
bmapctl_url_source_check (BmapctlUrlSource *self, GError **error)
{
  g_mutex_lock (&self->lock);
  if (self->finished && self->outcome != NULL
      && !g_error_matches (self->outcome, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE)
      && !g_error_matches (self->outcome, BMAP_ERROR, BMAP_ERROR_CANCELLED)) {
    g_propagate_error (error, g_error_copy (self->outcome));
    g_mutex_unlock (&self->lock);
    return FALSE;
  }
  g_mutex_unlock (&self->lock);
  return TRUE;
}

void
bmapctl_url_source_free (BmapctlUrlSource *self)
{
  if (self == NULL)
    return;
  g_cancellable_cancel (self->stop);
  if (self->thread != NULL)
    g_thread_join (self->thread);
  /* Not started: the thread reaps ssh otherwise. */
  if (self->ssh_pid != 0)
    ssh_stop (self);
  if (self->ssh_out >= 0)
    close (self->ssh_out);
  if (self->ssh_err >= 0)
    close (self->ssh_err);
  if (self->wfd >= 0)
    close (self->wfd);
  g_clear_pointer (&self->ssh, ssh_url_free);
  if (self->cancellable != NULL) {
    g_cancellable_disconnect (self->cancellable, self->cancelled_id);
    g_object_unref (self->cancellable);
  }
  if (self->transfer != NULL)
    bmapctl_progress_show_fetched (NULL);
  if (self->image_fd >= 0)
    close (self->image_fd);
  transfer_free (self->transfer);
  g_clear_error (&self->outcome);
  g_clear_pointer (&self->segments, g_array_unref);
  g_clear_pointer (&self->map, bmap_map_free);
  g_clear_pointer (&self->bmap_data, g_bytes_unref);
  g_cancellable_release_fd (self->stop);
  g_object_unref (self->stop);
  g_mutex_clear (&self->lock);
  g_cond_clear (&self->cond);
  g_free (self->name);
  g_free (self->description);
  g_free (self->bmap_name);
  g_free (self);
}
