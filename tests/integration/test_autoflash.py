# SPDX-License-Identifier: GPL-2.0-or-later
'''Auto-flash rules over D-Bus and from rule files: what AddAutoFlash
checks and asks, the rule objects and their life (Remove, the caller
leaving, keep, MaxRules, AutoFlashArmed, the idle timeout), rule files
(loading, bad files reported, SIGHUP). Flashing cards is in
test_autoflash_loop.py (real loop devices) and test_autoflash_umockdev.py
(fake hardware).'''

import os
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

import bmapd_harness as h
from test_interface import describe


@pytest.fixture
def image(tmp_path):
    '''A 4 MiB sparse image with two data ranges, and its bmap (by bmaptool).'''
    if not shutil.which('bmaptool'):
        pytest.skip('bmaptool is not installed (needed to make reference bmaps)')
    path = str(tmp_path / 'board.img')
    ranges = [(0, 64 * 1024), (3 * h.MiB, 256 * 1024)]
    h.make_sparse_image(path, 4 * h.MiB, ranges, seed='rules')
    bmap = path + '.bmap'
    h.bmaptool_create(path, bmap)
    return {'path': path, 'bmap': bmap, 'size': 4 * h.MiB, 'ranges': ranges}


def add(client, fds, image, match=None, **options):
    return client.add_auto_flash(fds(image['path']), bmap_fd=fds(image['bmap']), match=match,
                                 **options)


def armed_changes(client):
    '''The AutoFlashArmed values announced by PropertiesChanged, in order.'''
    return [args[1]['AutoFlashArmed'] for path, iface, m, args in client.signals
            if path == h.MANAGER_PATH and m == 'PropertiesChanged'
            and 'AutoFlashArmed' in args[1]]


def removed(client, path):
    return any(m == 'InterfacesRemoved' and args[0] == path
               for _, _, m, args in client.signals)


def test_add_rule_and_its_properties(daemon, client, polkit, image, fds):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'AutoFlashArmed') is False
    match = {'bus': ['usb', 'mmc'], 'serial': 'AB*', 'vendor': 'Generic', 'model': '*Reader*',
             'port': 'pci-0000:00:14.0-usb-*', 'min-size': 1 * h.MiB,
             'max-size': 64 * 1024 * h.MiB}
    rule = add(client, fds, image, match=match, description='board.img', count=3,
               verify_written=True, verify=True)
    assert rule.startswith(h.AUTOFLASH_PREFIX)

    props = client.get_all(rule, h.AUTOFLASH_IFACE)
    assert props['Id'] == int(rule.rsplit('/', 1)[1])
    assert props['Source'] == 'dbus' and props['ConfigFile'] == ''
    assert props['Description'] == 'board.img'
    assert props['Match'] == match
    # The options as given, the bmap descriptor left out.
    assert props['Options'] == {'description': 'board.img', 'count': 3, 'verify-written': True,
                                'verify': True}
    assert props['Count'] == 3
    assert props['Flashed'] == 0 and props['Failed'] == 0
    assert props['StartedByUid'] == os.geteuid()

    assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'AutoFlashArmed') is True
    h.wait_until(lambda: armed_changes(client) == [True], 10, 'AutoFlashArmed changed')
    assert rule in client.rules()
    # One check, for the caller, of auto-flash alone (no allow-non-removable).
    checks = polkit.checks()
    assert [c[0] for c in checks] == [h.ACTION_AUTO_FLASH]
    assert checks[0][3:5] == ('system-bus-name', client.unique_name)


def test_rule_passes_flash_options_on(daemon, client, polkit, image, fds):
    '''The Flash options that a rule passes on to its cards' jobs are
    taken, and shown in Options as given; the flashing itself is in
    test_autoflash_loop.py.'''
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    rule = add(client, fds, image, minimize_writes=True, discard=True, zero_unmapped=False,
               relocate_gpt=True)
    assert client.get(rule, h.AUTOFLASH_IFACE, 'Options') == {
        'minimize-writes': True, 'discard': True, 'zero-unmapped': False, 'relocate-gpt': True}


def test_rule_object_matches_the_xml(daemon, client, polkit, image, fds):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    rule = add(client, fds, image, keep=True)
    xml = client.call(rule, 'org.freedesktop.DBus.Introspectable', 'Introspect')[0]
    live = describe(ET.fromstring(xml))
    expected = describe(ET.parse(h.interface_xml_path()).getroot())
    assert live[h.AUTOFLASH_IFACE] == expected[h.AUTOFLASH_IFACE]


