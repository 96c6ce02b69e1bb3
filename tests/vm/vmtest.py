#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""bmapd's VM test: the installed product on a real Debian 12 system.

Builds (and caches) a Debian 12 guest root with mmdebstrap, installs the
project into a per-run copy of it with `meson install --destdir`, boots it
with qemu (KVM when it works, TCG otherwise), and runs the checks of
checks.py through an agent on a virtio-serial port (guest/bmapd-vm-agent),
plugging and unplugging USB storage backed by host files over QMP.

Run it through tests/vm/run, as root. Exit status: 0 when no check failed,
1 when one did, 77 when the VM could not run at all (everything skipped).
"""

import argparse
import base64
import glob
import hashlib
import json
import os
import queue
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(os.path.dirname(HERE))
SUITE = 'bookworm'
AGENT_PORT = 'org.bmapd.vmtest.agent'
MiB = 1024 * 1024

# The guest's test images (see make_images).
SMALL_SIZE = 8 * MiB
BIG_SIZE = 192 * MiB
CARD_SIZE = 64 * MiB
MARKER = b'BMAPD-VM-TEST-IMAGE'


class Skip(Exception):
    """The VM cannot run here at all: every check is skipped, with this reason."""


class BootFailed(Exception):
    """qemu ran but the guest never answered: that is a failure, not a skip."""


def log(msg=''):
    print(msg, flush=True)


def run_logged(cmd, logfile, **kwargs):
    """Runs cmd with its output appended to logfile; returns the exit status."""
    with open(logfile, 'a') as f:
        f.write('$ ' + ' '.join(shlex.quote(str(c)) for c in cmd) + '\n')
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, **kwargs).returncode


def tail(path, lines=20):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


# --- the cached guest root ---------------------------------------------------

def package_list():
    pkgs = []
    with open(os.path.join(HERE, 'packages')) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                pkgs.append(line)
    return pkgs


def cache_key():
    """The root is rebuilt whenever its package list or provisioning changes."""
    h = hashlib.sha256()
    for name in ('packages', 'provision'):
        with open(os.path.join(HERE, name), 'rb') as f:
            h.update(name.encode() + b'\0' + f.read() + b'\0')
    h.update(SUITE.encode())
    return h.hexdigest()[:16]


class NoArchive(Exception):
    """The host's apt configuration names no Debian archive for SUITE: the
    guest root cannot be built, and that is a failure of the host's setup."""


def apt_source_files(apt_etc=None):
    """The host's apt source files: sources.list and the .list and deb822
    .sources files of sources.list.d, where apt's configuration puts them."""
    if apt_etc is None:
        out = subprocess.run(['apt-config', 'shell', 'ETC', 'Dir::Etc/d', 'LIST', 'Dir::Etc::sourcelist/f',
                              'PARTS', 'Dir::Etc::sourceparts/d'],
                             capture_output=True, text=True)
        dirs = dict(re.findall(r"^(\w+)='(.*)'$", out.stdout, re.M)) if out.returncode == 0 else {}
        etc = dirs.get('ETC', '/etc/apt')
        sources_list = dirs.get('LIST', os.path.join(etc, 'sources.list'))
        parts = dirs.get('PARTS', os.path.join(etc, 'sources.list.d'))
    else:
        sources_list = os.path.join(apt_etc, 'sources.list')
        parts = os.path.join(apt_etc, 'sources.list.d')
    one_line = [sources_list] + sorted(glob.glob(os.path.join(parts, '*.list')))
    deb822 = sorted(glob.glob(os.path.join(parts, '*.sources')))
    return one_line, deb822, [sources_list, os.path.join(parts, '*.list'),
                              os.path.join(parts, '*.sources')]


def deb822_paragraphs(text):
    """The stanzas of a deb822 file as dicts of lower-case field -> words;
    comment lines are dropped and continuation lines joined."""
    paras, fields, key = [], {}, None
    for line in text.splitlines() + ['']:
        if line.startswith('#'):
            continue
        if not line.strip():
            if fields:
                paras.append(fields)
            fields, key = {}, None
        elif line[0] in ' \t' and key:
            fields[key] += line.split()
        elif ':' in line:
            key, value = line.split(':', 1)
            key = key.strip().lower()
            fields[key] = value.split()
    return paras


