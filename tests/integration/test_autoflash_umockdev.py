# SPDX-License-Identifier: GPL-2.0-or-later
'''Which devices auto-flash takes, on fake hardware (umockdev): a USB SD
card reader whose cards go in and out (change events), USB sticks plugged
in (add events), several at once, media present before the rule, system,
read-only and non-removable disks that match a rule's pattern but must not
be touched, and the match keys.

umockdev's device nodes are plain files, not block devices: bmapd refuses
to write them (the node is "no longer the block device", MediaChanged)
once it has made the card's job. So these tests check the decisions (which
device gets a job, for which rule, and CardFinished); that nothing was
written to any fake node; and test_autoflash_loop.py checks the bytes on
real devices.

Runs under umockdev-wrapper (the meson test 'integration-umockdev').'''

import os

import pytest

import bmapd_harness as h

UMockdev = h.require_umockdev()

from test_devices_umockdev import disk, parent, record, root_devnum  # noqa: E402

PCI = '/devices/pci0000:00'
USB = f'{PCI}/0000:00:14.0'
READER_PORT = 'pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0'
READER = f'{USB}/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0/block/sdx'
SATA = f'{PCI}/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0/block/sdw'
EMMC = f'{PCI}/0000:00:1a.0/mmc_host/mmc7/mmc7:0001/block/mmcblk7'
ROOT_STICK = f'{USB}/usb1/1-3/1-3:1.0/host7/target7:0:0/7:0:0:0/block/sdy'
CARD_SECTORS = 8192  # 4 MiB


def usb_disk(port, name, devnum, sectors, diskseq, serial='', vendor='Generic',
             model='Flash_Disk', props=(), attrs=()):
    path = f'{USB}/usb1/1-{port}/1-{port}:1.0/host{port + 10}/target{port + 10}:0:0/' \
           f'{port + 10}:0:0:0/block/{name}'
    props = ['ID_BUS=usb', f'ID_VENDOR={vendor}', f'ID_MODEL={model}',
             f'ID_SERIAL_SHORT={serial}', f'ID_PATH=pci-0000:00:14.0-usb-0:{port}:1.0-scsi-0:0:0:0',
             *props]
    return path, record(
        disk(path, name, devnum, sectors, props=props, attrs=['removable=1', *attrs],
             diskseq=diskseq),
        parent(f'{USB}/usb1/1-{port}', 'usb', ['DEVTYPE=usb_device']))


@pytest.fixture
def testbed():
    tb = UMockdev.Testbed.new()
    # A USB SD card reader, empty.
    tb.add_from_string(record(
        disk(READER, 'sdx', ('8', '16'), 0,
             props=['ID_BUS=usb', 'ID_VENDOR=Generic', 'ID_MODEL=STORAGE_DEVICE',
                    'ID_SERIAL_SHORT=000000000819', 'ID_DRIVE_FLASH_SD=1',
                    f'ID_PATH={READER_PORT}'],
             attrs=['removable=1'], diskseq=11),
        parent(f'{USB}/usb1/1-2', 'usb', ['DEVTYPE=usb_device'])))
    # Fixed disks that match a pattern like model "*" and are System.
    tb.add_from_string(record(
        disk(SATA, 'sdw', ('8', '32'), 500118192,
             props=['ID_BUS=ata', 'ID_MODEL=Samsung_SSD_870', 'ID_SERIAL_SHORT=S5Y1NX0R'],
             diskseq=2),
        parent(SATA.rsplit('/block/', 1)[0], 'scsi', ['DEVTYPE=scsi_device'],
               ['vendor=ATA', 'model=Samsung SSD 870'])))
    tb.add_from_string(record(
        disk(EMMC, 'mmcblk7', ('179', '0'), 30535680, props=['ID_NAME=DA4032'], diskseq=3),
        parent(EMMC.rsplit('/block/', 1)[0], 'mmc', ['MMC_TYPE=MMC'],
               ['type=MMC', 'name=DA4032', 'serial=0x12345678'])))
    # An empty USB reader whose card would hold / (System whatever is in it).
    root = root_devnum()
    if root is not None:
        tb.add_from_string(record(
            disk(ROOT_STICK, 'sdy', ('8', '48'), 0,
                 props=['ID_BUS=usb', 'ID_VENDOR=SanDisk', 'ID_MODEL=Ultra'], diskseq=50),
            parent(f'{USB}/usb1/1-3', 'usb', ['DEVTYPE=usb_device'])))
        tb.add_from_string(
            f'P: {ROOT_STICK}/sdy2\nN: sdy2\nE: DEVNAME=/dev/sdy2\nE: DEVTYPE=partition\n'
            f'E: SUBSYSTEM=block\nE: MAJOR={root[0]}\nE: MINOR={root[1]}\n'
            f'A: dev={root[0]}:{root[1]}\nA: partition=2\nA: size=60000000\n')
    tb.root_devnum = root
    tb.next_diskseq = 100
    yield tb


