# SPDX-License-Identifier: GPL-2.0-or-later
'''Drives the real bmapd on a private bus for the integration tests.

A private dbus-daemon (system-bus flavoured, everything allowed), a polkitd
mock from python-dbusmock on it (our template: see polkitd_template.py),
bmapd started with --bus-address, and a client that uses only Gio's D-Bus
API, as a GUI would. Loop devices give real block devices (root only).
'''

import contextlib
import errno
import fcntl
import hashlib
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import gi

gi.require_version('Gio', '2.0')
gi.require_version('GLib', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

from simcard import stop_process  # noqa: E402

PYTHON = '/usr/bin/python3'
HERE = os.path.dirname(os.path.abspath(__file__))
POLKIT_TEMPLATE = os.path.join(HERE, 'polkitd_template.py')

BUS_NAME = 'org.bmapd.bmapd1'
MANAGER_PATH = '/org/bmapd/bmapd1'
MANAGER_IFACE = 'org.bmapd.bmapd1.Manager'
DEVICE_IFACE = 'org.bmapd.bmapd1.Device'
JOB_IFACE = 'org.bmapd.bmapd1.Job'
AUTOFLASH_IFACE = 'org.bmapd.bmapd1.AutoFlash'
DEVICE_PREFIX = '/org/bmapd/bmapd1/device/'
JOB_PREFIX = '/org/bmapd/bmapd1/job/'
AUTOFLASH_PREFIX = '/org/bmapd/bmapd1/autoflash/'
ERROR = 'org.bmapd.bmapd1.Error.'
INTERACTIVE_REQUIRED = 'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired'

POLKIT_NAME = 'org.freedesktop.PolicyKit1'
POLKIT_PATH = '/org/freedesktop/PolicyKit1/Authority'
MOCK_IFACE = 'org.freedesktop.DBus.Mock'

ACTION_FLASH = 'org.bmapd.bmapd1.flash'
ACTION_FLASH_SYSTEM = 'org.bmapd.bmapd1.flash-system'
ACTION_CREATE = 'org.bmapd.bmapd1.create'
ACTION_CANCEL = 'org.bmapd.bmapd1.cancel'
ACTION_AUTO_FLASH = 'org.bmapd.bmapd1.auto-flash'

MiB = 1024 * 1024

BUS_CONFIG = '''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
'''


def find_bmapd():
    path = os.environ.get('BMAPD')
    if path:
        return path
    for build in ('build', 'build-daemon'):
        candidate = os.path.join(HERE, '..', '..', build, 'daemon', 'bmapd')
        if os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    raise RuntimeError('bmapd not found: set BMAPD to the built daemon')


def find_bmapctl():
    '''bmapctl: $BMAPCTL, else the one built beside bmapd; the test is
    skipped when there is none.'''
    path = os.environ.get('BMAPCTL')
    if path:
        return path
    for build in ('build', 'build-daemon'):
        candidate = os.path.join(HERE, '..', '..', build, 'client', 'bmapctl')
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    import pytest
    pytest.skip('bmapctl is not built (set BMAPCTL)')


def require_umockdev():
    '''The UMockdev module, for a test module that runs under
    umockdev-wrapper; the whole module is skipped elsewhere.'''
    if 'umockdev' not in os.environ.get('LD_PRELOAD', ''):
        import pytest
        pytest.skip('needs umockdev-wrapper (run by the integration-umockdev meson test)',
                    allow_module_level=True)
    gi.require_version('UMockdev', '1.0')
    from gi.repository import UMockdev
    return UMockdev


def gpg(home, *args):
    '''gpg in the GnuPG home @home, without asking anything; its output.'''
    env = dict(os.environ, GNUPGHOME=str(home))
    proc = subprocess.run([shutil.which('gpg'), '--batch', '--no-tty', '--pinentry-mode',
                           'loopback', '--passphrase', '', *args], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr.decode(errors='replace')
    return proc.stdout


def interface_xml_path():
    return os.environ.get('BMAPD_INTERFACE_XML',
                          os.path.join(HERE, '..', '..', 'dbus', 'org.bmapd.bmapd1.xml'))


class DBusCallError(Exception):
    '''A D-Bus error reply, with its name.'''

    def __init__(self, name, message):
        super().__init__(f'{name}: {message}')
        self.name = name
        self.message = message


def wait_until(predicate, timeout=20.0, what='condition', context=None):
    '''Runs the GLib main context until @predicate is true.'''
    context = context or GLib.MainContext.default()
    deadline = time.monotonic() + timeout
    while True:
        while context.pending():
            context.iteration(False)
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.01)


class TestBus:
    '''A private dbus-daemon with a system-bus-like, permissive policy.'''

    def __init__(self):
        # Its own directory, reachable by the non-root clients of some tests.
        self.dir = tempfile.mkdtemp(prefix='bmapd-test-bus-')
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, 'system_bus_socket')
        config = os.path.join(self.dir, 'bus.conf')
        with open(config, 'w') as f:
            f.write(BUS_CONFIG.format(socket=self.socket))
        env = dict(os.environ)
        env.pop('LD_PRELOAD', None)
        self.proc = subprocess.Popen(
            ['dbus-daemon', '--config-file', config, '--nofork', '--nopidfile',
             '--print-address=1'],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.address = self.proc.stdout.readline().decode().strip()
        if not self.address:
            raise RuntimeError('dbus-daemon did not start')
        os.chmod(self.socket, 0o777)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)

