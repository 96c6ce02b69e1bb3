# SPDX-License-Identifier: GPL-2.0-or-later
"""Signed bmaps, as bmaptool copy checks them (its tests/test_CLI.py cases
and more): detached .asc/.sig found next to the bmap or given with
--bmap-sig, clearsigned bmaps, --no-sig-verify, --fingerprint, --keyring,
and bad, unknown, expired and revoked signers. The keys are made here, in
temporary GnuPG homes, with gpg --batch --quick-gen-key."""

import gzip
import hashlib
import os
import random
import re
import shutil
import subprocess
import tempfile

import pytest
from url_servers import Handler, http_server

BMAPCTL = os.environ.get("BMAPCTL", "bmapctl")
GPG = shutil.which("gpg")
GPGCONF = shutil.which("gpgconf")

pytestmark = pytest.mark.skipif(GPG is None or GPGCONF is None,
                                reason="gpg and gpgconf (gnupg) are not installed")


def gpg(home, *args, check=True, env_extra=None):
    env = dict(os.environ, GNUPGHOME=str(home))
    env.update(env_extra or {})
    proc = subprocess.run([GPG, "--batch", "--no-tty", "--pinentry-mode", "loopback",
                           "--passphrase", "", *args],
                          capture_output=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"gpg {args} failed: {proc.stderr.decode(errors='replace')}")
    return proc


def new_home(parent, name):
    home = parent / name
    home.mkdir(mode=0o700)
    return home


def gen_key(home, uid, faked_time=None):
    """A signing key; with @faked_time made then, valid one year from then."""
    extra = ["--faked-system-time", faked_time] if faked_time else []
    gpg(home, *extra, "--quick-gen-key", uid, "ed25519", "sign", "1y")
    out = gpg(home, "--with-colons", "--list-keys", uid).stdout.decode()
    return re.search(r"^fpr:+([0-9A-F]{40}):", out, re.M).group(1)


class Keys:
    pass


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """home: the user's GnuPG home, with the keys "correct", "expired" and
    "revoked"; other: a home whose key "unknown" the user does not have."""
    base = tmp_path_factory.mktemp("gnupg")
    k = Keys()
    k.home = new_home(base, "home")
    k.other = new_home(base, "other")
    k.correct = gen_key(k.home, "correct <foo@bar.org>")
    k.unknown = gen_key(k.other, "unknown <blub@bla.net>")
    # Made in 2020, valid for a year; its signatures are made in 2020 too.
    k.expired_time = "20200601T000000!"
    k.expired = gen_key(k.home, "expired <old@bar.org>", faked_time="20200101T000000!")
    k.revoked = gen_key(k.home, "revoked <gone@bar.org>")
    rev = (k.home / "openpgp-revocs.d" / f"{k.revoked}.rev").read_text()
    k.revocation = rev.replace(":-----BEGIN PGP PUBLIC KEY BLOCK", "-----BEGIN PGP PUBLIC KEY BLOCK")
    # The keyring file for --keyring, binary as gpg --export writes it.
    k.keyring = base / "correct.gpg"
    k.keyring.write_bytes(gpg(k.home, "--export", k.correct).stdout)
    yield k
    for home in (k.home, k.other):
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"], capture_output=True)


def sign(keys, home, fpr, path, mode, out=None, faked_time=None):
    """mode: "asc" (armored detached), "sig" (binary detached), "clear"."""
    if out is None:
        out = f"{path}.{mode}" if mode != "clear" else f"{path}.asc"
    flag = {"asc": ["--armor", "--detach-sign"], "sig": ["--detach-sign"],
            "clear": ["--clearsign"]}[mode]
    extra = ["--faked-system-time", faked_time] if faked_time else []
    gpg(home, *extra, "--yes", "--local-user", fpr, *flag, "--output", str(out), str(path))
    return out