def test_empty_match_and_nobmap(daemon, client, polkit, image, fds):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    rule = client.add_auto_flash(fds(image['path']), nobmap=True)
    props = client.get_all(rule, h.AUTOFLASH_IFACE)
    assert props['Match'] == {} and props['Options'] == {'nobmap': True}
    assert props['Description'] == '' and props['Count'] == 0


def test_bmap_through_a_pipe(daemon, client, polkit, image, fds):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    with open(image['bmap'], 'rb') as f:
        pipe = h.SlowPipe(f.read(), chunk=4096, delay=0.01).start()
    try:
        rule = client.add_auto_flash(fds(image['path']), bmap_fd=pipe.read_fd)
    finally:
        pipe.stop()
        pipe.close_read()
    assert rule.startswith(h.AUTOFLASH_PREFIX)


BAD_CALLS = [
    # (match, options, error, words)
    ({'colour': 'red'}, {}, 'InvalidArgument', ['colour', 'unknown match key']),
    ({'serial': h.GLib.Variant('t', 5)}, {}, 'InvalidArgument', ['serial', 'type']),
    ({'bus': 'usb'}, {}, 'InvalidArgument', ['bus', '"as"']),
    ({'bus': ['']}, {}, 'InvalidArgument', ['bus', 'empty']),
    ({'min-size': 10 * h.MiB, 'max-size': h.MiB}, {}, 'InvalidArgument',
     ['min-size', 'max-size']),
    ({}, {'frobnicate': True}, 'InvalidArgument', ['frobnicate', 'unknown']),
    ({}, {'count': h.GLib.Variant('t', 3)}, 'InvalidArgument', ['count', '"u"']),
    ({}, {'diskseq': 7}, 'InvalidArgument', ['diskseq']),
    ({}, {'unmount': True}, 'InvalidArgument', ['unmount', 'busy']),
    ({}, {'bind-to-caller': True}, 'InvalidArgument', ['bind-to-caller', 'keep']),
    ({}, {'minimize-writes': 'yes'}, 'InvalidArgument', ['minimize-writes', 'type']),
]


@pytest.mark.parametrize('match,options,error,words', BAD_CALLS)
def test_bad_match_and_options(daemon, client, polkit, image, fds, match, options, error, words):
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    with pytest.raises(h.DBusCallError) as e:
        add(client, fds, image, match=match, **options)
    assert e.value.name == h.ERROR + error
    for word in words:
        assert word in e.value.message, e.value.message
    # Refused before authorization, and nothing was armed.
    assert polkit.checks() == []
    assert client.rules() == {}
    assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'AutoFlashArmed') is False


def test_bad_descriptors_and_bmaps(daemon, client, polkit, image, fds, tmp_path):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])

    def refused(error, words, image_fd, bmap_fd=None, **options):
        with pytest.raises(h.DBusCallError) as e:
            client.add_auto_flash(image_fd, bmap_fd=bmap_fd, **options)
        assert e.value.name == h.ERROR + error, e.value.message
        for word in words:
            assert word in e.value.message, e.value.message

    # A pipe is read once; a rule reads its image for every card.
    r, w = os.pipe()
    try:
        refused('InvalidArgument', ['pipe', 'regular file'], r, fds(image['bmap']))
    finally:
        os.close(r)
        os.close(w)
    refused('InvalidArgument', ['directory'], fds(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY),
            nobmap=True)
    refused('NoBmap', ['nobmap'], fds(image['path']))
    refused('InvalidArgument', ['bmap', 'nobmap'], fds(image['path']), fds(image['bmap']),
            nobmap=True)
    refused('InvalidArgument', ['verify-written', 'nobmap'], fds(image['path']), nobmap=True,
            verify_written=True)
    refused('InvalidArgument', ['discard', 'needs a bmap', 'nobmap'], fds(image['path']),
            nobmap=True, discard=True)
    refused('InvalidArgument', ['zero-unmapped', 'needs a bmap', 'nobmap'], fds(image['path']),
            nobmap=True, zero_unmapped=True)

    bad_bmap = tmp_path / 'bad.bmap'
    bad_bmap.write_text('<?xml version="1.0"?><bmap version="2.0"><nonsense/></bmap>')
    refused('BadBmap', [], fds(image['path']), fds(str(bad_bmap)))

    # The bmap of another image: its size tells.
    other = str(tmp_path / 'other.img')
    h.make_sparse_image(other, 2 * h.MiB, [(0, 4096)], seed='other')
    h.bmaptool_create(other, other + '.bmap')
    refused('BadBmap', [str(4 * h.MiB), str(2 * h.MiB), 'does not belong'], fds(image['path']),
            fds(other + '.bmap'))

    # verify-written needs checksums.
    subprocess.run(['bmaptool', 'create', '--no-checksum', '-o', str(tmp_path / 'nock.bmap'),
                    image['path']], check=True, capture_output=True)
    refused('InvalidArgument', ['verify-written', 'checksums'], fds(image['path']),
            fds(str(tmp_path / 'nock.bmap')), verify_written=True)

    assert [c for c in polkit.checks()] == []
    assert client.rules() == {}


