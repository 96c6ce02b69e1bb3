# SPDX-License-Identifier: GPL-2.0-or-later
'''What one caller can do to the others: nothing it controls runs on bmapd's
event loop (a pipe it plays with, an image that takes long to open), its
calls in flight count against its own limits only, nothing is held for a
call until polkit says yes, authorized jobs beyond MaxJobs wait in a queue,
and a medium swapped while polkit is asked is never written.

The attacks run as uid 65534 where they need no privilege.'''

import json
import random
import lzma
import os
import subprocess
import time

import pytest

import bmapd_harness as h
from test_autoflash_loop import udevd  # noqa: F401 (a fixture)

pytestmark = pytest.mark.loop

SLOW = dict(chunk=64 * 1024, delay=0.05)  # a 4 MiB image takes seconds


def start_as_nobody(script):
    '''Runs python @script as uid 65534 in the background.'''
    return subprocess.Popen(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
                             h.PYTHON, '-c', script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc):
    proc.stdin.close()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def read_line(proc, prefix):
    '''The next line of @proc's output, which must start with @prefix.'''
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f'expected {prefix!r}, got {line!r}; stderr: {err}')
    return line[len(prefix):].strip()


def ping(client):
    '''bmapd answers a Peer.Ping and a GetAll: its loop is not stuck. The
    timeout is only there to turn a stuck loop into a failure.'''
    client.call(h.MANAGER_PATH, 'org.freedesktop.DBus.Peer', 'Ping', timeout_ms=10000)
    props = client.call(h.MANAGER_PATH, 'org.freedesktop.DBus.Properties', 'GetAll',
                        h.GLib.Variant('(s)', (h.MANAGER_IFACE,)), timeout_ms=10000)[0]
    assert 'Version' in props


NOBODY_PRELUDE = '''
import json, os, sys, time
sys.path.insert(0, {here!r})
import bmapd_harness as h
c = h.Client({address!r})

def reply_of(box, timeout=60):
    h.wait_until(lambda: box, timeout, 'the reply')
    if 'error' in box:
        return [box['error'].name, box['error'].message]
    return ['ok', str(box['result'])]
'''


def nobody_script(bus, body):
    return NOBODY_PRELUDE.format(here=h.HERE, address=bus.address) + body


@pytest.mark.parametrize('daemon_config',
                         ['[Daemon]\nRequestTimeoutSec=2\nMaxRequestsPerUser=16\n'])
def test_stolen_wakeup_byte(daemon, bus, client, polkit, loop, image):
    '''A caller writes a byte into its bmap pipe and reads it back from its own
    end once bmapd has been woken for it: bmapd's loop must not sleep in
    read() meanwhile, and the call fails once RequestTimeoutSec has passed
    without a bmap.

    The window between bmapd's wakeup and its read is short; the attacker
    widens it: the byte arrives together with the end of another call's
    bmap, whose image (many empty xz streams) takes a while to open, and is
    stolen while that happens. Dispatch order is not fixed: a few tries.'''
    dev = client.wait_device(loop.node)
    with open(image['bmap']) as f:
        bmap_text = f.read()
    proc = start_as_nobody(nobody_script(bus, f'''
import lzma, tempfile
one = lzma.compress(b'', format=lzma.FORMAT_XZ)
xz = tempfile.NamedTemporaryFile(suffix='.xz')
xz.write(one * 10000)
xz.flush()
held = []
stolen = 0
stuck = False
victims = []
for attempt in range(4):
    p1r, p1w = os.pipe()
    p2r, p2w = os.pipe()
    ir, iw = os.pipe()
    held += [p2w, iw]
    os.write(p1w, {bmap_text!r}.encode())
    image_fd = os.open(xz.name, os.O_RDONLY)
    c.flash({dev!r}, image_fd, bmap_fd=p1r, block=False)
    victims.append(c.flash({dev!r}, ir, bmap_fd=p2r, block=False))
    c.iterate(0.5)
    # A description of our own, non-blocking; bmapd's stays blocking.
    thief = os.open('/proc/self/fd/%d' % p2r, os.O_RDONLY | os.O_NONBLOCK)
    # Both ready in one wakeup; the end of the bmap first, so it is
    # handled first.
    os.close(p1w)
    os.write(p2w, b'<')
    time.sleep(0.3)
    # And bytes taken back at once, before anyone else could.
    for i in range(200):
        if i > 0:
            os.write(p2w, b'<')
        try:
            stolen += len(os.read(thief, 1))
        except BlockingIOError:
            pass
    try:
        c.call(h.MANAGER_PATH, 'org.freedesktop.DBus.Peer', 'Ping', timeout_ms=20000)
    except Exception:
        stuck = True
        break
print('STOLEN', stolen, 'STUCK' if stuck else 'answering', flush=True)
print('REPLY', json.dumps(reply_of(victims[0])), flush=True)
sys.stdin.read()  # the pipes stay open until the test is done
'''))
    try:
        stolen = read_line(proc, 'STOLEN')
        assert stolen.endswith('answering'), stolen
        assert int(stolen.split()[0]) > 0
        # The other callers are answered while that call waits.
        ping(client)
        name, message = json.loads(read_line(proc, 'REPLY'))
        assert name == h.ERROR + 'InvalidArgument', message
        assert 'RequestTimeoutSec=2' in message and 'bmap' in message
        ping(client)
    finally:
        stop(proc)
    assert 'Flash call from uid 65534 refused' in daemon.read_log()


