# SPDX-License-Identifier: GPL-2.0-or-later
'''Partitions on fake hardware (umockdev): a partition of a System disk
needs flash-system, whatever the partition holds; one of a removable
reader is removable; partitions come and go with their disk; and bmapctl
writes a partition bmapd does not offer in-process, saying so. Runs under
umockdev-wrapper (the meson test 'integration-umockdev').'''

import os
import subprocess

import pytest

import bmapd_harness as h

h.require_umockdev()

from test_devices_umockdev import (PCI, SATA, USB_STICK, disk, fake_daemon, parent,  # noqa: E402,F401
                                   record, small_image, testbed)


def add_partition(testbed, disk_path, name, devnum, number, start, size):
    path = f'{disk_path}/{name}'
    testbed.add_from_string(
        f'P: {path}\nN: {name}\nE: DEVNAME=/dev/{name}\nE: DEVTYPE=partition\n'
        f'E: SUBSYSTEM=block\nE: MAJOR={devnum[0]}\nE: MINOR={devnum[1]}\n'
        f'A: dev={devnum[0]}:{devnum[1]}\nA: partition={number}\nA: start={start}\n'
        f'A: size={size}\nA: ro=0\n')
    testbed.uevent('/sys' + path, 'add')
    return path


def test_partition_of_a_system_disk_needs_flash_system(fake_daemon, client, polkit, testbed,
                                                       tmp_path, fds):
    add_partition(testbed, SATA, 'sdw1', ('8', '33'), 1, 2048, 1048576)
    part = client.wait_device('/dev/sdw1')
    props = client.get_all(part, h.DEVICE_IFACE)
    assert props['System'] and not props['Removable'] and not props['Busy']
    assert props['PartitionOf'] == client.device_path('/dev/sdw')
    assert props['Bus'] == 'ata' and props['Model'] == 'Samsung SSD 870'

    polkit.set_allowed([h.ACTION_FLASH])
    with pytest.raises(h.DBusCallError) as e:
        client.flash(part, small_image(tmp_path, fds), nobmap=True)
    assert e.value.name == h.ERROR + 'NotAuthorized'
    action, details = polkit.checks()[-1][:2]
    assert action == h.ACTION_FLASH_SYSTEM
    assert details['device'] == '/dev/sdw1' and details['disk'] == '/dev/sdw'
    assert details['drive.bus'] == 'ata'

    # With flash-system, authorization passes (a fake node cannot be
    # written: what follows does not matter here).
    polkit.set_allowed([h.ACTION_FLASH, h.ACTION_FLASH_SYSTEM])
    try:
        job = client.flash(part, small_image(tmp_path, fds), nobmap=True)
        client.wait_finished(job)
    except h.DBusCallError as e:
        assert e.name != h.ERROR + 'NotAuthorized'
    assert polkit.checks()[-1][0] == h.ACTION_FLASH_SYSTEM


def test_empty_partition_entry_is_not_offered(fake_daemon, client, testbed):
    '''A partition of size 0 (an entry being deleted) is no target; bmapd
    goes on (a crash fails the fixture).'''
    add_partition(testbed, SATA, 'sdw2', ('8', '34'), 2, 4096, 0)
    add_partition(testbed, SATA, 'sdw3', ('8', '35'), 3, 8192, 2048)
    client.wait_device('/dev/sdw3')
    assert client.device_path('/dev/sdw2') is None
    assert client.device_path('/dev/sdw') is not None


def test_partition_of_the_root_stick(fake_daemon, client, polkit, testbed, tmp_path, fds):
    '''sdy2 holds / (it has the real root's dev_t): System and Busy, and
    never written, even with flash-system.'''
    if not testbed.root_devnum:
        pytest.skip('/ is not on a block device here')
    part = client.wait_device('/dev/sdy2')
    props = client.get_all(part, h.DEVICE_IFACE)
    assert props['System'] and props['Busy'] and props['Removable']
    assert props['Contents'][0]['mount-points'][0] == '/'
    polkit.set_allowed([h.ACTION_FLASH, h.ACTION_FLASH_SYSTEM])
    with pytest.raises(h.DBusCallError) as e:
        client.flash(part, small_image(tmp_path, fds), nobmap=True)
    assert e.value.name == h.ERROR + 'DeviceBusy'
    assert '/dev/sdy2' in e.value.message and 'running system' in e.value.message
    assert polkit.checks()[-1][0] == h.ACTION_FLASH_SYSTEM


def test_partition_of_a_removable_reader(fake_daemon, client, polkit, tmp_path, fds):
    part = client.wait_device('/dev/sdx1')
    props = client.get_all(part, h.DEVICE_IFACE)
    assert props['Removable'] and not props['System'] and props['Size'] == 2048 * 512
    assert props['PartitionNumber'] == 1
    with pytest.raises(h.DBusCallError):
        client.flash(part, small_image(tmp_path, fds), nobmap=True)
    assert polkit.checks()[-1][0] == h.ACTION_FLASH
    assert polkit.checks()[-1][1]['disk'] == '/dev/sdx'


