# SPDX-License-Identifier: GPL-2.0-or-later
"""bmapctl copy/create as bmaptool 3.9's command line (issue 11): which
destinations are written and which are refused, exit statuses, messages on
stderr only, options after the positional arguments, the in-process
fallback when bmapd cannot be reached, partitions, and bmaptool's own output
lines when bmapctl runs through a `bmaptool` symlink, compared with
Debian's bmaptool where its version and 3.9 agree."""

import contextlib
import gzip
import hashlib
import os
import pathlib
import pty
import random
import re
import shutil
import stat
import subprocess
import tempfile

import pytest

from loop_partitions import attach_partitioned, detach

BMAPCTL = os.path.abspath(os.environ.get("BMAPCTL", "bmapctl"))
DEBIAN_BMAPTOOL = "/usr/bin/bmaptool"
needs_debian_bmaptool = pytest.mark.skipif(not os.access(DEBIAN_BMAPTOOL, os.X_OK),
                                           reason="Debian's bmaptool (bmap-tools) is not installed")
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (loop devices, writing in /dev)")

MiB = 1024 * 1024


def run(*args, check=None, env=None, cwd=None, **kwargs):
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, **kwargs)
    if check is not None:
        assert proc.returncode == check, \
            f"{args}: exit {proc.returncode}, expected {check}\n{proc.stdout}\n{proc.stderr}"
    return proc


def make_image(path, size, extents, seed=1):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in extents:
            f.seek(off)
            f.write(rng.randbytes(length))
    return path


