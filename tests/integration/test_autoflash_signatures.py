# SPDX-License-Identifier: GPL-2.0-or-later
'''`bmapctl auto-flash` checks the bmap's signature as copy does (BMAP.asc
or BMAP.sig beside it, --bmap-sig, a clearsigned bmap, --fingerprint,
--keyring, --no-sig-verify) before it arms the rule, and hands bmapd the
verified bytes: a bad signature arms no rule. Cards are loop devices seen
through systemd-udevd (the fixtures of test_autoflash_loop.py).'''

import re
import shutil
import subprocess

import pytest

import bmapd_harness as h
from test_autoflash_loop import (CARD, assert_written, daemon, image,  # noqa: F401
                                 readers, udevd)
from test_cli import bmapctl  # noqa: F401

GPG = shutil.which('gpg')
GPGCONF = shutil.which('gpgconf')
pytestmark = [pytest.mark.loop,
              pytest.mark.skipif(GPG is None or GPGCONF is None,
                                 reason='gpg and gpgconf (gnupg) are not installed')]

SIZE_ARGS = ['--allow-non-removable', '--min-size', str(CARD), '--max-size', str(CARD)]


class Keys:
    pass


@pytest.fixture(scope='module')
def keys(tmp_path_factory):
    '''home: the user's GnuPG home with the keys "release" and "other".'''
    base = tmp_path_factory.mktemp('gnupg')
    k = Keys()
    k.home = base / 'home'
    k.home.mkdir(mode=0o700)
    k.fpr = {}
    for name in ('release', 'other'):
        uid = f'{name} <{name}@example.org>'
        h.gpg(k.home, '--quick-gen-key', uid, 'ed25519', 'sign', '1y')
        out = h.gpg(k.home, '--with-colons', '--list-keys', uid).decode()
        k.fpr[name] = re.search(r'^fpr:+([0-9A-F]{40}):', out, re.M).group(1)
    yield k
    subprocess.run([GPGCONF, '--homedir', str(k.home), '--kill', 'all'], capture_output=True)


def sign(keys, path, mode, out=None, key='release'):
    flag = {'asc': ['--armor', '--detach-sign'], 'clear': ['--clearsign']}[mode]
    out = out or f'{path}.asc'
    h.gpg(keys.home, '--yes', '--local-user', keys.fpr[key], *flag, '--output', str(out), str(path))
    return str(out)


def sign_another_bmap(keys, image, tmp_path):
    '''BMAP.asc beside the bmap, but a signature of other bytes.'''
    other = tmp_path / 'other.bmap'
    other.write_bytes(open(image['bmap'], 'rb').read() + b'\n')
    return sign(keys, other, 'asc', out=f"{image['bmap']}.asc")


def rules(client):
    return {p: i[h.AUTOFLASH_IFACE] for p, i in client.managed_objects().items()
            if h.AUTOFLASH_IFACE in i}


def auto_flash(bmapctl, keys, *args, check=None):
    bmapctl.env['GNUPGHOME'] = str(keys.home)
    return bmapctl('auto-flash', '--keep', *SIZE_ARGS, *args, check=check)


def test_bad_signature_arms_no_rule(daemon, client, polkit, image, bmapctl, keys, tmp_path):
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    sign_another_bmap(keys, image, tmp_path)
    proc = auto_flash(bmapctl, keys, image['path'])
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    for word in (image['bmap'], f"{image['bmap']}.asc", 'BAD signature', keys.fpr['release']):
        assert word in proc.stderr, proc.stderr
    assert not rules(client)
    # Unless the user says not to check.
    proc = auto_flash(bmapctl, keys, '--no-sig-verify', image['path'], check=0)
    assert len(rules(client)) == 1


def test_fingerprint_and_keyring_are_checked(daemon, client, polkit, image, bmapctl, keys,
                                             tmp_path):
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    sig = sign(keys, image['bmap'], 'asc', out=tmp_path / 'elsewhere.asc')
    proc = auto_flash(bmapctl, keys, '--bmap-sig', sig, '--fingerprint', keys.fpr['other'],
                      image['path'], check=1)
    assert 'not signed by the requested key' in proc.stderr
    # A keyring without the signer's key.
    keyring = tmp_path / 'other.gpg'
    keyring.write_bytes(h.gpg(keys.home, '--export', keys.fpr['other']))
    proc = auto_flash(bmapctl, keys, '--bmap-sig', sig, '--keyring', keyring, image['path'],
                      check=1)
    assert str(keyring) in proc.stderr
    # No signature, but one is asked for.
    proc = auto_flash(bmapctl, keys, '--fingerprint', keys.fpr['release'], image['path'],
                      check=1)
    assert 'no signature found' in proc.stderr
    assert not rules(client)
    proc = auto_flash(bmapctl, keys, '--bmap-sig', sig, '--fingerprint', keys.fpr['release'],
                      image['path'], check=0)
    assert 'good signature by release <release@example.org>' in proc.stderr
    assert len(rules(client)) == 1


def test_clearsigned_bmap_flashes_the_verified_text(daemon, client, polkit, readers, image,
                                                    bmapctl, keys, tmp_path):
    # bmapd gets the text GnuPG verified, not the clearsigned file (which
    # it would not parse), and every card is flashed with it.
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    signed = sign(keys, image['bmap'], 'clear', out=tmp_path / 'signed.bmap')
    proc = auto_flash(bmapctl, keys, '--bmap', signed, '--description', 'signed',
                      image['path'], check=0)
    assert f'{signed}: good signature by release' in proc.stderr
    [rule] = rules(client)
    card = readers()
    h.wait_until(lambda: client.get(rule, h.AUTOFLASH_IFACE, 'Flashed') == 1, timeout=60,
                 what='the card flashed')
    assert_written(card, image)
    bmapctl('auto-flash', '--remove', rule, check=0)
