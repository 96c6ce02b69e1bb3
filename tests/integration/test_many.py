# SPDX-License-Identifier: GPL-2.0-or-later
'''Many cards from one decode: FlashMany(ao devices, h image, a{sv} options)
through bmapd, and bmapctl copy IMAGE DEV1 DEV2 ... through bmapd and
in-process, onto loop devices; cards that write at a card's pace and one
that is pulled mid-way are loop devices over qemu-storage-daemon FUSE
exports (test_faults.FaultyDisk).'''

import json
import os
import subprocess

import pytest
from gi.repository import GLib

import bmapd_harness as h
from test_cli import bmapctl  # noqa: F401 (a fixture)
from test_faults import faulty  # noqa: F401 (a fixture)

pytestmark = pytest.mark.loop

FILL = b'\xaa'


def assert_holds_image(disk, image, read=None):
    read = read or disk.read
    for offset, length in image['ranges']:
        assert read(offset, length) == h.read_range(image['path'], offset, length), \
            f'{disk.node}: range at {offset} differs'


def assert_untouched(loop, image):
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == FILL * length, f'{loop.node} was written'


def job_paths(client):
    return [path for path in client.managed_objects() if path.startswith(h.JOB_PREFIX)]


# ---- through bmapd --------------------------------------------------------------

def test_flash_many_four_cards_one_pulled(daemon, client, polkit, faulty, image, fds):
    '''Four cards that write at 512 KiB/s from one read of the image; the
    third is pulled (detached, its medium gone) mid-way: its job fails on
    its own while the other three finish and are read back and verified.'''
    cards = [faulty(write_bps=512 * 1024) for _ in range(4)]
    polkit.set_allowed([h.ACTION_FLASH])
    devices = [client.wait_device(card.node) for card in cards]
    jobs = client.flash_many(devices, fds(image['path']), bmap_fd=fds(image['bmap']),
                      verify_written=True)
    assert len(jobs) == 4 and len(set(jobs)) == 4
    for job, device in zip(jobs, devices):
        props = client.get_all(job, h.JOB_IFACE)
        assert props['Operation'] == 'flash' and props['Device'] == device

    pulled = cards[2]
    h.wait_until(lambda: client.get(jobs[2], h.JOB_IFACE, 'BytesWritten') > 0, 60,
                 'the third card written in part')
    pulled.detach()
    pulled.kill_export()

    state, name, message = client.wait_finished(jobs[2], timeout=120)
    assert state == 'failed' and name in (h.ERROR + 'IO', h.ERROR + 'DeviceGone'), \
        (state, name, message)
    assert pulled.node in message, message
    for i in (0, 1, 3):
        state, name, message = client.wait_finished(jobs[i], timeout=120)
        assert (state, name) == ('done', ''), message
        props = client.get_all(jobs[i], h.JOB_IFACE)
        assert props['BytesWritten'] == sum(length for _, length in image['ranges'])
        assert_holds_image(cards[i], image, read=cards[i].read_backing)
    # One read and decode of the image for the set.
    log = daemon.read_log()
    assert log.count('card 1 of 4 from one image') == 1, log
    assert h.can_open_exclusive(cards[0].node)


def test_flash_many_polkit_once(daemon, client, polkit, loop_factory, image, fds):
    '''Three devices: one polkit check for the set whose details name every
    device; three jobs, each done with its own progress, every device
    holding the image.'''
    loops = [loop_factory() for _ in range(3)]
    polkit.set_allowed([h.ACTION_FLASH])
    devices = [client.wait_device(loop.node) for loop in loops]
    polkit.clear_checks()
    jobs = client.flash_many(devices, fds(image['path']), bmap_fd=fds(image['bmap']),
                      description='disk.img')
    checks = polkit.checks()
    assert len(checks) == 1, checks
    action, details = checks[0][0], checks[0][1]
    assert action == h.ACTION_FLASH
    for loop in loops:
        assert loop.node in details['device'].split(), details
        assert loop.node in details['devices'].split(), details
    for job, loop in zip(jobs, loops):
        state, name, message = client.wait_finished(job, timeout=120)
        assert (state, name) == ('done', ''), message
        props = client.get_all(job, h.JOB_IFACE)
        assert props['Description'] == 'disk.img'
        assert props['Progress'] == 1.0
        assert client.job_signals(job, 'Progress'), 'no progress of its own'
        assert_holds_image(loop, image)