def digest(path, size=None, offset=0):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = size if size is not None else os.fstat(f.fileno()).st_size
        while left is None or left > 0:
            chunk = f.read(min(MiB, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


@pytest.fixture
def image(tmp_path):
    """A 2 MiB sparse image with its bmap beside it (disk.img.bmap)."""
    img = make_image(tmp_path / "disk.img", 2 * MiB, [(0, 8192), (MiB, 100000)])
    run(BMAPCTL, "create", "-o", tmp_path / "disk.img.bmap", img, check=0)
    return img


@pytest.fixture
def bmaptool(tmp_path):
    """bmapctl run as bmaptool: a symlink named bmaptool."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    link = bindir / "bmaptool"
    link.symlink_to(BMAPCTL)
    return link


DEAD_BUS = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bmapctl-test/bus"}


# ---------------------------------------------------------------- loop devices

class Loop:
    def __init__(self, backing, partition=None):
        try:
            if partition is not None:
                self.node = attach_partitioned(backing, *partition)
            else:
                self.node = run("losetup", "--find", "--show", backing, check=0).stdout.strip()
        except (OSError, AssertionError) as e:
            pytest.skip(str(e))

    def detach(self):
        detach(self.node)


@pytest.fixture
def loops():
    made = []

    def factory(backing, partition=None):
        """@partition: (start sector, sectors) of a partition 1."""
        loop = Loop(backing, partition)
        made.append(loop)
        return loop
    yield factory
    for loop in made:
        loop.detach()


# ---------------------------------------------------------------- destinations

@needs_root
def test_missing_dev_path_exits_1_and_creates_nothing(image, tmp_path):
    name = f"sdz-bmapctl-test-{os.getpid()}"
    node = f"/dev/{name}"
    assert not os.path.exists(node)
    try:
        proc = run(BMAPCTL, "copy", image, node, check=1)
        assert f"{node}: no such device" in proc.stderr
        assert not os.path.exists(node)
        # Relative to /dev, and through a bmaptool symlink: the same.
        run(BMAPCTL, "copy", image, name, cwd="/dev", check=1)
        assert not os.path.exists(node)
        run(BMAPCTL, "copy", image, f"/dev/../dev/{name}", check=1)
        assert not os.path.exists(node)
        run(BMAPCTL, "copy", "--nobmap", image, f"/dev/disk/by-id/{name}", check=1)
    finally:
        if os.path.lexists(node) and stat.S_ISREG(os.lstat(node).st_mode):
            os.unlink(node)
    assert not os.path.exists(node)


@needs_root
def test_regular_file_under_dev_is_written_with_bmaptools_warning(image, bmaptool):
    """A file left in /dev by an earlier mistake: written, as bmaptool does,
    with bmaptool's warning."""
    node = f"/dev/bmapctl-test-file-{os.getpid()}"
    with open(node, "wb"):
        pass
    try:
        proc = run(bmaptool, "copy", image, node, check=0)
        assert (f'bmaptool: \033[93mWARNING\033[0m: "{node}" is under "/dev", but it is a '
                "regular file, not a device node") in proc.stderr.splitlines()
        if os.access(DEBIAN_BMAPTOOL, os.X_OK):
            theirs = run(DEBIAN_BMAPTOOL, "copy", image, node, check=0)
            assert bmaptool_lines(proc.stderr) == bmaptool_lines(theirs.stderr)
        assert digest(node) == digest(image)
    finally:
        os.unlink(node)


@pytest.mark.parametrize("kind", ["directory", "character device", "pipe"])
def test_destination_of_other_kinds_is_refused(image, tmp_path, kind):
    if kind == "directory":
        dest = tmp_path / "a-dir"
        dest.mkdir()
    elif kind == "character device":
        dest = "/dev/zero"
    else:
        dest = tmp_path / "fifo"
        os.mkfifo(dest)
    proc = run(BMAPCTL, "copy", image, dest, check=1)
    assert f"not a block device, a regular file or /dev/null (it is a {kind})" in proc.stderr


def test_dev_null_and_new_file_outside_dev_are_written(image, tmp_path):
    run(BMAPCTL, "copy", image, "/dev/null", check=0)
    out = tmp_path / "new" / "out.img"
    out.parent.mkdir()
    run(BMAPCTL, "copy", image, out, check=0)
    assert digest(out) == digest(image)


def test_removable_device_refuses_files(image, tmp_path):
    existing = tmp_path / "existing.img"
    existing.write_bytes(b"keep")
    proc = run(BMAPCTL, "copy", "--removable-device", image, existing, check=1)
    assert "not a block device, and --removable-device was given" in proc.stderr
    assert existing.read_bytes() == b"keep"
    proc = run(BMAPCTL, "copy", "--removable-device", image, tmp_path / "missing.img", check=1)
    assert "does not exist" in proc.stderr
    assert not (tmp_path / "missing.img").exists()


@needs_root
def test_removable_device_refuses_a_fixed_disk_in_process(image, tmp_path, loops):
    backing = tmp_path / "fixed.img"
    backing.write_bytes(b"\xa5" * (4 * MiB))
    loop = loops(backing)
    with open(f"/sys/block/{os.path.basename(loop.node)}/removable") as f:
        assert f.read().strip() == "0"
    before = digest(backing)
    proc = run(BMAPCTL, "--local", "copy", "--removable-device", image, loop.node, check=1)
    assert f"{loop.node}: not a removable device" in proc.stderr
    assert digest(backing) == before


def test_the_bmap_used_is_named(image, tmp_path):
    proc = run(BMAPCTL, "copy", image, tmp_path / "out.img", check=0)
    assert f"bmapctl: discovered bmap file '{image}.bmap'" in proc.stderr.splitlines()
    proc = run(BMAPCTL, "-q", "copy", image, tmp_path / "out.img", check=0)
    assert proc.stderr == ""


# ---------------------------------------------------------------- stderr, exit statuses

def test_debug_goes_to_stderr_only(image, tmp_path):
    proc = run(BMAPCTL, "-d", "copy", image, tmp_path / "out.img", check=0)
    assert proc.stdout == ""
    assert "DEBUG" in proc.stderr
    # create without -o: standard output is the bmap and nothing else.
    proc = run(BMAPCTL, "-d", "create", image, check=0)
    assert proc.stdout == (tmp_path / "disk.img.bmap").read_text()
    assert "DEBUG" in proc.stderr


def test_debug_of_bmaptool_goes_to_stderr_only(image, tmp_path, bmaptool):
    proc = run(bmaptool, "-d", "copy", image, tmp_path / "out.img", check=0)
    assert proc.stdout == ""
    assert "bmaptool: info: copying time: " in proc.stderr


@pytest.mark.parametrize("argv", [
    ["copy", "--bmap", "{bmap}", "--nobmap", "{image}", "{out}"],
    ["copy", "{image}", "{out}", "--nobmap", "--bmap={bmap}"],
    ["-q", "-d", "copy", "{image}", "{out}"],
], ids=["bmap-and-nobmap", "bmap-and-nobmap-after", "quiet-and-debug"])
def test_conflicts_exit_1_as_bmaptool(image, tmp_path, bmaptool, argv):
    values = {"bmap": f"{image}.bmap", "image": image, "out": tmp_path / "out.img"}
    args = [a.format(**values) for a in argv]
    for program in (BMAPCTL, bmaptool):
        proc = run(program, *args, check=1)
        assert "cannot be used together" in proc.stderr
        assert not (tmp_path / "out.img").exists()
    if os.access(DEBIAN_BMAPTOOL, os.X_OK):
        run(DEBIAN_BMAPTOOL, *args, check=1)


@pytest.mark.parametrize("argv", [
    ["copy"], ["copy", "{image}"], ["copy", "--bogus", "{image}", "{out}"],
    ["create"], ["create", "--bogus", "{image}"], ["frobnicate"], [],
], ids=["copy-no-args", "copy-no-dest", "copy-unknown-option", "create-no-args",
        "create-unknown-option", "unknown-command", "no-command"])
def test_usage_errors_exit_2_as_bmaptool(image, tmp_path, bmaptool, argv):
    values = {"image": image, "out": tmp_path / "out.img"}
    args = [a.format(**values) for a in argv]
    run(BMAPCTL, *args, check=2)
    run(bmaptool, *args, check=2)
    if os.access(DEBIAN_BMAPTOOL, os.X_OK):
        run(DEBIAN_BMAPTOOL, *args, check=2)


def test_failures_exit_1(image, tmp_path, bmaptool):
    for program in (BMAPCTL, bmaptool):
        run(program, "copy", tmp_path / "missing.img", tmp_path / "out.img", check=1)
        run(program, "copy", image, tmp_path / "no-dir" / "out.img", check=1)
        run(program, "copy", "--bmap", tmp_path / "missing.bmap", image, tmp_path / "o", check=1)
    proc = run(bmaptool, "copy", tmp_path / "missing.img", tmp_path / "out.img", check=1)
    assert proc.stderr.startswith("bmaptool: \033[91mERROR\033[0m: ")


# ---------------------------------------------------------------- options

def test_options_after_positional_arguments(image, tmp_path, bmaptool):
    out = tmp_path / "out.img"
    bmap = tmp_path / "renamed.bmap"
    shutil.copy(f"{image}.bmap", bmap)
    os.unlink(f"{image}.bmap")
    for program in (BMAPCTL, bmaptool):
        run(program, "copy", image, out, f"--bmap={bmap}", check=0)
        assert digest(out) == digest(image)
        out.unlink()
        run(program, "copy", image, out, "--bmap", bmap, "--no-verify", check=0)
        assert digest(out) == digest(image)
        out.unlink()
        run(program, "copy", image, out, "--nobmap", check=0)
        assert digest(out) == digest(image)
        out.unlink()
        run(program, "create", image, "-o", tmp_path / "again.bmap", check=0)
        assert (tmp_path / "again.bmap").read_text() == bmap.read_text()


# bmaptool 3.9's options (src/bmaptool/CLI.py, parse_arguments()). --keyring
# and --fingerprint come with signature verification (bmapctl-signature.c).
BMAPTOOL_OPTIONS = {
    "copy": ["--bmap", "--nobmap", "--bmap-sig", "--no-sig-verify", "--no-verify",
             "--psplash-pipe", "--removable-device"],
    "create": ["-o", "--output", "--no-checksum"],
}


@pytest.mark.parametrize("command", sorted(BMAPTOOL_OPTIONS))
def test_every_bmaptool_option_is_in_help(command):
    text = run(BMAPCTL, command, "--help", check=0).stdout
    for option in BMAPTOOL_OPTIONS[command]:
        assert re.search(rf"(?<![\w-]){re.escape(option)}\b", text), \
            f"bmapctl {command} --help does not show {option}"


@needs_debian_bmaptool
def test_debian_bmaptool_options_are_a_subset():
    """Every option Debian's bmaptool shows, bmapctl shows too."""
    for command in BMAPTOOL_OPTIONS:
        theirs = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", run(DEBIAN_BMAPTOOL, command, "--help",
                                                                   check=0).stdout))
        ours = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", run(BMAPCTL, command, "--help",
                                                               check=0).stdout))
        assert theirs - ours == set(), f"{command}: {theirs - ours}"


