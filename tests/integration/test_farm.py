# SPDX-License-Identifier: GPL-2.0-or-later
'''Flash farms: writing only what differs (minimize-writes), the unmapped
ranges (discard, zero-unmapped) and GPT relocation, through bmapd onto real
loop devices.

What the device was written is counted by the block layer: the write
sectors of /sys/block/NAME/stat count every write request the loop device
got, whatever sent it. (qemu-storage-daemon 7.2 has no write counters for
a FUSE export's BlockBackend in query-blockstats, only a node's
wr_highest_offset.)'''

import contextlib
import json
import os
import shutil
import subprocess
import tempfile

import pytest

import bmapd_harness as h
from simcard import written_bytes
from test_cli import bmapctl  # noqa: F401 (a fixture)

pytestmark = pytest.mark.loop


def mapped_bytes(image):
    return sum(length for _, length in image['ranges'])


def unmapped_ranges(image):
    out, pos = [], 0
    for offset, length in sorted(image['ranges']):
        if offset > pos:
            out.append((pos, offset - pos))
        pos = offset + length
    if pos < image['size']:
        out.append((pos, image['size'] - pos))
    return out


def flash(client, dev, image, fds, **options):
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), **options)
    state, error_name, message = client.wait_finished(job, timeout=120)
    assert (state, error_name) == ('done', ''), message
    return client.get_all(job, h.JOB_IFACE)


def assert_holds_image(loop, image):
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length), \
            f'range at {offset} differs'


