/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-checksum.h"
#include "bmap-create.h"
#include "bmap-error.h"

/* Each hashing thread reads this much at a time into its own buffer. The
 * buffer stays in the CPU's cache between pread() and the digest: 64-128 KiB
 * cost a third less kernel copy time than 1 MiB here. */
#define HASH_BUFFER_SIZE (128 * 1024)
/* More threads than this cannot help and would only cost buffers. */
#define MAX_HASH_THREADS 64
/* The calling thread reports progress this often while the workers hash. */
#define PROGRESS_INTERVAL_US (G_USEC_PER_SEC / 10)

void
bmap_create_options_init (BmapCreateOptions *options)
{
  g_return_if_fail (options != NULL);

  memset (options, 0, sizeof (*options));
  options->checksum = BMAP_CHECKSUM_SHA256;
  options->mapping = BMAP_MAPPING_AUTO;
  options->n_threads = 0;
}

/* Shared by the hashing threads. Work items are whole ranges (a range has
 * one digest, so it cannot be split); each thread takes the next one
 * through an atomic index. */
typedef struct {
  int fd;
  const char *name;
  guint64 image_size;
  guint32 block_size;
  BmapChecksumType checksum;
  gsize digest_len;
  GArray *ranges;  /* BmapBlockRange */
  guint *order;    /* indices into ranges, biggest range first */
  guint8 *digests; /* digest_len bytes per range, in ranges' order */
  GCancellable *cancellable;

  atomic_uint next;
  atomic_bool stop;
  atomic_uint_fast64_t bytes_done;

  GMutex lock;
  GCond cond;
  guint n_running;
  GError *error; /* the first error, under lock */
} HashJob;

static guint64
range_end (const HashJob *job, const BmapBlockRange *r)
{
  return MIN ((r->last + 1) * (guint64) job->block_size, job->image_size);
}

static void
hash_job_fail (HashJob *job, GError **error)
{
  g_mutex_lock (&job->lock);
  if (job->error == NULL)
    job->error = g_steal_pointer (error);
  g_mutex_unlock (&job->lock);
  atomic_store (&job->stop, TRUE);
}

static gboolean
hash_range (HashJob *job, BmapHasher *hasher, guint8 *buf, guint idx, GError **error)
{
  const BmapBlockRange *r = &g_array_index (job->ranges, BmapBlockRange, idx);
  guint64 pos = r->first * (guint64) job->block_size;
  guint64 end = range_end (job, r);

  while (pos < end) {
    gsize want = (gsize) MIN ((guint64) HASH_BUFFER_SIZE, end - pos);
    ssize_t n;

    if (atomic_load_explicit (&job->stop, memory_order_relaxed))
      return FALSE;
    if (bmap_error_set_if_cancelled (job->cancellable, error))
      return FALSE;

    n = pread (job->fd, buf, want, (off_t) pos);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      bmap_error_set_errno (error, errno, "%s: reading at offset %" G_GUINT64_FORMAT, job->name,
                            pos);
      return FALSE;
    }
    if (n == 0) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                   "%s: unexpected end of file at offset %" G_GUINT64_FORMAT
                   " (image size %" G_GUINT64_FORMAT ")",
                   job->name, pos, job->image_size);
      return FALSE;
    }
    bmap_hasher_update (hasher, buf, (gsize) n);
    pos += (guint64) n;
    atomic_fetch_add_explicit (&job->bytes_done, (guint64) n, memory_order_relaxed);
  }
  bmap_hasher_finish (hasher, job->digests + (gsize) idx * job->digest_len);
  return TRUE;
}

static gpointer
hash_worker (gpointer data)
{
  HashJob *job = data;
  g_autofree guint8 *buf = g_malloc (HASH_BUFFER_SIZE);
  g_autoptr (BmapHasher) hasher = bmap_hasher_new (job->checksum);

  for (;;) {
    g_autoptr (GError) error = NULL;
    guint i = atomic_fetch_add (&job->next, 1);

    if (i >= job->ranges->len || atomic_load (&job->stop))
      break;
    if (!hash_range (job, hasher, buf, job->order[i], &error)) {
      if (error != NULL)
        hash_job_fail (job, &error);
      break;
    }
  }

  g_mutex_lock (&job->lock);
  job->n_running--;
  g_cond_signal (&job->cond);
  g_mutex_unlock (&job->lock);
  return NULL;
}

static int
compare_by_size_desc (gconstpointer a, gconstpointer b, gpointer user_data)
{
  GArray *ranges = user_data;
  const BmapBlockRange *ra = &g_array_index (ranges, BmapBlockRange, *(const guint *) a);
  const BmapBlockRange *rb = &g_array_index (ranges, BmapBlockRange, *(const guint *) b);
  guint64 na = ra->last - ra->first;
  guint64 nb = rb->last - rb->first;

  if (na != nb)
    return na > nb ? -1 : 1;
  return ra->first < rb->first ? -1 : (ra->first > rb->first ? 1 : 0);
}

