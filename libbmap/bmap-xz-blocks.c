/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap-error.h"
#include "bmap-io.h"
#include "bmap-xz-blocks.h"

/* Decoded bytes travel from the workers to the reader in pieces, N_PIECES
 * of them shared by all workers. The worker of the block being read
 * streams through them; the others decode ahead into what is free beyond
 * HEAD_RESERVE, so the block being read never waits for them. With xz -6
 * (24 MiB blocks, 8 MiB dictionaries) and two workers, one decodes up to
 * 10 MiB ahead while the other finishes: the 4 GiB bench image copied in
 * 9.3 s instead of 15 s with one worker, at 54 MiB peak RSS. liblzma's own
 * threaded decoder holds a whole block per thread instead, which does not
 * fit in a copy's 64 MiB. */
#define PIECE_SIZE   ((gsize) 1024 * 1024)
#define N_PIECES     12
#define HEAD_RESERVE 2
#define MAX_WORKERS  4
/* The workers' decoders (mostly the dictionary: 8 MiB for xz -6) together
 * stay within this; one worker whatever its dictionary. */
#define WORKERS_MEMORY ((guint64) 24 * 1024 * 1024)
#define INPUT_SIZE     ((gsize) 256 * 1024)
/* An index that needs more (millions of blocks) is not loaded. */
#define INDEX_MEMLIMIT ((guint64) 16 * 1024 * 1024)

typedef struct {
  guint64 in_offset; /* of the block header in the file */
  guint64 in_size;   /* header, data, padding and check */
  guint64 unpadded_size;
  guint64 out_offset;
  guint64 out_size;
  lzma_check check;
  gboolean wanted;
} XzBlock;

typedef struct {
  guint8 *data;
  gsize len;
  gsize pos; /* consumed by the reader */
  guint block;
  gboolean last; /* the end of the block */
  GError *error; /* the block failed to decode here */
} Piece;

typedef struct {
  BmapXzBlocks *xb;
  guint index;
  GThread *thread;
  GAsyncQueue *full; /* its pieces, in the order of its blocks */
} Worker;

struct _BmapXzBlocks {
  int fd;
  char *name;
  guint64 file_size;
  XzBlock *blocks;
  guint n_blocks;
  guint64 size;

  /* Wanted blocks in file order: worker w decodes order[w], order[w + n],
   * and so on. */
  guint *order;
  guint n_order;
  Worker workers[MAX_WORKERS];
  guint n_workers;
  gboolean started;

  GMutex lock;
  GCond cond;
  Piece pieces[N_PIECES];
  Piece *free_pieces[N_PIECES];
  guint n_free;
  guint head; /* order[] index of the block being read */
  gboolean stop;

  /* The reader */
  guint64 pos;
  guint cur;    /* blocks[] index holding @pos */
  Piece *piece; /* being read */
};

static gboolean
read_at (BmapXzBlocks *xb, guint8 *buf, gsize len, guint64 offset, GError **error)
{
  gsize got;

  if (!bmap_pread_full (xb->fd, buf, len, offset, xb->name, &got, error))
    return FALSE;
  if (got < len) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                 "%s: xz stream is truncated at compressed offset %" G_GUINT64_FORMAT, xb->name,
                 offset + got);
    return FALSE;
  }
  return TRUE;
}

/* Worded as the stream decoder words it; @offset is where decoding stopped
 * (within the input at hand), or the block's start for its header. */
static void
set_corrupt (BmapXzBlocks *xb, guint64 offset, const char *detail, GError **error)
{
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
               "%s: corrupt xz data at compressed offset %" G_GUINT64_FORMAT ": %s", xb->name,
               offset, detail);
}

/* ---- the index --------------------------------------------------------- */