def sysfs(path):
    return '/sys' + path


def plug(tb, port, name, minor, sectors=CARD_SECTORS, **kwargs):
    '''A USB stick appears (add event). Returns its node.'''
    diskseq = tb.next_diskseq
    tb.next_diskseq += 1
    path, text = usb_disk(port, name, ('8', str(minor)), sectors, diskseq, **kwargs)
    tb.add_from_string(text)  # announced with an "add" uevent
    tb.paths = getattr(tb, 'paths', {})
    tb.paths[name] = path
    return f'/dev/{name}'


def insert_card(tb, sectors=CARD_SECTORS):
    tb.set_attribute(sysfs(READER), 'size', str(sectors))
    tb.set_attribute(sysfs(READER), 'diskseq', str(tb.next_diskseq))
    tb.next_diskseq += 1
    tb.uevent(sysfs(READER), 'change')


def eject_card(tb):
    tb.set_attribute(sysfs(READER), 'size', '0')
    tb.uevent(sysfs(READER), 'change')


@pytest.fixture
def fake_daemon(bus, client, polkit, testbed, tmp_path):
    env = {'LD_PRELOAD': os.environ['LD_PRELOAD'], 'UMOCKDEV_DIR': testbed.get_root_dir()}
    d = h.Daemon(bus, client, str(tmp_path), env=env)
    yield d
    rc = d.stop()
    print('---- bmapd log ----\n' + open(d.log_path).read())
    assert rc == 0


@pytest.fixture
def image(tmp_path, fds):
    path = tmp_path / 'card.img'
    path.write_bytes(h.pattern('umockdev-card', 64 * 1024))
    return path


def arm(client, polkit, fds, image, match=None, **options):
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    return client.add_auto_flash(fds(str(image)), match=match, nobmap=True,
                                 description='card.img', **options)


def node_bytes(testbed, name):
    '''What the fake node holds: nothing is ever written to it.'''
    with open(os.path.join(testbed.get_root_dir(), 'dev', name), 'rb') as f:
        return f.read()


def card_jobs(client, node):
    dev = client.wait_device(node)
    return client.jobs_for(dev)


def settle(client):
    client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'Version')
    client.iterate(0.1)


def wait_cards(client, rule, n):
    return h.wait_until(lambda: len(client.rule_signals(rule)) >= n
                        and client.rule_signals(rule)[:n], 30, f'{n} cards')


def test_card_inserted_into_a_reader(fake_daemon, client, polkit, testbed, image, fds):
    rule = arm(client, polkit, fds, image, match={'bus': ['usb'], 'port': 'pci-*-usb-0:2:*'})
    reader = client.device_path('/dev/sdx')
    settle(client)
    assert client.jobs_for(reader) == []  # no card yet

    insert_card(testbed)
    [(device, job, state)] = wait_cards(client, rule, 1)
    assert device == reader
    props = client.get_all(job, h.JOB_IFACE)
    assert props['Device'] == reader and props['Description'] == 'card.img'
    assert props['StartedByUid'] == os.geteuid()
    # A fake node is not a block device: refused before writing.
    assert (state, props['ErrorName']) == ('failed', h.ERROR + 'MediaChanged')
    assert 'no longer the block device' in props['ErrorMessage']
    assert client.get(rule, h.AUTOFLASH_IFACE, 'Failed') == 1
    assert node_bytes(testbed, 'sdx') == b''

    # The same card, heard of again: not taken twice.
    testbed.uevent(sysfs(READER), 'change')
    settle(client)
    assert len(client.jobs_for(reader)) == 1
    # Out, and the next card in.
    eject_card(testbed)
    h.wait_until(lambda: not client.get(reader, h.DEVICE_IFACE, 'MediaPresent'), 20, 'no card')
    insert_card(testbed)
    cards = wait_cards(client, rule, 2)
    assert cards[1][0] == reader and cards[1][1] != job
    assert len(client.jobs_for(reader)) == 2


