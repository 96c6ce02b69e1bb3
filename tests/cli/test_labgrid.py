# SPDX-License-Identifier: GPL-2.0-or-later
"""labgrid's own USBStorageDriver writes loop devices through a `bmaptool`
that is bmapctl: the driver builds and runs its `bmaptool copy IMAGE
DEV[PARTITION] --bmap=BMAP | --nobmap` command itself, and only its exit
status counts. Every case runs twice: on a host where bmapd cannot be
reached (bmapctl writes in-process, as bmaptool does), and with a real
bmapd on a private bus (the harness of tests/integration: dbus-daemon, the
polkitd mock, bmapd), where each write must be bmapd's (a job on the
disk, or on the partition).

labgrid finds USB mass storage through udev; the one thing replaced here is
that match: a resource that takes a loop disk (by its kernel name) instead
of a disk with a USB ancestor. Needs root and loop devices."""

import bz2
import gzip
import hashlib
import importlib.util
import lzma
import os
import random
import shutil
import subprocess
import sys

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


INTEGRATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration")


class Bmapd:
    """bmapd on a private bus with the polkitd mock allowing flash, and a
    client that sees its jobs. Started from tests/integration's harness."""

    def __init__(self, tmp_path):
        missing = [m for m in ("gi", "dbusmock") if importlib.util.find_spec(m) is None]
        if missing or not shutil.which("dbus-daemon"):
            pytest.skip(f"bmapd's harness needs {', '.join(missing) or 'dbus-daemon'}")
        sys.path.insert(0, INTEGRATION)
        import bmapd_harness
        self.h = bmapd_harness
        try:
            bmapd_harness.find_bmapd()
        except RuntimeError as e:
            pytest.skip(str(e))
        logdir = tmp_path / "bmapd"
        logdir.mkdir()
        self.bus = self.client = self.polkit = self.daemon = None
        try:
            self.bus = bmapd_harness.TestBus()
            self.client = bmapd_harness.Client(self.bus.address)
            self.polkit = bmapd_harness.PolkitMock(self.bus, self.client, str(logdir))
            self.polkit.set_allowed([bmapd_harness.ACTION_FLASH])
            self.daemon = bmapd_harness.Daemon(self.bus, self.client, str(logdir))
        except BaseException:
            self.stop()
            raise

    def wait_device(self, node):
        return self.client.wait_device(node)

    def jobs_for(self, node):
        """The jobs bmapd made for @node; waits until what it sent is in."""
        device = self.client.device_path(node)
        self.client.get(self.h.MANAGER_PATH, self.h.MANAGER_IFACE, "Version")
        self.client.iterate(0.1)
        return self.client.jobs_for(device)

    def stop(self):
        if self.daemon is not None:
            rc = self.daemon.stop()
            print("---- bmapd log ----\n" + open(self.daemon.log_path).read())
            assert rc in (0, None, -15), f"bmapd exited with {rc}"
        if self.polkit is not None:
            self.polkit.stop()
        if self.client is not None:
            self.client.close()
        if self.bus is not None:
            self.bus.stop()


@pytest.fixture(params=["without-bmapd", "with-bmapd"])
def host(request, tmp_path, monkeypatch):
    """A bmaptool that is bmapctl, first on PATH; a system bus without
    bmapd (None), or one where bmapd runs (a Bmapd)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bmaptool").symlink_to(BMAPCTL)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    assert shutil.which("bmaptool") == str(bindir / "bmaptool")
    if request.param == "without-bmapd":
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
        yield None
        return
    bmapd = Bmapd(tmp_path)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bmapd.bus.address)
    try:
        yield bmapd
    finally:
        bmapd.stop()


def assert_written_by(host, node, jobs=1):
    """With bmapd, the write was bmapd's: @jobs jobs on @node."""
    if host is not None:
        assert len(host.jobs_for(node)) == jobs, host.daemon.read_log()


class Disk:
    """A loop device over an 8 MiB file of zeros (image holes are not
    written, so they stay zero); with a partition, 0xa5 outside the
    partition's sectors, which a stray write would change."""

    def __init__(self, path, partition):
        self.path = path
        self.partitioned = partition
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
def driver_for(host):
    targets = []

    def make(disk):
        if host is not None:
            # bmapd offers the disk, and its partition, once it has seen them.
            host.wait_device(disk.node)
            if disk.partitioned:
                host.wait_device(disk.node + "p1")
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


def test_raw_image_with_its_bmap(tmp_path, host, disk_factory, driver_for):
    img = make_image(tmp_path)
    disk = disk_factory()
    driver_for(disk).write_image(str(img), mode=Mode.BMAPTOOL)
    assert sha(disk.read(0, img.stat().st_size)) == sha(img.read_bytes())
    assert disk.read(img.stat().st_size, MiB) == bytes(MiB)
    assert_written_by(host, disk.node)


def pack_with(tool):
    """A compressor run as a program, as a build system runs it."""
    def pack(data):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
        return subprocess.run([tool, "-c"], input=data, capture_output=True,
                              check=True).stdout
    return pack


COMPRESSORS = {"gz": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress,
               "zst": pack_with("zstd"), "lz4": pack_with("lz4"), "lzo": pack_with("lzop")}


@pytest.mark.parametrize("compress", sorted(COMPRESSORS))
def test_compressed_image_with_the_raw_images_bmap(tmp_path, host, disk_factory, driver_for,
                                                   compress):
    img = make_image(tmp_path)
    packed = tmp_path / f"rootfs.img.{compress}"
    packed.write_bytes(COMPRESSORS[compress](img.read_bytes()))
    # labgrid strips one extension at a time and passes --bmap=rootfs.img.bmap.
    disk = disk_factory()
    driver_for(disk).write_image(str(packed), mode=Mode.BMAPTOOL)
    assert sha(disk.read(0, img.stat().st_size)) == sha(img.read_bytes())
    assert_written_by(host, disk.node)


def test_image_without_a_bmap_is_written_whole(tmp_path, host, disk_factory, driver_for):
    img = make_image(tmp_path)
    os.unlink(f"{img}.bmap")
    # Every block is written: the holes too (the disk has 0xa5 there).
    disk = disk_factory()
    with open(disk.path, "r+b") as f:
        f.write(b"\xa5" * (4 * MiB))
    driver_for(disk).write_image(str(img), mode=Mode.BMAPTOOL)
    assert sha(disk.read(0, img.stat().st_size)) == sha(img.read_bytes())
    assert_written_by(host, disk.node)


def test_partition(tmp_path, host, disk_factory, driver_for):
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
    # With bmapd, bmapd wrote the partition, not the disk.
    assert_written_by(host, disk.node + "p1")
    assert_written_by(host, disk.node, jobs=0)


def test_corrupt_image_raises(tmp_path, host, disk_factory, driver_for):
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
    assert_written_by(host, disk.node)  # bmapd's job found the mismatch


def test_corrupt_bmap_raises(tmp_path, host, disk_factory, driver_for):
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
    assert_written_by(host, disk.node, jobs=0)  # refused before bmapd was asked