def test_not_authorized(daemon, client, polkit, image, fds):
    with pytest.raises(h.DBusCallError) as e:
        add(client, fds, image)
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert h.ACTION_AUTO_FLASH in e.value.message
    assert client.rules() == {}
    assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'AutoFlashArmed') is False


def test_interactive_authorization(daemon, client, polkit, image, fds):
    polkit.set_challenge([h.ACTION_AUTO_FLASH])
    with pytest.raises(h.DBusCallError) as e:
        add(client, fds, image, no_user_interaction=True)
    assert e.value.name == h.ERROR + 'NotAuthorized'
    # Interactive by default: the mock's agent says yes.
    rule = add(client, fds, image)
    assert rule.startswith(h.AUTOFLASH_PREFIX)


def test_allow_non_removable_needs_flash_system(daemon, client, polkit, image, fds):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    match = {'allow-non-removable': True}
    with pytest.raises(h.DBusCallError) as e:
        add(client, fds, image, match=match)
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert h.ACTION_FLASH_SYSTEM in e.value.message
    assert [c[0] for c in polkit.checks()] == [h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM]
    assert client.rules() == {}

    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    rule = add(client, fds, image, match=match)
    assert client.get(rule, h.AUTOFLASH_IFACE, 'Match') == match


@pytest.mark.parametrize('daemon_config', ['[AutoFlash]\nMaxRules=2\n'])
def test_max_rules(daemon, client, polkit, image, fds):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    first = add(client, fds, image)
    add(client, fds, image)
    with pytest.raises(h.DBusCallError) as e:
        add(client, fds, image)
    assert e.value.name == h.ERROR + 'Limit'
    assert 'MaxRules=2' in e.value.message
    # Refused before polkit was asked a third time.
    assert len(polkit.checks()) == 2
    client.call(first, h.AUTOFLASH_IFACE, 'Remove')
    assert add(client, fds, image).startswith(h.AUTOFLASH_PREFIX)


def test_remove(daemon, client, polkit, image, fds):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    rule = add(client, fds, image)
    polkit.set_allowed([])
    with pytest.raises(h.DBusCallError) as e:
        client.call(rule, h.AUTOFLASH_IFACE, 'Remove')
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert rule in client.rules()

    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    client.call(rule, h.AUTOFLASH_IFACE, 'Remove')
    assert polkit.checks()[-1][0] == h.ACTION_AUTO_FLASH
    assert client.rules() == {}
    h.wait_until(lambda: removed(client, rule), 10, 'InterfacesRemoved')
    assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'AutoFlashArmed') is False
    h.wait_until(lambda: armed_changes(client) == [True, False], 10, 'AutoFlashArmed changes')
    assert 'removed by uid' in daemon.read_log()


def test_rule_goes_when_its_caller_leaves(daemon, bus, client, polkit, image, fds):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    station = h.Client(bus.address)
    name = station.unique_name
    rule = add(station, fds, image)
    kept = add(station, fds, image, keep=True)
    assert set(client.rules()) == {rule, kept}
    station.close()  # a killed bmapctl
    h.wait_until(lambda: removed(client, rule), 10, 'the rule to go')
    assert set(client.rules()) == {kept}
    assert client.get(kept, h.AUTOFLASH_IFACE, 'Options') == {'keep': True}
    assert f'its caller {name} left the bus' in daemon.read_log()
    assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'AutoFlashArmed') is True


def test_idle_exit_waits_for_armed_rules(bus, client, polkit, tmp_path, image, fds):
    d = h.Daemon(bus, client, str(tmp_path), args=('--idle-timeout', '1'))
    try:
        polkit.set_allowed([h.ACTION_AUTO_FLASH])
        rule = add(client, fds, image, keep=True)
        # Well past the idle timeout: a rule is armed, so bmapd stays.
        time.sleep(3)
        assert d.proc.poll() is None
        assert 'idle for' not in d.read_log()
        client.call(rule, h.AUTOFLASH_IFACE, 'Remove')
        assert d.wait_exit(30) == 0
        assert 'idle for 1 s, exiting' in d.read_log()
    finally:
        d.stop()


# ---- rule files ----

def write_rule(directory, name, text):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, 'w') as f:
        f.write(text)
    return path


