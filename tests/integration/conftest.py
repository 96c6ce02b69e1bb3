# SPDX-License-Identifier: GPL-2.0-or-later
'''pytest fixtures: a private bus, the polkitd mock, bmapd, loop devices.'''

import json
import os
import shutil
import subprocess

import pytest

import bmapd_harness as h


def pytest_configure(config):
    config.addinivalue_line('markers', 'loop: needs root and loop devices')


def pytest_report_header(config):
    # bmapd follows udevd's events when udevd answers on its control
    # socket, the kernel's otherwise (a socket left by a udevd that died
    # included): the tests run in either mode.
    state = h.udev_control_state()
    source = {'live': "udevd's events", 'dead': "the kernel's uevents (the socket is stale)",
              'absent': "the kernel's uevents"}[state]
    return f'udev: {h.UDEV_CONTROL} {state}; bmapd follows {source}'


@pytest.fixture
def bus(tmp_path):
    if not shutil.which('dbus-daemon'):
        pytest.skip('dbus-daemon is not installed')
    bus = h.TestBus()
    yield bus
    bus.stop()


@pytest.fixture
def client(bus):
    client = h.Client(bus.address)
    yield client
    client.close()


@pytest.fixture
def polkit(bus, client, tmp_path):
    mock = h.PolkitMock(bus, client, str(tmp_path))
    yield mock
    mock.stop()


@pytest.fixture
def daemon_config():
    '''The bmapd.conf text; tests override it with a parametrized fixture.'''
    return ''


@pytest.fixture
def daemon(bus, client, polkit, tmp_path, daemon_config):
    d = h.Daemon(bus, client, str(tmp_path), config=daemon_config)
    yield d
    rc = d.stop()
    log = d.read_log() if not d.log.closed else open(d.log_path).read()
    print('---- bmapd log ----\n' + log)
    # A crash is a failure of whatever test ran, even if it passed.
    assert rc in (0, None) or rc == -15, f'bmapd exited with {rc}'


def skip_without_loop_devices():
    '''Skips the test, saying why, when loop devices cannot be made here.'''
    reason = h.loop_devices_usable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def loop_factory(tmp_path):
    skip_without_loop_devices()
    devices = []

    def make(size=16 * h.MiB, fill=b'\xaa'):
        dev = h.LoopDevice(str(tmp_path), size, fill)
        devices.append(dev)
        return dev

    yield make
    for dev in devices:
        dev.detach()


@pytest.fixture
def loop(loop_factory):
    return loop_factory()


@pytest.fixture
def image(tmp_path):
    '''An 8 MiB sparse image with four data ranges and its bmap (made by bmaptool).'''
    if not shutil.which('bmaptool'):
        pytest.skip('bmaptool is not installed (needed to make reference bmaps)')
    path = str(tmp_path / 'disk.img')
    ranges = [(0, 64 * 1024), (1 * h.MiB, 512 * 1024), (3 * h.MiB + 4096, 8192),
              (7 * h.MiB, 1 * h.MiB)]
    h.make_sparse_image(path, 8 * h.MiB, ranges)
    bmap = path + '.bmap'
    h.bmaptool_create(path, bmap)
    return {'path': path, 'bmap': bmap, 'size': 8 * h.MiB, 'ranges': ranges}


@pytest.fixture
def fds():
    '''Descriptors a test opens, closed at the end.'''
    opened = []

    def open_(path, flags=os.O_RDONLY):
        fd = os.open(path, flags | os.O_CLOEXEC)
        opened.append(fd)
        return fd

    open_.opened = opened
    yield open_
    for fd in opened:
        try:
            os.close(fd)
        except OSError:
            pass


def run_as_nobody(script, env=None):
    '''Runs python @script as uid 65534; returns CompletedProcess.'''
    return subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
                           h.PYTHON, '-c', script], env=env, capture_output=True, text=True,
                          timeout=60)


def cancel_as_nobody(bus_address, job):
    '''Cancel(@job) from another client running as uid 65534: ('OK', its
    unique name) or (the D-Bus error's name, its message).'''
    script = f'''
import json, sys
sys.path.insert(0, {h.HERE!r})
import bmapd_harness as h
c = h.Client({bus_address!r})
try:
    c.cancel({job!r})
    print(json.dumps(['OK', c.unique_name]))
except h.DBusCallError as e:
    print(json.dumps([e.name, e.message]))
'''
    result = run_as_nobody(script)
    assert result.returncode == 0, result.stderr
    return tuple(json.loads(result.stdout))
