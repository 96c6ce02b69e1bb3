# SPDX-License-Identifier: GPL-2.0-or-later
'''Issue 11 through the daemon: bmapd reads tar and zip images as bmapctl
does (the image is the archive's first file), onto real loop devices, and
refuses a 7z archive by name without writing.'''

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