@pytest.mark.parametrize('bad', ['too-small', 'duplicate', 'read-only', 'busy'])
def test_flash_many_bad_device_refuses_all(daemon, client, polkit, loop_factory, image, fds,
                                           bad):
    '''One device of the set fails a check: the whole call is refused,
    naming it; no job is left and nothing is written on any device.'''
    loops = [loop_factory() for _ in range(2)]
    polkit.set_allowed([h.ACTION_FLASH])
    devices = [client.wait_device(loop.node) for loop in loops]
    expected, node = None, None
    held = None
    if bad == 'too-small':
        small = loop_factory(size=4 * h.MiB)
        devices.append(client.wait_device(small.node))
        expected, node = 'DeviceTooSmall', small.node
    elif bad == 'duplicate':
        devices.append(devices[0])
        expected, node = 'InvalidArgument', loops[0].name
    elif bad == 'read-only':
        ro = loop_factory()
        devices.append(client.wait_device(ro.node))
        subprocess.run(['blockdev', '--setro', ro.node], check=True)
        ro.uevent('change')
        h.wait_until(lambda: client.get(devices[-1], h.DEVICE_IFACE, 'ReadOnly'), 20,
                     f'{ro.node} read-only')
        expected, node = 'ReadOnly', ro.node
    else:
        # Held open exclusively by another program: seen when the device
        # is opened, after polkit said yes; the jobs made for the devices
        # before it end at once.
        busy = loop_factory()
        devices.append(client.wait_device(busy.node))
        held = os.open(busy.node, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
        expected, node = 'DeviceBusy', busy.node
    polkit.clear_checks()
    before = set(job_paths(client))
    try:
        with pytest.raises(h.DBusCallError) as err:
            client.flash_many(devices, fds(image['path']), bmap_fd=fds(image['bmap']))
    finally:
        if held is not None:
            os.close(held)
        if bad == 'read-only':
            # The flag stays with the loop device after it is detached.
            subprocess.run(['blockdev', '--setrw', ro.node], check=False)
    assert err.value.name == h.ERROR + expected, (err.value.name, err.value.message)
    assert node in err.value.message, err.value.message
    # Jobs made for the devices before a busy one end with the call.
    h.wait_until(lambda: set(job_paths(client)) == before, 10, 'no job left')
    for loop in loops:
        assert_untouched(loop, image)


def test_flash_many_refuses_bad_calls(daemon, client, polkit, loop_factory, image, fds):
    '''No devices, more than 16, and "diskseq" (one medium) are refused
    with what to do; "diskseqs" must have one value per device.'''
    loops = [loop_factory() for _ in range(2)]
    polkit.set_allowed([h.ACTION_FLASH])
    devices = [client.wait_device(loop.node) for loop in loops]
    cases = [
        ([], {}, 'writes 1 to 16'),
        ([devices[0]] * 17, {}, 'writes 1 to 16'),
        (devices, {'diskseq': GLib.Variant('t', 1)}, '"diskseqs"'),
        (devices, {'diskseqs': GLib.Variant('at', [1])}, 'one for each device'),
    ]
    for devs, options, words in cases:
        with pytest.raises(h.DBusCallError) as err:
            client.flash_many(devs, fds(image['path']), bmap_fd=fds(image['bmap']), **options)
        assert 'InvalidArgument' in err.value.message and words in err.value.message, \
            err.value.message
    assert job_paths(client) == []


def test_flash_many_diskseqs(daemon, client, polkit, loop_factory, image, fds):
    '''"diskseqs": the medium of each device must be the one listed; a
    changed one refuses the call, naming it.'''
    loops = [loop_factory() for _ in range(2)]
    polkit.set_allowed([h.ACTION_FLASH])
    devices = [client.wait_device(loop.node) for loop in loops]
    seqs = [client.get(dev, h.DEVICE_IFACE, 'DiskSeq') for dev in devices]
    with pytest.raises(h.DBusCallError) as err:
        client.flash_many(devices, fds(image['path']), bmap_fd=fds(image['bmap']),
                   diskseqs=GLib.Variant('at', [seqs[0], seqs[1] + 1000]))
    assert err.value.name == h.ERROR + 'MediaChanged', err.value.name
    assert loops[1].node in err.value.message, err.value.message
    jobs = client.flash_many(devices, fds(image['path']), bmap_fd=fds(image['bmap']),
                      diskseqs=GLib.Variant('at', seqs))
    for job, loop in zip(jobs, loops):
        assert client.wait_finished(job, timeout=120)[0] == 'done'
        assert_holds_image(loop, image)


def test_flash_many_cancel_one(daemon, client, polkit, faulty, image, fds):
    '''Cancel on one card's job stops that card only.'''
    cards = [faulty(write_bps=256 * 1024) for _ in range(2)]
    polkit.set_allowed([h.ACTION_FLASH, h.ACTION_CANCEL])
    devices = [client.wait_device(card.node) for card in cards]
    jobs = client.flash_many(devices, fds(image['path']), bmap_fd=fds(image['bmap']))
    h.wait_until(lambda: client.get(jobs[0], h.JOB_IFACE, 'BytesWritten') > 0, 60,
                 'the first card written in part')
    client.cancel(jobs[0])
    assert client.wait_finished(jobs[0], timeout=120)[0] == 'canceled'
    state, name, message = client.wait_finished(jobs[1], timeout=120)
    assert (state, name) == ('done', ''), message
    assert_holds_image(cards[1], image, read=cards[1].read_backing)


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nMaxJobs=2\n'])
def test_flash_many_beyond_max_jobs(daemon, client, polkit, loop_factory, image, fds):
    '''A set larger than MaxJobs would wait in the queue for ever: refused.'''
    max_jobs = 2
    loops = [loop_factory(size=12 * h.MiB) for _ in range(max_jobs + 1)]
    polkit.set_allowed([h.ACTION_FLASH])
    devices = [client.wait_device(loop.node) for loop in loops]
    with pytest.raises(h.DBusCallError) as err:
        client.flash_many(devices, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert err.value.name == h.ERROR + 'Limit', err.value.name
    assert 'MaxJobs=2' in err.value.message, err.value.message
    assert job_paths(client) == []


# ---- bmapctl copy IMAGE DEST1 DEST2 ... ----------------------------------------

def result_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith('bmapctl: wrote ')]


def test_bmapctl_copy_many_through_bmapd(daemon, client, polkit, loop_factory, image, bmapctl):
    '''Three whole disks: one FlashMany call (one polkit check naming all
    three), one result line for each, every disk holding the image.'''
    loops = [loop_factory() for _ in range(3)]
    polkit.set_allowed([h.ACTION_FLASH])
    for loop in loops:
        client.wait_device(loop.node)
    polkit.clear_checks()
    proc = bmapctl('copy', image['path'], *[loop.node for loop in loops], check=0)
    assert len(polkit.checks()) == 1
    assert set(polkit.checks()[0][1]['devices'].split()) == {loop.node for loop in loops}
    lines = result_lines(proc.stderr)
    assert len(lines) == 3, proc.stderr
    for loop, line in zip(loops, lines):
        assert line.split(' to ')[1].startswith(loop.node + ' '), line
        assert 'checksums verified' in line
        assert_holds_image(loop, image)
    # One job for each device, all from one call.
    assert len(job_paths(client)) == 3


def test_bmapctl_copy_many_in_process_one_fails(faulty, image, bmapctl):
    '''In-process (--local): four cards, the third failing its writes (EIO
    in the second range): it is reported on its own, the others are
    written and read back, and the exit status is 1.'''
    offset, length = image['ranges'][1]
    cards = [faulty(write_error_at=offset + length // 2) if i == 2 else faulty()
             for i in range(4)]
    proc = bmapctl('--local', 'copy', '--verify-written', image['path'],
                   *[card.node for card in cards])
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = result_lines(proc.stderr)
    assert len(lines) == 3, proc.stderr
    assert not any(cards[2].node + ' ' in line for line in lines), proc.stderr
    assert f'bmapctl: {cards[2].node}: ' in proc.stderr, proc.stderr
    for i in (0, 1, 3):
        assert any(cards[i].node + ' ' in line and 'read back and verified' in line
                   for line in lines), proc.stderr
        assert_holds_image(cards[i], image, read=cards[i].read_backing)


def test_bmapctl_copy_many_json_and_quiet(loop_factory, image, bmapctl, tmp_path):
    '''In-process onto a device and two files: --json gives one object per
    destination; -q prints nothing and still writes them all.'''
    loop = loop_factory()
    files = [str(tmp_path / 'one.img'), str(tmp_path / 'two.img')]
    proc = bmapctl('--json', '--local', 'copy', image['path'], loop.node, *files, check=0)
    results = [json.loads(line) for line in proc.stdout.splitlines() if '"result"' in line]
    assert [r['destination'] for r in results] == [loop.node, *files]
    assert all(r['result'] == 'done' and r['verified'] for r in results)
    for path in files:
        assert h.read_range(path, 0, image['size']) == h.read_range(image['path'], 0,
                                                                     image['size'])
    os.unlink(files[0])
    proc = bmapctl('-q', 'copy', image['path'], *files, check=0)
    assert proc.stderr == '' and proc.stdout == ''
    assert_holds_image(loop, image)


def test_bmapctl_copy_many_refuses_twice(image, bmapctl, tmp_path):
    path = str(tmp_path / 'x.img')
    proc = bmapctl('copy', image['path'], path, path, check=2)
    assert 'given twice' in proc.stderr
    assert not os.path.exists(path)


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nMaxJobs=2\n'])
def test_flash_many_waits_for_room_for_all(daemon, client, polkit, faulty, loop_factory, image,
                                           fds):
    '''MaxJobs=2 with one slow flash running: a set of two waits "queued"
    (the one place free is not taken by half of it and written alone),
    and both start together once the flash ended.'''
    slow = faulty(write_bps=256 * 1024)
    loops = [loop_factory() for _ in range(2)]
    polkit.set_allowed([h.ACTION_FLASH])
    slow_dev = client.wait_device(slow.node)
    devices = [client.wait_device(loop.node) for loop in loops]
    first = client.flash(slow_dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    h.wait_until(lambda: client.get(first, h.JOB_IFACE, 'State') == 'writing', 30,
                 'the single flash writing')
    jobs = client.flash_many(devices, fds(image['path']), bmap_fd=fds(image['bmap']))
    # The slow flash is still writing: neither card has started.
    assert client.get(first, h.JOB_IFACE, 'State') == 'writing'
    for job in jobs:
        assert client.get(job, h.JOB_IFACE, 'State') == 'queued'
        assert client.get(job, h.JOB_IFACE, 'BytesWritten') == 0
    assert client.wait_finished(first, timeout=120)[0] == 'done'
    for job, loop in zip(jobs, loops):
        state, name, message = client.wait_finished(job, timeout=120)
        assert (state, name) == ('done', ''), message
        assert_holds_image(loop, image)
    assert 'card 1 of 2 from one image' in daemon.read_log()


# ---- eject and power-off, each card after its own last step ----------------------

def test_flash_many_power_off_each_card(daemon, client, polkit, loop_factory, image, fds):
    '''power-off with several cards: each card's job says, after its own
    flash, why it was not powered off (loop devices are not USB); every
    card is written and the jobs end done.'''
    loops = [loop_factory() for _ in range(2)]
    polkit.set_allowed([h.ACTION_FLASH])
    devices = [client.wait_device(loop.node) for loop in loops]
    polkit.clear_checks()
    jobs = client.flash_many(devices, fds(image['path']), bmap_fd=fds(image['bmap']),
                      power_off=True)
    # Part of what polkit allows, as for one device.
    details = polkit.checks()[0][1]
    assert (details['options.power-off'], details['options.eject']) == ('true', 'false'), details
    for loop, job in zip(loops, jobs):
        state, _, message = client.wait_finished(job)
        assert state == 'done', message
        assert client.get(job, h.JOB_IFACE, 'Result') == \
            f'not powered off: {loop.node} is not a USB device'
        assert_holds_image(loop, image)


@pytest.mark.parametrize('where', ['--local', '--daemon'])
def test_bmapctl_copy_many_eject(daemon, client, polkit, loop_factory, image, bmapctl, where):
    '''bmapctl copy --eject with two destinations, in-process and through
    bmapd: each result line says why its device was not ejected.'''
    loops = [loop_factory() for _ in range(2)]
    polkit.set_allowed([h.ACTION_FLASH])
    for loop in loops:
        client.wait_device(loop.node)
    proc = bmapctl(where, 'copy', '--eject', image['path'], *[loop.node for loop in loops])
    lines = result_lines(proc.stderr)
    assert len(lines) == 2, proc.stderr
    for loop, line in zip(loops, lines):
        assert f'not ejected: {loop.node} is not a SCSI, USB or CD-ROM drive' in line, proc.stderr
        # What reached each device, not nothing (through bmapd, read from
        # the job once it ended).
        assert line.startswith('bmapctl: wrote 1.6 MiB '), line  # the 4 ranges: 1646592 bytes
        assert_holds_image(loop, image)


def test_bmapctl_copy_many_eject_refuses_a_file(loop_factory, image, bmapctl, tmp_path):
    loop = loop_factory()
    path = str(tmp_path / 'x.img')
    proc = bmapctl('copy', '--power-off', image['path'], loop.node, path, check=2)
    assert f'--power-off needs block devices: {path} is not one' in proc.stderr
    assert not os.path.exists(path)