def debian_mirror(apt_etc=None):
    """The Debian archive this host installs SUITE from, read from its apt
    sources (BMAPD_VM_MIRROR overrides). Raises NoArchive naming the files
    searched when none has SUITE: no archive is assumed."""
    if os.environ.get('BMAPD_VM_MIRROR'):
        return os.environ['BMAPD_VM_MIRROR']
    one_line, deb822, searched = apt_source_files(apt_etc)
    candidates = []
    for path in one_line:
        try:
            with open(path) as f:
                for line in f:
                    words = re.sub(r'\[[^]]*\]', '', line.split('#', 1)[0]).split()
                    if len(words) >= 3 and words[0] == 'deb' and words[2] == SUITE:
                        candidates.append(words[1])
        except OSError:
            pass
    for path in deb822:
        try:
            with open(path) as f:
                paras = deb822_paragraphs(f.read())
        except OSError:
            continue
        for fields in paras:
            if fields.get('enabled', ['yes'])[0].lower() in ('no', 'false', '0'):
                continue
            if 'deb' in fields.get('types', []) and SUITE in fields.get('suites', []):
                candidates += fields.get('uris', [])
    if not candidates:
        raise NoArchive(f'no Debian archive for {SUITE} (a "deb" source of suite {SUITE}) in '
                        + ', '.join(searched) + '; add one, or name it in BMAPD_VM_MIRROR')
    # The main archive rather than a partial one (e.g. of backports only).
    for uri in candidates:
        if uri.rstrip('/').endswith('/debian'):
            return uri
    return candidates[0]


def build_root(cache, logdir, rebuild=False):
    """Returns the cached guest root directory, building it when needed."""
    key = cache_key()
    root = os.path.join(cache, 'root-' + key)
    if os.path.exists(os.path.join(root, '.bmapd-vm-complete')) and not rebuild:
        log(f'guest root: cached {root}')
        return root, 0.0
    for tool in ('mmdebstrap', 'mkfs.ext4'):
        if not shutil.which(tool):
            raise Skip(f'{tool} is not installed (tests/vm/setup-deps installs it)')
    start = time.monotonic()
    tmp = root + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    debs = os.path.join(cache, 'debs')
    os.makedirs(debs, exist_ok=True)
    provision = shlex.quote(os.path.join(HERE, 'provision'))
    mirror = debian_mirror()
    logfile = os.path.join(logdir, 'mmdebstrap.log')
    log(f'guest root: building {root} from {mirror} (log: {logfile})')
    cmd = [
        'mmdebstrap', '--variant=minbase', '--include=' + ','.join(package_list()),
        # Keep the downloaded packages between builds: a changed provisioning
        # script then costs no download.
        '--skip=download/empty',
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f'--setup-hook=sync-in {shlex.quote(debs)} /var/cache/apt/archives/',
        f'--essential-hook={provision} essential "$1"',
        f'--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(debs)}',
        '--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb',
        f'--customize-hook={provision} customize "$1"',
        SUITE, tmp, mirror,
    ]
    if run_logged(cmd, logfile) != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Skip(f'mmdebstrap could not build the guest root from {mirror} '
                   f'(is the archive reachable?); last lines of {logfile}:\n{tail(logfile)}')
    open(os.path.join(tmp, '.bmapd-vm-complete'), 'w').close()
    os.rename(tmp, root)
    # Roots of older package lists are of no further use.
    for old in glob.glob(os.path.join(cache, 'root-*')):
        if old != root:
            shutil.rmtree(old, ignore_errors=True)
    took = time.monotonic() - start
    log(f'guest root: built in {took:.0f} s')
    return root, took


def kernel_and_initrd(root):
    kernels = sorted(glob.glob(os.path.join(root, 'boot', 'vmlinuz-*')))
    if not kernels:
        raise Skip(f'no kernel in {root}/boot')
    version = os.path.basename(kernels[-1])[len('vmlinuz-'):]
    initrd = os.path.join(root, 'boot', 'initrd.img-' + version)
    if not os.path.exists(initrd):
        raise Skip(f'no initramfs for kernel {version} in {root}/boot')
    return kernels[-1], initrd


# --- the project -------------------------------------------------------------