STICK = f'{PCI}/0000:00:14.0/usb3/3-1/3-1:1.0/host10/target10:0:0/10:0:0:0/block/sds'


def plug_partitioned_stick(testbed):
    '''A USB stick with one partition is plugged in (add_from_string
    announces each with an "add"; the disk's again once its partition is
    there, as the kernel announces a disk before its partitions).'''
    testbed.add_from_string(record(
        disk(STICK, 'sds', ('65', '32'), 65536, props=['ID_BUS=usb', 'ID_MODEL=Stick'],
             attrs=['removable=1'], diskseq=30),
        parent(f'{PCI}/0000:00:14.0/usb3/3-1', 'usb', ['DEVTYPE=usb_device'])))
    add_partition(testbed, STICK, 'sds1', ('65', '33'), 1, 2048, 30000)
    testbed.uevent('/sys' + STICK, 'add')


def test_partitions_come_and_go_with_their_disk(fake_daemon, client, testbed):
    path = STICK
    seen = len(client.signals)
    plug_partitioned_stick(testbed)
    part = client.wait_device('/dev/sds1')
    disk_path = client.wait_device('/dev/sds')
    added = [args[0] for p, iface, m, args in client.signals[seen:]
             if m == 'InterfacesAdded' and args[0] in (disk_path, part)]
    assert added == [disk_path, part]

    seen = len(client.signals)
    testbed.uevent('/sys' + path, 'remove')
    client.wait_device_gone('/dev/sds')
    client.wait_device_gone('/dev/sds1')
    removed = [args[0] for p, iface, m, args in client.signals[seen:]
               if m == 'InterfacesRemoved' and args[0] in (disk_path, part)]
    assert removed == [part, disk_path]


def test_a_partition_is_never_an_auto_flash_card(fake_daemon, client, polkit, testbed, fds,
                                                 tmp_path):
    '''A rule for any removable device takes the stick, not its partition.'''
    polkit.set_allowed([h.ACTION_AUTO_FLASH])
    rule = client.add_auto_flash(small_image(tmp_path, fds), nobmap=True)
    plug_partitioned_stick(testbed)
    part = client.wait_device('/dev/sds1')
    disk_path = client.wait_device('/dev/sds')
    h.wait_until(lambda: client.rule_signals(rule), 30, 'the card')
    client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'Version')  # what bmapd sent is in
    client.iterate(0.2)
    assert [args[0] for args in client.rule_signals(rule)] == [disk_path]
    assert client.jobs_for(part) == []


# ---- a real partition bmapd does not offer ----

def real_env(**extra):
    '''The environment of a program that must see the real /sys and /dev.'''
    env = dict(os.environ, **extra)
    env.pop('LD_PRELOAD', None)
    env.pop('UMOCKDEV_DIR', None)
    return env


def test_partition_bmapd_does_not_offer_is_written_in_process(fake_daemon, bus, client, polkit,
                                                             tmp_path):
    '''bmapd runs but sees only the fake devices: the partition of a real
    loop device is one it does not offer, written in-process with one line
    saying so; with --daemon it is refused.'''
    reason = h.loop_devices_usable()
    if reason:
        pytest.skip(reason)
    backing = tmp_path / 'real.img'
    backing.write_bytes(b'\xa5' * (4 * h.MiB))
    cli = os.path.join(h.HERE, '..', 'cli')
    proc = subprocess.run(
        [h.PYTHON, '-c', 'import sys; sys.path.insert(0, sys.argv[1]); '
         'from loop_partitions import attach_partitioned; '
         'print(attach_partitioned(sys.argv[2], 2048, 4096))', cli, str(backing)],
        env=real_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f'no partitioned loop device: {proc.stderr.strip()}')
    node = proc.stdout.strip()
    part = node + 'p1'
    image = tmp_path / 'small.img'
    image.write_bytes(h.pattern('not-offered', 256 * 1024))
    env = real_env(DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    try:
        proc = subprocess.run([h.find_bmapctl(), 'copy', '--nobmap', str(image), part], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        said = [line for line in proc.stderr.splitlines() if 'in-process' in line]
        assert said == [f'bmapctl: bmapd does not offer {part}: writing it in-process']
        with open(backing, 'rb') as f:
            data = f.read()
        assert data[h.MiB:h.MiB + 256 * 1024] == image.read_bytes()
        assert data[:446] == b'\xa5' * 446 and data[3 * h.MiB:] == b'\xa5' * h.MiB
        assert polkit.checks() == []

        proc = subprocess.run([h.find_bmapctl(), 'copy', '--daemon', '--nobmap', str(image), part],
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and 'bmapd does not offer this device' in proc.stderr
    finally:
        subprocess.run([h.PYTHON, '-c', 'import sys; sys.path.insert(0, sys.argv[1]); '
                        'from loop_partitions import detach; detach(sys.argv[2])', cli, node],
                       env=real_env(), capture_output=True)
