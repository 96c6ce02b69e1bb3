# SPDX-License-Identifier: GPL-2.0-or-later
"""Prefixes of long options (issue 11): bmaptool parses its command line
with Python's argparse, which takes any unambiguous prefix of a long option
(--nob, --bmap-s FILE, --no-v), in --opt=value and --opt value forms and
after the positional arguments, and refuses an ambiguous one with exit 2.
bmapctl's create and copy, and the options before the command, do the same.

The oracle is argparse itself, given bmaptool 3.9's options exactly as its
src/bmaptool/CLI.py declares them: every prefix of every one of them must
mean in bmapctl what it means in bmaptool, although bmapctl has options of
its own (--relocate-gpt beside --removable-device). Then each of bmaptool's
options is used by its shortest prefix, and must do what it does."""

import argparse
import hashlib
import os
import shutil
import subprocess
import threading

import pytest

BMAPCTL = os.path.abspath(os.environ.get("BMAPCTL", "bmapctl"))
MiB = 1024 * 1024

# bmaptool 3.9, src/bmaptool/CLI.py, parse_arguments(): option, takes a value.
BMAPTOOL_GLOBAL = [("--version", False), ("--quiet", False), ("--debug", False)]
BMAPTOOL_CREATE = [("--output", True), ("--no-checksum", False)]
BMAPTOOL_COPY = [("--bmap", True), ("--nobmap", False), ("--bmap-sig", True),
                 ("--no-sig-verify", False), ("--keyring", True), ("--fingerprint", True),
                 ("--no-verify", False), ("--psplash-pipe", True),
                 ("--removable-device", False)]


