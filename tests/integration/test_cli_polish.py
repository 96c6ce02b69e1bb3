# SPDX-License-Identifier: GPL-2.0-or-later
'''Issue 12, bmapctl polish, through the real bmapd: the one line that says
what a copy erases, the result line for standard input, errors that name
the bmap file and the image, and no polkit agent noise for root.'''

import os
import re
import sys

import pytest

import bmapd_harness as h
from conftest import skip_without_loop_devices
from test_cli import bmapctl  # noqa: F401 - the fixture

sys.path.insert(0, os.path.join(os.path.dirname(h.HERE), 'cli'))
import loop_partitions  # noqa: E402


def erase_lines(text):
    return [line for line in text.splitlines() if line.startswith('bmapctl: erasing ')]


@pytest.fixture
def partitioned_loop(tmp_path):
    '''A 16 MiB loop device with one 8 MiB partition at 1 MiB.'''
    skip_without_loop_devices()
    backing = tmp_path / 'partitioned.img'
    with open(backing, 'wb') as f:
        f.truncate(16 * h.MiB)
    try:
        node = loop_partitions.attach_partitioned(backing, 2048, 16384)
    except OSError as e:
        pytest.skip(str(e))
    yield node
    loop_partitions.detach(node)


@pytest.mark.loop
def test_copy_says_what_it_erases(daemon, client, polkit, partitioned_loop, tmp_path, bmapctl):
    '''Before writing, one line names the disk, its size and its
    partitions; nothing is asked (stdin is closed), and -q and --json
    leave the line out.'''
    polkit.set_allowed([h.ACTION_FLASH])
    node = partitioned_loop
    name = os.path.basename(node)
    client.wait_device(node)
    image = tmp_path / 'small.img'
    image.write_bytes(b'\x42' * (64 * 1024))

    proc = bmapctl('copy', '--nobmap', str(image), node, stdin=open(os.devnull), check=0)
    lines = erase_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f'bmapctl: erasing {node}'), line
    assert '(16.0 MiB)' in line, line
    assert f': 1 partition: {name}p1 8.0 MiB' in line, line
    # It comes before the result.
    assert proc.stderr.index(line) < proc.stderr.index('bmapctl: wrote')

    proc = bmapctl('-q', 'copy', '--nobmap', str(image), node, check=0)
    assert erase_lines(proc.stderr) == [], proc.stderr
    proc = bmapctl('--json', 'copy', '--nobmap', str(image), node, check=0)
    assert 'erasing' not in proc.stderr + proc.stdout


@pytest.mark.loop
def test_copy_from_stdin_says_it_once(daemon, client, polkit, loop, tmp_path, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    image = tmp_path / 'small.img'
    image.write_bytes(b'\x42' * (64 * 1024))
    with open(image, 'rb') as f:
        proc = bmapctl('copy', '--nobmap', '-', loop.node, stdin=f, check=0)
    assert 'from standard input to ' + loop.node in proc.stderr, proc.stderr
    assert 'from from' not in proc.stderr


@pytest.mark.loop
def test_bad_bmap_is_named(daemon, client, polkit, loop, image, tmp_path, bmapctl):
    '''A bmap bmapd would refuse: the error names the file, and nothing is
    asked or written.'''
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    bad = tmp_path / 'broken.bmap'
    bad.write_text(open(image['bmap']).read().replace('<BlockSize>', '<BlockSize>x', 1))
    before = loop.sha256()
    proc = bmapctl('copy', '--bmap', str(bad), image['path'], loop.node, check=1)
    assert str(bad) in proc.stderr, proc.stderr
    assert loop.sha256() == before
    assert polkit.checks() == []


@pytest.mark.loop
def test_checksum_mismatch_names_the_image(daemon, client, polkit, loop, image, tmp_path,
                                           bmapctl):
    '''bmapd's checksum error names the image by its file name, not "image
    image".'''
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    bad = tmp_path / 'corrupt.img'
    data = bytearray(open(image['path'], 'rb').read())
    offset, length = image['ranges'][-1]
    data[offset + length // 2] ^= 0xff
    bad.write_bytes(bytes(data))
    proc = bmapctl('copy', '--bmap', image['bmap'], str(bad), loop.node, check=1)
    assert re.search(r'checksum mismatch in blocks \d+-\d+ of corrupt\.img:', proc.stderr), \
        proc.stderr
    assert 'image image' not in proc.stderr


@pytest.mark.loop
def test_root_copy_on_a_terminal_without_polkit_is_quiet(daemon, client, polkit, loop, tmp_path, bmapctl):
    '''On a terminal, with no polkit on the bus, root's copy works and
    prints nothing about the polkit agent: root is never asked.'''
    if os.geteuid() != 0:
        pytest.skip('needs root')
    polkit.stop()
    client.wait_device(loop.node)
    image = tmp_path / 'small.img'
    image.write_bytes(b'\x42' * (64 * 1024))
    status, text = h.bmapctl_on_terminal(bmapctl, 'copy', '--nobmap', str(image), loop.node)
    assert status == 0, text
    assert 'bmapctl: wrote' in text, text
    # pkttyagent's own words when polkit is not on the bus (they vary with
    # how it finds out).
    for words in ('authentication agent', 'PolicyKit1', 'Authorization not available',
                  'pkttyagent'):
        assert words not in text, text
