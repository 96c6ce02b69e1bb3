# SPDX-License-Identifier: GPL-2.0-or-later
'''The Flash options eject and power-off on loop devices, which can do
neither: the flash is done all the same, and the job's Result (and
bmapctl's result line) says in a sentence why the device was not ejected
or powered off. Nothing is tried for a job that failed. A USB disk that
really powers off is the VM test's (tests/vm, flash-power-off).'''

import pytest

import bmapd_harness as h
from test_autoflash_loop import arm, readers, udevd, wait_cards  # noqa: F401 (fixtures)
from test_cli import bmapctl  # noqa: F401 (fixture)

pytestmark = pytest.mark.loop


def not_usb(node):
    return f'not powered off: {node} is not a USB device'


def not_ejectable(node):
    return f'not ejected: {node} is not a SCSI, USB or CD-ROM drive'


def flash(client, polkit, loop, image, fds, **options):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    job = client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), **options)
    state, error_name, message = client.wait_finished(job)
    return job, state, error_name, message


def assert_image_written(loop, image):
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length), \
            f'range at {offset} differs'


def test_power_off_and_eject_not_possible(daemon, client, polkit, loop, image, fds):
    job, state, error_name, message = flash(client, polkit, loop, image, fds, eject=True,
                                            power_off=True)
    assert (state, error_name, message) == ('done', '', '')
    props = client.get_all(job, h.JOB_IFACE)
    assert props['Result'] == f'{not_usb(loop.node)}; {not_ejectable(loop.node)}'
    assert_image_written(loop, image)
    # The device stays, free again, and its job is not DeviceGone.
    dev = client.wait_device(loop.node)
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    assert h.can_open_exclusive(loop.node)
    assert f'{props["Result"]}' in daemon.read_log()


def test_power_off_alone(daemon, client, polkit, loop, image, fds):
    job, state, _, message = flash(client, polkit, loop, image, fds, power_off=True)
    assert state == 'done', message
    assert client.get(job, h.JOB_IFACE, 'Result') == not_usb(loop.node)


def test_eject_after_other_notes(daemon, client, polkit, loop, image, fds):
    '''The words come last, after what the flash's other options did.'''
    job, state, _, message = flash(client, polkit, loop, image, fds, eject=True,
                                   zero_unmapped=True)
    assert state == 'done', message
    result = client.get(job, h.JOB_IFACE, 'Result')
    assert result.endswith('unmapped zeroed; ' + not_ejectable(loop.node)), result


def test_without_the_options_nothing_is_said(daemon, client, polkit, loop, image, fds):
    job, state, _, message = flash(client, polkit, loop, image, fds)
    assert state == 'done', message
    assert client.get(job, h.JOB_IFACE, 'Result') == ''


def test_not_tried_for_a_failed_job(daemon, client, polkit, loop, image, fds, tmp_path):
    '''The image does not match its bmap's checksums: the job fails, and
    nothing is ejected or powered off (the Result says nothing).'''
    bad = str(tmp_path / 'bad.img')
    with open(image['path'], 'rb') as src, open(bad, 'wb') as dst:
        dst.write(src.read())
    with open(bad, 'r+b') as f:
        f.seek(1 * h.MiB + 100)
        f.write(b'corrupted')
    image = dict(image, path=bad)
    job, state, error_name, _ = flash(client, polkit, loop, image, fds, eject=True,
                                      power_off=True)
    assert (state, error_name) == ('failed', h.ERROR + 'ChecksumMismatch')
    assert client.get(job, h.JOB_IFACE, 'Result') == ''
    log = daemon.read_log()
    assert 'powered off' not in log and 'ejected' not in log, log


def test_polkit_sees_the_options(daemon, client, polkit, loop, image, fds):
    flash(client, polkit, loop, image, fds, power_off=True)
    [(action, details, _, _, _, _)] = polkit.checks()
    assert action == h.ACTION_FLASH
    assert details['options.power-off'] == 'true'
    assert details['options.eject'] == 'false'


def test_wrong_type_is_refused(daemon, client, polkit, loop, image, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    with pytest.raises(h.DBusCallError) as e:
        client.flash(dev, fds(image['path']), bmap_fd=fds(image['bmap']), power_off='yes')
    assert e.value.name == h.ERROR + 'InvalidArgument'
    assert 'power-off' in e.value.message


def test_bmapctl_copy_power_off(daemon, client, polkit, loop, image, bmapctl):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    proc = bmapctl('--no-ask-password', 'copy', '--eject', '--power-off', '--bmap',
                   image['bmap'], image['path'], loop.node, check=0)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('bmapctl: wrote '), proc.stderr
    assert last.endswith(f'; {not_usb(loop.node)}; {not_ejectable(loop.node)}'), last
    assert_image_written(loop, image)


def test_bmapctl_copy_eject_in_process(loop, image, bmapctl):
    '''--local: bmapctl decides and says it as bmapd does.'''
    proc = bmapctl('--local', 'copy', '--eject', '--bmap', image['bmap'], image['path'],
                   loop.node, check=0)
    assert proc.stderr.strip().splitlines()[-1].endswith(f'; {not_ejectable(loop.node)}'), \
        proc.stderr
    assert_image_written(loop, image)


def test_bmapctl_copy_to_a_file_refuses(image, bmapctl, tmp_path):
    proc = bmapctl('copy', '--power-off', '--bmap', image['bmap'], image['path'],
                   str(tmp_path / 'out.img'), check=2)
    assert '--power-off needs a block device as DEST' in proc.stderr


@pytest.fixture
def card_daemon(udevd, bus, client, polkit, tmp_path, daemon_config):
    '''bmapd, started once udevd runs (auto-flash takes cards from its events).'''
    d = h.Daemon(bus, client, str(tmp_path), config=daemon_config)
    yield d
    rc = d.stop()
    print('---- bmapd log ----\n' + open(d.log_path).read())
    assert rc in (0, None) or rc == -15, f'bmapd exited with {rc}'


def test_auto_flash_rule_power_off(card_daemon, client, polkit, readers, image, fds):  # noqa: F811
    rule = arm(client, polkit, fds, image, power_off=True, eject=True)
    options = client.get(rule, h.AUTOFLASH_IFACE, 'Options')
    assert options['power-off'] is True and options['eject'] is True
    reader = readers()
    [(_, job, state)] = wait_cards(client, rule, 1)
    assert state == 'done'
    assert client.get(job, h.JOB_IFACE, 'Result') == \
        f'{not_usb(reader.node)}; {not_ejectable(reader.node)}'


def test_auto_flash_rule_file_keys(bus, client, polkit, tmp_path, image):
    rules_dir = tmp_path / 'autoflash.d'
    rules_dir.mkdir()
    (rules_dir / '50-eject.conf').write_text(
        f'[Rule]\nImage={image["path"]}\nBmap={image["bmap"]}\nEject=true\nPowerOff=yes\n'
        '[Match]\nMinSize=1T\nMaxSize=1T\n')
    d = h.Daemon(bus, client, str(tmp_path), autoflash_dir=str(rules_dir))
    try:
        [options] = [r['Options'] for r in client.rules().values()]
        assert options['eject'] is True and options['power-off'] is True
    finally:
        d.stop()
