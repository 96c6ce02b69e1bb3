# SPDX-License-Identifier: GPL-2.0-or-later
'''Signed bmaps through bmapd: bmapctl checks the signature with the
user's keyring and passes the verified bmap as a sealed memfd plus the
signature ("bmap-signature"); bmapd checks the signature again against
its trusted keys (--trusted-keys-dir) on a worker thread and tells polkit
(bmap.signature, bmap.signer).'''

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from gi.repository import GLib

import bmapd_harness as h
from test_cli import assert_image_on, bmapctl  # noqa: F401 (a fixture)

GPG = shutil.which('gpg')
GPGCONF = shutil.which('gpgconf')
pytestmark = pytest.mark.skipif(GPG is None or GPGCONF is None,
                                reason='gpg and gpgconf (gnupg) are not installed')


class Keys:
    pass


@pytest.fixture(scope='module')
def keys(tmp_path_factory):
    '''home: the user's GnuPG home with keys "release" and "personal";
    trusted: bmapd's trusted-keys.d, with "release" only.'''
    base = tmp_path_factory.mktemp('gnupg')
    k = Keys()
    k.home = base / 'home'
    k.home.mkdir(mode=0o700)
    k.fpr = {}
    for name in ('release', 'personal'):
        uid = f'{name} <{name}@example.org>'
        h.gpg(k.home, '--quick-gen-key', uid, 'ed25519', 'sign', '1y')
        out = h.gpg(k.home, '--with-colons', '--list-keys', uid).decode()
        k.fpr[name] = re.search(r'^fpr:+([0-9A-F]{40}):', out, re.M).group(1)
    k.trusted = base / 'trusted-keys.d'
    k.trusted.mkdir()
    (k.trusted / 'release.asc').write_bytes(h.gpg(k.home, '--armor', '--export', k.fpr['release']))
    (k.trusted / 'README').write_text('not a key, and not read as one\n')
    yield k
    subprocess.run([GPGCONF, '--homedir', str(k.home), '--kill', 'all'], capture_output=True)


def sign(keys, name, path, clear=False):
    out = f'{path}.asc'
    h.gpg(keys.home, '--yes', '--local-user', keys.fpr[name],
        *(['--clearsign'] if clear else ['--armor', '--detach-sign']), '--output', out, path)
    return out


@pytest.fixture
def daemon(bus, client, polkit, tmp_path, keys):
    d = h.Daemon(bus, client, str(tmp_path), args=('--trusted-keys-dir', str(keys.trusted)))
    yield d
    rc = d.stop()
    print('---- bmapd log ----\n' + open(d.log_path).read())
    assert rc in (0, None, -15), f'bmapd exited with {rc}'


@pytest.fixture
def user(bmapctl, keys):  # noqa: F811
    '''bmapctl with the user's GnuPG home.'''
    bmapctl.env['GNUPGHOME'] = str(keys.home)
    return bmapctl


def flash_details(polkit):
    [(action, details, _, _, _, _)] = polkit.checks()
    assert action == h.ACTION_FLASH
    return details


@pytest.mark.loop
def test_signed_by_a_trusted_key(daemon, client, polkit, loop, image, keys, user):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    sign(keys, 'release', image['bmap'])
    proc = user('copy', image['path'], loop.node, check=0)
    assert f"good signature by release <release@example.org> (key {keys.fpr['release']})" \
        in proc.stderr
    assert_image_on(loop, image)
    details = flash_details(polkit)
    assert details['bmap.signature'] == 'trusted'
    assert details['bmap.signer'] == keys.fpr['release']


@pytest.mark.loop
def test_clearsigned_by_a_trusted_key(daemon, client, polkit, loop, image, keys, user):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    signed = sign(keys, 'release', image['bmap'], clear=True)
    user('copy', '--bmap', signed, image['path'], loop.node, check=0)
    assert_image_on(loop, image)
    details = flash_details(polkit)
    assert details['bmap.signature'] == 'trusted'
    assert details['bmap.signer'] == keys.fpr['release']


@pytest.mark.loop
def test_good_but_not_trusted_by_bmapd(daemon, client, polkit, loop, image, keys, user):
    # The user trusts the key; the administrator does not.
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    sign(keys, 'personal', image['bmap'])
    proc = user('copy', image['path'], loop.node, check=0)
    assert 'good signature by personal' in proc.stderr
    details = flash_details(polkit)
    assert details['bmap.signature'] == 'untrusted'
    assert 'bmap.signer' not in details
    assert 'unknown signer' in daemon.read_log()


@pytest.mark.loop
def test_unsigned(daemon, client, polkit, loop, image, user):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    user('copy', image['path'], loop.node, check=0)
    details = flash_details(polkit)
    assert details['bmap.signature'] == 'none'
    assert 'bmap.signer' not in details


