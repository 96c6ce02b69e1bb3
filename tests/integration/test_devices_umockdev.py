# SPDX-License-Identifier: GPL-2.0-or-later
'''Device registry and classification on fake hardware (umockdev): a USB SD
card reader, an eMMC, an SD card slot, SATA, NVMe and virtio disks, a USB
stick holding /, and what bmapd must not offer. Hotplug through add,
change and remove uevents.

Runs under umockdev-wrapper (the meson test 'integration-umockdev').'''

import os

import pytest

import bmapd_harness as h

UMockdev = h.require_umockdev()

PCI = '/devices/pci0000:00'
USB_READER = f'{PCI}/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0/block/sdx'
USB_STICK = f'{PCI}/0000:00:14.0/usb1/1-3/1-3:1.0/host7/target7:0:0/7:0:0:0/block/sdy'
SATA = f'{PCI}/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0/block/sdw'
EMMC = f'{PCI}/0000:00:1a.0/mmc_host/mmc7/mmc7:0001/block/mmcblk7'
SDCARD = f'{PCI}/0000:00:1b.0/mmc_host/mmc8/mmc8:aaaa/block/mmcblk8'
NVME = f'{PCI}/0000:00:1d.0/nvme/nvme3/nvme3n1'
VIRTIO = f'{PCI}/0000:00:05.0/virtio5/block/vdx'
LOOP_BACKED = '/devices/virtual/block/loop60'
LOOP_EMPTY = '/devices/virtual/block/loop61'
ZRAM = '/devices/virtual/block/zram9'


def root_devnum():
    '''major:minor of the filesystem mounted at /.'''
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            if fields[4] == '/':
                major, minor = fields[2].split(':')
                if major != '0':
                    return major, minor
                st = os.stat(fields[fields.index('-') + 2])
                return str(os.major(st.st_rdev)), str(os.minor(st.st_rdev))
    return None


def disk(path, name, devnum, size_sectors, props=(), attrs=(), diskseq=1):
    lines = [f'P: {path}', f'N: {name}', f'E: DEVNAME=/dev/{name}', 'E: DEVTYPE=disk',
             'E: SUBSYSTEM=block', f'E: MAJOR={devnum[0]}', f'E: MINOR={devnum[1]}',
             f'A: dev={devnum[0]}:{devnum[1]}', f'A: size={size_sectors}', 'A: ro=0',
             'A: removable=0', 'A: queue/logical_block_size=512', f'A: diskseq={diskseq}']
    lines += [f'E: {p}' for p in props]
    # later attributes win
    lines += [f'A: {a}' for a in attrs]
    return '\n'.join(lines) + '\n'


def parent(path, subsystem, props=(), attrs=()):
    lines = [f'P: {path}', f'E: SUBSYSTEM={subsystem}']
    lines += [f'E: {p}' for p in props]
    lines += [f'A: {a}' for a in attrs]
    return '\n'.join(lines) + '\n'


def record(*blocks):
    return '\n'.join(blocks)


