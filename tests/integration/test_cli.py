# SPDX-License-Identifier: GPL-2.0-or-later
'''bmapctl as the daemon's client: every command against the real bmapd on
the private test bus, the progress output in its three modes, Ctrl-C,
--detach, and the exit statuses scripts rely on.'''

import gzip
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

import bmapd_harness as h
from bmapd_harness import find_bmapctl  # noqa: F401 (imported from here by other modules)


@pytest.fixture
def bmapctl(bus):
    exe = h.find_bmapctl()
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)

    def run(*args, stdin=None, timeout=120, check=None):
        proc = subprocess.run([exe, *args], env=env, stdin=stdin, capture_output=True, text=True,
                              timeout=timeout)
        if check is not None:
            assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    spawned = []

    def spawn(*args, **kwargs):
        proc = subprocess.Popen([exe, *args], env=env, text=True, **kwargs)
        spawned.append(proc)
        return proc

    run.spawn = spawn
    run.exe = exe
    run.env = env
    yield run
    # A test that failed half-way leaves no bmapctl (a monitor never ends
    # by itself) behind.
    for proc in spawned:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def assert_image_on(loop, image):
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length)


def wait_job_state(client, states, timeout=30):
    '''The first job object that reaches one of @states.'''
    def find():
        for path, ifaces in client.managed_objects().items():
            job = ifaces.get(h.JOB_IFACE)
            if job and job['State'] in states:
                return path
        return None
    return h.wait_until(find, timeout=timeout, what=f'a job in {states}')


# ---- devices ---------------------------------------------------------------

@pytest.mark.loop
def test_devices_table_hides_system_disks(daemon, client, loop, bmapctl):
    client.wait_device(loop.node)
    proc = bmapctl('devices', check=0)
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:5] == ['NODE', 'SIZE', 'BUS', 'MODEL', 'SERIAL']
    row = next(line for line in lines if line.startswith(loop.node + ' '))
    assert '16.0 MiB' in row and 'virtual' in row
    systems = [d for d in client.devices().values() if d['System']]
    for d in systems:
        assert not any(line.startswith(d['Node'] + ' ') for line in lines)
    if systems:
        assert 'hidden; use --all' in proc.stdout
        listed = bmapctl('devices', '--all', check=0).stdout
        assert all(d['Node'] in listed for d in systems)


@pytest.mark.loop
def test_devices_json(daemon, client, loop, bmapctl):
    client.wait_device(loop.node)
    devices = json.loads(bmapctl('--json', 'devices', '--all', check=0).stdout)
    mine = next(d for d in devices if d['node'] == loop.node)
    assert mine['size'] == 16 * h.MiB
    assert mine['removable'] is False and mine['system'] is False
    assert mine['media_present'] is True and mine['job'] == '/'
    assert mine['diskseq'] > 0


# ---- copy through the daemon ----------------------------------------------

