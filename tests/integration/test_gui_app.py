# SPDX-License-Identifier: GPL-2.0-or-later
'''bmapd-flasher, the desktop app, end to end: under Xvfb, as an ordinary
user (uid 65534), against the real bmapd on the private test bus with the
polkit mock asking for a password. The app is started with an image and a
loop device on its command line and --flash, flashes it through bmapd,
prints the states it shows, and saves screenshots of its window while the
bar moves and at the result. The test checks the bytes on the device, the
states, the interactive polkit check, and keeps the screenshots in the build
folder (tests/gui-screenshots) for CI and for people to look at.'''

import bz2
import os
import random
import threading
import shutil
import signal
import struct
import subprocess
import tempfile
import zlib

import pytest

import bmapd_harness as h
# Card readers made through /dev/loop-control, and the udevd they need.
from test_autoflash_loop import readers, udevd  # noqa: F401 (fixtures)
# Loop devices with a partition table, their partitions offered by bmapd.
from test_partitions import partitioned  # noqa: F401 (a fixture)

pytestmark = pytest.mark.loop

# An odd size no other test's loop device has: the station's rule matches it.
STATION_CARD = 12 * h.MiB + 4096 * random.randint(251, 500)

NOBODY = 65534


def find_flasher():
    path = os.environ.get('BMAPD_FLASHER')
    if path:
        return path
    # Beside the daemon the harness runs: BUILD/daemon/bmapd -> BUILD/gui/.
    candidate = os.path.join(os.path.dirname(os.path.dirname(h.find_bmapd())), 'gui',
                             'bmapd-flasher')
    return candidate if os.access(candidate, os.X_OK) else None


def screenshot_dir():
    '''Where the screenshots are kept: the build folder, beside bmapd.'''
    build = os.path.dirname(os.path.dirname(h.find_bmapd()))
    path = os.path.join(build, 'tests', 'gui-screenshots')
    os.makedirs(path, exist_ok=True)
    return path