@pytest.fixture
def testbed():
    tb = UMockdev.Testbed.new()
    usb_reader_scsi = USB_READER.rsplit('/block/', 1)[0]
    tb.add_from_string(record(
        disk(USB_READER, 'sdx', ('8', '16'), 8192,
             props=['ID_BUS=usb', 'ID_VENDOR=Generic', 'ID_VENDOR_ENC=Generic\\x20',
                    'ID_MODEL=STORAGE_DEVICE', 'ID_MODEL_ENC=STORAGE\\x20DEVICE\\x20\\x20',
                    'ID_SERIAL_SHORT=000000000819', 'ID_DRIVE_FLASH_SD=1',
                    'ID_PATH=pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0'],
             attrs=['removable=1'], diskseq=11),
        parent(usb_reader_scsi, 'scsi', ['DEVTYPE=scsi_device'],
               ['vendor=Generic', 'model=STORAGE DEVICE']),
        parent(f'{PCI}/0000:00:14.0/usb1/1-2', 'usb', ['DEVTYPE=usb_device'],
               ['removable=removable'])))
    # A partition of the reader's card: offered with its disk.
    tb.add_from_string(
        f'P: {USB_READER}/sdx1\nN: sdx1\nE: DEVNAME=/dev/sdx1\nE: DEVTYPE=partition\n'
        'E: SUBSYSTEM=block\nE: MAJOR=8\nE: MINOR=17\nA: dev=8:17\nA: partition=1\n'
        'A: size=2048\n')
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
    tb.add_from_string(
        f'P: {EMMC}boot0\nN: mmcblk7boot0\nE: DEVNAME=/dev/mmcblk7boot0\nE: DEVTYPE=disk\n'
        'E: SUBSYSTEM=block\nE: MAJOR=179\nE: MINOR=8\nA: dev=179:8\nA: size=8192\nA: ro=1\n')
    tb.add_from_string(record(
        disk(SDCARD, 'mmcblk8', ('179', '16'), 62333952, diskseq=4),
        parent(SDCARD.rsplit('/block/', 1)[0], 'mmc', ['MMC_TYPE=SD'],
               ['type=SD', 'name=SC64G', 'serial=0xabcdef01'])))
    tb.add_from_string(record(
        disk(NVME, 'nvme3n1', ('259', '0'), 1000215216, diskseq=5),
        parent(NVME.rsplit('/', 1)[0], 'nvme', [],
               ['model=WDC PC SN730', 'serial=20213T800123'])))
    tb.add_from_string(record(
        disk(VIRTIO, 'vdx', ('252', '16'), 2097152, attrs=['serial=vm-disk-1'], diskseq=6),
        parent(VIRTIO.rsplit('/block/', 1)[0], 'virtio', [], ['vendor=0x1af4'])))
    tb.add_from_string(disk(LOOP_BACKED, 'loop60', ('7', '60'), 65536,
                            attrs=['loop/backing_file=/var/tmp/disk.img'], diskseq=7))
    tb.add_from_string(disk(LOOP_EMPTY, 'loop61', ('7', '61'), 0, diskseq=8))
    tb.add_from_string(disk(ZRAM, 'zram9', ('251', '9'), 8388608, diskseq=9))

    # A USB stick whose partition is mounted at / (it has the real root's dev_t).
    root = root_devnum()
    if root is not None:
        tb.add_from_string(record(
            disk(USB_STICK, 'sdy', ('8', '48'), 60437492,
                 props=['ID_BUS=usb', 'ID_VENDOR=SanDisk', 'ID_MODEL=Ultra'], diskseq=10),
            parent(f'{PCI}/0000:00:14.0/usb1/1-3', 'usb', ['DEVTYPE=usb_device'])))
        tb.add_from_string(
            f'P: {USB_STICK}/sdy2\nN: sdy2\nE: DEVNAME=/dev/sdy2\nE: DEVTYPE=partition\n'
            f'E: SUBSYSTEM=block\nE: MAJOR={root[0]}\nE: MINOR={root[1]}\n'
            f'A: dev={root[0]}:{root[1]}\nA: partition=2\nA: size=60000000\n')
    tb.root_devnum = root
    yield tb


@pytest.fixture
def fake_daemon(bus, client, polkit, testbed, tmp_path):
    env = {'LD_PRELOAD': os.environ['LD_PRELOAD'], 'UMOCKDEV_DIR': testbed.get_root_dir()}
    d = h.Daemon(bus, client, str(tmp_path), env=env)
    yield d
    rc = d.stop()
    print('---- bmapd log ----\n' + open(d.log_path).read())
    assert rc == 0


def by_name(client):
    return {props['Name']: props for props in client.devices().values()}


