#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Checks of what bmapd ships besides its programs: the systemd unit, the
D-Bus policy and activation file, the polkit actions and the example rules,
the example configuration, and where meson installs them.

Usage: test-packaging.py SOURCE_ROOT BUILD_ROOT (TAP on stdout, as meson
runs it). Checks that need root, a tool or a missing file are skipped with
the reason."""

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

BUS_NAME = "org.bmapd.bmapd1"
MANAGER_PATH = "/org/bmapd/bmapd1"
EXPOSURE_LIMIT = 2.5
NOBODY = 65534

# The contract's table (DBUS-API.md): action -> (any, inactive, active).
POLKIT_DEFAULTS = {
    "org.bmapd.bmapd1.flash": ("auth_admin", "auth_admin", "auth_admin_keep"),
    "org.bmapd.bmapd1.flash-system": ("auth_admin", "auth_admin", "auth_admin"),
    "org.bmapd.bmapd1.create": ("auth_admin", "auth_admin", "yes"),
    "org.bmapd.bmapd1.cancel": ("auth_admin", "auth_admin", "auth_admin_keep"),
    "org.bmapd.bmapd1.auto-flash": ("auth_admin", "auth_admin", "auth_admin_keep"),
}
# Details bmapd passes with a Flash check; messages may only use these, as
# polkit prints an unknown $(key) literally.
POLKIT_FLASH_DETAILS = {"device", "drive.vendor", "drive.model", "drive.serial",
                        "drive.bus", "drive.removable"}

SRC = os.path.abspath(sys.argv[1]) if len(sys.argv) == 3 else ""
BUILD = os.path.abspath(sys.argv[2]) if len(sys.argv) == 3 else ""


class Skip(Exception):
    pass


def src(*parts):
    return os.path.join(SRC, *parts)


def build(*parts):
    return os.path.join(BUILD, *parts)


def need_tool(name):
    path = shutil.which(name)
    if path is None:
        raise Skip(f"{name} is not installed")
    return path


def need_root(why):
    if os.geteuid() != 0:
        raise Skip(f"needs root ({why})")


def build_options():
    with open(build("meson-info", "intro-buildoptions.json")) as f:
        return {o["name"]: o["value"] for o in json.load(f)}


def sbindir():
    opts = build_options()
    return os.path.join(opts["prefix"], opts["sbindir"])


def read_unit(path):
    """A unit file as a list of (section, key, value); keys repeat."""
    entries = []
    section = None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                assert line.endswith("]"), f"{path}:{n}: bad section header {line!r}"
                section = line[1:-1]
                continue
            assert "=" in line, f"{path}:{n}: not Key=Value: {line!r}"
            key, value = line.split("=", 1)
            entries.append((section, key.strip(), value.strip()))
    return entries


def unit_values(entries, section, key):
    return [v for s, k, v in entries if s == section and k == key]


def unit_value(entries, section, key):
    values = unit_values(entries, section, key)
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


UNIT = build("systemd", "bmapd.service")
ACTIVATION = build("dbus", "org.bmapd.bmapd1.service")
BUS_POLICY = src("dbus", "org.bmapd.bmapd1.conf")
INTROSPECTION = src("dbus", "org.bmapd.bmapd1.xml")
POLKIT_POLICY = src("polkit", "org.bmapd.bmapd1.policy")
POLKIT_RULES = src("polkit", "50-bmapd-plugdev.rules")
POLKIT_LAB_RULES = src("polkit", "50-bmapd-lab.rules")
POLKIT_SIGNED_RULES = src("polkit", "50-bmapd-signed.rules")
CONFIG_EXAMPLE = src("data", "bmapd.conf")


# ---------------------------------------------------------------- systemd


def test_unit_contract():
    """The unit is what D-Bus activation and the daemon expect."""
    u = read_unit(UNIT)
    a = read_unit(ACTIVATION)
    assert unit_value(u, "Service", "Type") == "dbus"
    assert unit_value(u, "Service", "BusName") == BUS_NAME
    assert unit_value(a, "D-BUS Service", "Name") == BUS_NAME
    assert unit_value(a, "D-BUS Service", "SystemdService") == os.path.basename(UNIT), \
        "the activation file must name this unit"
    assert unit_value(a, "D-BUS Service", "User") == "root"
    exe = os.path.join(sbindir(), "bmapd")
    assert unit_value(u, "Service", "ExecStart") == exe, f"ExecStart= is not {exe}"
    assert unit_value(a, "D-BUS Service", "Exec") == exe, f"Exec= is not {exe}"
    assert "-HUP $MAINPID" in unit_value(u, "Service", "ExecReload")
    assert unit_value(u, "Service", "WatchdogSec") not in ("", "0", "infinity")
    assert unit_value(u, "Service", "Restart") == "on-failure"


def test_unit_not_enabled_at_boot():
    """The unit has no [Install] section: D-Bus activation starts it, and a
    distribution that enables units with one would start bmapd at every boot."""
    u = read_unit(UNIT)
    install = [(k, v) for s, k, v in u if s == "Install"]
    assert not install, f"[Install] {install}: bmapd is D-Bus activated, not enabled at boot"
    with open(UNIT) as f:
        assert not re.search(r"^\s*\[Install\]", f.read(), re.M), \
            "an empty [Install] section is left"


def test_unit_sandbox_keeps_what_bmapd_needs():
    """Hardening that would silently break the daemon is not there."""
    u = read_unit(UNIT)
    families = set(unit_value(u, "Service", "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_NETLINK"}, f"RestrictAddressFamilies={families}"
    # A private network namespace cuts AF_NETLINK off udev's events.
    assert unit_values(u, "Service", "PrivateNetwork") in ([], ["no"], ["false"]), \
        "PrivateNetwork= would keep udev's events from reaching bmapd"
    # Block devices live in /dev: no private /dev, and only writable classes.
    assert unit_values(u, "Service", "PrivateDevices") in ([], ["no"], ["false"]), \
        "PrivateDevices= would hide the disks"
    assert unit_value(u, "Service", "DevicePolicy") == "closed"
    allowed = {v.split()[0]: v.split()[1] for v in unit_values(u, "Service", "DeviceAllow")}
    for group in ("block-sd", "block-mmc", "block-loop", "block-blkext", "block-virtblk"):
        assert allowed.get(group) == "rw", f"DeviceAllow={group} rw is missing"
    # /proc/swaps decides which disks are System.
    assert unit_values(u, "Service", "ProcSubset") in ([], ["all"]), \
        "ProcSubset=pid would hide /proc/swaps"
    assert unit_value(u, "Service", "CapabilityBoundingSet") == "", \
        "a capability was added: say why in the unit and here"


def test_unit_verify():
    """systemd-analyze verify finds no unknown key or bad value."""
    analyze = need_tool("systemd-analyze")
    with tempfile.TemporaryDirectory() as tmp:
        unit = os.path.join(tmp, "bmapd.service")
        text = open(UNIT).read()
        exe = os.path.join(sbindir(), "bmapd")
        if not os.access(exe, os.X_OK):
            # verify insists on an executable ExecStart; the path itself is
            # checked by test_unit_contract.
            text = text.replace(f"ExecStart={exe}\n", "ExecStart=/bin/true\n")
        with open(unit, "w") as f:
            f.write(text)
        r = subprocess.run([analyze, "verify", unit], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip() == "", \
        f"systemd-analyze verify: exit {r.returncode}: {r.stderr.strip()}"


def test_unit_exposure():
    """systemd-analyze security rates the unit at 2.5 or less."""
    analyze = need_tool("systemd-analyze")
    r = subprocess.run([analyze, "security", "--offline=true", "--no-pager", UNIT],
                       capture_output=True, text=True)
    if "--offline" in r.stderr and ("unrecognized" in r.stderr or "Unknown" in r.stderr):
        raise Skip("systemd-analyze has no --offline (systemd < 250)")
    m = re.search(r"Overall exposure level for bmapd\.service: ([0-9.]+)", r.stdout)
    assert m, f"no exposure level in: {r.stdout[-400:]} {r.stderr}"
    exposure = float(m.group(1))
    print(f"# systemd-analyze security --offline=true: exposure {exposure}")
    assert exposure <= EXPOSURE_LIMIT, f"exposure {exposure} > {EXPOSURE_LIMIT}:\n" + \
        "\n".join(l for l in r.stdout.splitlines() if l.startswith("✗"))


def run_without_capabilities(argv, **kw):
    """Runs argv as uid 0 with the unit's capability set: none at all."""
    setpriv = need_tool("setpriv")
    return subprocess.run([setpriv, "--bounding-set=-all", "--inh-caps=-all",
                           "--ambient-caps=-all", "--no-new-privs", "--"] + argv, **kw)