@contextlib.contextmanager
def fifo_reader(path):
    """A FIFO at @path held open for reading, as psplash holds its own; what
    was written to it is read when the block ends (a few hundred bytes at
    most, well within the pipe's buffer)."""
    os.mkfifo(path)
    data = []
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        yield data
        with contextlib.suppress(BlockingIOError):
            while True:
                data.append(os.read(fd, 65536))
    finally:
        os.close(fd)


def test_psplash_pipe_gets_progress(image, tmp_path):
    with fifo_reader(tmp_path / "psplash_fifo") as data:
        run(BMAPCTL, "copy", "--psplash-pipe", tmp_path / "psplash_fifo", image,
            tmp_path / "out.img", check=0)
    lines = b"".join(data).decode().splitlines()
    assert lines, "nothing was written to the psplash FIFO"
    assert all(re.fullmatch(r"PROGRESS \d+", line) for line in lines), lines
    assert lines[-1] == "PROGRESS 100"
    assert digest(tmp_path / "out.img") == digest(image)


def test_psplash_pipe_that_is_not_a_pipe_is_only_a_warning(image, tmp_path, bmaptool):
    not_a_pipe = tmp_path / "regular"
    not_a_pipe.write_text("")
    proc = run(bmaptool, "copy", "--psplash-pipe", not_a_pipe, image, tmp_path / "out.img",
               check=0)
    assert (f"bmaptool: \033[93mWARNING\033[0m: '{not_a_pipe}' is not a pipe, so psplash "
            "progress will not be updated") in proc.stderr.splitlines()
    assert not_a_pipe.read_text() == ""


