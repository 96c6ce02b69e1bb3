# SPDX-License-Identifier: GPL-2.0-or-later
"""bmapctl as a drop-in for bmaptool: the same options on the same images,
and interoperation both ways with Debian's bmaptool on odd-sized images."""

import gzip
import hashlib
import os
import random
import shutil
import subprocess

import pytest

BMAPCTL = os.environ.get("BMAPCTL", "bmapctl")
BMAPTOOL = shutil.which("bmaptool")
needs_bmaptool = pytest.mark.skipif(BMAPTOOL is None, reason="bmaptool (bmap-tools) not installed")

# (name, size, [(offset, length)]) with holes between the pieces of data.
LAYOUTS = [
    ("one-byte", 1, [(0, 1)]),
    ("under-a-block", 4095, [(0, 4095)]),
    ("one-block", 4096, [(0, 4096)]),
    ("block-and-a-byte", 4097, [(4096, 1)]),
    ("holes-start-middle-end", 3 * 1024 * 1024 + 5, [(65536, 10000), (2 * 1024 * 1024, 4096)]),
    ("data-start-and-partial-end", 1024 * 1024 + 1, [(0, 8192), (1024 * 1024 - 100, 101)]),
    ("all-hole", 256 * 1024, []),
    ("fully-mapped", 40000, [(0, 40000)]),
]


def make_image(path, size, extents):
    rng = random.Random(size)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in extents:
            f.seek(off)
            f.write(bytes(rng.randrange(1, 256) for _ in range(length)))
        f.flush()
        os.fsync(f.fileno())