def test_unit_flash_without_capabilities():
    """Root without capabilities (CapabilityBoundingSet=) can write a disk."""
    need_root("loop devices")
    losetup = need_tool("losetup")
    bmapctl = build("client", "bmapctl")
    with tempfile.TemporaryDirectory() as tmp:
        backing = os.path.join(tmp, "disk")
        image = os.path.join(tmp, "image")
        with open(backing, "wb") as f:
            f.truncate(4 << 20)
        payload = bytes((i * 7 + 3) % 251 for i in range(1 << 20))
        with open(image, "wb") as f:
            f.write(payload)
        r = subprocess.run([losetup, "--find", "--show", backing], capture_output=True, text=True)
        if r.returncode != 0:
            raise Skip(f"losetup: {r.stderr.strip()}")
        loop = r.stdout.strip()
        try:
            argv = [bmapctl, "--local", "-q", "copy", "--nobmap", image, loop]
            how = "bmapctl --local copy --nobmap"
            # The engine, if it works with all capabilities; else the system
            # calls it makes (its own failure is for the engine's tests).
            use_bmapctl = os.access(bmapctl, os.X_OK)
            if use_bmapctl:
                r = subprocess.run(argv, capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"# {how} fails with all capabilities too: {r.stderr.strip()}")
                    use_bmapctl = False
                with open(loop, "r+b") as f:
                    f.write(bytes(len(payload)))
            if not use_bmapctl:
                how = "O_EXCL open and write"
                code = ("import fcntl, os, struct, sys\n"
                        "fd = os.open(sys.argv[2], os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)\n"
                        "struct.unpack('Q', fcntl.ioctl(fd, 0x80081272, bytes(8)))\n"  # BLKGETSIZE64
                        "os.pwrite(fd, open(sys.argv[1], 'rb').read(), 0)\n"
                        "os.fsync(fd)\n")
                argv = [sys.executable, "-c", code, image, loop]
            r = run_without_capabilities(argv, capture_output=True, text=True)
            assert r.returncode == 0, f"{how} without capabilities: exit {r.returncode}: {r.stderr}"
            with open(loop, "rb") as f:
                written = f.read(len(payload))
            assert written == payload, f"{how}: {loop} does not hold the image"
        finally:
            subprocess.run([losetup, "--detach", loop])