def flash_options(image_fd, bmap_fd, options):
    '''The fd list and a{sv} of a Flash() or FlashMany() call: the image is
    handle 0, the bmap (when given) handle 1; option names with "_" for "-",
    a GLib.Variant passed as it is, bool as b, int as t, the rest as s.'''
    fds = [image_fd]
    opts = {}
    if bmap_fd is not None:
        fds.append(bmap_fd)
        opts['bmap'] = GLib.Variant('h', 1)
    for key, value in options.items():
        key = key.replace('_', '-')
        if isinstance(value, GLib.Variant):
            opts[key] = value
        elif isinstance(value, bool):
            opts[key] = GLib.Variant('b', value)
        elif isinstance(value, int):
            opts[key] = GLib.Variant('t', value)
        else:
            opts[key] = GLib.Variant('s', value)
    return fds, opts


def bmapctl_on_terminal(bmapctl, *args):
    '''bmapctl with a terminal for stdin, stdout and stderr, as a user runs it
    (@bmapctl: the fixture, with .exe and .env): (exit status, what it
    printed). Gives up reading after 120 s of silence.'''
    pid, master = pty.fork()
    if pid == 0:
        os.execve(bmapctl.exe, [bmapctl.exe, *args], bmapctl.env)
    output = b''
    while select.select([master], [], [], 120)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return os.waitstatus_to_exitcode(status), output.decode(errors='replace')