def make_image(path, size=256 * 1024):
    rng = random.Random(size)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in (0, 100 * 1024):
            f.seek(off)
            f.write(bytes(rng.randrange(256) for _ in range(20000)))


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def image(tmp_path):
    """img.gz with img.bmap beside it (as in the issue), and the raw image."""
    raw = tmp_path / "raw.img"
    make_image(raw)
    bmap = tmp_path / "img.bmap"
    subprocess.run([BMAPCTL, "-q", "create", "-o", str(bmap), str(raw)], check=True)
    packed = tmp_path / "img.gz"
    packed.write_bytes(gzip.compress(raw.read_bytes()))
    return raw, packed, bmap


def copy(keys, *args, home=None, cwd=None):
    env = dict(os.environ, GNUPGHOME=str(home if home is not None else keys.home))
    return subprocess.run([BMAPCTL, "copy", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd)


def assert_copied(proc, raw, out):
    assert proc.returncode == 0, proc.stderr
    assert digest(out) == digest(raw)


def assert_refused(proc, out, *words):
    assert proc.returncode == 1, proc.stderr
    assert not os.path.exists(out), "the destination was written despite the signature"
    for w in words:
        assert w in proc.stderr, f"{w!r} not in {proc.stderr!r}"


def good_line(keys, bmap):
    return f"{bmap}: good signature by correct <foo@bar.org> (key {keys.correct})"


@pytest.mark.parametrize("mode", ["asc", "sig"])
def test_good_detached_signature_found_next_to_the_bmap(keys, image, tmp_path, mode):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, mode)
    out = tmp_path / "out.img"
    proc = copy(keys, packed, out)
    assert_copied(proc, raw, out)
    assert good_line(keys, bmap) in proc.stderr


def test_asc_is_preferred_to_sig(keys, image, tmp_path):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    (tmp_path / "img.bmap.sig").write_bytes(b"not a signature")
    out = tmp_path / "out.img"
    assert_copied(copy(keys, packed, out), raw, out)


def test_explicit_bmap_sig(keys, image, tmp_path):
    raw, packed, bmap = image
    sig = sign(keys, keys.home, keys.correct, bmap, "asc", out=tmp_path / "elsewhere.asc")
    out = tmp_path / "out.img"
    proc = copy(keys, "--bmap", bmap, "--bmap-sig", sig, packed, out)
    assert_copied(proc, raw, out)
    assert good_line(keys, bmap) in proc.stderr


def test_bmaptool_lines_when_run_as_bmaptool(keys, image, tmp_path):
    # test_CLI.py looks for "successfully verified bmap file signature".
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    exe = tmp_path / "bmaptool"
    exe.symlink_to(os.path.abspath(BMAPCTL))
    out = tmp_path / "out.img"
    proc = subprocess.run([str(exe), "copy", str(packed), str(out)], capture_output=True,
                          text=True, env=dict(os.environ, GNUPGHOME=str(keys.home)))
    assert_copied(proc, raw, out)
    assert f"bmaptool: info: discovered signature file for bmap '{bmap}.asc'" in proc.stderr
    assert ("bmaptool: info: successfully verified bmap file signature of correct <foo@bar.org> "
            f"(fingerprint {keys.correct})") in proc.stderr


def test_quiet_prints_no_signer(keys, image, tmp_path):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    out = tmp_path / "out.img"
    env = dict(os.environ, GNUPGHOME=str(keys.home))
    proc = subprocess.run([BMAPCTL, "-q", "copy", str(packed), str(out)], capture_output=True,
                          text=True, env=env)
    assert_copied(proc, raw, out)
    assert proc.stderr == ""


def change_bmap(bmap, raw):
    """Still a valid bmap of the image, but not the one that was signed."""
    subprocess.run([BMAPCTL, "-q", "create", "--no-checksum", "-o", str(bmap), str(raw)],
                   check=True)


def test_bad_asc_next_to_image_and_bmap_is_refused(keys, image, tmp_path):
    # The case: img.gz, img.bmap and a bad img.bmap.asc side by side.
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    change_bmap(bmap, raw)
    out = tmp_path / "out.img"
    assert_refused(copy(keys, packed, out), out, str(bmap), keys.correct, "BAD signature",
                   "correct <foo@bar.org>", "img.bmap.asc")