/* Hashes every range of @job->ranges into @job->digests with up to
 * @n_threads threads, reporting progress from the calling thread. */
static gboolean
hash_ranges (HashJob *job, guint n_threads, BmapProgressReporter *reporter, GError **error)
{
  g_autoptr (GPtrArray) threads = g_ptr_array_new ();
  g_autofree guint *order = g_new (guint, job->ranges->len);

  /* Biggest first: a big range started last would leave the other threads
   * idle while it finishes alone. */
  for (guint i = 0; i < job->ranges->len; i++)
    order[i] = i;
  g_qsort_with_data (order, job->ranges->len, sizeof (guint), compare_by_size_desc, job->ranges);
  job->order = order;

  /* One pass over the file: more readahead, and the kernel may drop pages
   * behind us sooner. */
  (void) posix_fadvise (job->fd, 0, 0, POSIX_FADV_SEQUENTIAL);

  n_threads = CLAMP (MIN (n_threads, job->ranges->len), 1, MAX_HASH_THREADS);
  g_mutex_lock (&job->lock);
  for (guint i = 0; i < n_threads; i++) {
    g_autoptr (GError) thread_error = NULL;
    GThread *thread = g_thread_try_new ("bmap-hash", hash_worker, job, &thread_error);

    if (thread == NULL) {
      /* Fewer threads only make it slower; none at all is an error. */
      if (threads->len == 0) {
        g_mutex_unlock (&job->lock);
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "cannot start a hashing thread: %s",
                     thread_error->message);
        return FALSE;
      }
      g_warning ("cannot start hashing thread %u: %s", i + 1, thread_error->message);
      break;
    }
    g_ptr_array_add (threads, thread);
    job->n_running++;
  }

  while (job->n_running > 0) {
    gint64 deadline = g_get_monotonic_time () + PROGRESS_INTERVAL_US;

    while (job->n_running > 0 && g_cond_wait_until (&job->cond, &job->lock, deadline))
      ;
    g_mutex_unlock (&job->lock);
    bmap_progress_reporter_update (reporter, BMAP_PHASE_WRITING, atomic_load (&job->bytes_done),
                                   FALSE);
    g_mutex_lock (&job->lock);
  }
  g_mutex_unlock (&job->lock);

  for (guint i = 0; i < threads->len; i++)
    g_thread_join (g_ptr_array_index (threads, i));
  job->order = NULL;

  if (job->error != NULL) {
    g_propagate_error (error, g_steal_pointer (&job->error));
    return FALSE;
  }
  return TRUE;
}

static gboolean
get_image_size (int fd, const char *name, guint64 *size, GError **error)
{
  struct stat st;

  if (fstat (fd, &st) < 0) {
    bmap_error_set_errno (error, errno, "%s: fstat", name);
    return FALSE;
  }
  if (S_ISBLK (st.st_mode)) {
    guint64 bytes = 0;

    if (ioctl (fd, BLKGETSIZE64, &bytes) < 0) {
      bmap_error_set_errno (error, errno, "%s: BLKGETSIZE64", name);
      return FALSE;
    }
    *size = bytes;
    return TRUE;
  }
  if (!S_ISREG (st.st_mode)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: not a regular file or block device", name);
    return FALSE;
  }
  *size = (guint64) st.st_size;
  return TRUE;
}

