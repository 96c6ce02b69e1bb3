/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-locate.h"
#include "bmap-source.h"
#include "bmapctl-download.h"
#include "bmapctl-progress.h"
#include "bmapctl-ssh.h"
#include "bmapctl-url.h"

/* Mapped ranges closer than this are fetched as one: a request costs a
 * round trip, worth about this many bytes on a 100 Mbit/s link 20 ms away. */
#define RANGE_MERGE_GAP (256 * 1024)
/* The first bytes asked for, to see whether the image is compressed. */
#define PROBE_LEN 16
/* Bigger than the default 64 KiB: fewer wake-ups for both sides. */
#define PIPE_SIZE (1024 * 1024)

typedef struct {
  guint64 start;
  guint64 end; /* exclusive */
} Segment;

struct _BmapctlUrlSource {
  GCancellable *stop;
  int stop_fd;
  GCancellable *cancellable;
  gulong cancelled_id;

  char *name;        /* the image, for messages */
  char *description; /* its file name */
  char *bmap_name;
  char *bmap_location; /* bmap_name with its password, for its signature */
  GBytes *bmap_data;
  BmapMap *map;

  int image_fd;              /* the pipe's read end, until stolen */
  int wfd;                   /* its write end, for the thread */
  BmapctlDownload *download; /* an image fetched with libcurl */
  GArray *segments;          /* Segment: with Range requests, only these */
  guint64 image_size;
  BmapctlSsh *ssh; /* an image read through ssh */
  GThread *thread;

  GMutex lock;
  GCond cond;
  gboolean answered;
  gboolean finished;
  GError *outcome;
};

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
  const char *path;
  const char *slash;
  g_autofree char *base = NULL;
  g_autofree char *decoded = NULL;

  url_authority (url, &path);
  slash = memrchr (path, '/', strcspn (path, "?#"));
  if (slash == NULL || slash[1] == '\0' || strchr ("?#", slash[1]) != NULL)
    return display_url (url);
  base = g_strndup (slash + 1, strcspn (slash + 1, "?#"));
  decoded = g_uri_unescape_string (base, NULL);
  return decoded != NULL ? g_steal_pointer (&decoded) : g_steal_pointer (&base);
}

/* --- the bmap ------------------------------------------------------------ */

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

/* The small file (a bmap, a signature) at @url, up to @cap bytes. @absent
 * tells a missing file from a failure. */
static GBytes *
fetch_small (const char *url, gsize cap, GCancellable *stop, gboolean *absent, GError **error)
{
  g_autofree char *display = display_url (url);
  g_autoptr (BmapctlDownload) d = NULL;

  *absent = FALSE;
  if (has_scheme (url, "ssh")) {
    g_autoptr (BmapctlSsh) ssh = bmapctl_ssh_new (url, display, error);

    return ssh != NULL ? bmapctl_ssh_fetch (ssh, absent, error) : NULL;
  }
  if (has_scheme (url, "file")) {
    g_autofree char *path = g_filename_from_uri (url, NULL, error);

    return path != NULL ? fetch_bmap_file (path, url, absent, error) : NULL;
  }
  if (!is_curl_url (url))
    return fetch_bmap_file (url, url, absent, error);

  d = bmapctl_download_new (url, display, stop, error);
  if (d == NULL)
    return NULL;
  bmapctl_download_to_memory (d, cap);
  if (!bmapctl_download_run (d, 0, 0, error)) {
    *absent = bmapctl_download_found_nothing (d);
    return NULL;
  }
  return bmapctl_download_steal_memory (d);
}

/* The bmap at @url. @absent tells a missing file from a failure. */
static GBytes *
fetch_bmap (BmapctlUrlSource *self, const char *url, gboolean *absent, GError **error)
{
  return fetch_small (url, BMAP_FORMAT_MAX_FILE_SIZE, self->stop, absent, error);
}

GBytes *
bmapctl_url_fetch (const char *url, gsize cap, GCancellable *cancellable, gboolean *absent,
                   GError **error)
{
  g_autoptr (GCancellable) stop
      = cancellable != NULL ? g_object_ref (cancellable) : g_cancellable_new ();

  return fetch_small (url, cap, stop, absent, error);
}

char *
bmapctl_url_display (const char *url)
{
  return display_url (url);
}

char *
bmapctl_url_with_suffix (const char *url, const char *suffix)
{
  const char *path_start;
  const char *path_end;
  g_autofree char *head = NULL;

  if (!is_curl_url (url) && !has_scheme (url, "ssh"))
    return g_strconcat (url, suffix, NULL);
  /* Next to the file the path names: before any query or fragment. */
  url_authority (url, &path_start);
  path_end = path_start + strcspn (path_start, "?#");
  head = g_strndup (url, (gsize) (path_end - url));
  return g_strconcat (head, suffix, path_end, NULL);
}

/* bmaptool's candidates: ".bmap" appended to the URL's path (before any
 * query), then to the path with one extension stripped at a time. */
