# SPDX-License-Identifier: GPL-2.0-or-later
'''bmapctl run as bmaptool (a symlink) with bmapd running: a whole disk, and
a partition of one, go through bmapd and print bmaptool 3.9's info lines.'''

import os
import re
import subprocess
import threading

import pytest

import bmapd_harness as h
from test_cli import assert_image_on


@pytest.fixture
def bmaptool(bus, tmp_path):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    (bindir / 'bmaptool').symlink_to(h.find_bmapctl())
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)

    def run(*args, check=None):
        proc = subprocess.run([str(bindir / 'bmaptool'), *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=120)
        if check is not None:
            assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
        return proc
    return run


@pytest.mark.loop
def test_bmaptool_lines_through_bmapd(daemon, client, polkit, loop, image, bmaptool):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    proc = bmaptool('copy', image['path'], loop.node, check=0)
    assert_image_on(loop, image)
    lines = [line for line in proc.stderr.splitlines() if line.startswith('bmaptool: info: ')]
    assert lines[:4] == [
        f"bmaptool: info: discovered bmap file '{image['bmap']}'",
        'bmaptool: info: block map format version 2.0',
        'bmaptool: info: 2048 blocks of size 4096 (8.0 MiB), mapped 402 blocks (1.6 MiB or '
        '19.6%)',
        f"bmaptool: info: copying image 'disk.img' to block device '{loop.node}' using bmap "
        "file 'disk.img.bmap'",
    ], proc.stderr
    assert lines[-2] == f"bmaptool: info: synchronizing '{loop.node}'"
    assert re.fullmatch(r'bmaptool: info: copying time: (\d+m )?\d+\.\ds, copying speed '
                        r'\d+\.\d (KiB|MiB|GiB)/sec', lines[-1]), lines[-1]
    assert 'in-process' not in proc.stderr


@pytest.mark.loop
def test_partition_is_written_through_bmapd(daemon, client, polkit, loop_factory, image,
                                            bmaptool):
    '''labgrid's write_image(partition=...): the partition of a disk bmapd
    offers is written by bmapd (a job for it, polkit asked about it), within
    the partition.'''
    polkit.set_allowed([h.ACTION_FLASH])
    loop = loop_factory(size=16 * h.MiB, fill=b'\0')
    client.wait_device(loop.node)
    # BLKPG, as partx adds partitions: no partition table parser needed.
    # Such a partition outlives the loop device's detaching: it is deleted
    # here, or the next user of the device would find it.
    proc = subprocess.run(['addpart', loop.node, '1', '2048', str(12 * 2048)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f'cannot add a partition to {loop.node}: {proc.stderr.strip()}')
    part = loop.node + 'p1'
    try:
        for _ in range(100):  # devtmpfs adds the node from a kernel thread
            if os.path.exists(part):
                break
            threading.Event().wait(0.05)
        else:
            pytest.skip(f'{part} did not appear in /dev')
        part_path = client.wait_device(part)
        proc = bmaptool('copy', image['path'], part, f"--bmap={image['bmap']}", check=0)
        assert 'in-process' not in proc.stderr
        h.wait_until(lambda: client.jobs_for(part_path), 10, 'the job on the partition')
        assert [c[1]['device'] for c in polkit.checks()] == [part]
        for offset, length in image['ranges']:
            assert loop.read(h.MiB + offset, length) == h.read_range(image['path'], offset, length)
        assert loop.read(0, h.MiB) == bytes(h.MiB)
        assert loop.read(13 * h.MiB, 3 * h.MiB) == bytes(3 * h.MiB)
    finally:
        subprocess.run(['delpart', loop.node, '1'], capture_output=True)


@pytest.mark.loop
def test_bus_without_bmapd_writes_in_process(bus, loop, image, bmaptool):
    '''The bus answers, but nobody owns bmapd's name and it cannot be
    activated: root may write the device, so it is written in-process.'''
    proc = bmaptool('copy', image['path'], loop.node, check=0)
    said = [line for line in proc.stderr.splitlines() if 'in-process' in line]
    assert len(said) == 1 and said[0].startswith(
        'bmaptool: info: bmapd cannot be reached (bmapd is not running and could not be '
        'activated: '), proc.stderr
    assert said[0].endswith(f'): writing {loop.node} in-process')
    assert_image_on(loop, image)
