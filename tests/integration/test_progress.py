# SPDX-License-Identifier: GPL-2.0-or-later
'''One progress from start to end: a job's Progress, BytesDone/BytesTotal
and its Progress signal cover writing, syncing and verifying, never go
back, and reach the end only when the job is done; State names the phases
in order; Rate and ExpectedEndTime appear only once they mean something;
bmapctl shows one bar, through bmapd and in-process. And a Finished result
a GUI can show as it is.'''

import json
import os
import re
import shutil

import pytest

import bmapd_harness as h
from test_cli import bmapctl  # noqa: F401 (a fixture)

pytestmark = pytest.mark.loop

PHASES = ['authorizing', 'preparing', 'writing', 'syncing', 'verifying', 'done']


def mapped_bytes(image):
    return sum(length for _, length in image['ranges'])


def job_properties_changed(client, job):
    '''The changed properties of @job, in the order they were announced.'''
    return [args[1] for path, iface, member, args in client.signals
            if path == job and member == 'PropertiesChanged' and args[0] == h.JOB_IFACE]


def timeline(client, job):
    '''What the client heard of @job's progress, for failure messages.'''
    out = []
    for path, iface, member, args in client.signals:
        if path == job and member == 'Progress':
            out.append(('Progress', args))
        elif path == job and member == 'PropertiesChanged':
            out.append({k: v for k, v in args[1].items()
                        if k in ('State', 'BytesDone', 'Rate', 'ExpectedEndTime')})
    return out


def test_progress_covers_every_phase_and_never_goes_back(daemon, client, polkit, loop, image,
                                                         fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']),
                       verify_written=True)
    state, error_name, message = client.wait_finished(job)
    assert state == 'done', message
    client.iterate(0.2)

    # The whole job: writing and reading back the mapped bytes, and the
    # sync of what was not written back yet: planned as all of it (1.6 MiB
    # is less than two writeback windows), the real share once known.
    mapped = mapped_bytes(image)
    props = client.get_all(job, h.JOB_IFACE)
    assert 2 * mapped <= props['BytesTotal'] <= 3 * mapped
    assert props['BytesDone'] == props['BytesTotal'] and props['Progress'] == 1.0

    signals = client.job_signals(job, 'Progress')
    assert signals, 'no Progress signal'
    done = [s[0] for s in signals]
    assert done == sorted(done), f'bytes_done went back: {done}'
    totals = [s[1] for s in signals]
    assert totals[0] == 3 * mapped, 'the plan: writing, syncing and verifying every byte'
    assert totals == sorted(totals, reverse=True), f'the total grew: {totals}'
    assert signals[-1][0] == signals[-1][1], 'the last Progress signal is not the end'

    changes = job_properties_changed(client, job)
    progress = [c['Progress'] for c in changes if 'Progress' in c]
    assert progress == sorted(progress), f'Progress went back: {progress}'
    assert progress[-1] == 1.0
    # Every phase is announced, in order, and the bar is below the end
    # while a phase before the last runs (the last one's final report may
    # reach it just before done).
    states = [c['State'] for c in changes if 'State' in c]
    assert states == [s for s in PHASES if s in states]
    assert {'writing', 'syncing', 'verifying', 'done'} <= set(states)
    for c in changes:
        if 'Progress' in c and c.get('State') in ('preparing', 'writing', 'syncing'):
            assert c['Progress'] < 1.0, timeline(client, job)


def test_rate_and_end_time_only_once_meaningful(daemon, client, polkit, loop, tmp_path, fds):
    '''A slow stream of 12 MiB, all of it mapped, written a MiB at a time:
    the rate shows up only after several samples, and the expected end
    time never before it.'''
    if not shutil.which('bmaptool'):
        pytest.skip('bmaptool is not installed (needed to make the bmap)')
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    path = str(tmp_path / 'full.img')
    data = h.pattern('full', 12 * h.MiB)
    with open(path, 'wb') as f:
        f.write(data)
    h.bmaptool_create(path, path + '.bmap')
    feed = h.SlowPipe(data, chunk=256 * 1024, delay=0.05).start()
    try:
        job = client.flash(dev, feed.read_fd, bmap_fd=fds(path + '.bmap'))
        state, _, message = client.wait_finished(job)
    finally:
        feed.stop()
        feed.close_read()
    assert state == 'done', message
    client.iterate(0.2)

    signals = client.job_signals(job, 'Progress')
    # One sample cannot make a rate, nor two: the copy writes MiBs at a
    # time, and a rate needs five reports, so several MiB are written
    # before one is shown.
    assert signals[0][2] == 0, signals[:3]
    first_rate = next((s for s in signals if s[2] > 0), None)
    assert first_rate is not None and first_rate[0] >= 4 * h.MiB, timeline(client, job)
    # In the order the client got them: no end time before a rate.
    rate_known = end_known = False
    for path, iface, member, args in client.signals:
        if path != job:
            continue
        if member == 'Progress':
            rate_known = rate_known or args[2] > 0
        elif member == 'PropertiesChanged' and args[0] == h.JOB_IFACE:
            rate_known = rate_known or args[1].get('Rate', 0) > 0
            if args[1].get('ExpectedEndTime', 0) > 0:
                assert rate_known, ('an expected end time before any rate', timeline(client, job))
                end_known = True
    # Writing took over two seconds: the rate and end time were shown.
    assert rate_known and end_known, timeline(client, job)
    props = client.get_all(job, h.JOB_IFACE)
    assert props['Rate'] == 0 and props['ExpectedEndTime'] == 0  # done