def test_bad_explicit_signature_is_refused(keys, image, tmp_path):
    # test_CLI.py's test_wrong_signature: a signature of another bmap.
    raw, packed, bmap = image
    other = tmp_path / "other.bmap"
    shutil.copy(bmap, other)
    change_bmap(other, raw)
    sig = sign(keys, keys.home, keys.correct, other, "asc")
    out = tmp_path / "out.img"
    assert_refused(copy(keys, "--bmap", bmap, "--bmap-sig", sig, packed, out), out, str(bmap),
                   keys.correct, "BAD signature")


def test_unknown_signer_is_refused(keys, image, tmp_path):
    raw, packed, bmap = image
    sign(keys, keys.other, keys.unknown, bmap, "asc")
    out = tmp_path / "out.img"
    assert_refused(copy(keys, packed, out), out, str(bmap), keys.unknown, "unknown signer",
                   str(keys.home))


def test_wrong_signature_of_unknown_signer_is_refused(keys, image, tmp_path):
    raw, packed, bmap = image
    sig = sign(keys, keys.other, keys.unknown, bmap, "asc", out=tmp_path / "u.asc")
    change_bmap(bmap, raw)
    out = tmp_path / "out.img"
    assert_refused(copy(keys, "--bmap-sig", sig, packed, out), out, str(bmap), keys.unknown)


def uncertified_home(keys, tmp_path):
    """The user's home with the unknown key imported but not certified."""
    home = tmp_path / "uncertified-home"
    shutil.copytree(keys.home, home, ignore=shutil.ignore_patterns("S.*"))
    exported = tmp_path / "unknown.gpg"
    exported.write_bytes(gpg(keys.other, "--export", keys.unknown).stdout)
    gpg(home, "--import", str(exported))
    return home


def test_key_in_the_keyring_but_not_valid_is_refused(keys, image, tmp_path):
    raw, packed, bmap = image
    sign(keys, keys.other, keys.unknown, bmap, "asc")
    home = uncertified_home(keys, tmp_path)
    out = tmp_path / "out.img"
    try:
        assert_refused(copy(keys, packed, out, home=home), out, str(bmap), keys.unknown,
                       "blub@bla.net", "is good, but the key is not valid")
        # Certified by the user, it is.
        gpg(home, "--quick-lsign-key", keys.unknown)
        assert_copied(copy(keys, packed, out, home=home), raw, out)
    finally:
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"], capture_output=True)


def test_expired_key_is_refused(keys, image, tmp_path):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.expired, bmap, "asc", faked_time=keys.expired_time)
    out = tmp_path / "out.img"
    assert_refused(copy(keys, packed, out), out, str(bmap), keys.expired, "which expired on 2020-12-31")


def test_revoked_key_is_refused(keys, image, tmp_path):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.revoked, bmap, "asc")
    # Revoked after signing, as a leaked key would be.
    home = tmp_path / "home"
    shutil.copytree(keys.home, home, ignore=shutil.ignore_patterns("S.*"))
    rev = tmp_path / "revoke.asc"
    rev.write_text(keys.revocation)
    gpg(home, "--import", str(rev))
    out = tmp_path / "out.img"
    try:
        assert_refused(copy(keys, packed, out, home=home), out, str(bmap), keys.revoked,
                       "revoked")
        # The same signature was good before the revocation.
        assert_copied(copy(keys, packed, out), raw, out)
    finally:
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"], capture_output=True)


def test_clearsigned_bmap(keys, image, tmp_path):
    # test_CLI.py's test_clearsign: the clearsigned bmap is given as --bmap.
    raw, packed, bmap = image
    signed = sign(keys, keys.home, keys.correct, bmap, "clear")
    out = tmp_path / "out.img"
    proc = copy(keys, "--bmap", signed, packed, out)
    assert_copied(proc, raw, out)
    assert good_line(keys, signed) in proc.stderr