BmapMap *
bmap_create (int fd, const char *name, const BmapCreateOptions *options,
             BmapMappingMethod *used_method, GError **error)
{
  BmapCreateOptions defaults;
  BmapProgressReporter reporter;
  g_autoptr (GArray) ranges = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autofree guint8 *digests = NULL;
  guint64 image_size = 0;
  guint64 bytes_total = 0;
  guint32 block_size;
  gsize digest_len;

  g_return_val_if_fail (fd >= 0, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (options == NULL) {
    bmap_create_options_init (&defaults);
    options = &defaults;
  }
  if (name == NULL)
    name = "image";
  if (options->checksum > BMAP_CHECKSUM_SHA512) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "unknown checksum type %d",
                 (int) options->checksum);
    return NULL;
  }

  bmap_progress_reporter_init (&reporter, options->progress_func, options->progress_data, 0);
  bmap_progress_reporter_update (&reporter, BMAP_PHASE_PREPARING, 0, TRUE);

  if (!get_image_size (fd, name, &image_size, error))
    return NULL;
  if (image_size == 0) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "%s: image is empty", name);
    return NULL;
  }
  block_size = bmap_mapping_get_block_size (fd);

  ranges = bmap_mapping_get (fd, image_size, block_size, options->mapping, used_method,
                             options->cancellable, error);
  if (ranges == NULL) {
    g_prefix_error (error, "%s: ", name);
    return NULL;
  }
  if (bmap_error_set_if_cancelled (options->cancellable, error))
    return NULL;

  for (guint i = 0; i < ranges->len; i++) {
    const BmapBlockRange *r = &g_array_index (ranges, BmapBlockRange, i);

    bytes_total
        += MIN ((r->last + 1) * (guint64) block_size, image_size) - r->first * (guint64) block_size;
  }

  digest_len = bmap_checksum_type_get_length (options->checksum);
  if (digest_len > 0 && ranges->len > 0) {
    HashJob job = {
      .fd = fd,
      .name = name,
      .image_size = image_size,
      .block_size = block_size,
      .checksum = options->checksum,
      .digest_len = digest_len,
      .ranges = ranges,
      .cancellable = options->cancellable,
    };
    guint n_threads = options->n_threads > 0 ? options->n_threads : g_get_num_processors ();
    gboolean ok;

    digests = g_malloc0 (digest_len * ranges->len);
    job.digests = digests;
    atomic_init (&job.next, 0);
    atomic_init (&job.stop, FALSE);
    atomic_init (&job.bytes_done, 0);
    g_mutex_init (&job.lock);
    g_cond_init (&job.cond);

    bmap_progress_reporter_set_work (&reporter, BMAP_PHASE_WRITING, bytes_total);
    bmap_progress_reporter_update (&reporter, BMAP_PHASE_WRITING, 0, TRUE);
    ok = hash_ranges (&job, n_threads, &reporter, error);
    g_mutex_clear (&job.lock);
    g_cond_clear (&job.cond);
    if (!ok)
      return NULL;
  }

  map = bmap_map_new (image_size, block_size, options->checksum);
  for (guint i = 0; i < ranges->len; i++) {
    const BmapBlockRange *r = &g_array_index (ranges, BmapBlockRange, i);

    bmap_map_add_range (map, r->first, r->last,
                        digests != NULL ? digests + (gsize) i * digest_len : NULL);
  }

  bmap_progress_reporter_set_work (&reporter, BMAP_PHASE_WRITING, bytes_total);
  bmap_progress_reporter_update (&reporter, BMAP_PHASE_WRITING, bytes_total, TRUE);
  return g_steal_pointer (&map);
}

/* Waits until @fd takes more bytes or @cancel_fd (a GCancellable's, -1 for
 * none) is readable. FALSE with errno set when poll() fails. */
static gboolean
wait_writable (int fd, int cancel_fd, gboolean *cancelled)
{
  struct pollfd fds[2] = {
    { .fd = fd, .events = POLLOUT },
    { .fd = cancel_fd, .events = POLLIN },
  };

  *cancelled = FALSE;
  for (;;) {
    int n = poll (fds, cancel_fd >= 0 ? 2 : 1, -1);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return FALSE;
    if (cancel_fd >= 0 && fds[1].revents != 0) {
      *cancelled = TRUE;
      return TRUE;
    }
    /* POLLERR or POLLHUP too: the write() that follows says what it is. */
    if (fds[0].revents != 0)
      return TRUE;
  }
}

static gboolean
write_all (const char *data, gsize len, int fd, const char *name, int cancel_fd,
           GCancellable *cancellable, GError **error)
{
  gsize done = 0;

  while (done < len) {
    gboolean cancelled = FALSE;
    gssize n;

    if (!wait_writable (fd, cancel_fd, &cancelled)) {
      bmap_error_set_errno (error, errno, "%s: waiting to write the bmap", name);
      return FALSE;
    }
    if (cancelled || g_cancellable_is_cancelled (cancellable)) {
      bmap_error_set_if_cancelled (cancellable, error);
      return FALSE;
    }
    n = write (fd, data + done, len - done);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0 && errno == EPIPE) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO,
                   "%s: the reader closed the pipe after %" G_GSIZE_FORMAT
                   " of the %" G_GSIZE_FORMAT " bytes of the bmap (EPIPE)",
                   name, done, len);
      return FALSE;
    }
    if (n < 0) {
      bmap_error_set_errno (error, errno, "%s: writing the bmap at byte %" G_GSIZE_FORMAT, name,
                            done);
      return FALSE;
    }
    done += (gsize) n;
  }
  return TRUE;
}

gboolean
bmap_create_write_bmap (const BmapMap *map, int fd, const char *name, GCancellable *cancellable,
                        GError **error)
{
  gsize len = 0;
  g_autofree char *xml = NULL;
  int cancel_fd = -1;
  gboolean ok;

  g_return_val_if_fail (map != NULL, FALSE);
  g_return_val_if_fail (fd >= 0, FALSE);

  if (name == NULL)
    name = "bmap";
  xml = bmap_map_to_xml (map, &len);
  if (cancellable != NULL)
    cancel_fd = g_cancellable_get_fd (cancellable);
  ok = write_all (xml, len, fd, name, cancel_fd, cancellable, error);
  if (cancel_fd >= 0)
    g_cancellable_release_fd (cancellable);
  return ok;
}