@pytest.mark.loop
def test_trusted_signature_without_checksum_verification_is_not_trusted(
        daemon, client, polkit, loop, image, keys, user):
    # Without "verify" the image's bytes are not tied to the signed bmap.
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    sign(keys, 'release', image['bmap'])
    user('copy', '--no-verify', image['path'], loop.node, check=0)
    assert flash_details(polkit)['bmap.signature'] == 'untrusted'


@pytest.mark.loop
def test_bad_signature_is_refused_by_bmapctl_before_bmapd(daemon, client, polkit, loop, image,
                                                          keys, user):
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    before = loop.sha256()
    sign(keys, 'release', image['bmap'])
    with open(image['bmap'], 'a') as f:
        f.write('<!-- changed after signing -->\n')
    proc = user('copy', image['path'], loop.node, check=1)
    assert 'BAD signature' in proc.stderr and image['bmap'] in proc.stderr
    assert polkit.checks() == []
    assert loop.sha256() == before


def flash_with_signature(client, dev, image_fd, bmap_fd, sig_fd, **extra):
    opts = {'bmap': GLib.Variant('h', 1), 'bmap-signature': GLib.Variant('h', 2)}
    opts.update(extra)
    args = GLib.Variant('(oha{sv})', (dev, 0, opts))
    return client.call(h.MANAGER_PATH, h.MANAGER_IFACE, 'Flash', args,
                       [image_fd, bmap_fd, sig_fd])[0]


@pytest.mark.loop
@pytest.mark.parametrize('clear', [False, True], ids=['detached', 'clearsigned'])
def test_signature_of_another_bmap_is_untrusted(daemon, client, polkit, loop, image, keys, fds,
                                                tmp_path, clear):
    # A caller other than bmapctl passes a trusted signature with a bmap it
    # did not sign: bmapd checks the bytes it parses, not the caller's word.
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    signed_bmap = str(tmp_path / 'signed.bmap')
    shutil.copy(image['bmap'], signed_bmap)
    with open(signed_bmap, 'a') as f:
        f.write('<!-- another bmap -->\n')
    sig = sign(keys, 'release', signed_bmap, clear=clear)
    job = flash_with_signature(client, dev, fds(image['path']), fds(image['bmap']), fds(sig))
    assert client.wait_finished(job)[0] == 'done'
    assert flash_details(polkit)['bmap.signature'] == 'untrusted'


@pytest.mark.loop
def test_signature_without_bmap_is_invalid(daemon, client, polkit, loop, image, keys, fds):
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    sig = sign(keys, 'release', image['bmap'])
    args = GLib.Variant('(oha{sv})', (dev, 0, {'nobmap': GLib.Variant('b', True),
                                               'bmap-signature': GLib.Variant('h', 1)}))
    with pytest.raises(h.DBusCallError) as e:
        client.call(h.MANAGER_PATH, h.MANAGER_IFACE, 'Flash', args,
                    [fds(image['path']), fds(sig)])
    assert e.value.name == h.ERROR + 'InvalidArgument'
    assert 'bmap-signature' in e.value.message


