# SPDX-License-Identifier: GPL-2.0-or-later
'''bmapctl copy from an http:// URL onto a loop device through bmapd: bmapctl
downloads, bmapd reads a pipe and never touches the network. The servers
listen on 127.0.0.1 only (tests/cli/url_servers.py).'''

import gzip
import os
import signal
import subprocess
import sys
import time

import pytest

import bmapd_harness as h

sys.path.insert(0, os.path.join(h.HERE, '..', 'cli'))
from url_servers import http_server  # noqa: E402


@pytest.fixture
def bmapctl(bus):
    exe = os.environ.get('BMAPCTL')
    if not exe:
        top = os.path.dirname(os.path.dirname(h.HERE))
        exe = os.path.join(top, 'build', 'client', 'bmapctl')
        if not os.path.exists(exe):
            pytest.skip('bmapctl is not built (set BMAPCTL)')
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ('http_proxy', 'https_proxy', 'all_proxy', 'no_proxy')}
    env['DBUS_SYSTEM_BUS_ADDRESS'] = bus.address

    def run(*args):
        return subprocess.run([exe, *args], env=env, capture_output=True, text=True,
                              timeout=120)

    def spawn(*args, env=None):
        return subprocess.Popen([exe, *args], env=dict(base_env, **(env or {})),
                                stderr=subprocess.PIPE, text=True)

    base_env = env
    run.spawn = spawn
    return run


@pytest.fixture
def site(image, tmp_path):
    '''disk.img, disk.img.bmap and disk.img.gz served as they lie.'''
    with open(image['path'], 'rb') as src, gzip.open(image['path'] + '.gz', 'wb') as dst:
        dst.write(src.read())
    return os.path.dirname(image['path'])


def assert_image_on(loop, image):
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length)


def job_descriptions(client):
    return [i[h.JOB_IFACE]['Description'] for i in client.managed_objects().values()
            if h.JOB_IFACE in i]


@pytest.mark.loop
def test_http_gz_flashed_through_bmapd(daemon, client, polkit, loop, image, site, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    with http_server(site) as srv:
        proc = bmapctl('copy', f'{srv.url}/disk.img.gz?token=1', loop.node)
        paths = [p for p, _, _ in srv.requests]
    assert proc.returncode == 0, proc.stderr
    assert_image_on(loop, image)
    # The bmap was found next to the URL, .gz stripped, the query kept.
    assert paths[:2] == ['/disk.img.gz.bmap?token=1', '/disk.img.bmap?token=1']
    assert job_descriptions(client) == ['disk.img.gz']
    assert 'checksums verified' in proc.stderr


@pytest.mark.loop
def test_http_raw_only_mapped_ranges_through_bmapd(daemon, client, polkit, loop, image, site,
                                                   bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    with http_server(site) as srv:
        proc = bmapctl('copy', f'{srv.url}/disk.img', loop.node)
        sent = srv.bytes_sent
    assert proc.returncode == 0, proc.stderr
    assert_image_on(loop, image)
    mapped = sum(length for _, length in image['ranges'])
    assert sent < image['size'] / 2 and sent >= mapped


@pytest.mark.loop
def test_dropped_connection_resumes_through_bmapd(daemon, client, polkit, loop, image, site,
                                                  bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    third = os.path.getsize(image['path'] + '.gz') // 3
    with http_server(site, drops=2, drop_after=third, drop_ranged_after=third) as srv:
        proc = bmapctl('copy', f'{srv.url}/disk.img.gz', loop.node)
        drops_left = srv.drops
    assert proc.returncode == 0, proc.stderr
    assert drops_left == 0
    assert_image_on(loop, image)


@pytest.mark.loop
def test_broken_download_fails_the_flash_and_says_why(daemon, client, polkit, loop, image,
                                                      site, bmapctl):
    '''bmapd only sees a short stream; bmapctl says what broke it.'''
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    half = os.path.getsize(image['path'] + '.gz') // 2
    with http_server(site, drops=100, drop_after=half, drop_ranged_after=0) as srv:
        url = f'{srv.url}/disk.img.gz'
        proc = bmapctl('copy', url, loop.node)
    assert proc.returncode == 1, proc.stderr
    assert f'{url}: the connection broke at byte {half}' in proc.stderr


@pytest.mark.loop
def test_404_fails_before_any_job(daemon, client, polkit, loop, site, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    with http_server(site) as srv:
        url = f'{srv.url}/missing.img.gz'
        proc = bmapctl('copy', url, loop.node)
    assert proc.returncode == 1
    assert f'{url}: HTTP 404' in proc.stderr
    assert job_descriptions(client) == []


@pytest.mark.loop
def test_detach_refused_for_a_download(daemon, client, polkit, loop, site, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    with http_server(site) as srv:
        proc = bmapctl('copy', '--detach', f'{srv.url}/disk.img.gz', loop.node)
    assert proc.returncode == 1
    assert '--detach cannot be used' in proc.stderr
    assert job_descriptions(client) == []


@pytest.mark.loop
def test_stalled_download_canceled_by_sigint_through_bmapd(daemon, client, polkit, loop, site,
                                                           bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    half = os.path.getsize(os.path.join(site, 'disk.img.gz')) // 2
    with http_server(site, stall='mid-body', stall_after=half) as srv:
        proc = bmapctl.spawn('copy', f'{srv.url}/disk.img.gz', loop.node)
        try:
            assert srv.stalled.wait(60)
            h.wait_until(lambda: job_descriptions(client) or None, timeout=30,
                         what='the flash job')
            proc.send_signal(signal.SIGINT)
            # Far below the 60 s stall timeout: the cancel stopped it.
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 4, err
    states = [i[h.JOB_IFACE]['State'] for i in client.managed_objects().values()
              if h.JOB_IFACE in i]
    assert states in ([], ['canceled']), states


@pytest.mark.loop
def test_file_url_flashed_through_bmapd(daemon, client, polkit, loop, image, site, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    proc = bmapctl('copy', f'file://{site}/disk.img.gz', loop.node)
    assert proc.returncode == 0, proc.stderr
    assert_image_on(loop, image)
    assert job_descriptions(client) == ['disk.img.gz']


@pytest.mark.loop
def test_slow_authorization_is_no_stall(daemon, client, polkit, loop, image, site, bmapctl):
    '''While polkit waits for the user, nobody reads the pipe and the
    download waits: that is not a stalled server. The server cannot resume,
    so a download taken for stalled would fail.'''
    polkit.set_allowed([h.ACTION_FLASH])
    polkit.set_hold(True)
    client.wait_device(loop.node)
    raw = os.path.join(site, 'disk.img')
    with http_server(site, ranges=False) as srv:
        proc = bmapctl.spawn('copy', '--nobmap', f'{srv.url}/disk.img', loop.node,
                             env={'BMAPCTL_STALL_TIMEOUT': '1'})
        try:
            h.wait_until(lambda: polkit.held_count() >= 1, timeout=60, what='the held check')
            # Longer than the stall timeout, with the pipe full.
            time.sleep(4)
            polkit.release_held()
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        requests = [wanted for _, wanted, _ in srv.requests]
    assert proc.returncode == 0, err
    assert requests == [None]
    with open(raw, 'rb') as f:
        assert loop.read(0, image['size']) == f.read()
