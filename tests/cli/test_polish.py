# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 12, bmapctl polish: shell completion (bash, zsh, fish) that offers
what bmapctl's --help lists and bmapd's devices, the VM test's archive read
from apt's sources only, tools/setup-deps's --runtime selection for the demo,
and the client's help and messages."""

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

BMAPCTL = os.environ.get("BMAPCTL", "bmapctl")
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASH_COMPLETION = os.path.join(SRC, "data", "bmapctl.bash-completion")
ZSH_DIR = os.path.join(SRC, "data", "zsh")
FISH_COMPLETION = os.path.join(SRC, "data", "fish", "bmapctl.fish")
BASH_COMPLETION_LIB = "/usr/share/bash-completion/bash_completion"
# bmapctl's commands; test_commands_are_these checks them against --help.
COMMANDS = ["create", "copy", "flash", "devices", "jobs", "cancel", "monitor", "auto-flash"]

# What a fake bmapctl prints for `devices`, `jobs` and `auto-flash --list`,
# in bmapctl's own columns (bmapctl-devices.c, bmapctl-jobs.c,
# bmapctl-autoflash.c): completion reads these, not bmapd.
FAKE_BMAPCTL = r"""#!/bin/sh
case " $* " in
  *" devices "*)
    printf '%-16s %10s %-8s %-24s %-20s %s\n' NODE SIZE BUS MODEL SERIAL FLAGS
    printf '%-16s %10s %-8s %-24s %-20s %s\n' /dev/sdq "7.5 GiB" usb Ultra 4C53 removable
    printf '%-16s %10s %-8s %-24s %-20s %s\n' /dev/mmcblk7 "29.7 GiB" mmc SD32G 0x1234 removable
    printf '\n2 devices listed.\n' ;;
  *" jobs "*)
    printf '%-5s %-8s %-11s %8s %-10s %-28s %s\n' ID TYPE STATE PROGRESS DEVICE DESCRIPTION RESULT
    printf '%-5s %-8s %-11s %8s %-10s %-28s %s\n' 41 flash running 12% sdq disk.img.xz -
    printf '\n1 job listed.\n' ;;
  *" --list "*)
    printf '%-4s %-7s %-24s %7s %7s %6s  %s\n' ID SOURCE DESCRIPTION FLASHED FAILED COUNT MATCH
    printf '%-4s %-7s %-24s %7s %7s %6s  %s\n' 93 client rpi.img 0 0 - bus=usb
    printf '\n1 rule armed.\n' ;;
  *) exit 1 ;;
esac
"""


