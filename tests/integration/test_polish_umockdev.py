# SPDX-License-Identifier: GPL-2.0-or-later
'''Issue 12: flashing the disk that holds / (a fake USB stick whose
partition has the real root's dev_t) is refused without telling the user
to unmount /. Runs under umockdev-wrapper (integration-umockdev).'''

import pytest

import bmapd_harness as h

h.require_umockdev()

from test_devices_umockdev import fake_daemon, small_image, testbed  # noqa: E402,F401


def test_root_disk_is_not_to_be_unmounted(fake_daemon, client, polkit, testbed, tmp_path, fds):
    if not testbed.root_devnum:
        pytest.skip('/ is on no block device here')
    stick = client.device_path('/dev/sdy')
    polkit.set_allowed([h.ACTION_FLASH, h.ACTION_FLASH_SYSTEM])
    with pytest.raises(h.DBusCallError) as e:
        client.flash(stick, small_image(tmp_path, fds), nobmap=True)
    assert e.value.name == h.ERROR + 'DeviceBusy', e.value.message
    assert 'mounted at /' in e.value.message, e.value.message
    assert 'holds the running system' in e.value.message, e.value.message
    assert 'unmount' not in e.value.message, e.value.message
