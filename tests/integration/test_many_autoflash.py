# SPDX-License-Identifier: GPL-2.0-or-later
'''Auto-flash cards that share one read of the image: cards of one rule
taken within [AutoFlash] ShareWindowSec= of each other start together as
one set, each with its own job (the loop devices and udevd of
test_autoflash_loop).'''

import pytest

import bmapd_harness as h
from test_autoflash_loop import (CARD, arm, assert_written, daemon, image,  # noqa: F401
                                 readers, udevd, wait_cards)

pytestmark = pytest.mark.loop


# A window long enough that the three cards' events come within it however
# loaded the machine is; the test does not depend on how long it is.
@pytest.mark.parametrize('daemon_config', ['[AutoFlash]\nShareWindowSec=15\n'])
def test_cards_inserted_together_share_one_read(daemon, client, polkit, readers, image, fds):
    rule = arm(client, polkit, fds, image, verify_written=True)
    cards = [readers() for _ in range(3)]
    devices = {client.wait_device(card.node) for card in cards}
    finished = wait_cards(client, rule, 3, timeout=120)
    assert {device for device, _, _ in finished} == devices
    assert all(state == 'done' for _, _, state in finished), finished
    assert len({job for _, job, _ in finished}) == 3
    for card in cards:
        assert_written(card, image)
    log = daemon.read_log()
    assert 'auto-flash: 3 cards share one read of the image' in log, log
    assert log.count('from one image') == 3, log


@pytest.mark.parametrize('daemon_config', ['[AutoFlash]\nShareWindowSec=0\n'])
def test_share_window_zero_starts_each_card_alone(daemon, client, polkit, readers, image, fds):
    rule = arm(client, polkit, fds, image)
    reader = readers()
    [(_, _, state)] = wait_cards(client, rule, 1)
    assert state == 'done'
    assert_written(reader, image)
    assert 'share one read' not in daemon.read_log()


def test_share_window_setting_is_checked(bus, client, tmp_path):
    d = h.Daemon(bus, client, str(tmp_path), config='[AutoFlash]\nShareWindowSec=61\n',
                 wait=False)
    rc = d.wait_exit(30)
    log = d.read_log()
    d.stop()
    assert rc == 1
    assert 'ShareWindowSec=61' in log, log