def help_text(*args):
    r = subprocess.run([BMAPCTL, *args, "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def section(text, title):
    """The lines of a --help section, up to the next blank line."""
    lines = text.split(title + "\n", 1)[1].splitlines()
    out = []
    for line in lines:
        if not line.strip():
            break
        out.append(line)
    return out


def commands():
    return [line.split()[0] for line in section(help_text(), "Commands:")]


def long_options(lines):
    """The long options of --help lines: "  -o, --output=FILE   Write..."."""
    return {m for line in lines for m in re.findall(r"--[a-z][a-z0-9-]*", line.strip().split("  ")[0])}


def global_options():
    return long_options(section(help_text(), "Global options:"))


def command_options(command):
    text = help_text(command)
    if "Application Options:" not in text:
        return set()
    return long_options(section(text, "Application Options:"))


def test_commands_are_these():
    assert commands() == COMMANDS


@pytest.fixture
def fake_path(tmp_path):
    """A directory with the fake bmapctl first on PATH, and a work directory
    holding one image file; returns (env, cwd)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "bmapctl"
    fake.write_text(FAKE_BMAPCTL)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "work"
    work.mkdir()
    (work / "image.img.xz").write_bytes(b"")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_DATA_HOME=str(tmp_path / "data"))
    return env, str(work)


# --------------------------------------------------------------- bash


def bash_complete(line, env, cwd):
    """COMPREPLY for the command line `line`, the cursor at its end."""
    if not os.path.exists(BASH_COMPLETION_LIB):
        pytest.skip(f"{BASH_COMPLETION_LIB} is not installed (bash-completion)")
    script = textwrap.dedent(r"""
        source "$1"
        source "$2"
        COMP_LINE=$3
        COMP_POINT=${#COMP_LINE}
        read -r -a COMP_WORDS <<< "$COMP_LINE"
        [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        _bmapctl bmapctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    """)
    r = subprocess.run(["bash", "-c", script, "bash", BASH_COMPLETION_LIB, BASH_COMPLETION, line],
                       capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_bash_offers_every_command(fake_path):
    assert bash_complete("bmapctl ", *fake_path) == set(commands())


@pytest.mark.parametrize("command", COMMANDS)
def test_bash_offers_every_option(fake_path, command):
    got = {o for o in bash_complete(f"bmapctl {command} --", *fake_path)}
    assert got == command_options(command) | global_options()


def test_bash_offers_devices_and_jobs(fake_path):
    env, cwd = fake_path
    assert bash_complete("bmapctl copy image.img.xz /dev/", env, cwd) >= {"/dev/sdq", "/dev/mmcblk7"}
    got = bash_complete("bmapctl --quiet flash --bmap x.bmap image.img.xz ", env, cwd)
    assert got >= {"sdq", "mmcblk7", "image.img.xz"}
    assert bash_complete("bmapctl copy ", env, cwd) == {"image.img.xz"}
    assert bash_complete("bmapctl cancel ", env, cwd) == {"41"}
    assert bash_complete("bmapctl auto-flash --remove ", env, cwd) == {"93"}
    assert "usb" in bash_complete("bmapctl auto-flash --match-bus ", env, cwd)


# --------------------------------------------------------------- zsh

ZSH_CAPTURE = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT= RPROMPT= ; unsetopt autolist; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd () { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi; local -a __hits; builtin compadd -A __hits "$@"; local h; for h in $__hits; do print -r -- "<M""ATCH>$h</M""ATCH>"; done; builtin compadd "$@"; }'
zpty -w z "bindkey '^I' complete-word; _end() { print '<DO''NE>' }; zle -N _end; bindkey '^X' _end"
zpty -n -w z "$2"$'\t'
zpty -n -w z $'\x18'
local line out
while zpty -r z line; do
  out+=$line
  [[ $out == *'<DONE>'* ]] && break
done
print -r -- $out
zpty -d z
"""


def zsh_complete(line, env, cwd):
    """What zsh's completion system offers for `line` (through a zpty)."""
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    r = subprocess.run(["zsh", "-f", "-c", ZSH_CAPTURE, "zsh", ZSH_DIR, line],
                       capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    assert r.returncode == 0, r.stderr
    return {m.rstrip("=") for m in re.findall(r"<MATCH>(.*?)</MATCH>", r.stdout)}


def test_zsh_offers_every_command(fake_path):
    assert zsh_complete("bmapctl ", *fake_path) == set(commands())


@pytest.mark.parametrize("command", COMMANDS)
def test_zsh_offers_every_option(fake_path, command):
    got = {o for o in zsh_complete(f"bmapctl {command} --", *fake_path)}
    assert got == command_options(command) | global_options()


def test_zsh_offers_devices_and_jobs(fake_path):
    env, cwd = fake_path
    got = zsh_complete("bmapctl copy image.img.xz ", env, cwd)
    assert got >= {"/dev/sdq", "/dev/mmcblk7", "sdq", "mmcblk7", "image.img.xz"}
    assert zsh_complete("bmapctl cancel ", env, cwd) == {"41"}
    assert zsh_complete("bmapctl auto-flash --remove=", env, cwd) == {"93"}


# --------------------------------------------------------------- fish


def fish_complete(line, env, cwd):
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed")
    r = subprocess.run(["fish", "--no-config", "-c",
                        f"source {FISH_COMPLETION}; complete -C'{line}'"],
                       capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    assert r.returncode == 0, r.stderr
    return {entry.split("\t")[0] for entry in r.stdout.splitlines()}


def test_fish_offers_every_command(fake_path):
    assert fish_complete("bmapctl ", *fake_path) == set(commands())


@pytest.mark.parametrize("command", COMMANDS)
def test_fish_offers_every_option(fake_path, command):
    got = fish_complete(f"bmapctl {command} --", *fake_path)
    assert got == command_options(command) | global_options()


def test_fish_offers_devices_and_jobs(fake_path):
    env, cwd = fake_path
    got = fish_complete("bmapctl copy image.img.xz ", env, cwd)
    assert got >= {"/dev/sdq", "/dev/mmcblk7", "sdq", "mmcblk7", "image.img.xz"}
    assert fish_complete("bmapctl copy ", env, cwd) == {"image.img.xz"}
    assert fish_complete("bmapctl cancel ", env, cwd) == {"41"}
    assert fish_complete("bmapctl auto-flash --remove ", env, cwd) == {"93"}


# --------------------------------------------------------------- tests/vm


def vmtest():
    sys.path.insert(0, os.path.join(SRC, "tests", "vm"))
    sys.dont_write_bytecode = True  # nothing written into the source tree
    try:
        import vmtest as module
    finally:
        sys.path.pop(0)
    return module


def write_apt(tmp_path, files):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(textwrap.dedent(text))
    return str(etc)


@pytest.fixture
def no_mirror_env(monkeypatch):
    monkeypatch.delenv("BMAPD_VM_MIRROR", raising=False)


def test_vm_archive_from_one_line_sources(tmp_path, no_mirror_env):
    etc = write_apt(tmp_path, {
        "sources.list": """\
            # deb file:///srv/old/debian bookworm main
            deb [signed-by=/k.gpg] file:///srv/mirror/security bookworm-security main
            deb [arch=amd64] file:///srv/mirror/debian bookworm main
        """})
    assert vmtest().debian_mirror(etc) == "file:///srv/mirror/debian"


def test_vm_archive_from_deb822_sources(tmp_path, no_mirror_env):
    etc = write_apt(tmp_path, {
        "sources.list.d/off.sources": """\
            Types: deb
            URIs: file:///srv/disabled/debian
            Suites: bookworm
            Enabled: no
        """,
        "sources.list.d/debian.sources": """\
            Types: deb deb-src
            # a comment between fields
            URIs:
             file:///srv/deb822/debian
            Suites: bookworm bookworm-updates
            Components: main

            Types: deb
            URIs: file:///srv/deb822/debian-security
            Suites: bookworm-security
        """})
    assert vmtest().debian_mirror(etc) == "file:///srv/deb822/debian"


def test_vm_no_archive_fails_naming_what_was_searched(tmp_path, no_mirror_env):
    etc = write_apt(tmp_path, {
        "sources.list": "deb file:///srv/x/debian trixie main\n",
        "sources.list.d/other.list": "deb file:///srv/y/debian bookworm-backports main\n"})
    module = vmtest()
    with pytest.raises(module.NoArchive) as e:
        module.debian_mirror(etc)
    message = str(e.value)
    for searched in ("sources.list", "sources.list.d/*.list", "sources.list.d/*.sources",
                     "BMAPD_VM_MIRROR"):
        assert searched in message


def test_vm_names_no_archive_host():
    """The VM test takes its archive from the host: none is written in it."""
    vm = os.path.join(SRC, "tests", "vm")
    for root, _, files in os.walk(vm):
        for name in files:
            path = os.path.join(root, name)
            with open(path, errors="replace") as f:
                text = f.read()
            assert not re.search(r"\b(?:https?|ftp)://", text), f"{path} names a URL"


# --------------------------------------------------------------- tools


def setup_deps_list(*args):
    r = subprocess.run(["bash", os.path.join(SRC, "tools", "setup-deps"), "--list", *args],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_setup_deps_runtime_is_build_and_run_only():
    runtime = setup_deps_list("--runtime")
    everything = setup_deps_list()
    assert runtime < everything
    # Test tools are not installed for the demo.
    for test_tool in ("python3-pytest", "umockdev", "bmap-tools", "qemu-system-common"):
        assert test_tool in everything and test_tool not in runtime
    assert {"meson", "libglib2.0-dev"} <= runtime
    assert setup_deps_list("--bench") > everything


def test_demo_installs_only_the_runtime_selection():
    """tools/demo asks for --runtime, and each program it runs comes from a
    package of that selection or an Essential one."""
    with open(os.path.join(SRC, "tools", "demo")) as f:
        demo = f.read()
    assert re.search(r"tools/setup-deps --runtime\b", demo)
    runtime = setup_deps_list("--runtime")
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian system (dpkg-query)")
    for program in ("mkfs.ext4", "xz", "dbus-daemon", "losetup", "cmp", "truncate"):
        path = shutil.which(program)
        if path is None:
            pytest.skip(f"{program} is not installed")
        assert re.search(rf"(^|[\s\"$]){re.escape(program)}\b", demo), f"the demo no longer runs {program}"
        # With merged /usr, dpkg knows /sbin/mkfs.ext4, not /usr/sbin/mkfs.ext4.
        for candidate in (path, os.path.realpath(path), re.sub(r"^/usr/", "/", path)):
            r = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                break
        assert r.returncode == 0, f"{path}: {r.stderr}"
        package = r.stdout.split(":")[0]
        essential = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", package],
                                   capture_output=True, text=True).stdout.strip()
        assert package in runtime or essential == "yes", \
            f"the demo runs {program} from {package}, which --runtime does not install"


# --------------------------------------------------------------- bmapctl


@pytest.mark.parametrize("command", COMMANDS)
def test_usage_line_names_the_command_once(command):
    usage = help_text(command).splitlines()[1].strip()
    assert re.fullmatch(rf"bmapctl {re.escape(command)} \[OPTION…\]( \S.*)?", usage), usage
    assert usage.count("[OPTION…]") == 1 and usage.count(command) == 1, usage


@pytest.mark.parametrize("command", ["devices", "jobs", "monitor"])
def test_local_is_refused_where_only_bmapd_answers(command):
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS="unix:path=/nonexistent/bus")
    r = subprocess.run([BMAPCTL, "--local", command], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert "--local cannot be used" in r.stderr
    assert "use --local" not in r.stderr


def test_no_bus_error_suggests_local():
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS="unix:path=/nonexistent/bus")
    r = subprocess.run([BMAPCTL, "jobs"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert "cannot connect to the system bus" in r.stderr
    assert "--local" not in r.stderr


def test_local_copy_says_what_it_erases(tmp_path):
    """In-process onto a whole disk (--local): the same one line, from sysfs."""
    if os.geteuid() != 0 or not os.path.exists("/dev/loop-control"):
        pytest.skip("needs root and loop devices")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import loop_partitions
    finally:
        sys.path.pop(0)
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    try:
        node = loop_partitions.attach_partitioned(backing, 2048, 16384)
    except OSError as e:
        pytest.skip(str(e))
    try:
        image = tmp_path / "small.img"
        image.write_bytes(b"\x42" * 65536)
        r = subprocess.run([BMAPCTL, "--local", "copy", "--nobmap", str(image), node],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        assert r.returncode == 0, r.stderr
        name = os.path.basename(node)
        lines = [l for l in r.stderr.splitlines() if l.startswith("bmapctl: erasing ")]
        assert lines == [f"bmapctl: erasing {node} (16.0 MiB): 1 partition: {name}p1 8.0 MiB"], \
            r.stderr
    finally:
        loop_partitions.detach(node)
