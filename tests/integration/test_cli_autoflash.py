# SPDX-License-Identifier: GPL-2.0-or-later
'''`bmapctl auto-flash` against the real bmapd: the station display, the
rule's life tied to the command, --count, --keep, --list and --remove.
Cards are real loop devices seen through systemd-udevd (the fixtures of
test_autoflash_loop.py).'''

import json
import signal
import subprocess
import time

import pytest

import bmapd_harness as h
from test_autoflash_loop import (CARD, assert_written, daemon, image,  # noqa: F401
                                 readers, udevd)
from test_cli import bmapctl  # noqa: F401

pytestmark = pytest.mark.loop

SIZE_ARGS = ['--allow-non-removable', '--min-size', str(CARD), '--max-size', str(CARD)]


def rules(client):
    return {p: i[h.AUTOFLASH_IFACE] for p, i in client.managed_objects().items()
            if h.AUTOFLASH_IFACE in i}


def test_station_flashes_cards_and_removes_rule_on_ctrl_c(daemon, client, polkit, readers,
                                                          image, bmapctl):
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    station = bmapctl.spawn('--json', 'auto-flash', '--bmap', image['bmap'], *SIZE_ARGS,
                            image['path'], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    h.wait_until(lambda: rules(client), what='the rule armed')
    [(rule, props)] = rules(client).items()
    assert props['Source'] == 'dbus' and props['Description'] == 'board.img'

    first, second = readers(), readers()
    h.wait_until(lambda: client.get(rule, h.AUTOFLASH_IFACE, 'Flashed') == 2, timeout=60,
                 what='two cards flashed')
    assert_written(first, image)
    assert_written(second, image)

    station.send_signal(signal.SIGINT)
    out, err = station.communicate(timeout=30)
    assert station.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    finished = [e for e in events if e['event'] == 'card-finished']
    assert sorted(e['device'] for e in finished) == sorted([first.node, second.node])
    assert all(e['state'] == 'done' for e in finished)
    assert events[-1]['event'] == 'summary'
    assert (events[-1]['flashed'], events[-1]['failed']) == (2, 0)
    # Ctrl-C took the rule away.
    h.wait_until(lambda: not rules(client), what='the rule removed')


def test_station_count_ends_by_itself(daemon, client, polkit, readers, image, bmapctl):
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    station = bmapctl.spawn('auto-flash', '--count', '1', '--bmap', image['bmap'], *SIZE_ARGS,
                            image['path'], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    h.wait_until(lambda: rules(client), what='the rule armed')
    card = readers()
    out, err = station.communicate(timeout=90)
    assert station.returncode == 0, err
    assert f'{card.node}' in out and 'done' in out
    assert 'Flashed 1 card, 0 failed.' in out
    assert_written(card, image)
    assert not rules(client)


def test_keep_list_and_remove(daemon, client, polkit, image, bmapctl):
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    proc = bmapctl('auto-flash', '--keep', '--description', 'line 3', '--match-bus', 'usb',
                   '--bmap', image['bmap'], image['path'], check=0)
    rule = proc.stdout.split()[2].rstrip(';')
    assert rule.startswith('/org/bmapd/bmapd1/autoflash/')
    # --keep: the rule outlives the bmapctl that armed it.
    time.sleep(0.5)
    assert rule in rules(client)
    listing = bmapctl('auto-flash', '--list', check=0).stdout
    row = next(line for line in listing.splitlines() if 'line 3' in line)
    assert 'dbus' in row and 'bus=usb' in row
    listed = json.loads(bmapctl('--json', 'auto-flash', '--list', check=0).stdout)
    assert [r['description'] for r in listed] == ['line 3']
    bmapctl('auto-flash', '--remove', str(listed[0]['id']), check=0)
    assert not rules(client)
    assert 'no such rule' in bmapctl('auto-flash', '--remove', '99', check=1).stderr


def test_flash_options_reach_the_rule(daemon, client, polkit, image, bmapctl):
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    proc = bmapctl('auto-flash', '--keep', '--minimize-writes', '--discard', '--zero-unmapped',
                   '--relocate-gpt', '--bmap', image['bmap'], image['path'], check=0)
    rule = proc.stdout.split()[2].rstrip(';')
    options = client.get(rule, h.AUTOFLASH_IFACE, 'Options')
    assert {k: v for k, v in options.items() if k in ('minimize-writes', 'discard',
                                                      'zero-unmapped', 'relocate-gpt')} == {
        'minimize-writes': True, 'discard': True, 'zero-unmapped': True, 'relocate-gpt': True}
    bmapctl('auto-flash', '--remove', rule, check=0)

    # Not given, not passed: the rule's Options list what was asked for.
    proc = bmapctl('auto-flash', '--keep', '--bmap', image['bmap'], image['path'], check=0)
    rule = proc.stdout.split()[2].rstrip(';')
    assert 'minimize-writes' not in client.get(rule, h.AUTOFLASH_IFACE, 'Options')
    bmapctl('auto-flash', '--remove', rule, check=0)


def test_denied_exits_3(daemon, client, polkit, image, bmapctl):
    polkit.set_allowed([])
    proc = bmapctl('--no-ask-password', 'auto-flash', '--keep', '--bmap', image['bmap'],
                   image['path'], check=3)
    assert 'org.bmapd.bmapd1.auto-flash' in proc.stderr
    assert not rules(client)


def test_usage_errors(daemon, image, bmapctl):
    assert bmapctl('auto-flash', '--min-size', 'lots', image['path'], check=2)
    assert bmapctl('auto-flash', '--list', image['path'], check=2)
    assert bmapctl('auto-flash', '-', check=2)
    proc = bmapctl('auto-flash', '--nobmap', '--zero-unmapped', image['path'], check=2)
    assert '--zero-unmapped needs a bmap' in proc.stderr, proc.stderr