class Refused(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse, telling its errors instead of exiting."""

    def error(self, message):
        raise Refused(message)


def bmaptool_parser():
    parser = Parser(prog="bmaptool")
    parser.add_argument("--version", action="version", version="%(prog)s 3.9.0")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("-d", "--debug", action="store_true")
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    create = sub.add_parser("create")
    create.add_argument("image")
    create.add_argument("-o", "--output")
    create.add_argument("--no-checksum", action="store_true")
    copy = sub.add_parser("copy")
    copy.add_argument("image")
    copy.add_argument("dest")
    for name, value in BMAPTOOL_COPY:
        if value:
            copy.add_argument(name)
        else:
            copy.add_argument(name, action="store_true")
    return parser


def argparse_reads(words, options):
    """What bmaptool 3.9 makes of @words: the long option of @options that
    was set, "--help" or "--version", or ("ambiguous", message)."""
    parser = bmaptool_parser()
    try:
        with open(os.devnull, "w") as devnull:
            stdout = os.dup(1)
            os.dup2(devnull.fileno(), 1)
            try:
                ns = parser.parse_args(words)
            finally:
                os.dup2(stdout, 1)
                os.close(stdout)
    except SystemExit as e:
        assert e.code == 0
        return "--version" if any(w.startswith("--v") for w in words) else "--help"
    except Refused as e:
        assert "ambiguous option" in str(e), str(e)
        return ("ambiguous", str(e))
    set_ = [name for name, _ in options
            if getattr(ns, name[2:].replace("-", "_"), None) not in (None, False)]
    assert len(set_) == 1, (words, ns)
    return set_[0]


def prefixes(options):
    """Every prefix of every option ("--b", "--bm", ...), with whether the
    first option it begins takes a value (then one is given)."""
    seen = {}
    for name, value in options:
        for n in range(3, len(name) + 1):
            seen.setdefault(name[:n], value)
    return sorted(seen.items())


def run(*args, check=False, **kwargs):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert not check or proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stderr}"
    return proc


def bmapctl_reads(command, prefix, value):
    """What bmapctl makes of @prefix after @command: the option its -d line
    names (or @prefix itself when complete), "--help", or ("ambiguous",
    message)."""
    args = [BMAPCTL, "-d", command, prefix] + (["V"] if value else [])
    args += ["/nonexistent/img"] + (["/nonexistent/dest"] if command == "copy" else [])
    proc = run(*args)
    if proc.returncode == 0 and proc.stdout.startswith("Usage:"):
        return "--help"
    if proc.returncode == 2:
        assert "ambiguous option: " in proc.stderr, proc.stderr
        return ("ambiguous", proc.stderr)
    for line in proc.stderr.splitlines():
        if "option prefix read as " in line:
            return line.split("option prefix read as ", 1)[1].split("=")[0]
    return prefix


@pytest.mark.parametrize("command,options", [("create", BMAPTOOL_CREATE),
                                             ("copy", BMAPTOOL_COPY)])
def test_every_prefix_means_what_it_means_in_bmaptool(command, options):
    positional = ["img"] + (["dest"] if command == "copy" else [])
    checked = 0
    for prefix, value in prefixes(options + [("--help", False)]):
        want = argparse_reads([command, prefix] + (["V"] if value else []) + positional, options)
        got = bmapctl_reads(command, prefix, value)
        if isinstance(want, tuple):
            assert isinstance(got, tuple), \
                f"{command} {prefix}: bmaptool refuses it ({want[1]}), bmapctl reads {got}"
            # argparse names every option of bmaptool it could match;
            # bmapctl names them too, and its own.
            for name in want[1].split("could match ", 1)[1].split(", "):
                assert name in got[1], f"{command} {prefix}: {name} not named: {got[1]}"
        else:
            assert got == want, f"{command} {prefix}: bmaptool reads {want}, bmapctl {got}"
        checked += 1
    assert checked > 20


def test_every_prefix_before_the_command(tmp_path):
    img = tmp_path / "img"
    img.write_bytes(os.urandom(8192))
    for prefix, _ in prefixes(BMAPTOOL_GLOBAL + [("--help", False)]):
        want = argparse_reads([prefix, "create", "img"], BMAPTOOL_GLOBAL)
        proc = run(BMAPCTL, prefix, "create", img, "-o", tmp_path / "img.bmap")
        if want == "--version":
            assert proc.returncode == 0 and proc.stdout.startswith("bmapctl "), (prefix, proc)
        elif want == "--help":
            assert proc.returncode == 0 and proc.stdout.startswith("Usage:"), (prefix, proc)
        elif want == "--quiet":
            assert proc.returncode == 0 and proc.stderr == "", (prefix, proc.stderr)
        elif want == "--debug":
            assert proc.returncode == 0 and "DEBUG" in proc.stderr, (prefix, proc.stderr)
        else:
            pytest.fail(f"{prefix}: argparse reads {want}")


def test_ambiguous_prefixes_refused():
    for command, prefix in [("copy", "--no"), ("copy", "--b"), ("copy", "--bma"),
                            ("copy", "--no-"), ("copy", "--n=x")]:
        proc = run(BMAPCTL, command, "img", "dest", prefix)
        assert proc.returncode == 2, (prefix, proc.stderr)
        assert f"ambiguous option: {prefix} could match " in proc.stderr
    proc = run(BMAPCTL, "copy", "--no", "img", "dest")
    assert "--nobmap" in proc.stderr and "--no-sig-verify" in proc.stderr \
        and "--no-verify" in proc.stderr


def test_not_for_other_commands():
    """Only bmaptool's commands take prefixes: bmapctl's own keep exact
    names, so an option added later breaks no script."""
    proc = run(BMAPCTL, "devices", "--j")
    assert proc.returncode == 2 and "Unknown option --j" in proc.stderr


# Each of bmaptool's options by its shortest prefix, doing what it does.

def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path):
    """A 1 MiB sparse image, its bmap in another name (no discovery)."""
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
        f.write(os.urandom(8192))
        f.seek(MiB // 2)
        f.write(os.urandom(4096))
    run(BMAPCTL, "create", "--o", tmp_path / "map.xml", img, check=True)
    return img


def test_create_output_and_no_checksum(image, tmp_path):
    run(BMAPCTL, "create", image, "--o=" + str(tmp_path / "a.bmap"), check=True)
    assert "chksum=" in (tmp_path / "a.bmap").read_text()
    # bmaptool's create has one --no... option; bmapctl's --no-ask-password
    # does not make it ambiguous.
    run(BMAPCTL, "create", "--no", "--o", tmp_path / "b.bmap", image, check=True)
    text = (tmp_path / "b.bmap").read_text()
    assert "<BlockMap>" in text and "chksum=" not in text


def test_copy_bmap_and_nobmap(image, tmp_path):
    out = tmp_path / "out"
    # No bmap next to the image: without an option it is refused.
    assert run(BMAPCTL, "copy", image, out).returncode == 1
    run(BMAPCTL, "copy", image, out, "--nob", check=True)
    assert sha256(out) == sha256(image)
    out.unlink()
    run(BMAPCTL, "copy", "--bmap", tmp_path / "map.xml", image, out, check=True)
    assert sha256(out) == sha256(image)


def test_copy_value_is_not_expanded(image, tmp_path):
    """The word after an option taking a value is its value, dashes or not;
    after "--" nothing is an option."""
    shutil.copy(tmp_path / "map.xml", tmp_path / "--nob")
    run(BMAPCTL, "copy", image, tmp_path / "out", "--bmap", "--nob", check=True, cwd=tmp_path)
    shutil.copy(image, tmp_path / "--no")
    run(BMAPCTL, "copy", "--nobmap", "--", "--no", "out2", check=True, cwd=tmp_path)
    assert sha256(tmp_path / "out2") == sha256(image)


def test_copy_signature_options(image, tmp_path):
    bmap = tmp_path / "map.xml"
    bad = tmp_path / "bad.asc"
    bad.write_text("not a signature\n")
    out = tmp_path / "out"
    proc = run(BMAPCTL, "copy", "--bmap", bmap, "--bmap-=" + str(bad), image, out)
    assert proc.returncode == 1 and "bad.asc" in proc.stderr
    proc = run(BMAPCTL, "copy", "--bmap", bmap, image, out, "--f", "0" * 40)
    assert proc.returncode == 1 and "--fingerprint given" in proc.stderr
    proc = run(BMAPCTL, "copy", "--bmap", bmap, "--k", tmp_path / "ring.gpg", image, out)
    assert proc.returncode == 1 and "--keyring given" in proc.stderr
    # A bad signature beside the bmap: refused unless --no-sig-verify.
    shutil.copy(bad, tmp_path / "map.xml.asc")
    assert run(BMAPCTL, "copy", "--bmap", bmap, image, out).returncode == 1
    run(BMAPCTL, "copy", "--bmap", bmap, "--no-s", image, out, check=True)


def test_copy_no_verify(image, tmp_path):
    corrupt = tmp_path / "corrupt.img"
    data = bytearray(image.read_bytes())
    data[100] ^= 0xff
    corrupt.write_bytes(data)
    out = tmp_path / "out"
    assert run(BMAPCTL, "copy", "--bmap", tmp_path / "map.xml", corrupt, out).returncode == 1
    run(BMAPCTL, "copy", "--bmap", tmp_path / "map.xml", corrupt, out, "--no-v", check=True)
    assert sha256(out) == sha256(corrupt)


def test_copy_psplash_pipe(image, tmp_path):
    fifo = tmp_path / "psplash_fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    proc = run(BMAPCTL, "copy", "--bmap", tmp_path / "map.xml", "--p", fifo, image,
               tmp_path / "out")
    if reader.is_alive():
        # bmapctl never opened it: let the reader go.
        with open(fifo, "w"):
            pass
    reader.join()
    assert proc.returncode == 0, proc.stderr
    assert "PROGRESS 100" in got[0]


def test_copy_removable_device(image, tmp_path):
    """--r is bmaptool's --removable-device, not bmapctl's --relocate-gpt."""
    proc = run(BMAPCTL, "copy", "--bmap", tmp_path / "map.xml", "--r", image, tmp_path / "out")
    assert proc.returncode == 1 and "--removable-device" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_help_and_version_as_bmaptool(tmp_path):
    bmaptool = tmp_path / "bmaptool"
    bmaptool.symlink_to(BMAPCTL)
    proc = run(bmaptool, "--vers")
    assert proc.returncode == 0 and proc.stdout.startswith("bmaptool 3.9.0")
    proc = run(bmaptool, "copy", "--h")
    assert proc.returncode == 0 and proc.stdout.startswith("Usage:")
    proc = run(bmaptool, "copy", "--no", "img", "dest")
    assert proc.returncode == 2
    assert proc.stderr.startswith("bmaptool copy: ambiguous option: --no could match --nobmap")