static lzma_index *
read_index (int fd, guint64 file_size)
{
  lzma_stream strm = LZMA_STREAM_INIT;
  lzma_index *index = NULL;
  g_autofree guint8 *buf = g_malloc (64 * 1024);
  guint64 pos = 0;

  if (lzma_file_info_decoder (&strm, &index, INDEX_MEMLIMIT, file_size) != LZMA_OK)
    return NULL;
  for (;;) {
    lzma_ret ret;

    if (strm.avail_in == 0) {
      gsize n;

      /* Any failure here only means the stream decoder is used instead. */
      if (!bmap_pread_full (fd, buf, 64 * 1024, pos, NULL, &n, NULL) || n == 0)
        break;
      strm.next_in = buf;
      strm.avail_in = (size_t) n;
      pos += (guint64) n;
    }
    ret = lzma_code (&strm, LZMA_RUN);
    if (ret == LZMA_SEEK_NEEDED) {
      pos = strm.seek_pos;
      strm.avail_in = 0;
      continue;
    }
    if (ret == LZMA_STREAM_END) {
      lzma_end (&strm);
      return index;
    }
    if (ret != LZMA_OK)
      break;
  }
  lzma_end (&strm);
  if (index != NULL)
    lzma_index_end (index, NULL);
  return NULL;
}

BmapXzBlocks *
bmap_xz_blocks_new (int fd, const char *name)
{
  g_autoptr (BmapXzBlocks) xb = NULL;
  lzma_index *index;
  lzma_index_iter iter;
  struct stat st;

  if (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode))
    return NULL;
  index = read_index (fd, (guint64) st.st_size);
  if (index == NULL)
    return NULL;

  xb = g_new0 (BmapXzBlocks, 1);
  xb->fd = fd;
  xb->name = g_strdup (name);
  xb->file_size = (guint64) st.st_size;
  xb->size = lzma_index_uncompressed_size (index);
  xb->blocks = g_new0 (XzBlock, MAX (lzma_index_block_count (index), 1));
  g_mutex_init (&xb->lock);
  g_cond_init (&xb->cond);
  lzma_index_iter_init (&iter, index);
  while (!lzma_index_iter_next (&iter, LZMA_INDEX_ITER_NONEMPTY_BLOCK)) {
    XzBlock *blk = &xb->blocks[xb->n_blocks++];

    blk->in_offset = iter.block.compressed_file_offset;
    blk->in_size = iter.block.total_size;
    blk->unpadded_size = iter.block.unpadded_size;
    blk->out_offset = iter.block.uncompressed_file_offset;
    blk->out_size = iter.block.uncompressed_size;
    blk->check = iter.stream.flags->check;
    blk->wanted = TRUE;
  }
  lzma_index_end (index, NULL);
  return g_steal_pointer (&xb);
}

guint64
bmap_xz_blocks_get_file_size (BmapXzBlocks *xb)
{
  return xb->file_size;
}

void
bmap_xz_blocks_set_wanted (BmapXzBlocks *xb, const BmapMap *map)
{
  guint r = 0;
  guint n_ranges = bmap_map_get_n_ranges (map);

  g_return_if_fail (!xb->started);

  /* Both lists are in offset order. */
  for (guint b = 0; b < xb->n_blocks; b++) {
    XzBlock *blk = &xb->blocks[b];
    guint64 end = blk->out_offset + blk->out_size;

    while (r < n_ranges
           && (bmap_map_get_range (map, r)->last + 1) * map->block_size <= blk->out_offset)
      r++;
    blk->wanted = r < n_ranges && bmap_map_get_range (map, r)->first * map->block_size < end;
  }
}

/* ---- workers ----------------------------------------------------------- */

/* A free piece for block order[@k]: any for the block being read, only
 * beyond the reserve for blocks ahead. NULL once stopped. */
static Piece *
take_piece (BmapXzBlocks *xb, guint k)
{
  Piece *piece = NULL;

  g_mutex_lock (&xb->lock);
  while (!xb->stop && !(xb->n_free > 0 && (k == xb->head || xb->n_free > HEAD_RESERVE)))
    g_cond_wait (&xb->cond, &xb->lock);
  if (!xb->stop)
    piece = xb->free_pieces[--xb->n_free];
  g_mutex_unlock (&xb->lock);
  if (piece != NULL) {
    piece->len = piece->pos = 0;
    piece->block = xb->order[k];
    piece->last = FALSE;
    piece->error = NULL;
  }
  return piece;
}

