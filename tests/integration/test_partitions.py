# SPDX-License-Identifier: GPL-2.0-or-later
'''Partitions as flash targets through bmapd (issue 11): a partition of a
disk bmapd offers is a Device of its own, checked like its disk (size,
busy, System, polkit), written within its bounds only, and it comes and
goes with its disk. Real loop devices with a real partition (the kernel's
partition scan of an MBR, or BLKPG as partx adds them: see
tests/cli/loop_partitions.py). Needs root.'''

import json
import os
import shutil
import subprocess
import sys

import pytest

import bmapd_harness as h
from conftest import skip_without_loop_devices

sys.path.insert(0, os.path.join(h.HERE, '..', 'cli'))
from loop_partitions import attach_partitioned, detach  # noqa: E402

pytestmark = pytest.mark.loop

OUTSIDE = b'\xa5'  # what a stray write outside the partition would change
START = 2048  # sectors: the partition starts 1 MiB into the disk


class PartitionedLoop:
    '''A loop device over a file of @size bytes of 0xa5, with partition 1
    (zeros, as an image's holes are not written) of @sectors from START.'''

    def __init__(self, tmpdir, size, sectors, inside=b'\0'):
        self.backing = os.path.join(tmpdir, f'partitioned-{sectors}.img')
        with open(self.backing, 'wb') as f:
            f.write(OUTSIDE * (START * 512))
            f.write(inside * (sectors * 512))
            f.write(OUTSIDE * (size - (START + sectors) * 512))
        self.size = size
        self.start = START * 512
        self.end = (START + sectors) * 512
        self.node = attach_partitioned(self.backing, START, sectors)
        self.name = os.path.basename(self.node)
        self.part = self.node + 'p1'
        self.part_name = self.name + 'p1'

    def read(self, offset, length):
        h.drop_caches(self.node)
        return h.read_range(self.node, offset, length)

    def outside(self):
        '''The disk's bytes before and after the partition.'''
        return self.read(0, self.start), self.read(self.end, self.size - self.end)

    def uevent(self, name, action):
        with open(f'/sys/class/block/{name}/uevent', 'w') as f:
            f.write(action)

    def detach(self):
        detach(self.node)


@pytest.fixture
def partitioned(tmp_path):
    skip_without_loop_devices()
    made = []

    def make(size=24 * h.MiB, sectors=10 * 2048, inside=b'\0'):
        try:
            loop = PartitionedLoop(str(tmp_path), size, sectors, inside)
        except OSError as e:
            pytest.skip(f'no partitioned loop device: {e}')
        made.append(loop)
        return loop
    yield make
    for loop in made:
        loop.detach()


def assert_image_in_partition(loop, image, outside_before):
    for offset, length in image['ranges']:
        assert loop.read(loop.start + offset, length) == h.read_range(image['path'], offset,
                                                                      length)
    assert loop.outside() == outside_before


def test_partition_is_a_device_of_its_disk(daemon, client, partitioned):
    loop = partitioned()
    disk = client.wait_device(loop.node)
    part = client.wait_device(loop.part)
    props = client.get_all(part, h.DEVICE_IFACE)
    disk_props = client.get_all(disk, h.DEVICE_IFACE)
    assert props['Name'] == loop.part_name
    assert props['PartitionOf'] == disk and disk_props['PartitionOf'] == '/'
    assert props['PartitionNumber'] == 1 and disk_props['PartitionNumber'] == 0
    assert props['PartitionOffset'] == loop.start and disk_props['PartitionOffset'] == 0
    assert props['Size'] == loop.end - loop.start and disk_props['Size'] == loop.size
    for same in ('Bus', 'Removable', 'System', 'DiskSeq', 'MediaPresent', 'IconName'):
        assert props[same] == disk_props[same], same
    assert props['DisplayName'] == 'Partition 1 (10 MB) of Loop Device 25 MB'
    assert [c['name'] for c in props['Contents']] == [loop.part_name]
    assert not props['Busy'] and props['Job'] == '/'


