# SPDX-License-Identifier: GPL-2.0-or-later
'''Flash through the daemon onto real loop devices: what gets written, and
every check the daemon makes before it writes.'''

import gzip
import os
import socket
import subprocess

import pytest

import bmapd_harness as h

pytestmark = pytest.mark.loop


def assert_image_written(loop, image, fill=b'\xaa'):
    '''Mapped ranges hold the image; with a bmap the rest keeps the old fill.'''
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length), \
            f'range at {offset} differs'


def test_flash_with_bmap(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']),
                       description='disk.img')
    assert job.startswith(h.JOB_PREFIX)
    state, error_name, error_message = client.wait_finished(job)
    assert (state, error_name) == ('done', ''), error_message

    assert_image_written(loop, image)
    # Unmapped blocks were not written: the device's old bytes are still there.
    assert loop.read(2 * h.MiB, 4096) == b'\xaa' * 4096
    assert loop.read(image['size'], 4096) == b'\xaa' * 4096

    props = client.get_all(job, h.JOB_IFACE)
    assert props['State'] == 'done'
    assert props['Operation'] == 'flash'
    assert props['Device'] == dev
    assert props['Description'] == 'disk.img'
    assert props['StartedByUid'] == os.geteuid()
    # The whole job: the mapped bytes written, and what the sync had to write.
    mapped = sum(length for _, length in image['ranges'])
    assert mapped <= props['BytesTotal'] <= 2 * mapped
    assert props['BytesDone'] == props['BytesTotal']
    assert props['Progress'] == 1.0
    assert props['ErrorName'] == '' and props['ErrorMessage'] == ''
    assert props['StartTime'] > 0
    # The device is free again and nobody holds it open.
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    assert h.can_open_exclusive(loop.node)
    assert len(client.job_signals(job, 'Finished')) == 1


