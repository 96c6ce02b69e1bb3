# SPDX-License-Identifier: GPL-2.0-or-later
'''What users rely on, each guarded by a test that fails when it breaks.

Small deliberate bugs put into the tree, one at a time, got through the
rest of the suite: a regular-file target not truncated before writing, a
Flash that fails during the copy reported as done, bmapctl exiting 0 when
its job failed, bmapctl's --no-verify inverted on its way to bmapd. Each
test here was run with its bug put back and failed.

A "bad" image is a good image with one byte changed after its bmap was
made, in its last mapped range: the copy writes the first ranges, then
finds the checksum of the last one wrong, so it fails during the copy,
not before it starts.'''

import os
import subprocess

import pytest

import bmapd_harness as h


@pytest.fixture
def bmapctl(bus):
    exe = h.find_bmapctl()
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    env.pop('LD_PRELOAD', None)

    def run(*args, timeout=120):
        return subprocess.run([exe, '--no-ask-password', *args], env=env, capture_output=True,
                              text=True, timeout=timeout)

    return run


@pytest.fixture
def bad_image(image, tmp_path):
    '''@image with one byte of its last mapped range changed; its bmap is
    the good image's, so that range's checksum no longer matches.'''
    path = str(tmp_path / 'bad.img')
    with open(image['path'], 'rb') as src, open(path, 'wb') as dst:
        dst.write(src.read())
    offset, length = image['ranges'][-1]
    corrupt_at = offset + length // 2
    with open(path, 'r+b') as f:
        f.seek(corrupt_at)
        old = f.read(1)
        f.seek(corrupt_at)
        f.write(bytes([old[0] ^ 0xff]))
    return dict(image, path=path, corrupt_at=corrupt_at)


def states_announced(client, job):
    return [args[1]['State'] for path, iface, member, args in client.signals
            if path == job and member == 'PropertiesChanged' and 'State' in args[1]]


def assert_failed_not_done(client, job, error, loop):
    '''@job failed with @error, said so once, was never done, and let go
    of the device.'''
    state, error_name, message = client.wait_finished(job)
    assert (state, error_name) == ('failed', h.ERROR + error), message
    assert [args[0] for args in client.job_signals(job, 'Finished')] == ['failed']
    assert 'done' not in states_announced(client, job)
    props = client.get_all(job, h.JOB_IFACE)
    assert props['State'] == 'failed' and props['ErrorName'] == h.ERROR + error
    assert props['BytesDone'] < props['BytesTotal']
    dev = props['Device']
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    assert h.can_open_exclusive(loop.node)
    return message


# ---- a regular-file target is the image, nothing of what was there --------

@pytest.mark.parametrize('with_bmap', [True, False], ids=['bmap', 'nobmap'])
def test_copy_onto_a_file_full_of_data_leaves_none_of_it(image, bmapctl, tmp_path, with_bmap):
    '''bmaptool truncates a regular file before writing: the unmapped
    ranges read back as zeros, and a larger old file shrinks to the
    image's size. Without the truncation the copy succeeds and leaves
    the old bytes in every range the image does not map.'''
    dest = str(tmp_path / 'old-data.img')
    with open(dest, 'wb') as f:
        f.write(b'\x5a' * (image['size'] + 3 * h.MiB))
    args = ['--bmap', image['bmap']] if with_bmap else ['--nobmap']
    proc = bmapctl('copy', *args, image['path'], dest)
    assert proc.returncode == 0, proc.stderr
    assert os.path.getsize(dest) == image['size']
    assert h.file_sha256(dest) == h.file_sha256(image['path'])
    # The image's holes are holes of the copy too, not old data.
    assert h.read_range(dest, 2 * h.MiB, 4096) == bytes(4096)


# ---- a Flash that fails during the copy is failed, never done --------------

@pytest.mark.loop
def test_flash_failing_during_the_copy_is_failed(daemon, client, polkit, loop, bad_image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job = client.flash(dev, fds(bad_image['path']), bmap_fd=fds(bad_image['bmap']))
    message = assert_failed_not_done(client, job, 'ChecksumMismatch', loop)
    assert 'checksum mismatch' in message and loop.node in message
    # Which earlier ranges reached the device before the failure depends on
    # how far hashing ran ahead of writing; only the failure is asserted.
    # The daemon goes on, and the device can be flashed again.
    job = client.flash(dev, fds(bad_image['path']), bmap_fd=fds(bad_image['bmap']),
                       verify=False)
    assert client.wait_finished(job)[:2] == ('done', '')


# ---- bmapctl: the job's end is the exit status; --no-verify is --no-verify -

@pytest.mark.loop
def test_bmapctl_bad_checksum_fails_and_no_verify_writes_it(daemon, client, polkit, loop,
                                                             bad_image, bmapctl):
    '''A bad image flashed through bmapd with bmapctl: the job fails, bmapctl
    exits 1 and says why, nothing is reported done. With --no-verify the
    same image is written as it is and bmapctl exits 0.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)

    proc = bmapctl('copy', '--bmap', bad_image['bmap'], bad_image['path'], loop.node)
    [job] = h.wait_until(lambda: client.jobs_for(dev), 20, 'the job on the bus')
    assert_failed_not_done(client, job, 'ChecksumMismatch', loop)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert 'checksum mismatch' in proc.stderr
    assert 'done' not in proc.stdout

    proc = bmapctl('copy', '--no-verify', '--bmap', bad_image['bmap'], bad_image['path'],
                   loop.node)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    [_, job] = h.wait_until(lambda: client.jobs_for(dev)[1:] and client.jobs_for(dev), 20,
                            'the second job on the bus')
    assert client.wait_finished(job)[:2] == ('done', '')
    # Written as it is, the changed byte included.
    for offset, length in bad_image['ranges']:
        assert loop.read(offset, length) == h.read_range(bad_image['path'], offset, length)