static void
return_piece (BmapXzBlocks *xb, Piece *piece)
{
  g_clear_error (&piece->error);
  g_mutex_lock (&xb->lock);
  xb->free_pieces[xb->n_free++] = piece;
  g_cond_broadcast (&xb->cond);
  g_mutex_unlock (&xb->lock);
}

/* Reads and parses the header of @blk into @block (filters in @filters,
 * to be freed with lzma_filters_free()). */
static gboolean
read_block_header (BmapXzBlocks *xb, const XzBlock *blk, lzma_block *block, lzma_filter *filters,
                   GError **error)
{
  guint8 header[LZMA_BLOCK_HEADER_SIZE_MAX];
  lzma_ret ret;

  filters[0].id = LZMA_VLI_UNKNOWN;
  *block = (lzma_block){ .version = 1, .check = blk->check, .filters = filters };
  if (!read_at (xb, header, 1, blk->in_offset, error))
    return FALSE;
  block->header_size = lzma_block_header_size_decode (header[0]);
  if (header[0] == 0 || block->header_size >= blk->in_size) {
    set_corrupt (xb, blk->in_offset, "bad block header size", error);
    return FALSE;
  }
  if (!read_at (xb, header + 1, block->header_size - 1, blk->in_offset + 1, error))
    return FALSE;
  ret = lzma_block_header_decode (block, NULL, header);
  if (ret == LZMA_OK)
    ret = lzma_block_compressed_size (block, blk->unpadded_size);
  if (ret == LZMA_OK && block->uncompressed_size != LZMA_VLI_UNKNOWN
      && block->uncompressed_size != blk->out_size)
    ret = LZMA_DATA_ERROR;
  if (ret != LZMA_OK) {
    lzma_filters_free (filters, NULL);
    set_corrupt (xb, blk->in_offset,
                 ret == LZMA_OPTIONS_ERROR ? "unsupported block options"
                                           : "block header does not match the index",
                 error);
    return FALSE;
  }
  /* The index's size is checked by the decoder then. */
  block->uncompressed_size = blk->out_size;
  return TRUE;
}

/* Decodes block order[@k] into pieces. FALSE with @error when it fails, or
 * without one when stopped. */
static gboolean
decode_block (BmapXzBlocks *xb, Worker *w, guint k, GError **error)
{
  const XzBlock *blk = &xb->blocks[xb->order[k]];
  lzma_filter filters[LZMA_FILTERS_MAX + 1];
  lzma_block block;
  lzma_stream strm = LZMA_STREAM_INIT;
  g_autofree guint8 *input = NULL;
  guint64 in_pos, in_end;
  Piece *piece = NULL;
  lzma_ret ret;

  if (!read_block_header (xb, blk, &block, filters, error))
    return FALSE;
  ret = lzma_block_decoder (&strm, &block);
  /* The decoder keeps what it needs of the options. */
  lzma_filters_free (filters, NULL);
  if (ret != LZMA_OK) {
    set_corrupt (xb, blk->in_offset,
                 ret == LZMA_MEM_ERROR ? "out of memory" : "cannot decode this block", error);
    return FALSE;
  }

  input = g_malloc (INPUT_SIZE);
  in_pos = blk->in_offset + block.header_size;
  in_end = blk->in_offset + blk->in_size;
  for (;;) {
    if (piece == NULL && (piece = take_piece (xb, k)) == NULL)
      break;
    if (strm.avail_in == 0 && in_pos < in_end) {
      gsize n = (gsize) MIN (INPUT_SIZE, in_end - in_pos);

      if (!read_at (xb, input, n, in_pos, error))
        break;
      strm.next_in = input;
      strm.avail_in = n;
      in_pos += n;
    }
    strm.next_out = piece->data + piece->len;
    strm.avail_out = PIECE_SIZE - piece->len;
    ret = lzma_code (&strm, in_pos == in_end ? LZMA_FINISH : LZMA_RUN);
    piece->len = PIECE_SIZE - strm.avail_out;
    if (ret == LZMA_STREAM_END) {
      piece->last = TRUE;
      g_async_queue_push (w->full, g_steal_pointer (&piece));
      lzma_end (&strm);
      return TRUE;
    }
    if (ret != LZMA_OK) {
      set_corrupt (xb, in_pos - strm.avail_in,
                   ret == LZMA_DATA_ERROR  ? "compressed data is corrupt (LZMA_DATA_ERROR)"
                   : ret == LZMA_BUF_ERROR ? "block ends early (LZMA_BUF_ERROR)"
                   : ret == LZMA_MEM_ERROR ? "out of memory"
                                           : "decoding failed",
                   error);
      break;
    }
    if (piece->len == PIECE_SIZE)
      g_async_queue_push (w->full, g_steal_pointer (&piece));
  }
  if (piece != NULL)
    return_piece (xb, piece);
  lzma_end (&strm);
  return FALSE;
}