def test_classification(fake_daemon, client, testbed):
    devices = by_name(client)
    # The partitions of the disks offered; no boot area, empty loop, zram.
    expected = {'sdx', 'sdx1', 'sdw', 'mmcblk7', 'mmcblk8', 'nvme3n1', 'vdx', 'loop60'}
    if testbed.root_devnum:
        expected |= {'sdy', 'sdy2'}
    assert set(devices) == expected

    reader = devices['sdx']
    assert reader['Node'] == '/dev/sdx'
    assert reader['Bus'] == 'usb' and reader['Removable'] and not reader['System']
    assert reader['Vendor'] == 'Generic' and reader['Model'] == 'STORAGE DEVICE'
    assert reader['Serial'] == '000000000819'
    assert reader['Size'] == 8192 * 512 and reader['MediaPresent']
    assert reader['LogicalBlockSize'] == 512 and reader['DiskSeq'] == 11
    assert not reader['ReadOnly'] and not reader['Busy'] and reader['Job'] == '/'

    sata = devices['sdw']
    assert sata['Bus'] == 'ata' and not sata['Removable'] and sata['System']
    assert sata['Model'] == 'Samsung SSD 870' and sata['Serial'] == 'S5Y1NX0R'

    emmc = devices['mmcblk7']
    assert emmc['Bus'] == 'mmc' and not emmc['Removable'] and emmc['System']
    assert emmc['Model'] == 'DA4032' and emmc['Serial'] == '0x12345678'

    card = devices['mmcblk8']
    assert card['Bus'] == 'mmc' and card['Removable'] and not card['System']

    nvme = devices['nvme3n1']
    assert nvme['Bus'] == 'nvme' and nvme['System'] and not nvme['Removable']
    assert nvme['Model'] == 'WDC PC SN730' and nvme['Serial'] == '20213T800123'

    virtio = devices['vdx']
    assert virtio['Bus'] == 'virtio' and virtio['System'] and virtio['Serial'] == 'vm-disk-1'
    assert virtio['Vendor'] == ''  # a bus id is not a vendor name

    loop = devices['loop60']
    assert loop['Bus'] == 'virtual' and not loop['System'] and not loop['Removable']

    if testbed.root_devnum:
        stick = devices['sdy']
        # Removable, but it holds /: a system disk, and busy.
        assert stick['Removable'] and stick['System'] and stick['Busy']


def test_hotplug_add_change_remove(fake_daemon, client, testbed):
    path = f'{PCI}/0000:00:14.0/usb2/2-1/2-1:1.0/host9/target9:0:0/9:0:0:0/block/sdv'
    testbed.add_from_string(record(
        disk(path, 'sdv', ('65', '0'), 0, props=['ID_BUS=usb', 'ID_MODEL=Card_Reader'],
             attrs=['removable=1'], diskseq=20),
        parent(f'{PCI}/0000:00:14.0/usb2/2-1', 'usb', ['DEVTYPE=usb_device'])))
    testbed.uevent('/sys' + path, 'add')
    dev = client.wait_device('/dev/sdv')
    added = h.wait_until(lambda: [args for p, iface, m, args in client.signals
                                  if m == 'InterfacesAdded' and args[0] == dev], 10,
                         'InterfacesAdded')
    assert h.DEVICE_IFACE in added[0][1]
    props = client.get_all(dev, h.DEVICE_IFACE)
    assert props['Size'] == 0 and not props['MediaPresent'] and props['Removable']

    # A card goes in: new size, new diskseq.
    testbed.set_attribute('/sys' + path, 'size', '2048')
    testbed.set_attribute('/sys' + path, 'diskseq', '21')
    testbed.uevent('/sys' + path, 'change')
    h.wait_until(lambda: client.get(dev, h.DEVICE_IFACE, 'MediaPresent'), 20, 'the card')
    client.iterate(0.2)
    changed = {}
    for p, iface, m, args in client.signals:
        if p == dev and m == 'PropertiesChanged':
            changed.update(args[1])
    assert changed['Size'] == 2048 * 512 and changed['DiskSeq'] == 21
    assert changed['MediaPresent'] is True

    # The card comes out.
    testbed.set_attribute('/sys' + path, 'size', '0')
    testbed.uevent('/sys' + path, 'change')
    h.wait_until(lambda: not client.get(dev, h.DEVICE_IFACE, 'MediaPresent'), 20, 'no card')
    assert client.get(dev, h.DEVICE_IFACE, 'Size') == 0

    # The reader is unplugged.
    testbed.uevent('/sys' + path, 'remove')
    testbed.remove_device('/sys' + path)
    client.wait_device_gone('/dev/sdv')
    client.iterate(0.2)
    assert any(m == 'InterfacesRemoved' and args[0] == dev
               for p, iface, m, args in client.signals)
    # Everything else is still there and the daemon is fine.
    assert 'sdx' in by_name(client)


