/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmapd-autoflash-config.h"
#include "bmapd-fd.h"
#include "bmapd-manager.h"

/* More than any rule file needs; a bigger one is a mistake. */
#define RULE_FILE_MAX_SIZE (1024 * 1024)
/* As the kernel's MAXSYMLINKS. */
#define MAX_SYMLINKS 40

#define RULE_KEYS                                                                                  \
  "Image, Bmap, NoBmap, Verify, VerifyWritten, MinimizeWrites, Discard, ZeroUnmapped, "            \
  "RelocateGPT, Eject, PowerOff, Count, Description"
#define MATCH_KEYS "Bus, Serial, Vendor, Model, Port, MinSize, MaxSize, AllowNonRemovable"

typedef struct {
  const char *path;
  GKeyFile *kf;
} RuleFile;

static gboolean
key_is_known (const char *group, const char *key)
{
  static const char *const rule_keys[]
      = { "Image",          "Bmap",    "NoBmap",       "Verify",      "VerifyWritten",
          "MinimizeWrites", "Discard", "ZeroUnmapped", "RelocateGPT", "Eject",
          "PowerOff",       "Count",   "Description",  NULL };
  static const char *const match_keys[]
      = { "Bus", "Serial", "Vendor", "Model", "Port", "MinSize", "MaxSize", "AllowNonRemovable",
          NULL };

  if (g_str_equal (group, "Rule"))
    return g_strv_contains (rule_keys, key);
  return g_strv_contains (match_keys, key);
}

/* Unknown groups and keys are refused: a typo would otherwise widen what
 * the rule matches, or drop a check. */
static gboolean
check_keys (RuleFile *file, GError **error)
{
  g_auto (GStrv) groups = g_key_file_get_groups (file->kf, NULL);

  for (guint i = 0; groups[i] != NULL; i++) {
    g_auto (GStrv) keys = NULL;

    if (!g_str_equal (groups[i], "Rule") && !g_str_equal (groups[i], "Match")) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: unknown group [%s] (known: [Rule], [Match])", file->path, groups[i]);
      return FALSE;
    }
    keys = g_key_file_get_keys (file->kf, groups[i], NULL, NULL);
    for (guint j = 0; keys != NULL && keys[j] != NULL; j++) {
      if (!key_is_known (groups[i], keys[j])) {
        g_autofree char *value = g_key_file_get_value (file->kf, groups[i], keys[j], NULL);
        g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                     "%s: [%s] %s=%s: unknown key (known: %s)", file->path, groups[i], keys[j],
                     value, g_str_equal (groups[i], "Rule") ? RULE_KEYS : MATCH_KEYS);
        return FALSE;
      }
    }
  }
  if (!g_key_file_has_group (file->kf, "Rule")) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: no [Rule] group: a rule file needs at least [Rule] Image=", file->path);
    return FALSE;
  }
  return TRUE;
}

/* The stripped value, NULL when the key is missing or empty (an empty
 * value is the same as no key, as in systemd units). */
static char *
get_value (RuleFile *file, const char *group, const char *key)
{
  g_autofree char *value = g_key_file_get_value (file->kf, group, key, NULL);

  if (value == NULL)
    return NULL;
  g_strstrip (value);
  if (value[0] == '\0')
    return NULL;
  return g_steal_pointer (&value);
}

static void
set_bad_value (RuleFile *file, const char *group, const char *key, const char *value,
               const char *expected, GError **error)
{
  g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "%s: [%s] %s=%s: expected %s",
               file->path, group, key, value, expected);
}

/* @out is left alone when the key is not set; @given says whether it was. */
static gboolean
get_bool (RuleFile *file, const char *group, const char *key, gboolean *out, gboolean *given,
          GError **error)
{
  static const char *const yes[] = { "true", "yes", "on", "1", NULL };
  static const char *const no[] = { "false", "no", "off", "0", NULL };
  g_autofree char *value = get_value (file, group, key);
  g_autofree char *lower = NULL;

  *given = value != NULL;
  if (value == NULL)
    return TRUE;
  lower = g_ascii_strdown (value, -1);
  if (g_strv_contains (yes, lower)) {
    *out = TRUE;
  } else if (g_strv_contains (no, lower)) {
    *out = FALSE;
  } else {
    set_bad_value (file, group, key, value, "true or false", error);
    return FALSE;
  }
  return TRUE;
}

