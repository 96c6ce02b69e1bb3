# SPDX-License-Identifier: GPL-2.0-or-later
"""Loop devices with one partition, for the CLI tests.

The partition comes from an MBR through the kernel's partition scanning
(losetup --partscan) where the kernel parses tables. A kernel built without
partition table parsers still takes partitions through BLKPG, as partx and
addpart add them; that loop device is attached without --partscan, because
with it any writer closing the disk makes the kernel rescan the (to it
unreadable) table and drop the partition. Partitions added through BLKPG
outlive the loop device's backing file: detach() deletes them first, or
the next user of that loop device would find them."""

import os
import struct
import subprocess
import threading

MiB = 1024 * 1024


def write_mbr(path, start_sector, sectors):
    """One Linux partition, as fdisk would write it (no fdisk needed)."""
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", start_sector, sectors)
    with open(path, "r+b") as f:
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")


def _losetup(backing, partscan):
    args = ["losetup", "--find", "--show"] + (["--partscan"] if partscan else []) + [str(backing)]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(f"no loop device: {proc.stderr.strip()}")
    return proc.stdout.strip()


def detach(node):
    """Deletes the loop device's partition 1 (if any) and detaches it."""
    if os.path.exists(f"/sys/class/block/{os.path.basename(node)}p1"):
        subprocess.run(["delpart", node, "1"], capture_output=True)
    subprocess.run(["losetup", "--detach", node], capture_output=True)


def attach_partitioned(backing, start_sector, sectors):
    """Attaches @backing (whose MBR this writes) with partition 1 at
    @start_sector, @sectors long. Returns the loop device's node; its
    partition is node + "p1". Raises OSError when that cannot be done."""
    write_mbr(backing, start_sector, sectors)
    node = _losetup(backing, partscan=True)
    part_sysfs = f"/sys/class/block/{os.path.basename(node)}p1"
    if not os.path.exists(part_sysfs):
        detach(node)
        node = _losetup(backing, partscan=False)
        proc = subprocess.run(["addpart", node, "1", str(start_sector), str(sectors)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            detach(node)
            raise OSError(f"cannot add a partition to {node}: {proc.stderr.strip()}")
    part = node + "p1"
    # The kernel adds the node to devtmpfs from its own thread.
    for _ in range(100):
        if os.path.exists(part):
            return node
        threading.Event().wait(0.05)
    detach(node)
    raise OSError(f"{part} did not appear in /dev")
