# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 11: archives and lzop. Every compressor and archive of upstream
bmaptool 3.9's tests/test_api_base.py (and the other tar suffixes bmaptool
knows), on generated sparse files of odd sizes, copied with and without a
bmap, from a file and from a pipe: the output is the image, byte for byte.
Formats that are recognised but not read exit 1 with nothing written."""

import hashlib
import os
import random
import shutil
import subprocess

import pytest

BMAPCTL = os.environ.get("BMAPCTL", "bmapctl")
BMAPTOOL = shutil.which("bmaptool")

# As bmaptool's helpers.generate_test_files(): holes of a block, a block
# and a byte, a block less a byte, one byte, and random sparse files of a
# maximum size, one byte more and one byte less, fully mapped files of the
# same small sizes, and files of random sizes (fixed here, so that a
# failure can be run again).
MAX = 2 * 1024 * 1024 + 4093
LAYOUTS = [
    ("4Khole", 4096, "hole"),
    ("4Khole-plus-1", 4097, "hole"),
    ("4Khole-minus-1", 4095, "hole"),
    ("1byte-hole", 1, "hole"),
    ("sparse", MAX, "sparse"),
    ("sparse-plus-1", MAX + 1, "sparse"),
    ("sparse-minus-1", MAX - 1, "sparse"),
    ("sparse-random", random.Random(11).randint(1, MAX), "sparse"),
    ("4Kmapped", 4096, "mapped"),
    ("4Kmapped-plus-1", 4097, "mapped"),
    ("4Kmapped-minus-1", 4095, "mapped"),
    ("1byte-mapped", 1, "mapped"),
    ("mapped-random", random.Random(12).randint(1, MAX), "mapped"),
]

# (suffix, program, shell command writing the archive of {} to stdout).
# The image itself, then test_api_base.py's list; then the other suffixes
# TransRead.py takes for the same formats, plain tar, and zip stored.
FORMATS = [
    (".raw", "cat", "cat {}"),
    (".bz2", "bzip2", "bzip2 -c -k {}"),
    (".p.bz2", "pbzip2", "pbzip2 -p1 -c -k {}"),
    (".gz", "gzip", "gzip -c {}"),
    (".p.gz", "pigz", "pigz -p 1 -c -k {}"),
    (".xz", "xz", "xz -c -k {}"),
    (".lzo", "lzop", "lzop -c -k {}"),
    (".lz4", "lz4", "lz4 -c -k {}"),
    (".zst", "zstd", "zstd -q -c -k {}"),
    (".tar.bz2", "bzip2", "tar -c -j {}"),
    (".tar.gz", "gzip", "tar -c -z {}"),
    (".tar.xz", "xz", "tar -c -J {}"),
    (".tar.lzo", "lzop", "tar -c --lzo {}"),
    (".tar.lz4", "lz4", "tar -c -Ilz4 {}"),
    (".tar.zst", "zstd", "tar -c -Izstd {}"),
    (".zip", "zip", "zip -q -j - {}"),
    (".tar", "tar", "tar -c {}"),
    (".tgz", "gzip", "tar -c -z {}"),
    (".tbz", "bzip2", "tar -c -j {}"),
    (".tbz2", "bzip2", "tar -c -j {}"),
    (".tb2", "bzip2", "tar -c -j {}"),
    (".txz", "xz", "tar -c -J {}"),
    (".tzo", "lzop", "tar -c --lzo {}"),
    (".tlz4", "lz4", "tar -c -Ilz4 {}"),
    (".tzst", "zstd", "tar -c -Izstd {}"),
    (".stored.zip", "zip", "zip -q -j -0 - {}"),
    (".file.zip", "zip", "zip -q -j x.zip {} >/dev/null && cat x.zip && rm x.zip"),
]


def make_image(path, size, kind):
    """A file of @size bytes: all hole, random data in random places
    (sparse), or random data throughout (mapped)."""
    rng = random.Random(size)
    with open(path, "wb") as f:
        f.truncate(size)
        if kind == "mapped":
            f.write(rng.randbytes(size))
        elif kind == "sparse":
            for _ in range(12):
                off = rng.randrange(0, size)
                length = min(rng.randrange(1, 200000), size - off)
                f.seek(off)
                f.write(rng.randbytes(length))
        f.flush()
        os.fsync(f.fileno())


def run(*args, check=True, stdin=None):
    proc = subprocess.run(args, capture_output=True, stdin=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed with {proc.returncode}:\n{proc.stderr.decode()}")
    return proc


def run_piped(path, *args):
    """bmapctl reading @path through a pipe, not a file."""
    cat = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
    try:
        return run(*args, stdin=cat.stdout)
    finally:
        cat.stdout.close()
        cat.wait()


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def pack(directory, name, suffix, program, command):
    if not shutil.which(program):
        pytest.skip(f"{program} is not installed")
    out = directory / (name + suffix)
    subprocess.run(f"({command.format(name)}) > {out.name}", shell=True, check=True,
                   cwd=directory, stderr=subprocess.DEVNULL)
    return out


@pytest.fixture(scope="module", params=LAYOUTS, ids=[n for n, _, _ in LAYOUTS])
def image(request, tmp_path_factory):
    name, size, kind = request.param
    directory = tmp_path_factory.mktemp(name)
    path = directory / "disk.img"
    make_image(path, size, kind)
    # disk.img.bmap: found for disk.img.tar.gz, disk.img.tgz, ... as bmaptool does.
    run(BMAPCTL, "create", "-o", str(directory / "disk.img.bmap"), str(path))
    return path


@pytest.mark.parametrize("suffix,program,command", FORMATS, ids=[f[0] for f in FORMATS])
def test_copy_with_bmap(image, suffix, program, command, tmp_path):
    packed = pack(image.parent, image.name, suffix, program, command)
    # The bmap is found from the archive's name (disk.img.tar.gz ->
    # disk.img.tar.gz.bmap, disk.img.tar.bmap, disk.img.bmap), and given
    # for a pipe.
    out = tmp_path / "file"
    run(BMAPCTL, "-q", "copy", str(packed), str(out))
    assert digest(out) == digest(image)
    out = tmp_path / "pipe"
    run_piped(packed, BMAPCTL, "-q", "copy", "--bmap", str(image.parent / "disk.img.bmap"), "-",
              str(out))
    assert digest(out) == digest(image)
    # test_api_base.py's "file:" prefix, which makes bmaptool use urllib.
    out = tmp_path / "url"
    run(BMAPCTL, "-q", "copy", "file:" + str(packed), str(out))
    assert digest(out) == digest(image)


# The silent corruption of issue 11: --nobmap wrote the archive's bytes and
# exited 0.
@pytest.mark.parametrize("suffix,program,command", FORMATS, ids=[f[0] for f in FORMATS])
def test_nobmap_writes_exactly_the_image(image, suffix, program, command, tmp_path):
    packed = pack(image.parent, image.name, suffix, program, command)
    out = tmp_path / "file"
    run(BMAPCTL, "-q", "copy", "--nobmap", str(packed), str(out))
    assert os.path.getsize(out) == os.path.getsize(image)
    assert digest(out) == digest(image)
    out = tmp_path / "pipe"
    run_piped(packed, BMAPCTL, "-q", "copy", "--nobmap", "-", str(out))
    assert os.path.getsize(out) == os.path.getsize(image)
    assert digest(out) == digest(image)
    out = tmp_path / "url"
    run(BMAPCTL, "-q", "copy", "--nobmap", "file:" + str(packed), str(out))
    assert os.path.getsize(out) == os.path.getsize(image)
    assert digest(out) == digest(image)


BMAPTOOL_FORMATS = [f for f in FORMATS
                    if f[0] in (".tar.gz", ".tgz", ".tar.xz", ".zip", ".lzo", ".tar.lzo", ".tar.zst")]


@pytest.mark.skipif(BMAPTOOL is None, reason="bmaptool (bmap-tools) not installed")
@pytest.mark.parametrize("suffix,program,command", BMAPTOOL_FORMATS,
                         ids=[f[0] for f in BMAPTOOL_FORMATS])
def test_same_output_as_bmaptool(suffix, program, command, tmp_path):
    image = tmp_path / "disk.img"
    make_image(image, MAX, "sparse")
    run(BMAPCTL, "create", "-o", str(tmp_path / "disk.img.bmap"), str(image))
    packed = pack(tmp_path, image.name, suffix, program, command)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    run(BMAPCTL, "-q", "copy", str(packed), str(ours))
    proc = run(BMAPTOOL, "copy", str(packed), str(theirs), check=False)
    if proc.returncode != 0:
        pytest.skip(f"bmaptool cannot copy {suffix}: {proc.stderr.decode().strip()[-200:]}")
    assert digest(ours) == digest(theirs) == digest(image)


# Recognised but not read: refused by name, exit 1, nothing written.
SEVENZIP = b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(range(64))
RAR = b"Rar!\x1a\x07\x01\x00" + bytes(range(64))


def refused_archives(directory):
    image = directory / "disk.img"
    make_image(image, 100003, "sparse")
    run(BMAPCTL, "create", "-o", str(directory / "disk.img.bmap"), str(image))
    (directory / "a.7z").write_bytes(SEVENZIP)
    (directory / "a.rar").write_bytes(RAR)
    cases = [("a.7z", "7z archive"), ("a.rar", "rar archive")]
    if shutil.which("zip"):
        subprocess.run("zip -q -j -P secret enc.zip disk.img && zip -q -j -Z bzip2 bz2.zip disk.img",
                       shell=True, check=True, cwd=directory)
        cases += [("enc.zip", "'disk.img' is encrypted"), ("bz2.zip", "is compressed with bzip")]
    if shutil.which("gzip"):
        subprocess.run("gzip -k a.7z", shell=True, check=True, cwd=directory)
        cases.append(("a.7z.gz", "7z archive"))
    return cases


@pytest.mark.parametrize("via", ["file", "pipe"])
def test_unsupported_exits_1_writing_nothing(via, tmp_path):
    for name, says in refused_archives(tmp_path):
        packed = tmp_path / name
        absent, present = tmp_path / "absent.img", tmp_path / "present.img"
        present.write_bytes(b"keep me")
        for dest in (absent, present):
            for nobmap in (["--nobmap"], ["--bmap", str(tmp_path / "disk.img.bmap")]):
                args = [BMAPCTL, "copy", *nobmap]
                if via == "file":
                    proc = run(*args, str(packed), str(dest), check=False)
                else:
                    with open(packed, "rb") as f:
                        cat = subprocess.Popen(["cat"], stdin=f, stdout=subprocess.PIPE)
                        proc = run(*args, "-", str(dest), check=False, stdin=cat.stdout)
                        cat.stdout.close()
                        cat.wait()
                err = proc.stderr.decode()
                assert proc.returncode == 1, (name, err)
                assert says in err, (name, err)
                assert not absent.exists(), name
                assert present.read_bytes() == b"keep me", name


def test_bmap_of_another_image_is_refused_before_writing(tmp_path):
    """A tar member's size is in its header: a bmap for another size is
    refused before the target is touched, not after a partial write."""
    image, other = tmp_path / "disk.img", tmp_path / "other.img"
    make_image(image, MAX, "sparse")
    make_image(other, MAX + 4096, "sparse")
    run(BMAPCTL, "create", "-o", str(tmp_path / "other.bmap"), str(other))
    packed = pack(tmp_path, image.name, ".tar.gz", "gzip", "tar -c -z {}")
    out = tmp_path / "out.img"
    proc = run(BMAPCTL, "copy", "--bmap", str(tmp_path / "other.bmap"), str(packed), str(out),
               check=False)
    assert proc.returncode == 1
    assert "the bmap does not belong to this image" in proc.stderr.decode()
    assert not out.exists()
