# SPDX-License-Identifier: GPL-2.0-or-later
'''DisplayName, IconName and Contents on fake hardware (umockdev), where
udev's database holds what its rules found: a SanDisk USB stick with a
labelled FAT partition and an ext4 one, a USB SD card reader, an SD card
slot, an eMMC, a SATA SSD and an NVMe disk.

Runs under umockdev-wrapper (the meson test 'integration-umockdev').'''

import os

import pytest

import bmapd_harness as h

UMockdev = h.require_umockdev()

PCI = '/devices/pci0000:00'
STICK = f'{PCI}/0000:00:14.0/usb1/1-3/1-3:1.0/host7/target7:0:0/7:0:0:0/block/sdt'
READER = f'{PCI}/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0/block/sdu'
SATA = f'{PCI}/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0/block/sdv'
EMMC = f'{PCI}/0000:00:1a.0/mmc_host/mmc7/mmc7:0001/block/mmcblk7'
SDCARD = f'{PCI}/0000:00:1b.0/mmc_host/mmc8/mmc8:aaaa/block/mmcblk8'
NVME = f'{PCI}/0000:00:1d.0/nvme/nvme3/nvme3n1'


def block(path, name, devnum, devtype, size_sectors, props=(), attrs=()):
    lines = [f'P: {path}', f'N: {name}', f'E: DEVNAME=/dev/{name}', f'E: DEVTYPE={devtype}',
             'E: SUBSYSTEM=block', f'E: MAJOR={devnum[0]}', f'E: MINOR={devnum[1]}',
             f'A: dev={devnum[0]}:{devnum[1]}', f'A: size={size_sectors}', 'A: ro=0',
             'A: removable=0', 'A: queue/logical_block_size=512', 'A: diskseq=1']
    lines += [f'E: {p}' for p in props]
    lines += [f'A: {a}' for a in attrs]  # later attributes win
    return '\n'.join(lines) + '\n'


def parent(path, subsystem, props=(), attrs=()):
    lines = [f'P: {path}', f'E: SUBSYSTEM={subsystem}']
    lines += [f'E: {p}' for p in props]
    lines += [f'A: {a}' for a in attrs]
    return '\n'.join(lines) + '\n'


@pytest.fixture
def testbed():
    tb = UMockdev.Testbed.new()
    # 62533296 sectors: a "32 GB" stick (32.0 GB).
    tb.add_from_string('\n'.join([
        block(STICK, 'sdt', ('8', '80'), 'disk', 62533296,
              props=['ID_BUS=usb', 'ID_VENDOR=SanDisk', 'ID_MODEL=Ultra',
                     'ID_SERIAL_SHORT=4C530001'],
              attrs=['removable=1']),
        parent(f'{PCI}/0000:00:14.0/usb1/1-3', 'usb', ['DEVTYPE=usb_device'])]))
    tb.add_from_string(block(
        f'{STICK}/sdt1', 'sdt1', ('8', '81'), 'partition', 524288,
        props=['ID_FS_TYPE=vfat', 'ID_FS_USAGE=filesystem', 'ID_FS_VERSION=FAT32',
               'ID_FS_LABEL=BOOT', 'ID_FS_LABEL_ENC=BOOT', 'ID_FS_UUID=1234-ABCD',
               'ID_FS_UUID_ENC=1234-ABCD', 'ID_PART_ENTRY_NAME=EFI\\x20system'],
        attrs=['partition=1', 'start=2048']))
    tb.add_from_string(block(
        f'{STICK}/sdt2', 'sdt2', ('8', '82'), 'partition', 6710886,
        props=['ID_FS_TYPE=ext4', 'ID_FS_USAGE=filesystem', 'ID_FS_VERSION=1.0',
               'ID_FS_LABEL=my_root', 'ID_FS_LABEL_ENC=my\\x20root'],
        attrs=['partition=2', 'start=526336']))
    tb.add_from_string('\n'.join([
        block(READER, 'sdu', ('8', '96'), 'disk', 0,
              props=['ID_BUS=usb', 'ID_VENDOR=Generic', 'ID_MODEL=STORAGE_DEVICE',
                     'ID_MODEL_ENC=STORAGE\\x20DEVICE\\x20\\x20', 'ID_DRIVE_FLASH_SD=1'],
              attrs=['removable=1']),
        parent(f'{PCI}/0000:00:14.0/usb1/1-2', 'usb', ['DEVTYPE=usb_device'])]))
    tb.add_from_string('\n'.join([
        block(SATA, 'sdv', ('8', '112'), 'disk', 976773168,
              props=['ID_BUS=ata', 'ID_MODEL=Samsung_SSD_870'],
              attrs=['queue/rotational=0']),
        parent(SATA.rsplit('/block/', 1)[0], 'scsi', ['DEVTYPE=scsi_device'],
               ['vendor=ATA', 'model=Samsung SSD 870'])]))
    tb.add_from_string('\n'.join([
        block(EMMC, 'mmcblk7', ('179', '0'), 'disk', 30535680, props=['ID_NAME=DA4032']),
        parent(EMMC.rsplit('/block/', 1)[0], 'mmc', ['MMC_TYPE=MMC'],
               ['type=MMC', 'name=DA4032'])]))
    tb.add_from_string('\n'.join([
        block(SDCARD, 'mmcblk8', ('179', '16'), 'disk', 124735488),
        parent(SDCARD.rsplit('/block/', 1)[0], 'mmc', ['MMC_TYPE=SD'],
               ['type=SD', 'name=SC64G'])]))
    tb.add_from_string('\n'.join([
        block(NVME, 'nvme3n1', ('259', '0'), 'disk', 1000215216,
              attrs=['queue/rotational=0']),
        parent(NVME.rsplit('/', 1)[0], 'nvme', [], ['model=WDC PC SN730'])]))
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


def test_display_names_and_icons(fake_daemon, client):
    devices = by_name(client)
    names = {name: (p['DisplayName'], p['IconName']) for name, p in devices.items()}
    assert names == {
        'sdt': ('SanDisk Ultra 32 GB', 'drive-removable-media-usb'),
        # Its partitions: their own size, the disk's icon.
        'sdt1': ('Partition 1 (268 MB) of SanDisk Ultra 32 GB', 'drive-removable-media-usb'),
        'sdt2': ('Partition 2 (3.4 GB) of SanDisk Ultra 32 GB', 'drive-removable-media-usb'),
        # A reader without a card: no size to show.
        'sdu': ('Generic STORAGE DEVICE', 'media-flash-sd'),
        'sdv': ('Samsung SSD 870 500 GB', 'drive-harddisk-solidstate'),
        'mmcblk7': ('DA4032 16 GB', 'media-flash'),
        'mmcblk8': ('SC64G 64 GB', 'media-flash-sd'),
        'nvme3n1': ('WDC PC SN730 512 GB', 'drive-harddisk-solidstate'),
    }


def test_contents_from_udev(fake_daemon, client):
    stick = by_name(client)['sdt']
    boot, root = stick['Contents']
    assert boot == {
        'name': 'sdt1', 'node': '/dev/sdt1', 'number': 1, 'offset': 2048 * 512,
        'size': 524288 * 512, 'label': 'BOOT', 'type': 'vfat', 'usage': 'filesystem',
        'version': 'FAT32', 'uuid': '1234-ABCD', 'partition-name': 'EFI system',
        'mount-points': [],
    }
    # Labels with spaces come from udev's encoded form.
    assert (root['number'], root['label'], root['type']) == (2, 'my root', 'ext4')
    assert root['size'] == 6710886 * 512
    # No medium, nothing to erase.
    assert by_name(client)['sdu']['Contents'] == []