def build_project(builddir, destdir, logdir):
    """Builds the tree and installs it into destdir. Returns notes to print.

    A tree that does not build completely (parts of it in progress) is still
    installed as far as it built, so that the checks report what works."""
    logfile = os.path.join(logdir, 'build.log')
    notes = []
    if not os.path.exists(os.path.join(builddir, 'build.ninja')):
        if run_logged(['meson', 'setup', builddir, SRCDIR, '-Dprefix=/usr', '-Dtests=false',
                       '-Dbuildtype=debugoptimized'], logfile) != 0:
            raise Skip(f'meson setup {builddir} failed; see {logfile}:\n{tail(logfile)}')
    if run_logged(['ninja', '-C', builddir], logfile) == 0:
        if run_logged(['meson', 'install', '-C', builddir, '--no-rebuild', '--quiet',
                       '--destdir', destdir], logfile) == 0:
            return notes
        notes.append(f'meson install failed (see {logfile}); installing what was built')
    else:
        notes.append(f'the build failed (see {logfile}); installing what was built')
        run_logged(['ninja', '-C', builddir, '-k', '0'], logfile)
    out = subprocess.run(['meson', 'introspect', '--installed', builddir],
                         capture_output=True, text=True)
    try:
        installed = json.loads(out.stdout)
    except ValueError:
        installed = {}
    for src, dest in installed.items():
        if os.path.isfile(src):
            target = destdir + dest
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(src, target)
        else:
            notes.append(f'not built: {dest}')
    return notes


def inventory(destdir):
    """What the checks need from the installation, and whether it is there."""
    wanted = {
        'bmapd': ['usr/sbin/bmapd', 'usr/libexec/bmapd'],
        'bmapctl': ['usr/bin/bmapctl'],
        'bmapd.service': ['lib/systemd/system/bmapd.service', 'usr/lib/systemd/system/bmapd.service'],
        'D-Bus activation': ['usr/share/dbus-1/system-services/org.bmapd.bmapd1.service'],
        'D-Bus policy': ['usr/share/dbus-1/system.d/org.bmapd.bmapd1.conf'],
        'polkit actions': ['usr/share/polkit-1/actions/org.bmapd.bmapd1.policy'],
        'polkit example rule': ['usr/share/doc/bmapd/examples/50-bmapd-plugdev.rules'],
    }
    have = {}
    for name, paths in wanted.items():
        have[name] = any(os.path.exists(os.path.join(destdir, p)) for p in paths)
    return have


def host_bmapctl(builddir):
    path = os.path.join(builddir, 'client', 'bmapctl')
    return path if os.access(path, os.X_OK) else None


# --- test images -------------------------------------------------------------

def make_images(imgdir, builddir, logdir):
    """small.img: 8 MiB with three mapped ranges and holes, for the flashes
    whose bytes the host checks; big.img: 192 MiB fully mapped, for the
    flashes that are interrupted (written to a throttled card: larger than
    what the page cache and the engine's writeback window hold, so that an
    interrupted flash still had data to write). Each gets a
    bmap made by the build's `bmapctl create` (bmaptool's when that fails)."""
    os.makedirs(imgdir, exist_ok=True)
    rng = random.Random(20240601)
    small = os.path.join(imgdir, 'small.img')
    with open(small, 'wb') as f:
        f.truncate(SMALL_SIZE)
        for offset, length in ((0, 1 * MiB), (3 * MiB, 512 * 1024), (6 * MiB, 4096)):
            f.seek(offset)
            data = bytearray(rng.randbytes(length))
            data[:len(MARKER)] = MARKER
            f.write(data)
    big = os.path.join(imgdir, 'big.img')
    with open(big, 'wb') as f:
        data = bytearray(rng.randbytes(BIG_SIZE))
        data[:len(MARKER)] = MARKER
        f.write(data)
    logfile = os.path.join(logdir, 'images.log')
    bmapctl = host_bmapctl(builddir)
    for img in (small, big):
        made = False
        if bmapctl:
            made = run_logged([bmapctl, 'create', '-o', img + '.bmap', img], logfile) == 0
        if not made and shutil.which('bmaptool'):
            made = run_logged(['bmaptool', 'create', '-o', img + '.bmap', img], logfile) == 0
        if not made:
            raise Skip(f'could not create the bmap of {img}; see {logfile}')
    return small, big


# --- the per-run disk image --------------------------------------------------