def test_card_swapped_while_in_the_reader(fake_daemon, client, polkit, testbed, image, fds):
    '''A new diskseq with a medium present all along is a new card.'''
    rule = arm(client, polkit, fds, image)
    insert_card(testbed)
    wait_cards(client, rule, 1)
    insert_card(testbed)  # a new size and diskseq, no "empty" in between
    wait_cards(client, rule, 2)
    assert len(client.jobs_for(client.device_path('/dev/sdx'))) == 2


def test_usb_sticks_plugged_in(fake_daemon, client, polkit, testbed, image, fds):
    rule = arm(client, polkit, fds, image, match={'vendor': 'SanDisk'})
    nodes = [plug(testbed, 4 + i, f'sd{"klm"[i]}', 64 + 16 * i, vendor='SanDisk')
             for i in range(3)]
    other = plug(testbed, 8, 'sdn', 128, vendor='Kingston')
    cards = wait_cards(client, rule, 3)
    devices = {client.device_path(n) for n in nodes}
    assert {d for d, _, _ in cards} == devices
    assert len({j for _, j, _ in cards}) == 3
    settle(client)
    assert card_jobs(client, other) == []  # another vendor
    for name in ('sdk', 'sdl', 'sdm', 'sdn'):
        assert node_bytes(testbed, name) == b''


def test_media_present_before_the_rule(fake_daemon, client, polkit, testbed, image, fds):
    insert_card(testbed)
    reader = client.device_path('/dev/sdx')
    h.wait_until(lambda: client.get(reader, h.DEVICE_IFACE, 'MediaPresent'), 20, 'the card')
    stick = plug(testbed, 4, 'sdk', 64)
    client.wait_device(stick)
    rule = arm(client, polkit, fds, image)
    # Heard of again, same media: still not taken.
    testbed.uevent(sysfs(READER), 'change')
    testbed.uevent(sysfs(testbed.paths['sdk']), 'change')
    settle(client)
    assert client.jobs_for(reader) == [] and card_jobs(client, stick) == []
    # A new card in the same reader is.
    insert_card(testbed)
    [(device, _, _)] = wait_cards(client, rule, 1)
    assert device == reader
    settle(client)
    assert card_jobs(client, stick) == []


def test_system_disks_are_never_touched(fake_daemon, client, polkit, testbed, image, fds):
    # A rule that matches everything, fixed disks included.
    rule = arm(client, polkit, fds, image, match={'model': '*', 'allow-non-removable': True})
    # Disks appear (again) while it is armed: SATA, eMMC, and a USB stick
    # holding / (System although removable).
    for path in (SATA, EMMC):
        testbed.uevent(sysfs(path), 'remove')
    settle(client)
    for path in (SATA, EMMC):
        testbed.set_attribute(sysfs(path), 'diskseq', str(testbed.next_diskseq))
        testbed.next_diskseq += 1
        testbed.uevent(sysfs(path), 'add')
    # A stick whose partition holds / gets a medium (it was there empty).
    if testbed.root_devnum is not None:
        testbed.set_attribute(sysfs(ROOT_STICK), 'size', '60437492')
        testbed.set_attribute(sysfs(ROOT_STICK), 'diskseq', '51')
        testbed.uevent(sysfs(ROOT_STICK), 'change')
    # A stick the rule does take, after them: its job proves the others
    # were seen and passed over.
    stick = plug(testbed, 4, 'sdk', 64)
    [(device, _, _)] = wait_cards(client, rule, 1)
    assert device == client.device_path(stick)
    for node in ['/dev/sdw', '/dev/mmcblk7'] + (['/dev/sdy'] if testbed.root_devnum else []):
        dev = client.wait_device(node)
        assert client.get(dev, h.DEVICE_IFACE, 'System')
        assert client.jobs_for(dev) == []
    for name in ('sdw', 'mmcblk7'):
        assert node_bytes(testbed, name) == b''
    assert 'a system disk, never auto-flashed' in fake_daemon.read_log()