def assert_one_bar(updates):
    '''@updates: (state, fraction) in order; the fraction never goes back.'''
    fractions = [f for _, f in updates]
    assert fractions == sorted(fractions), f'the bar went back: {updates}'
    assert fractions[-1] == 1.0


def test_bmapctl_json_progress_is_one_bar(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    proc = bmapctl('--json', 'copy', '--bmap', image['bmap'], '--verify-written', image['path'],
                   loop.node, check=0)
    objects = [json.loads(line) for line in proc.stdout.splitlines()]
    updates = [(o['state'], o['progress']) for o in objects if 'progress' in o]
    assert {'writing', 'verifying'} <= {s for s, _ in updates}
    assert_one_bar(updates)


def test_bmapctl_plain_progress_never_drops(daemon, client, polkit, loop, image, bmapctl):
    '''The lines bmapctl writes when stderr is not a terminal, one at each
    phase: their percentages only grow.'''
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    proc = bmapctl('copy', '--bmap', image['bmap'], '--verify-written', image['path'],
                   loop.node, check=0)
    percents = [int(m.group(1)) for m in re.finditer(r'^\w+\s+(\d+)%', proc.stderr, re.M)]
    assert percents, proc.stderr
    assert percents == sorted(percents), proc.stderr
    assert re.search(r'^verifying\s+\d+%', proc.stderr, re.M), proc.stderr


def test_in_process_copy_is_one_bar(image, tmp_path, bmapctl):
    '''bmapctl writing a file itself reports the same whole-job progress.'''
    out = str(tmp_path / 'out.img')
    proc = bmapctl('--json', 'copy', '--bmap', image['bmap'], '--verify-written', image['path'],
                   out, check=0)
    objects = [json.loads(line) for line in proc.stdout.splitlines()]
    updates = [(o['state'], o['progress']) for o in objects if 'progress' in o]
    assert [s for s, _ in updates if s == 'verifying'], updates
    assert_one_bar(updates)
    assert h.file_sha256(out) == h.file_sha256(image['path'])


def test_failed_result_is_a_sentence(daemon, client, polkit, loop, image, tmp_path, fds):
    '''A checksum mismatch while writing: ErrorName for code, ErrorMessage
    one sentence a GUI shows as it is.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    bad = str(tmp_path / 'bad.img')
    with open(image['path'], 'rb') as f:
        data = bytearray(f.read())
    offset, length = image['ranges'][-1]
    data[offset + length // 2] ^= 0xff
    with open(bad, 'wb') as f:
        f.write(data)
    job = client.flash(dev, fds(bad), bmap_fd=fds(image['bmap']), description='bad.img')
    state, error_name, message = client.wait_finished(job)
    assert (state, error_name) == ('failed', h.ERROR + 'ChecksumMismatch'), message
    assert message.startswith(f'Flashing "bad.img" onto {loop.node} failed: '), message
    assert message.endswith('.') and not message.endswith('..'), message
    assert message == client.get(job, h.JOB_IFACE, 'ErrorMessage')


def test_canceled_result_is_a_sentence(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    with open(image['path'], 'rb') as f:
        data = f.read()
    feed = h.SlowPipe(data, chunk=64 * 1024, delay=0.2).start()
    try:
        job = client.flash(dev, feed.read_fd, bmap_fd=fds(image['bmap']), description='disk.img')
        client.wait_state(job, 'writing')
        client.cancel(job)
        state, error_name, message = client.wait_finished(job)
    finally:
        feed.stop()
        feed.close_read()
    assert (state, error_name) == ('canceled', '')
    assert re.fullmatch(rf'Flashing "disk\.img" onto {loop.node} was canceled by uid {os.geteuid()}'
                        r' \(:[0-9.]+\) (after|before|while) .*\.', message), message
