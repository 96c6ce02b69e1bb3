# SPDX-License-Identifier: GPL-2.0-or-later
'''Create through the daemon, checked against bmaptool's own bmap.'''

import os
import shutil
import xml.etree.ElementTree as ET

import pytest

import bmapd_harness as h


def bmap_summary(xml_bytes):
    root = ET.fromstring(xml_bytes)
    ranges = root.find('BlockMap')
    return {
        'ImageSize': root.findtext('ImageSize').strip(),
        'BlockSize': root.findtext('BlockSize').strip(),
        'BlocksCount': root.findtext('BlocksCount').strip(),
        'MappedBlocksCount': root.findtext('MappedBlocksCount').strip(),
        'ranges': [(r.text.strip(), r.get('chksum')) for r in ranges.findall('Range')],
    }


@pytest.fixture
def sparse(tmp_path):
    if not shutil.which('bmaptool'):
        pytest.skip('bmaptool is not installed')
    path = str(tmp_path / 'sparse.img')
    h.make_sparse_image(path, 4 * h.MiB, [(0, 8192), (1 * h.MiB, 64 * 1024), (3 * h.MiB, 4096)])
    ref = path + '.ref.bmap'
    h.bmaptool_create(path, ref)
    return path, ref


def test_create_matches_bmaptool(daemon, client, polkit, sparse, fds, tmp_path):
    polkit.set_allowed([h.ACTION_CREATE])
    path, ref = sparse
    out = str(tmp_path / 'out.bmap')
    job = client.create(fds(path), fds(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                        description='sparse.img')
    state, _, message = client.wait_finished(job)
    assert state == 'done', message
    props = client.get_all(job, h.JOB_IFACE)
    assert props['Operation'] == 'create' and props['Device'] == '/'
    assert props['Description'] == 'sparse.img'
    with open(out, 'rb') as f, open(ref, 'rb') as g:
        assert bmap_summary(f.read()) == bmap_summary(g.read())


def test_create_into_a_pipe(daemon, client, polkit, sparse, fds):
    polkit.set_allowed([h.ACTION_CREATE])
    path, ref = sparse
    r, w = os.pipe()
    try:
        job = client.create(fds(path), w)
        os.close(w)
        chunks = []
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    assert client.wait_finished(job)[0] == 'done'
    with open(ref, 'rb') as g:
        assert bmap_summary(b''.join(chunks)) == bmap_summary(g.read())


def test_create_refuses_pipe_image_and_readonly_output(daemon, client, polkit, sparse, fds,
                                                      tmp_path):
    polkit.set_allowed([h.ACTION_CREATE])
    path, _ = sparse
    r, w = os.pipe()
    try:
        with pytest.raises(h.DBusCallError) as e:
            client.create(r, fds(str(tmp_path / 'x.bmap'), os.O_WRONLY | os.O_CREAT))
        assert e.value.name == h.ERROR + 'InvalidArgument' and 'pipe' in e.value.message
    finally:
        os.close(r)
        os.close(w)
    out = tmp_path / 'ro.bmap'
    out.write_bytes(b'')
    with pytest.raises(h.DBusCallError) as e:
        client.create(fds(path), fds(str(out)))
    assert e.value.name == h.ERROR + 'InvalidArgument' and 'reading only' in e.value.message
    with pytest.raises(h.DBusCallError) as e:
        client.create(fds(path), fds(str(out), os.O_WRONLY), checksum='md5')
    assert e.value.name == h.ERROR + 'InvalidArgument' and 'md5' in e.value.message
    assert polkit.checks() == []


def test_create_without_checksums(daemon, client, polkit, sparse, fds, tmp_path):
    polkit.set_allowed([h.ACTION_CREATE])
    path, _ = sparse
    out = str(tmp_path / 'none.bmap')
    job = client.create(fds(path), fds(out, os.O_WRONLY | os.O_CREAT), checksum='none')
    assert client.wait_finished(job)[0] == 'done'
    with open(out, 'rb') as f:
        summary = bmap_summary(f.read())
    assert all(chksum is None for _, chksum in summary['ranges'])