static gpointer
worker_thread (gpointer data)
{
  Worker *w = data;
  BmapXzBlocks *xb = w->xb;

  for (guint k = w->index; k < xb->n_order; k += xb->n_workers) {
    g_autoptr (GError) error = NULL;
    Piece *piece;

    if (decode_block (xb, w, k, &error))
      continue;
    /* The reader meets the error where the data stops. */
    if (error != NULL && (piece = take_piece (xb, k)) != NULL) {
      piece->error = g_steal_pointer (&error);
      g_async_queue_push (w->full, piece);
    }
    break;
  }
  return NULL;
}

static guint
count_workers (BmapXzBlocks *xb)
{
  lzma_filter filters[LZMA_FILTERS_MAX + 1];
  lzma_block block;
  guint64 memusage;
  guint n = MIN (MIN (g_get_num_processors (), MAX_WORKERS), xb->n_order);

  if (n <= 1 || !read_block_header (xb, &xb->blocks[xb->order[0]], &block, filters, NULL))
    return 1;
  memusage = lzma_raw_decoder_memusage (filters);
  lzma_filters_free (filters, NULL);
  if (memusage == UINT64_MAX)
    return 1;
  return (guint) CLAMP (WORKERS_MEMORY / MAX (memusage, 1), 1, n);
}

static void
start (BmapXzBlocks *xb)
{
  xb->started = TRUE;
  xb->order = g_new (guint, MAX (xb->n_blocks, 1));
  for (guint b = 0; b < xb->n_blocks; b++) {
    if (xb->blocks[b].wanted)
      xb->order[xb->n_order++] = b;
  }
  if (xb->n_order == 0)
    return;

  for (guint i = 0; i < N_PIECES; i++) {
    xb->pieces[i].data = g_malloc (PIECE_SIZE);
    xb->free_pieces[xb->n_free++] = &xb->pieces[i];
  }
  xb->n_workers = count_workers (xb);
  for (guint i = 0; i < xb->n_workers; i++) {
    Worker *w = &xb->workers[i];

    w->xb = xb;
    w->index = i;
    w->full = g_async_queue_new ();
    w->thread = g_thread_new ("bmap-xz", worker_thread, w);
  }
}

void
bmap_xz_blocks_free (BmapXzBlocks *xb)
{
  if (xb == NULL)
    return;
  g_mutex_lock (&xb->lock);
  xb->stop = TRUE;
  g_cond_broadcast (&xb->cond);
  g_mutex_unlock (&xb->lock);
  for (guint i = 0; i < xb->n_workers; i++) {
    Worker *w = &xb->workers[i];
    Piece *piece;

    g_thread_join (w->thread);
    while ((piece = g_async_queue_try_pop (w->full)) != NULL)
      g_clear_error (&piece->error);
    g_async_queue_unref (w->full);
  }
  for (guint i = 0; i < N_PIECES; i++)
    g_free (xb->pieces[i].data);
  g_mutex_clear (&xb->lock);
  g_cond_clear (&xb->cond);
  g_free (xb->order);
  g_free (xb->blocks);
  g_free (xb->name);
  g_free (xb);
}