def make_empty_xz_streams(path, n):
    one = lzma.compress(b'', format=lzma.FORMAT_XZ)
    with open(path, 'wb') as f:
        f.write(one * n)


# liblzma joins stream indexes in quadratic time: 20,000 empty streams take
# 3 s to open on an idle 2-core VM, 25,000 took 12 s under load.
N_STREAMS = 20000


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nRequestTimeoutSec=600\n'])
def test_many_empty_xz_streams(daemon, client, polkit, loop, fds, tmp_path):
    '''An xz image of many empty streams takes seconds to open (its index is
    read stream by stream): bmapd answers everyone else meanwhile.'''
    polkit.set_allowed([])
    path = str(tmp_path / 'streams.img.xz')
    make_empty_xz_streams(path, N_STREAMS)
    dev = client.wait_device(loop.node)
    box = client.flash(dev, fds(path), nobmap=True, block=False)
    sent = time.monotonic()
    ping(client)
    answered = time.monotonic() - sent
    print(f'ping answered after {answered:.3f} s')
    # polkit is asked once the image is open: not yet, so the ping was
    # answered while the image was being read.
    assert polkit.checks() == []
    h.wait_until(lambda: box, 300, 'the Flash reply')
    opened = time.monotonic() - sent
    print(f'the image took {opened:.1f} s to open')
    assert box['error'].name == h.ERROR + 'NotAuthorized'
    assert [c[0] for c in polkit.checks()] == [h.ACTION_FLASH]


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nMaxRequestsPerUser=4\n'])
def test_unprivileged_calls_do_not_lock_root_out(daemon, bus, client, polkit, loop, image,
                                                 fds):
    '''uid 65534 holds Flash and AddAutoFlash calls whose bmap pipes it never
    closes: its own extra calls get Limit naming the per-user limit, and
    root's calls are answered and authorized as usual.'''
    polkit.set_allowed([h.ACTION_FLASH, h.ACTION_AUTO_FLASH])
    dev = client.wait_device(loop.node)
    proc = start_as_nobody(nobody_script(bus, f'''
import tempfile
image = tempfile.TemporaryFile()
image.write(b'\\0' * 4096)
image.flush()
held = []  # the write ends, never closed
boxes = []
for i in range(8):
    r, w = os.pipe()
    held.append(w)
    boxes.append(c.flash({dev!r}, image.fileno(), bmap_fd=r, block=False))
for i in range(16):
    r, w = os.pipe()
    held.append(w)
    boxes.append(c.call_async(h.MANAGER_PATH, h.MANAGER_IFACE, 'AddAutoFlash',
                              h.GLib.Variant('(ha{{sv}}a{{sv}})',
                                             (0, {{}}, {{'bmap': h.GLib.Variant('h', 1)}})),
                              [image.fileno(), r]))
# The refusals come at once; give the others a moment to show they wait.
try:
    h.wait_until(lambda: sum(1 for b in boxes if b) >= 20, 30, 'the refusals')
except Exception:
    pass
c.iterate(0.5)
print('REFUSED', json.dumps([reply_of(b) for b in boxes if b]), flush=True)
print('PENDING', sum(1 for b in boxes if not b), flush=True)
sys.stdin.read()
'''))
    try:
        refused = json.loads(read_line(proc, 'REFUSED'))
        pending = int(read_line(proc, 'PENDING'))
        assert pending == 4
        assert len(refused) == 20
        for name, message in refused:
            assert name == h.ERROR + 'Limit', message
            assert 'uid 65534' in message and 'MaxRequestsPerUser=4' in message
        # root is not locked out.
        job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
        assert client.wait_finished(job)[0] == 'done'
        rule = client.add_auto_flash(fds(image['path']), bmap_fd=fds(image['bmap']),
                                     match={'serial': 'no-such-card'})
        assert rule.startswith(h.AUTOFLASH_PREFIX)
    finally:
        stop(proc)
    # Only root's calls reached polkit.
    assert all(c[4] == client.unique_name for c in polkit.checks())