# ---------------------------------------------------------------- without bmapd

@needs_root
def test_no_bus_writes_in_process(image, tmp_path, loops):
    backing = tmp_path / "disk-backing.img"
    backing.write_bytes(b"\0" * (4 * MiB))
    loop = loops(backing)
    proc = run(BMAPCTL, "copy", image, loop.node, env=DEAD_BUS, check=0)
    said = [line for line in proc.stderr.splitlines() if "in-process" in line]
    assert said == [f"bmapctl: bmapd cannot be reached (cannot connect to the system bus: "
                    f"No such file or directory): writing {loop.node} in-process"], proc.stderr
    assert digest(backing, size=2 * MiB) == digest(image)


@needs_root
def test_no_bus_and_daemon_forced_fails(image, tmp_path, loops):
    backing = tmp_path / "disk-backing.img"
    backing.write_bytes(b"\xa5" * (4 * MiB))
    before = digest(backing)
    loop = loops(backing)
    proc = run(BMAPCTL, "copy", "--daemon", image, loop.node, env=DEAD_BUS, check=1)
    assert "cannot connect to the system bus" in proc.stderr
    assert "in-process" not in proc.stderr
    assert digest(backing) == before
    run(BMAPCTL, "--local", "copy", "--daemon", image, loop.node, check=2)


@needs_root
def test_no_bus_and_no_write_access_fails_untouched(image, tmp_path, loops):
    backing = tmp_path / "disk-backing.img"
    backing.write_bytes(b"\xa5" * (4 * MiB))
    before = digest(backing)
    loop = loops(backing)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = run(*nobody, BMAPCTL, "copy", image, loop.node, env=DEAD_BUS, check=1)
    assert "cannot connect to the system bus" in proc.stderr
    assert "only when you may write to it yourself" in proc.stderr
    assert digest(backing) == before


