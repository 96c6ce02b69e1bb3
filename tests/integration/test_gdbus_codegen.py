# SPDX-License-Identifier: GPL-2.0-or-later
'''Proof that GUIs can use the API: the XML is installed (meson install
into a destdir), gdbus-codegen generates C bindings from the installed
copy, a small C client (gdbus-client/) is compiled against them with cc and
gio-unix-2.0, and it flashes a loop device through bmapd: devices from the
object manager, file descriptors passed through the generated UnixFD
functions, the job followed from Progress to Finished, and cancelled; and,
with no message flags (generated code sets none), a password asked for by
the polkit mock's agent, unless the call says no-user-interaction.'''

import glob
import os
import shutil
import subprocess
import threading

import pytest

import bmapd_harness as h

pytestmark = pytest.mark.loop

CLIENT_SOURCE = os.path.join(h.HERE, 'gdbus-client', 'bmapd-gui-client.c')


def build_dir():
    '''The meson build directory bmapd under test comes from.'''
    path = os.path.dirname(os.path.dirname(os.path.abspath(h.find_bmapd())))
    if not os.path.isdir(os.path.join(path, 'meson-info')):
        pytest.skip(f'{path} is not a meson build directory (bmapd from {h.find_bmapd()})')
    return path


def run(args, **kwargs):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


@pytest.fixture(scope='module')
def installed_xml(tmp_path_factory):
    for tool in ('meson', 'gdbus-codegen', 'cc', 'pkg-config'):
        if not shutil.which(tool):
            pytest.skip(f'{tool} is not installed (tools/setup-deps installs it)')
    dest = str(tmp_path_factory.mktemp('destdir'))
    run(['meson', 'install', '-C', build_dir(), '--no-rebuild', '--quiet', '--tags', 'devel',
         '--destdir', dest])
    found = glob.glob(os.path.join(dest, '**', 'dbus-1', 'interfaces', 'org.bmapd.bmapd1.xml'),
                      recursive=True)
    assert len(found) == 1, f'installed: {found}'
    return found[0]


@pytest.fixture(scope='module')
def gui_client(installed_xml, tmp_path_factory):
    if subprocess.run(['pkg-config', '--exists', 'gio-unix-2.0']).returncode != 0:
        pytest.skip('gio-unix-2.0 development files are not installed')
    work = str(tmp_path_factory.mktemp('gdbus-client'))
    run(['gdbus-codegen', '--interface-prefix', 'org.bmapd.bmapd1.', '--c-namespace', 'Bmapd',
         '--generate-c-code', 'bmapd-generated', '--c-generate-object-manager',
         '--c-generate-autocleanup', 'all', installed_xml], cwd=work)
    flags = run(['pkg-config', '--cflags', '--libs', 'gio-unix-2.0']).stdout.split()
    exe = os.path.join(work, 'bmapd-gui-client')
    # The generated code compiles without a warning, as a GUI's build wants.
    run(['cc', '-Wall', '-Wextra', '-Werror', '-Wno-unused-parameter', '-I', work, '-o', exe,
         CLIENT_SOURCE, os.path.join(work, 'bmapd-generated.c'), *flags])
    return exe


def run_client(exe, bus, *args):
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    env.pop('LD_PRELOAD', None)
    proc = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=120)
    events = [line.split(' ', 1) for line in proc.stdout.splitlines()]
    return proc, [(kind, rest.split('\t')) for kind, rest in events]


ALLOW_USER_INTERACTION = 1  # polkit's CheckAuthorization flag