def png_size(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
    return struct.unpack('>II', head[16:24])


def png_distinct_rows(path):
    '''How many different pixel rows the PNG has: a blank or one-colour
    capture has one or two, a window with text and widgets many.'''
    with open(path, 'rb') as f:
        data = f.read()
    width, height = png_size(path)
    pos, idat = 8, b''
    while pos < len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        if kind == b'IDAT':
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    return len({raw[y * stride + 1:(y + 1) * stride] for y in range(height)})


class Xvfb:
    '''A virtual X display that any local user may draw on.'''

    def __init__(self):
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            ['Xvfb', '-displayfd', str(write_fd), '-screen', '0', '1280x900x24', '-ac',
             '-nolisten', 'tcp', '-noreset'],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            number = f.readline().strip()
        if not number:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError('Xvfb did not start')
        self.display = ':' + number

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def xvfb():
    if not shutil.which('Xvfb'):
        pytest.skip('Xvfb is not installed (package xvfb)')
    if not shutil.which('dbus-run-session'):
        pytest.skip('dbus-run-session is not installed (package dbus)')
    display = Xvfb()
    yield display
    display.stop()


@pytest.fixture
def flasher():
    path = find_flasher()
    if path is None:
        pytest.skip('bmapd-flasher is not built (meson option gui; needs gtk4 and libadwaita-1)')
    if not shutil.which('bmaptool'):
        pytest.skip('bmaptool is not installed (needed to make reference bmaps)')
    return path


@pytest.fixture
def user_dir():
    '''A directory the app's user (nobody) can read and write: home, image.'''
    path = tempfile.mkdtemp(prefix='bmapd-flasher-test-')
    os.chmod(path, 0o755)
    for sub in ('home', 'runtime', 'shots'):
        os.mkdir(os.path.join(path, sub), 0o700)
        os.chown(os.path.join(path, sub), NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_image(directory):
    '''A 96 MiB sparse image with 56 MiB of data in four ranges, its bmap,
    and the image bzip2-compressed: bzip2 decodes slowly enough that the
    window is seen with its bar moving, on any machine.'''
    path = os.path.join(directory, 'sdcard.img')
    ranges = [(0, 1 * h.MiB), (4 * h.MiB, 24 * h.MiB), (40 * h.MiB + 4096, 8192),
              (64 * h.MiB, 31 * h.MiB)]
    h.make_sparse_image(path, 96 * h.MiB, ranges)
    h.bmaptool_create(path, path + '.bmap')
    with open(path, 'rb') as src, open(path + '.bz2', 'wb') as dst:
        compressor = bz2.BZ2Compressor(1)
        while chunk := src.read(4 * h.MiB):
            dst.write(compressor.compress(chunk))
        dst.write(compressor.flush())
    shutil.copy(path + '.bmap', path + '.bz2.bmap')
    for name in ('sdcard.img.bz2', 'sdcard.img.bz2.bmap'):
        os.chmod(os.path.join(directory, name), 0o644)
    return path, path + '.bz2', ranges


def flasher_env(display, bus, user_dir):
    # A sanitizer build's options, when the run asks for them.
    sanitizers = {k: v for k, v in os.environ.items() if k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS')}
    return sanitizers | {
        'PATH': '/usr/bin:/bin',
        'HOME': os.path.join(user_dir, 'home'),
        'XDG_RUNTIME_DIR': os.path.join(user_dir, 'runtime'),
        'DISPLAY': display,
        'GDK_BACKEND': 'x11',
        # No GPU under Xvfb; the cairo renderer draws the same on every machine.
        'GSK_RENDERER': 'cairo',
        'GSETTINGS_BACKEND': 'memory',
        'GTK_A11Y': 'none',
        'LANG': 'C.UTF-8',
        'DBUS_SYSTEM_BUS_ADDRESS': bus.address,
    }


def start_flasher(flasher, display, bus, user_dir, args):
    # Its own session bus (GApplication wants one), as nobody: no root.
    return subprocess.Popen(
        ['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}', '--clear-groups',
         'dbus-run-session', '--', flasher, *args],
        env=flasher_env(display, bus, user_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)


def run_flasher(flasher, display, bus, user_dir, args, timeout=240):
    env = flasher_env(display, bus, user_dir)
    # Its own session bus (GApplication wants one), as nobody: no root.
    proc = subprocess.Popen(
        ['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}', '--clear-groups',
         'dbus-run-session', '--', flasher, *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f'bmapd-flasher did not finish:\n{out}\n{err}') from None
    return proc.returncode, out, err


def run_flasher_ok(flasher, display, bus, user_dir, args):
    '''run_flasher() that prints what the app said and expects it to exit 0:
    (stdout, stderr).'''
    rc, out, err = run_flasher(flasher, display, bus, user_dir, args)
    print(out)
    print(err)
    assert rc == 0, f'bmapd-flasher exited with {rc}'
    return out, err


def test_gui_app_flashes_loop_device(daemon, bus, polkit, loop_factory, xvfb, flasher, user_dir):
    raw, image, ranges = make_image(user_dir)
    loop = loop_factory(128 * h.MiB)
    polkit.set_challenge([h.ACTION_FLASH])  # the desktop's agent would ask for a password
    client = h.Client(bus.address)
    try:
        def listed():
            objects = client.call(h.MANAGER_PATH, 'org.freedesktop.DBus.ObjectManager',
                                  'GetManagedObjects')[0]
            return any(ifaces.get(h.DEVICE_IFACE, {}).get('Node') == loop.node
                       for ifaces in objects.values())
        h.wait_until(listed, 20, 'bmapd to list the loop device')
    finally:
        client.close()

    shots = os.path.join(user_dir, 'shots')
    out, err = run_flasher_ok(flasher, xvfb.display, bus, user_dir,
                              [image, '--device', loop.node, '--flash', '--verbose',
                               '--screenshot-dir', shots, '--close-when-done'])

    lines = out.splitlines()
    states = [line.split()[2] for line in lines if line.startswith(f'state {loop.node} ')]
    results = [line for line in lines if line.startswith(f'result {loop.node} ')]
    assert results == [f'result {loop.node} done Done and verified. The card can be removed.'], out
    # The window followed the job through its phases, in order.
    assert states[0] == 'starting' and 'writing' in states, states
    order = ['starting', 'authorizing', 'queued', 'preparing', 'writing', 'syncing', 'verifying']
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states), states

    # The password was asked for (interactively) and only for flashing.
    checks = polkit.checks()
    assert [c[0] for c in checks] == [h.ACTION_FLASH], checks
    assert checks[0][2] & 1, 'the Flash call did not allow interactive authorization'

    for offset, length in ranges:
        assert loop.read(offset, length) == h.read_range(raw, offset, length), \
            f'the device differs from the image at {offset}'

    # The screenshots: a window with things in it, kept for people and CI.
    kept = screenshot_dir()
    for name in ('setup.png', 'progress.png', 'result.png'):
        path = os.path.join(shots, name)
        assert os.path.exists(path), f'no {name}: {out}'
        width, height = png_size(path)
        assert width >= 360 and height >= 300, (name, width, height)
        assert png_distinct_rows(path) > 20, f'{name} looks blank'
        shutil.copy(path, os.path.join(kept, name))
    # What the window showed when each was taken: the bar moving, then the end.
    shot_lines = [line.split() for line in lines if line.startswith('screenshot ')]
    assert [words[1] for words in shot_lines] == [
        f'{shots}/setup.png', f'{shots}/progress.png', f'{shots}/result.png'], shot_lines
    assert len(shot_lines[0]) == 2, 'setup.png is taken before any job starts'
    assert shot_lines[1][2:] in ([loop.node, 'writing'], [loop.node, 'syncing'],
                                 [loop.node, 'verifying']), shot_lines
    assert shot_lines[2][2:] == [loop.node, 'done'], shot_lines


def test_gui_app_too_small_device_is_refused(daemon, bus, polkit, loop_factory, xvfb, flasher,
                                             user_dir):
    '''A card smaller than the image is not flashed: the app says why,
    before any password is asked, and the card is untouched.'''
    _, image, _ = make_image(user_dir)
    loop = loop_factory(16 * h.MiB)
    before = loop.sha256()
    polkit.set_challenge([h.ACTION_FLASH])
    # Listed first: a card bmapd does not offer is not "too small".
    wait_listed(bus, [loop.node])

    out, err = run_flasher_ok(flasher, xvfb.display, bus, user_dir,
                              [image, '--device', loop.node, '--flash', '--verbose',
                               '--close-when-done'])
    lines = [line for line in out.splitlines()
             if line.split(' ', 1)[0] in ('unusable', 'state', 'result')]
    # g_format_size: decimal units with a no-break space.
    assert lines == [f'unusable {loop.node} Too small: 16.8\u00a0MB, the image needs '
                     '100.7\u00a0MB'], out
    assert polkit.checks() == []
    assert loop.sha256() == before


@pytest.fixture
def station_daemon(udevd, bus, client, polkit, tmp_path):  # noqa: F811
    '''bmapd, started once udevd runs, so that it follows udevd's events.'''
    d = h.Daemon(bus, client, str(tmp_path))
    yield d
    rc = d.stop()
    print('---- bmapd log ----\n' + open(d.log_path).read())
    assert rc in (0, None) or rc == -15, f'bmapd exited with {rc}'


def test_gui_app_station_mode(station_daemon, bus, client, polkit, readers, xvfb,  # noqa: F811
                              flasher, user_dir, trusted_keys):
    '''Station mode: the app arms a rule for two cards of one size; each
    card inserted is flashed and shown with its result, the counter says
    2 flashed, 0 failed, and the window closes once the rule is done. The
    bmap is signed (a rule takes no signature: the app does not pass it),
    and each card is to be ejected when done (a loop device cannot be:
    bmapd says why, and the card is done all the same); "write only what
    differs" is on, and the rule the app arms carries it.'''
    raw = os.path.join(user_dir, 'board.img')
    ranges = [(0, 64 * 1024), (1 * h.MiB, 512 * 1024), (7 * h.MiB, 1 * h.MiB)]
    h.make_sparse_image(raw, 8 * h.MiB, ranges, seed='station')
    h.bmaptool_create(raw, raw + '.bmap')
    trusted_keys.sign(raw + '.bmap')
    eject = interface_has('"eject" (b')
    for path in (raw, raw + '.bmap'):
        os.chmod(path, 0o644)
    # Loop devices are not removable: the rule admits fixed disks, which
    # asks for flash-system as well; both with a password.
    polkit.set_challenge([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])

    shots = os.path.join(user_dir, 'shots')
    proc = start_flasher(flasher, xvfb.display, bus, user_dir,
                         [raw, '--station', '--station-count', '2', '--match-fixed',
                          '--match-size', str(STATION_CARD), '--verbose',
                          '--trusted-keys-dir', trusted_keys.trusted, '--minimize-writes',
                          *(['--when-done', 'eject'] if eject else []),
                          '--screenshot-dir', shots, '--close-when-done'])
    lines = []
    reader_thread = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader_thread.start()
    try:
        h.wait_until(lambda: any(line.startswith('armed ') for line in lines), 60,
                     'the station to arm its rule')
        [rule] = client.rules().values()
        assert rule['Options'].get('minimize-writes') is True, rule['Options']
        cards = [readers(STATION_CARD)]
        h.wait_until(lambda: any(line.startswith(f'result {cards[0].node} ') for line in lines),
                     120, 'the first card')
        cards.append(readers(STATION_CARD))
        rc = proc.wait(120)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        reader_thread.join(10)
        err = proc.stderr.read()
        proc.stderr.close()
        print(''.join(lines))
        print(err)
    assert rc == 0, f'bmapd-flasher exited with {rc}'
    lines = [line.rstrip('\n') for line in lines]

    for card in cards:
        # Each card was compared before writing (fresh cards: all of it
        # differed).
        # (g_format_size() puts a no-break space before the unit.)
        assert (f'result {card.node} done Done and verified: checked 1.6\u00a0MB, wrote '
                '1.6\u00a0MB. The card can be removed.') in lines, card.node
        for offset, length in ranges:
            assert card.read(offset, length) == h.read_range(raw, offset, length), \
                f'{card.node}: range at {offset} differs'
    if eject:
        for card in cards:
            [details] = [line for line in lines if line.startswith(f'details {card.node} ')]
            assert 'not ejected' in details.lower(), details
    counters = [line for line in lines if line.startswith('counter ')]
    assert counters[-1] == 'counter 2 0', counters
    checks = polkit.checks()
    assert [c[0] for c in checks] == [h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM], checks
    assert all(c[2] & 1 for c in checks), 'AddAutoFlash did not allow interactive authorization'

    path = os.path.join(shots, 'station.png')
    assert os.path.exists(path), 'no station.png'
    assert png_distinct_rows(path) > 20, 'station.png looks blank'
    shutil.copy(path, os.path.join(screenshot_dir(), 'station.png'))


class SessionBus:
    '''A session bus of nobody's, so that the test can reach the app's
    actions (org.gtk.Actions) as a desktop shell would.'''

    def __init__(self):
        self.proc = subprocess.Popen(
            ['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}', '--clear-groups',
             'dbus-daemon', '--session', '--nofork', '--nopidfile', '--print-address=1'],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={'PATH': '/usr/bin:/bin'})
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            raise RuntimeError('the session dbus-daemon did not start')

    def activate(self, action):
        subprocess.run(['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}', '--clear-groups',
                        'gdbus', 'call', '--address', self.address, '--dest', 'org.bmapd.Flasher',
                        '--object-path', '/org/bmapd/Flasher', '--method',
                        'org.gtk.Actions.Activate', action, '[]', '{}'],
                       check=True, capture_output=True, timeout=30)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.mark.parametrize('password_given', [False, True], ids=['dismissed', 'given'])
def test_gui_app_cancel_while_authorizing(daemon, bus, polkit, loop_factory, xvfb, flasher,
                                          user_dir, password_given):
    '''Cancel while the password is being asked for (bmapd has no job yet,
    the app shows the flash as waiting): the app remembers it. The password
    dialog then dismissed, Flash fails and the app says canceled; the
    password then given, the app cancels the job as soon as Flash returns
    its path. Either way the flash ends canceled.'''
    _, image, _ = make_image(user_dir)
    loop = loop_factory(128 * h.MiB)
    before = loop.sha256()
    # Listed first: under load bmapd may offer it after the app's wait.
    wait_listed(bus, [loop.node])
    polkit.set_challenge([h.ACTION_FLASH])
    polkit.set_hold(True)  # the password dialog stays up
    session = SessionBus()
    env = dict(flasher_env(xvfb.display, bus, user_dir),
               DBUS_SESSION_BUS_ADDRESS=session.address)
    proc = subprocess.Popen(
        ['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}', '--clear-groups', flasher,
         image, '--device', loop.node, '--flash', '--verbose', '--close-when-done'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    lines = []
    reader_thread = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader_thread.start()
    try:
        h.wait_until(lambda: f'state {loop.node} authorizing\n' in lines and
                     polkit.held_count() == 1, 60, 'the flash to wait for a password')
        session.activate('cancel-all')
        # The app's cancel is remembered (the action ran before Activate
        # returned); now the person answers the password dialog.
        if not password_given:
            polkit.set_challenge([])
        polkit.release_held()
        rc = proc.wait(60)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        reader_thread.join(10)
        err = proc.stderr.read()
        proc.stderr.close()
        session.stop()
        polkit.set_hold(False)
        print(''.join(lines))
        print(err)
    assert rc == 0, f'bmapd-flasher exited with {rc}'
    results = [line.rstrip('\n') for line in lines if line.startswith('result ')]
    nothing = (f'result {loop.node} canceled Canceled. Nothing was written: the card is as '
               'it was.')
    if not password_given:
        # Flash failed: bmapd never had a job.
        assert results == [nothing], lines
        assert loop.sha256() == before
        return
    # bmapd starts a queued job at once when MaxJobs allows, so the job may
    # have begun before the app's Cancel reached it: canceled either way,
    # and the app says what the card holds.
    assert len(results) == 1 and results[0].startswith(
        f'result {loop.node} canceled Canceled. '), lines
    if results[0] == nothing:
        assert loop.sha256() == before


def interface_has(text):
    '''Whether the D-Bus interface the app and bmapd were built with says
    @text (a method, an option).'''
    xml = os.environ.get('BMAPD_INTERFACE_XML') or os.path.join(
        os.path.dirname(__file__), '..', '..', 'dbus', 'org.bmapd.bmapd1.xml')
    with open(xml) as f:
        return text in f.read()


@pytest.fixture
def trusted_keys(user_dir):
    '''A release key in a GnuPG home of the test's, and bmapd's
    trusted-keys.d holding it, readable by the app's user as
    /etc/bmapd/trusted-keys.d is.'''
    if not shutil.which('gpg') or not shutil.which('gpgconf'):
        pytest.skip('gpg and gpgconf (gnupg) are not installed')
    keys = type('Keys', (), {})()
    keys.home = tempfile.mkdtemp(prefix='bmapd-flasher-gnupg-')
    uid = 'Release Team <release@example.org>'
    h.gpg(keys.home, '--quick-gen-key', uid, 'ed25519', 'sign', '1y')
    out = h.gpg(keys.home, '--with-colons', '--list-keys', uid).decode()
    keys.fpr = next(line.split(':')[9] for line in out.splitlines() if line.startswith('fpr:'))
    keys.uid = uid
    keys.trusted = os.path.join(user_dir, 'trusted-keys.d')
    os.mkdir(keys.trusted, 0o755)
    path = os.path.join(keys.trusted, 'release.asc')
    with open(path, 'wb') as f:
        f.write(h.gpg(keys.home, '--armor', '--export', keys.fpr))
    os.chmod(path, 0o644)

    def sign(path, fpr=keys.fpr):
        h.gpg(keys.home, '--yes', '--local-user', fpr, '--armor', '--detach-sign',
            '--output', path + '.asc', path)
        os.chmod(path + '.asc', 0o644)

    def make_key(uid):
        h.gpg(keys.home, '--quick-gen-key', uid, 'ed25519', 'sign', '1y')
        out = h.gpg(keys.home, '--with-colons', '--list-keys', uid).decode()
        return next(line.split(':')[9] for line in out.splitlines() if line.startswith('fpr:'))
    keys.sign = sign
    keys.make_key = make_key
    yield keys
    subprocess.run(['gpgconf', '--homedir', keys.home, '--kill', 'all'], capture_output=True)
    shutil.rmtree(keys.home, ignore_errors=True)


@pytest.fixture
def signed_daemon(bus, client, polkit, tmp_path, trusted_keys):
    '''bmapd trusting the release key, as the app is told to.'''
    d = h.Daemon(bus, client, str(tmp_path), args=('--trusted-keys-dir', trusted_keys.trusted))
    yield d
    rc = d.stop()
    print('---- bmapd log ----\n' + open(d.log_path).read())
    assert rc in (0, None) or rc == -15, f'bmapd exited with {rc}'


def wait_listed(bus, nodes):
    client = h.Client(bus.address)
    try:
        def listed():
            objects = client.call(h.MANAGER_PATH, 'org.freedesktop.DBus.ObjectManager',
                                  'GetManagedObjects')[0]
            have = {ifaces.get(h.DEVICE_IFACE, {}).get('Node') for ifaces in objects.values()}
            return all(node in have for node in nodes)
        h.wait_until(listed, 20, 'bmapd to list the loop devices')
    finally:
        client.close()


def keep_screenshot(shots, name, kept_name):
    path = os.path.join(shots, name)
    assert os.path.exists(path), f'no {name}'
    assert png_distinct_rows(path) > 20, f'{name} looks blank'
    shutil.copy(path, os.path.join(screenshot_dir(), kept_name))


def test_gui_app_signed_image_two_cards_then_minimize_writes(
        signed_daemon, bus, polkit, loop_factory, xvfb, flasher, user_dir, trusted_keys):
    '''A bmap signed by a key bmapd trusts: the app says who signed it
    before flashing, and passes the signature, so bmapd tells polkit it is
    trusted. Two cards ticked are flashed at once (FlashMany when bmapd has
    it: one password for both). The same image flashed again onto the first
    card with "write only what differs" writes nothing, and says so.'''
    raw = os.path.join(user_dir, 'release.img')
    ranges = [(0, 1 * h.MiB), (3 * h.MiB, 6 * h.MiB), (20 * h.MiB, 2 * h.MiB)]
    h.make_sparse_image(raw, 24 * h.MiB, ranges, seed='signed')
    h.bmaptool_create(raw, raw + '.bmap')
    trusted_keys.sign(raw + '.bmap')
    for path in (raw, raw + '.bmap'):
        os.chmod(path, 0o644)
    mapped = sum(length for _, length in ranges)
    cards = [loop_factory(32 * h.MiB), loop_factory(32 * h.MiB)]
    wait_listed(bus, [card.node for card in cards])
    polkit.set_challenge([h.ACTION_FLASH])
    shots = os.path.join(user_dir, 'shots')
    common = ['--verbose', '--trusted-keys-dir', trusted_keys.trusted, '--screenshot-dir',
              shots, '--close-when-done']

    out, err = run_flasher_ok(flasher, xvfb.display, bus, user_dir,
                              [raw, '--device', cards[0].node, '--device', cards[1].node,
                               '--flash', *common])
    lines = out.splitlines()
    key_id = trusted_keys.fpr[-16:]
    assert f'signature signed by {trusted_keys.uid} ({key_id})' in lines, out
    for card in cards:
        assert f'result {card.node} done Done and verified. The card can be removed.' in lines, \
            out
        for offset, length in ranges:
            assert card.read(offset, length) == h.read_range(raw, offset, length), \
                f'{card.node}: range at {offset} differs'
    checks = polkit.checks()
    # One polkit check for the set through FlashMany, else one per card.
    assert len(checks) == (1 if interface_has('"FlashMany"') else 2), checks
    for action, details, flags, *_ in checks:
        assert details['bmap.signature'] == 'trusted', details
        assert details['bmap.signer'] == trusted_keys.fpr, details
        assert flags & 1, 'the call did not allow interactive authorization'
    keep_screenshot(shots, 'setup.png', 'signed-setup.png')
    keep_screenshot(shots, 'result.png', 'two-cards-result.png')

    # Reflashing the first card: everything is in place, nothing written.
    # Eject only once bmapd knows the option (a loop device cannot be
    # ejected: bmapd says why and the flash is done all the same).
    eject = interface_has('"eject" (b')
    polkit.clear_checks()
    shutil.rmtree(shots)
    os.mkdir(shots, 0o700)
    os.chown(shots, NOBODY, NOBODY)
    rc, out, err = run_flasher(flasher, xvfb.display, bus, user_dir,
                               [raw, '--device', cards[0].node, '--flash', '--minimize-writes',
                                *(['--when-done', 'eject'] if eject else []), *common])
    print(out)
    print(err)
    assert rc == 0, f'bmapd-flasher exited with {rc}'
    lines = out.splitlines()
    checked = f'{mapped / 1e6:.1f}\u00a0MB'
    assert (f'result {cards[0].node} done Done and verified: checked {checked}, wrote '
            '0 bytes. The card can be removed.') in lines, out
    details = [line for line in lines if line.startswith(f'details {cards[0].node} ')]
    assert len(details) == 1 and 'found in place, not written' in details[0], out
    if eject:
        assert 'not ejected' in details[0], details
    for offset, length in ranges:
        assert cards[0].read(offset, length) == h.read_range(raw, offset, length)
    [(action, flash_details, *_)] = polkit.checks()
    assert flash_details['bmap.signature'] == 'trusted', flash_details
    keep_screenshot(shots, 'setup.png', 'minimize-setup.png')
    keep_screenshot(shots, 'result.png', 'minimize-result.png')


def test_gui_app_untrusted_signature(signed_daemon, bus, polkit, loop_factory, xvfb, flasher,
                                     user_dir, trusted_keys):
    '''A bmap signed by a key bmapd does not trust: the app says the
    signature is not trusted and why (as bmapd will judge it), and the flash
    goes on with bmapd telling polkit "untrusted".'''
    raw = os.path.join(user_dir, 'other.img')
    ranges = [(0, 512 * 1024), (2 * h.MiB, 1 * h.MiB)]
    h.make_sparse_image(raw, 4 * h.MiB, ranges, seed='untrusted')
    h.bmaptool_create(raw, raw + '.bmap')
    stranger = trusted_keys.make_key('Stranger <stranger@example.org>')
    trusted_keys.sign(raw + '.bmap', stranger)
    for path in (raw, raw + '.bmap'):
        os.chmod(path, 0o644)
    card = loop_factory(8 * h.MiB)
    wait_listed(bus, [card.node])
    polkit.set_challenge([h.ACTION_FLASH])
    shots = os.path.join(user_dir, 'shots')
    out, err = run_flasher_ok(flasher, xvfb.display, bus, user_dir,
                              [raw, '--device', card.node, '--flash', '--verbose',
                               '--trusted-keys-dir', trusted_keys.trusted,
                               '--screenshot-dir', shots, '--close-when-done'])
    lines = out.splitlines()
    [badge] = [line for line in lines if line.startswith('signature ')]
    assert badge.startswith('signature signature not trusted: the signature in '
                            f'other.img.bmap.asc is by key {stranger}'), badge
    assert f'not in the trusted keys in {trusted_keys.trusted} (unknown signer)' in badge, badge
    assert f'result {card.node} done Done and verified. The card can be removed.' in lines, out
    [(action, details, *_)] = polkit.checks()
    assert details['bmap.signature'] == 'untrusted', details
    keep_screenshot(shots, 'setup.png', 'untrusted-setup.png')


def test_gui_app_clearsigned_bmap(signed_daemon, bus, polkit, loop_factory, xvfb, flasher,
                                  user_dir, trusted_keys):
    '''A clearsigned bmap: the app parses its signed text and hands bmapd
    that text as the bmap and the whole file as the signature, which bmapd
    then trusts (the text is its bmap byte for byte).'''
    raw = os.path.join(user_dir, 'clear.img')
    ranges = [(0, 256 * 1024), (1 * h.MiB, 1 * h.MiB)]
    h.make_sparse_image(raw, 4 * h.MiB, ranges, seed='clearsigned')
    h.bmaptool_create(raw, raw + '.plain')
    h.gpg(trusted_keys.home, '--yes', '--local-user', trusted_keys.fpr, '--clearsign',
        '--output', raw + '.bmap', raw + '.plain')
    for path in (raw, raw + '.bmap'):
        os.chmod(path, 0o644)
    card = loop_factory(8 * h.MiB)
    wait_listed(bus, [card.node])
    polkit.set_challenge([h.ACTION_FLASH])
    out, err = run_flasher_ok(flasher, xvfb.display, bus, user_dir,
                              [raw, '--device', card.node, '--flash', '--verbose',
                               '--trusted-keys-dir', trusted_keys.trusted, '--close-when-done'])
    lines = out.splitlines()
    assert f'signature signed by {trusted_keys.uid} ({trusted_keys.fpr[-16:]})' in lines, out
    assert f'result {card.node} done Done and verified. The card can be removed.' in lines, out
    for offset, length in ranges:
        assert card.read(offset, length) == h.read_range(raw, offset, length)
    [(action, details, *_)] = polkit.checks()
    assert details['bmap.signature'] == 'trusted', details
    assert details['bmap.signer'] == trusted_keys.fpr, details


def test_gui_app_lists_whole_cards_only(daemon, bus, client, polkit, partitioned,  # noqa: F811
                                        xvfb, flasher, user_dir):
    '''bmapd offers a card's partitions as Devices too; the app, which
    writes whole cards, lists the card and not its partition, and flashes
    the card.'''
    raw = os.path.join(user_dir, 'whole.img')
    ranges = [(0, 64 * 1024), (3 * h.MiB, 1 * h.MiB)]
    h.make_sparse_image(raw, 8 * h.MiB, ranges, seed='whole')
    h.bmaptool_create(raw, raw + '.bmap')
    for path in (raw, raw + '.bmap'):
        os.chmod(path, 0o644)
    card = partitioned()
    client.wait_device(card.node)
    client.wait_device(card.part)
    polkit.set_challenge([h.ACTION_FLASH])
    out, err = run_flasher_ok(flasher, xvfb.display, bus, user_dir,
                              [raw, '--device', card.node, '--flash', '--verbose',
                               '--close-when-done'])
    lines = out.splitlines()
    assert f'listed {card.node}' in lines, out
    assert f'listed {card.part}' not in lines, out
    assert f'result {card.node} done Done and verified. The card can be removed.' in lines, out
    for offset, length in ranges:
        assert card.read(offset, length) == h.read_range(raw, offset, length)
