# SPDX-License-Identifier: GPL-2.0-or-later
'''Job life cycles on real loop devices: Cancel, bind-to-caller, a device
that goes away, parallel jobs, SIGTERM, and how long finished jobs stay.'''

import os
import signal
import subprocess
import time

import pytest

import bmapd_harness as h
from conftest import cancel_as_nobody

pytestmark = pytest.mark.loop

SLOW = dict(chunk=64 * 1024, delay=0.05)  # about 1.3 MB/s: a 4 MiB image takes seconds


def start_slow_flash(client, dev, seed='slow', size=4 * h.MiB, **options):
    pipe = h.SlowPipe(h.pattern(seed, size), **SLOW).start()
    job = client.flash(dev, pipe.read_fd, nobmap=True, **options)
    pipe.close_read()
    client.wait_state(job, 'writing')
    return job, pipe


def test_cancel_running_job(daemon, client, polkit, loop):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job, pipe = start_slow_flash(client, dev)
    try:
        h.wait_until(lambda: client.get(job, h.JOB_IFACE, 'BytesDone') > 0, 20, 'bytes written')
        # Cancel answers once the job has stopped and the device is closed.
        client.cancel(job)
        assert client.get(job, h.JOB_IFACE, 'State') == 'canceled'
        assert h.can_open_exclusive(loop.node)
    finally:
        pipe.stop()
    state, error_name, message = client.wait_finished(job)
    assert state == 'canceled'
    assert error_name == ''
    assert 'canceled by uid 0' in message and loop.node in message
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    # A finished job can be canceled again: nothing happens.
    client.cancel(job)
    assert len(client.job_signals(job, 'Finished')) == 1


def test_caller_leaving_while_authorizing(daemon, bus, client, polkit, loop, image, fds):
    '''No job exists while polkit is asked (nothing holds the device); a caller
    that leaves then drops its call, and polkit is told to drop its dialog.'''
    polkit.set_allowed([h.ACTION_FLASH])
    polkit.set_hold(True)
    before = loop.sha256()
    dev = client.wait_device(loop.node)
    caller = h.Client(bus.address)
    caller.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), block=False)
    h.wait_until(lambda: polkit.held_count() == 1, 20, 'the polkit check')
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    assert not [p for p in client.managed_objects() if p.startswith(h.JOB_PREFIX)]
    caller.close()
    cancellation_id = polkit.checks()[0][5]
    h.wait_until(lambda: cancellation_id in polkit.cancelled(), 10, 'CancelCheckAuthorization')
    assert 'left the bus before its Flash call was answered' in daemon.read_log()
    polkit.release_held()
    client.iterate(0.2)
    assert loop.sha256() == before
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    assert client.jobs_for(dev) == []


def test_cancel_job_of_another_uid_needs_authorization(daemon, bus, client, polkit, loop):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job, pipe = start_slow_flash(client, dev)
    try:
        assert cancel_as_nobody(bus.address, job)[0] == h.ERROR + 'NotAuthorized'
        assert client.get(job, h.JOB_IFACE, 'State') == 'writing'
        checks = polkit.checks()
        assert checks[-1][0] == h.ACTION_CANCEL
        assert checks[-1][1]['job'] == job.rsplit('/', 1)[1]

        polkit.set_allowed([h.ACTION_FLASH, h.ACTION_CANCEL])
        outcome = cancel_as_nobody(bus.address, job)
        assert outcome[0] == 'OK', outcome
    finally:
        pipe.stop()
    state, _, message = client.wait_finished(job)
    assert state == 'canceled'
    assert 'uid 65534' in message


def test_bind_to_caller(daemon, bus, client, polkit, loop):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    caller = h.Client(bus.address)
    pipe = h.SlowPipe(h.pattern('bound', 4 * h.MiB), **SLOW).start()
    try:
        job = caller.flash(dev, pipe.read_fd, nobmap=True, bind_to_caller=True)
        pipe.close_read()
        client.wait_state(job, 'writing')
        caller_name = caller.unique_name
        caller.close()  # a killed bmapctl, a closed GUI
        state, _, message = client.wait_finished(job)
    finally:
        pipe.stop()
    assert state == 'canceled'
    assert caller_name in message and 'bind-to-caller' in message
    assert h.can_open_exclusive(loop.node)


def test_without_bind_to_caller_the_job_goes_on(daemon, bus, client, polkit, loop):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    caller = h.Client(bus.address)
    data = h.pattern('detached', 2 * h.MiB)
    pipe = h.SlowPipe(data, chunk=128 * 1024, delay=0.02).start()
    try:
        job = caller.flash(dev, pipe.read_fd, nobmap=True)
        pipe.close_read()
        caller.close()
        state, _, message = client.wait_finished(job)
    finally:
        pipe.stop()
    assert state == 'done', message
    assert loop.read(0, len(data)) == data


