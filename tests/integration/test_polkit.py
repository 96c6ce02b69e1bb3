# SPDX-License-Identifier: GPL-2.0-or-later
'''What bmapd asks polkit, and what it does with the answer.'''

import os
import shutil
import subprocess

import pytest

import bmapd_harness as h
from conftest import cancel_as_nobody, run_as_nobody
from test_cli import bmapctl  # noqa: F401 (a fixture)
from test_jobs import start_slow_flash

ALLOW_USER_INTERACTION = 1  # polkit's CheckAuthorization flag

DETAIL_KEYS = {'device', 'disk', 'drive.vendor', 'drive.model', 'drive.serial', 'drive.bus',
               'drive.removable', 'bmap.signature', 'options.eject', 'options.power-off'}


def job_events(client, member):
    return [args[0] for path, iface, m, args in client.signals if m == member
            and args[0].startswith(h.JOB_PREFIX)]


@pytest.mark.loop
def test_denied_writes_nothing(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([])
    before = loop.sha256()
    dev = client.wait_device(loop.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert h.ACTION_FLASH in e.value.message
    assert loop.sha256() == before
    # Jobs are made once authorized: none was.
    client.iterate(0.2)
    assert job_events(client, 'InterfacesAdded') == []
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'


@pytest.mark.loop
def test_allowed_with_subject_details_and_flags(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert client.wait_finished(job)[0] == 'done'
    [(action, details, flags, kind, name, _)] = polkit.checks()
    assert action == h.ACTION_FLASH
    assert kind == 'system-bus-name' and name == client.unique_name
    assert set(details) == DETAIL_KEYS
    assert details['device'] == loop.node and details['disk'] == loop.node
    assert details['drive.bus'] == 'virtual'
    assert details['drive.removable'] == 'false'
    assert details['bmap.signature'] == 'none'  # no "bmap-signature" passed
    # Interactive by default, as udisks2: the call set no message flag.
    assert flags == ALLOW_USER_INTERACTION


@pytest.mark.loop
def test_interactive_by_default(daemon, client, polkit, loop, image, fds):
    '''No message flag, no option: polkit may ask, and the agent's yes flashes.'''
    polkit.set_challenge([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert client.wait_finished(job)[0] == 'done'
    assert [c[2] for c in polkit.checks()] == [ALLOW_USER_INTERACTION]
    assert polkit.agent_requests() == [(h.ACTION_FLASH, client.unique_name)]
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length)


@pytest.mark.loop
def test_no_user_interaction(daemon, client, polkit, loop, image, fds):
    '''"no-user-interaction" true: no password is asked for, and a check that
    needs one is NotAuthorized; it wins over the message flag.'''
    polkit.set_challenge([h.ACTION_FLASH])
    before = loop.sha256()
    dev = client.wait_device(loop.node)
    for interactive in (False, True):
        with pytest.raises(h.DBusCallError) as e:
            client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']),
                         interactive=interactive, no_user_interaction=True)
        assert e.value.name == h.ERROR + 'NotAuthorized'
        assert h.ACTION_FLASH in e.value.message
        assert '"no-user-interaction" true' in e.value.message
    assert [c[2] for c in polkit.checks()] == [0, 0]
    assert polkit.agent_requests() == []
    assert loop.sha256() == before

    # false is the default, said out loud.
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']),
                       no_user_interaction=False)
    assert client.wait_finished(job)[0] == 'done'
    assert polkit.checks()[-1][2] == ALLOW_USER_INTERACTION


@pytest.mark.loop
def test_password_dialog_dismissed(daemon, client, polkit, loop, image, fds):
    polkit.set_challenge([h.ACTION_FLASH])
    polkit.set_agent_answer(False)
    before = loop.sha256()
    dev = client.wait_device(loop.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert 'dismissed' in e.value.message
    assert polkit.agent_requests() == [(h.ACTION_FLASH, client.unique_name)]
    assert loop.sha256() == before


@pytest.mark.loop
def test_no_user_interaction_wrong_type(daemon, client, polkit, loop, image, fds, tmp_path):
    '''Validated like every option, for every method that takes it, before
    polkit is asked.'''
    polkit.set_allowed([h.ACTION_FLASH, h.ACTION_CREATE, h.ACTION_AUTO_FLASH])
    dev = client.wait_device(loop.node)
    calls = {
        'Flash': lambda: client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']),
                                      no_user_interaction='yes'),
        'Create': lambda: client.create(fds(image['path']),
                                        fds(str(tmp_path / 'x.bmap'), os.O_WRONLY | os.O_CREAT),
                                        no_user_interaction='yes'),
        'AddAutoFlash': lambda: client.add_auto_flash(fds(image['path']),
                                                      bmap_fd=fds(image['bmap']),
                                                      no_user_interaction='yes'),
    }
    for method, call in calls.items():
        with pytest.raises(h.DBusCallError) as e:
            call()
        assert e.value.name == h.ERROR + 'InvalidArgument', method
        assert e.value.message.endswith(
            'option "no-user-interaction" has type "s", expected "b"'), (method, e.value.message)
    assert polkit.checks() == []


def test_create_and_auto_flash_take_no_user_interaction(daemon, client, polkit, image, fds,
                                                        tmp_path):
    polkit.set_challenge([h.ACTION_CREATE, h.ACTION_AUTO_FLASH])
    out = str(tmp_path / 'c.bmap')
    with pytest.raises(h.DBusCallError) as e:
        client.create(fds(image['path']), fds(out, os.O_WRONLY | os.O_CREAT),
                      no_user_interaction=True)
    assert e.value.name == h.ERROR + 'NotAuthorized'
    with pytest.raises(h.DBusCallError) as e:
        client.add_auto_flash(fds(image['path']), bmap_fd=fds(image['bmap']),
                              no_user_interaction=True)
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert client.rules() == {}
    assert [(c[0], c[2]) for c in polkit.checks()] == [(h.ACTION_CREATE, 0),
                                                      (h.ACTION_AUTO_FLASH, 0)]
    assert polkit.agent_requests() == []

    # By default the agent asks, and both go through.
    job = client.create(fds(image['path']), fds(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
    assert client.wait_finished(job)[0] == 'done'
    rule = client.add_auto_flash(fds(image['path']), bmap_fd=fds(image['bmap']))
    assert rule.startswith(h.AUTOFLASH_PREFIX)
    # The option is about the call, not the rule: not in its Options.
    assert 'no-user-interaction' not in client.get(rule, h.AUTOFLASH_IFACE, 'Options')
    assert polkit.agent_requests() == [(h.ACTION_CREATE, client.unique_name),
                                       (h.ACTION_AUTO_FLASH, client.unique_name)]


def test_remove_is_interactive(daemon, client, polkit, image, fds):
    '''Remove takes no options: polkit may always ask, as udisks2 lets it.'''
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    rule = client.add_auto_flash(fds(image['path']), bmap_fd=fds(image['bmap']))
    polkit.set_allowed([])
    polkit.set_challenge([h.ACTION_AUTO_FLASH])
    polkit.clear_checks()
    client.call(rule, h.AUTOFLASH_IFACE, 'Remove')
    assert client.rules() == {}
    assert [(c[0], c[2]) for c in polkit.checks()] == [(h.ACTION_AUTO_FLASH,
                                                       ALLOW_USER_INTERACTION)]
    assert polkit.agent_requests() == [(h.ACTION_AUTO_FLASH, client.unique_name)]


@pytest.mark.loop
def test_cancel_of_another_uid_is_interactive(daemon, bus, client, polkit, loop):
    '''Cancel takes no options: polkit may always ask, as udisks2 lets it.'''
    polkit.set_allowed([h.ACTION_FLASH])
    polkit.set_challenge([h.ACTION_CANCEL])
    dev = client.wait_device(loop.node)
    job, pipe = start_slow_flash(client, dev)
    try:
        word, name = cancel_as_nobody(bus.address, job)
    finally:
        pipe.stop()
    assert word == 'OK', name
    assert client.wait_finished(job)[0] == 'canceled'
    cancel_checks = [c for c in polkit.checks() if c[0] == h.ACTION_CANCEL]
    assert [c[2] for c in cancel_checks] == [ALLOW_USER_INTERACTION]
    assert polkit.agent_requests() == [(h.ACTION_CANCEL, name)]


@pytest.mark.loop
def test_system_disk_needs_flash_system(daemon, client, polkit, loop, image, fds):
    '''A disk with active swap is a system disk.'''
    if not shutil.which('mkswap') or not shutil.which('swapon'):
        pytest.skip('mkswap/swapon are not installed')
    subprocess.run(['mkswap', loop.node], check=True, stdout=subprocess.DEVNULL)
    if subprocess.run(['swapon', loop.node], stderr=subprocess.PIPE).returncode != 0:
        pytest.skip('swapon does not work here')
    try:
        dev = client.wait_device(loop.node)
        h.wait_until(lambda: client.get(dev, h.DEVICE_IFACE, 'System'), 20, 'System to be true')
        assert client.get(dev, h.DEVICE_IFACE, 'Busy')
        polkit.set_allowed([h.ACTION_FLASH])
        with pytest.raises(h.DBusCallError) as e:
            client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']))
        assert e.value.name == h.ERROR + 'NotAuthorized'
        assert polkit.checks()[-1][0] == h.ACTION_FLASH_SYSTEM
        # Authorized, it is still in use: swap is never turned off for us.
        polkit.set_allowed([h.ACTION_FLASH, h.ACTION_FLASH_SYSTEM])
        with pytest.raises(h.DBusCallError) as e:
            client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), unmount=True)
        assert e.value.name == h.ERROR + 'DeviceBusy'
        assert 'swap' in e.value.message
    finally:
        subprocess.run(['swapoff', loop.node], check=False)


def test_root_disk_is_system(daemon, client, polkit, tmp_path, fds):
    '''The disk holding / asks for flash-system (never granted here!).'''
    systems = [props for props in client.devices().values() if props['System']]
    if not systems:
        pytest.skip('no system disk visible')
    dev = client.device_path(systems[0]['Node'])
    img = tmp_path / 'small.img'
    img.write_bytes(h.pattern('small', 4096))
    polkit.set_allowed([h.ACTION_FLASH])
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(str(img)), nobmap=True)
    assert e.value.name in (h.ERROR + 'NotAuthorized', h.ERROR + 'DeviceGone',
                            h.ERROR + 'ReadOnly')
    if e.value.name == h.ERROR + 'NotAuthorized':
        assert polkit.checks()[-1][0] == h.ACTION_FLASH_SYSTEM


def test_create_asks_for_create(daemon, client, polkit, tmp_path, fds):
    img = tmp_path / 'c.img'
    img.write_bytes(h.pattern('create', 64 * 1024))
    out = tmp_path / 'c.bmap'
    polkit.set_allowed([])
    with pytest.raises(h.DBusCallError) as e:
        client.create(fds(str(img)), fds(str(out), os.O_WRONLY | os.O_CREAT))
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert polkit.checks()[-1][0] == h.ACTION_CREATE
    assert out.read_bytes() == b''
    polkit.set_allowed([h.ACTION_CREATE])
    job = client.create(fds(str(img)), fds(str(out), os.O_WRONLY | os.O_CREAT))
    assert client.wait_finished(job)[0] == 'done'


@pytest.fixture
def daemon_without_polkit(bus, client, tmp_path):
    d = h.Daemon(bus, client, str(tmp_path))
    yield d
    d.stop()


@pytest.mark.loop
def test_without_polkit_only_root(daemon_without_polkit, bus, client, loop, fds):
    dev = client.wait_device(loop.node)
    # The image where uid 65534 can read it.
    img = os.path.join(bus.dir, 'nopolkit.img')
    data = h.pattern('nopolkit', 1 * h.MiB)
    with open(img, 'wb') as f:
        f.write(data)
    os.chmod(img, 0o644)
    script = f'''
import os, sys
sys.path.insert(0, {h.HERE!r})
import bmapd_harness as h
c = h.Client({bus.address!r})
try:
    c.flash({dev!r}, os.open({img!r}, os.O_RDONLY), nobmap=True)
    print('OK')
except h.DBusCallError as e:
    print(e.name, e.message)
'''
    result = run_as_nobody(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(h.ERROR + 'NotAuthorized'), result.stdout
    assert 'polkit' in result.stdout
    assert loop.read(0, 4096) == b'\xaa' * 4096

    job = client.flash(dev, fds(img), nobmap=True)
    assert client.wait_finished(job)[0] == 'done'
    assert loop.read(0, len(data)) == data


@pytest.mark.loop
def test_bmapctl_on_a_terminal_lets_polkit_ask(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_challenge([h.ACTION_FLASH])
    client.wait_device(loop.node)
    status, output = h.bmapctl_on_terminal(bmapctl, 'copy', '--bmap', image['bmap'],
                                           image['path'], loop.node)
    assert status == 0, output
    [(action, _, flags, _, name, _)] = polkit.checks()
    assert (action, flags) == (h.ACTION_FLASH, ALLOW_USER_INTERACTION)
    assert polkit.agent_requests() == [(h.ACTION_FLASH, name)]
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length)


@pytest.mark.loop
def test_bmapctl_no_ask_password(daemon, client, polkit, loop, image, bmapctl):
    '''--no-ask-password on a terminal: bmapd is told, and polkit does not ask.'''
    polkit.set_challenge([h.ACTION_FLASH])
    client.wait_device(loop.node)
    before = loop.sha256()
    status, output = h.bmapctl_on_terminal(bmapctl, 'copy', '--no-ask-password', '--bmap',
                                           image['bmap'], image['path'], loop.node)
    assert status == 3, output
    assert 'no-user-interaction' in output
    assert 'bmapctl did not let polkit ask for a password: --no-ask-password was given' in output
    assert [c[2] for c in polkit.checks()] == [0]
    assert polkit.agent_requests() == []
    assert loop.sha256() == before


@pytest.mark.loop
def test_bmapctl_without_a_terminal_never_lets_polkit_ask(daemon, client, polkit, loop, image,
                                                          bmapctl, tmp_path):
    '''A script's bmapctl (stdin not a terminal) must not hang on a password
    prompt: copy, create and auto-flash pass no-user-interaction.'''
    polkit.set_challenge([h.ACTION_FLASH, h.ACTION_CREATE, h.ACTION_AUTO_FLASH])
    client.wait_device(loop.node)
    before = loop.sha256()
    runs = {
        h.ACTION_FLASH: ('copy', '--bmap', image['bmap'], image['path'], loop.node),
        h.ACTION_CREATE: ('create', '--daemon', '-o', str(tmp_path / 'out.bmap'),
                          image['path']),
        h.ACTION_AUTO_FLASH: ('auto-flash', '--keep', '--bmap', image['bmap'], image['path']),
    }
    for action, args in runs.items():
        proc = bmapctl(*args, stdin=subprocess.DEVNULL, check=3)
        assert action in proc.stderr
        assert 'no password was asked for' in proc.stderr
        assert 'bmapctl did not let polkit ask for a password: standard input is not a ' \
            'terminal' in proc.stderr
    assert [(c[0], c[2]) for c in polkit.checks()] == [(a, 0) for a in runs]
    assert polkit.agent_requests() == []
    assert loop.sha256() == before
    assert client.rules() == {}
