# SPDX-License-Identifier: GPL-2.0-or-later
"""Upstream bmaptool 3.9's tests/test_CLI.py, case by case, with its data:
tests/test-data's test.image.gz and its bmaps of format 2.0 and 1.4, keys
"correct <foo@bar.org>" and "unknown <blub@bla.net>" made as upstream makes
them (RSA 3072, sign and certify, a year), each bmap clearsigned and
detach-signed by each key, the correct key's minimal export as the
--keyring file, GNUPGHOME the correct key's home, and an existing empty
file as the destination. bmapctl runs as "bmaptool"; each case checks what
upstream checks (the exit status, nothing on standard output, the line on
standard error) and that the image written is the image.

The data is the reference corpus beside the project (../shared/compat), as
for test_bmaptool_compat.py's test_reference_corpus."""

import gzip
import hashlib
import os
import re
import shutil
import subprocess

import pytest
from test_signatures import gpg

BMAPCTL = os.path.abspath(os.environ.get("BMAPCTL", "bmapctl"))
GPG = shutil.which("gpg")
GPGCONF = shutil.which("gpgconf")
COMPAT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                       "..", "..", "..", "shared", "compat"))

pytestmark = [
    pytest.mark.skipif(GPG is None or GPGCONF is None,
                       reason="gpg and gpgconf (gnupg) are not installed"),
    pytest.mark.skipif(not os.path.isfile(os.path.join(COMPAT, "test.image.gz")),
                       reason="../shared/compat (upstream's test-data) is not beside the project"),
]

KEYS = {"correct": "correct <foo@bar.org>", "unknown": "unknown <blub@bla.net>"}


class Data:
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """setUp() of test_CLI.py: tests/test-data/signatures/ and the keys."""
    d = Data()
    base = tmp_path_factory.mktemp("upstream")
    d.data = base / "test-data"
    sigs = d.data / "signatures"
    sigs.mkdir(parents=True)
    for name in ("test.image.gz", "test.image.bmap.v2.0", "test.image.bmap.v1.4"):
        shutil.copy(os.path.join(COMPAT, name), d.data / name)
    d.homes, d.fpr = {}, {}
    for key, uid in KEYS.items():
        home = base / f"gnupg-{key}"
        home.mkdir(mode=0o700)
        gpg(home, "--quick-gen-key", uid, "rsa3072", "sign,cert", "1y")
        listing = gpg(home, "--with-colons", "--list-keys", uid).stdout.decode()
        d.fpr[key] = re.search(r"^fpr:+([0-9A-F]{40}):", listing, re.M).group(1)
        d.homes[key] = home
        for version in ("2.0", "1.4"):
            bmap = d.data / f"test.image.bmap.v{version}"
            gpg(home, "--local-user", d.fpr[key], "--clearsign", "--output",
                str(sigs / f"test.image.bmap.v{version}{key}.asc"), str(bmap))
            gpg(home, "--local-user", d.fpr[key], "--armor", "--detach-sign", "--output",
                str(sigs / f"test.image.bmap.v{version}{key}.det.asc"), str(bmap))
        # "the file supplied to gpgv via --keyring must not be armored"
        (base / f"gnupg-{key}.keyring").write_bytes(
            gpg(home, "--export-options", "export-minimal", "--export", d.fpr[key]).stdout)
    d.keyring = base / "gnupg-correct.keyring"
    with gzip.open(d.data / "test.image.gz", "rb") as f:
        d.image_sha256 = hashlib.sha256(f.read()).hexdigest()
    d.bmaptool = base / "bmaptool"
    d.bmaptool.symlink_to(BMAPCTL)
    yield d
    for home in d.homes.values():
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"], capture_output=True)


@pytest.fixture
def tmpfile(tmp_path):
    """tempfile.mkstemp(): the destination exists, empty."""
    path = tmp_path / "testfile_x"
    path.write_bytes(b"")
    return path


def copy(data, dest, *options, env=None):
    """bmaptool copy OPTIONS test.image.gz DEST, as upstream runs it."""
    if env is None:
        env = dict(os.environ, GNUPGHOME=str(data.homes["correct"]))
    return subprocess.run([str(data.bmaptool), "copy", *map(str, options),
                           str(data.data / "test.image.gz"), str(dest)],
                          capture_output=True, env=env, cwd=data.data.parent)


def sig(data, name):
    return data.data / "signatures" / name


def bmap(data, version):
    return data.data / f"test.image.bmap.v{version}"


def assert_copied(proc, data, dest, line=b"successfully verified bmap file signature"):
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b""
    assert line in proc.stderr, proc.stderr.decode()
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == data.image_sha256


