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
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import gi

gi.require_version('Gio', '2.0')
gi.require_version('GLib', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

PYTHON = '/usr/bin/python3'
HERE = os.path.dirname(os.path.abspath(__file__))
POLKIT_TEMPLATE = os.path.join(HERE, 'polkitd_template.py')

BUS_NAME = 'org.bmapd.bmapd1'
MANAGER_PATH = '/org/bmapd/bmapd1'
MANAGER_IFACE = 'org.bmapd.bmapd1.Manager'
DEVICE_IFACE = 'org.bmapd.bmapd1.Device'
JOB_IFACE = 'org.bmapd.bmapd1.Job'
DEVICE_PREFIX = '/org/bmapd/bmapd1/device/'
JOB_PREFIX = '/org/bmapd/bmapd1/job/'
ERROR = 'org.bmapd.bmapd1.Error.'
INTERACTIVE_REQUIRED = 'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired'

POLKIT_NAME = 'org.freedesktop.PolicyKit1'
POLKIT_PATH = '/org/freedesktop/PolicyKit1/Authority'
MOCK_IFACE = 'org.freedesktop.DBus.Mock'

ACTION_FLASH = 'org.bmapd.bmapd1.flash'
ACTION_FLASH_SYSTEM = 'org.bmapd.bmapd1.flash-system'
ACTION_CREATE = 'org.bmapd.bmapd1.create'
ACTION_CANCEL = 'org.bmapd.bmapd1.cancel'

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
        fds = [image_fd]
        opts = {}
        if bmap_fd is not None:
            fds.append(bmap_fd)
            opts['bmap'] = GLib.Variant('h', 1)
        if nobmap:
            opts['nobmap'] = GLib.Variant('b', True)
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
        args = GLib.Variant('(oha{sv})', (device, 0, opts))
        if not block:
            return self.call_async(MANAGER_PATH, MANAGER_IFACE, 'Flash', args, fds,
                                   interactive)
        return self.call(MANAGER_PATH, MANAGER_IFACE, 'Flash', args, fds, interactive)[0]

    def create(self, image_fd, out_fd, **options):
        opts = {k.replace('_', '-'): GLib.Variant('s', v) for k, v in options.items()}
        args = GLib.Variant('(hha{sv})', (0, 1, opts))
        return self.call(MANAGER_PATH, MANAGER_IFACE, 'Create', args, [image_fd, out_fd])[0]

    def cancel(self, job, block=True):
        if not block:
            return self.call_async(job, JOB_IFACE, 'Cancel')
        return self.call(job, JOB_IFACE, 'Cancel')

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
        self._mock('SetChallenge', '(as)', (list(actions),))

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

    def __init__(self, bus, client, logdir, config='', args=(), env=None, wait=True):
        self.config_path = os.path.join(logdir, 'bmapd.conf')
        with open(self.config_path, 'w') as f:
            f.write(config)
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
            [find_bmapd(), '--bus-address', bus.address, '--config', self.config_path,
             '--idle-timeout', '0', '--debug', *args],
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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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