def test_device_removed_mid_flash(daemon, client, polkit, loop):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job, pipe = start_slow_flash(client, dev)
    try:
        h.wait_until(lambda: client.get(job, h.JOB_IFACE, 'BytesDone') > 0, 20, 'bytes written')
        # What the kernel says when the stick is pulled.
        loop.uevent('remove')
        state, error_name, message = client.wait_finished(job)
        client.wait_device_gone(loop.node)
    finally:
        pipe.stop()
    assert state == 'failed'
    assert error_name == h.ERROR + 'DeviceGone'
    assert loop.node in message and 'removed' in message
    # The daemon carries on: the device comes back and can be flashed.
    loop.uevent('add')
    dev = client.wait_device(loop.node)
    data = h.pattern('after', 1 * h.MiB)
    assert client.flash_pipe(dev, data)[0] == 'done'
    assert loop.read(0, len(data)) == data


def test_media_changed_while_authorizing(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    polkit.set_hold(True)
    dev = client.wait_device(loop.node)
    reply = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), block=False)
    h.wait_until(lambda: polkit.held_count() == 1, 20, 'the polkit check')
    # A different medium while the password dialog is open: here, a bigger one.
    os.truncate(loop.backing, loop.size + 4 * h.MiB)
    subprocess.run(['losetup', '--set-capacity', loop.node], check=True)
    h.wait_until(lambda: client.get(dev, h.DEVICE_IFACE, 'Size') == loop.size + 4 * h.MiB, 20,
                 'the new size')
    polkit.release_held()
    h.wait_until(lambda: reply, 20, 'the Flash reply')
    assert reply['error'].name == h.ERROR + 'MediaChanged'
    assert 'nothing was written' in reply['error'].message
    assert loop.read(0, 4096) == b'\xaa' * 4096


def test_two_jobs_on_two_devices(daemon, client, polkit, loop_factory):
    polkit.set_allowed([h.ACTION_FLASH])
    first, second = loop_factory(), loop_factory()
    dev1, dev2 = client.wait_device(first.node), client.wait_device(second.node)
    data1, data2 = h.pattern('one', 3 * h.MiB), h.pattern('two', 3 * h.MiB)
    pipe1 = h.SlowPipe(data1, chunk=128 * 1024, delay=0.03).start()
    pipe2 = h.SlowPipe(data2, chunk=128 * 1024, delay=0.03).start()
    try:
        job1 = client.flash(dev1, pipe1.read_fd, nobmap=True)
        pipe1.close_read()
        job2 = client.flash(dev2, pipe2.read_fd, nobmap=True)
        pipe2.close_read()
        # Both are under way at the same time.
        h.wait_until(lambda: all(client.get(j, h.JOB_IFACE, 'State') == 'writing'
                                 for j in (job1, job2)), 20, 'both jobs writing')
        assert client.wait_finished(job1)[0] == 'done'
        assert client.wait_finished(job2)[0] == 'done'
    finally:
        pipe1.stop()
        pipe2.stop()
    assert first.read(0, len(data1)) == data1
    assert second.read(0, len(data2)) == data2


def test_sigterm_during_a_job(daemon, client, polkit, loop):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job, pipe = start_slow_flash(client, dev)
    try:
        h.wait_until(lambda: client.get(job, h.JOB_IFACE, 'BytesDone') > 0, 20, 'bytes written')
        daemon.signal(signal.SIGTERM)
        state, error_name, message = client.wait_finished(job)
        assert daemon.wait_exit(30) == 0
    finally:
        pipe.stop()
    assert state == 'failed'
    assert error_name == h.ERROR + 'Cancelled'
    assert 'SIGTERM' in message and 'partial image' in message
    # Nothing left half-open.
    assert h.can_open_exclusive(loop.node)
    log = daemon.read_log()
    assert 'every job has ended' in log


def test_finished_jobs_stay_for_a_minute(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    client.wait_finished(job)
    finished_at = time.monotonic()
    # Late readers still find the result.
    client.iterate(2)
    assert job in client.managed_objects()
    assert client.get(job, h.JOB_IFACE, 'State') == 'done'
    removed = lambda: any(m == 'InterfacesRemoved' and args[0] == job  # noqa: E731
                          for path, iface, m, args in client.signals)
    h.wait_until(removed, 90, 'InterfacesRemoved for the job')
    assert time.monotonic() - finished_at >= 55
    assert job not in client.managed_objects()