def test_pending_authorization_holds_nothing(daemon, bus, client, polkit, loop, image, fds):
    '''While polkit is asked about one call, nothing holds the device: a
    second caller's authorized flash goes ahead, and the first, authorized
    afterwards, gets DeviceBusy.'''
    polkit.set_allowed([h.ACTION_FLASH])
    polkit.set_hold(True)
    dev = client.wait_device(loop.node)
    first = h.Client(bus.address)
    try:
        box = first.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), block=False)
        h.wait_until(lambda: polkit.held_count() == 1, 20, 'the first polkit check')
        assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
        polkit.set_hold(False)
        data = h.pattern('second', 4 * h.MiB)
        pipe = h.SlowPipe(data, **SLOW).start()
        try:
            job = client.flash(dev, pipe.read_fd, nobmap=True)
            pipe.close_read()
            client.wait_state(job, ('writing',))
            assert client.get(dev, h.DEVICE_IFACE, 'Job') == job
            # Two authorized requests for one device: the second is busy.
            polkit.release_held()
            h.wait_until(lambda: box, 20, 'the first Flash reply')
            assert box['error'].name == h.ERROR + 'DeviceBusy'
            assert job.rsplit('/', 1)[1] in box['error'].message
            assert client.wait_finished(job)[0] == 'done'
        finally:
            pipe.stop()
    finally:
        first.close()
    assert loop.read(0, len(data)) == data


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nMaxJobs=1\n'])
def test_queue_beyond_max_jobs(daemon, client, polkit, loop_factory, image, fds):
    '''MaxJobs=1 and three flashes onto three devices: all three succeed,
    one after the other, the later ones queued first.'''
    polkit.set_allowed([h.ACTION_FLASH])
    loops = [loop_factory() for _ in range(3)]
    devs = [client.wait_device(lo.node) for lo in loops]
    data = h.pattern('queue', 2 * h.MiB)
    pipe = h.SlowPipe(data, **SLOW).start()
    try:
        first = client.flash(devs[0], pipe.read_fd, nobmap=True)
        pipe.close_read()
        later = [client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
                 for dev in devs[1:]]
        for job, dev in zip(later, devs[1:]):
            props = client.get_all(job, h.JOB_IFACE)
            assert props['State'] == 'queued'
            assert props['BytesDone'] == 0 and props['Progress'] == 0.0
            assert client.get(dev, h.DEVICE_IFACE, 'Job') == job
        assert client.wait_finished(first)[0] == 'done'
        for job in later:
            assert client.wait_finished(job)[0] == 'done'
    finally:
        pipe.stop()
    # In order: each started once the one before had finished.
    jobs = [first] + later
    starts = [client.get(job, h.JOB_IFACE, 'StartTime') for job in jobs]
    states = {job: [args[1]['State'] for path, iface, m, args in client.signals
                    if path == job and m == 'PropertiesChanged' and 'State' in args[1]]
              for job in jobs}
    for job in later:
        assert states[job][0] == 'preparing', states[job]
    assert starts == sorted(starts)
    assert loops[0].read(0, len(data)) == data
    for lo in loops[1:]:
        for offset, length in image['ranges']:
            assert lo.read(offset, length) == h.read_range(image['path'], offset, length)


def test_medium_swapped_while_authorizing(daemon, client, polkit, loop, image, fds, tmp_path):
    '''A medium of the same size but another diskseq put in the device while
    polkit is asked: MediaChanged once authorized, nothing written.'''
    polkit.set_allowed([h.ACTION_FLASH])
    polkit.set_hold(True)
    dev = client.wait_device(loop.node)
    old_seq = client.get(dev, h.DEVICE_IFACE, 'DiskSeq')
    box = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), block=False)
    h.wait_until(lambda: polkit.held_count() == 1, 20, 'the polkit check')
    other = str(tmp_path / 'other-medium.img')
    with open(other, 'wb') as f:
        f.write(b'\x55' * loop.size)
    subprocess.run(['losetup', '-d', loop.node], check=True)
    subprocess.run(['losetup', loop.node, other], check=True)
    try:
        h.wait_until(lambda: client.device_path(loop.node)
                     and client.get(client.device_path(loop.node), h.DEVICE_IFACE, 'DiskSeq')
                     != old_seq, 20, 'the new medium')
        polkit.release_held()
        h.wait_until(lambda: box, 20, 'the Flash reply')
        assert box['error'].name == h.ERROR + 'MediaChanged', box['error'].message
        assert 'nothing was written' in box['error'].message
        assert h.read_range(other, 0, 4096) == b'\x55' * 4096
        h.drop_caches(loop.node)
        with open(other, 'rb') as f:
            assert f.read() == b'\x55' * loop.size
        assert client.jobs_for(dev) == []
    finally:
        subprocess.run(['losetup', '-d', loop.node], check=False)
        subprocess.run(['losetup', loop.node, loop.backing], check=False)