def small_image(tmp_path, fds):
    img = tmp_path / 'small.img'
    img.write_bytes(h.pattern('fake', 64 * 1024))
    return fds(str(img))


def test_polkit_action_and_details(fake_daemon, client, polkit, tmp_path, fds):
    reader = client.device_path('/dev/sdx')
    with pytest.raises(h.DBusCallError) as e:
        client.flash(reader, small_image(tmp_path, fds), nobmap=True)
    assert e.value.name == h.ERROR + 'NotAuthorized'
    action, details, flags, kind, name, _ = polkit.checks()[-1]
    assert action == h.ACTION_FLASH
    assert details == {'device': '/dev/sdx', 'disk': '/dev/sdx', 'drive.vendor': 'Generic',
                       'drive.model': 'STORAGE DEVICE', 'drive.serial': '000000000819',
                       'drive.bus': 'usb', 'drive.removable': 'true',
                       'options.eject': 'false', 'options.power-off': 'false',
                       'bmap.signature': 'none'}


def test_system_disk_needs_flash_system(fake_daemon, client, polkit, tmp_path, fds):
    sata = client.device_path('/dev/sdw')
    polkit.set_allowed([h.ACTION_FLASH])
    with pytest.raises(h.DBusCallError) as e:
        client.flash(sata, small_image(tmp_path, fds), nobmap=True)
    assert e.value.name == h.ERROR + 'NotAuthorized'
    assert polkit.checks()[-1][0] == h.ACTION_FLASH_SYSTEM
    assert polkit.checks()[-1][1]['drive.bus'] == 'ata'

    # With flash-system, authorization passes (what follows on a fake node
    # does not matter here: it is not a real block device).
    polkit.set_allowed([h.ACTION_FLASH, h.ACTION_FLASH_SYSTEM])
    try:
        job = client.flash(sata, small_image(tmp_path, fds), nobmap=True)
        client.wait_finished(job)
    except h.DBusCallError as e:
        assert e.name != h.ERROR + 'NotAuthorized'
    assert polkit.checks()[-1][0] == h.ACTION_FLASH_SYSTEM


def test_no_medium_and_read_only(fake_daemon, client, polkit, testbed, tmp_path, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    testbed.set_attribute('/sys' + SDCARD, 'ro', '1')
    testbed.uevent('/sys' + SDCARD, 'change')
    card = client.device_path('/dev/mmcblk8')
    h.wait_until(lambda: client.get(card, h.DEVICE_IFACE, 'ReadOnly'), 20, 'ReadOnly')
    with pytest.raises(h.DBusCallError) as e:
        client.flash(card, small_image(tmp_path, fds), nobmap=True)
    assert e.value.name == h.ERROR + 'ReadOnly'

    testbed.set_attribute('/sys' + USB_READER, 'size', '0')
    testbed.uevent('/sys' + USB_READER, 'change')
    reader = client.device_path('/dev/sdx')
    h.wait_until(lambda: not client.get(reader, h.DEVICE_IFACE, 'MediaPresent'), 20, 'no medium')
    with pytest.raises(h.DBusCallError) as e:
        client.flash(reader, small_image(tmp_path, fds), nobmap=True)
    assert e.value.name == h.ERROR + 'DeviceGone' and 'no medium' in e.value.message
    assert polkit.checks() == []
