# SPDX-License-Identifier: GPL-2.0-or-later
'''The API reference (dbus/API.md), the introspection XML and what bmapd
really exports are kept in step: the same interfaces, methods, signals,
properties, argument types and option keys; every member and argument of
the XML documented for gdbus-codegen; every method taking descriptors
annotated for GUnixFDList; and the installed XML names no file that is not
installed.'''

import glob
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import bmapd_harness as h
from test_interface import contract, introspect

REFERENCE = os.path.join(h.HERE, '..', '..', 'dbus', 'API.md')
CODEGEN = '/usr/share/glib-2.0/codegen'
OUR_INTERFACES = {'org.bmapd.bmapd1.Manager', 'org.bmapd.bmapd1.Device', 'org.bmapd.bmapd1.Job',
                  'org.bmapd.bmapd1.AutoFlash'}


def reference_text():
    with open(REFERENCE) as f:
        return f.read()


def parse_reference(text):
    '''{interface: {('method'|'signal'|'property', name): details}} as
    test_interface.describe() gives it for the XML, and
    {(interface, method): {list title: {key, ...}}} for the option lists.'''
    members, options = {}, {}
    iface = section = method = title = None
    for line in text.splitlines():
        m = re.fullmatch(r'## Interface `([\w.]+)`', line)
        if m:
            iface, section, method = m.group(1), None, None
            members[iface] = {}
            continue
        if line.startswith('## '):
            iface = section = method = None
            continue
        if iface is None:
            continue
        m = re.fullmatch(r'### (Methods|Signals|Properties)', line)
        if m:
            section, method = m.group(1), None
            continue
        m = re.fullmatch(r'#### `(\w+)\(([^)]*)\)(?: → \(([^)]*)\))?`', line)
        if m:
            name = m.group(1)
            args = [a.split() for a in m.group(2).split(', ') if a]
            if section == 'Methods':
                outs = [a.split() for a in (m.group(3) or '').split(', ') if a]
                members[iface][('method', name)] = tuple(
                    [(n, t, 'in') for t, n in args] + [(n, t, 'out') for t, n in outs])
                method, title = name, None
            else:
                members[iface][('signal', name)] = tuple((n, t) for t, n in args)
                method = None
            continue
        m = re.fullmatch(r'\| `(\w+)` \| `([^`]+)` \|.*', line)
        if m and section == 'Properties':
            members[iface][('property', m.group(1))] = (m.group(2), 'read')
            continue
        if method is not None and re.fullmatch(r'[A-Z][\w ]*(\([^)]*\))?:', line):
            title = line.split(' (')[0].rstrip(':')
            continue
        m = re.match(r'- `([a-z][a-z-]*)` \(', line)
        if m and method is not None and title is not None:
            options.setdefault((iface, method), {}).setdefault(title, set()).add(m.group(1))
    return members, options


def xml_option_keys(doc):
    '''The keys a DocString lists: "bmap (h): ...", "serial, vendor, model (s): ..."'''
    keys = set()
    for m in re.finditer(r'((?:[a-z][a-z-]*, )*[a-z][a-z-]*) \(([a-z{}]+)[,)]', doc):
        keys.update(m.group(1).split(', '))
    return keys


def xml_docstrings():
    '''{(interface, method, arg): DocString} of the XML's arguments.'''
    out = {}
    root = ET.parse(h.interface_xml_path()).getroot()
    for iface in root.findall('interface'):
        for method in iface.findall('method'):
            for arg in method.findall('arg'):
                for a in arg.findall('annotation'):
                    if a.get('name') == 'org.gtk.GDBus.DocString':
                        out[(iface.get('name'), method.get('name'), arg.get('name'))] = \
                            a.get('value')
    return out


def xml_comment_option_keys(method):
    '''The quoted keys the gtk-doc comment of @method lists with a type:
    "bmap" (h), "serial", "vendor", "model" (s).'''
    with open(h.interface_xml_path()) as f:
        text = f.read()
    m = re.search(r'<!--((?:(?!-->).)*)-->\s*<method name="' + method + '"', text, re.S)
    assert m, f'no comment before {method}'
    keys = set()
    for group in re.finditer(r'((?:"[a-z][a-z-]*", )*"[a-z][a-z-]*") \([a-z{}]+[,):]',
                             m.group(1)):
        keys.update(k.strip('"') for k in group.group(1).split(', '))
    return keys


def test_reference_matches_the_xml():
    reference, _ = parse_reference(reference_text())
    xml = contract()
    assert set(reference) == set(xml) == OUR_INTERFACES
    for iface in OUR_INTERFACES:
        missing = set(xml[iface]) - set(reference[iface])
        extra = set(reference[iface]) - set(xml[iface])
        assert not missing, f'{iface}: in the XML, not in API.md: {sorted(missing)}'
        assert not extra, f'{iface}: in API.md, not in the XML: {sorted(extra)}'
        for key, details in xml[iface].items():
            assert reference[iface][key] == details, f'{iface} {key}: API.md and the XML differ'