def test_clearsigned_bmap_changed_after_signing_is_refused(keys, image, tmp_path):
    raw, packed, bmap = image
    signed = sign(keys, keys.home, keys.correct, bmap, "clear")
    with open(signed) as f:
        text = f.read()
    with open(signed, "w") as f:
        f.write(text.replace("<!--", "<!-- changed after signing,", 1))
    out = tmp_path / "out.img"
    assert_refused(copy(keys, "--bmap", signed, packed, out), out, str(signed), keys.correct,
                   "BAD signature")


def test_clearsigned_bmap_parses_only_what_gpg_verified(keys, image, tmp_path):
    # Text after the signature is not signed; it must not reach the parser.
    raw, packed, bmap = image
    signed = sign(keys, keys.home, keys.correct, bmap, "clear")
    with open(signed, "a") as f:
        f.write("<BmapRange>garbage that would not parse</BmapRange>\n")
    out = tmp_path / "out.img"
    assert_copied(copy(keys, "--bmap", signed, packed, out), raw, out)


def test_clearsigned_bmap_of_unknown_signer_is_refused(keys, image, tmp_path):
    raw, packed, bmap = image
    signed = sign(keys, keys.other, keys.unknown, bmap, "clear")
    out = tmp_path / "out.img"
    assert_refused(copy(keys, "--bmap", signed, packed, out), out, str(signed), keys.unknown,
                   "unknown signer")


def test_no_sig_verify_with_clearsigned_bmap(keys, image, tmp_path):
    # The signer is unknown and not checked, but the bmap still has to be
    # taken out of its clearsigned envelope. (bmaptool 3.9 refuses here:
    # it extracts the text by verifying, and fails on the unknown key.)
    raw, packed, bmap = image
    signed = sign(keys, keys.other, keys.unknown, bmap, "clear")
    out = tmp_path / "out.img"
    proc = copy(keys, "--no-sig-verify", "--bmap", signed, packed, out)
    assert_copied(proc, raw, out)
    assert "signature" not in proc.stderr


def test_no_sig_verify_ignores_a_bad_detached_signature(keys, image, tmp_path):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    change_bmap(bmap, raw)
    out = tmp_path / "out.img"
    assert_copied(copy(keys, "--no-sig-verify", packed, out), raw, out)


def test_fingerprint_matching(keys, image, tmp_path):
    raw, packed, bmap = image
    signed = sign(keys, keys.home, keys.correct, bmap, "clear")
    out = tmp_path / "out.img"
    proc = copy(keys, "--bmap", signed, "--fingerprint", keys.correct, packed, out)
    assert_copied(proc, raw, out)
    assert good_line(keys, signed) in proc.stderr
    # Any case, as gpg prints it with spaces.
    spaced = " ".join(keys.correct[i:i + 4] for i in range(0, 40, 4)).lower()
    out.unlink()
    assert_copied(copy(keys, "--bmap", signed, "--fingerprint", spaced, packed, out), raw, out)


def test_fingerprint_not_matching(keys, image, tmp_path):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    out = tmp_path / "out.img"
    assert_refused(copy(keys, "--fingerprint", keys.revoked, packed, out), out, str(bmap),
                   keys.revoked, keys.correct, "not signed by the requested key")
    # A key id (the fingerprint's tail) is not the fingerprint.
    assert_refused(copy(keys, "--fingerprint", keys.correct[-16:], packed, out), out,
                   "not signed by the requested key")


def test_fingerprint_without_signature(keys, image, tmp_path):
    raw, packed, bmap = image
    out = tmp_path / "out.img"
    assert_refused(copy(keys, "--fingerprint", keys.correct, packed, out), out, str(bmap),
                   "no signature found", "--fingerprint")


def test_keyring_only(keys, image, tmp_path):
    # test_CLI.py's test_valid_signature_fingerprint_keyring: the user's
    # home has no key; the keyring file has it.
    raw, packed, bmap = image
    signed = sign(keys, keys.home, keys.correct, bmap, "clear")
    empty = new_home(tmp_path, "empty-home")
    out = tmp_path / "out.img"
    proc = copy(keys, "--bmap", signed, "--fingerprint", keys.correct, "--keyring", keys.keyring,
                packed, out, home=empty)
    assert_copied(proc, raw, out)
    assert good_line(keys, signed) in proc.stderr
    assert os.listdir(empty) == [], "the default GnuPG home was used"