class Client:
    '''A bus connection using only Gio, as desktop tools do.'''

    def __init__(self, address):
        self.conn = Gio.DBusConnection.new_for_address_sync(
            address,
            Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
            None, None)
        self.signals = []
        self._sub = self.conn.signal_subscribe(
            None, None, None, None, None, Gio.DBusSignalFlags.NONE, self._on_signal)

    def _on_signal(self, conn, sender, path, iface, member, params):
        self.signals.append((path, iface, member, params.unpack()))

    @property
    def unique_name(self):
        return self.conn.get_unique_name()

    def close(self):
        self.conn.signal_unsubscribe(self._sub)
        self.conn.close_sync(None)

    def call(self, path, iface, method, args=None, fds=None, interactive=False,
             timeout_ms=60000, dest=BUS_NAME):
        flags = Gio.DBusCallFlags.NONE
        if interactive:
            flags |= Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION
        # The list takes the descriptors it is given: give it copies.
        fd_list = Gio.UnixFDList.new_from_array([os.dup(fd) for fd in fds]) if fds else None
        try:
            result, _ = self.conn.call_with_unix_fd_list_sync(
                dest, path, iface, method, args, None, flags, timeout_ms, fd_list, None)
        except GLib.Error as e:
            name = Gio.DBusError.get_remote_error(e)
            if name is None:
                raise
            Gio.DBusError.strip_remote_error(e)
            raise DBusCallError(name, e.message) from None
        return result.unpack() if result is not None else None

    def call_async(self, path, iface, method, args=None, fds=None, interactive=False,
                   timeout_ms=120000):
        '''Starts a call; returns a dict that gets 'result' or 'error' when it is answered.'''
        box = {}
        flags = Gio.DBusCallFlags.NONE
        if interactive:
            flags |= Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION
        # The list takes the descriptors it is given: give it copies.
        fd_list = Gio.UnixFDList.new_from_array([os.dup(fd) for fd in fds]) if fds else None

        def done(conn, res):
            try:
                result, _ = conn.call_with_unix_fd_list_finish(res)
                box['result'] = result.unpack()
            except GLib.Error as e:
                name = Gio.DBusError.get_remote_error(e)
                Gio.DBusError.strip_remote_error(e)
                box['error'] = DBusCallError(name, e.message)

        self.conn.call_with_unix_fd_list(BUS_NAME, path, iface, method, args, None, flags,
                                         timeout_ms, fd_list, None, done)
        return box

    def get_all(self, path, iface):
        return self.call(path, 'org.freedesktop.DBus.Properties', 'GetAll',
                         GLib.Variant('(s)', (iface,)))[0]

    def get(self, path, iface, prop):
        return self.call(path, 'org.freedesktop.DBus.Properties', 'Get',
                         GLib.Variant('(ss)', (iface, prop)))[0]

    def managed_objects(self):
        return self.call(MANAGER_PATH, 'org.freedesktop.DBus.ObjectManager',
                         'GetManagedObjects')[0]

    def devices(self):
        return {path: ifaces[DEVICE_IFACE] for path, ifaces in self.managed_objects().items()
                if DEVICE_IFACE in ifaces}

    def device_path(self, node):
        for path, props in self.devices().items():
            if props['Node'] == node:
                return path
        return None

    def wait_device(self, node, timeout=20):
        return wait_until(lambda: self.device_path(node), timeout, f'device {node} on the bus')

    def wait_device_gone(self, node, timeout=20):
        wait_until(lambda: self.device_path(node) is None, timeout, f'device {node} to go')

    def flash(self, device, image_fd, bmap_fd=None, nobmap=False, interactive=False,
              block=True, **options):
        '''Flash(); options are D-Bus option names with "_" for "-".'''
        if nobmap:
            options['nobmap'] = True
        fds, opts = flash_options(image_fd, bmap_fd, options)
        args = GLib.Variant('(oha{sv})', (device, 0, opts))
        if not block:
            return self.call_async(MANAGER_PATH, MANAGER_IFACE, 'Flash', args, fds,
                                   interactive)
        return self.call(MANAGER_PATH, MANAGER_IFACE, 'Flash', args, fds, interactive)[0]

    def flash_pipe(self, device, data, chunk=MiB, **options):
        '''Flashes @data through a pipe, without a bmap, and waits for the
        job's end: (state, error name, message).'''
        pipe = SlowPipe(data, chunk=chunk, delay=0).start()
        try:
            job = self.flash(device, pipe.read_fd, nobmap=True, **options)
            pipe.close_read()
            return self.wait_finished(job)
        finally:
            pipe.stop()

    def flash_many(self, devices, image_fd, bmap_fd=None, block=True, **options):
        '''FlashMany(); options as in flash().'''
        fds, opts = flash_options(image_fd, bmap_fd, options)
        args = GLib.Variant('(aoha{sv})', (devices, 0, opts))
        if not block:
            return self.call_async(MANAGER_PATH, MANAGER_IFACE, 'FlashMany', args, fds)
        return self.call(MANAGER_PATH, MANAGER_IFACE, 'FlashMany', args, fds)[0]

    def create(self, image_fd, out_fd, **options):
        opts = {k.replace('_', '-'): auto_variant(v) for k, v in options.items()}
        args = GLib.Variant('(hha{sv})', (0, 1, opts))
        return self.call(MANAGER_PATH, MANAGER_IFACE, 'Create', args, [image_fd, out_fd])[0]

    def cancel(self, job, block=True):
        if not block:
            return self.call_async(job, JOB_IFACE, 'Cancel')
        return self.call(job, JOB_IFACE, 'Cancel')

    def add_auto_flash(self, image_fd, bmap_fd=None, match=None, interactive=False, **options):
        '''AddAutoFlash(); @match and @options are Python values with D-Bus names
        (options also as keyword arguments with "_" for "-"); returns the rule path.'''
        fds = [image_fd]
        opts = {}
        if bmap_fd is not None:
            fds.append(bmap_fd)
            opts['bmap'] = GLib.Variant('h', 1)
        for key, value in options.items():
            key = key.replace('_', '-')
            opts[key] = auto_variant(value, 'u' if key == 'count' else 't')
        match_v = {k: auto_variant(v) for k, v in (match or {}).items()}
        args = GLib.Variant('(ha{sv}a{sv})', (0, match_v, opts))
        return self.call(MANAGER_PATH, MANAGER_IFACE, 'AddAutoFlash', args, fds, interactive)[0]

    def rules(self):
        return {path: ifaces[AUTOFLASH_IFACE] for path, ifaces in self.managed_objects().items()
                if AUTOFLASH_IFACE in ifaces}

    def rule_signals(self, rule, member='CardFinished'):
        return [args for path, iface, m, args in self.signals
                if path == rule and iface == AUTOFLASH_IFACE and m == member]

    def jobs_for(self, device):
        '''Paths of the jobs announced (InterfacesAdded) for @device, in order.'''
        return [args[0] for path, iface, m, args in self.signals
                if m == 'InterfacesAdded' and args[0].startswith(JOB_PREFIX)
                and JOB_IFACE in args[1] and args[1][JOB_IFACE].get('Device') == device]

    def job_signals(self, job, member):
        return [args for path, iface, m, args in self.signals
                if path == job and iface == JOB_IFACE and m == member]

    def wait_finished(self, job, timeout=60):
        '''The job's Finished signal arguments: (state, error_name, error_message).'''
        return wait_until(lambda: (self.job_signals(job, 'Finished') or [None])[0], timeout,
                          f'{job} to finish')

    def wait_state(self, job, states, timeout=30):
        if isinstance(states, str):
            states = (states,)
        return wait_until(lambda: self.get(job, JOB_IFACE, 'State') in states and True,
                          timeout, f'{job} to reach {states}')

    def iterate(self, seconds=0.0):
        deadline = time.monotonic() + seconds
        context = GLib.MainContext.default()
        while True:
            while context.pending():
                context.iteration(False)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)