@pytest.mark.loop
def test_copy_plain_progress(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    proc = bmapctl('copy', '--bmap', image['bmap'], image['path'], loop.node, check=0)
    assert_image_on(loop, image)
    # Off a terminal: plain lines, the states as they come, then the result.
    assert 'writing' in proc.stderr
    assert '\r' not in proc.stderr
    assert f'to {loop.node}' in proc.stderr and 'checksums verified' in proc.stderr
    # The job ran as the description bmapctl gave it: the image's name.
    jobs = [i[h.JOB_IFACE] for i in client.managed_objects().values() if h.JOB_IFACE in i]
    assert [j['Description'] for j in jobs] == ['disk.img']


@pytest.mark.loop
def test_copy_json_progress(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    packed = image['path'] + '.gz'
    with open(image['path'], 'rb') as src, gzip.open(packed, 'wb') as dst:
        dst.write(src.read())
    proc = bmapctl('--json', 'copy', '--bmap', image['bmap'], '--verify-written', packed,
                   loop.node, check=0)
    objects = [json.loads(line) for line in proc.stdout.splitlines()]
    updates, result = objects[:-1], objects[-1]
    assert result['result'] == 'done'
    assert result['verified_written'] is True
    # What reached the device: the mapped bytes, not the whole job's count
    # (which adds syncing and the read-back).
    assert result['bytes_written'] == sum(length for _, length in image['ranges'])
    assert updates, 'no progress objects'
    for u in updates:
        assert 0.0 <= u['progress'] <= 1.0
        assert u['bytes_done'] <= u['bytes_total'] or u['bytes_total'] == 0
    assert {'writing', 'verifying'} <= {u['state'] for u in updates}
    assert_image_on(loop, image)


@pytest.mark.loop
def test_copy_xz_blocks(daemon, client, polkit, loop, image, bmapctl):
    '''A multi-block xz file reaches bmapd as a descriptor and is decoded
    block by block there: a damaged block that the bmap does not need is
    passed over, not decoded, and the device gets the image.'''
    if not shutil.which('xz'):
        pytest.skip('xz is not installed')
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    packed = image['path'] + '.xz'
    subprocess.run(['xz', '-T2', '--block-size=512KiB', '-k', image['path']], check=True)
    listing = subprocess.run(['xz', '--robot', '--list', '-vv', packed], check=True,
                             capture_output=True, text=True).stdout
    # Columns: compressed offset, uncompressed offset, total size. [2, 2.5) MiB is a hole.
    blocks = [line.split('\t') for line in listing.splitlines() if line.startswith('block\t')]
    (hole,) = [b for b in blocks if int(b[5]) == 2 * h.MiB]
    with open(packed, 'r+b') as f:
        f.seek(int(hole[4]) + int(hole[6]) // 2)
        f.write(b'\x5a\xa5')
    bmapctl('copy', '--bmap', image['bmap'], packed, loop.node, check=0)
    assert_image_on(loop, image)


@pytest.mark.loop
def test_copy_terminal_progress(daemon, client, polkit, loop, image, bmapctl):
    '''On a terminal: one line redrawn in place, never past 100%.'''
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    status, text = h.bmapctl_on_terminal(bmapctl, '--no-ask-password', 'copy', '--bmap',
                                         image['bmap'], image['path'], loop.node)
    assert status == 0, text
    assert '\r\x1b[K' in text
    assert 'syncing' in text
    for token in text.replace('\r', ' ').split():
        if token.endswith('%') and token[:-1].isdigit():
            assert int(token[:-1]) <= 100
    assert_image_on(loop, image)


@pytest.mark.loop
def test_copy_denied_exits_3(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_allowed([])
    client.wait_device(loop.node)
    before = loop.sha256()
    proc = bmapctl('--no-ask-password', 'copy', '--bmap', image['bmap'], image['path'],
                   loop.node, check=3)
    assert 'org.bmapd.bmapd1.flash' in proc.stderr
    assert loop.sha256() == before


@pytest.mark.loop
def test_copy_removable_device_refused(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    before = loop.sha256()
    proc = bmapctl('copy', '--removable-device', '--bmap', image['bmap'], image['path'],
                   loop.node, check=1)
    assert 'not a removable device' in proc.stderr
    assert loop.sha256() == before


@pytest.mark.loop
def test_copy_by_device_name_and_stdin(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    with open(image['path'], 'rb') as f:
        bmapctl('-q', 'flash', '--bmap', image['bmap'], '-', loop.name, stdin=f, check=0)
    assert_image_on(loop, image)


@pytest.mark.loop
def test_ctrl_c_cancels_and_waits(daemon, client, polkit, loop, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    feed = h.SlowPipe(os.urandom(8 * h.MiB), chunk=64 * 1024, delay=0.1)
    proc = bmapctl.spawn('--json', 'copy', '--nobmap', '-', loop.node, stdin=feed.read_fd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(feed.read_fd)
    feed.start()
    job = wait_job_state(client, ('writing',))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    feed.stop()
    assert proc.returncode == 4, err
    assert json.loads(out.splitlines()[-1])['result'] == 'canceled'
    # bmapctl waited for the daemon: the job is over and the device closed.
    assert client.get(job, h.JOB_IFACE, 'State') == 'canceled'
    assert h.can_open_exclusive(loop.node)


@pytest.mark.loop
def test_detach_then_jobs_and_cancel(daemon, client, polkit, loop, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    feed = h.SlowPipe(os.urandom(8 * h.MiB), chunk=64 * 1024, delay=0.1)
    proc = bmapctl('copy', '--nobmap', '--detach', '-', loop.node, stdin=feed.read_fd,
                   timeout=30, check=0)
    os.close(feed.read_fd)
    feed.start()
    job = proc.stdout.split()[2].rstrip('.')
    assert job.startswith(h.JOB_PREFIX)
    assert f'bmapctl cancel {job}' in proc.stdout
    # The job goes on without bmapctl.
    client.wait_state(job, ('writing',))
    listing = bmapctl('jobs', check=0).stdout
    job_id = job.rsplit('/', 1)[1]
    row = next(line for line in listing.splitlines() if line.split()[0] == job_id)
    assert 'writing' in row and loop.name in row and 'standard input' in row
    bmapctl('cancel', job_id, check=0)
    state, _, message = client.wait_finished(job)
    feed.stop()
    assert state == 'canceled', message
    jobs = json.loads(bmapctl('--json', 'jobs', check=0).stdout)
    assert [j['state'] for j in jobs if j['path'] == job] == ['canceled']


def test_cancel_unknown_job(daemon, bmapctl):
    proc = bmapctl('cancel', '999', check=1)
    assert '999: no such job' in proc.stderr


@pytest.mark.loop
def test_monitor_json_stream(daemon, client, polkit, loop, image, bmapctl, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    mon = bmapctl.spawn('--json', 'monitor', stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    client.wait_finished(job)
    time.sleep(1.0)
    mon.send_signal(signal.SIGINT)
    out, err = mon.communicate(timeout=20)
    assert mon.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [(e['event'], e.get('job', {}).get('path')) for e in events]
    assert ('job-added', job) in kinds
    assert ('job-finished', job) in kinds
    finished = next(e for e in events if e['event'] == 'job-finished')
    assert finished['job']['state'] == 'done'


@pytest.mark.loop
def test_monitor_sees_devices_come_and_go(daemon, client, loop_factory, bmapctl):
    mon = bmapctl.spawn('monitor', stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    loop = loop_factory()
    client.wait_device(loop.node)
    node = loop.node
    loop.detach()
    client.wait_device_gone(node)
    time.sleep(0.5)
    mon.send_signal(signal.SIGINT)
    out, _ = mon.communicate(timeout=20)
    assert any('device-added' in line and node in line for line in out.splitlines())
    assert any('device-removed' in line and node in line for line in out.splitlines())


def test_create_through_daemon(daemon, polkit, image, bmapctl, tmp_path):
    polkit.set_allowed([h.ACTION_CREATE])
    out = tmp_path / 'made-by-daemon.bmap'
    bmapctl('-q', 'create', '--daemon', '-o', str(out), image['path'], check=0)
    with open(image['bmap']) as f:
        assert out.read_text() == f.read()


def test_create_through_daemon_denied(daemon, polkit, image, bmapctl, tmp_path):
    polkit.set_allowed([])
    out = tmp_path / 'never.bmap'
    proc = bmapctl('--no-ask-password', 'create', '--daemon', '-o', str(out), image['path'],
                   check=3)
    assert 'org.bmapd.bmapd1.create' in proc.stderr
    # Nothing is left behind, not even the temporary file.
    assert list(tmp_path.glob('never.bmap*')) == []


def test_daemon_not_running(bus, bmapctl):
    proc = bmapctl('devices', check=1)
    assert 'bmapd is not running and could not be activated' in proc.stderr