def test_reference_lists_the_options_the_xml_documents():
    _, options = parse_reference(reference_text())
    docs = xml_docstrings()
    pairs = {
        ('Flash', 'options'): ('Flash', 'Options'),
        ('FlashMany', 'options'): ('FlashMany', 'Options'),
        ('Create', 'options'): ('Create', 'Options'),
        ('AddAutoFlash', 'options'): ('AddAutoFlash', 'Options'),
        ('AddAutoFlash', 'match'): ('AddAutoFlash', 'Match keys'),
    }
    documented = {}
    for (method, arg), (ref_method, title) in pairs.items():
        doc = docs.get(('org.bmapd.bmapd1.Manager', method, arg))
        assert doc, f'{method} @{arg} has no DocString in the XML'
        listed = options.get(('org.bmapd.bmapd1.Manager', ref_method), {}).get(title)
        assert listed, f'API.md lists no "{title}" for {method}'
        assert xml_option_keys(doc) == listed, f'{method} @{arg}: XML and API.md differ'
        documented.setdefault(method, set()).update(listed)
    # The XML's comments (what gdbus-codegen shows for the method) too.
    for method, keys in documented.items():
        assert xml_comment_option_keys(method) == keys, \
            f'{method}: the XML comment and its DocString/API.md list other keys'


def test_daemon_exports_what_the_reference_says(daemon, client, polkit, tmp_path, fds):
    '''The live objects (manager, a device, a job, an auto-flash rule)
    against the reference, member by member.'''
    reference, _ = parse_reference(reference_text())
    polkit.set_allowed([h.ACTION_CREATE, h.ACTION_AUTO_FLASH])
    img = tmp_path / 'ref.img'
    img.write_bytes(h.pattern('ref', 64 * 1024))
    job = client.create(fds(str(img)), fds(str(tmp_path / 'ref.bmap'), os.O_WRONLY | os.O_CREAT))
    client.wait_finished(job)
    rule = client.add_auto_flash(fds(str(img)), nobmap=True)
    paths = [h.MANAGER_PATH, job, rule]
    devices = list(client.devices())
    if devices:
        paths.append(devices[0])
    seen = set()
    for path in paths:
        for iface, members in introspect(client, path).items():
            assert iface in reference, f'{path} exports {iface}, which API.md does not describe'
            assert members == reference[iface], f'{iface} on {path} differs from API.md'
            seen.add(iface)
    client.call(rule, h.AUTOFLASH_IFACE, 'Remove')
    expected = OUR_INTERFACES if devices else OUR_INTERFACES - {'org.bmapd.bmapd1.Device'}
    assert seen == expected


@pytest.fixture
def codegen_parser():
    if not os.path.exists(os.path.join(CODEGEN, 'parser.py')):
        pytest.skip('gdbus-codegen is not installed (libglib2.0-dev-bin)')
    sys.path.insert(0, os.path.dirname(CODEGEN))
    try:
        from codegen import parser
    finally:
        sys.path.remove(os.path.dirname(CODEGEN))
    return parser


def test_everything_is_documented_for_gdbus_codegen(codegen_parser):
    '''gdbus-codegen reads documentation for every interface, method,
    signal, property and argument, and takes every method with file
    descriptors as a GUnixFDList one.'''
    with open(h.interface_xml_path()) as f:
        interfaces = codegen_parser.parse_dbus_xml(f.read(), h_type_implies_unix_fd=False)
    undocumented = []
    for iface in interfaces:
        iface.post_process('', 'Bmapd')
        if not iface.doc_string.strip() or not iface.doc_string_brief.strip():
            undocumented.append(iface.name)
        for m in iface.methods:
            if not m.doc_string.strip():
                undocumented.append(f'{iface.name}.{m.name}()')
            for a in m.in_args + m.out_args:
                if not a.doc_string.strip():
                    undocumented.append(f'{iface.name}.{m.name}() @{a.name}')
            takes_fds = any('h' in a.signature for a in m.in_args + m.out_args)
            assert m.unix_fd == takes_fds, \
                f'{iface.name}.{m.name}: org.gtk.GDBus.C.UnixFD must be set exactly when it takes h'
        for s in iface.signals:
            if not s.doc_string.strip():
                undocumented.append(f'{iface.name}::{s.name}')
            for a in s.args:
                if not a.doc_string.strip():
                    undocumented.append(f'{iface.name}::{s.name} @{a.name}')
        for p in iface.properties:
            if not p.doc_string.strip():
                undocumented.append(f'{iface.name}:{p.name}')
    assert not undocumented, f'no documentation for gdbus-codegen: {undocumented}'


def test_installed_xml_names_only_installed_files(tmp_path):
    '''Every file the XML's text mentions is installed (the reference
    beside it, the example configuration), by meson install.'''
    build = os.path.dirname(os.path.dirname(os.path.abspath(h.find_bmapd())))
    if not shutil.which('meson') or not os.path.isdir(os.path.join(build, 'meson-info')):
        pytest.skip(f'no meson build directory to install from ({build})')
    dest = str(tmp_path / 'dest')
    proc = subprocess.run(['meson', 'install', '-C', build, '--no-rebuild', '--quiet',
                           '--destdir', dest], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    installed = {os.path.basename(p) for p in glob.glob(os.path.join(dest, '**'), recursive=True)}
    [xml] = glob.glob(os.path.join(dest, '**', 'dbus-1', 'interfaces', 'org.bmapd.bmapd1.xml'),
                      recursive=True)
    with open(xml) as f:
        text = f.read()
    named = set(re.findall(r'\b([\w-]+(?:\.[\w-]+)*\.(?:md|conf|xml|policy|rules|service))\b',
                           text))
    assert 'org.bmapd.bmapd1.md' in named, 'the XML does not point to its reference'
    assert named <= installed, f'named in the XML, not installed: {sorted(named - installed)}'
    # The reference installed beside it is this tree's.
    with open(os.path.join(os.path.dirname(xml), 'org.bmapd.bmapd1.md')) as f:
        assert f.read() == reference_text()