# ---------------------------------------------------------------- polkit


def parse_policy():
    return ET.parse(POLKIT_POLICY).getroot()


def test_polkit_dtd():
    """The .policy file is valid against polkit's DTD."""
    xmllint = need_tool("xmllint")
    dtd = "/usr/share/polkit-1/policyconfig-1.dtd"
    if not os.path.exists(dtd):
        raise Skip(f"{dtd} is not installed (polkitd)")
    r = subprocess.run([xmllint, "--noout", "--dtdvalid", dtd, POLKIT_POLICY],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_polkit_actions():
    """The five actions of the contract, with its defaults and messages."""
    root = parse_policy()
    actions = {a.get("id"): a for a in root.findall("action")}
    assert set(actions) == set(POLKIT_DEFAULTS), f"actions: {sorted(actions)}"
    for action_id, expected in POLKIT_DEFAULTS.items():
        a = actions[action_id]
        d = a.find("defaults")
        got = tuple((d.findtext(k) or "").strip()
                    for k in ("allow_any", "allow_inactive", "allow_active"))
        assert got == expected, f"{action_id}: defaults {got}, contract says {expected}"
        description = (a.findtext("description") or "").strip()
        message = (a.findtext("message") or "").strip()
        assert description and message, f"{action_id}: empty description or message"
        keys = set(re.findall(r"\$\((.*?)\)", message))
        if action_id in ("org.bmapd.bmapd1.flash", "org.bmapd.bmapd1.flash-system"):
            assert "device" in keys, f"{action_id}: message does not name $(device)"
            assert keys <= POLKIT_FLASH_DETAILS, f"{action_id}: unknown details {keys}"
        else:
            assert not keys, f"{action_id}: details {keys} are not passed for this action"


def test_polkit_pkaction():
    """polkit itself loads the actions (pkaction, needs a running polkitd)."""
    pkaction = need_tool("pkaction")
    installed = os.path.join("/usr/share/polkit-1/actions", os.path.basename(POLKIT_POLICY))
    if not os.path.exists(installed) or open(installed).read() != open(POLKIT_POLICY).read():
        raise Skip(f"{installed} is not this tree's policy")
    r = subprocess.run([pkaction, "--action-id", "org.bmapd.bmapd1.flash", "--verbose"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise Skip(f"pkaction: {r.stderr.strip()} (no polkitd on the system bus?)")
    assert "implicit active:   auth_admin_keep" in r.stdout, r.stdout


# The harness polkitd would provide to a rules file, in ES5 (polkitd runs
# rules in Duktape): it calls every rule for each case the way polkitd does.
RULES_HARNESS = r"""
var rules = [];
var polkit = {
  Result: { NO: "no", YES: "yes", AUTH_SELF: "auth_self",
            AUTH_SELF_KEEP: "auth_self_keep", AUTH_ADMIN: "auth_admin",
            AUTH_ADMIN_KEEP: "auth_admin_keep", NOT_HANDLED: null },
  addRule: function (f) { rules.push(f); },
  addAdminRule: function (f) {},
  log: function (m) {},
  spawn: function (argv) { throw new Error("rules must not spawn " + argv); }
};
(function () {
%RULES%
})();
var cases = %CASES%;
var results = [];
for (var i = 0; i < cases.length; i++) {
  var c = cases[i];
  var action = { id: c.action, lookup: function (k) { return c.details[k]; } };
  var subject = { user: "alice", groups: c.groups, local: c.local, active: c.active,
                  isInGroup: function (g) { return c.groups.indexOf(g) >= 0; },
                  isInNetGroup: function (g) { return false; } };
  var result = "not handled";
  for (var j = 0; j < rules.length; j++) {
    var r = rules[j](action, subject);
    if (r !== undefined && r !== null) { result = r; break; }
  }
  results.push(result);
}
JSON.stringify(results);
"""

USB_STICK = {"device": "/dev/sdb", "drive.bus": "usb", "drive.removable": "true"}
SYSTEM_DISK = {"device": "/dev/nvme0n1", "drive.bus": "nvme", "drive.removable": "false"}
# The signed-bmap rule's placeholder key, as bmapd reports a trusted one.
RELEASE_SIGNED = {"bmap.signature": "trusted",
                  "bmap.signer": "0123456789ABCDEF0123456789ABCDEF01234567"}
SEAT = {"local": True, "active": True}
SSH = {"local": False, "active": False}
RULES_CASES = {
    # rules file: [(action, groups, details, session, expected)]
    POLKIT_RULES: [
        ("org.bmapd.bmapd1.flash", ["plugdev"], USB_STICK, SEAT, "yes"),
        ("org.bmapd.bmapd1.flash", ["users"], USB_STICK, SEAT, "not handled"),
        ("org.bmapd.bmapd1.flash", ["plugdev"], SYSTEM_DISK, SEAT, "not handled"),
        ("org.bmapd.bmapd1.flash-system", ["plugdev"], SYSTEM_DISK, SEAT, "not handled"),
        ("org.bmapd.bmapd1.flash-system", ["plugdev"], USB_STICK, SEAT, "not handled"),
        ("org.bmapd.bmapd1.auto-flash", ["plugdev"], {}, SEAT, "not handled"),
        ("org.bmapd.bmapd1.cancel", ["plugdev"], {}, SEAT, "not handled"),
        ("org.freedesktop.udisks2.filesystem-mount", ["plugdev"], USB_STICK, SEAT, "not handled"),
    ],
    # Signed bmaps: plugdev at the machine, only with the release key.
    POLKIT_SIGNED_RULES: [
        ("org.bmapd.bmapd1.flash", ["plugdev"], dict(USB_STICK, **RELEASE_SIGNED), SEAT, "yes"),
        ("org.bmapd.bmapd1.flash", ["plugdev"],
         dict(USB_STICK, **{"bmap.signature": "trusted", "bmap.signer": "F" * 40}), SEAT,
         "not handled"),
        ("org.bmapd.bmapd1.flash", ["plugdev"], dict(USB_STICK, **{"bmap.signature": "untrusted"}),
         SEAT, "not handled"),
        ("org.bmapd.bmapd1.flash", ["plugdev"], dict(USB_STICK, **{"bmap.signature": "none"}),
         SEAT, "not handled"),
        ("org.bmapd.bmapd1.flash", ["users"], dict(USB_STICK, **RELEASE_SIGNED), SEAT,
         "not handled"),
        ("org.bmapd.bmapd1.flash", ["plugdev"], dict(USB_STICK, **RELEASE_SIGNED), SSH,
         "not handled"),
        ("org.bmapd.bmapd1.flash", ["plugdev"], dict(SYSTEM_DISK, **RELEASE_SIGNED), SEAT,
         "not handled"),
        ("org.bmapd.bmapd1.flash-system", ["plugdev"], dict(SYSTEM_DISK, **RELEASE_SIGNED), SEAT,
         "not handled"),
    ],
    # A lab: flashing removable drives from any session, ssh included.
    POLKIT_LAB_RULES: [
        ("org.bmapd.bmapd1.flash", ["bmapd-lab"], USB_STICK, SSH, "yes"),
        ("org.bmapd.bmapd1.flash", ["bmapd-lab"], USB_STICK, SEAT, "yes"),
        ("org.bmapd.bmapd1.flash", ["plugdev"], USB_STICK, SSH, "not handled"),
        ("org.bmapd.bmapd1.flash", ["bmapd-lab"], SYSTEM_DISK, SSH, "not handled"),
        ("org.bmapd.bmapd1.flash-system", ["bmapd-lab"], SYSTEM_DISK, SSH, "not handled"),
        ("org.bmapd.bmapd1.flash-system", ["bmapd-lab"], USB_STICK, SSH, "not handled"),
        ("org.bmapd.bmapd1.auto-flash", ["bmapd-lab"], {}, SSH, "not handled"),
        ("org.bmapd.bmapd1.cancel", ["bmapd-lab"], {}, SSH, "not handled"),
        ("org.bmapd.bmapd1.create", ["bmapd-lab"], {}, SSH, "not handled"),
    ],
}


def rules_program(rules):
    cases = [dict(action=a, groups=g, details=d, **session)
             for a, g, d, session, _ in RULES_CASES[rules]]
    return (RULES_HARNESS.replace("%RULES%", open(rules).read())
            .replace("%CASES%", json.dumps(cases)))


def check_rules_results(engine, rules, results):
    name = os.path.basename(rules)
    assert len(results) == len(RULES_CASES[rules]), f"{engine}: {name}: {results!r}"
    for (action, groups, details, session, expected), got in zip(RULES_CASES[rules], results):
        assert got == expected, \
            f"{engine}: {name}: {action} by groups {groups} on {details} from {session}: " \
            f"{got!r}, expected {expected!r}"


def test_polkit_rules_duktape():
    """The example rules run in polkitd's engine (Duktape) and decide right."""
    lib = ctypes.util.find_library("duktape")
    if lib is None:
        raise Skip("libduktape (polkitd's JavaScript engine) is not installed")
    duk = ctypes.CDLL(lib)
    duk.duk_create_heap.restype = ctypes.c_void_p
    duk.duk_create_heap.argtypes = [ctypes.c_void_p] * 5
    duk.duk_eval_raw.restype = ctypes.c_int
    duk.duk_eval_raw.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint]
    duk.duk_safe_to_lstring.restype = ctypes.c_char_p
    duk.duk_safe_to_lstring.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    duk.duk_destroy_heap.argtypes = [ctypes.c_void_p]
    # duk_peval_string(): EVAL | SAFE | NOSOURCE | STRLEN | NOFILENAME (Duktape 2.x)
    flags = (1 << 3) | (1 << 7) | (1 << 9) | (1 << 10) | (1 << 11)
    for rules in RULES_CASES:
        ctx = duk.duk_create_heap(None, None, None, None, None)
        assert ctx, "duk_create_heap failed"
        try:
            rc = duk.duk_eval_raw(ctx, rules_program(rules).encode(), 0, flags)
            out = duk.duk_safe_to_lstring(ctx, -1, None).decode()
        finally:
            duk.duk_destroy_heap(ctx)
        assert rc == 0, f"Duktape: {os.path.basename(rules)}: {out}"
        check_rules_results("Duktape", rules, json.loads(out))


def test_polkit_rules_node():
    """The example rules pass `node --check` and decide right in node."""
    node = need_tool("node")
    for rules in RULES_CASES:
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "rules.js")
            shutil.copy(rules, copy)
            r = subprocess.run([node, "--check", copy], capture_output=True, text=True)
            assert r.returncode == 0, f"node --check {os.path.basename(rules)}: {r.stderr}"
            program = os.path.join(tmp, "harness.js")
            with open(program, "w") as f:
                f.write(rules_program(rules) + "console.log(JSON.stringify(results));\n")
            r = subprocess.run([node, program], capture_output=True, text=True)
        assert r.returncode == 0, f"node: {os.path.basename(rules)}: {r.stderr}"
        check_rules_results("node", rules, json.loads(r.stdout))


# ---------------------------------------------------------------- D-Bus


def default_policy_rules():
    root = ET.parse(BUS_POLICY).getroot()
    rules = []
    for policy in root.findall("policy"):
        if policy.get("context") == "default":
            rules += [(r.tag, dict(r.attrib)) for r in policy]
    return root, rules


def test_dbus_policy_covers_interfaces():
    """Every interface of the introspection XML is open to callers."""
    root, rules = default_policy_rules()
    owners = [p for p in root.findall("policy") for r in p if r.get("own") == BUS_NAME]
    assert [p.attrib for p in owners] == [{"user": "root"}], "only root may own the name"
    allowed = {r.get("send_interface") for tag, r in rules
               if tag == "allow" and r.get("send_destination") == BUS_NAME
               and "send_member" not in r}
    assert all(r.get("send_destination") == BUS_NAME for _, r in rules), \
        "the default context opens only bmapd"
    if not os.path.exists(INTROSPECTION):
        raise Skip(f"{INTROSPECTION} is not written yet")
    xml = ET.parse(INTROSPECTION).getroot()
    interfaces = {i.get("name") for i in xml.iter("interface")}
    missing = {i for i in interfaces
               if i not in allowed and i != "org.freedesktop.DBus.Properties"}
    assert not missing, f"bus policy does not open {sorted(missing)}"


OWNER = r"""
import sys
from gi.repository import Gio, GLib
bus = Gio.DBusConnection.new_for_address_sync(
    sys.argv[1], Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT |
    Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
r = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                  "RequestName", GLib.Variant("(su)", (sys.argv[2], 4)),
                  GLib.VariantType("(u)"), 0, 5000, None)
print(r.unpack()[0], flush=True)
GLib.MainLoop().run()
"""

CALLER = r"""
import json, sys
from gi.repository import Gio, GLib
bus = Gio.DBusConnection.new_for_address_sync(
    sys.argv[1], Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT |
    Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
out = {}
def outcome(dest, path, iface, member, args):
    try:
        bus.call_sync(dest, path, iface, member, args, None, 0, 5000, None)
        return "ok"
    except GLib.Error as e:
        return Gio.DBusError.get_remote_error(e) or e.message
for dest, path, iface, member, sig, args in json.loads(sys.argv[2]):
    if sig.endswith("v)"):  # the last argument is a string in a variant
        args = args[:-1] + [GLib.Variant("s", args[-1])]
    out[iface + "." + member] = outcome(dest, path, iface, member,
                                        GLib.Variant(sig, tuple(args)) if sig else None)
print(json.dumps(out))
"""

ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"


def bus_config(tmp, socket, servicedir):
    """The distribution's system bus policy with only bmapd's file added."""
    system_conf = "/usr/share/dbus-1/system.conf"
    if not os.path.exists(system_conf):
        raise Skip(f"{system_conf} is not installed")
    root = ET.parse(system_conf).getroot()
    for tag in ("user", "fork", "pidfile", "syslog", "listen", "servicehelper",
                "standard_system_servicedirs", "includedir", "include", "servicedir"):
        for e in root.findall(tag):
            root.remove(e)
    ET.SubElement(root, "listen").text = f"unix:path={socket}"
    ET.SubElement(root, "servicedir").text = servicedir
    ET.SubElement(root, "include").text = BUS_POLICY
    path = os.path.join(tmp, "bus.conf")
    with open(path, "w") as f:
        f.write('<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"'
                ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n')
        f.write(ET.tostring(root, encoding="unicode"))
    return path


def call_as(address, uid, calls):
    argv = [sys.executable, "-c", CALLER, address, json.dumps(calls)]
    if uid != 0:
        argv = [need_tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + argv
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/"})
    assert r.returncode == 0, f"caller uid {uid}: {r.stderr}"
    return json.loads(r.stdout)


def test_dbus_policy_on_a_bus():
    """On a bus with the system policy: root owns the name, anyone calls
    bmapd's interfaces, nobody else owns it or calls anything else, and the
    activation file is accepted."""
    need_root("switching to an unprivileged user")
    dbus_daemon = need_tool("dbus-daemon")
    try:
        import gi  # noqa: F401
    except ImportError:
        raise Skip("python3-gi is not installed")
    procs = []
    tmp = tempfile.mkdtemp(prefix="bmapd-bus-")
    try:
        os.chmod(tmp, 0o755)
        services = os.path.join(tmp, "system-services")
        os.mkdir(services)
        shutil.copy(ACTIVATION, services)
        socket = os.path.join(tmp, "bus")
        config = bus_config(tmp, socket, services)
        log = open(os.path.join(tmp, "bus.log"), "w")
        daemon = subprocess.Popen([dbus_daemon, f"--config-file={config}", "--nofork",
                                   "--print-address=1"], stdout=subprocess.PIPE,
                                  stderr=log, text=True)
        log.close()
        procs.append(daemon)
        address = daemon.stdout.readline().strip()
        assert address, "dbus-daemon did not start"

        owner = subprocess.Popen([sys.executable, "-c", OWNER, address, BUS_NAME],
                                 stdout=subprocess.PIPE, text=True)
        procs.append(owner)
        assert owner.stdout.readline().strip() == "1", "root could not own " + BUS_NAME

        def call(iface, member, sig="", args=(), dest=BUS_NAME, path=MANAGER_PATH):
            return [dest, path, iface, member, sig, list(args)]

        open_calls = [
            call("org.bmapd.bmapd1.Manager", "Flash"),
            call("org.bmapd.bmapd1.Device", "Anything"),
            call("org.bmapd.bmapd1.Job", "Cancel"),
            call("org.bmapd.bmapd1.AutoFlash", "Remove"),
            call("org.freedesktop.DBus.ObjectManager", "GetManagedObjects"),
            call("org.freedesktop.DBus.Introspectable", "Introspect"),
            call("org.freedesktop.DBus.Peer", "Ping"),
            call("org.freedesktop.DBus.Properties", "Get", "(ss)",
                 ("org.bmapd.bmapd1.Manager", "Version")),
            call("org.freedesktop.DBus.Properties", "GetAll", "(s)", ("org.bmapd.bmapd1.Manager",)),
        ]
        closed_calls = [
            call("org.freedesktop.DBus.Properties", "Set", "(ssv)",
                 ("org.bmapd.bmapd1.Manager", "Version", "x")),
            call("org.example.NotBmapd", "Method"),
            call("org.freedesktop.DBus", "RequestName", "(su)", (BUS_NAME, 0),
                 dest="org.freedesktop.DBus", path="/org/freedesktop/DBus"),
        ]
        got = call_as(address, NOBODY, open_calls + closed_calls)
        for c in open_calls:
            name = c[2] + "." + c[3]
            assert got[name] != ACCESS_DENIED, f"uid {NOBODY} may not call {name}"
        for c in closed_calls:
            name = c[2] + "." + c[3]
            assert got[name] == ACCESS_DENIED, f"uid {NOBODY} calling {name}: {got[name]}"

        got = call_as(address, 0, [call("org.example.NotBmapd", "Method")])
        assert got["org.example.NotBmapd.Method"] != ACCESS_DENIED, "root may call anything"

        names = activatable_names(address)
        assert BUS_NAME in names, f"dbus-daemon did not accept {ACTIVATION}: {names}"
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def activatable_names(address):
    code = ("import sys\nfrom gi.repository import Gio, GLib\n"
            "bus = Gio.DBusConnection.new_for_address_sync(sys.argv[1], "
            "Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | "
            "Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)\n"
            "r = bus.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', "
            "'org.freedesktop.DBus', 'ListActivatableNames', None, None, 0, 5000, None)\n"
            "print('\\n'.join(r.unpack()[0]))\n")
    r = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


# ---------------------------------------------------------------- config


def test_config_example():
    """The example parses, and uncommented it states the daemon's defaults."""
    try:
        from gi.repository import GLib
    except ImportError:
        raise Skip("python3-gi is not installed")
    text = open(CONFIG_EXAMPLE).read()
    kf = GLib.KeyFile()
    kf.load_from_data(text, len(text.encode()), GLib.KeyFileFlags.NONE)
    assert kf.get_groups()[0] == ["Daemon"], "as shipped, only [Daemon] is active"
    assert kf.get_keys("Daemon")[0] == [], "as shipped, every setting is commented out"
    # Uncomment the Key=Value lines of [Daemon]: the documented defaults.
    active = re.sub(r"^#([A-Za-z]+=)", r"\1", text.split("# [AutoFlash]")[0], flags=re.M)
    kf = GLib.KeyFile()
    kf.load_from_data(active, len(active.encode()), GLib.KeyFileFlags.NONE)
    documented = {k: kf.get_integer("Daemon", k) for k in kf.get_keys("Daemon")[0]}
    assert set(documented) == {"IdleTimeoutSec", "MaxJobs", "MaxJobsPerUser", "MaxRequestsPerUser",
                               "RequestTimeoutSec"}, f"keys: {sorted(documented)}"
    header = src("daemon", "bmapd-config.h")
    if not os.path.exists(header):
        raise Skip(f"{header} is not written yet: defaults not compared")
    defines = dict(re.findall(r"#define (BMAPD_CONFIG_\w+)\s+(\d+)", open(header).read()))
    daemon = {"IdleTimeoutSec": int(defines["BMAPD_CONFIG_DEFAULT_IDLE_TIMEOUT_SEC"]),
              "MaxJobs": int(defines["BMAPD_CONFIG_DEFAULT_MAX_JOBS"]),
              "MaxJobsPerUser": int(defines["BMAPD_CONFIG_DEFAULT_MAX_JOBS_PER_USER"]),
              "MaxRequestsPerUser": int(defines["BMAPD_CONFIG_DEFAULT_MAX_REQUESTS_PER_USER"]),
              "RequestTimeoutSec": int(defines["BMAPD_CONFIG_DEFAULT_REQUEST_TIMEOUT_SEC"])}
    assert documented == daemon, f"example documents {documented}, bmapd uses {daemon}"


# ---------------------------------------------------------------- install


def test_install_paths():
    """meson installs each file where its consumer looks, under the prefix."""
    with open(build("meson-info", "intro-installed.json")) as f:
        installed = json.load(f)
    prefix = build_options()["prefix"]
    expected = {
        UNIT: ("systemd/system", "bmapd.service"),
        ACTIVATION: ("dbus-1/system-services", "org.bmapd.bmapd1.service"),
        BUS_POLICY: ("dbus-1/system.d", "org.bmapd.bmapd1.conf"),
        POLKIT_POLICY: ("polkit-1/actions", "org.bmapd.bmapd1.policy"),
        POLKIT_RULES: ("doc/bmapd/examples", "50-bmapd-plugdev.rules"),
        POLKIT_LAB_RULES: ("doc/bmapd/examples", "50-bmapd-lab.rules"),
        CONFIG_EXAMPLE: ("doc/bmapd/examples", "bmapd.conf"),
    }
    if os.path.exists(INTROSPECTION):
        expected[INTROSPECTION] = ("dbus-1/interfaces", "org.bmapd.bmapd1.xml")
    for source, (folder, name) in expected.items():
        dest = installed.get(source)
        assert dest, f"{source} is not installed"
        assert dest.endswith("/" + folder + "/" + name), f"{source} goes to {dest}"
        # Debian's systemd.pc puts /usr's units in /lib/systemd/system.
        if not (prefix == "/usr" and dest == "/lib/systemd/system/bmapd.service"):
            assert dest.startswith(prefix.rstrip("/") + "/"), f"{dest} is outside {prefix}"
    # Shell completion, where each shell looks: pkg-config's directory for
    # bash and fish (under this prefix), zsh's site-functions.
    datadir = os.path.join(prefix, build_options()["datadir"])
    completion = {
        src("data", "bmapctl.bash-completion"): ("bash-completion", "bash-completion/completions",
                                                 "bmapctl"),
        src("data", "zsh", "_bmapctl"): (None, "zsh/site-functions", "_bmapctl"),
        src("data", "fish", "bmapctl.fish"): ("fish", "fish/vendor_completions.d", "bmapctl.fish"),
    }
    zsh_option = build_options().get("zshcompletiondir", "")
    for source, (pc, folder, name) in completion.items():
        dest = installed.get(source)
        if pc is None and zsh_option:
            assert dest == (None if zsh_option == "no" else os.path.join(zsh_option, name)), \
                f"{source} goes to {dest}, -Dzshcompletiondir={zsh_option}"
            continue
        assert dest, f"{source} is not installed"
        where = os.path.join(datadir, folder)
        if pc and shutil.which("pkg-config"):
            r = subprocess.run(["pkg-config", "--variable=completionsdir",
                                f"--define-variable=datadir={datadir}", pc],
                               capture_output=True, text=True)
            if r.returncode == 0:
                where = r.stdout.strip()
        assert dest == os.path.join(where, name), f"{source} goes to {dest}, not {where}"
        assert dest.startswith(prefix.rstrip("/") + "/"), f"{dest} is outside {prefix}"
    # Rules are the administrator's choice: never installed active.
    assert not any("/rules.d/" in d for d in installed.values()), "a rules file is active"


TESTS = [
    test_unit_contract,
    test_unit_not_enabled_at_boot,
    test_unit_sandbox_keeps_what_bmapd_needs,
    test_unit_verify,
    test_unit_exposure,
    test_unit_flash_without_capabilities,
    test_polkit_dtd,
    test_polkit_actions,
    test_polkit_pkaction,
    test_polkit_rules_duktape,
    test_polkit_rules_node,
    test_dbus_policy_covers_interfaces,
    test_dbus_policy_on_a_bus,
    test_config_example,
    test_install_paths,
]


def main():
    if not SRC:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"1..{len(TESTS)}", flush=True)
    failed = 0
    for n, test in enumerate(TESTS, 1):
        name = test.__name__[len("test_"):].replace("_", "-")
        try:
            test()
            print(f"ok {n} - {name}")
        except Skip as e:
            print(f"ok {n} - {name} # SKIP {e}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next test runs
            failed += 1
            print(f"not ok {n} - {name}")
            for line in f"{type(e).__name__}: {e}".splitlines():
                print(f"# {line}")
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
