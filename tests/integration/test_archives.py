# SPDX-License-Identifier: GPL-2.0-or-later
'''Issue 11 through the daemon: bmapd reads tar and zip images as bmapctl
does (the image is the archive's first file), onto real loop devices, and
refuses a 7z archive by name without writing.'''

import os
import shutil
import subprocess

import pytest

import bmapd_harness as h
from test_cli import assert_image_on, bmapctl  # noqa: F401 (a fixture)

pytestmark = pytest.mark.loop


def pack(image, suffix, program, command):
    if not shutil.which(program):
        pytest.skip(f'{program} is not installed')
    directory, name = image['path'].rsplit('/', 1)
    out = f"{image['path']}{suffix}"
    subprocess.run(f'{command.format(name)} > {out}', shell=True, check=True, cwd=directory)
    return out


def test_flash_tar_zst_with_bmap_found_by_name(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    packed = pack(image, '.tar.zst', 'zstd', 'tar -c -Izstd {}')
    # disk.img.tar.zst -> disk.img.tar.zst.bmap, disk.img.tar.bmap, disk.img.bmap
    proc = bmapctl('copy', packed, loop.node, check=0)
    assert 'checksums verified' in proc.stderr
    assert_image_on(loop, image)
    # Only mapped blocks were written: the archive's bytes are nowhere.
    assert loop.read(2 * h.MiB, 4096) == b'\xaa' * 4096
    assert loop.read(image['size'], 4096) == b'\xaa' * 4096


def test_flash_zip_from_a_pipe_nobmap(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    packed = pack(image, '.zip', 'zip', 'zip -q -j - {}')
    with open(packed, 'rb') as f:
        cat = subprocess.Popen(['cat'], stdin=f, stdout=subprocess.PIPE)
        try:
            bmapctl('copy', '--nobmap', '-', loop.node, stdin=cat.stdout, check=0)
        finally:
            cat.stdout.close()
            cat.wait()
    # Every block of the image, holes included, and nothing past it.
    assert loop.sha256(image['size']) == h.file_sha256(image['path'])
    assert loop.read(image['size'], 4096) == b'\xaa' * 4096


def test_7z_is_refused_by_name_and_nothing_written(daemon, client, polkit, loop, image, bmapctl,
                                                    tmp_path):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    packed = tmp_path / 'disk.img.7z'
    packed.write_bytes(b'7z\xbc\xaf\x27\x1c\x00\x04' + bytes(4096))
    for args in (['--nobmap', str(packed)], ['--bmap', image['bmap'], str(packed)]):
        proc = bmapctl('copy', *args, loop.node)
        assert proc.returncode == 1, proc.stderr
        assert '7z archive' in proc.stderr
    assert loop.read(0, 65536) == b'\xaa' * 65536


def test_cancel_while_looking_for_an_archive_in_a_stalled_pipe(daemon, client, polkit, loop,
                                                               image, fds):
    '''A gzip stream that stops before its first 512 decoded bytes (where a
    tar header would be) while the writer keeps the pipe open: Cancel ends
    the job, nothing is written.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    packed = pack(image, '.tar.gz', 'gzip', 'tar -c -z {}')
    with open(packed, 'rb') as f:
        head = f.read(16)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(w, head)
        job = client.flash(dev, r, nobmap=True)
        client.wait_state(job, ('preparing', 'writing'))
        box = client.cancel(job, block=False)
        h.wait_until(lambda: box, 20, 'Cancel() to be answered')
        assert 'error' not in box, box
        state, _, message = client.wait_finished(job, timeout=20)
        assert state == 'canceled', message
    finally:
        os.close(r)
        os.close(w)
    assert loop.read(0, 65536) == b'\xaa' * 65536