def test_keyring_may_be_a_keybox(keys, image, tmp_path):
    # bmaptool hands --keyring to gpgv, which reads GnuPG's pubring.kbx too.
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    kbx = tmp_path / "pubring.kbx"
    shutil.copy(keys.home / "pubring.kbx", kbx)
    kept = kbx.read_bytes()
    empty = new_home(tmp_path, "empty-home")
    out = tmp_path / "out.img"
    proc = copy(keys, "--keyring", kbx, packed, out, home=empty)
    assert_copied(proc, raw, out)
    assert good_line(keys, bmap) in proc.stderr
    assert kbx.read_bytes() == kept
    assert os.listdir(empty) == []


def test_keyring_is_the_only_trust(keys, image, tmp_path):
    # Signed by a key of the user's home, but --keyring does not hold it.
    raw, packed, bmap = image
    sign(keys, keys.home, keys.revoked, bmap, "asc")
    out = tmp_path / "out.img"
    assert_refused(copy(keys, "--keyring", keys.keyring, packed, out), out, str(bmap),
                   keys.revoked, "unknown signer", f"keyring {keys.keyring}")


def test_keyring_without_signature(keys, image, tmp_path):
    raw, packed, bmap = image
    out = tmp_path / "out.img"
    assert_refused(copy(keys, "--keyring", keys.keyring, packed, out), out, "no signature found",
                   "--keyring")


def test_keyring_that_is_not_a_key_file(keys, image, tmp_path):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    junk = tmp_path / "junk.gpg"
    junk.write_text("not a key\n")
    out = tmp_path / "out.img"
    assert_refused(copy(keys, "--keyring", junk, packed, out), out, str(junk))


def test_signature_that_is_not_a_signature(keys, image, tmp_path):
    raw, packed, bmap = image
    (tmp_path / "img.bmap.asc").write_text("hello\n")
    out = tmp_path / "out.img"
    assert_refused(copy(keys, packed, out), out, str(bmap), "img.bmap.asc")


# Bmaps fetched from URLs: the signature is found next to the bmap there,
# as bmaptool does (a 404 means "not there"), on the local test server.

@pytest.fixture
def site(tmp_path):
    with http_server(tmp_path) as srv:
        yield srv


def requested(site):
    with site.lock:
        return [path for path, _, _ in site.requests]


def test_good_asc_next_to_an_http_bmap(keys, image, tmp_path, site):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    out = tmp_path / "out.img"
    proc = copy(keys, f"{site.url}/img.gz", out)
    assert_copied(proc, raw, out)
    assert (f"{site.url}/img.bmap: good signature by correct <foo@bar.org> "
            f"(key {keys.correct})") in proc.stderr
    assert "/img.bmap.asc" in requested(site)


def test_sig_next_to_an_http_bmap_after_a_404_for_asc(keys, image, tmp_path, site):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "sig")
    out = tmp_path / "out.img"
    proc = copy(keys, "--bmap", f"{site.url}/img.bmap", f"{site.url}/img.gz", out)
    assert_copied(proc, raw, out)
    assert good_line(keys, f"{site.url}/img.bmap") in proc.stderr
    paths = requested(site)
    assert paths.index("/img.bmap.asc") < paths.index("/img.bmap.sig")


def test_bad_asc_next_to_an_http_bmap_is_refused(keys, image, tmp_path, site):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    change_bmap(bmap, raw)
    out = tmp_path / "out.img"
    assert_refused(copy(keys, f"{site.url}/img.gz", out), out, f"{site.url}/img.bmap",
                   f"{site.url}/img.bmap.asc", keys.correct, "BAD signature")
    # The image itself was never asked for.
    assert "/img.gz" not in requested(site)