def pad_bmap(path, size):
    """A valid bmap of @size bytes or more: a comment, and the file's own
    checksum computed again (zeros in its place while hashing)."""
    text = open(path).read()
    old = re.search(r'<BmapFileChecksum>\s*([0-9a-f]+)\s*</BmapFileChecksum>', text).group(1)
    comment = '<!--\n' + 'padding padding padding padding padding padding padding\n' * (size // 56) + '-->\n'
    text = text.replace('<bmap ', comment + '<bmap ', 1).replace(old, '0' * len(old))
    digest = hashlib.sha256(text.encode()).hexdigest()
    with open(path, 'w') as f:
        f.write(text.replace('0' * len(old), digest, 1))


@pytest.mark.loop
def test_large_clearsigned_bmap(daemon, client, polkit, loop, image, keys, user):
    # Bigger than a detached signature can be, as bmaps of large images are.
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    pad_bmap(image['bmap'], 3 * h.MiB)
    signed = sign(keys, 'release', image['bmap'], clear=True)
    user('copy', '--bmap', signed, image['path'], loop.node, check=0)
    assert_image_on(loop, image)
    assert flash_details(polkit)['bmap.signature'] == 'trusted'


@pytest.fixture
def stuck_gpg(tmp_path):
    '''A gpg for bmapd whose verifications never end (GPGME runs the gpg
    that the gpgconf on PATH names); its processes are killed at the end.'''
    d = tmp_path / 'stuck-gpg'
    d.mkdir()
    pids = d / 'pids'
    (d / 'gpgconf').write_text(f'''#!/bin/sh
if [ "$1" = --list-components ]; then
  /usr/bin/gpgconf --list-components | sed 's|:/usr/bin/gpg$|:{d}/gpg|'
else
  exec /usr/bin/gpgconf "$@"
fi
''')
    (d / 'gpg').write_text(f'''#!/bin/sh
for a in "$@"; do
  if [ "$a" = --verify ]; then echo $$ >> {pids}; exec sleep 300; fi
done
exec /usr/bin/gpg "$@"
''')
    for name in ('gpgconf', 'gpg'):
        os.chmod(d / name, 0o755)
    yield d, pids
    if pids.exists():
        for pid in pids.read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def refusal_of_a_call(client, fds, image):
    '''The error of a Flash call onto no device: Limit while the caller has
    no place left (checked first), DeviceGone otherwise.'''
    args = GLib.Variant('(oha{sv})', (h.DEVICE_PREFIX + 'nosuchdisk', 0,
                                      {'nobmap': GLib.Variant('b', True)}))
    with pytest.raises(h.DBusCallError) as e:
        client.call(h.MANAGER_PATH, h.MANAGER_IFACE, 'Flash', args, [fds(image['path'])])
    return e.value


@pytest.mark.loop
def test_stuck_check_gives_up_and_leaves_the_loop_free(bus, client, polkit, loop, image, keys,
                                                       user, tmp_path, stuck_gpg, fds):
    gpg_dir, pids = stuck_gpg
    # bmapd's private GnuPG homes go to a directory of this test.
    homes = tmp_path / 'tmp'
    homes.mkdir()
    # One call at a time for root, bmapctl's and this test's uid.
    d = h.Daemon(bus, client, str(tmp_path), config='[Daemon]\nMaxRequestsPerUser=1\n',
                 args=('--trusted-keys-dir', str(keys.trusted)),
                 env={'PATH': f'{gpg_dir}:{os.environ["PATH"]}', 'TMPDIR': str(homes)})
    try:
        polkit.set_allowed([h.ACTION_FLASH])
        client.wait_device(loop.node)
        sign(keys, 'release', image['bmap'])
        proc = user.spawn('copy', image['path'], loop.node, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
        h.wait_until(lambda: pids.exists() and pids.read_text(), 60,
                     "bmapd's gpg to be verifying")
        # gpg is stuck in bmapd's worker: the event loop still answers.
        assert client.wait_device(loop.node)
        assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'Version')
        # After the cap the signature is untrusted and the flash goes on.
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert_image_on(loop, image)
        assert flash_details(polkit)['bmap.signature'] == 'untrusted'
        assert 'the signature check took longer than 30 s' in d.read_log()
        # The worker given up on still holds its caller's place, as a reader
        # thread past its deadline does: stuck checks cannot pile up.
        refused = refusal_of_a_call(client, fds, image)
        assert refused.name == h.ERROR + 'Limit', refused
        assert 'MaxRequestsPerUser=1' in refused.message
        # The gpg given up on can be stopped: it did not inherit bmapd's
        # blocked SIGTERM (systemd stops the service's processes with it).
        pid = int(pids.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        h.wait_until(lambda: not os.path.exists(f'/proc/{pid}') or
                     open(f'/proc/{pid}/stat').read().split()[2] == 'Z', 20,
                     f'the stuck gpg {pid} to end on SIGTERM')
        # The worker given up on then finishes, and removes its GnuPG home.
        h.wait_until(lambda: not os.listdir(homes), 20, f'bmapd to remove its GnuPG home '
                     f'{os.listdir(homes)}')
        # Then the place is given back.
        h.wait_until(lambda: refusal_of_a_call(client, fds, image).name != h.ERROR + 'Limit', 20,
                     'the stuck check to give back its place')
        assert refusal_of_a_call(client, fds, image).name == h.ERROR + 'DeviceGone'
    finally:
        d.stop()


def http_site(root):
    sys.path.insert(0, os.path.join(h.HERE, '..', 'cli'))
    from url_servers import http_server
    return http_server(root)


@pytest.mark.loop
@pytest.mark.parametrize('clear', [False, True], ids=['asc-beside', 'clearsigned'])
def test_signed_bmap_from_a_url(daemon, client, polkit, loop, image, keys, user, tmp_path,
                                clear):
    # bmapctl verifies the bmap fetched over http (its .asc fetched beside
    # it) and hands bmapd the verified bytes and the signature, as for a
    # local bmap: bmapd trusts it by its own keys.
    polkit.set_allowed([h.ACTION_FLASH])
    client.wait_device(loop.node)
    signed = sign(keys, 'release', image['bmap'], clear=clear)
    with http_site(tmp_path) as site:
        bmap_args = ['--bmap', f'{site.url}/{os.path.basename(signed)}'] if clear else []
        proc = user('copy', *bmap_args, f'{site.url}/disk.img', loop.node, check=0)
    bmap_url = f'{site.url}/{os.path.basename(signed if clear else image["bmap"])}'
    assert f'{bmap_url}: good signature by release <release@example.org>' in proc.stderr
    assert_image_on(loop, image)
    details = flash_details(polkit)
    assert details['bmap.signature'] == 'trusted'
    assert details['bmap.signer'] == keys.fpr['release']