def test_flash_nobmap_whole_image(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job = client.flash(dev, fds(image['path']), nobmap=True)
    state, _, message = client.wait_finished(job)
    assert state == 'done', message
    # Every block, holes included, now matches the image.
    assert loop.sha256(image['size']) == h.file_sha256(image['path'])
    assert loop.read(image['size'], 4096) == b'\xaa' * 4096


def test_flash_gzip_pipe_with_bmap_and_verify_written(daemon, client, polkit, loop, image,
                                                      fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    with open(image['path'], 'rb') as f:
        compressed = gzip.compress(f.read())
    pipe = h.SlowPipe(compressed, chunk=64 * 1024, delay=0).start()
    try:
        job = client.flash(dev, pipe.read_fd, bmap_fd=fds(image['bmap']),
                           verify_written=True)
        pipe.close_read()
        state, _, message = client.wait_finished(job)
    finally:
        pipe.stop()
    assert state == 'done', message
    assert_image_written(loop, image)


def test_flash_progress_and_device_job(daemon, client, polkit, loop, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    data = h.pattern('progress', 6 * h.MiB)
    pipe = h.SlowPipe(data, chunk=128 * 1024, delay=0.02).start()
    try:
        job = client.flash(dev, pipe.read_fd, nobmap=True)
        pipe.close_read()
        # While it runs, the device points at the job.
        assert client.get(dev, h.DEVICE_IFACE, 'Job') == job
        state, _, message = client.wait_finished(job)
    finally:
        pipe.stop()
    assert state == 'done', message
    progress = client.job_signals(job, 'Progress')
    assert progress, 'no Progress signal'
    done = [p[0] for p in progress]
    assert done == sorted(done) or any(p[0] == 0 for p in progress)
    assert loop.read(0, len(data)) == data
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    # State went through preparing and writing to done, each announced.
    states = [args[1]['State'] for path, iface, member, args in client.signals
              if path == job and member == 'PropertiesChanged' and 'State' in args[1]]
    assert states[0] == 'preparing' and states[-1] == 'done' and 'writing' in states


def test_device_too_small(daemon, client, polkit, loop_factory, image, fds):
    small = loop_factory(size=4 * h.MiB)
    polkit.set_allowed([h.ACTION_FLASH])
    before = small.sha256()
    dev = client.wait_device(small.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert e.value.name == h.ERROR + 'DeviceTooSmall'
    assert small.node in e.value.message and str(8 * h.MiB) in e.value.message
    # Refused before asking anybody, and nothing written.
    assert polkit.checks() == []
    assert small.sha256() == before


def test_device_too_small_raw_image_without_bmap(daemon, client, polkit, loop_factory, image,
                                                 fds):
    small = loop_factory(size=4 * h.MiB)
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(small.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), nobmap=True)
    assert e.value.name == h.ERROR + 'DeviceTooSmall'


def test_device_busy_with_a_job(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    pipe = h.SlowPipe(h.pattern('busy', 4 * h.MiB), chunk=64 * 1024, delay=0.05).start()
    try:
        job = client.flash(dev, pipe.read_fd, nobmap=True)
        pipe.close_read()
        with pytest.raises(h.DBusCallError) as e:
            client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
        assert e.value.name == h.ERROR + 'DeviceBusy'
        assert job in e.value.message
        client.cancel(job)
    finally:
        pipe.stop()
    assert client.wait_finished(job)[0] == 'canceled'


def test_mounted_device_is_busy_then_unmount(daemon, client, polkit, loop, image, fds,
                                             tmp_path):
    if not os.path.exists('/sbin/mkfs.ext4') and not os.path.exists('/usr/sbin/mkfs.ext4'):
        pytest.skip('mkfs.ext4 is not installed')
    subprocess.run(['mkfs.ext4', '-q', '-F', loop.node], check=True)
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    subprocess.run(['mount', loop.node, str(mnt)], check=True)
    try:
        polkit.set_allowed([h.ACTION_FLASH])
        dev = client.wait_device(loop.node)
        h.wait_until(lambda: client.get(dev, h.DEVICE_IFACE, 'Busy'), 10, 'Busy to be true')
        with pytest.raises(h.DBusCallError) as e:
            client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
        assert e.value.name == h.ERROR + 'DeviceBusy'
        assert str(mnt) in e.value.message

        job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), unmount=True)
        state, _, message = client.wait_finished(job)
        assert state == 'done', message
        assert not os.path.ismount(str(mnt))
        assert_image_written(loop, image)
    finally:
        subprocess.run(['umount', str(mnt)], check=False, stderr=subprocess.DEVNULL)


def test_unmount_through_udisks(daemon, bus, client, polkit, loop, image, fds, tmp_path):
    if not os.path.exists('/sbin/mkfs.ext4') and not os.path.exists('/usr/sbin/mkfs.ext4'):
        pytest.skip('mkfs.ext4 is not installed')
    subprocess.run(['mkfs.ext4', '-q', '-F', loop.node], check=True)
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    subprocess.run(['mount', loop.node, str(mnt)], check=True)
    udisks = None
    try:
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
        env.pop('LD_PRELOAD', None)
        udisks = subprocess.Popen([h.PYTHON, '-m', 'dbusmock', '--system', '--template',
                                   os.path.join(h.HERE, 'udisks_template.py')], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        h.wait_until(lambda: client.call('/org/freedesktop/DBus', 'org.freedesktop.DBus',
                                         'NameHasOwner',
                                         h.GLib.Variant('(s)', ('org.freedesktop.UDisks2',)),
                                         dest='org.freedesktop.DBus')[0], 20, 'udisks mock')
        client.call('/org/freedesktop/UDisks2', h.MOCK_IFACE, 'AddFilesystem',
                    h.GLib.Variant('(ss)', (loop.name, str(mnt))),
                    dest='org.freedesktop.UDisks2')
        polkit.set_allowed([h.ACTION_FLASH])
        dev = client.wait_device(loop.node)
        job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), unmount=True)
        state, _, message = client.wait_finished(job)
        assert state == 'done', message
        calls = client.call('/org/freedesktop/UDisks2/block_devices/' + loop.name, h.MOCK_IFACE,
                            'GetMethodCalls', h.GLib.Variant('(s)', ('Unmount',)),
                            dest='org.freedesktop.UDisks2')[0]
        assert len(calls) == 1
        assert not os.path.ismount(str(mnt))
        assert 'through udisks2' in daemon.read_log()
        assert_image_written(loop, image)
    finally:
        if udisks:
            udisks.terminate()
            udisks.wait(10)
        subprocess.run(['umount', str(mnt)], check=False, stderr=subprocess.DEVNULL)


def test_read_only_device(daemon, client, polkit, loop, image, fds):
    subprocess.run(['blockdev', '--setro', loop.node], check=True)
    try:
        loop.uevent('change')
        dev = client.wait_device(loop.node)
        h.wait_until(lambda: client.get(dev, h.DEVICE_IFACE, 'ReadOnly'), 10, 'ReadOnly')
        polkit.set_allowed([h.ACTION_FLASH])
        with pytest.raises(h.DBusCallError) as e:
            client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
        assert e.value.name == h.ERROR + 'ReadOnly'
    finally:
        subprocess.run(['blockdev', '--setrw', loop.node], check=False)


def test_diskseq_mismatch(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    diskseq = client.get(dev, h.DEVICE_IFACE, 'DiskSeq')
    before = loop.sha256()
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), diskseq=diskseq + 1000)
    assert e.value.name == h.ERROR + 'MediaChanged'
    assert loop.sha256() == before
    # The right diskseq is accepted.
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), diskseq=diskseq)
    assert client.wait_finished(job)[0] == 'done'


@pytest.mark.parametrize('kind', ['directory', 'socket', 'o_path', 'block_device',
                                  'write_only'])