/* ---- the reader -------------------------------------------------------- */

/* Makes xb->piece one with bytes left to read in the current block. */
static gboolean
next_piece (BmapXzBlocks *xb, GError **error)
{
  while (xb->piece == NULL || xb->piece->pos == xb->piece->len) {
    Worker *w = &xb->workers[xb->head % xb->n_workers];

    if (xb->piece != NULL)
      return_piece (xb, g_steal_pointer (&xb->piece));
    xb->piece = g_async_queue_pop (w->full);
    if (xb->piece->error != NULL) {
      g_propagate_error (error, g_error_copy (xb->piece->error));
      return FALSE;
    }
    if (xb->piece->block != xb->cur) {
      /* The workers hand pieces over in block order; never read one
       * block's bytes as another's. */
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_BAD_IMAGE,
                   "%s: xz block %u decoded while block %u was expected", xb->name,
                   xb->piece->block, xb->cur);
      return FALSE;
    }
  }
  return TRUE;
}

/* Up to @len bytes of the current block, which is wanted, into @buf unless
 * it is NULL. At the block's end, hands its pieces back and moves on. */
static gssize
take (BmapXzBlocks *xb, guint8 *buf, guint64 len, GError **error)
{
  const XzBlock *blk = &xb->blocks[xb->cur];
  gsize n;

  if (!next_piece (xb, error))
    return -1;
  n = (gsize) MIN (len, xb->piece->len - xb->piece->pos);
  n = (gsize) MIN (n, blk->out_offset + blk->out_size - xb->pos);
  if (buf != NULL)
    memcpy (buf, xb->piece->data + xb->piece->pos, n);
  xb->piece->pos += n;
  xb->pos += n;
  if (xb->pos < blk->out_offset + blk->out_size)
    return (gssize) n;

  /* The block's last piece may be an empty one still to come. */
  while (!xb->piece->last) {
    return_piece (xb, g_steal_pointer (&xb->piece));
    xb->piece = g_async_queue_pop (xb->workers[xb->head % xb->n_workers].full);
    if (xb->piece->error != NULL) {
      g_propagate_error (error, g_error_copy (xb->piece->error));
      return -1;
    }
  }
  return_piece (xb, g_steal_pointer (&xb->piece));
  g_mutex_lock (&xb->lock);
  xb->head++;
  g_cond_broadcast (&xb->cond);
  g_mutex_unlock (&xb->lock);
  xb->cur++;
  return (gssize) n;
}

/* Moves over the rest of the current block, which is not wanted, or @len
 * bytes of it. */
static guint64
pass (BmapXzBlocks *xb, guint64 len)
{
  const XzBlock *blk = &xb->blocks[xb->cur];
  guint64 n = MIN (len, blk->out_offset + blk->out_size - xb->pos);

  xb->pos += n;
  if (xb->pos == blk->out_offset + blk->out_size)
    xb->cur++;
  return n;
}

static gssize
read_or_skip (BmapXzBlocks *xb, guint8 *buf, guint64 len, GError **error)
{
  guint64 done = 0;

  if (!xb->started)
    start (xb);
  while (done < len && xb->pos < xb->size) {
    gssize n;

    if (!xb->blocks[xb->cur].wanted) {
      if (buf != NULL) {
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                     "%s: reading byte %" G_GUINT64_FORMAT " of an xz block that was to be skipped",
                     xb->name, xb->pos);
        return -1;
      }
      done += pass (xb, len - done);
      continue;
    }
    n = take (xb, buf != NULL ? buf + done : NULL, len - done, error);
    if (n < 0)
      return -1;
    done += (guint64) n;
  }
  return (gssize) done;
}

gssize
bmap_xz_blocks_read (BmapXzBlocks *xb, guint8 *buf, gsize len, GError **error)
{
  return read_or_skip (xb, buf, len, error);
}

gssize
bmap_xz_blocks_skip (BmapXzBlocks *xb, guint64 len, GError **error)
{
  return read_or_skip (xb, NULL, MIN (len, (guint64) G_MAXSSIZE), error);
}