def scribble(loop, offset, data):
    '''Writes @data at @offset of the device and flushes it there.'''
    fd = os.open(loop.node, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.fixture
def big_image(tmp_path):
    '''A 24 MiB image with 18 MiB of data in three ranges, and its bmap.'''
    if not shutil.which('bmaptool'):
        pytest.skip('bmaptool is not installed (needed to make reference bmaps)')
    path = str(tmp_path / 'big.img')
    ranges = [(0, 8 * h.MiB), (10 * h.MiB, 6 * h.MiB), (20 * h.MiB, 4 * h.MiB)]
    h.make_sparse_image(path, 24 * h.MiB, ranges, seed='big')
    h.bmaptool_create(path, path + '.bmap')
    return {'path': path, 'bmap': path + '.bmap', 'size': 24 * h.MiB, 'ranges': ranges}


# ---- minimize-writes ---------------------------------------------------------


def test_reflash_in_place_writes_nothing(daemon, client, polkit, loop, image, fds):
    '''A card that holds the image already: every mapped byte is checked,
    none is written, and the device saw no write.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    flash(client, dev, image, fds)

    before = written_bytes(loop)
    props = flash(client, dev, image, fds, minimize_writes=True, verify_written=True)
    assert written_bytes(loop) == before
    assert props['BytesChecked'] == mapped_bytes(image)
    assert props['BytesWritten'] == 0
    # The whole job: every mapped byte checked, nothing to sync, every
    # mapped byte read back. BytesDone counts the bytes checked.
    assert props['BytesDone'] == props['BytesTotal'] == 2 * mapped_bytes(image)
    assert 'found in place, not written' in props['Result'], props['Result']
    assert_holds_image(loop, image)
    assert f'{props["Result"]}' in daemon.read_log()


def test_reflash_writes_only_differing_blocks(daemon, client, polkit, loop, image, fds):
    '''Two changed places, one straddling two blocks: three 4 KiB blocks
    are written, which the device saw, and it holds the image again.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    flash(client, dev, image, fds)
    scribble(loop, 8192, b'\x00' * 100)
    scribble(loop, 7 * h.MiB + 4096 - 3, b'\x55' * 6)

    before = written_bytes(loop)
    props = flash(client, dev, image, fds, minimize_writes=True)
    assert written_bytes(loop) - before == 3 * 4096
    assert props['BytesWritten'] == 3 * 4096
    assert props['BytesChecked'] == mapped_bytes(image)
    assert_holds_image(loop, image)


def test_without_minimize_writes_everything_is_written(daemon, client, polkit, loop, image,
                                                       fds):
    '''The counter tells: a plain flash writes every mapped byte.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    flash(client, dev, image, fds)
    before = written_bytes(loop)
    props = flash(client, dev, image, fds)
    assert written_bytes(loop) - before >= mapped_bytes(image)
    assert props['BytesChecked'] == 0
    assert props['BytesWritten'] == mapped_bytes(image)
    assert props['Result'] == ''


def test_interrupted_flash_resumed(daemon, client, polkit, loop_factory, big_image, fds):
    '''A flash canceled half-way is resumed by running it again with
    minimize-writes: what reached the card is not written again.'''
    loop = loop_factory(size=32 * h.MiB)
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    with open(big_image['path'], 'rb') as f:
        data = f.read()
    pipe = h.SlowPipe(data, chunk=256 * 1024, delay=0.05).start()
    try:
        job = client.flash(dev, pipe.read_fd, bmap_fd=fds(big_image['bmap']))
        pipe.close_read()
        h.wait_until(lambda: client.get(job, h.JOB_IFACE, 'BytesDone') >= 4 * h.MiB, 60,
                     '4 MiB written')
        done_at_cancel = client.get(job, h.JOB_IFACE, 'BytesDone')
        client.cancel(job)
        assert client.wait_finished(job)[0] == 'canceled'
    finally:
        pipe.stop()
    assert loop.sha256(big_image['size']) != h.file_sha256(big_image['path'])

    before = written_bytes(loop)
    props = flash(client, dev, big_image, fds, minimize_writes=True, verify_written=True)
    assert props['BytesChecked'] == mapped_bytes(big_image)
    assert 0 < props['BytesWritten'] <= mapped_bytes(big_image) - done_at_cancel
    assert written_bytes(loop) - before == props['BytesWritten']
    assert_holds_image(loop, big_image)


def test_reflash_with_zero_unmapped_is_byte_identical(daemon, client, polkit, loop, image, fds):
    '''minimize-writes and zero-unmapped together: the card reads back as
    the image, byte for byte, holes included.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    flash(client, dev, image, fds)
    scribble(loop, 1 * h.MiB + 4096, b'\x01' * 4096)
    assert loop.sha256(image['size']) != h.file_sha256(image['path'])

    props = flash(client, dev, image, fds, minimize_writes=True, zero_unmapped=True)
    assert props['BytesWritten'] == 4096
    assert loop.sha256(image['size']) == h.file_sha256(image['path'])


# ---- unmapped ranges ---------------------------------------------------------


def test_zero_unmapped_on_loop(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    props = flash(client, dev, image, fds, zero_unmapped=True, verify_written=True)
    assert 'unmapped zeroed' in props['Result'], props['Result']
    assert_holds_image(loop, image)
    for offset, length in unmapped_ranges(image):
        assert loop.read(offset, length) == bytes(length), f'unmapped at {offset} not zero'
    # Beyond the image, the device is not touched.
    assert loop.read(image['size'], 4096) == b'\xaa' * 4096


def test_discard_on_loop(daemon, client, polkit, loop, image, fds):
    '''A loop device discards by punching holes in its file: the unmapped
    ranges read back as zeros.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    props = flash(client, dev, image, fds, discard=True)
    assert 'unmapped discarded' in props['Result'], props['Result']
    assert_holds_image(loop, image)
    for offset, length in unmapped_ranges(image):
        assert loop.read(offset, length) == bytes(length), f'unmapped at {offset} kept'
    assert loop.read(image['size'], 4096) == b'\xaa' * 4096


@contextlib.contextmanager
def loop_on_ramfs(tmp_path, size=16 * h.MiB):
    '''A loop device over a file on ramfs, which has no fallocate: the
    device refuses discard and has no write-zeroes, like many readers.'''
    mnt = tempfile.mkdtemp(prefix='bmapd-ramfs-', dir=str(tmp_path))
    if subprocess.run(['mount', '-t', 'ramfs', '-o', 'mode=0700', 'bmapd-test', mnt],
                      check=False, capture_output=True).returncode != 0:
        pytest.skip('cannot mount ramfs')
    loop = None
    try:
        loop = h.LoopDevice(mnt, size)
        yield loop
    finally:
        if loop is not None:
            name = loop.name
            # losetup -d waits for the device's last holder (udev probing
            # it after bmapd closed it): the file is busy until then.
            loop.detach()
            with contextlib.suppress(TimeoutError):
                h.wait_until(lambda: not os.path.exists(f'/sys/block/{name}/loop/backing_file'),
                             30, f'{name} to let go of its file on ramfs')
        if subprocess.run(['umount', mnt], check=False, capture_output=True).returncode != 0:
            subprocess.run(['umount', '-l', mnt], check=False)


def test_discard_refused(daemon, client, polkit, image, fds, tmp_path):
    '''The device refuses discard: the flash is done all the same, and its
    Result says so.'''
    if h.loop_devices_usable():
        pytest.skip(h.loop_devices_usable())
    with loop_on_ramfs(tmp_path) as loop:
        with open(f'/sys/block/{loop.name}/queue/discard_max_bytes') as f:
            assert f.read().strip() == '0', 'this loop device does discard'
        polkit.set_allowed([h.ACTION_FLASH])
        dev = client.wait_device(loop.node)
        props = flash(client, dev, image, fds, discard=True)
        assert 'not discarded: the device refused' in props['Result'], props['Result']
        assert_holds_image(loop, image)
        # Nothing was discarded.
        offset, length = unmapped_ranges(image)[0]
        assert loop.read(offset, length) == b'\xaa' * length


def test_zero_unmapped_without_write_zeroes(daemon, client, polkit, image, fds, tmp_path):
    '''A device without write-zeroes gets zeros written: the guarantee
    holds.'''
    if h.loop_devices_usable():
        pytest.skip(h.loop_devices_usable())
    with loop_on_ramfs(tmp_path) as loop:
        polkit.set_allowed([h.ACTION_FLASH])
        dev = client.wait_device(loop.node)
        props = flash(client, dev, image, fds, zero_unmapped=True)
        assert 'unmapped zeroed' in props['Result'], props['Result']
        assert_holds_image(loop, image)
        for offset, length in unmapped_ranges(image):
            assert loop.read(offset, length) == bytes(length), f'unmapped at {offset} not zero'


# ---- GPT relocation ----------------------------------------------------------


@pytest.fixture
def gpt_image(tmp_path):
    '''An 8 MiB image with a GPT and a 4 MiB partition holding 1 MiB of data.'''
    for tool in ('bmaptool', 'sfdisk'):
        if not shutil.which(tool):
            pytest.skip(f'{tool} is not installed')
    path = str(tmp_path / 'gpt.img')
    with open(path, 'wb') as f:
        f.truncate(8 * h.MiB)
    subprocess.run(['sfdisk', '-q', path], input='label: gpt\n,4M,L\n', text=True, check=True)
    with open(path, 'r+b') as f:
        f.seek(1 * h.MiB)
        f.write(h.pattern('gpt', 1 * h.MiB))
    h.bmaptool_create(path, path + '.bmap')
    return {'path': path, 'bmap': path + '.bmap', 'size': 8 * h.MiB}


def sfdisk_verify(node):
    h.drop_caches(node)
    out = subprocess.run(['sfdisk', '--verify', node], capture_output=True, text=True)
    return out.stdout + out.stderr


def test_relocate_gpt(daemon, client, polkit, loop, gpt_image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)

    # Without relocation the backup stays where the image ended.
    props = flash(client, dev, gpt_image, fds)
    report = sfdisk_verify(loop.node)
    assert 'No errors detected' not in report and 'not on the end' in report, report

    props = flash(client, dev, gpt_image, fds, relocate_gpt=True, verify_written=True)
    assert 'backup GPT relocated' in props['Result'], props['Result']
    report = sfdisk_verify(loop.node)
    assert 'No errors detected' in report, report
    # The partition's data is the image's.
    assert loop.read(1 * h.MiB, 1 * h.MiB) == h.read_range(gpt_image['path'], 1 * h.MiB,
                                                           1 * h.MiB)


def test_relocate_gpt_without_gpt(daemon, client, polkit, loop, image, fds):
    '''An image without a GPT is flashed as it is; the Result says so.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    props = flash(client, dev, image, fds, relocate_gpt=True)
    assert 'no GPT' in props['Result'], props['Result']
    assert_holds_image(loop, image)


# ---- bmapctl -----------------------------------------------------------------


def test_bmapctl_minimize_writes_through_bmapd(daemon, client, polkit, loop, image, bmapctl):
    '''bmapctl passes --minimize-writes on; its progress counts the bytes
    checked and written, its result says what was found in place.'''
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    bmapctl('copy', '--bmap', image['bmap'], image['path'], loop.node, check=0)
    scribble(loop, 7 * h.MiB, b'\x00' * 4096)

    before = written_bytes(loop)
    proc = bmapctl('--json', 'copy', '--minimize-writes', '--bmap', image['bmap'], image['path'],
                   loop.node, check=0)
    assert written_bytes(loop) - before == 4096
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    updates = [line for line in lines if 'state' in line]
    assert updates[-1]['bytes_checked'] == mapped_bytes(image), updates
    assert updates[-1]['bytes_written'] == 4096, updates
    result = lines[-1]
    assert result['result'] == 'done'
    assert result['bytes_written'] == 4096
    assert result['bytes_skipped'] == mapped_bytes(image) - 4096
    assert 'found in place, not written' in result['notes'], result

    proc = bmapctl('copy', '--minimize-writes', '--bmap', image['bmap'], image['path'],
                   loop.node, check=0)
    assert 'checked 1.6 MiB, wrote 0 bytes' in proc.stderr, proc.stderr
    assert 'found in place, not written' in proc.stderr, proc.stderr
    assert_holds_image(loop, image)


def test_bmapctl_options_through_bmapd(daemon, client, polkit, loop, gpt_image, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    proc = bmapctl('copy', '--zero-unmapped', '--discard', '--relocate-gpt', '--verify-written',
                   '--bmap', gpt_image['bmap'], gpt_image['path'], loop.node, check=0)
    assert 'unmapped zeroed' in proc.stderr and 'unmapped discarded' in proc.stderr, proc.stderr
    assert 'backup GPT relocated' in proc.stderr, proc.stderr
    assert 'No errors detected' in sfdisk_verify(loop.node)


def test_bmapctl_local_minimize_writes(loop, image, bmapctl):
    '''In-process (--local) the same options do the same.'''
    bmapctl('--local', 'copy', '--bmap', image['bmap'], image['path'], loop.node, check=0)
    before = written_bytes(loop)
    proc = bmapctl('--local', 'copy', '--minimize-writes', '--zero-unmapped', '--bmap',
                   image['bmap'], image['path'], loop.node, check=0)
    assert 'found in place, not written' in proc.stderr, proc.stderr
    # Only the zeros of the unmapped ranges were written, no mapped byte.
    assert written_bytes(loop) - before <= image['size'] - mapped_bytes(image)
    for offset, length in unmapped_ranges(image):
        assert loop.read(offset, length) == bytes(length)
    assert_holds_image(loop, image)


def test_bmapctl_refuses_unmapped_options_without_bmap(loop, image, bmapctl):
    proc = bmapctl('--local', 'copy', '--nobmap', '--discard', image['path'], loop.node)
    assert proc.returncode == 2 and '--discard needs a bmap' in proc.stderr, proc.stderr


def test_flash_refuses_unmapped_options_without_bmap(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), nobmap=True, zero_unmapped=True)
    assert e.value.name == h.ERROR + 'InvalidArgument'
    assert '"zero-unmapped" needs a bmap' in str(e.value)
    assert loop.read(2 * h.MiB, 4096) == b'\xaa' * 4096
