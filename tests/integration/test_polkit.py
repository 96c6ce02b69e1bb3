# SPDX-License-Identifier: GPL-2.0-or-later
'''What bmapd asks polkit, and what it does with the answer.'''

import os
import shutil
import subprocess

import pytest

import bmapd_harness as h
from conftest import run_as_nobody

DETAIL_KEYS = {'device', 'drive.vendor', 'drive.model', 'drive.serial', 'drive.bus',
               'drive.removable', 'bmap.signature'}


def job_events(client, member):
    return [args[0] for path, iface, m, args in client.signals if m == member
            and args[0].startswith(h.JOB_PREFIX)]


@pytest.mark.loop
def test_denied_writes_nothing(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([])
    before = loop.sha256()
    dev = client.wait_device(loop.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert h.ACTION_FLASH in e.value.message
    assert loop.sha256() == before
    # Jobs are made once authorized: none was.
    client.iterate(0.2)
    assert job_events(client, 'InterfacesAdded') == []
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'


@pytest.mark.loop
def test_allowed_with_subject_details_and_flags(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert client.wait_finished(job)[0] == 'done'
    [(action, details, flags, kind, name, _)] = polkit.checks()
    assert action == h.ACTION_FLASH
    assert kind == 'system-bus-name' and name == client.unique_name
    assert set(details) == DETAIL_KEYS
    assert details['device'] == loop.node
    assert details['drive.bus'] == 'virtual'
    assert details['drive.removable'] == 'false'
    assert details['bmap.signature'] == 'none'  # no "bmap-signature" passed
    assert flags == 0  # the call did not allow interaction


@pytest.mark.loop
def test_interactive_authorization(daemon, client, polkit, loop, image, fds):
    polkit.set_challenge([h.ACTION_FLASH])
    before = loop.sha256()
    dev = client.wait_device(loop.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert e.value.name == h.INTERACTIVE_REQUIRED
    assert loop.sha256() == before

    # With the flag, polkit may ask (the mock's agent says yes).
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), interactive=True)
    assert client.wait_finished(job)[0] == 'done'
    flags = [check[2] for check in polkit.checks()]
    assert flags == [0, 1]


@pytest.mark.loop
def test_system_disk_needs_flash_system(daemon, client, polkit, loop, image, fds):
    '''A disk with active swap is a system disk.'''
    if not shutil.which('mkswap') or not shutil.which('swapon'):
        pytest.skip('mkswap/swapon are not installed')
    subprocess.run(['mkswap', loop.node], check=True, stdout=subprocess.DEVNULL)
    if subprocess.run(['swapon', loop.node], stderr=subprocess.PIPE).returncode != 0:
        pytest.skip('swapon does not work here')
    try:
        dev = client.wait_device(loop.node)
        h.wait_until(lambda: client.get(dev, h.DEVICE_IFACE, 'System'), 20, 'System to be true')
        assert client.get(dev, h.DEVICE_IFACE, 'Busy')
        polkit.set_allowed([h.ACTION_FLASH])
        with pytest.raises(h.DBusCallError) as e:
            client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
        assert e.value.name == h.ERROR + 'NotAuthorized'
        assert polkit.checks()[-1][0] == h.ACTION_FLASH_SYSTEM
        # Authorized, it is still in use: swap is never turned off for us.
        polkit.set_allowed([h.ACTION_FLASH, h.ACTION_FLASH_SYSTEM])
        with pytest.raises(h.DBusCallError) as e:
            client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), unmount=True)
        assert e.value.name == h.ERROR + 'DeviceBusy'
        assert 'swap' in e.value.message
    finally:
        subprocess.run(['swapoff', loop.node], check=False)


def test_root_disk_is_system(daemon, client, polkit, tmp_path, fds):
    '''The disk holding / asks for flash-system (never granted here!).'''
    systems = [props for props in client.devices().values() if props['System']]
    if not systems:
        pytest.skip('no system disk visible')
    dev = client.device_path(systems[0]['Node'])
    img = tmp_path / 'small.img'
    img.write_bytes(h.pattern('small', 4096))
    polkit.set_allowed([h.ACTION_FLASH])
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(str(img)), nobmap=True)
    assert e.value.name in (h.ERROR + 'NotAuthorized', h.ERROR + 'DeviceGone',
                            h.ERROR + 'ReadOnly')
    if e.value.name == h.ERROR + 'NotAuthorized':
        assert polkit.checks()[-1][0] == h.ACTION_FLASH_SYSTEM


def test_create_asks_for_create(daemon, client, polkit, tmp_path, fds):
    img = tmp_path / 'c.img'
    img.write_bytes(h.pattern('create', 64 * 1024))
    out = tmp_path / 'c.bmap'
    polkit.set_allowed([])
    with pytest.raises(h.DBusCallError) as e:
        client.create(fds(str(img)), fds(str(out), os.O_WRONLY | os.O_CREAT))
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert polkit.checks()[-1][0] == h.ACTION_CREATE
    assert out.read_bytes() == b''
    polkit.set_allowed([h.ACTION_CREATE])
    job = client.create(fds(str(img)), fds(str(out), os.O_WRONLY | os.O_CREAT))
    assert client.wait_finished(job)[0] == 'done'


@pytest.fixture
def daemon_without_polkit(bus, client, tmp_path):
    d = h.Daemon(bus, client, str(tmp_path))
    yield d
    d.stop()


@pytest.mark.loop
def test_without_polkit_only_root(daemon_without_polkit, bus, client, loop, fds):
    dev = client.wait_device(loop.node)
    # The image where uid 65534 can read it.
    img = os.path.join(bus.dir, 'nopolkit.img')
    data = h.pattern('nopolkit', 1 * h.MiB)
    with open(img, 'wb') as f:
        f.write(data)
    os.chmod(img, 0o644)
    script = f'''
import os, sys
sys.path.insert(0, {h.HERE!r})
import bmapd_harness as h
c = h.Client({bus.address!r})
try:
    c.flash({dev!r}, os.open({img!r}, os.O_RDONLY), nobmap=True)
    print('OK')
except h.DBusCallError as e:
    print(e.name, e.message)
'''
    result = run_as_nobody(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(h.ERROR + 'NotAuthorized'), result.stdout
    assert 'polkit' in result.stdout
    assert loop.read(0, 4096) == b'\xaa' * 4096

    job = client.flash(dev, fds(img), nobmap=True)
    assert client.wait_finished(job)[0] == 'done'
    assert loop.read(0, len(data)) == data