static GPtrArray *
bmap_candidates (const char *url)
{
  g_autoptr (GPtrArray) paths = NULL;
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
  paths = bmap_locate_candidates (path);
  for (guint i = 0; i < paths->len; i++)
    g_ptr_array_add (candidates, g_strconcat (prefix, (const char *) g_ptr_array_index (paths, i),
                                              path_end, NULL));
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
      self->bmap_location = g_strdup (url);
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
           BmapctlUrlBmapFunc check_bmap, gpointer check_data, GError **error)
{
  gboolean absent;

  if (bmap_arg != NULL) {
    self->bmap_data = fetch_bmap (self, bmap_arg, &absent, error);
    if (self->bmap_data == NULL)
      return FALSE;
    self->bmap_name = display_url (bmap_arg);
    self->bmap_location = g_strdup (bmap_arg);
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
    self->bmap_location = g_strdup (path);
    self->bmap_name = g_steal_pointer (&path);
  } else if (!discover_bmap (self, image, error)) {
    return FALSE;
  }

  /* Its signature, before a byte of it is believed: what is parsed is what
   * the hook verified (for a clearsigned bmap, the signed text). */
  if (check_bmap != NULL) {
    g_autoptr (GBytes) checked = check_bmap (self->bmap_data, self->bmap_location, self->bmap_name,
                                             self->stop, check_data, error);

    if (checked == NULL)
      return FALSE;
    g_bytes_unref (self->bmap_data);
    self->bmap_data = g_steal_pointer (&checked);
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
  guint64 pos = 0;

  for (guint i = 0; i < self->segments->len; i++) {
    const Segment *s = &g_array_index (self->segments, Segment, i);

    if (!bmapctl_pipe_write_zeros (self->wfd, self->stop_fd, s->start - pos, error)
        || !bmapctl_download_run (self->download, s->start, s->end, error))
      return FALSE;
    pos = s->end;
  }
  return bmapctl_pipe_write_zeros (self->wfd, self->stop_fd, self->image_size - pos, error);
}

static gpointer
fetch_thread (gpointer data)
{
  BmapctlUrlSource *self = data;
  g_autoptr (GError) error = NULL;
  gboolean ok;

  if (self->ssh != NULL)
    ok = bmapctl_ssh_pump (self->ssh, self->wfd, self->stop_fd, on_image_answered, self, &error);
  else if (self->segments != NULL)
    ok = fetch_segments (self, &error);
  else
    ok = bmapctl_download_run (self->download, 0, 0, &error);

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
compression_of (GBytes *head, const char *name)
{
  g_autoptr (BmapSource) source = NULL;
  int fds[2];

  /* The engine's own rule, on the bytes seen so far. Where it cannot be
   * asked, "compressed": the whole image is then streamed. */
  if (pipe2 (fds, O_CLOEXEC) < 0)
    return BMAP_COMPRESSION_GZIP;
  if (write (fds[1], g_bytes_get_data (head, NULL), g_bytes_get_size (head))
      != (gssize) g_bytes_get_size (head)) {
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
  g_autoptr (GBytes) head = NULL;
  guint64 size;

  if (!bmapctl_download_probe (self->download, PROBE_LEN, &head, &size, error))
    return FALSE;
  if (size != self->map->image_size || compression_of (head, self->name) != BMAP_COMPRESSION_NONE) {
    g_debug ("%s: %" G_GUINT64_FORMAT " bytes, compressed or not the bmap's image; fetching all "
             "of it",
             self->name, size);
    bmapctl_download_reset (self->download);
    return FALSE;
  }
  self->image_size = size;
  self->segments = segments_for_map (self->map);
  g_debug ("%s: fetching the %u mapped ranges only (%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
           " bytes)",
           self->name, self->segments->len, bmap_map_get_mapped_bytes (self->map), size);
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
  if (self->download != NULL)
    bmapctl_download_to_pipe (self->download, self->wfd);

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

  self->download = bmapctl_download_new (url, self->name, self->stop, error);
  if (self->download == NULL)
    return FALSE;
  if (self->map != NULL && bmapctl_download_is_http (self->download)
      && !probe_ranges (self, &local_error) && local_error != NULL) {
    g_propagate_error (error, g_steal_pointer (&local_error));
    return FALSE;
  }
  bmapctl_download_set_answered_func (self->download, on_image_answered, self);
  if (self->segments != NULL)
    self->answered = TRUE; /* the probe got its answer */
  return start_feeding (self, error);
}

static gboolean
open_ssh_image (BmapctlUrlSource *self, const char *url, GError **error)
{
  self->ssh = bmapctl_ssh_new (url, self->name, error);
  return self->ssh != NULL && bmapctl_ssh_start (self->ssh, error) && start_feeding (self, error);
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
                         BmapctlUrlBmapFunc check_bmap, gpointer check_data,
                         GCancellable *cancellable, GError **error)
{
  g_autoptr (BmapctlUrlSource) self = g_new0 (BmapctlUrlSource, 1);
  g_autoptr (GError) local_error = NULL;
  g_autofree char *image_path = NULL;

  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
  self->image_fd = self->wfd = -1;
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
    g_autoptr (BmapctlSsh) ssh = bmapctl_ssh_new (image, self->name, error);

    /* A malformed URL says so, not that its bmap was not found. */
    if (ssh == NULL)
      return NULL;
  }

  /* The bmap first: it tells which parts of the image to fetch. */
  if (!nobmap
      && !load_bmap (self, image, image_path, bmap_arg, check_bmap, check_data, &local_error)) {
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

  if (self->thread != NULL)
    bmapctl_progress_show_fetched (bmapctl_download_get_received);
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
  if (self->wfd >= 0)
    close (self->wfd);
  g_clear_pointer (&self->ssh, bmapctl_ssh_free);
  if (self->cancellable != NULL) {
    g_cancellable_disconnect (self->cancellable, self->cancelled_id);
    g_object_unref (self->cancellable);
  }
  if (self->thread != NULL)
    bmapctl_progress_show_fetched (NULL);
  if (self->image_fd >= 0)
    close (self->image_fd);
  g_clear_pointer (&self->download, bmapctl_download_free);
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
  g_free (self->bmap_location);
  g_free (self);
}