def run(*args, check=True):
    proc = subprocess.run(args, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def allocated(path):
    return os.stat(path).st_blocks * 512


@pytest.fixture(params=LAYOUTS, ids=[name for name, _, _ in LAYOUTS])
def image(request, tmp_path):
    name, size, extents = request.param
    path = tmp_path / f"{name}.img"
    make_image(path, size, extents)
    return path


@needs_bmaptool
def test_create_is_byte_identical_to_bmaptool(image, tmp_path):
    ours, theirs = tmp_path / "ours.bmap", tmp_path / "theirs.bmap"
    run(BMAPCTL, "create", "-o", str(ours), str(image))
    run(BMAPTOOL, "create", "-o", str(theirs), str(image))
    assert ours.read_bytes() == theirs.read_bytes()


@needs_bmaptool
def test_our_bmap_their_copy(image, tmp_path):
    bmap, out = tmp_path / "ours.bmap", tmp_path / "out.img"
    run(BMAPCTL, "create", "-o", str(bmap), str(image))
    run(BMAPTOOL, "copy", "--bmap", str(bmap), str(image), str(out))
    assert digest(out) == digest(image)


@needs_bmaptool
def test_their_bmap_our_copy(image, tmp_path):
    bmap, out = tmp_path / "theirs.bmap", tmp_path / "out.img"
    run(BMAPTOOL, "create", "-o", str(bmap), str(image))
    run(BMAPCTL, "copy", "--bmap", str(bmap), str(image), str(out))
    assert digest(out) == digest(image)
    assert os.path.getsize(out) == os.path.getsize(image)
    # Holes stay holes: we allocate no more than the image does.
    assert allocated(out) <= allocated(image)


@needs_bmaptool
def test_same_output_as_bmaptool_from_gzip(image, tmp_path):
    bmap = tmp_path / "x.bmap"
    packed = tmp_path / "x.img.gz"
    run(BMAPCTL, "create", "-o", str(bmap), str(image))
    packed.write_bytes(gzip.compress(image.read_bytes()))
    ours, theirs = tmp_path / "ours.img", tmp_path / "theirs.img"
    run(BMAPCTL, "copy", "--bmap", str(bmap), str(packed), str(ours))
    run(BMAPTOOL, "copy", "--bmap", str(bmap), str(packed), str(theirs))
    assert digest(ours) == digest(theirs) == digest(image)


def holes(path, block=4096):
    """The file's holes as block ranges, as bmaptool's Filemap gives them
    (test_api_base.py's _compare_holes)."""
    result, offset = [], 0
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        while offset < size:
            try:
                hole = os.lseek(f.fileno(), offset, os.SEEK_HOLE)
            except OSError:
                break
            if hole >= size:
                break
            try:
                data = os.lseek(f.fileno(), hole, os.SEEK_DATA)
            except OSError:
                data = size
            first, last = (hole + block - 1) // block, (data + block - 1) // block - 1
            if last >= first:
                result.append((first, last))
            offset = data
    return result


def test_copy_has_the_images_holes(image, tmp_path):
    """test_api_base.py, pass 1: the copy has its holes where the image has
    them, no more, no less."""
    bmap, out = tmp_path / "x.bmap", tmp_path / "out.img"
    run(BMAPCTL, "create", "-o", str(bmap), str(image))
    run(BMAPCTL, "copy", "--bmap", str(bmap), str(image), str(out))
    assert digest(out) == digest(image)
    assert holes(out) == holes(image)


def test_bmap_to_a_file_and_to_stdout_are_identical(image, tmp_path):
    """test_api_base.py, pass 2: the bmap written to a path and to a file
    object (here: standard output) are the same bytes."""
    bmap = tmp_path / "x.bmap"
    run(BMAPCTL, "create", "-o", str(bmap), str(image))
    proc = subprocess.run([BMAPCTL, "create", str(image)], capture_output=True, check=True)
    assert proc.stdout == bmap.read_bytes()


def test_bmap_found_next_to_image(tmp_path):
    img = tmp_path / "disk.img"
    make_image(img, 100000, [(0, 5000)])
    run(BMAPCTL, "create", "-o", str(tmp_path / "disk.bmap"), str(img))
    packed = tmp_path / "disk.img.gz"
    packed.write_bytes(gzip.compress(img.read_bytes()))
    out = tmp_path / "out.img"
    # disk.img.gz -> disk.img.gz.bmap, disk.img.bmap, disk.bmap
    run(BMAPCTL, "-q", "copy", str(packed), str(out))
    assert digest(out) == digest(img)


def test_no_bmap_is_an_error_and_touches_nothing(tmp_path):
    img = tmp_path / "lonely.img"
    make_image(img, 8192, [(0, 100)])
    out = tmp_path / "out.img"
    out.write_bytes(b"keep me")
    proc = run(BMAPCTL, "copy", str(img), str(out), check=False)
    assert proc.returncode == 1
    assert "lonely.img.bmap" in proc.stderr and "--nobmap" in proc.stderr
    assert out.read_bytes() == b"keep me"


def test_bmaptool_option_set_is_accepted(tmp_path):
    img = tmp_path / "d.img"
    make_image(img, 65536, [(4096, 4096)])
    bmap = tmp_path / "d.bmap"
    run(BMAPCTL, "-q", "create", "--output", str(bmap), str(img))
    run(BMAPCTL, "create", "--no-checksum", "-o", str(tmp_path / "n.bmap"), str(img))
    out = tmp_path / "o.img"
    run(BMAPCTL, "-q", "copy", "--bmap", str(bmap), "--no-verify", "--no-sig-verify", str(img), str(out))
    assert digest(out) == digest(img)
    run(BMAPCTL, "copy", "--nobmap", str(img), str(out))
    assert digest(out) == digest(img)
    # bmaptool create writes the bmap to standard output without -o.
    proc = run(BMAPCTL, "create", str(img))
    assert proc.stdout == bmap.read_text()


def test_usage_errors_exit_2(tmp_path):
    assert run(BMAPCTL, "copy", check=False).returncode == 2
    # bmaptool rejects --bmap with --nobmap after parsing, with status 1
    # (tests/cli/test_cli_compat.py).
    assert run(BMAPCTL, "frobnicate", check=False).returncode == 2
    assert run(BMAPCTL, "create", "--bogus", "x", check=False).returncode == 2


def test_checksum_mismatch_names_the_range(tmp_path):
    img = tmp_path / "c.img"
    make_image(img, 3 * 4096, [(0, 3 * 4096)])
    bmap = tmp_path / "c.bmap"
    run(BMAPCTL, "create", "-o", str(bmap), str(img))
    with open(img, "r+b") as f:
        f.seek(5000)
        f.write(b"X")
    proc = run(BMAPCTL, "copy", "--bmap", str(bmap), str(img), str(tmp_path / "o"), check=False)
    assert proc.returncode == 1
    assert "checksum mismatch in blocks 0-2" in proc.stderr
    assert "partial image" in proc.stderr


# The reference tool's own image and bmaps, beside the project in ../shared.
COMPAT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                       "..", "..", "..", "shared", "compat"))


@pytest.mark.skipif(not os.path.isdir(COMPAT), reason="../shared/compat is not beside the project")
@pytest.mark.parametrize("version", ["1.2", "1.3", "1.4", "2.0"])
def test_reference_corpus(version, tmp_path):
    out = tmp_path / "out.img"
    run(BMAPCTL, "copy", "--bmap", f"{COMPAT}/test.image.bmap.v{version}", f"{COMPAT}/test.image.gz",
        str(out))
    with gzip.open(f"{COMPAT}/test.image.gz", "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest(out)