def make_disk(root, destdir, imgdir, image, logdir):
    """A copy of the cached root with the project, the agent and the test
    files added, as an ext4 image (mkfs.ext4 -d)."""
    logfile = os.path.join(logdir, 'image.log')
    staging = image + '.d'
    shutil.rmtree(staging, ignore_errors=True)
    if run_logged(['cp', '-a', '--reflink=auto', root, staging], logfile) != 0:
        raise Skip(f'could not copy {root}; see {logfile}')
    try:
        os.unlink(os.path.join(staging, '.bmapd-vm-complete'))
        # The guest has merged /usr: keep its /lib -> usr/lib symlinks when
        # the build installs to /lib/systemd/system.
        tar = subprocess.Popen(['tar', '-C', destdir, '-c', '.'], stdout=subprocess.PIPE)
        untar = subprocess.run(['tar', '-C', staging, '-x', '--keep-directory-symlink',
                                '--no-same-owner'], stdin=tar.stdout)
        tar.stdout.close()
        if tar.wait() != 0 or untar.returncode != 0:
            raise Skip('could not copy the installation into the guest root')

        guest = os.path.join(HERE, 'guest')

        def put(src, dest, mode=0o644):
            target = staging + dest
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(src, target)
            os.chmod(target, mode)

        put(os.path.join(guest, 'bmapd-vm-agent'), '/usr/local/sbin/bmapd-vm-agent', 0o755)
        put(os.path.join(guest, 'bmapd-vm-agent.service'),
            '/etc/systemd/system/bmapd-vm-agent.service')
        wants = staging + '/etc/systemd/system/multi-user.target.wants'
        os.makedirs(wants, exist_ok=True)
        os.symlink('../bmapd-vm-agent.service', wants + '/bmapd-vm-agent.service')

        # The allowed user's rule: the project's own example, as an
        # administrator would enable it.
        example = staging + '/usr/share/doc/bmapd/examples/50-bmapd-plugdev.rules'
        rule = example if os.path.exists(example) else os.path.join(guest, '50-bmapd-vmtest.rules')
        put(rule, '/etc/polkit-1/rules.d/50-bmapd-plugdev.rules')

        put(os.path.join(guest, 'autoflash-vm.conf'),
            '/etc/bmapd/autoflash.d/50-vmtest.conf.disabled')
        for name in os.listdir(imgdir):
            put(os.path.join(imgdir, name), '/srv/bmapd-vm/' + name)

        out = subprocess.run(['du', '-sb', staging], capture_output=True, text=True)
        used = int(out.stdout.split()[0])
        size = max(1024 * MiB, (used * 3 // 2 + 256 * MiB) // MiB * MiB)
        if os.path.exists(image):
            os.unlink(image)
        with open(image, 'wb') as f:
            f.truncate(size)
        if run_logged(['mkfs.ext4', '-q', '-F', '-L', 'bmapd-vm', '-d', staging, image],
                      logfile) != 0:
            raise Skip(f'mkfs.ext4 -d failed; see {logfile}:\n{tail(logfile)}')
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rule == example


# --- QMP ---------------------------------------------------------------------

class QmpError(Exception):
    pass


class Qmp:
    """A QMP client: commands wait for their answer, events are collected."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile('rwb')
        self.answers = queue.Queue()
        self.events = []
        self.cond = threading.Condition()
        json.loads(self.file.readline())  # the greeting
        threading.Thread(target=self._reader, daemon=True).start()
        self.command('qmp_capabilities')

    def _reader(self):
        try:
            for line in self.file:
                msg = json.loads(line)
                if 'event' in msg:
                    with self.cond:
                        self.events.append(msg)
                        self.cond.notify_all()
                else:
                    self.answers.put(msg)
        except OSError:  # qemu quit
            pass
        self.answers.put({'error': {'desc': 'QMP connection closed'}})

    def command(self, name, **args):
        self.file.write(json.dumps({'execute': name, 'arguments': args}).encode() + b'\n')
        self.file.flush()
        answer = self.answers.get(timeout=60)
        if 'error' in answer:
            raise QmpError(f'{name}: {answer["error"].get("desc")}')
        return answer.get('return')

    def wait_event(self, name, timeout, **data):
        """Waits for (and consumes) an event whose data has these values."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev['event'] == name and all(
                            ev.get('data', {}).get(k) == v for k, v in data.items()):
                        self.events.remove(ev)
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QmpError(f'no {name} event {data} within {timeout} s')
                self.cond.wait(left)


# --- the guest agent ---------------------------------------------------------

class Result:
    def __init__(self, status, out, err):
        self.status, self.out, self.err = status, out, err

    def __repr__(self):
        return f'exit {self.status}; stdout: {self.out.strip()[:800]!r}; stderr: {self.err.strip()[:800]!r}'


class Agent:
    """Client of guest/bmapd-vm-agent over the virtio-serial port's socket."""

    def __init__(self, path, transcript):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile('rwb')
        self.lock = threading.Lock()
        self.cond = threading.Condition()
        self.done = {}
        self.pongs = set()
        self.next_id = 1
        self.transcript = open(transcript, 'a')
        self.scripts = {}
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        try:
            for line in self.file:
                words = line.decode(errors='replace').rstrip('\n').split(' ')
                with self.cond:
                    if words[0] == 'PONG' and len(words) == 2:
                        self.pongs.add(words[1])
                    elif words[0] == 'DONE' and len(words) == 5:
                        out = base64.b64decode(words[3]).decode(errors='replace')
                        err = base64.b64decode(words[4]).decode(errors='replace')
                        self.done[words[1]] = Result(int(words[2]), out, err)
                    self.cond.notify_all()
        except OSError:  # qemu quit
            pass

    def _send(self, line):
        with self.lock:
            self.file.write(line.encode() + b'\n')
            self.file.flush()

    def _id(self):
        with self.cond:
            self.next_id += 1
            return str(self.next_id)

    def wait_ready(self, timeout, alive):
        """Pings until the agent answers; alive() tells whether qemu still runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive():
                return False
            ping = self._id()
            self._send('PING ' + ping)
            with self.cond:
                self.cond.wait_for(lambda: ping in self.pongs, timeout=2)
                if ping in self.pongs:
                    return True
        return False

    def start(self, script, timeout=120):
        cmd_id = self._id()
        self.scripts[cmd_id] = (script, timeout)
        payload = base64.b64encode(script.encode()).decode()
        self._send(f'RUN {cmd_id} {int(timeout)} {payload}')
        return cmd_id

    def wait(self, cmd_id, timeout=None):
        script, guest_timeout = self.scripts.pop(cmd_id)
        if timeout is None:
            timeout = guest_timeout + 30
        with self.cond:
            if not self.cond.wait_for(lambda: cmd_id in self.done, timeout=timeout):
                raise TimeoutError(f'no answer from the guest agent within {timeout} s for: {script}')
            res = self.done.pop(cmd_id)
        self.transcript.write(f'$ {script}\n{res}\n\n')
        self.transcript.flush()
        return res

    def poll(self, cmd_id):
        """The result if the command has finished, else None (not consumed)."""
        with self.cond:
            return self.done.get(cmd_id)

    def run(self, script, timeout=120):
        return self.wait(self.start(script, timeout))


# --- the virtual machine -----------------------------------------------------

def kvm_usable():
    """(usable, reason). A host whose only KVM is PVM (kvm_pvm, as on some
    nested cloud machines) runs only PVM guest kernels: Debian's hangs."""
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        return False, 'no /dev/kvm'
    if os.path.isdir('/sys/module/kvm_pvm') and not (
            os.path.isdir('/sys/module/kvm_intel') or os.path.isdir('/sys/module/kvm_amd')):
        return False, 'the host KVM is PVM (kvm_pvm), which boots only PVM guest kernels'
    return True, ''


class VM:
    def __init__(self, workdir, logdir, disk, kernel, initrd):
        self.workdir, self.logdir = workdir, logdir
        self.disk, self.kernel, self.initrd = disk, kernel, initrd
        self.console = os.path.join(logdir, 'console.log')
        self.qmp_path = os.path.join(workdir, 'qmp.sock')
        self.agent_path = os.path.join(workdir, 'agent.sock')
        self.proc = None
        self.qmp = None
        self.agent = None
        self.accel = None
        self.plugged = {}

    def _args(self, accel):
        # no_timer_check: under TCG on a busy host the kernel's check of the
        # IO-APIC timer can miss its ticks and panic ("IO-APIC + timer
        # doesn't work!"), as on any virtual machine.
        cmdline = ('root=/dev/vda rw console=ttyS0,115200 panic=-1 no_timer_check '
                   'net.ifnames=0 mitigations=off')
        if accel == 'kvm':
            accel_args = ['-accel', 'kvm', '-cpu', 'host']
            # Tells within seconds whether the kernel runs at all (start()).
            cmdline += ' earlyprintk=serial,ttyS0,115200'
        else:
            accel_args = ['-accel', 'tcg,thread=multi', '-cpu', 'max']
            # Every console byte costs an emulated port write: only warnings.
            cmdline += ' quiet'
        return ['qemu-system-x86_64', '-name', 'bmapd-vm', '-nodefaults', '-no-reboot',
                *accel_args, '-machine', 'q35', '-m', '1024', '-smp', '2', '-display', 'none',
                '-serial', 'file:' + self.console,
                '-kernel', self.kernel, '-initrd', self.initrd, '-append', cmdline,
                '-drive', f'if=none,id=root,file={self.disk},format=raw,cache=unsafe',
                '-device', 'virtio-blk-pci,drive=root,serial=bmapd-vm-root',
                '-device', 'virtio-serial-pci,id=vser',
                '-chardev', f'socket,id=agent,path={self.agent_path},server=on,wait=off',
                '-device', f'virtserialport,chardev=agent,name={AGENT_PORT}',
                '-device', 'qemu-xhci,id=xhci',
                '-qmp', f'unix:{self.qmp_path},server=on,wait=off']

    def _launch(self, accel):
        for path in (self.qmp_path, self.agent_path, self.console):
            if os.path.exists(path):
                os.unlink(path)
        args = self._args(accel)
        self.qemu_log = os.path.join(self.logdir, f'qemu-{accel}.log')
        with open(self.qemu_log, 'w') as f:
            f.write('$ ' + ' '.join(shlex.quote(a) for a in args) + '\n')
        with open(self.qemu_log, 'a') as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                said = [l for l in tail(self.qemu_log, 4).splitlines() if not l.startswith('$ ')]
                return f'qemu exited with status {self.proc.returncode}: ' + ' / '.join(said)
            if os.path.exists(self.qmp_path) and os.path.exists(self.agent_path):
                return None
            time.sleep(0.1)
        self.kill()
        return 'qemu did not create its sockets within 15 s'

    def _console_has(self, text):
        try:
            with open(self.console, errors='replace') as f:
                return text in f.read()
        except OSError:
            return False

    def start(self):
        if not shutil.which('qemu-system-x86_64'):
            raise Skip('qemu-system-x86_64 is not installed (tests/vm/setup-deps installs it)')
        wanted = os.environ.get('BMAPD_VM_ACCEL', '')
        if wanted in ('kvm', 'tcg'):
            order = [wanted]
        else:
            ok, why = kvm_usable()
            order = ['kvm', 'tcg'] if ok else ['tcg']
            if not ok:
                log(f'qemu: not trying KVM: {why}')
        reasons = []
        for accel in order:
            err = self._launch(accel)
            if err:
                reasons.append(f'{accel}: {err}')
                log(f'qemu: {accel} did not start: {err}')
                continue
            if accel == 'kvm' and len(order) > 1:
                # A guest kernel that cannot run under this KVM hangs before
                # its first message: give it a few seconds, then use TCG.
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and self.proc.poll() is None:
                    if self._console_has('Linux version'):
                        break
                    time.sleep(0.5)
                if not self._console_has('Linux version'):
                    log('qemu: the guest kernel printed nothing in 20 s under KVM; using TCG')
                    reasons.append('kvm: guest kernel hung')
                    self.kill()
                    continue
            self.accel = accel
            log(f'qemu: started with -accel {accel} (console: {self.console})')
            break
        else:
            raise Skip('qemu cannot start: ' + '; '.join(reasons))
        self.qmp = Qmp(self.qmp_path)
        self.agent = Agent(self.agent_path, os.path.join(self.logdir, 'agent.log'))

    def wait_booted(self, timeout):
        if not self.agent.wait_ready(timeout, lambda: self.proc.poll() is None):
            if self.proc.poll() is not None:
                raise BootFailed(f'qemu exited ({self.proc.returncode}) before the guest agent '
                                 f'answered; console: {self.console}\n{tail(self.console, 3)}')
            raise BootFailed(f'the guest agent did not answer within {timeout} s; '
                             f'console: {self.console}\n{tail(self.console, 15)}')
        res = self.agent.run('systemctl is-system-running --wait', timeout=180)
        state = res.out.strip()
        if state != 'running':
            failed = self.agent.run('systemctl --failed --no-legend --plain')
            log(f'guest: system state {state!r}; failed units: {failed.out.strip() or "none"}')
        return state

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.alive():
            try:
                self.qmp.command('quit')
                self.proc.wait(timeout=20)
            except Exception:
                pass
        self.kill()

    # Commands in the guest.

    def sh(self, script, timeout=120):
        return self.agent.run(script, timeout)

    def user_cmd(self, user, command):
        return (f'setpriv --reuid={user} --regid={user} --init-groups --reset-env -- '
                f'bash -c {shlex.quote(command)}')

    def user(self, user, command, timeout=120):
        return self.agent.run(self.user_cmd(user, command), timeout)

    # USB storage, plugged into the guest's xHCI controller.

    def plug(self, name, path, serial, write_bps=None):
        """Plugs a USB disk backed by the host file path; write_bps throttles
        its writes so that a flash onto it lasts long enough to interrupt."""
        node = 'card-' + name
        raw = {'driver': 'raw', 'node-name': node, 'file': {'driver': 'file', 'filename': path}}
        if write_bps:
            self.qmp.command('object-add', **{'qom-type': 'throttle-group', 'id': 'tg-' + name,
                                               'limits': {'bps-write': write_bps}})
            raw['node-name'] = node + '-raw'
            self.qmp.command('blockdev-add', **{'driver': 'throttle', 'node-name': node,
                                                 'throttle-group': 'tg-' + name, 'file': raw})
        else:
            self.qmp.command('blockdev-add', **raw)
        self.qmp.command('device_add', driver='usb-storage', id='usb-' + name, bus='xhci.0',
                         drive=node, removable=True, serial=serial)
        self.plugged[name] = bool(write_bps)

    def unplug(self, name, timeout=60):
        """Pulls the disk out; when this returns, qemu has closed the file."""
        if name not in self.plugged:
            return
        throttled = self.plugged.pop(name)
        self.qmp.command('device_del', id='usb-' + name)
        self.qmp.wait_event('DEVICE_DELETED', timeout, device='usb-' + name)
        self.qmp.command('blockdev-del', **{'node-name': 'card-' + name})
        if throttled:
            self.qmp.command('object-del', id='tg-' + name)


def save_guest_logs(vm, logdir):
    """The guest's journal, for a failure's why (the disk image is deleted)."""
    try:
        res = vm.sh('journalctl -b --no-pager -o short-monotonic', timeout=120)
        with open(os.path.join(logdir, 'journal.txt'), 'w') as f:
            f.write(res.out)
        log(f'guest journal: {logdir}/journal.txt')
    except Exception as e:
        log(f'guest journal: not saved: {e}')


# --- main --------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cache', default=os.environ.get('BMAPD_VM_CACHE', '/var/cache/bmapd-vm'),
                        help='where the guest root is cached (default: %(default)s)')
    parser.add_argument('--builddir', default=os.environ.get(
        'BMAPD_VM_BUILDDIR', os.path.join(SRCDIR, 'build-vm')),
        help='the project build installed into the guest (default: %(default)s)')
    parser.add_argument('--rebuild-root', action='store_true', help='rebuild the cached guest root')
    parser.add_argument('--keep', action='store_true', help='keep the per-run work directory')
    parser.add_argument('--only', action='append', default=[], metavar='CHECK',
                        help='run only this check (repeatable)')
    parser.add_argument('--list', action='store_true', help='list the checks and exit')
    args = parser.parse_args()

    import checks

    if args.list:
        for name, title, _ in checks.CHECKS:
            print(f'{name:24} {title}')
        return 0
    for name in args.only:
        if name not in [c[0] for c in checks.CHECKS]:
            parser.error(f'unknown check {name!r} (see --list)')

    start = time.monotonic()
    times = {}
    results = []
    selected = [c for c in checks.CHECKS if not args.only or c[0] in args.only]

    def finish(status):
        passed = sum(1 for _, r in results if r == 'PASS')
        failed = sum(1 for _, r in results if r == 'FAIL')
        skipped = sum(1 for _, r in results if r == 'SKIP')
        figures = ', '.join(f'{k} {v:.0f} s' for k, v in times.items())
        log()
        for name, r in results:
            log(f'{r} {name}')
        log(f'vm test: {time.monotonic() - start:.0f} s ({figures})')
        log(f'{passed} passed, {failed} failed, {skipped} skipped')
        return status

    def skip_all(reason):
        log(f'SKIP: the VM test cannot run: {reason}')
        for name, _, _ in selected:
            results.append((name, 'SKIP'))
        return finish(77)

    if os.geteuid() != 0:
        return skip_all('it must run as root (mmdebstrap, mkfs.ext4 -d)')

    os.makedirs(args.cache, exist_ok=True)
    logdir = os.path.join(args.cache, 'last-run')
    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    log(f'logs: {logdir}')
    workdir = tempfile.mkdtemp(prefix='work-', dir=args.cache)
    vm = None
    try:
        t = time.monotonic()
        root, _ = build_root(args.cache, logdir, args.rebuild_root)
        times['root'] = time.monotonic() - t
        kernel, initrd = kernel_and_initrd(root)

        t = time.monotonic()
        destdir = os.path.join(workdir, 'destdir')
        for note in build_project(args.builddir, destdir, logdir):
            log('build: ' + note)
        have = inventory(destdir)
        log('installed: ' + ', '.join(f'{k} {"yes" if v else "NO"}' for k, v in have.items()))
        imgdir = os.path.join(workdir, 'images')
        make_images(imgdir, args.builddir, logdir)
        times['build'] = time.monotonic() - t

        t = time.monotonic()
        disk = os.path.join(workdir, 'root.img')
        if not make_disk(root, destdir, imgdir, disk, logdir):
            log('polkit: the build installs no example rule; using tests/vm/guest/50-bmapd-vmtest.rules')
        times['image'] = time.monotonic() - t

        t = time.monotonic()
        vm = VM(workdir, logdir, disk, kernel, initrd)
        try:
            for attempt in (1, 2):
                vm.start()
                try:
                    state = vm.wait_booted(300)
                    break
                except BootFailed as e:
                    # A guest that panicked early may boot the next time;
                    # one that hangs or never answers will not.
                    if attempt == 2 or vm.alive():
                        raise
                    log(f'guest: {e}; booting once more')
                    shutil.copy(vm.console, vm.console + '.1')
        except BootFailed as e:
            times['boot'] = time.monotonic() - t
            log(f'FAIL guest-boot: {e}')
            results.append(('guest-boot', 'FAIL'))
            for name, _, _ in selected:
                results.append((name, 'SKIP'))
            return finish(1)
        times['boot'] = time.monotonic() - t
        log(f'guest: booted under {vm.accel} in {times["boot"]:.0f} s, system {state}')

        t = time.monotonic()
        ctx = checks.Context(vm, workdir, imgdir)
        gone = ''
        for name, title, fn in selected:
            log()
            log(f'-- {name}: {title}')
            status, detail, took = checks.run_check(ctx, fn)
            log(f'{status} {name} ({took:.0f} s){": " + detail if detail else ""}')
            results.append((name, status))
            if not vm.alive():
                gone = 'qemu is gone'
                break
            if status == 'FAIL' and not vm.agent.wait_ready(30, vm.alive):
                gone = 'the guest agent no longer answers'
                break
        for name, _, _ in selected[len(results):]:
            log(f'SKIP {name}: {gone}')
            results.append((name, 'SKIP'))
        times['checks'] = time.monotonic() - t
        if vm.alive():
            save_guest_logs(vm, logdir)
    except Skip as e:
        return skip_all(str(e))
    except NoArchive as e:
        log(f'FAIL guest-root: {e}')
        results.append(('guest-root', 'FAIL'))
        for name, _, _ in selected:
            results.append((name, 'SKIP'))
        return finish(1)
    finally:
        if vm:
            vm.stop()
        if args.keep:
            log(f'work directory kept: {workdir}')
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return finish(1 if any(r == 'FAIL' for _, r in results) else 0)


if __name__ == '__main__':
    sys.dont_write_bytecode = True  # nothing written into the source tree
    sys.path.insert(0, HERE)
    sys.exit(main())