def test_http_bmap_sig_given_as_url(keys, image, tmp_path, site):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc", out=tmp_path / "elsewhere.asc")
    out = tmp_path / "out.img"
    # A local bmap, its signature from a URL.
    proc = copy(keys, "--bmap", bmap, "--bmap-sig", f"{site.url}/elsewhere.asc", packed, out)
    assert_copied(proc, raw, out)
    assert good_line(keys, bmap) in proc.stderr
    out.unlink()
    change_bmap(bmap, raw)
    assert_refused(copy(keys, "--bmap", f"{site.url}/img.bmap", "--bmap-sig",
                        f"{site.url}/elsewhere.asc", f"{site.url}/img.gz", out),
                   out, f"{site.url}/elsewhere.asc", "BAD signature")
    # A --bmap-sig that is not there is an error, not "unsigned".
    assert_refused(copy(keys, "--bmap-sig", f"{site.url}/missing.asc", f"{site.url}/img.gz",
                        out), out, f"{site.url}/missing.asc", "404")


def test_clearsigned_bmap_over_http(keys, image, tmp_path, site):
    raw, packed, bmap = image
    signed = sign(keys, keys.home, keys.correct, bmap, "clear", out=tmp_path / "signed.bmap")
    with open(signed, "a") as f:
        f.write("<BmapRange>garbage that would not parse</BmapRange>\n")
    out = tmp_path / "out.img"
    proc = copy(keys, "--bmap", f"{site.url}/signed.bmap", f"{site.url}/img.gz", out)
    assert_copied(proc, raw, out)
    assert good_line(keys, f"{site.url}/signed.bmap") in proc.stderr
    out.unlink()
    with open(signed) as f:
        text = f.read()
    with open(signed, "w") as f:
        f.write(text.replace("<!--", "<!-- changed after signing,", 1))
    assert_refused(copy(keys, "--bmap", f"{site.url}/signed.bmap", f"{site.url}/img.gz", out),
                   out, f"{site.url}/signed.bmap", "BAD signature")


def test_fingerprint_and_keyring_for_an_http_bmap(keys, image, tmp_path, site):
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    out = tmp_path / "out.img"
    url = f"{site.url}/img.gz"
    assert_refused(copy(keys, "--fingerprint", keys.revoked, url, out), out,
                   f"{site.url}/img.bmap", keys.revoked, keys.correct,
                   "not signed by the requested key")
    assert_copied(copy(keys, "--fingerprint", keys.correct, url, out), raw, out)
    out.unlink()
    # --keyring as the only trust, the user's home empty.
    empty = new_home(tmp_path, "empty-home")
    assert_copied(copy(keys, "--keyring", keys.keyring, url, out, home=empty), raw, out)
    out.unlink()
    (tmp_path / "img.bmap.asc").unlink()
    assert_refused(copy(keys, "--fingerprint", keys.correct, url, out), out,
                   f"{site.url}/img.bmap", "no signature found")


def test_signature_beside_a_bmap_behind_basic_auth(keys, image, tmp_path):
    # The .asc is fetched with the bmap's credentials; messages leave the
    # password out.
    raw, packed, bmap = image
    sign(keys, keys.home, keys.correct, bmap, "asc")
    change_bmap(bmap, raw)
    out = tmp_path / "out.img"
    with http_server(tmp_path, auth="user:s3cret") as site:
        url = site.url.replace("http://", "http://user:s3cret@") + "/img.gz"
        proc = copy(keys, url, out)
        paths = requested(site)
    assert_refused(proc, out, f"{site.url.replace('http://', 'http://user@')}/img.bmap.asc",
                   "BAD signature")
    assert "s3cret" not in proc.stderr
    assert "/img.bmap.asc" in paths


class SignatureStatusHandler(Handler):
    """Answers every .asc with the server's signature_status."""

    def do_GET(self):
        if self.path.endswith(".asc"):
            with self.server.lock:
                self.server.requests.append((self.path, None, None))
            self.send_error(self.server.signature_status)
            return
        super().do_GET()