def good_rule(image, extra_rule='', match='Bus=usb;mmc\nSerial=AB*\nMinSize=1M\n'):
    return (f'[Rule]\nImage={image["path"]}\nBmap={image["bmap"]}\n{extra_rule}'
            f'[Match]\n{match}')


def rules_by_file(client):
    return {props['ConfigFile']: (path, props) for path, props in client.rules().items()}


def test_rule_files(bus, client, polkit, tmp_path, image):
    rules_dir = str(tmp_path / 'autoflash.d')
    a = write_rule(rules_dir, 'a.conf', good_rule(image, 'VerifyWritten=yes\nCount=5\n'))
    bad = {
        'b.conf': (good_rule(image, 'Colour=red\n'), ['b.conf', '[Rule] Colour=red',
                                                      'unknown key']),
        'c.conf': (good_rule(image, match='MinSize=lots\n'), ['c.conf', 'MinSize=lots']),
        'd.conf': ('[Rule]\nImage=/nonexistent/board.img\nNoBmap=true\n',
                   ['d.conf', 'Image=/nonexistent/board.img', 'No such file']),
        'e.conf': (good_rule(image, 'Verify=perhaps\n'), ['e.conf', 'Verify=perhaps',
                                                          'true or false']),
        'f.conf': ('[Rule]\nBmap=/x.bmap\n', ['f.conf', 'Image= is missing']),
        'g.conf': (f'[Rule]\nImage={image["path"]}\n[Match]\nMinSize=2G\nMaxSize=1G\n',
                   ['g.conf', 'MinSize=2147483648', 'MaxSize=1073741824']),
        'h.conf': (f'[Rule]\nImage=relative.img\n', ['h.conf', 'Image=relative.img',
                                                     'absolute']),
        'i.conf': (f'[Rule]\nImage={image["path"]}\nBmap={image["path"]}\n',
                   ['i.conf', f'Bmap={image["path"]}']),
        'j.conf': (f'[Rule]\nImage={image["path"]}\nNoBmap=true\nZeroUnmapped=true\n',
                   ['j.conf', 'ZeroUnmapped=true needs a bmap', 'NoBmap=true']),
        'k.conf': (good_rule(image, 'MinimizeWrites=often\n'), ['k.conf', 'MinimizeWrites=often',
                                                                 'true or false']),
    }
    for name, (text, _) in bad.items():
        write_rule(rules_dir, name, text)
    # The bmap found next to the image, as bmaptool does.
    z = write_rule(rules_dir, 'z.conf', f'[Rule]\nImage={image["path"]}\nDescription=Board v3\n'
                   'MinimizeWrites=true\nDiscard=yes\nZeroUnmapped=false\nRelocateGPT=1\n'
                   '[Match]\nAllowNonRemovable=true\nMaxSize=8G\n')
    write_rule(rules_dir, 'notes.txt', 'not a rule')

    d = h.Daemon(bus, client, str(tmp_path), autoflash_dir=rules_dir)
    try:
        rules = rules_by_file(client)
        assert set(rules) == {a, z}
        path_a, props = rules[a]
        assert props['Source'] == 'config' and props['StartedByUid'] == 0
        assert props['Description'] == 'board.img'  # the image's file name
        assert props['Match'] == {'bus': ['usb', 'mmc'], 'serial': 'AB*', 'min-size': h.MiB}
        assert props['Options'] == {'verify-written': True, 'count': 5}
        assert props['Count'] == 5
        _, props = rules[z]
        assert props['Description'] == 'Board v3'
        assert props['Match'] == {'allow-non-removable': True, 'max-size': 8 << 30}
        assert props['Options'] == {'minimize-writes': True, 'discard': True,
                                    'zero-unmapped': False, 'relocate-gpt': True,
                                    'description': 'Board v3'}
        assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'AutoFlashArmed') is True
        assert rules[a][0] < rules[z][0]  # ids in file name order

        log = d.read_log()
        for name, (_, words) in bad.items():
            lines = [line for line in log.splitlines() if name in line]
            assert lines, f'{name} was not reported:\n{log}'
            for word in words:
                assert any(word in line for line in lines), f'{word!r} not in {lines}'
        assert 'notes.txt' not in log
        assert '2 of 12 rule files' in log
    finally:
        assert d.stop() in (0, -15)