def test_flash_onto_a_partition(daemon, client, polkit, partitioned, image, fds):
    '''The bytes land inside the partition; the rest of the disk is as it
    was. polkit hears of the partition and of its disk.'''
    polkit.set_allowed([h.ACTION_FLASH])
    loop = partitioned()
    disk = client.wait_device(loop.node)
    part = client.wait_device(loop.part)
    before = loop.outside()
    job = client.flash(part, fds(image['path']), bmap_fd=fds(image['bmap']),
                       diskseq=client.get(disk, h.DEVICE_IFACE, 'DiskSeq'))
    assert client.get(job, h.JOB_IFACE, 'Device') == part
    state, _, message = client.wait_finished(job)
    assert state == 'done', message
    assert_image_in_partition(loop, image, before)
    action, details = polkit.checks()[-1][:2]
    assert action == h.ACTION_FLASH
    assert details['device'] == loop.part and details['disk'] == loop.node


def test_partition_too_small_is_refused_before_anything(daemon, client, polkit, partitioned,
                                                        image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    loop = partitioned(sectors=4 * 2048)  # 4 MiB; the image is 8 MiB
    client.wait_device(loop.node)
    part = client.wait_device(loop.part)
    before = loop.read(0, loop.size)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(part, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert e.value.name == h.ERROR + 'DeviceTooSmall'
    assert loop.part in e.value.message and '4194304 bytes' in e.value.message
    assert polkit.checks() == []  # refused before polkit was asked
    assert loop.read(0, loop.size) == before


def test_relocate_gpt_is_refused_on_a_partition(daemon, client, polkit, partitioned, image,
                                                fds):
    polkit.set_allowed([h.ACTION_FLASH])
    loop = partitioned()
    part = client.wait_device(loop.part)
    before = loop.read(0, loop.size)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(part, fds(image['path']), bmap_fd=fds(image['bmap']), relocate_gpt=True)
    assert e.value.name == h.ERROR + 'InvalidArgument'
    assert 'relocate-gpt' in e.value.message and loop.node in e.value.message
    assert loop.read(0, loop.size) == before


def test_zero_unmapped_and_discard_stay_in_the_partition(daemon, client, polkit, partitioned,
                                                        image, fds):
    '''zero-unmapped zeros the image's holes within the partition; discard
    (which a loop device over a file does by punching holes) touches
    nothing outside it either.'''
    polkit.set_allowed([h.ACTION_FLASH])
    loop = partitioned(inside=b'\x5a')
    part = client.wait_device(loop.part)
    before = loop.outside()
    job = client.flash(part, fds(image['path']), bmap_fd=fds(image['bmap']), zero_unmapped=True,
                       discard=True)
    state, _, message = client.wait_finished(job)
    assert state == 'done', message
    assert_image_in_partition(loop, image, before)
    # A hole of the image, inside the partition: zeros now.
    hole = image['ranges'][0][0] + image['ranges'][0][1]
    assert loop.read(loop.start + hole, 64 * 1024) == bytes(64 * 1024)
    # Past the image's end the partition keeps what it had.
    assert loop.read(loop.start + image['size'], h.MiB) == b'\x5a' * h.MiB


@pytest.fixture
def mkfs():
    if not shutil.which('mkfs.ext4'):
        pytest.skip('mkfs.ext4 is not installed')


def test_mounted_partition_is_busy_then_unmounted(daemon, client, polkit, partitioned, image,
                                                  fds, tmp_path, mkfs):
    polkit.set_allowed([h.ACTION_FLASH])
    loop = partitioned()
    disk = client.wait_device(loop.node)
    part = client.wait_device(loop.part)
    subprocess.run(['mkfs.ext4', '-q', '-F', loop.part], check=True)
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    subprocess.run(['mount', loop.part, str(mnt)], check=True)
    try:
        h.wait_until(lambda: client.get(part, h.DEVICE_IFACE, 'Busy'), 20, 'Busy')
        assert client.get(disk, h.DEVICE_IFACE, 'Busy')
        mounts = client.get(part, h.DEVICE_IFACE, 'Contents')[0]['mount-points']
        assert mounts == [str(mnt)]
        with pytest.raises(h.DBusCallError) as e:
            client.flash(part, fds(image['path']), bmap_fd=fds(image['bmap']))
        assert e.value.name == h.ERROR + 'DeviceBusy'
        assert loop.part in e.value.message and str(mnt) in e.value.message

        before = loop.outside()
        job = client.flash(part, fds(image['path']), bmap_fd=fds(image['bmap']), unmount=True)
        state, _, message = client.wait_finished(job)
        assert state == 'done', message
        assert not os.path.ismount(str(mnt))
        assert_image_in_partition(loop, image, before)
        h.wait_until(lambda: not client.get(part, h.DEVICE_IFACE, 'Busy'), 20, 'not Busy')
    finally:
        subprocess.run(['umount', str(mnt)], check=False, stderr=subprocess.DEVNULL)


def test_unmount_is_the_partitions_own(daemon, client, polkit, loop_factory, image, fds,
                                       tmp_path, mkfs):
    '''Partition 2 of a disk whose partition 1 is mounted is not busy, and
    flashing it with "unmount" leaves partition 1 mounted.'''
    polkit.set_allowed([h.ACTION_FLASH])
    loop = loop_factory(size=24 * h.MiB, fill=b'\0')
    client.wait_device(loop.node)
    added = []
    try:
        for number, start in ((1, 2048), (2, 12 * 2048)):
            proc = subprocess.run(['addpart', loop.node, str(number), str(start), str(10 * 2048)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.skip(f'cannot add a partition to {loop.node}: {proc.stderr.strip()}')
            added.append(number)
        p1 = client.wait_device(loop.node + 'p1')
        p2 = client.wait_device(loop.node + 'p2')
        subprocess.run(['mkfs.ext4', '-q', '-F', loop.node + 'p1'], check=True)
        mnt = tmp_path / 'mnt'
        mnt.mkdir()
        subprocess.run(['mount', loop.node + 'p1', str(mnt)], check=True)
        try:
            h.wait_until(lambda: client.get(p1, h.DEVICE_IFACE, 'Busy'), 20, 'p1 Busy')
            assert not client.get(p2, h.DEVICE_IFACE, 'Busy')
            job = client.flash(p2, fds(image['path']), bmap_fd=fds(image['bmap']), unmount=True)
            state, _, message = client.wait_finished(job)
            assert state == 'done', message
            assert os.path.ismount(str(mnt))
            for offset, length in image['ranges']:
                assert loop.read(12 * h.MiB + offset, length) == h.read_range(image['path'],
                                                                              offset, length)
        finally:
            subprocess.run(['umount', str(mnt)], check=False, stderr=subprocess.DEVNULL)
    finally:
        for number in added:
            subprocess.run(['delpart', loop.node, str(number)], capture_output=True)


def slow_flash(client, device, size=4 * h.MiB):
    pipe = h.SlowPipe(h.pattern('slow-part', size), chunk=64 * 1024, delay=0.05).start()
    job = client.flash(device, pipe.read_fd, nobmap=True)
    pipe.close_read()
    h.wait_until(lambda: client.get(job, h.JOB_IFACE, 'BytesDone') > 0, 30, 'bytes written')
    return job, pipe


def test_disk_and_its_partitions_exclude_each_other(daemon, client, polkit, partitioned, fds,
                                                    tmp_path):
    polkit.set_allowed([h.ACTION_FLASH])
    loop = partitioned()
    disk = client.wait_device(loop.node)
    part = client.wait_device(loop.part)
    img = tmp_path / 'small.img'
    img.write_bytes(h.pattern('small', 64 * 1024))
    job, pipe = slow_flash(client, part)
    try:
        with pytest.raises(h.DBusCallError) as e:
            client.flash(disk, fds(str(img)), nobmap=True)
        assert e.value.name == h.ERROR + 'DeviceBusy'
        assert job in e.value.message and loop.part in e.value.message
        assert client.get(disk, h.DEVICE_IFACE, 'Job') == '/'
        assert client.get(part, h.DEVICE_IFACE, 'Job') == job
        client.cancel(job)
    finally:
        pipe.stop()
    assert client.wait_finished(job)[0] == 'canceled'


@pytest.mark.parametrize('what', ['partition', 'disk'])
def test_partition_disappearing_mid_flash(daemon, client, polkit, partitioned, what):
    '''The kernel says the partition (or its whole disk, a stick pulled)
    went away while bmapd writes it: the job fails with DeviceGone, and
    with the disk its partitions go from the bus.'''
    polkit.set_allowed([h.ACTION_FLASH])
    loop = partitioned()
    disk = client.wait_device(loop.node)
    part = client.wait_device(loop.part)
    job, pipe = slow_flash(client, part)
    try:
        seen = len(client.signals)
        loop.uevent(loop.part_name if what == 'partition' else loop.name, 'remove')
        state, error_name, message = client.wait_finished(job)
        if what == 'disk':
            client.wait_device_gone(loop.part)
            client.wait_device_gone(loop.node)
            removed = [args[0] for p, iface, m, args in client.signals[seen:]
                       if m == 'InterfacesRemoved' and args[0] in (part, disk)]
            assert removed == [part, disk]  # the partition before its disk
    finally:
        pipe.stop()
    assert state == 'failed'
    assert error_name == h.ERROR + 'DeviceGone'
    assert loop.part in message and 'removed' in message
    if what == 'disk':
        loop.uevent(loop.name, 'add')
    # Both come back (the partition after its disk) and can be written.
    client.wait_device(loop.node)
    part = client.wait_device(loop.part)
    assert client.flash_pipe(part, h.pattern('after', h.MiB))[0] == 'done'
    assert loop.read(loop.start, h.MiB) == h.pattern('after', h.MiB)


def test_partitions_follow_hotplug(daemon, client, loop_factory):
    '''A partition added to a disk (BLKPG, as partx does: the kernel's
    uevent) appears, after its disk; deleted, it goes.'''
    loop = loop_factory(size=16 * h.MiB)
    disk = client.wait_device(loop.node)
    proc = subprocess.run(['addpart', loop.node, '1', '2048', '8192'], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f'cannot add a partition to {loop.node}: {proc.stderr.strip()}')
    try:
        part = client.wait_device(loop.node + 'p1')
        assert client.get(part, h.DEVICE_IFACE, 'PartitionOf') == disk
        assert client.get(part, h.DEVICE_IFACE, 'Size') == 8192 * 512
    finally:
        subprocess.run(['delpart', loop.node, '1'], capture_output=True)
    client.wait_device_gone(loop.node + 'p1')
    assert client.device_path(loop.node) == disk


def bmapctl(bus, *args, check=0):
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    proc = subprocess.run([h.find_bmapctl(), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def test_bmapctl_lists_partitions_under_their_disk(daemon, bus, client, partitioned):
    loop = partitioned()
    disk = client.wait_device(loop.node)
    part = client.wait_device(loop.part)
    lines = bmapctl(bus, 'devices').stdout.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.startswith(loop.node + ' ')]
    assert lines[at + 1].startswith('  ' + loop.part + ' '), lines
    listed = json.loads(bmapctl(bus, '--json', 'devices').stdout)
    by_node = {d['node']: d for d in listed}
    assert by_node[loop.part]['partition_of'] == disk
    assert by_node[loop.part]['path'] == part
    assert by_node[loop.node]['partition_of'] == '/'


def test_bmapctl_copy_onto_a_partition_goes_through_bmapd(daemon, bus, client, polkit,
                                                          partitioned, image):
    polkit.set_allowed([h.ACTION_FLASH])
    loop = partitioned()
    part = client.wait_device(loop.part)
    before = loop.outside()
    proc = bmapctl(bus, 'copy', image['path'], loop.part)
    assert 'in-process' not in proc.stderr
    assert client.jobs_for(part) or h.wait_until(lambda: client.jobs_for(part), 10, 'the job')
    assert polkit.checks()[-1][1]['device'] == loop.part
    assert_image_in_partition(loop, image, before)
    # --relocate-gpt: refused as bmapd refuses it, in-process too, and
    # nothing is written.
    before = loop.read(0, loop.size)
    for local in ([], ['--local']):
        proc = bmapctl(bus, *local, 'copy', '--relocate-gpt', image['path'], loop.part, check=1)
        assert f'{loop.part}: --relocate-gpt cannot be used on a partition' in proc.stderr
    assert loop.read(0, loop.size) == before