@pytest.mark.parametrize("status", [403, 410, 500])
def test_signature_fetch_status_beside_an_http_bmap(keys, image, tmp_path, status):
    # 404, 410 and 403 are "no signature there", as for the bmap; any other
    # failure must not pass for an unsigned bmap.
    raw, packed, bmap = image
    out = tmp_path / "out.img"
    with http_server(tmp_path, handler=SignatureStatusHandler, signature_status=status) as site:
        proc = copy(keys, f"{site.url}/img.gz", out)
        paths = requested(site)
    assert "/img.bmap.asc" in paths
    if status == 500:
        assert_refused(proc, out, f"{site.url}/img.bmap.asc", "500")
        assert "/img.bmap.sig" not in paths
    else:
        assert_copied(proc, raw, out)
        assert "/img.bmap.sig" in paths


def test_signature_beside_a_local_bmap_for_an_image_url(keys, image, tmp_path):
    raw, packed, bmap = image
    out = tmp_path / "out.img"
    url = f"file://{packed}"
    sign(keys, keys.home, keys.correct, bmap, "asc")
    proc = copy(keys, "--bmap", bmap, url, out)
    assert_copied(proc, raw, out)
    assert good_line(keys, bmap) in proc.stderr
    out.unlink()
    change_bmap(bmap, raw)
    assert_refused(copy(keys, "--bmap", bmap, url, out), out, f"{bmap}.asc", "BAD signature")
    assert_copied(copy(keys, "--no-sig-verify", "--bmap", bmap, url, out), raw, out)


def test_unsigned_bmap_is_still_fine(keys, image, tmp_path):
    raw, packed, bmap = image
    out = tmp_path / "out.img"
    proc = copy(keys, packed, out)
    assert_copied(proc, raw, out)
    assert "signature" not in proc.stderr


# ---- the same verdicts as bmaptool ----
#
# Upstream bmaptool (3.7 and later: --fingerprint, --keyring) run from its
# source tree, BMAPTOOL_SRC=.../bmaptool/src, with python3-gpg; else
# Debian's bmaptool when its python can import the gpgme module it uses.

BMAPTOOL_SRC = os.environ.get("BMAPTOOL_SRC")


def bmaptool_command():
    if BMAPTOOL_SRC:
        if subprocess.run(["/usr/bin/python3", "-c", "import gpg"],
                          capture_output=True).returncode != 0:
            return None
        return ["env", f"PYTHONPATH={BMAPTOOL_SRC}", "/usr/bin/python3", "-m", "bmaptool"]
    exe = shutil.which("bmaptool")
    if exe is None or subprocess.run(["/usr/bin/python3", "-c", "import gpgme"],
                                     capture_output=True).returncode != 0:
        return None
    return [exe]


BMAPTOOL = bmaptool_command()
UPSTREAM = BMAPTOOL_SRC is not None


def revoked_home(keys, tmp_path):
    home = tmp_path / "revoked-home"
    shutil.copytree(keys.home, home, ignore=shutil.ignore_patterns("S.*"))
    rev = tmp_path / "revoke.asc"
    rev.write_text(keys.revocation)
    gpg(home, "--import", str(rev))
    return home


def changed_clearsigned(keys, raw, bmap, tmp_path):
    signed = sign(keys, keys.home, keys.correct, bmap, "clear")
    with open(signed) as f:
        text = f.read()
    with open(signed, "w") as f:
        f.write(text.replace("<!--", "<!-- changed after signing,", 1))
    return ["--bmap", signed], None