static gboolean
get_uint (RuleFile *file, const char *group, const char *key, guint *out, gboolean *given,
          GError **error)
{
  g_autofree char *value = get_value (file, group, key);
  guint64 v;

  *given = value != NULL;
  if (value == NULL)
    return TRUE;
  if (!g_ascii_string_to_unsigned (value, 10, 0, G_MAXUINT32, &v, NULL)) {
    set_bad_value (file, group, key, value, "a whole number from 0 to 4294967295", error);
    return FALSE;
  }
  *out = (guint) v;
  return TRUE;
}

/* Bytes, or a number followed by K, M, G or T (powers of 1024, "KiB" and
 * "KB" read the same). */
static gboolean
get_size (RuleFile *file, const char *group, const char *key, guint64 *out, gboolean *given,
          GError **error)
{
  static const char units[] = "KMGT";
  g_autofree char *value = get_value (file, group, key);
  g_autofree char *digits = NULL;
  const char *end;
  guint64 v, factor = 1;

  *given = value != NULL;
  if (value == NULL)
    return TRUE;
  end = value;
  while (g_ascii_isdigit (*end))
    end++;
  digits = g_strndup (value, (gsize) (end - value));
  if (*end != '\0') {
    const char *unit = strchr (units, g_ascii_toupper (*end));
    const char *rest = end + 1;

    if (unit == NULL
        || !(g_str_equal (rest, "") || g_ascii_strcasecmp (rest, "B") == 0
             || g_ascii_strcasecmp (rest, "iB") == 0)) {
      set_bad_value (file, group, key, value, "a size in bytes, or with K, M, G or T", error);
      return FALSE;
    }
    for (const char *u = units; u <= unit; u++)
      factor *= 1024;
  }
  if (!g_ascii_string_to_unsigned (digits, 10, 0, G_MAXUINT64 / factor, &v, NULL)) {
    set_bad_value (file, group, key, value, "a size in bytes, or with K, M, G or T", error);
    return FALSE;
  }
  *out = v * factor;
  return TRUE;
}

static gboolean
get_path (RuleFile *file, const char *key, char **out, GError **error)
{
  g_autofree char *value = get_value (file, "Rule", key);

  if (value != NULL && !g_path_is_absolute (value)) {
    set_bad_value (file, "Rule", key, value, "an absolute path", error);
    return FALSE;
  }
  *out = g_steal_pointer (&value);
  return TRUE;
}

/* ---- opening the files a rule names ----
 *
 * bmapd reads rule files, images and bmaps as root, for every card it
 * flashes: whoever can change one of them, or a directory on the way, or
 * a symbolic link on the way, chooses what goes onto the cards. So each is
 * opened one path component at a time (O_PATH | O_NOFOLLOW), and every
 * component must be owned by root (or by the user bmapd runs as) and not
 * writable by its group or by others; a directory writable by others is
 * allowed only with the sticky bit (/tmp): then nobody else can rename or
 * remove the root-owned entry the path goes through. A symbolic link is
 * followed only when it is root's (its directory is checked as any other);
 * its target is walked the same way. */

static gboolean
owner_is_trusted (uid_t uid)
{
  return uid == 0 || uid == geteuid ();
}

static gboolean
check_component (const char *shown, const struct stat *st, gboolean last, GError **error)
{
  if (!owner_is_trusted (st->st_uid)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NOT_AUTHORIZED,
                 "%s is owned by uid %u, not by root: its owner could choose what is flashed",
                 shown, (guint) st->st_uid);
    return FALSE;
  }
  if (S_ISLNK (st->st_mode))
    return TRUE; /* a link's own mode means nothing */
  if ((st->st_mode & (S_IWGRP | S_IWOTH))
      && !(S_ISDIR (st->st_mode) && !last && (st->st_mode & S_ISVTX))) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_NOT_AUTHORIZED,
                 "%s has mode %04o, writable by %s: they could choose what is flashed", shown,
                 (guint) (st->st_mode & 07777), (st->st_mode & S_IWOTH) ? "others" : "its group");
    return FALSE;
  }
  return TRUE;
}

/* Puts the components of @path in front of @todo (a symlink's target
 * comes before what followed the link). */