def test_bad_image_fd(daemon, client, polkit, loop, image, fds, tmp_path, kind):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    sock = None
    if kind == 'directory':
        fd, word = fds(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY), 'directory'
    elif kind == 'socket':
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fd, word = sock.fileno(), 'socket'
    elif kind == 'o_path':
        fd, word = fds(image['path'], os.O_PATH), 'O_PATH'
    elif kind == 'block_device':
        fd, word = fds(loop.node), 'block device'
    else:
        fd, word = fds(image['path'], os.O_WRONLY), 'writing only'
    try:
        with pytest.raises(h.DBusCallError) as e:
            client.flash(dev, fd, bmap_fd=fds(image['bmap']))
    finally:
        if sock:
            sock.close()
    assert e.value.name == h.ERROR + 'InvalidArgument'
    assert word in e.value.message
    assert polkit.checks() == []


def test_bad_bmap_fd_is_a_directory(daemon, client, polkit, loop, image, fds, tmp_path):
    dev = client.wait_device(loop.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']),
                     bmap_fd=fds(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY))
    assert e.value.name == h.ERROR + 'InvalidArgument'
    assert 'bmap' in e.value.message and 'directory' in e.value.message


def test_no_bmap_and_no_nobmap(daemon, client, polkit, loop, image, fds):
    dev = client.wait_device(loop.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']))
    assert e.value.name == h.ERROR + 'NoBmap'
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), nobmap=True)
    assert e.value.name == h.ERROR + 'InvalidArgument'


def test_unknown_and_mistyped_options(daemon, client, polkit, loop, image, fds):
    dev = client.wait_device(loop.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), nobmap=True, frobnicate=True)
    assert e.value.name == h.ERROR + 'InvalidArgument' and 'frobnicate' in e.value.message
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), nobmap=True, verify='yes')
    assert e.value.name == h.ERROR + 'InvalidArgument' and 'verify' in e.value.message


def test_bad_bmap(daemon, client, polkit, loop, image, fds, tmp_path):
    dev = client.wait_device(loop.node)
    bad = tmp_path / 'bad.bmap'
    bad.write_text('<?xml version="1.0"?><bmap version="2.0"><ImageSize>x</ImageSize></bmap>')
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(str(bad)))
    assert e.value.name == h.ERROR + 'BadBmap'
    assert polkit.checks() == []


def test_bmap_too_large_is_a_limit(daemon, client, polkit, loop, image, fds, tmp_path):
    dev = client.wait_device(loop.node)
    big = tmp_path / 'big.bmap'
    with open(big, 'wb') as f:
        f.truncate(9 * h.MiB)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(str(big)))
    assert e.value.name == h.ERROR + 'Limit'


def test_bmap_through_a_pipe(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    with open(image['bmap'], 'rb') as f:
        bmap = f.read()
    pipe = h.SlowPipe(bmap, chunk=1024, delay=0.01).start()
    try:
        job = client.flash(dev, fds(image['path']), bmap_fd=pipe.read_fd)
        pipe.close_read()
    finally:
        pipe.stop()
    assert client.wait_finished(job)[0] == 'done'
    assert_image_written(loop, image)


def test_unknown_device(daemon, client, polkit, image, fds):
    with pytest.raises(h.DBusCallError) as e:
        client.flash(h.DEVICE_PREFIX + 'nosuchdisk', fds(image['path']), nobmap=True)
    assert e.value.name == h.ERROR + 'DeviceGone'
    with pytest.raises(h.DBusCallError) as e:
        client.flash('/org/bmapd/bmapd1', fds(image['path']), nobmap=True)
    assert e.value.name == h.ERROR + 'InvalidArgument'


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nMaxJobs=1\n'])
def test_max_jobs_queues(daemon, client, polkit, loop_factory, image, fds):
    '''Beyond MaxJobs an authorized job waits, queued, holding its device.'''
    polkit.set_allowed([h.ACTION_FLASH])
    first, second = loop_factory(), loop_factory()
    dev1 = client.wait_device(first.node)
    dev2 = client.wait_device(second.node)
    pipe = h.SlowPipe(h.pattern('limit', 4 * h.MiB), chunk=64 * 1024, delay=0.05).start()
    try:
        job = client.flash(dev1, pipe.read_fd, nobmap=True)
        pipe.close_read()
        client.wait_state(job, 'writing')
        job2 = client.flash(dev2, fds(image['path']), bmap_fd=fds(image['bmap']))
        assert client.get(job2, h.JOB_IFACE, 'State') == 'queued'
        assert client.get(job2, h.JOB_IFACE, 'Progress') == 0.0
        assert client.get(dev2, h.DEVICE_IFACE, 'Job') == job2
        client.cancel(job)
    finally:
        pipe.stop()
    client.wait_finished(job)
    # Once the first is over, the second starts.
    assert client.wait_finished(job2)[0] == 'done'