# name -> (setup(keys, raw, bmap, tmp_path) -> (args, GnuPG home or None), exit status)
VERDICTS = {
    "good-asc": (lambda k, r, b, t: ([], sign(k, k.home, k.correct, b, "asc") and None), 0),
    "good-sig": (lambda k, r, b, t: ([], sign(k, k.home, k.correct, b, "sig") and None), 0),
    "bmap-sig": (lambda k, r, b, t: (
        ["--bmap-sig", sign(k, k.home, k.correct, b, "asc", out=t / "x.asc")], None), 0),
    "bad-asc-beside": (lambda k, r, b, t: (
        [], sign(k, k.home, k.correct, b, "asc") and change_bmap(b, r)), 1),
    "unknown-signer": (lambda k, r, b, t: ([], sign(k, k.other, k.unknown, b, "asc") and None), 1),
    "expired-key": (lambda k, r, b, t: (
        [], sign(k, k.home, k.expired, b, "asc", faked_time=k.expired_time) and None), 1),
    "revoked-key": (lambda k, r, b, t: (
        [], sign(k, k.home, k.revoked, b, "asc") and revoked_home(k, t)), 1),
    "uncertified-key": (lambda k, r, b, t: (
        [], sign(k, k.other, k.unknown, b, "asc") and uncertified_home(k, t)), 1),
    "clearsigned": (lambda k, r, b, t: (
        ["--bmap", sign(k, k.home, k.correct, b, "clear")], None), 0),
    "clearsigned-changed": (changed_clearsigned, 1),
    "no-sig-verify-clearsigned": (lambda k, r, b, t: (
        ["--no-sig-verify", "--bmap", sign(k, k.home, k.correct, b, "clear")], None), 0),
    "unsigned": (lambda k, r, b, t: ([], None), 0),
}
# Only upstream has these.
UPSTREAM_VERDICTS = {
    "fingerprint": (lambda k, r, b, t: (
        ["--fingerprint", k.correct, "--bmap", sign(k, k.home, k.correct, b, "clear")], None), 0),
    "fingerprint-not-the-signer": (lambda k, r, b, t: (
        ["--fingerprint", k.revoked, "--bmap", sign(k, k.home, k.correct, b, "clear")], None), 1),
    "fingerprint-unsigned": (lambda k, r, b, t: (["--fingerprint", k.correct], None), 1),
    "keyring": (lambda k, r, b, t: (
        ["--keyring", k.keyring, "--bmap", sign(k, k.home, k.correct, b, "clear")],
        new_home(t, "empty")), 0),
    "keyring-unsigned": (lambda k, r, b, t: (["--keyring", k.keyring], None), 1),
}
if UPSTREAM:
    VERDICTS.update(UPSTREAM_VERDICTS)


@pytest.mark.skipif(BMAPTOOL is None,
                    reason="no bmaptool that checks signatures (BMAPTOOL_SRC and python3-gpg, "
                    "or Debian's bmaptool and its gpgme module)")
@pytest.mark.parametrize("case", VERDICTS)
def test_same_verdict_as_bmaptool(keys, image, tmp_path, case):
    raw, packed, bmap = image
    setup, status = VERDICTS[case]
    args, home = setup(keys, raw, bmap, tmp_path)
    home = home or keys.home
    env = dict(os.environ, GNUPGHOME=str(home))
    theirs = subprocess.run([*BMAPTOOL, "copy", *map(str, args), str(packed),
                             str(tmp_path / "theirs.img")], capture_output=True, text=True,
                            env=env)
    ours = copy(keys, *args, packed, tmp_path / "ours.img", home=home)
    try:
        assert theirs.returncode == status, theirs.stderr
        assert ours.returncode == status, ours.stderr
    finally:
        if home != keys.home and os.path.exists(home / "pubring.kbx"):
            subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"],
                           capture_output=True)
    if status == 0:
        assert digest(tmp_path / "ours.img") == digest(tmp_path / "theirs.img") == digest(raw)


@pytest.mark.parametrize("args", [
    ["--bmap-sig", "x.asc", "--no-sig-verify"],
    ["--keyring", "k.gpg", "--no-sig-verify"],
    ["--fingerprint", "ABCD", "--no-sig-verify"],
    ["--bmap-sig", "x.asc", "--nobmap"],
])
def test_conflicting_options_are_usage_errors(keys, image, tmp_path, args):
    raw, packed, bmap = image
    out = tmp_path / "out.img"
    proc = copy(keys, *args, packed, out)
    assert proc.returncode == 2, proc.stderr
    assert not out.exists()