static void
push_components (GQueue *todo, const char *path)
{
  g_auto (GStrv) parts = g_strsplit (path, "/", -1);
  guint n = g_strv_length (parts);

  for (guint i = n; i > 0; i--) {
    if (parts[i - 1][0] != '\0' && !g_str_equal (parts[i - 1], "."))
      g_queue_push_head (todo, g_strdup (parts[i - 1]));
  }
}

/* "/a/b" + "c" or "..", for messages. */
static void
shown_step (GString *shown, const char *name)
{
  if (g_str_equal (name, "..")) {
    char *slash = strrchr (shown->str, '/');

    g_string_truncate (shown,
                       slash != NULL && slash != shown->str ? (gsize) (slash - shown->str) : 1);
    return;
  }
  if (shown->len > 1)
    g_string_append_c (shown, '/');
  g_string_append (shown, name);
}

/* A descriptor closed when it goes out of scope (g_autofd needs GLib
 * 2.76). */
typedef int RuleFd;
G_DEFINE_AUTO_CLEANUP_FREE_FUNC (RuleFd, close, -1)

/* Closes *@fd and puts @new_fd there. */
static void
replace_fd (int *fd, int new_fd)
{
  if (*fd >= 0)
    close (*fd);
  *fd = new_fd;
}

static int
open_root_dir (GError **error)
{
  g_auto (RuleFd) fd = open ("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  struct stat st;

  if (fd < 0 || fstat (fd, &st) < 0) {
    bmap_error_set_errno (error, errno, "/: cannot open it");
    return -1;
  }
  if (!check_component ("/", &st, FALSE, error))
    return -1;
  return g_steal_fd (&fd);
}

/* Follows the symbolic link @link_fd (seen at @shown): its target's
 * components go in front of @todo, from @dir_fd or from a new "/". */
static gboolean
follow_link (int link_fd, int *dir_fd, GString *shown, GQueue *todo, GError **error)
{
  char target[PATH_MAX];
  ssize_t len = readlinkat (link_fd, "", target, sizeof target - 1);

  if (len < 0) {
    bmap_error_set_errno (error, errno, "%s: reading the symbolic link", shown->str);
    return FALSE;
  }
  target[len] = '\0';
  /* The link's name is not a directory on the way: its target is. */
  shown_step (shown, "..");
  if (target[0] == '/') {
    int root_fd = open_root_dir (error);

    if (root_fd < 0)
      return FALSE;
    replace_fd (dir_fd, root_fd);
    g_string_assign (shown, "/");
  }
  push_components (todo, target);
  return TRUE;
}

/* Opens the regular file at the absolute @path for reading, checking
 * every component as described above. Errors name the component at
 * fault, and its owner or mode. */
static int
open_trusted (const char *path, GError **error)
{
  g_autoptr (GQueue) todo = g_queue_new ();
  g_autoptr (GString) shown = g_string_new ("/");
  g_autofree char *proc_path = NULL;
  g_auto (RuleFd) dir_fd = -1;
  struct stat st = { 0 };
  guint n_links = 0;
  int fd;

  if (!g_path_is_absolute (path)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "%s: not an absolute path", path);
    return -1;
  }
  dir_fd = open_root_dir (error);
  if (dir_fd < 0)
    return -1;
  push_components (todo, path);
  /* After the loop, dir_fd is the file itself. */
  while (!g_queue_is_empty (todo)) {
    g_autofree char *name = g_queue_pop_head (todo);
    gboolean last = g_queue_is_empty (todo);
    g_auto (RuleFd) next_fd = -1;

    shown_step (shown, name);
    next_fd = openat (dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (next_fd < 0 || fstat (next_fd, &st) < 0) {
      bmap_error_set_errno (error, errno, "%s: cannot open it", shown->str);
      return -1;
    }
    if (!check_component (shown->str, &st, last, error))
      return -1;
    if (S_ISLNK (st.st_mode)) {
      if (++n_links > MAX_SYMLINKS) {
        bmap_error_set_errno (error, ELOOP, "%s", path);
        return -1;
      }
      if (!follow_link (next_fd, &dir_fd, shown, todo, error))
        return -1;
      continue;
    }
    if (!last && !S_ISDIR (st.st_mode)) {
      bmap_error_set_errno (error, ENOTDIR, "%s", shown->str);
      return -1;
    }
    replace_fd (&dir_fd, g_steal_fd (&next_fd));
  }
  if (!S_ISREG (st.st_mode)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "%s: not a regular file",
                 shown->str);
    return -1;
  }
  /* Opened for reading through the checked descriptor itself, so that
   * nothing can be swapped in between. */
  proc_path = g_strdup_printf ("/proc/self/fd/%d", dir_fd);
  fd = open (proc_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    bmap_error_set_errno (error, errno, "%s: cannot open it", shown->str);
  return fd;
}

static BmapMap *
load_bmap (const char *bmap_path, GError **error)
{
  g_autoptr (GBytes) bytes = NULL;
  const char *data;
  gsize len = 0;
  int fd;

  fd = open_trusted (bmap_path, error);
  if (fd < 0)
    return NULL;
  bytes = bmapd_fd_read_regular (fd, BMAPD_MAX_BMAP_SIZE, "bmap", error);
  close (fd);
  if (bytes == NULL)
    return NULL;
  data = g_bytes_get_data (bytes, &len);
  return bmap_map_load_data (data, len, "bmap", error);
}

static gboolean
load_match (RuleFile *file, BmapdAutoFlashSpec *spec, GVariantBuilder *builder, GError **error)
{
  static const struct {
    const char *key;
    const char *dbus_key;
    gsize offset;
  } globs[] = {
    { "Serial", "serial", G_STRUCT_OFFSET (BmapdAutoFlashMatch, serial) },
    { "Vendor", "vendor", G_STRUCT_OFFSET (BmapdAutoFlashMatch, vendor) },
    { "Model", "model", G_STRUCT_OFFSET (BmapdAutoFlashMatch, model) },
    { "Port", "port", G_STRUCT_OFFSET (BmapdAutoFlashMatch, port) },
  };
  BmapdAutoFlashMatch *match = &spec->match;
  g_autofree char *bus = get_value (file, "Match", "Bus");
  gboolean given = FALSE;

  /* They become D-Bus strings (the rule's Match property). */
  if (bus != NULL && !g_utf8_validate (bus, -1, NULL)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "%s: [Match] Bus: not valid UTF-8",
                 file->path);
    return FALSE;
  }

  if (bus != NULL) {
    g_auto (GStrv) parts = g_strsplit_set (bus, ";, \t", -1);
    g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);

    for (guint i = 0; parts[i] != NULL; i++) {
      if (parts[i][0] != '\0')
        g_ptr_array_add (names, g_strdup (parts[i]));
    }
    g_ptr_array_add (names, NULL);
    match->bus = (char **) g_ptr_array_free (g_steal_pointer (&names), FALSE);
    g_variant_builder_add (builder, "{sv}", "bus",
                           g_variant_new_strv ((const char *const *) match->bus, -1));
  }
  for (guint i = 0; i < G_N_ELEMENTS (globs); i++) {
    char **field = G_STRUCT_MEMBER_P (match, globs[i].offset);

    *field = get_value (file, "Match", globs[i].key);
    if (*field != NULL && !g_utf8_validate (*field, -1, NULL)) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: [Match] %s: not valid UTF-8", file->path, globs[i].key);
      return FALSE;
    }
    if (*field != NULL)
      g_variant_builder_add (builder, "{sv}", globs[i].dbus_key, g_variant_new_string (*field));
  }
  if (!get_size (file, "Match", "MinSize", &match->min_size, &match->has_min_size, error)
      || !get_size (file, "Match", "MaxSize", &match->max_size, &match->has_max_size, error)
      || !get_bool (file, "Match", "AllowNonRemovable", &match->allow_non_removable, &given, error))
    return FALSE;
  if (match->has_min_size)
    g_variant_builder_add (builder, "{sv}", "min-size", g_variant_new_uint64 (match->min_size));
  if (match->has_max_size)
    g_variant_builder_add (builder, "{sv}", "max-size", g_variant_new_uint64 (match->max_size));
  if (given)
    g_variant_builder_add (builder, "{sv}", "allow-non-removable",
                           g_variant_new_boolean (match->allow_non_removable));
  if (match->has_min_size && match->has_max_size && match->min_size > match->max_size) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: [Match] MinSize=%" G_GUINT64_FORMAT
                 " is larger than MaxSize=%" G_GUINT64_FORMAT ": no device can match",
                 file->path, match->min_size, match->max_size);
    return FALSE;
  }
  return TRUE;
}