def test_flash_with_generated_bindings(daemon, bus, client, polkit, loop, image, gui_client):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    proc, events = run_client(gui_client, bus, 'flash', loop.node, image['path'], image['bmap'])
    assert proc.returncode == 0, (proc.stdout, proc.stderr)

    kinds = [kind for kind, _ in events]
    assert kinds[0] == 'device' and 'job' in kinds and kinds[-1] == 'finished'
    device = dict(events)['device']
    assert device[1:] == ['Loop Device 17 MB', 'drive-harddisk']
    progress = [(state, int(done), int(total)) for kind, (state, done, total, _) in
                ((k, v) for k, v in events if k == 'progress')]
    assert progress, proc.stdout
    done = [d for _, d, _ in progress]
    assert done == sorted(done), proc.stdout
    assert progress[-1][1] == progress[-1][2] > 0, proc.stdout
    assert dict(events)['finished'] == ['done', '', '']
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length)


def test_password_request_with_generated_bindings(daemon, bus, client, polkit, loop, image,
                                                 gui_client):
    '''flash needs a password: bmapd lets polkit ask although the generated
    call carries no interactive-authorization flag, and the agent's yes
    flashes.'''
    polkit.set_challenge([h.ACTION_FLASH])
    client.wait_device(loop.node)
    proc, events = run_client(gui_client, bus, 'flash', loop.node, image['path'], image['bmap'])
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    [caller] = dict(events)['caller']
    [(action, _, flags, kind, name, _)] = polkit.checks()
    assert (action, kind, name) == (h.ACTION_FLASH, 'system-bus-name', caller)
    assert flags & ALLOW_USER_INTERACTION, 'bmapd did not let polkit ask for a password'
    assert polkit.agent_requests() == [(h.ACTION_FLASH, caller)]
    assert dict(events)['finished'] == ['done', '', '']
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length)


def test_no_user_interaction_with_generated_bindings(daemon, bus, client, polkit, loop, image,
                                                    gui_client):
    '''The option no-user-interaction true: polkit may not ask, and a flash
    that needs a password is NotAuthorized, writing nothing.'''
    polkit.set_challenge([h.ACTION_FLASH])
    client.wait_device(loop.node)
    before = loop.sha256()
    proc, events = run_client(gui_client, bus, 'flash', loop.node, image['path'], image['bmap'],
                              'no-user-interaction')
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    name, message = dict(events)['flash-failed']
    assert name == h.ERROR + 'NotAuthorized'
    assert h.ACTION_FLASH in message and 'no-user-interaction' in message
    [(action, _, flags, _, subject, _)] = polkit.checks()
    assert (action, subject) == (h.ACTION_FLASH, dict(events)['caller'][0])
    assert not flags & ALLOW_USER_INTERACTION
    assert polkit.agent_requests() == []
    assert 'job' not in dict(events)
    assert loop.sha256() == before


class SlowFifo:
    '''A named pipe that a thread feeds slowly, so that a job reading it
    can be cancelled while it writes.'''

    def __init__(self, path, data):
        self.path = path
        os.mkfifo(path)
        self.data = data
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self):
        try:
            with open(self.path, 'wb', buffering=0) as f:
                for pos in range(0, len(self.data), 64 * 1024):
                    if self.stop.wait(0.1):
                        return
                    f.write(self.data[pos:pos + 64 * 1024])
        except (BrokenPipeError, OSError):
            pass  # the job was cancelled and closed its end

    def close(self):
        self.stop.set()
        # Unblock an open() still waiting for a reader.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        self.thread.join(10)


def test_cancel_with_generated_bindings(daemon, bus, client, polkit, loop, image, gui_client,
                                        tmp_path):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    with open(image['path'], 'rb') as f:
        fifo = SlowFifo(str(tmp_path / 'image.fifo'), f.read())
    try:
        proc, events = run_client(gui_client, bus, 'cancel', loop.node, fifo.path, image['bmap'])
    finally:
        fifo.close()
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    kinds = [kind for kind, _ in events]
    assert kinds.index('cancel') < kinds.index('finished')
    state, name, message = dict(events)['finished']
    assert (state, name) == ('canceled', '')
    assert message.startswith('Flashing "image.fifo" onto ' + loop.node + ' was canceled by')
    assert client.get(client.device_path(loop.node), h.DEVICE_IFACE, 'Job') == '/'
