# SPDX-License-Identifier: GPL-2.0-or-later
'''The daemon's objects against dbus/org.bmapd.bmapd1.xml, the contract.'''

import os
import subprocess
import xml.etree.ElementTree as ET

import bmapd_harness as h

STANDARD = ('org.freedesktop.DBus.',)


def describe(node):
    '''{interface: {('method'|'signal'|'property', name): signature details}}'''
    out = {}
    for iface in node.findall('interface'):
        name = iface.get('name')
        if name.startswith(STANDARD):
            continue
        members = {}
        for m in iface.findall('method'):
            members[('method', m.get('name'))] = tuple(
                (a.get('name'), a.get('type'), a.get('direction', 'in'))
                for a in m.findall('arg'))
        for s in iface.findall('signal'):
            members[('signal', s.get('name'))] = tuple(
                (a.get('name'), a.get('type')) for a in s.findall('arg'))
        for p in iface.findall('property'):
            members[('property', p.get('name'))] = (p.get('type'), p.get('access'))
        out[name] = members
    return out


def introspect(client, path):
    xml = client.call(path, 'org.freedesktop.DBus.Introspectable', 'Introspect')[0]
    return describe(ET.fromstring(xml))


def contract():
    return describe(ET.parse(h.interface_xml_path()).getroot())


def test_objects_match_the_xml(daemon, client, polkit, tmp_path, fds):
    # A job to look at: Create needs no device.
    polkit.set_allowed([h.ACTION_CREATE])
    img = tmp_path / 'i.img'
    img.write_bytes(h.pattern('iface', 64 * 1024))
    job = client.create(fds(str(img)), fds(str(tmp_path / 'i.bmap'), os.O_WRONLY | os.O_CREAT))
    client.wait_finished(job)

    paths = [h.MANAGER_PATH, job]
    devices = list(client.devices())
    if devices:
        paths.append(devices[0])
    expected = contract()
    seen = set()
    for path in paths:
        live = introspect(client, path)
        for iface, members in live.items():
            assert iface in expected, f'{path} has {iface}, which the XML does not describe'
            assert members == expected[iface], f'{iface} on {path} differs from the XML'
            seen.add(iface)
    assert {'org.bmapd.bmapd1.Manager', 'org.bmapd.bmapd1.Job'} <= seen
    if devices:
        assert 'org.bmapd.bmapd1.Device' in seen


def test_xml_is_the_installed_contract():
    '''Every interface of the contract is in the XML.'''
    assert set(contract()) == {'org.bmapd.bmapd1.Manager', 'org.bmapd.bmapd1.Device',
                               'org.bmapd.bmapd1.Job', 'org.bmapd.bmapd1.AutoFlash'}


def test_manager_properties(daemon, client):
    props = client.get_all(h.MANAGER_PATH, h.MANAGER_IFACE)
    version = subprocess.run([h.find_bmapd(), '--version'], capture_output=True, text=True,
                             check=True).stdout.split()[-1]
    assert props['Version'] == version
    assert props['AutoFlashArmed'] is False


def test_object_manager_lists_devices(daemon, client):
    objects = client.managed_objects()
    for path, ifaces in objects.items():
        if h.DEVICE_IFACE in ifaces:
            props = ifaces[h.DEVICE_IFACE]
            assert path == h.DEVICE_PREFIX + props['Name'] or path.startswith(h.DEVICE_PREFIX)
            assert props['Node'].startswith('/dev/')
            assert props['Job'] == '/'
            # Whole disks, and partitions of disks that are listed too.
            if os.path.exists(f'/sys/class/block/{props["Name"]}/partition'):
                assert props['PartitionOf'] in objects and props['PartitionNumber'] > 0
            else:
                assert props['PartitionOf'] == '/' and props['PartitionNumber'] == 0