static gboolean
load_options (RuleFile *file, BmapdAutoFlashSpec *spec, GVariantBuilder *builder, GError **error)
{
  gboolean given = FALSE;

  if (!get_bool (file, "Rule", "NoBmap", &spec->nobmap, &given, error))
    return FALSE;
  if (given)
    g_variant_builder_add (builder, "{sv}", "nobmap", g_variant_new_boolean (spec->nobmap));
  if (!get_bool (file, "Rule", "Verify", &spec->verify, &given, error))
    return FALSE;
  if (given)
    g_variant_builder_add (builder, "{sv}", "verify", g_variant_new_boolean (spec->verify));
  if (!get_bool (file, "Rule", "VerifyWritten", &spec->verify_written, &given, error))
    return FALSE;
  if (given)
    g_variant_builder_add (builder, "{sv}", "verify-written",
                           g_variant_new_boolean (spec->verify_written));
  if (!get_bool (file, "Rule", "Eject", &spec->eject, &given, error))
    return FALSE;
  if (given)
    g_variant_builder_add (builder, "{sv}", "eject", g_variant_new_boolean (spec->eject));
  if (!get_bool (file, "Rule", "PowerOff", &spec->power_off, &given, error))
    return FALSE;
  if (given)
    g_variant_builder_add (builder, "{sv}", "power-off", g_variant_new_boolean (spec->power_off));
  for (const BmapdAutoFlashFlag *f = bmapd_autoflash_flags; f->option != NULL; f++) {
    gboolean on = FALSE;

    if (!get_bool (file, "Rule", f->key, &on, &given, error))
      return FALSE;
    if (!given)
      continue;
    spec->flash_flags = on ? spec->flash_flags | f->flag : spec->flash_flags & ~f->flag;
    g_variant_builder_add (builder, "{sv}", f->option, g_variant_new_boolean (on));
  }
  if (!get_uint (file, "Rule", "Count", &spec->count, &given, error))
    return FALSE;
  if (given)
    g_variant_builder_add (builder, "{sv}", "count", g_variant_new_uint32 (spec->count));
  spec->description = get_value (file, "Rule", "Description");
  if (spec->description != NULL) {
    if (!g_utf8_validate (spec->description, -1, NULL)) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                   "%s: [Rule] Description: not valid UTF-8", file->path);
      return FALSE;
    }
    g_variant_builder_add (builder, "{sv}", "description",
                           g_variant_new_string (spec->description));
  }
  if (spec->nobmap && spec->verify_written) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: [Rule] VerifyWritten=true needs a bmap with checksums, and NoBmap=true "
                 "was given",
                 file->path);
    return FALSE;
  }
  if (spec->nobmap && (spec->flash_flags & (BMAPD_FLASH_DISCARD | BMAPD_FLASH_ZERO_UNMAPPED))) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: [Rule] %s=true needs a bmap (the ranges it does not map), and "
                 "NoBmap=true was given",
                 file->path, spec->flash_flags & BMAPD_FLASH_DISCARD ? "Discard" : "ZeroUnmapped");
    return FALSE;
  }
  return TRUE;
}