@needs_root
def test_no_bus_ordinary_user_in_the_devices_group_writes_in_process(tmp_path, loops, request):
    """labgrid over ssh: an ordinary user whose group may write the device,
    no bmapd. The user's own rights decide, as for bmaptool."""
    # pytest's directories are private to root: the image goes elsewhere.
    shared = pathlib.Path(tempfile.mkdtemp(prefix="bmapctl-test-"))
    request.addfinalizer(lambda: shutil.rmtree(shared))
    os.chmod(shared, 0o755)
    img = make_image(shared / "disk.img", 2 * MiB, [(0, 8192), (MiB, 100000)])
    run(BMAPCTL, "create", "-o", shared / "disk.img.bmap", img, check=0)
    for path in (img, shared / "disk.img.bmap"):
        os.chmod(path, 0o644)
    backing = tmp_path / "disk-backing.img"
    backing.write_bytes(b"\0" * (4 * MiB))
    loop = loops(backing)
    lab_gid = 4242  # a group of the device, as "disk" or a lab's group would be
    os.chown(loop.node, 0, lab_gid)
    os.chmod(loop.node, 0o660)
    user = ["setpriv", "--reuid=65534", "--regid=65534", f"--groups={lab_gid}"]
    proc = run(*user, BMAPCTL, "copy", img, loop.node, env=DEAD_BUS, check=0)
    assert f"writing {loop.node} in-process" in proc.stderr
    assert digest(backing, size=2 * MiB) == digest(img)


@needs_root
def test_partition_is_written_in_process(image, tmp_path, loops):
    backing = tmp_path / "partitioned.img"
    start, sectors = 2048, 6 * 2048  # 1 MiB in, 6 MiB long
    # Around the partition a pattern that a stray write would change; in
    # it zeros, as the image's holes are (they are not written).
    backing.write_bytes(b"\xa5" * (start * 512) + b"\0" * (sectors * 512) + b"\xa5" * MiB)
    loop = loops(backing, partition=(start, sectors))
    part = loop.node + "p1"
    assert stat.S_ISBLK(os.stat(part).st_mode)
    with open(f"/sys/class/block/{os.path.basename(part)}/partition") as f:
        assert f.read().strip() == "1"
    head_before = digest(backing, size=start * 512)
    tail_before = digest(backing, offset=(start + sectors) * 512)
    # bmapd would write a partition of a disk it offers; it cannot be
    # reached, so the partition is written in-process, said in one line.
    proc = run(BMAPCTL, "copy", image, part, env=DEAD_BUS, check=0)
    said = [line for line in proc.stderr.splitlines() if "in-process" in line]
    assert said == [f"bmapctl: bmapd cannot be reached (cannot connect to the system bus: "
                    f"No such file or directory): writing {part} in-process"], proc.stderr
    assert digest(backing, size=2 * MiB, offset=start * 512) == digest(image)
    assert digest(backing, size=start * 512) == head_before
    assert digest(backing, offset=(start + sectors) * 512) == tail_before


# ---------------------------------------------------------------- bmaptool's lines

# Where bmaptool's lines differ run to run: the time and the speed.
TIMING = re.compile(r"copying time: (\d+h )?(\d+m )?\d+\.\ds, copying speed "
                    r"(\d+ bytes|1 byte|\d+\.\d (KiB|MiB|GiB|TiB|EiB))/sec$")
# Debian's bmaptool tunes a block device's queue and says so; we do not.
BDEV_TUNING = re.compile(r"failed to (enable I/O optimization|disable excessive buffering)|"
                         r"You may want to set these I/O optimizations")


def bmaptool_lines(stderr):
    lines = []
    for line in stderr.splitlines():
        if BDEV_TUNING.search(line) or "in-process" in line:
            continue
        lines.append(TIMING.sub("copying time: T, copying speed S/sec", line))
    return lines


def compare_with_debian(bmaptool, args, dests):
    """Runs both bmaptools on the same arguments; returns our lines."""
    ours = run(bmaptool, *args, dests[0], check=0)
    theirs = run(DEBIAN_BMAPTOOL, *args, dests[1], check=0)
    assert ours.stdout == theirs.stdout == ""
    assert all(TIMING.search(line) or "copying time" not in line
               for line in ours.stderr.splitlines()), ours.stderr
    # The destination's name is in the lines: run both on the same name.
    expected = bmaptool_lines(theirs.stderr.replace(str(dests[1]), str(dests[0]))
                              .replace(os.path.basename(dests[1]), os.path.basename(dests[0])))
    assert bmaptool_lines(ours.stderr) == expected, f"ours:\n{ours.stderr}\ntheirs:\n{theirs.stderr}"
    return ours.stderr.splitlines()