def test_read_only_card_is_not_flashed(fake_daemon, client, polkit, testbed, image, fds):
    rule = arm(client, polkit, fds, image)
    testbed.set_attribute(sysfs(READER), 'ro', '1')  # the lock switch
    insert_card(testbed)
    reader = client.device_path('/dev/sdx')
    h.wait_until(lambda: client.get(reader, h.DEVICE_IFACE, 'MediaPresent'), 20, 'the card')
    stick = plug(testbed, 4, 'sdk', 64)
    [(device, _, _)] = wait_cards(client, rule, 1)
    assert device == client.device_path(stick)
    assert client.jobs_for(reader) == []
    assert 'write-protected' in fake_daemon.read_log()


def test_non_removable_needs_allow_non_removable(fake_daemon, client, polkit, testbed, image,
                                                 fds):
    '''A fixed card slot: neither removable nor System.'''
    removable_only = arm(client, polkit, fds, image, match={'bus': ['virtual']})
    # Stands for a fixed slot: a virtual disk is neither removable nor System.
    path = '/devices/virtual/block/loop70'
    testbed.add_from_string(disk(path, 'loop70', ('7', '70'), 0, diskseq=60,
                                 attrs=['loop/backing_file=/var/lib/slot.img']))
    slot = client.wait_device('/dev/loop70')
    props = client.get_all(slot, h.DEVICE_IFACE)
    assert not props['Removable'] and not props['System'] and not props['MediaPresent']
    testbed.set_attribute(sysfs(path), 'size', str(CARD_SECTORS))
    testbed.set_attribute(sysfs(path), 'diskseq', '61')
    testbed.uevent(sysfs(path), 'change')
    h.wait_until(lambda: client.get(slot, h.DEVICE_IFACE, 'MediaPresent'), 20, 'the card')
    settle(client)
    assert client.jobs_for(slot) == []
    assert 'not removable' in fake_daemon.read_log()

    allowed = arm(client, polkit, fds, image,
                  match={'bus': ['virtual'], 'allow-non-removable': True})
    testbed.set_attribute(sysfs(path), 'diskseq', '62')
    testbed.uevent(sysfs(path), 'change')
    [(device, _, _)] = wait_cards(client, allowed, 1)
    assert device == slot
    assert client.rule_signals(removable_only) == []


def test_match_keys(fake_daemon, client, polkit, testbed, image, fds):
    # Rules in id order: the first armed rule that matches takes the card.
    by_serial = arm(client, polkit, fds, image, match={'serial': 'AA??00*'})
    by_size = arm(client, polkit, fds, image,
                  match={'min-size': 8 * h.MiB, 'max-size': 16 * h.MiB, 'bus': ['usb']})
    by_model = arm(client, polkit, fds, image, match={'model': 'Ultra*', 'bus': ['mmc']})
    anything = arm(client, polkit, fds, image)

    a = plug(testbed, 4, 'sdk', 64, serial='AA1200XY')  # serial (and size, and anything)
    b = plug(testbed, 5, 'sdl', 80, serial='BB', sectors=2 * 8192 * 2)  # 16 MiB: size
    c = plug(testbed, 6, 'sdm', 96, serial='BB', model='Ultra_Fit')  # usb, not mmc: anything
    d = plug(testbed, 7, 'sdn', 112, serial='BB', sectors=64 * 2048)  # 64 MiB: anything
    got = {}
    for rule in (by_serial, by_size, anything):
        for device, _, _ in wait_cards(client, rule, 1 if rule != anything else 2):
            got[device] = rule
    assert got == {client.device_path(a): by_serial, client.device_path(b): by_size,
                   client.device_path(c): anything, client.device_path(d): anything}
    assert client.rule_signals(by_model) == []
