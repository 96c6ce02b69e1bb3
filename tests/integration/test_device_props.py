# SPDX-License-Identifier: GPL-2.0-or-later
'''Devices that explain themselves: DisplayName, IconName and Contents of
real loop devices, partitioned with sfdisk and formatted with mkfs.vfat and
mkfs.ext4, so that a GUI can say what flashing will erase.'''

import contextlib
import os
import shutil
import subprocess
import tempfile

import pytest

import bmapd_harness as h
from conftest import skip_without_loop_devices

pytestmark = pytest.mark.loop

BOOT_SIZE = 8 * h.MiB
DISK_SIZE = 48 * h.MiB


def need_tools(*tools):
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip('not installed: ' + ', '.join(missing) + ' (tools/setup-deps installs them)')


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class PartitionedLoop:
    '''A loop device with partition scanning over a zeroed file holding a
    DOS partition table: BOOT (vfat, 8 MiB from 1 MiB) and rootfs (ext4,
    the rest).'''

    def __init__(self, tmpdir):
        fd, self.backing = tempfile.mkstemp(prefix='bmapd-parts-', suffix='.img', dir=tmpdir)
        os.ftruncate(fd, DISK_SIZE)
        os.close(fd)
        subprocess.run(['sfdisk', '--quiet', self.backing], check=True,
                       input=f'label: dos\nstart=2048, size={BOOT_SIZE // 512}, type=c\n'
                             'type=83\n', text=True, stdout=subprocess.DEVNULL)
        self.node = subprocess.run(['losetup', '--find', '--show', '--partscan', self.backing],
                                   check=True, capture_output=True, text=True).stdout.strip()
        self.name = os.path.basename(self.node)
        self.mounts = []

    def part(self, n):
        return f'{self.node}p{n}'

    def format(self):
        # Some kernels leave the scan at attach undone: add the partitions
        # the table describes (BLKPG), as partx does.
        if not os.path.exists(f'/sys/block/{self.name}/{self.name}p2'):
            subprocess.run(['partx', '--add', self.node], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        h.wait_until(lambda: os.path.exists(self.part(2)), 20, f'{self.part(2)} to appear')
        run('mkfs.vfat', '-n', 'BOOT', self.part(1))
        run('mkfs.ext4', '-q', '-F', '-L', 'rootfs', self.part(2))
        # What udevd's inotify watch would do after mkfs: a change event.
        with open(f'/sys/block/{self.name}/uevent', 'w') as f:
            f.write('change')

    def mount(self, n, where):
        run('mount', self.part(n), where)
        self.mounts.append(where)

    def umount(self, where):
        run('umount', where)
        self.mounts.remove(where)

    def close(self):
        for where in reversed(self.mounts):
            subprocess.run(['umount', where], check=False, stderr=subprocess.DEVNULL)
        subprocess.run(['losetup', '-d', self.node], check=False, stderr=subprocess.DEVNULL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.backing)


@pytest.fixture
def partitioned(tmp_path):
    skip_without_loop_devices()
    need_tools('sfdisk', 'partx', 'mkfs.vfat', 'mkfs.ext4')
    disk = PartitionedLoop(str(tmp_path))
    yield disk
    disk.close()


def contents_of(client, node):
    dev = client.device_path(node)
    return client.get(dev, h.DEVICE_IFACE, 'Contents') if dev else None


def wait_contents(client, node, predicate, what):
    return h.wait_until(lambda: (lambda c: c if c is not None and predicate(c) else None)(
        contents_of(client, node)), 20, what)


def test_partitions_and_filesystems(daemon, client, partitioned, tmp_path):
    client.wait_device(partitioned.node)
    partitioned.format()
    contents = wait_contents(client, partitioned.node,
                             lambda c: [p['label'] for p in c] == ['BOOT', 'rootfs'],
                             'BOOT and rootfs in Contents')
    boot, rootfs = contents
    assert boot['name'] == partitioned.name + 'p1' and boot['node'] == partitioned.part(1)
    assert boot['number'] == 1 and boot['offset'] == h.MiB and boot['size'] == BOOT_SIZE
    assert (boot['type'], boot['usage']) == ('vfat', 'filesystem')
    assert boot['mount-points'] == []
    assert rootfs['number'] == 2 and rootfs['offset'] == h.MiB + BOOT_SIZE
    assert rootfs['size'] == DISK_SIZE - h.MiB - BOOT_SIZE
    assert (rootfs['type'], rootfs['usage']) == ('ext4', 'filesystem')
    assert len(rootfs['uuid']) == 36 and rootfs['version'] == '1.0'
    # The keys the contract lists, each with its type.
    types = {'name': str, 'node': str, 'number': int, 'offset': int, 'size': int,
             'label': str, 'type': str, 'usage': str, 'version': str, 'uuid': str,
             'partition-name': str, 'mount-points': list}
    for entry in contents:
        assert {k: type(v) for k, v in entry.items()} == types


def test_mount_points_follow_mounts(daemon, client, partitioned, tmp_path):
    client.wait_device(partitioned.node)
    partitioned.format()
    wait_contents(client, partitioned.node, lambda c: len(c) == 2 and c[1]['type'] == 'ext4',
                  'rootfs in Contents')
    dev = client.device_path(partitioned.node)
    mnt = tmp_path / 'rootfs'
    mnt.mkdir()
    partitioned.mount(2, str(mnt))
    contents = wait_contents(client, partitioned.node,
                             lambda c: c[1]['mount-points'] == [str(mnt)],
                             'the mount point in Contents')
    assert contents[0]['mount-points'] == []
    assert client.get(dev, h.DEVICE_IFACE, 'Busy')
    client.iterate(0.2)
    changed = [s for s in client.signals
               if s[0] == dev and s[2] == 'PropertiesChanged' and 'Contents' in s[3][1]]
    assert changed, 'no PropertiesChanged for Contents'

    partitioned.umount(str(mnt))
    wait_contents(client, partitioned.node, lambda c: c[1]['mount-points'] == [],
                  'the mount point to go from Contents')


def test_filesystem_on_the_whole_disk(daemon, client, loop_factory):
    need_tools('mkfs.ext4')
    loop = loop_factory(size=16 * h.MiB, fill=b'\0')
    client.wait_device(loop.node)
    assert contents_of(client, loop.node) == []
    run('mkfs.ext4', '-q', '-F', '-L', 'whole', loop.node)
    loop.uevent('change')
    [entry] = wait_contents(client, loop.node, lambda c: len(c) == 1, 'the filesystem')
    assert (entry['name'], entry['node'], entry['number']) == (loop.name, loop.node, 0)
    assert (entry['offset'], entry['size']) == (0, 16 * h.MiB)
    assert (entry['type'], entry['label']) == ('ext4', 'whole')


def test_display_name_and_icon_of_a_loop_device(daemon, client, loop):
    dev = client.wait_device(loop.node)
    props = client.get_all(dev, h.DEVICE_IFACE)
    # 16 MiB is 16.8 MB, shown as drives are sold.
    assert props['DisplayName'] == 'Loop Device 17 MB'
    assert props['IconName'] == 'drive-harddisk'