def assert_refused(proc, dest, line):
    assert proc.returncode == 1, proc.stderr.decode()
    assert proc.stdout == b""
    assert line in proc.stderr, proc.stderr.decode()
    assert dest.read_bytes() == b"", "the destination was written"


def test_valid_signature(data, tmpfile):
    proc = copy(data, tmpfile, "--bmap", bmap(data, "2.0"), "--bmap-sig",
                sig(data, "test.image.bmap.v2.0correct.det.asc"))
    assert_copied(proc, data, tmpfile)


def test_valid_signature_fingerprint(data, tmpfile):
    proc = copy(data, tmpfile, "--bmap", sig(data, "test.image.bmap.v2.0correct.asc"),
                "--fingerprint", data.fpr["correct"])
    assert_copied(proc, data, tmpfile)


def test_valid_signature_fingerprint_keyring(data, tmpfile, tmp_path):
    # "should work without GNUPGHOME set because we supply --keyring"; HOME
    # elsewhere too, so that a default home would be seen being made.
    env = {k: v for k, v in os.environ.items() if k != "GNUPGHOME"}
    env["HOME"] = str(tmp_path / "home")
    proc = copy(data, tmpfile, "--bmap", sig(data, "test.image.bmap.v2.0correct.asc"),
                "--fingerprint", data.fpr["correct"], "--keyring", data.keyring, env=env)
    assert_copied(proc, data, tmpfile)
    assert not (tmp_path / "home" / ".gnupg").exists()


def test_unknown_signer(data, tmpfile):
    proc = copy(data, tmpfile, "--bmap", bmap(data, "2.0"), "--bmap-sig",
                sig(data, "test.image.bmap.v2.0unknown.det.asc"))
    assert_refused(proc, tmpfile, b"discovered a BAD GPG signature")
    # Then what bmapctl adds: the key and what was wrong with it.
    assert b"(unknown signer)" in proc.stderr
    assert data.fpr["unknown"].encode() in proc.stderr


def test_wrong_signature(data, tmpfile):
    proc = copy(data, tmpfile, "--bmap", bmap(data, "1.4"), "--bmap-sig",
                sig(data, "test.image.bmap.v2.0correct.det.asc"))
    assert_refused(proc, tmpfile, b"discovered a BAD GPG signature")
    assert b"the bmap is not the one that was signed" in proc.stderr
    assert data.fpr["correct"].encode() in proc.stderr


def test_wrong_signature_unknown_signer(data, tmpfile):
    proc = copy(data, tmpfile, "--bmap", bmap(data, "1.4"), "--bmap-sig",
                sig(data, "test.image.bmap.v2.0unknown.det.asc"))
    assert_refused(proc, tmpfile, b"discovered a BAD GPG signature")
    # gpg cannot tell a wrong signature from a right one without the key:
    # the signer is unknown either way.
    assert b"(unknown signer)" in proc.stderr


def test_clearsign(data, tmpfile):
    proc = copy(data, tmpfile, "--bmap", sig(data, "test.image.bmap.v2.0correct.asc"))
    assert_copied(proc, data, tmpfile)


def test_fingerprint_without_signature(data, tmpfile):
    proc = copy(data, tmpfile, "--bmap", bmap(data, "2.0"), "--fingerprint",
                data.fpr["correct"])
    assert_refused(proc, tmpfile, b"no signature found but --fingerprint given")


# Upstream's own file, unchanged, when its source tree is at hand
# (BMAPTOOL_SRC=.../bmaptool/src, as for test_signatures.py): its "bmaptool"
# on PATH is bmapctl. It needs python3-gpg, as upstream does.
BMAPTOOL_SRC = os.environ.get("BMAPTOOL_SRC")


@pytest.mark.skipif(BMAPTOOL_SRC is None or not os.path.isfile(
    os.path.join(BMAPTOOL_SRC or "", "..", "tests", "test_CLI.py")),
    reason="BMAPTOOL_SRC does not name upstream bmaptool's src/ (with tests/ beside it)")
def test_upstream_test_cli_py_itself(tmp_path):
    tree = tmp_path / "bmaptool"
    # setUp() writes tests/test-data/signatures/: a copy of the tree.
    shutil.copytree(os.path.join(BMAPTOOL_SRC, ".."), tree,
                    ignore=shutil.ignore_patterns(".git", "__pycache__"))
    shutil.rmtree(tree / "tests" / "test-data" / "signatures", ignore_errors=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bmaptool").symlink_to(BMAPCTL)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=str(tree / "src"))
    proc = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_CLI.py"], capture_output=True, text=True, env=env, cwd=tree)
    if "skipped" in proc.stdout and "passed" not in proc.stdout:
        pytest.skip(f"upstream skipped its tests: {proc.stdout.strip()[-200:]}")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "8 passed" in proc.stdout, proc.stdout[-500:]