@needs_debian_bmaptool
def test_bmaptool_lines_for_a_file_match_debian(image, tmp_path, bmaptool):
    lines = compare_with_debian(bmaptool, ["copy", image],
                                [tmp_path / "ours.img", tmp_path / "theirs.img"])
    assert lines[0] == f"bmaptool: info: discovered bmap file '{image}.bmap'"
    assert lines[-1].startswith("bmaptool: info: copying time: ")
    assert "bmaptool: info: 512 blocks of size 4096 (2.0 MiB), mapped 27 blocks (108.0 KiB or " \
           "5.3%)" in lines


@needs_debian_bmaptool
def test_bmaptool_lines_for_a_compressed_image_match_debian(image, tmp_path, bmaptool):
    packed = tmp_path / "disk.img.gz"
    packed.write_bytes(gzip.compress(image.read_bytes()))
    compare_with_debian(bmaptool, ["copy", packed], [tmp_path / "ours.img", tmp_path / "theirs.img"])
    # No bmap at all: the whole image, and its size is the speed's.
    compare_with_debian(bmaptool, ["copy", "--nobmap", packed],
                        [tmp_path / "ours.img", tmp_path / "theirs.img"])
    compare_with_debian(bmaptool, ["copy", "--bmap", f"{image}.bmap", packed, "--no-verify"],
                        [tmp_path / "ours.img", tmp_path / "theirs.img"])
    # Quiet: nothing at all.
    compare_with_debian(bmaptool, ["-q", "copy", packed],
                        [tmp_path / "ours.img", tmp_path / "theirs.img"])


@needs_debian_bmaptool
@pytest.mark.parametrize("layout", [
    (1, [(0, 1)]), (4097, [(4096, 1)]), (40000, [(0, 40000)]),
    (3 * MiB + 5, [(65536, 10000), (2 * MiB, 4096)]), (40 * MiB, [(0, 600), (39 * MiB, 5)]),
], ids=["one-byte", "block-and-a-byte", "fully-mapped", "holes", "40-MiB"])
def test_bmaptool_sizes_match_debian(tmp_path, bmaptool, layout):
    size, extents = layout
    img = make_image(tmp_path / "sized.img", size, extents)
    run(DEBIAN_BMAPTOOL, "create", "-o", tmp_path / "sized.img.bmap", img, check=0)
    compare_with_debian(bmaptool, ["copy", img], [tmp_path / "ours.img", tmp_path / "theirs.img"])
    compare_with_debian(bmaptool, ["copy", img, "--nobmap"],
                        [tmp_path / "ours.img", tmp_path / "theirs.img"])


@needs_debian_bmaptool
@needs_root
def test_bmaptool_lines_for_a_block_device_match_debian(image, tmp_path, bmaptool, loops):
    ours_backing, theirs_backing = tmp_path / "ours-backing", tmp_path / "theirs-backing"
    for backing in (ours_backing, theirs_backing):
        backing.write_bytes(b"\0" * (4 * MiB))
    ours, theirs = loops(ours_backing), loops(theirs_backing)
    # Without a bus, bmapctl writes in-process as bmaptool does.
    ours_run = run(bmaptool, "copy", image, ours.node, env=DEAD_BUS, check=0)
    theirs_run = run(DEBIAN_BMAPTOOL, "copy", image, theirs.node, check=0)
    assert bmaptool_lines(ours_run.stderr) == \
        bmaptool_lines(theirs_run.stderr.replace(theirs.node, ours.node))
    assert f"bmaptool: info: copying image 'disk.img' to block device '{ours.node}' using bmap " \
           "file 'disk.img.bmap'" in ours_run.stderr.splitlines()
    assert digest(ours_backing, size=2 * MiB) == digest(theirs_backing, size=2 * MiB) \
        == digest(image)