/* The keys of @kf, checked: the spec without its image and bmap, and the
 * paths that name them. */
static BmapdAutoFlashSpec *
parse_keys (GKeyFile *kf, const char *path, char **image_path, char **bmap_path, GError **error)
{
  g_autoptr (BmapdAutoFlashSpec) spec = bmapd_autoflash_spec_new ();
  g_auto (GVariantBuilder) match_builder = G_VARIANT_BUILDER_INIT (G_VARIANT_TYPE_VARDICT);
  g_auto (GVariantBuilder) options_builder = G_VARIANT_BUILDER_INIT (G_VARIANT_TYPE_VARDICT);
  g_autofree char *image = NULL;
  g_autofree char *bmap = NULL;
  RuleFile file = { path, kf };

  if (!check_keys (&file, error) || !get_path (&file, "Image", &image, error)
      || !get_path (&file, "Bmap", &bmap, error)
      || !load_options (&file, spec, &options_builder, error)
      || !load_match (&file, spec, &match_builder, error))
    return NULL;
  if (image == NULL) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: [Rule] Image= is missing: the rule needs an image to flash", path);
    return NULL;
  }
  if (bmap != NULL && spec->nobmap) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT,
                 "%s: [Rule] Bmap=%s and NoBmap=true: give one of them", path, bmap);
    return NULL;
  }
  spec->config_file = g_strdup (path);
  if (spec->description == NULL)
    spec->description = g_filename_display_basename (image); /* valid UTF-8 for D-Bus */
  spec->match_variant = g_variant_ref_sink (g_variant_builder_end (&match_builder));
  spec->options_variant = g_variant_ref_sink (g_variant_builder_end (&options_builder));
  *image_path = g_steal_pointer (&image);
  *bmap_path = g_steal_pointer (&bmap);
  return g_steal_pointer (&spec);
}