def auto_variant(value, int_type='t'):
    '''A GLib.Variant for a Python value: bool b, int @int_type, str s, list as;
    already a Variant: as is.'''
    if isinstance(value, GLib.Variant):
        return value
    if isinstance(value, bool):
        return GLib.Variant('b', value)
    if isinstance(value, int):
        return GLib.Variant(int_type, value)
    if isinstance(value, (list, tuple)):
        return GLib.Variant('as', list(value))
    return GLib.Variant('s', value)


class PolkitMock:
    '''python-dbusmock with our polkitd template, on the test bus.'''

    def __init__(self, bus, client, logdir):
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
        env.pop('LD_PRELOAD', None)
        self.log_path = os.path.join(logdir, 'polkitd-mock.log')
        self.log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(
            [PYTHON, '-m', 'dbusmock', '--system', '--template', POLKIT_TEMPLATE],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = client
        wait_until(self._has_owner, 20, 'the polkitd mock')

    def _has_owner(self):
        if self.proc.poll() is not None:
            raise RuntimeError('polkitd mock exited: ' + open(self.log_path).read())
        return self.client.call('/org/freedesktop/DBus', 'org.freedesktop.DBus', 'NameHasOwner',
                                GLib.Variant('(s)', (POLKIT_NAME,)),
                                dest='org.freedesktop.DBus')[0]

    def _mock(self, method, sig=None, args=None):
        variant = GLib.Variant(sig, args) if sig else None
        return self.client.call(POLKIT_PATH, MOCK_IFACE, method, variant, dest=POLKIT_NAME)

    def set_allowed(self, actions):
        self._mock('SetAllowed', '(as)', (list(actions),))

    def set_challenge(self, actions):
        '''Actions that need a password: the mock's agent answers when the
        check allows user interaction.'''
        self._mock('SetChallenge', '(as)', (list(actions),))

    def set_agent_answer(self, answer):
        self._mock('SetAgentAnswer', '(b)', (answer,))

    def agent_requests(self):
        '''[(action, subject_name)] for every password an agent asked for.'''
        return self._mock('GetAgentRequests')[0]

    def set_hold(self, hold):
        self._mock('SetHold', '(b)', (hold,))

    def held_count(self):
        return self._mock('GetHeldCount')[0]

    def release_held(self):
        self._mock('ReleaseHeld')

    def checks(self):
        '''[(action, details, flags, subject_kind, subject_name, cancellation_id)]'''
        return self._mock('GetChecks')[0]

    def clear_checks(self):
        self._mock('ClearChecks')

    def cancelled(self):
        return self._mock('GetCancelled')[0]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class Daemon:
    '''bmapd on the test bus, logging to a file.'''

    def __init__(self, bus, client, logdir, config='', args=(), env=None, wait=True,
                 autoflash_dir=None, wrapper=()):
        self.config_path = os.path.join(logdir, 'bmapd.conf')
        with open(self.config_path, 'w') as f:
            f.write(config)
        # Rule files: none unless a test writes some here.
        self.autoflash_dir = autoflash_dir or os.path.join(logdir, 'autoflash.d')
        self.log_path = os.path.join(logdir, 'bmapd.log')
        self.log = open(self.log_path, 'a')
        self.client = client
        full_env = dict(os.environ)
        full_env.pop('LD_PRELOAD', None)
        full_env.pop('UMOCKDEV_DIR', None)
        full_env.pop('NOTIFY_SOCKET', None)
        full_env.pop('JOURNAL_STREAM', None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*wrapper, find_bmapd(), '--bus-address', bus.address, '--config', self.config_path,
             '--autoflash-dir', self.autoflash_dir, '--idle-timeout', '0', '--debug', *args],
            env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            wait_until(self._ready, 20, 'bmapd to own its name')

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f'bmapd exited with {self.proc.returncode}:\n{self.read_log()}')
        return self.client.call('/org/freedesktop/DBus', 'org.freedesktop.DBus', 'NameHasOwner',
                                GLib.Variant('(s)', (BUS_NAME,)), dest='org.freedesktop.DBus')[0]

    def read_log(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait_exit(self, timeout=30):
        return self.proc.wait(timeout)

    def stop(self):
        stop_process(self.proc, 30)
        self.log.close()
        return self.proc.returncode


# ---- images and devices ----

def pattern(seed, size):
    '''Deterministic bytes that differ from block to block.'''
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f'{seed}:{counter}'.encode()).digest() * 128
        counter += 1
    return bytes(out[:size])