def test_rule_files_reload_on_sighup(bus, client, polkit, tmp_path, image, fds):
    rules_dir = str(tmp_path / 'autoflash.d')
    a = write_rule(rules_dir, 'a.conf', good_rule(image))
    d = h.Daemon(bus, client, str(tmp_path), autoflash_dir=rules_dir)
    try:
        polkit.set_allowed([h.ACTION_AUTO_FLASH])
        dbus_rule = add(client, fds, image, keep=True)
        old_path = rules_by_file(client)[a][0]

        # Remove() takes a rule file's rule away until the next reload.
        client.call(old_path, h.AUTOFLASH_IFACE, 'Remove')
        assert a not in rules_by_file(client)

        b = write_rule(rules_dir, 'b.conf', good_rule(image, 'Count=2\n'))
        d.signal(signal.SIGHUP)
        h.wait_until(lambda: set(rules_by_file(client)) == {'', a, b}, 10, 'the reload')
        new_a = rules_by_file(client)[a][0]
        assert new_a != old_path  # a new rule, with a new id
        assert dbus_rule in client.rules()  # D-Bus rules stay

        os.unlink(a)
        with open(b, 'w') as f:
            f.write(good_rule(image, 'Count=lots\n'))
        d.signal(signal.SIGHUP)
        h.wait_until(lambda: set(rules_by_file(client)) == {''}, 10, 'the second reload')
        assert 'Count=lots' in d.read_log()
        assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'AutoFlashArmed') is True
        assert d.proc.poll() is None
    finally:
        assert d.stop() in (0, -15)


def test_max_rules_applies_to_rule_files(bus, client, polkit, tmp_path, image):
    rules_dir = str(tmp_path / 'autoflash.d')
    for name in ('a.conf', 'b.conf', 'c.conf'):
        write_rule(rules_dir, name, good_rule(image))
    d = h.Daemon(bus, client, str(tmp_path), config='[AutoFlash]\nMaxRules=2\n',
                 autoflash_dir=rules_dir)
    try:
        assert sorted(os.path.basename(f) for f in rules_by_file(client)) == ['a.conf', 'b.conf']
        assert 'c.conf: not loaded' in d.read_log() and 'MaxRules=2' in d.read_log()
    finally:
        d.stop()


@pytest.mark.parametrize('config,words', [
    ('[AutoFlash]\nMaxRules=many\n', ['MaxRules=many']),
    ('[AutoFlash]\nMaxJobs=3\n', ['[AutoFlash] MaxJobs=3', 'unknown key']),
    ('[Autoflash]\nMaxRules=3\n', ['[Autoflash]', 'unknown group']),
    ('[Daemon]\nMaxRules=3\n', ['[Daemon] MaxRules=3', 'belongs in [AutoFlash]']),
])
def test_bad_autoflash_settings_refuse_to_start(bus, client, tmp_path, config, words):
    d = h.Daemon(bus, client, str(tmp_path), config=config, wait=False)
    rc = d.wait_exit(30)
    log = d.read_log()
    d.stop()
    assert rc == 1
    for word in words:
        assert word in log, log


@pytest.mark.parametrize('uncomment', [False, True], ids=['as-shipped', 'every-key'])
def test_example_rule_file_loads(bus, client, polkit, tmp_path, image, uncomment):
    '''data/autoflash-example.conf is a valid rule, with its commented keys too.'''
    import re
    example = os.path.join(h.HERE, '..', '..', 'data', 'autoflash-example.conf')
    with open(example) as f:
        text = f.read()
    if uncomment:
        text = re.sub(r'^#([A-Z][A-Za-z]+=)', r'\1', text, flags=re.M)
    text = re.sub(r'^Image=.*$', f'Image={image["path"]}', text, flags=re.M)
    text = re.sub(r'^Bmap=.*$', f'Bmap={image["bmap"]}', text, flags=re.M)
    rules_dir = str(tmp_path / 'autoflash.d')
    path = write_rule(rules_dir, 'example.conf', text)
    d = h.Daemon(bus, client, str(tmp_path), autoflash_dir=rules_dir)
    try:
        assert set(rules_by_file(client)) == {path}, d.read_log()
        _, props = rules_by_file(client)[path]
        match = props['Match']
        assert match['bus'] == ['usb', 'mmc']
        assert (match['min-size'], match['max-size']) == (1 << 30, 64 << 30)
        if uncomment:
            assert match['model'] == '*Card*Reader*' and match['allow-non-removable'] is False
            assert props['Description'] == 'Board image 2.1'
            assert props['Options'] == {'nobmap': False, 'verify': True,
                                        'verify-written': False, 'minimize-writes': False,
                                        'discard': False, 'zero-unmapped': False,
                                        'relocate-gpt': False, 'eject': False,
                                        'power-off': False, 'count': 0,
                                        'description': 'Board image 2.1'}
        else:
            assert props['Description'] == 'board.img' and props['Options'] == {}
    finally:
        d.stop()