BmapdAutoFlashSpec *
bmapd_autoflash_config_parse_data (const char *data, gsize len, const char *path, char **image_path,
                                   char **bmap_path, GError **error)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) local_error = NULL;

  if (!g_key_file_load_from_data (kf, data, len, G_KEY_FILE_NONE, &local_error)) {
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_INVALID_ARGUMENT, "%s: %s", path,
                 local_error->message);
    return NULL;
  }
  return parse_keys (kf, path, image_path, bmap_path, error);
}

BmapdAutoFlashSpec *
bmapd_autoflash_config_load_file (const char *path, GError **error)
{
  g_autoptr (GError) local_error = NULL;
  g_autoptr (BmapdAutoFlashSpec) spec = NULL;
  g_autofree char *image_path = NULL;
  g_autofree char *bmap_path = NULL;
  g_autoptr (BmapMap) map = NULL;
  g_autoptr (GBytes) text = NULL;
  int image_fd, rule_fd;

  /* The rule file is checked as the files it names: who can change it
   * chooses the image. */
  rule_fd = open_trusted (path, error);
  if (rule_fd < 0) {
    g_prefix_error (error, "%s: rule file refused: ", path);
    return NULL;
  }
  text = bmapd_fd_read_regular (rule_fd, RULE_FILE_MAX_SIZE, path, error);
  close (rule_fd);
  if (text == NULL)
    return NULL;
  spec = bmapd_autoflash_config_parse_data (g_bytes_get_data (text, NULL), g_bytes_get_size (text),
                                            path, &image_path, &bmap_path, error);
  if (spec == NULL)
    return NULL;

  /* The bmap: named, found next to the image as bmaptool does, or none. */
  if (!spec->nobmap && bmap_path == NULL) {
    bmap_path = bmap_locate_for_image (image_path, &local_error);
    if (bmap_path == NULL) {
      g_set_error (error, BMAP_ERROR, BMAP_ERROR_NO_BMAP,
                   "%s: [Rule] Image=%s: %s; set Bmap= or NoBmap=true", path, image_path,
                   local_error->message);
      return NULL;
    }
  }
  if (bmap_path != NULL) {
    map = load_bmap (bmap_path, error);
    if (map == NULL) {
      g_prefix_error (error, "%s: [Rule] Bmap=%s: ", path, bmap_path);
      return NULL;
    }
  }

  image_fd = open_trusted (image_path, error);
  if (image_fd < 0
      || !bmapd_autoflash_spec_set_image (spec, image_fd, "image", g_steal_pointer (&map), error)) {
    g_prefix_error (error, "%s: [Rule] Image=%s: ", path, image_path);
    return NULL;
  }
  return g_steal_pointer (&spec);
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(const char *const *) a, *(const char *const *) b);
}

GPtrArray *
bmapd_autoflash_config_list_dir (const char *dir_path, GError **error)
{
  g_autoptr (GPtrArray) paths = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GError) local_error = NULL;
  g_autoptr (GDir) dir = g_dir_open (dir_path, 0, &local_error);
  const char *name;

  if (dir == NULL) {
    if (g_error_matches (local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      return g_steal_pointer (&paths);
    g_set_error (error, BMAP_ERROR, BMAP_ERROR_IO, "%s: %s", dir_path, local_error->message);
    return NULL;
  }
  while ((name = g_dir_read_name (dir)) != NULL) {
    /* Editors' backups and hidden files are not rules. */
    if (g_str_has_suffix (name, ".conf") && name[0] != '.')
      g_ptr_array_add (paths, g_build_filename (dir_path, name, NULL));
  }
  g_ptr_array_sort (paths, compare_strings);
  return g_steal_pointer (&paths);
}