def make_sparse_image(path, size, data_ranges, seed='image'):
    '''A sparse file of @size with data in [(offset, length)]; returns the data map.'''
    with open(path, 'wb') as f:
        f.truncate(size)
        for i, (offset, length) in enumerate(data_ranges):
            f.seek(offset)
            f.write(pattern(f'{seed}-{i}', length))
    return data_ranges


def bmaptool_create(image, bmap):
    subprocess.run(['bmaptool', 'create', '-o', bmap, image], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def file_sha256(path, length=None):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        remaining = length
        while True:
            n = 1 * MiB if remaining is None else min(1 * MiB, remaining)
            if n == 0:
                break
            chunk = f.read(n)
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return h.hexdigest()


def read_range(path, offset, length):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def drop_caches(node):
    # The daemon writes through its own descriptor; read what the device holds.
    with contextlib.suppress(OSError):
        subprocess.run(['blockdev', '--flushbufs', node], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def can_open_exclusive(node):
    '''True when nobody (bmapd included) holds @node open exclusively.'''
    try:
        fd = os.open(node, os.O_RDONLY | os.O_EXCL)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return False
        raise
    os.close(fd)
    return True


class LoopDevice:
    '''A real loop device over a file, filled with a known pattern.'''

    def __init__(self, tmpdir, size, fill=b'\xaa'):
        fd, self.backing = tempfile.mkstemp(prefix='bmapd-loop-', suffix='.img', dir=tmpdir)
        with os.fdopen(fd, 'wb') as f:
            block = fill * MiB
            for _ in range(size // MiB):
                f.write(block)
            f.write(fill * (size % MiB))
        self.size = size
        self.node = subprocess.run(['losetup', '--find', '--show', self.backing], check=True,
                                   capture_output=True, text=True).stdout.strip()
        self.name = os.path.basename(self.node)

    def sha256(self, length=None):
        drop_caches(self.node)
        return file_sha256(self.node, length)

    def read(self, offset, length):
        drop_caches(self.node)
        return read_range(self.node, offset, length)

    def detach(self):
        if self.node:
            subprocess.run(['losetup', '-d', self.node], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.node = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.backing)

    def uevent(self, action):
        '''A synthetic uevent, as if the kernel had seen the device @action.'''
        with open(f'/sys/block/{self.name}/uevent', 'w') as f:
            f.write(action)


def loop_devices_usable():
    '''None when loop devices can be used, else why not.'''
    if os.geteuid() != 0:
        return 'needs root for loop devices'
    if not shutil.which('losetup'):
        return 'losetup is not installed'
    if not os.path.exists('/dev/loop-control'):
        return 'no /dev/loop-control'
    return None


class SlowPipe:
    '''A pipe fed with @data in chunks, @delay seconds apart, from a thread.'''

    def __init__(self, data, chunk=256 * 1024, delay=0.05):
        self.read_fd, self.write_fd = os.pipe()
        self.data = data
        self.chunk = chunk
        self.delay = delay
        self.stopped = threading.Event()
        self.written = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        try:
            while self.written < len(self.data) and not self.stopped.is_set():
                n = os.write(self.write_fd, self.data[self.written:self.written + self.chunk])
                self.written += n
                if self.delay:
                    self.stopped.wait(self.delay)
        except OSError:
            pass  # the reader went away
        finally:
            os.close(self.write_fd)

    def stop(self):
        self.stopped.set()
        self.thread.join(10)

    def close_read(self):
        os.close(self.read_fd)


def open_fd(path, flags=os.O_RDONLY):
    return os.open(path, flags | os.O_CLOEXEC)


def nonblock(fd):
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def log(msg):
    print(msg, file=sys.stderr)


# ---- auto-flash on real devices ----

LOOP_CTL_ADD = 0x4C80
LOOP_CTL_REMOVE = 0x4C81
UDEVD = '/lib/systemd/systemd-udevd'


UDEV_CONTROL = '/run/udev/control'


def udevd_running():
    return subprocess.run(['udevadm', 'control', '--ping', '--timeout=2'],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def udev_control_state(path=UDEV_CONTROL):
    '''"live", "dead" (a socket left by a udevd that died: connection
    refused) or "absent"; as bmapd decides it.'''
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(path)
    except (FileNotFoundError, NotADirectoryError):
        return 'absent'
    except ConnectionRefusedError:
        return 'dead'
    except OSError:
        return 'live'
    finally:
        s.close()
    return 'live'


class Udevd:
    '''systemd-udevd, started when none runs, so that bmapd hears udev's
    processed events (the "udev" netlink group) as on a real system. bmapd
    picks the group when it starts: start this first.'''

    def __init__(self, logdir):
        self.proc = None
        self.had_run_udev = os.path.exists('/run/udev')
        self.had_dev_disk = os.path.exists('/dev/disk')
        if udevd_running():
            return
        self.log = open(os.path.join(logdir, 'udevd.log'), 'w')
        env = dict(os.environ)
        env.pop('LD_PRELOAD', None)
        self.proc = subprocess.Popen([UDEVD], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)
        try:
            wait_until(lambda: self.proc.poll() is not None or udevd_running(), 20,
                       'systemd-udevd')
        except TimeoutError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f'systemd-udevd exited with {self.proc.returncode}')

    def stop(self):
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None
        self.log.close()
        # udevd leaves its control socket behind; bmapd once took it for a
        # running udevd and waited for events that never came.
        if not self.had_run_udev:
            shutil.rmtree('/run/udev', ignore_errors=True)
        # Nor the /dev/disk links of devices it saw: once a loop device's
        # name is used again, by-label/BOOT -> loop0p1 named a label the
        # new loop0p1 does not have (bmapctl's summary reads these links).
        if not self.had_dev_disk:
            shutil.rmtree('/dev/disk', ignore_errors=True)
        elif udev_control_state() == 'dead':
            with contextlib.suppress(FileNotFoundError):
                os.unlink(UDEV_CONTROL)


class CardReader:
    '''A loop device made through /dev/loop-control (the kernel's "add"),
    its backing file attached with losetup (a "change" with a medium, which
    bmapd sees as a new disk), and media of any size inserted and taken out
    by resizing the backing file (losetup -c: "change" with the new size).'''

    def __init__(self, tmpdir, size=0, fill=b'\xaa', first=100, directory=None):
        fd, self.backing = tempfile.mkstemp(prefix='bmapd-card-', suffix='.img',
                                            dir=directory or tmpdir)
        os.close(fd)
        self.fill = fill
        self.size = 0
        self._write_medium(size)
        control = os.open('/dev/loop-control', os.O_RDWR | os.O_CLOEXEC)
        try:
            number = first
            while True:
                try:
                    fcntl.ioctl(control, LOOP_CTL_ADD, number)
                    break
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        raise
                    number += 1
        finally:
            os.close(control)
        self.name = f'loop{number}'
        self.node = f'/dev/{self.name}'
        self.attached = False
        wait_until(lambda: os.path.exists(self.node), 10, self.node)

    def _write_medium(self, size):
        with open(self.backing, 'r+b') as f:
            f.truncate(0)
            block = self.fill * MiB
            for _ in range(size // MiB):
                f.write(block)
            f.write(self.fill * (size % MiB))
        self.size = size

    def attach(self):
        subprocess.run(['losetup', self.node, self.backing], check=True, capture_output=True)
        self.attached = True
        return self

    def insert(self, size):
        '''A medium of @size bytes, filled with the fill byte, goes in.'''
        self._write_medium(size)
        subprocess.run(['losetup', '-c', self.node], check=True, capture_output=True)

    def eject(self):
        self.insert(0)

    def uevent(self, action):
        with open(f'/sys/block/{self.name}/uevent', 'w') as f:
            f.write(action)

    def read(self, offset, length):
        drop_caches(self.node)
        return read_range(self.node, offset, length)

    def sha256(self, length=None):
        drop_caches(self.node)
        return file_sha256(self.node, length)

    def remove(self):
        if self.attached:
            subprocess.run(['losetup', '-d', self.node], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.attached = False
        control = os.open('/dev/loop-control', os.O_RDWR | os.O_CLOEXEC)
        try:
            # Detaching a device still open (by udev's rules) finishes on close.
            for _ in range(100):
                try:
                    fcntl.ioctl(control, LOOP_CTL_REMOVE, int(self.name[4:]))
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        break
                    time.sleep(0.05)
        finally:
            os.close(control)
        # OSError: on a shut down filesystem (FreezableDir) too.
        with contextlib.suppress(OSError):
            os.unlink(self.backing)


class FreezableDir:
    '''A directory on a small ext4 filesystem that can be frozen: writes to
    files in it (a loop device's backing file) then block until it is
    thawed, which holds a flash mid-way without timing; and shut down, so
    that the blocked writes fail as on a card pulled out.'''

    def __init__(self, tmpdir):
        self.image = os.path.join(tmpdir, 'freezable.ext4')
        self.path = os.path.join(tmpdir, 'freezable')
        self.frozen = False
        self.mounted = False
        with open(self.image, 'wb') as f:
            f.truncate(64 * MiB)
        subprocess.run(['mkfs.ext4', '-q', '-F', self.image], check=True, capture_output=True)
        os.mkdir(self.path)
        subprocess.run(['mount', '-o', 'loop', self.image, self.path], check=True,
                       capture_output=True)
        self.mounted = True

    def freeze(self):
        subprocess.run(['fsfreeze', '-f', self.path], check=True)
        self.frozen = True

    def shut_down(self):
        '''Every later I/O on the filesystem fails, as on a pulled card
        (ext4's EXT4_IOC_SHUTDOWN, without flushing the log).'''
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, 0x8004587D, (2).to_bytes(4, 'little'))
        finally:
            os.close(fd)

    def thaw(self):
        if self.frozen:
            subprocess.run(['fsfreeze', '-u', self.path], check=True)
            self.frozen = False

    def close(self):
        self.thaw()
        if self.mounted:
            subprocess.run(['umount', self.path], check=False)
            self.mounted = False


class FakeJournal:
    '''Plays journald's native socket, so that bmapd's structured entries
    can be read back (only where no journald runs). A thread reads it: a
    full socket would block bmapd's logging.'''

    DIR = '/run/systemd/journal'

    def __init__(self):
        import socket
        os.makedirs(self.DIR)
        self.path = os.path.join(self.DIR, 'socket')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.entries = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import socket
        while not self.stopped.is_set():
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.entries.append(self.parse(data))

    @staticmethod
    def parse(data):
        fields = {}
        while data:
            line, sep, rest = data.partition(b'\n')
            if b'=' in line:
                key, _, value = line.partition(b'=')
                data = rest
            else:  # KEY\n, 64-bit little-endian length, value, \n
                key = line
                length = int.from_bytes(rest[:8], 'little')
                value = rest[8:8 + length]
                data = rest[8 + length + 1:]
            fields[key.decode()] = value.decode(errors='replace')
        return fields

    def poll(self):
        with self.lock:
            return list(self.entries)

    def close(self):
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()
        shutil.rmtree(self.DIR, ignore_errors=True)