@needs_debian_bmaptool
def test_bmaptool_create_warnings_match_debian(tmp_path, bmaptool):
    img = make_image(tmp_path / "full.img", 40000, [(0, 40000)])
    ours = run(bmaptool, "create", img, check=0)
    theirs = run(DEBIAN_BMAPTOOL, "create", img, check=0)
    assert ours.stdout == theirs.stdout
    assert ours.stderr == theirs.stderr
    assert "WARNING" in ours.stderr
    # Quiet keeps the warnings, as bmaptool's -q does.
    assert run(bmaptool, "-q", "create", img, check=0).stderr == \
        run(DEBIAN_BMAPTOOL, "-q", "create", img, check=0).stderr


def run_on_terminal(*args):
    """Runs with stdout and stderr on one pseudo-terminal, as labgrid runs
    bmaptool; returns the exit status and everything written."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([str(a) for a in args], stdout=terminal, stderr=terminal)
    os.close(terminal)
    out = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(controller)
    return proc.wait(), out.decode()


@needs_debian_bmaptool
def test_bmaptool_progress_on_a_terminal_matches_debian(tmp_path, bmaptool):
    # One mapped block: one batch, so bmaptool shows exactly "100% copied".
    img = make_image(tmp_path / "tiny.img", MiB, [(0, 100)])
    run(DEBIAN_BMAPTOOL, "create", "-o", tmp_path / "tiny.img.bmap", img, check=0)
    ours_status, ours = run_on_terminal(bmaptool, "copy", img, tmp_path / "out.img")
    theirs_status, theirs = run_on_terminal(DEBIAN_BMAPTOOL, "copy", img, tmp_path / "out.img")
    assert ours_status == theirs_status == 0
    assert "\rbmaptool: info: 100% copied\r\n" in ours
    assert bmaptool_lines(ours) == bmaptool_lines(theirs), f"ours:\n{ours!r}\ntheirs:\n{theirs!r}"
    # A bigger copy: more lines, each drawn over the one before, up to 100 %.
    img = make_image(tmp_path / "big.img", 64 * MiB, [(0, 48 * MiB)])
    run(BMAPCTL, "create", "-o", tmp_path / "big.img.bmap", img, check=0)
    status, ours = run_on_terminal(bmaptool, "copy", img, tmp_path / "out.img")
    assert status == 0
    progress = re.findall(r"(?:\x1b\[1A)?\rbmaptool: info: (\d+)% copied\r\n", ours)
    assert progress and progress[-1] == "100", ours
    assert [int(p) for p in progress] == sorted(int(p) for p in progress)
    assert "\x1b[1A" not in ours.split("% copied")[0]  # the first line moves nowhere


def test_bmaptool_human_formats(tmp_path, bmaptool):
    """BmapHelpers.human_size() in the blocks line, checked against bmaptool
    3.9's function itself (copied here: it is small)."""
    def human_size(size):
        if size == 1:
            return "1 byte"
        if size < 512:
            return "%d bytes" % size
        for modifier in ["KiB", "MiB", "GiB", "TiB"]:
            size /= 1024.0
            if size < 1024:
                return "%.1f %s" % (size, modifier)
        return "%.1f %s" % (size, "EiB")

    for size, extents in [(100, [(0, 100)]), (1536 * 1024 - 1, [(0, 4096)]),
                          (5 * 1024 ** 3 + 7, [(0, 1)])]:
        img = make_image(tmp_path / "h.img", size, extents)
        run(BMAPCTL, "create", "-o", tmp_path / "h.img.bmap", img, check=0)
        blocks = (size + 4095) // 4096
        mapped = sum((off + length + 4095) // 4096 - off // 4096 for off, length in extents)
        proc = run(bmaptool, "copy", img, "/dev/null", check=0)
        expected = (f"bmaptool: info: {blocks} blocks of size 4096 ({human_size(size)}), mapped "
                    f"{mapped} blocks ({human_size(mapped * 4096)} or "
                    f"{mapped * 100.0 / blocks:.1f}%)")
        assert expected in proc.stderr.splitlines(), proc.stderr


def test_bmaptool_version(bmaptool):
    out = run(bmaptool, "--version", check=0).stdout
    assert out.split()[:2] == ["bmaptool", "3.9.0"]
    assert run(BMAPCTL, "--version", check=0).stdout.startswith("bmapctl ")
