# SPDX-License-Identifier: GPL-2.0-or-later
"""labgrid's own USBStorageDriver writes loop devices through a `bmaptool`
that is bmapctl, on a host where bmapd cannot be reached: the driver builds
and runs its `bmaptool copy IMAGE DEV[PARTITION] --bmap=BMAP | --nobmap`
command itself, and only its exit status counts.

labgrid finds USB mass storage through udev; the one thing replaced here is
that match: a resource that takes a loop disk (by its kernel name) instead
of a disk with a USB ancestor. Needs root and loop devices."""

import gzip
import hashlib
import lzma
import os
import random
import shutil
import subprocess

import pytest

labgrid = pytest.importorskip("labgrid", reason="python3-labgrid is not installed")
attr = pytest.importorskip("attr")

from labgrid import Target  # noqa: E402
from labgrid.driver import USBStorageDriver  # noqa: E402
from labgrid.driver.usbstoragedriver import Mode  # noqa: E402
from labgrid.resource.udev import USBMassStorage, USBResource  # noqa: E402
from loop_partitions import attach_partitioned, detach  # noqa: E402

BMAPCTL = os.path.abspath(os.environ.get("BMAPCTL", "bmapctl"))
MiB = 1024 * 1024
PART_START, PART_SECTORS = 2048, 6 * 2048  # 1 MiB in, 6 MiB long

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices)")


@attr.s(eq=False)
class LoopMassStorage(USBMassStorage):
    """USBMassStorage matching a whole loop disk: the udev match without the
    '@SUBSYSTEM': 'usb' ancestor that USBMassStorage adds."""

    def __attrs_post_init__(self):
        self.match["SUBSYSTEM"] = "block"
        self.match["DEVTYPE"] = "disk"
        USBResource.__attrs_post_init__(self)


@pytest.fixture
def bmaptool_is_bmapctl(tmp_path, monkeypatch):
    """A bmaptool that is bmapctl, first on PATH; no system bus."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bmaptool").symlink_to(BMAPCTL)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    assert shutil.which("bmaptool") == str(bindir / "bmaptool")


class Disk:
    """A loop device over an 8 MiB file of zeros (image holes are not
    written, so they stay zero); with a partition, 0xa5 outside the
    partition's sectors, which a stray write would change."""

    def __init__(self, path, partition):
        self.path = path
        size = 8 * MiB
        with open(path, "wb") as f:
            outside = b"\xa5" if partition else b"\0"
            f.write(outside * (PART_START * 512))
            f.write(b"\0" * (PART_SECTORS * 512))
            f.write(outside * (size - (PART_START + PART_SECTORS) * 512))
        try:
            if partition:
                self.node = attach_partitioned(path, PART_START, PART_SECTORS)
            else:
                self.node = subprocess.run(["losetup", "--find", "--show", str(path)], check=True,
                                           capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as e:
            pytest.skip(f"no loop device: {e}")
        self.name = os.path.basename(self.node)

    def read(self, offset, length):
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def detach(self):
        detach(self.node)


@pytest.fixture
def disk_factory(tmp_path):
    disks = []

    def make(partition=False):
        disk = Disk(tmp_path / f"disk{len(disks)}.img", partition)
        disks.append(disk)
        return disk
    yield make
    for disk in disks:
        disk.detach()


@pytest.fixture
def driver_for(bmaptool_is_bmapctl):
    targets = []

    def make(disk):
        target = Target(f"loop-{disk.name}")
        LoopMassStorage(target, name=None, match={"sys_name": disk.name})
        driver = USBStorageDriver(target, name=None)
        target.activate(driver)
        assert driver.storage.path == disk.node
        targets.append(target)
        return driver
    yield make
    for target in targets:
        target.cleanup()


def make_image(directory, name="rootfs.img", size=3 * MiB, seed=7):
    """A sparse image (data at the start, in the middle and at the end)
    and its bmap beside it, as a build system leaves them."""
    rng = random.Random(seed)
    img = directory / name
    with open(img, "wb") as f:
        f.truncate(size)
        for off, length in [(0, 10000), (size // 2, 70000), (size - 4096, 4096)]:
            f.seek(off)
            f.write(rng.randbytes(length))
    subprocess.run([BMAPCTL, "create", "-o", f"{img}.bmap", str(img)], check=True)
    return img


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_raw_image_with_its_bmap(tmp_path, disk_factory, driver_for):
    img = make_image(tmp_path)
    disk = disk_factory()
    driver_for(disk).write_image(str(img), mode=Mode.BMAPTOOL)
    assert sha(disk.read(0, img.stat().st_size)) == sha(img.read_bytes())
    assert disk.read(img.stat().st_size, MiB) == bytes(MiB)


@pytest.mark.parametrize("compress", ["gz", "xz"])
def test_compressed_image_with_the_raw_images_bmap(tmp_path, disk_factory, driver_for, compress):
    img = make_image(tmp_path)
    packed = tmp_path / f"rootfs.img.{compress}"
    packer = gzip.compress if compress == "gz" else lzma.compress
    packed.write_bytes(packer(img.read_bytes()))
    # labgrid strips one extension at a time and passes --bmap=rootfs.img.bmap.
    disk = disk_factory()
    driver_for(disk).write_image(str(packed), mode=Mode.BMAPTOOL)
    assert sha(disk.read(0, img.stat().st_size)) == sha(img.read_bytes())


def test_image_without_a_bmap_is_written_whole(tmp_path, disk_factory, driver_for):
    img = make_image(tmp_path)
    os.unlink(f"{img}.bmap")
    # Every block is written: the holes too (the disk has 0xa5 there).
    disk = disk_factory()
    with open(disk.path, "r+b") as f:
        f.write(b"\xa5" * (4 * MiB))
    driver_for(disk).write_image(str(img), mode=Mode.BMAPTOOL)
    assert sha(disk.read(0, img.stat().st_size)) == sha(img.read_bytes())


def test_partition(tmp_path, disk_factory, driver_for):
    img = make_image(tmp_path, size=2 * MiB)
    disk = disk_factory(partition=True)
    before = disk.read(0, 8 * MiB)
    # labgrid appends the partition to the disk's node: /dev/loopN + "p1".
    driver_for(disk).write_image(str(img), mode=Mode.BMAPTOOL, partition="p1")
    start = PART_START * 512
    assert sha(disk.read(start, 2 * MiB)) == sha(img.read_bytes())
    after = disk.read(0, 8 * MiB)
    assert after[:start] == before[:start]
    assert after[start + PART_SECTORS * 512:] == before[start + PART_SECTORS * 512:]


def test_corrupt_image_raises(tmp_path, disk_factory, driver_for):
    img = make_image(tmp_path)
    with open(img, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xff]))
    disk = disk_factory()
    with pytest.raises(subprocess.CalledProcessError) as failure:
        driver_for(disk).write_image(str(img), mode=Mode.BMAPTOOL)
    assert failure.value.returncode == 1
    assert b"checksum mismatch" in failure.value.output


def test_corrupt_bmap_raises(tmp_path, disk_factory, driver_for):
    img = make_image(tmp_path)
    bmap = tmp_path / "rootfs.img.bmap"
    bmap.write_text(bmap.read_text().replace("<BlockSize>", "<BlockSize>1", 1))
    disk = disk_factory()
    before = disk.read(0, 8 * MiB)
    with pytest.raises(subprocess.CalledProcessError) as failure:
        driver_for(disk).write_image(str(img), mode=Mode.BMAPTOOL)
    assert failure.value.returncode == 1
    assert b"<BlockSize> value" in failure.value.output
    assert disk.read(0, 8 * MiB) == before