# ---- auto-flash: cards in loop devices, seen through udevd ----

@pytest.fixture
def udev_daemon(udevd, bus, client, polkit, tmp_path, daemon_config):
    '''bmapd, started once udevd runs.'''
    d = h.Daemon(bus, client, str(tmp_path), config=daemon_config)
    yield d
    rc = d.stop()
    print('---- bmapd log ----\n' + open(d.log_path).read())
    assert rc in (0, None) or rc == -15, f'bmapd exited with {rc}'


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nMaxJobs=1\n'])
def test_autoflash_takes_a_device_waiting_for_polkit(udev_daemon, client, polkit, loop, image,
                                                    fds, tmp_path):
    '''A card waits for its turn (MaxJobs=1, another job running); a Flash
    call for the same device is meanwhile waiting for polkit: the call holds
    nothing, so the card is flashed in its turn, and the call, authorized
    later, finds the device busy or denied, never half-written.'''
    size = 12 * h.MiB + 4096 * random.randint(1, 250)
    polkit.set_allowed([h.ACTION_FLASH, h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    rule = client.add_auto_flash(fds(image['path']), bmap_fd=fds(image['bmap']),
                                 match={'allow-non-removable': True, 'min-size': size,
                                        'max-size': size})
    busy_dev = client.wait_device(loop.node)
    pipe = h.SlowPipe(h.pattern('busy', 3 * h.MiB), **SLOW).start()
    reader = h.CardReader(str(tmp_path), size)
    try:
        running = client.flash(busy_dev, pipe.read_fd, nobmap=True)
        pipe.close_read()
        client.wait_state(running, ('writing',))
        reader.attach()
        card_dev = client.wait_device(reader.node)
        h.wait_until(lambda: f'takes the card in {reader.node}' in udev_daemon.read_log(), 20,
                     'the card to be queued')
        polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])  # not flash
        polkit.set_hold(True)
        box = client.flash(card_dev, fds(image['path']), bmap_fd=fds(image['bmap']),
                           block=False)
        h.wait_until(lambda: polkit.held_count() == 1 or box, 20, 'the polkit check')
        assert not box, box
        assert client.wait_finished(running)[0] == 'done'
        # The card's turn: it is flashed although a call for it waits.
        [(device, job, state)] = h.wait_until(
            lambda: client.rule_signals(rule)[:1], 60, 'the card')
        assert (device, state) == (card_dev, 'done')
        polkit.release_held()
        h.wait_until(lambda: box, 20, 'the Flash reply')
        assert box['error'].name == h.ERROR + 'NotAuthorized'
        for offset, length in image['ranges']:
            assert reader.read(offset, length) == h.read_range(image['path'], offset, length)
    finally:
        pipe.stop()
        reader.remove()


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nMaxJobs=1\n'])
def test_bmapctl_copies_wait_their_turn(daemon, bus, client, polkit, loop_factory, image):
    '''With MaxJobs=1 and a job running, two "bmapctl copy" onto two other
    devices: each shows its job "queued", follows it to the end, and none
    gets Limit.'''
    polkit.set_allowed([h.ACTION_FLASH])
    exe = os.environ.get('BMAPCTL') or os.path.join(os.path.dirname(os.path.dirname(h.HERE)),
                                                    'build', 'client', 'bmapctl')
    if not os.path.exists(exe):
        pytest.skip('bmapctl is not built (set BMAPCTL)')
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    loops = [loop_factory() for _ in range(3)]
    devs = [client.wait_device(lo.node) for lo in loops]
    pipe = h.SlowPipe(h.pattern('first', 2 * h.MiB), **SLOW).start()
    try:
        first = client.flash(devs[0], pipe.read_fd, nobmap=True)
        pipe.close_read()
        client.wait_state(first, ('writing',))
        procs = [subprocess.Popen([exe, 'copy', '--bmap', image['bmap'], image['path'],
                                   lo.node], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for lo in loops[1:]]
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        pipe.stop()
    assert client.wait_finished(first)[0] == 'done'
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        # bmapctl's own lines (what it erases) come before the job's states.
        lines = [line.split()[0] for line in err.splitlines()
                 if line.strip() and not line.startswith('bmapctl:')]
        assert lines[0] == 'queued', err
        assert 'done' in lines
    for lo in loops[1:]:
        for offset, length in image['ranges']:
            assert lo.read(offset, length) == h.read_range(image['path'], offset, length)
