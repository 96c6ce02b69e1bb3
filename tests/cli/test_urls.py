# SPDX-License-Identifier: GPL-2.0-or-later
"""bmapctl copy from URLs: http with and without Range support, https with a
test CA, ftp, file:, ssh://, ~/.netrc, connections that drop or stall, and
errors that name the URL. Every server listens on 127.0.0.1 only and is
started and stopped here."""

import contextlib
import gzip
import json
import logging
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest

from url_servers import QuietSimpleHandler, http_server

BMAPCTL = os.environ.get("BMAPCTL", "bmapctl")
IMAGE_SIZE = 6 * 1024 * 1024 + 123
# Data here and there, holes in between: the bmap maps a quarter or so.
# The second is less than 256 KiB after the first: one request fetches both.
EXTENTS = [(0, 200000), (300000, 1000), (1024 * 1024 + 5, 300000), (4 * 1024 * 1024, 500000),
           (IMAGE_SIZE - 1000, 1000)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """img.raw, its bmap img.raw.bmap, and img.raw.gz (whose bmap is found by
    stripping .gz), as a web root."""
    root = tmp_path_factory.mktemp("site")
    raw = root / "img.raw"
    rng = random.Random(11)
    with open(raw, "wb") as f:
        f.truncate(IMAGE_SIZE)
        for offset, length in EXTENTS:
            f.seek(offset)
            f.write(rng.randbytes(length))
    subprocess.run([BMAPCTL, "create", "-o", str(root / "img.raw.bmap"), str(raw)], check=True)
    with open(raw, "rb") as f, gzip.open(root / "img.raw.gz", "wb", compresslevel=1) as g:
        shutil.copyfileobj(f, g)
    return root


def image_bytes(site):
    return (site / "img.raw").read_bytes()


@pytest.fixture
def env(tmp_path):
    """No proxy, no user's ~/.netrc, no CA variables from outside."""
    home = tmp_path / "home"
    home.mkdir()
    e = {k: v for k, v in os.environ.items()
         if k.lower() not in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")
         and k not in ("CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    e["HOME"] = str(home)
    return e


def bmapctl(env, *args, timeout=120):
    return subprocess.run([BMAPCTL, "copy", "--local", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def copy_ok(env, tmp_path, site, url, *options):
    dest = tmp_path / "out.img"
    proc = bmapctl(env, *options, url, str(dest))
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == image_bytes(site)
    return proc


# --- http ------------------------------------------------------------------

def test_http_gz_without_range_support_as_lava_does(env, tmp_path, site):
    """Python's own http.server: no Range, the bmap found next to the URL
    with .gz stripped."""
    with http_server(site, handler=QuietSimpleHandler) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw.gz")


@pytest.mark.parametrize("name", ["img.raw", "img.raw.gz"])
def test_http_with_range_support(env, tmp_path, site, name):
    with http_server(site) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/{name}")
        paths = [p for p, _, _ in srv.requests]
        assert "/img.raw.bmap" in paths


def test_http_tar_gz_archive(env, tmp_path, site):
    """An archive's first file is the image, its bmap found next to the URL
    with .tar.gz stripped one suffix at a time."""
    root = tmp_path / "archive"
    root.mkdir()
    subprocess.run(["tar", "-czf", str(root / "img.raw.tar.gz"), "-C", str(site), "img.raw"],
                   check=True)
    shutil.copy(site / "img.raw.bmap", root)
    with http_server(root) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw.tar.gz")
        paths = [p for p, _, _ in srv.requests]
    assert paths[:3] == ["/img.raw.tar.gz.bmap", "/img.raw.tar.bmap", "/img.raw.bmap"]


def test_uncompressed_image_fetches_only_mapped_ranges(env, tmp_path, site):
    with http_server(site) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw")
        image_requests = [r for r in srv.requests if r[0] == "/img.raw"]
        # The probe, then the mapped blocks: 0-48 and 73 together, and three more.
        wanted = [wanted for _, wanted, _ in image_requests]
        assert wanted[0] == "bytes=0-15" and wanted[1] == f"bytes=0-{74 * 4096 - 1}"
        assert len(wanted) == 1 + 4
        # After the probe, every request names the file it began with.
        assert all(if_range is not None for _, _, if_range in image_requests[1:])
        mapped = sum(length for _, length in EXTENTS)
        bmap_size = (site / "img.raw.bmap").stat().st_size
        assert srv.bytes_sent < IMAGE_SIZE / 2
        assert srv.bytes_sent >= mapped + bmap_size


def test_uncompressed_image_without_range_support_is_streamed(env, tmp_path, site):
    with http_server(site, ranges=False) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw")
        assert srv.bytes_sent >= IMAGE_SIZE


def test_nobmap_streams_everything(env, tmp_path, site):
    with http_server(site) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw.gz", "--nobmap")
        assert [p for p, _, _ in srv.requests] == ["/img.raw.gz"]


def test_bmap_given_as_url_and_image_local(env, tmp_path, site):
    with http_server(site) as srv:
        copy_ok(env, tmp_path, site, str(site / "img.raw.gz"), "--bmap",
                f"{srv.url}/img.raw.bmap")


def test_image_url_and_local_bmap(env, tmp_path, site):
    with http_server(site) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw.gz", "--bmap",
                str(site / "img.raw.bmap"))
        # A look at the first bytes, then the whole compressed image.
        assert [(p, wanted) for p, wanted, _ in srv.requests] == [("/img.raw.gz", "bytes=0-15"),
                                                                  ("/img.raw.gz", None)]


def test_bmap_discovery_keeps_the_query(env, tmp_path, site):
    with http_server(site) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw.gz?token=1")
        paths = [p for p, _, _ in srv.requests]
        assert paths[:2] == ["/img.raw.gz.bmap?token=1", "/img.raw.bmap?token=1"]


def test_json_progress_counts_downloaded_bytes(env, tmp_path, site):
    with http_server(site) as srv:
        proc = copy_ok(env, tmp_path, site, f"{srv.url}/img.raw.gz", "--json")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    progress = [line for line in lines if "state" in line]
    assert progress and all("bytes_downloaded" in line for line in progress)
    assert lines[-1]["result"] == "done"


def test_image_404_names_url_and_status(env, tmp_path, site):
    with http_server(site) as srv:
        proc = bmapctl(env, f"{srv.url}/missing.img.gz", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"{srv.url}/missing.img.gz: HTTP 404" in proc.stderr


def test_bmap_404_names_url_and_status(env, tmp_path, site):
    with http_server(site) as srv:
        proc = bmapctl(env, "--bmap", f"{srv.url}/missing.bmap", f"{srv.url}/img.raw.gz",
                       str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"{srv.url}/missing.bmap: HTTP 404" in proc.stderr


def test_no_bmap_next_to_url_lists_candidates(env, tmp_path, site):
    shutil.copy(site / "img.raw.gz", tmp_path / "other.img.gz")
    with http_server(tmp_path) as other:
        proc = bmapctl(env, f"{other.url}/other.img.gz", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"no bmap found for {other.url}/other.img.gz" in proc.stderr
    assert f"{other.url}/other.img.gz.bmap, {other.url}/other.img.bmap, " \
           f"{other.url}/other.bmap" in proc.stderr


def test_connection_refused_names_url(env, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/img.raw"
    proc = bmapctl(env, "--nobmap", url, str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"{url}: " in proc.stderr and "onnect" in proc.stderr


# --- dropped and stalled connections ----------------------------------------

@pytest.mark.parametrize("name,options", [("img.raw.gz", []), ("img.raw.gz", ["--nobmap"]),
                                          ("img.raw", [])])
def test_dropped_connection_resumes(env, tmp_path, site, name, options):
    with http_server(site, drops=2, drop_after=150000, drop_ranged_after=100000) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/{name}", *options)
        assert srv.drops == 0
        ranges = {wanted: if_range for path, wanted, if_range in srv.requests
                  if path == f"/{name}" and wanted is not None}
        resumed = [wanted for wanted in ranges if wanted.startswith("bytes=150000-")]
        assert resumed and all(ranges[wanted] is not None for wanted in resumed)


def test_dropped_connection_without_range_support_fails(env, tmp_path, site):
    with http_server(site, ranges=False, drops=1, drop_after=150000) as srv:
        url = f"{srv.url}/img.raw.gz"
        proc = bmapctl(env, "--nobmap", url, str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"{url}: asked for bytes from 150000 on, the server sent HTTP 200: it does not " \
           "resume a download" in proc.stderr


def test_file_changed_before_the_resume_is_not_spliced(env, tmp_path, site):
    root = tmp_path / "changing"
    root.mkdir()
    shutil.copy(site / "img.raw.gz", root)

    def touch(path):
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    with http_server(root, drops=1, drop_after=150000, after_drop=touch) as srv:
        url = f"{srv.url}/img.raw.gz"
        proc = bmapctl(env, "--nobmap", url, str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"{url}: asked for bytes from 150000 on, the server sent HTTP 200: the file changed " \
           "on the server during the download" in proc.stderr


def test_connection_that_keeps_dropping_fails_after_a_few_attempts(env, tmp_path, site):
    with http_server(site, drops=100, drop_after=150000, drop_ranged_after=0) as srv:
        url = f"{srv.url}/img.raw.gz"
        proc = bmapctl(env, "--nobmap", url, str(tmp_path / "out"))
        attempts = [r for r in srv.requests if r[0] == "/img.raw.gz"]
    assert proc.returncode == 1
    assert f"{url}: the connection broke at byte 150000 and 5 attempts to resume got no " \
           "further" in proc.stderr
    assert len(attempts) == 1 + 5


def test_stalled_connection_resumes(env, tmp_path, site):
    env["BMAPCTL_STALL_TIMEOUT"] = "1"
    with http_server(site, stall="mid-body", stalls=1, stall_after=150000) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw.gz", "--nobmap")
        assert [wanted for _, wanted, _ in srv.requests] == [None, "bytes=150000-"]


def test_bad_stall_timeout_is_refused(env, tmp_path, site):
    env["BMAPCTL_STALL_TIMEOUT"] = "soon"
    with http_server(site) as srv:
        proc = bmapctl(env, "--nobmap", f"{srv.url}/img.raw.gz", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "BMAPCTL_STALL_TIMEOUT=soon: not a number of seconds" in proc.stderr


def test_broken_raw_download_without_bmap_is_no_short_success(env, tmp_path, site):
    """Without a bmap nothing says how long the image is: the end of a
    broken download must not pass for the end of the image."""
    with http_server(site, drops=100, drop_after=150000, drop_ranged_after=0) as srv:
        url = f"{srv.url}/img.raw"
        proc = bmapctl(env, "--nobmap", url, str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr
    assert f"{url}: the connection broke at byte 150000" in proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stall", ["before-headers", "mid-body"])
def test_stalled_download_is_canceled_by_a_signal(env, tmp_path, site, stall, signum):
    with http_server(site, stall=stall) as srv:
        url = f"{srv.url}/img.raw.gz"
        proc = subprocess.Popen([BMAPCTL, "copy", "--local", "--nobmap", url,
                                 str(tmp_path / "out")], env=env, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert srv.stalled.wait(60)
            # Past the open, into the copy, when the body has begun.
            if stall == "mid-body":
                time.sleep(0.5)
            start = time.monotonic()
            proc.send_signal(signum)
            # Well under the 60 s stall timeout: the cancel itself stopped it.
            _, err = proc.communicate(timeout=30)
            print(f"canceled after {time.monotonic() - start:.3f} s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 4, err
    assert "cancel" in err


# --- netrc -------------------------------------------------------------------

def test_netrc_credentials(env, tmp_path, site):
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text("machine 127.0.0.1 login flasher password s3cret\n")
    netrc.chmod(0o600)
    with http_server(site, auth="flasher:s3cret") as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw.gz")


def test_missing_credentials_name_the_status(env, tmp_path, site):
    with http_server(site, auth="flasher:s3cret") as srv:
        url = f"{srv.url}/img.raw.gz"
        proc = bmapctl(env, "--nobmap", url, str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"{url}: HTTP 401 Unauthorized" in proc.stderr


def test_password_is_not_shown(env, tmp_path, site):
    with http_server(site, auth="flasher:s3cret") as srv:
        url = srv.url.replace("://", "://flasher:wrong@") + "/img.raw.gz"
        proc = bmapctl(env, "--nobmap", url, str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "HTTP 401" in proc.stderr and "wrong" not in proc.stderr


def test_password_in_url_is_used_and_not_shown(env, tmp_path, site):
    with http_server(site, auth="flasher:s3cret") as srv:
        url = srv.url.replace("://", "://flasher:s3cret@") + "/img.raw.gz"
        proc = copy_ok(env, tmp_path, site, url, "--json")
        plain = copy_ok(env, tmp_path, site, url)
    assert "s3cret" not in proc.stdout + proc.stderr + plain.stdout + plain.stderr
    assert f"{srv.url.replace('://', '://flasher@')}/img.raw.gz" in plain.stderr


# --- https -------------------------------------------------------------------

@pytest.fixture(scope="module")
def test_ca(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("ca")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=bmapctl test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                               "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "server.pem", d / "server.key")
    return d / "ca.pem", context


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "CURL_CA_BUNDLE"])
def test_https_with_test_ca(env, tmp_path, site, test_ca, variable):
    ca, context = test_ca
    env[variable] = str(ca)
    with http_server(site, context=context) as srv:
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw.gz")
        copy_ok(env, tmp_path, site, f"{srv.url}/img.raw")


def test_https_unknown_ca_is_refused(env, tmp_path, site, test_ca):
    _, context = test_ca
    with http_server(site, context=context) as srv:
        url = f"{srv.url}/img.raw.gz"
        proc = bmapctl(env, "--nobmap", url, str(tmp_path / "out"))
        assert srv.bytes_sent == 0
    assert proc.returncode == 1
    assert f"{url}: " in proc.stderr and "certificate" in proc.stderr


# --- ftp ---------------------------------------------------------------------

@contextlib.contextmanager
def ftp_server(root):
    with warnings.catch_warnings():
        # pyftpdlib 1.5 is built on asyncore, deprecated in Python 3.11.
        warnings.simplefilter("ignore", DeprecationWarning)
        authorizers = pytest.importorskip("pyftpdlib.authorizers",
                                          reason="python3-pyftpdlib is not installed")
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import ThreadedFTPServer

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    authorizer = authorizers.DummyAuthorizer()
    authorizer.add_anonymous(str(root))
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer})
    srv = ThreadedFTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"handle_exit": False},
                              daemon=True)
    thread.start()
    try:
        yield f"ftp://127.0.0.1:{srv.address[1]}"
    finally:
        srv.close_all()
        thread.join()


@pytest.mark.parametrize("name", ["img.raw.gz", "img.raw"])
def test_ftp(env, tmp_path, site, name):
    with ftp_server(site) as url:
        copy_ok(env, tmp_path, site, f"{url}/{name}")


def test_ftp_missing_file(env, tmp_path, site):
    with ftp_server(site) as url:
        proc = bmapctl(env, "--nobmap", f"{url}/missing.img", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"{url}/missing.img: " in proc.stderr


# --- file: -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["img.raw.gz", "img.raw"])
def test_file_url(env, tmp_path, site, name):
    copy_ok(env, tmp_path, site, f"file://{site}/{name}")


def test_file_url_bmap(env, tmp_path, site):
    copy_ok(env, tmp_path, site, str(site / "img.raw.gz"), "--bmap",
            f"file://{site}/img.raw.bmap")


# --- ssh:// --------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path, env):
    """sshd on 127.0.0.1 with a temporary host key and authorized key, and
    an `ssh` first in PATH that uses them."""
    sshd_bin = "/usr/sbin/sshd"
    if os.geteuid() != 0 or not os.path.exists(sshd_bin) or shutil.which("ssh") is None \
            or shutil.which("ssh-keygen") is None:
        pytest.skip("ssh:// needs root, /usr/sbin/sshd, ssh and ssh-keygen")
    d = tmp_path / "ssh"
    d.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\n")
    host_pub = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    # "sshtest" is 127.0.0.1 on that port, for URLs that cannot give one.
    (d / "ssh_config").write_text(
        f"Host sshtest\n  HostName 127.0.0.1\n  Port {port}\n"
        "Host *\n"
        f"  IdentityFile {d}/client\n  UserKnownHostsFile {d}/known_hosts\n"
        "  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n")
    bindir = d / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {d}/ssh_config \"$@\"\n")
    (bindir / "ssh").chmod(0o755)

    # sshd's privilege separation directory, as openssh-server's tmpfiles.d
    # makes it at boot; left in place, since another sshd may use it.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if proc.poll() is not None:
                pytest.skip(f"sshd did not start: {proc.stderr.read()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        env["PATH"] = f"{bindir}:{env['PATH']}"
        yield f"ssh://root@127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.parametrize("name", ["img.raw.gz", "img.raw"])
def test_ssh(env, tmp_path, site, sshd, name):
    copy_ok(env, tmp_path, site, f"{sshd}{site}/{name}")


def test_ssh_missing_file(env, tmp_path, site, sshd):
    url = f"{sshd}{site}/missing.img"
    proc = bmapctl(env, "--nobmap", url, str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"{url}: {site}/missing.img on root@127.0.0.1 cannot be read" in proc.stderr


def test_ssh_bmaptool_form(env, tmp_path, site, sshd):
    """bmaptool's ssh://USER@HOST:PATH, the bmap found next to it."""
    copy_ok(env, tmp_path, site, f"ssh://root@sshtest:{site}/img.raw.gz")


def test_ssh_password_refused(env, tmp_path, site):
    url = f"ssh://root:secret@127.0.0.1{site}/img.raw.gz"
    proc = bmapctl(env, url, str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"ssh://root@127.0.0.1{site}/img.raw.gz: passwords in ssh:// URLs are not " \
           "supported" in proc.stderr
    assert "secret" not in proc.stderr
