# SPDX-License-Identifier: GPL-2.0-or-later
'''Faults, for real: block devices that fail, vanish and crawl, not mocks.

qemu-storage-daemon exports a disk image through FUSE, with a blkdebug node
that fails chosen writes or reads with EIO and a throttle node that slows
writes to a crawl; a loop device over the exported file is a real block
device with real faults. Every test checks what a user relies on when a
device fails: the job fails and says where, it is never reported done,
the device is closed, and bmapd carries on.'''

import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

import bmapd_harness as h
import simcard

pytestmark = pytest.mark.loop


class FaultyDisk(simcard.Card):
    '''A simulated card (simcard.Card) over a disk image of @fill: file ->
    blkdebug (EIO on chosen writes or reads) -> raw -> throttle (writes at
    @write_bps, when given) -> FUSE export -> loop device.

    The loop device reads and writes the export through the page cache
    (--direct-io=off). The FUSE file's cache then answers reads of the pages
    just written in full, and a read fault there is never seen; the loop
    device starts @loop_offset bytes into the export, which leaves the
    export's pages at the ends of each write partly written, and read
    from the export again. Offsets of faults are the loop device's.'''

    def __init__(self, tmpdir, size, fill=b'\xaa', write_error_at=None, read_error_at=None,
                 write_bps=None, loop_offset=0):
        rules = []
        if write_error_at is not None:
            rules.append({'event': 'write_aio', 'iotype': 'write', 'errno': 5,
                          'sector': (loop_offset + write_error_at) // 512, 'once': False})
        if read_error_at is not None:
            rules.append({'event': 'read_aio', 'iotype': 'read', 'errno': 5,
                          'sector': (loop_offset + read_error_at) // 512, 'once': False})
        super().__init__(tmpdir, size, write_bps=write_bps, read_bps=None, fill=fill,
                         inject_errors=rules, loop_offset=loop_offset, prefix='bmapd-faulty-')

    def kill_export(self):
        '''The medium is gone: every later read or write of the export fails.'''
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def faulty_usable():
    return h.loop_devices_usable() or simcard.cards_usable()


@pytest.fixture
def faulty(tmp_path):
    reason = faulty_usable()
    if reason:
        pytest.skip(reason)
    disks = []

    def make(size=16 * h.MiB, **kwargs):
        disk = FaultyDisk(str(tmp_path), size, **kwargs)
        disks.append(disk)
        return disk

    yield make
    for disk in disks:
        disk.close()


def make_image(tmp_path, name, size, ranges):
    '''An image of @size with data in @ranges, and its bmap (bmaptool's).'''
    if not shutil.which('bmaptool'):
        pytest.skip('bmaptool is not installed (needed to make reference bmaps)')
    path = str(tmp_path / name)
    h.make_sparse_image(path, size, ranges, seed=name)
    h.bmaptool_create(path, path + '.bmap')
    return {'path': path, 'bmap': path + '.bmap', 'size': size, 'ranges': ranges}


def states_announced(client, job):
    return [args[1]['State'] for path, iface, member, args in client.signals
            if path == job and member == 'PropertiesChanged' and 'State' in args[1]]


def assert_failed_not_done(client, daemon, job, error_names):
    '''@job failed with one of @error_names, said so once and was never
    done; the device was let go of; bmapd still answers.'''
    state, error_name, message = client.wait_finished(job, timeout=120)
    assert state == 'failed' and error_name in [h.ERROR + e for e in error_names], message
    assert [args[0] for args in client.job_signals(job, 'Finished')] == ['failed']
    assert 'done' not in states_announced(client, job)
    props = client.get_all(job, h.JOB_IFACE)
    assert props['State'] == 'failed'
    assert daemon.proc.poll() is None, 'bmapd died'
    assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'Version')
    return message


def byte_range_in(message):
    '''(first, last) of "bytes FIRST-LAST" or "at byte N" in @message.'''
    m = re.search(r'bytes (\d+)-(\d+)', message)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = re.search(r'at byte (\d+)', message)
    assert m, f'no byte offset in: {message}'
    return int(m.group(1)), int(m.group(1))


# ---- EIO on write ------------------------------------------------------------

WRITE_FAULT = 4 * h.MiB + 64 * 1024


def test_write_eio_mid_flash(daemon, client, polkit, faulty, tmp_path, fds):
    '''Writes to the device fail at one offset, early in a 68 MiB image:
    past the first writeback windows, whose wait saw the error and, had
    its result been dropped, would have hidden it from the final sync.'''
    disk = faulty(size=80 * h.MiB, write_error_at=WRITE_FAULT)
    image = make_image(tmp_path, 'big.img', 72 * h.MiB, [(0, 68 * h.MiB)])
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(disk.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    message = assert_failed_not_done(client, daemon, job, ['IO'])
    assert disk.node in message and 'Input/output error' in message, message
    first, last = byte_range_in(message)
    assert first <= WRITE_FAULT <= last, message
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    assert h.can_open_exclusive(disk.node)
    # The bytes before the fault reached the disk; the fault's did not.
    assert disk.read_backing(0, 4096) == h.read_range(image['path'], 0, 4096)
    assert disk.read_backing(WRITE_FAULT, 4096) != h.read_range(image['path'], WRITE_FAULT, 4096)


def test_write_eio_small_image(daemon, client, polkit, faulty, image, fds):
    '''The fault in the second of four ranges, 1 MiB apart: the error is
    reported with bytes around it, whichever wait for the written bytes
    saw it.'''
    offset, length = image['ranges'][1]
    fault = offset + length // 2
    disk = faulty(write_error_at=fault)
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(disk.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    message = assert_failed_not_done(client, daemon, job, ['IO'])
    assert disk.node in message, message
    first, last = byte_range_in(message)
    assert first <= fault <= last, message
    assert h.can_open_exclusive(disk.node)


# ---- EIO on reading back -----------------------------------------------------

def test_verify_written_read_eio(daemon, client, polkit, faulty, image, fds):
    '''The copy is written, then reading it back fails in the third range
    (8 KiB at 3 MiB + 4 KiB), at its first byte: there the export's page
    was written in part and is read from the export again.'''
    offset, _ = image['ranges'][2]
    fault = offset
    disk = faulty(read_error_at=fault, loop_offset=2048)
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(disk.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), verify_written=True)
    message = assert_failed_not_done(client, daemon, job, ['IO'])
    assert 'verifying' in states_announced(client, job)
    assert disk.node in message and 'read error' in message, message
    first, _ = byte_range_in(message)
    assert first <= fault < first + 4 * h.MiB, message
    assert h.can_open_exclusive(disk.node)
    # Everything was written; only the reading back failed.
    for offset, length in image['ranges']:
        assert disk.read_backing(offset, length) == h.read_range(image['path'], offset, length)


# ---- the device goes away mid-write -------------------------------------------

def test_device_vanishes_mid_write(daemon, client, polkit, faulty, image, fds):
    '''The loop device is detached while bmapd writes to it and its medium
    (the export) dies: the job fails, bmapd lets go of the device, which
    the kernel then takes away, and bmapd carries on.'''
    disk = faulty(write_bps=128 * 1024)
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(disk.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    h.wait_until(lambda: client.get(job, h.JOB_IFACE, 'BytesDone') > 0, 60, 'a range written')
    assert client.get(job, h.JOB_IFACE, 'State') == 'writing'
    disk.detach()
    # Held open by bmapd: still there until bmapd closes it.
    assert disk.attached()
    disk.kill_export()
    message = assert_failed_not_done(client, daemon, job, ['IO', 'DeviceGone'])
    assert disk.node in message, message
    # bmapd closed the device: the kernel finished the detach and bmapd
    # saw the device go.
    h.wait_until(lambda: not disk.attached(), 30, f'{disk.node} to be detached')
    client.wait_device_gone(disk.node)


# ---- ENOSPC on a file target ----------------------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    '''A 1 MiB tmpfs.'''
    if os.geteuid() != 0:
        pytest.skip('needs root to mount a tmpfs')
    path = tmp_path / 'small'
    path.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(path)], check=True)
    yield path
    subprocess.run(['umount', str(path)], check=False)


@pytest.mark.parametrize('with_bmap', [True, False], ids=['bmap', 'nobmap'])
def test_enospc_on_a_file_target(image, small_fs, with_bmap):
    '''The image's 1.6 MiB of data do not fit on a 1 MiB filesystem.'''
    dest = str(small_fs / 'out.img')
    exe = os.environ.get('BMAPCTL') or os.path.join(h.HERE, '..', '..', 'build', 'client',
                                                   'bmapctl')
    if not os.access(exe, os.X_OK):
        pytest.skip('bmapctl is not built (set BMAPCTL)')
    args = ['--bmap', image['bmap']] if with_bmap else ['--nobmap']
    proc = subprocess.run([exe, 'copy', *args, image['path'], dest], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert dest in proc.stderr and 'no space left' in proc.stderr, proc.stderr
    assert 'copied' not in proc.stderr and 'done' not in proc.stdout


# ---- a device that crawls -------------------------------------------------------

def test_stalled_device_is_cancelled(daemon, client, polkit, faulty, image, fds):
    """Writes reach the device at 64 KiB/s: the image's 1.6 MiB would take
    25 s. A Cancel while it writes ends the job, answered once the device
    is closed, without the rest being written: bmapd had handed the kernel
    no more than the device writes in a moment. (Had it handed over
    everything at once, the close would wait for all of it, and a copy
    that reached its end is done, not canceled.)"""
    disk = faulty(write_bps=64 * 1024)
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(disk.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    # Writing: waiting for the device, which takes its time.
    client.wait_state(job, ('writing', 'syncing', 'done', 'failed', 'canceled'), timeout=60)
    assert client.get(job, h.JOB_IFACE, 'State') == 'writing'
    client.cancel(job)
    # Cancel() is answered once the device is closed.
    assert h.can_open_exclusive(disk.node)
    state, error_name, message = client.wait_finished(job)
    assert (state, error_name) == ('canceled', ''), message
    assert 'done' not in states_announced(client, job)
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    # The last range never reached the device.
    offset, length = image['ranges'][-1]
    assert disk.read_backing(offset, length) != h.read_range(image['path'], offset, length)
    assert daemon.proc.poll() is None


# ---- udev's control socket, left behind ------------------------------------------

def dead_socket(path):
    '''A SOCK_SEQPACKET socket bound at @path and closed, as a udevd that
    died leaves its control socket.'''
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(path)
    s.listen(1)
    s.close()


def test_stale_udev_socket_is_not_a_udevd(bus, client, polkit, loop_factory, tmp_path):
    '''With a control socket nobody listens on, bmapd follows the kernel's
    events and sees loop devices come and go.'''
    control = str(tmp_path / 'control')
    dead_socket(control)
    d = h.Daemon(bus, client, str(tmp_path), env={'BMAPD_UDEV_CONTROL': control})
    try:
        loop = loop_factory()
        client.wait_device(loop.node)
        node = loop.node
        loop.detach()
        client.wait_device_gone(node)
        log = d.read_log()
        assert f'kernel netlink group: {control} is left by a udevd that no longer runs' in log, \
            log
    finally:
        assert d.stop() in (0, None, -signal.SIGTERM)


# In a mount namespace of its own, on a tmpfs over /run: what a udevd that
# died leaves, where it leaves it, seen by this bmapd only (a stale socket
# there for the whole machine would mislead other bmapd instances).
STALE_RUN_UDEV = """
mount -t tmpfs -o mode=0755 tmpfs /run && mkdir /run/udev &&
/usr/bin/python3 -c '
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind("/run/udev/control")
s.listen(1)
s.close()
' && exec "$0" "$@"
"""


def test_stale_udev_socket_in_run_udev(bus, client, polkit, loop_factory, tmp_path):
    if not shutil.which('unshare') or os.geteuid() != 0:
        pytest.skip('needs root and unshare for a mount namespace')
    d = h.Daemon(bus, client, str(tmp_path),
                 wrapper=('unshare', '--mount', '--propagation', 'private', 'sh', '-c',
                          STALE_RUN_UDEV))
    try:
        loop = loop_factory()
        client.wait_device(loop.node)
        log = d.read_log()
        assert '/run/udev/control is left by a udevd that no longer runs' in log, log
    finally:
        assert d.stop() in (0, None, -signal.SIGTERM)


def test_live_udev_socket_means_udevd_events(bus, client, polkit, tmp_path):
    control = str(tmp_path / 'control')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(control)
    s.listen(4)
    try:
        d = h.Daemon(bus, client, str(tmp_path), env={'BMAPD_UDEV_CONTROL': control})
        try:
            assert f'udev netlink group (udevd answers on {control})' in d.read_log()
        finally:
            assert d.stop() in (0, None, -signal.SIGTERM)
    finally:
        s.close()
