# SPDX-License-Identifier: GPL-2.0-or-later
'''Auto-flash while a card's flash is held mid-way: its loop device's
backing file lies on a frozen filesystem, so its writes wait until it is
thawed (or fail, once it is shut down, as on a card pulled out).

These tests read the kernel's events directly (bmapd does so when no udevd
runs; the module is skipped when one does): udevd's own work on a device
whose writes are held is held too, and would hold back the later events of
that device.'''

import pytest

import bmapd_harness as h
from conftest import skip_without_loop_devices
from test_autoflash_loop import (CARD, arm, assert_untouched, assert_written, image,  # noqa: F401
                                 settle, wait_cards)

pytestmark = pytest.mark.loop


@pytest.fixture
def readers(tmp_path):
    skip_without_loop_devices()
    if h.udevd_running():
        pytest.skip('udevd runs: it would hold back the events of a held device')
    made = []

    def make(attach=True, directory=None):
        reader = h.CardReader(str(tmp_path), CARD, directory=directory)
        made.append(reader)
        return reader.attach() if attach else reader

    yield make
    for reader in made:
        try:
            reader.remove()
        except OSError as e:
            print(f'cannot remove {reader.node}: {e}')


def test_card_pulled_out_mid_flash(daemon, client, polkit, readers, image, fds, tmp_path):
    freezable = h.FreezableDir(str(tmp_path))
    try:
        rule = arm(client, polkit, fds, image)
        slow = readers(attach=False, directory=freezable.path)
        # Writes to the card's backing file block from now on: its flash
        # stays in progress until the card is pulled.
        freezable.freeze()
        slow.attach()
        slow_dev = client.wait_device(slow.node)
        job = h.wait_until(lambda: client.jobs_for(slow_dev), 30, 'the card job')[0]
        client.wait_state(job, ('writing', 'syncing', 'done', 'failed'))
        assert client.get(job, h.JOB_IFACE, 'State') in ('writing', 'syncing'), \
            client.get_all(job, h.JOB_IFACE)

        # Another card meanwhile is flashed as usual.
        other = readers()
        other_dev = client.wait_device(other.node)
        [(device, _, state)] = wait_cards(client, rule, 1)
        assert (device, state) == (other_dev, 'done')
        assert_written(other, image)

        # The card is pulled: the kernel says so, and its writes fail.
        slow.uevent('remove')
        client.wait_device_gone(slow.node, timeout=60)
        freezable.shut_down()
        freezable.thaw()
        state, error_name, message = client.wait_finished(job)
        assert (state, error_name) == ('failed', h.ERROR + 'DeviceGone'), message
        assert slow.node in message
        cards = wait_cards(client, rule, 2)
        assert cards[1] == (slow_dev, job, 'failed')
        assert client.get(rule, h.AUTOFLASH_IFACE, 'Failed') == 1
        assert client.get(rule, h.AUTOFLASH_IFACE, 'Flashed') == 1

        # The same card comes back (same diskseq): it is not taken again.
        slow.uevent('add')
        client.wait_device(slow.node)
        settle(client)
        assert client.jobs_for(slow_dev) == [job]
        assert rule in client.rules()
    finally:
        try:
            freezable.thaw()
            # The loop device must let go of its backing file before the unmount.
            if 'slow' in locals():
                slow.remove()
        finally:
            freezable.close()


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nMaxJobs=1\n'])
def test_waiting_card_taken_out_is_dropped(daemon, client, polkit, readers, image, fds,
                                           tmp_path):
    freezable = h.FreezableDir(str(tmp_path))
    try:
        rule = arm(client, polkit, fds, image)
        slow = readers(attach=False, directory=freezable.path)
        freezable.freeze()  # holds the first card's job, the only place
        slow.attach()
        slow_dev = client.wait_device(slow.node)
        job = h.wait_until(lambda: client.jobs_for(slow_dev), 30, 'the first job')[0]
        waiting = readers()
        waiting_dev = client.wait_device(waiting.node)
        settle(client)
        assert client.jobs_for(waiting_dev) == []  # waiting for the place
        waiting.uevent('remove')
        client.wait_device_gone(waiting.node, timeout=60)
        freezable.thaw()
        assert client.wait_finished(job)[0] == 'done'
        [(device, _, state)] = wait_cards(client, rule, 1)
        assert (device, state) == (slow_dev, 'done')
        settle(client)
        assert client.jobs_for(waiting_dev) == []
        assert_untouched(waiting)
        assert client.get(rule, h.AUTOFLASH_IFACE, 'Flashed') == 1
        assert f'the card in {waiting.node} is not flashed: the device is gone' \
            in daemon.read_log()
    finally:
        try:
            freezable.thaw()
            if 'slow' in locals():
                slow.remove()
        finally:
            freezable.close()


