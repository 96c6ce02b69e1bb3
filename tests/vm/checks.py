# SPDX-License-Identifier: GPL-2.0-or-later
"""The VM test's checks, run in this order by vmtest.py on a booted guest.

Each check drives the guest as a user would (bmapctl as alice or bob,
systemctl as root), reads what bmapd publishes over D-Bus with busctl, and
checks written bytes on the host, in the files that back the USB disks.
"""

import hashlib
import json
import os
import re
import struct
import subprocess
import time
import traceback

BUS_NAME = 'org.bmapd.bmapd1'
MANAGER = '/org/bmapd/bmapd1'
DEVICE_IFACE = 'org.bmapd.bmapd1.Device'
JOB_IFACE = 'org.bmapd.bmapd1.Job'
AUTOFLASH_IFACE = 'org.bmapd.bmapd1.AutoFlash'
ERROR_PREFIX = 'org.bmapd.bmapd1.Error.'

SMALL = '/srv/bmapd-vm/small.img'
BIG = '/srv/bmapd-vm/big.img'
AUTOFLASH_CONF = '/etc/bmapd/autoflash.d/50-vmtest.conf'

MiB = 1024 * 1024
# Throttled cards write 8 MiB/s: big.img (192 MiB) takes 24 s, time enough
# to pull the card out or stop bmapd in the middle.
SLOW_BPS = 8 * MiB
SLOW_CARD_SIZE = 256 * MiB
# What may be written already without reaching the card: the engine keeps up
# to two 32 MiB writeback windows dirty. An interruption with less than
# this left to write could only cut the final sync short.
IN_FLIGHT = 64 * MiB

CHECKS = []


class Fail(Exception):
    pass


def check(name, title):
    def register(fn):
        CHECKS.append((name, title, fn))
        return fn
    return register


def expect(condition, message):
    if not condition:
        raise Fail(message)


def run_check(ctx, fn):
    """Returns (PASS or FAIL, detail, seconds)."""
    start = time.monotonic()
    ctx.notes = []
    try:
        fn(ctx)
        status, detail = 'PASS', '; '.join(ctx.notes)
    except Fail as e:
        status, detail = 'FAIL', str(e)
    except Exception as e:  # the harness itself: QMP, the agent, a timeout
        status, detail = 'FAIL', f'{type(e).__name__}: {e}'
        traceback.print_exc()
    finally:
        ctx.cleanup()
    return status, detail, time.monotonic() - start


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def first_difference(a, b):
    for i in range(0, min(len(a), len(b)), 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            for j in range(i, min(i + 4096, len(a), len(b))):
                if a[j] != b[j]:
                    return j
    return min(len(a), len(b))


def busctl_value(v):
    """busctl --json=short's {"type": ..., "data": ...} to a plain value."""
    if isinstance(v, dict) and set(v) == {'type', 'data'}:
        return v['data']
    return v


class Context:
    def __init__(self, vm, workdir, imgdir):
        self.vm = vm
        self.workdir = workdir
        self.imgdir = imgdir
        self.notes = []
        self.cleanups = []
        self.cards = {}

    def note(self, text):
        self.notes.append(text)
        print('   ' + text, flush=True)

    def cleanup(self):
        while self.cleanups:
            fn = self.cleanups.pop()
            try:
                fn()
            except Exception as e:
                print(f'   cleanup: {type(e).__name__}: {e}', flush=True)

    # Guest commands.

    def sh(self, script, timeout=120):
        return self.vm.sh(script, timeout)

    def user(self, who, command, timeout=120):
        return self.vm.user(who, command, timeout)

    def unit_state(self):
        res = self.sh('systemctl show bmapd.service -p ActiveState -p SubState -p Result '
                      '-p MainPID -p NRestarts -p LoadState')
        return dict(line.split('=', 1) for line in res.out.splitlines() if '=' in line)

    def bmapd_log(self, lines=8):
        """bmapd's last journal lines, to say why a check failed."""
        res = self.sh(f'journalctl -b -u bmapd.service -o cat --no-pager -n {lines}')
        return '\n  '.join([''] + res.out.strip().splitlines())

    def name_has_owner(self):
        res = self.sh('busctl call org.freedesktop.DBus /org/freedesktop/DBus '
                      f'org.freedesktop.DBus NameHasOwner s {BUS_NAME}')
        return res.out.strip() == 'b true'

    # bmapd over D-Bus (busctl activates bmapd when it is not running).

    def objects(self):
        """{path: {interface: {property: value}}} from GetManagedObjects."""
        res = self.sh(f'busctl --json=short call {BUS_NAME} {MANAGER} '
                      'org.freedesktop.DBus.ObjectManager GetManagedObjects')
        if res.status != 0:
            raise Fail(f'GetManagedObjects failed: {res}')
        data = json.loads(res.out)['data'][0]
        return {path: {iface: {k: busctl_value(v) for k, v in props.items()}
                       for iface, props in ifaces.items()}
                for path, ifaces in data.items()}

    def device(self, node):
        """(object path, properties) of the device bmapd publishes for node."""
        for path, ifaces in self.objects().items():
            props = ifaces.get(DEVICE_IFACE)
            if props and props.get('Node') == node:
                return path, props
        return None, None

    def wait_device(self, node, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            path, props = self.device(node)
            if path or time.monotonic() > deadline:
                break
            time.sleep(1)
        expect(path, f'bmapd publishes no device with Node {node} within {timeout} s')
        return path, props

    def job(self, path):
        ifaces = self.objects().get(path)
        return ifaces.get(JOB_IFACE) if ifaces else None

    def wait_job_writing(self, device_path, client, timeout=90):
        """The job on the device once it has written something, with more
        than IN_FLIGHT bytes still to write; fails when the client ended
        first or the job got too far to be interrupted mid-write."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.vm.agent.poll(client)
            if done is not None:
                raise Fail(f'bmapctl copy ended before its job was seen writing: {done}')
            objs = self.objects()
            job_path = objs.get(device_path, {}).get(DEVICE_IFACE, {}).get('Job', '/')
            if job_path and job_path != '/':
                props = objs.get(job_path, {}).get(JOB_IFACE, {})
                done, total = props.get('BytesDone', 0), props.get('BytesTotal', 0)
                if props.get('State') in ('writing', 'syncing') and done > 0:
                    expect(done + IN_FLIGHT < total,
                           f'{job_path}: first seen at {done} of {total} bytes, too close to '
                           'the end to interrupt it mid-write')
                    return job_path, props
            time.sleep(0.5)
        raise Fail(f'no job was seen writing onto {device_path} within {timeout} s')

    # USB disks.

    def card(self, name, serial, write_bps=None, size=64 * MiB):
        """Plugs a new USB disk backed by a zeroed host file; returns the
        guest's node (/dev/sdX). Pulled out again at the end of the check."""
        path = os.path.join(self.workdir, f'card-{name}.img')
        with open(path, 'wb') as f:
            f.truncate(size)
        self.vm.plug(name, path, serial, write_bps)
        self.cleanups.append(lambda: self.vm.unplug(name))
        self.cards[name] = path
        node = self.wait_disk(serial)
        return node, path

    def wait_disk(self, serial, timeout=60):
        script = f'''
for i in $(seq 1 {timeout}); do
  udevadm settle --timeout=10
  for d in /sys/block/sd*; do
    [ -e "$d" ] || continue
    if udevadm info -q property -p "$d" | grep -qx "ID_SERIAL_SHORT={serial}"; then
      echo "/dev/${{d##*/}}"; exit 0
    fi
  done
  sleep 1
done
exit 1'''
        res = self.sh(script, timeout + 30)
        expect(res.status == 0, f'the guest shows no disk with serial {serial} within {timeout} s')
        return res.out.strip()

    def udev(self, node):
        res = self.sh(f'udevadm info -q property -n {node}')
        return dict(line.split('=', 1) for line in res.out.splitlines() if '=' in line)

    def expect_image_on_card(self, card_path, image_name):
        image = os.path.join(self.imgdir, image_name)
        with open(image, 'rb') as f:
            want = f.read()
        with open(card_path, 'rb') as f:
            got = f.read()
        if got[:len(want)] != want:
            off = first_difference(got, want)
            raise Fail(f'{card_path}: differs from {image_name} at byte {off} '
                       f'(of {len(want)}) after the card was pulled out')
        expect(got[len(want):].count(0) == len(got) - len(want),
               f'{card_path}: bytes written past the end of {image_name}')


def unescape_udev(value):
    return re.sub(r'\\x([0-9a-fA-F]{2})', lambda m: chr(int(m.group(1), 16)), value)


def norm(text):
    return ' '.join(text.replace('_', ' ').split()).lower()


@check('activation', 'bmapd is not running after boot and is started by D-Bus activation '
       'on the first `bmapctl devices`')
def check_activation(ctx):
    state = ctx.unit_state()
    expect(state.get('LoadState') == 'loaded',
           f'bmapd.service is not installed in the guest (LoadState={state.get("LoadState")})')
    expect(state.get('ActiveState') == 'inactive',
           f'bmapd.service is {state.get("ActiveState")} after boot; it must wait for activation')
    expect(not ctx.name_has_owner(), f'{BUS_NAME} is owned after boot')
    res = ctx.sh('busctl call org.freedesktop.DBus /org/freedesktop/DBus '
                 'org.freedesktop.DBus ListActivatableNames')
    expect(BUS_NAME in res.out, f'{BUS_NAME} is not D-Bus activatable on the system bus')

    res = ctx.user('alice', 'bmapctl devices')
    expect(res.status == 0, f'alice: bmapctl devices: {res}')
    state = ctx.unit_state()
    expect(state.get('ActiveState') == 'active',
           f'bmapd.service is {state.get("ActiveState")} after `bmapctl devices`')
    expect(ctx.name_has_owner(), f'{BUS_NAME} has no owner after `bmapctl devices`')
    res = ctx.sh('journalctl -b -u dbus.service -o cat --no-pager')
    line = next((l for l in res.out.splitlines()
                 if "Activating via systemd: service name='org.bmapd.bmapd1'" in l), None)
    expect(line, 'dbus-daemon logged no activation of org.bmapd.bmapd1')
    ctx.note(line.strip())


@check('usb-disk-removable', 'a hot-plugged USB disk shows up as Removable, not System, '
       'with its vendor, model and serial')
def check_usb_disk(ctx):
    serial = 'BMAPVM-REMOVABLE1'
    node, _ = ctx.card('removable', serial)
    udev = ctx.udev(node)
    path, dev = ctx.wait_device(node)
    ctx.note(f'{node}: ' + ', '.join(f'{k}={dev.get(k)!r}' for k in
                                     ('Bus', 'Removable', 'System', 'Vendor', 'Model', 'Serial')))
    expect(dev.get('Removable') is True, f'{node}: Removable is {dev.get("Removable")}')
    expect(dev.get('System') is False, f'{node}: System is {dev.get("System")}')
    expect(dev.get('Bus') == 'usb', f'{node}: Bus is {dev.get("Bus")!r}, not usb')
    for prop, key in (('Vendor', 'ID_VENDOR'), ('Model', 'ID_MODEL')):
        udev_values = {norm(udev.get(key, '')), norm(unescape_udev(udev.get(key + '_ENC', '')))}
        expect(dev.get(prop) and norm(dev[prop]) in udev_values,
               f'{node}: {prop} is {dev.get(prop)!r}; udev says {udev.get(key)!r}')
    expect(serial in (dev.get('Serial') or ''), f'{node}: Serial is {dev.get("Serial")!r}, '
           f'not {serial}')
    res = ctx.user('alice', 'bmapctl devices')
    expect(res.status == 0, f'alice: bmapctl devices: {res}')
    row = next((l for l in res.out.splitlines() if node in l.split() or
                node.rsplit('/', 1)[-1] in l.split()), None)
    expect(row and serial in row, f'bmapctl devices lists no {node} with serial {serial}:\n{res.out}')


@check('allowed-user-flashes', 'alice (plugdev, allowed by the polkit rule) flashes a USB disk '
       'with `bmapctl copy`, no password; the host reads the image back from the card')
def check_allowed_user(ctx):
    node, card = ctx.card('alice', 'BMAPVM-ALICE1')
    ctx.wait_device(node)
    res = ctx.user('alice', f'bmapctl copy {SMALL} {node}', timeout=300)
    expect(res.status == 0, f'alice: bmapctl copy {SMALL} {node}: {res}')
    ctx.cleanup()  # pull the card out: qemu closes the file
    ctx.expect_image_on_card(card, 'small.img')
    ctx.note(f'{card}: holds small.img')


@check('other-user-refused', 'bob (not allowed) is refused with exit status 3 and nothing is written')
def check_other_user(ctx):
    node, card = ctx.card('bob', 'BMAPVM-BOB1')
    before = sha256(card)
    ctx.wait_device(node)
    res = ctx.user('bob', f'bmapctl copy {SMALL} {node}', timeout=300)
    expect(res.status == 3, f'bob: bmapctl copy {SMALL} {node}: expected exit 3, got {res}')
    ctx.note('bob: ' + (res.err.strip().splitlines() or [''])[-1])
    ctx.cleanup()
    expect(sha256(card) == before, f'{card}: changed although bob was refused')


@check('system-disk-is-system', "the guest's root disk is listed as System")
def check_system_disk(ctx):
    path, dev = ctx.wait_device('/dev/vda')
    ctx.note('/dev/vda: ' + ', '.join(f'{k}={dev.get(k)!r}' for k in ('Bus', 'Removable', 'System')))
    expect(dev.get('System') is True, f'/dev/vda: System is {dev.get("System")}')
    expect(dev.get('Removable') is False, f'/dev/vda: Removable is {dev.get("Removable")}')
    res = ctx.user('alice', 'bmapctl devices --all')
    expect(res.status == 0, f'alice: bmapctl devices --all: {res}')
    row = next((l for l in res.out.splitlines() if 'vda' in l), None)
    expect(row and 'system' in row.lower(),
           f'bmapctl devices --all shows no vda flagged system:\n{res.out}')


@check('system-disk-refused', "a flash onto the root disk is refused without the flash-system "
       "action (alice: exit 3, nothing written)")
def check_system_refused(ctx):
    res = ctx.user('alice', f'bmapctl copy {SMALL} /dev/vda', timeout=300)
    expect(res.status == 3, f'alice: bmapctl copy {SMALL} /dev/vda: expected exit 3, got {res}')
    ctx.note('alice: ' + (res.err.strip().splitlines() or [''])[-1])
    res = ctx.sh('head -c 1048576 /dev/vda | grep -a -c BMAPD-VM-TEST-IMAGE')
    expect(res.out.strip() == '0', '/dev/vda holds the test image: it was written')


def autoflash_entries(ctx, serial):
    """bmapd's journal entries for one auto-flashed card: structured (a RULE
    field, a RESULT field) and naming the card's serial."""
    res = ctx.sh('journalctl -b -o json --no-pager _SYSTEMD_UNIT=bmapd.service + '
                 'SYSLOG_IDENTIFIER=bmapd')
    entries = []
    for line in res.out.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        fields = {k: v for k, v in entry.items() if isinstance(v, str)}
        if (any('RULE' in k for k in fields) and any('RESULT' in k for k in fields)
                and any(serial in v for k, v in fields.items() if k != 'MESSAGE')):
            entries.append(fields)
    return entries


@check('auto-flash', 'with the persistent auto-flash rule enabled and `systemctl reload bmapd`, '
       'plugging a card flashes it and the journal holds one structured entry for it')
def check_autoflash(ctx):
    serial = 'BMAPVM-AUTO1'
    res = ctx.sh('systemctl start bmapd.service')
    expect(res.status == 0, f'systemctl start bmapd: {res}')
    res = ctx.sh(f'mv {AUTOFLASH_CONF}.disabled {AUTOFLASH_CONF} && systemctl reload bmapd.service')

    def disable():
        ctx.sh(f'mv {AUTOFLASH_CONF} {AUTOFLASH_CONF}.disabled; systemctl reload bmapd.service')
    ctx.cleanups.append(disable)
    expect(res.status == 0, f'enabling the rule and reloading bmapd: {res}; bmapd.service:'
           + ctx.bmapd_log())

    deadline = time.monotonic() + 20
    rules = []
    while not rules and time.monotonic() < deadline:
        rules = [p for p, i in ctx.objects().items()
                 if i.get(AUTOFLASH_IFACE, {}).get('Source') == 'config']
        if not rules:
            time.sleep(1)
    expect(rules, f'bmapd publishes no auto-flash rule from {AUTOFLASH_CONF} after the reload; '
           'bmapd.service:' + ctx.bmapd_log())
    ctx.note(f'rule {rules[0]} armed')

    node, card = ctx.card('auto', serial)
    deadline = time.monotonic() + 180
    entries = []
    while not entries and time.monotonic() < deadline:
        time.sleep(2)
        entries = autoflash_entries(ctx, serial)
    expect(entries, f'no structured journal entry for the card {serial} within 180 s; '
           'bmapd.service:' + ctx.bmapd_log())
    time.sleep(3)  # a second entry for the same card would show by now
    entries = autoflash_entries(ctx, serial)
    expect(len(entries) == 1, f'{len(entries)} journal entries for the card {serial}, not one')
    entry = entries[0]
    ctx.note('journal: ' + ' '.join(f'{k}={v}' for k, v in sorted(entry.items())
                                    if k.isupper() and not k.startswith(('_', 'SYSLOG', 'CODE_',
                                                                         'PRIORITY', 'INVOCATION'))))
    result = next(v for k, v in entry.items() if 'RESULT' in k)
    expect(result.lower() in ('done', 'success', 'ok', 'flashed'),
           f'the card {serial} was not flashed: result {result!r}')
    ctx.cleanup()
    ctx.expect_image_on_card(card, 'small.img')
    ctx.note(f'{card}: holds small.img')


@check('unplug-mid-flash', 'pulling a card out mid-flash fails that job with DeviceGone, '
       'and bmapd stays active')
def check_unplug(ctx):
    node, _ = ctx.card('pull', 'BMAPVM-PULL1', write_bps=SLOW_BPS, size=SLOW_CARD_SIZE)
    dev_path, _ = ctx.wait_device(node)
    before = ctx.unit_state()
    client = ctx.vm.agent.start(ctx.vm.user_cmd('alice', f'bmapctl copy {BIG} {node}'), 300)
    job_path, job = ctx.wait_job_writing(dev_path, client)
    ctx.note(f'{job_path}: {job.get("State")} {job.get("BytesDone")}/{job.get("BytesTotal")}; '
             'pulling the card out')
    ctx.vm.unplug('pull')
    res = ctx.vm.agent.wait(client, timeout=120)
    job = ctx.job(job_path)
    expect(job, f'{job_path} is gone after the card was pulled out (finished jobs stay a minute)')
    ctx.note(f'{job_path}: State={job.get("State")} ErrorName={job.get("ErrorName")} '
             f'ErrorMessage={job.get("ErrorMessage")!r}')
    expect(job.get('State') == 'failed', f'{job_path}: State is {job.get("State")}, not failed')
    expect(job.get('ErrorName') == ERROR_PREFIX + 'DeviceGone',
           f'{job_path}: ErrorName is {job.get("ErrorName")!r}, not {ERROR_PREFIX}DeviceGone')
    expect(res.status == 1, f'alice: bmapctl copy onto a pulled card: expected exit 1, got {res}')
    after = ctx.unit_state()
    expect(after.get('ActiveState') == 'active', f'bmapd.service is {after.get("ActiveState")} '
           'after the card was pulled out')
    expect(after.get('MainPID') == before.get('MainPID') and
           after.get('NRestarts') == before.get('NRestarts'),
           f'bmapd restarted: MainPID {before.get("MainPID")} -> {after.get("MainPID")}, '
           f'NRestarts {before.get("NRestarts")} -> {after.get("NRestarts")}')


@check('security-exposure', '`systemd-analyze security bmapd.service` in the guest reports '
       'the exposure figure')
def check_security(ctx):
    res = ctx.sh('systemd-analyze security --no-pager bmapd.service', timeout=180)
    m = re.search(r'Overall exposure level for bmapd\.service:\s*([0-9.]+)\s*(\S+)',
                  re.sub(r'\x1b\[[0-9;]*m', '', res.out))
    expect(m, f'systemd-analyze security bmapd.service: {res}')
    ctx.note(f'exposure {m.group(1)} {m.group(2)}')


@check('stop-during-flash', '`systemctl stop bmapd` during a flash ends cleanly')
def check_stop(ctx):
    node, _ = ctx.card('stop', 'BMAPVM-STOP1', write_bps=SLOW_BPS, size=SLOW_CARD_SIZE)
    dev_path, _ = ctx.wait_device(node)
    client = ctx.vm.agent.start(ctx.vm.user_cmd('alice', f'bmapctl copy {BIG} {node}'), 300)
    job_path, job = ctx.wait_job_writing(dev_path, client)
    ctx.note(f'{job_path}: {job.get("State")} {job.get("BytesDone")}/{job.get("BytesTotal")}; '
             'stopping bmapd')
    t = time.monotonic()
    res = ctx.sh('systemctl stop bmapd.service', timeout=150)
    took = time.monotonic() - t
    expect(res.status == 0, f'systemctl stop bmapd: {res}')
    state = ctx.unit_state()
    ctx.note(f'stopped in {took:.1f} s: ActiveState={state.get("ActiveState")} '
             f'Result={state.get("Result")}')
    expect(state.get('ActiveState') == 'inactive',
           f'bmapd.service is {state.get("ActiveState")} after systemctl stop')
    expect(state.get('Result') == 'success',
           f'bmapd.service ended with Result={state.get("Result")} (timeout, signal or core dump)')
    res = ctx.vm.agent.wait(client, timeout=60)
    ctx.note('alice: bmapctl copy: exit %d: %s' % (res.status, (res.err.strip().splitlines() or [''])[-1]))
    log = ctx.sh('journalctl -b -u bmapd.service -o cat --no-pager | grep -F \'onto %s\' | tail -1'
                 % node)
    ctx.note('bmapd: ' + log.out.strip())
    expect(res.status in (1, 4), f'alice: bmapctl copy while bmapd stopped: expected exit 1 '
           f'(failed) or 4 (canceled), got {res}')


SIGNED_DIR = '/srv/bmapd-vm-signed'
SIGNED_RULE = '/etc/polkit-1/rules.d/49-bmapd-vmtest-signed.rules'
TRUSTED_KEY = '/etc/bmapd/trusted-keys.d/vmtest-release.asc'


@check('signed-bmap-trusted', 'bob, allowed only for bmaps signed by the release key (the '
       'example rule), flashes a signed image: bmapd checks the signature in its sandbox '
       'against /etc/bmapd/trusted-keys.d and polkit lets him')
def check_signed_bmap(ctx):
    # The release key, made by root; bmapd trusts it, the rule names it.
    res = ctx.sh(f'''set -e
export GNUPGHOME=$(mktemp -d)
gpg() {{ command gpg --batch --no-tty --pinentry-mode loopback --passphrase '' "$@"; }}
gpg --quick-gen-key 'vmtest release <release@bmapd-vm>' ed25519 sign 1y 2>/dev/null
fpr=$(gpg --with-colons --list-keys release@bmapd-vm | awk -F: '/^fpr/ {{ print $10; exit }}')
mkdir -p {SIGNED_DIR} /etc/bmapd/trusted-keys.d
gpg --armor --export "$fpr" > {TRUSTED_KEY}
cp {SMALL} {SMALL}.bmap {SIGNED_DIR}/
gpg --yes --local-user "$fpr" --armor --detach-sign -o {SIGNED_DIR}/small.img.bmap.asc \\
  {SIGNED_DIR}/small.img.bmap
chmod -R a+rX {SIGNED_DIR}
gpgconf --kill all; rm -rf "$GNUPGHOME"
sed -e "s/0123456789ABCDEF0123456789ABCDEF01234567/$fpr/" \\
    -e 's/subject.isInGroup("plugdev")/subject.user == "bob"/' \\
    -e 's/subject.local && subject.active/true/' \\
    /usr/share/doc/bmapd/examples/50-bmapd-signed.rules > {SIGNED_RULE}
# polkitd reloads rules.d on its own: wait until it answers by the new rule.
setpriv --reuid=bob --regid=bob --init-groups sleep 60 & pid=$!
for i in $(seq 30); do
  if pkcheck --action-id org.bmapd.bmapd1.flash --process $pid --detail drive.removable true \\
       --detail bmap.signature trusted --detail bmap.signer "$fpr" >/dev/null 2>&1; then
    loaded=1; break
  fi
  sleep 1
done
kill $pid
[ -n "${{loaded:-}}" ] || {{ echo "polkitd did not load {SIGNED_RULE}" >&2; exit 1; }}
echo "$fpr"''', timeout=120)
    expect(res.status == 0, f'making the release key and signing small.img.bmap: {res}')
    fpr = res.out.strip().splitlines()[-1]
    ctx.cleanups.append(lambda: ctx.sh(f'rm -rf {SIGNED_DIR} {SIGNED_RULE} {TRUSTED_KEY}'))
    ctx.note(f'release key {fpr}')

    node, card = ctx.card('signed', 'BMAPVM-SIGNED1')
    ctx.wait_device(node)
    # Unsigned, bob is refused as before.
    res = ctx.user('bob', f'bmapctl copy --nobmap {SMALL} {node}', timeout=300)
    expect(res.status == 3, f'bob: an unsigned flash: expected exit 3, got {res}')
    res = ctx.user('bob', f'bmapctl copy --keyring {TRUSTED_KEY} {SIGNED_DIR}/small.img {node}',
                   timeout=300)
    expect(res.status == 0, f'bob: bmapctl copy of the signed image: {res}{ctx.bmapd_log()}')
    expect(f'(key {fpr})' in res.err, f'bob: bmapctl names no good signature: {res.err}')
    log = ctx.sh('journalctl -b -u bmapd.service -o cat --no-pager | grep -F "trusted key" '
                 '| tail -1')
    ctx.note('bmapd: ' + log.out.strip())
    expect(f'bmap signed by trusted key {fpr}' in log.out,
           f'bmapd logged no trusted signature:{ctx.bmapd_log()}')
    ctx.cleanup()
    ctx.expect_image_on_card(card, 'small.img')
    ctx.note(f'{card}: holds small.img')


def finished_job_on(ctx, dev_path):
    """The last finished job whose Device is dev_path (finished jobs stay a
    minute, after their device went too)."""
    jobs = [(path, ifaces[JOB_IFACE]) for path, ifaces in ctx.objects().items()
            if JOB_IFACE in ifaces and ifaces[JOB_IFACE].get('Device') == dev_path
            and ifaces[JOB_IFACE].get('State') in ('done', 'failed', 'canceled')]
    expect(jobs, f'no finished job on {dev_path} is published')
    return max(jobs, key=lambda j: int(j[0].rsplit('/', 1)[-1]))


def disk_with_serial(ctx, serial):
    res = ctx.sh(f'''udevadm settle --timeout=10
for d in /sys/block/sd*; do
  [ -e "$d" ] || continue
  if udevadm info -q property -p "$d" | grep -qx "ID_SERIAL_SHORT={serial}"; then
    echo "/dev/${{d##*/}}"
  fi
done''')
    return res.out.strip()


@check('flash-power-off', 'alice flashes a USB disk with `bmapctl copy --power-off`: after '
       'the final sync and verification bmapd powers it off (its USB device removed, as '
       'udisks2 does), the disk disappears from the guest, and the job ends done with Result '
       '"powered off"')
def check_power_off(ctx):
    serial = 'BMAPVM-POWEROFF1'
    node, card = ctx.card('poweroff', serial)
    dev_path, _ = ctx.wait_device(node)
    before = ctx.unit_state()
    res = ctx.user('alice', f'bmapctl copy --power-off {SMALL} {node}', timeout=300)
    expect(res.status == 0, f'alice: bmapctl copy --power-off {SMALL} {node}: {res}'
           f'{ctx.bmapd_log()}')
    last = (res.err.strip().splitlines() or [''])[-1]
    ctx.note('alice: ' + last)
    expect(last.endswith('; powered off'), f'alice: the result line says no "powered off": {last}')
    job_path, job = finished_job_on(ctx, dev_path)
    ctx.note(f'{job_path}: State={job.get("State")} Result={job.get("Result")!r} '
             f'ErrorName={job.get("ErrorName")!r}')
    expect(job.get('State') == 'done', f'{job_path}: State is {job.get("State")}, not done '
           f'({job.get("ErrorName")}: {job.get("ErrorMessage")})')
    expect(job.get('Result') == 'powered off',
           f'{job_path}: Result is {job.get("Result")!r}, not "powered off"')
    deadline = time.monotonic() + 30
    while disk_with_serial(ctx, serial) and time.monotonic() < deadline:
        time.sleep(1)
    left = disk_with_serial(ctx, serial)
    expect(not left, f'the guest still shows {left} (serial {serial}) 30 s after the power-off')
    path, _ = ctx.device(node)
    expect(path is None, f'bmapd still publishes {path} for {node} after the power-off')
    after = ctx.unit_state()
    expect(after.get('MainPID') == before.get('MainPID'),
           f'bmapd restarted: MainPID {before.get("MainPID")} -> {after.get("MainPID")}')
    log = ctx.sh(f"journalctl -b -k -o cat --no-pager | grep -iE 'usb .*(disconnect|remove)' "
                 f"| tail -1")
    ctx.note('kernel: ' + log.out.strip())
    ctx.cleanup()  # qemu lets go of the file
    ctx.expect_image_on_card(card, 'small.img')
    ctx.note(f'{card}: holds small.img')


@check('flash-eject', 'alice flashes a USB disk with `bmapctl copy --eject`: bmapd ejects '
       'its medium (SCSI START STOP UNIT with LoEj), the device stays without a medium, and '
       'the job ends done with Result "ejected"')
def check_eject(ctx):
    node, card = ctx.card('eject', 'BMAPVM-EJECT1')
    dev_path, _ = ctx.wait_device(node)
    res = ctx.user('alice', f'bmapctl copy --eject {SMALL} {node}', timeout=300)
    expect(res.status == 0, f'alice: bmapctl copy --eject {SMALL} {node}: {res}'
           f'{ctx.bmapd_log()}')
    last = (res.err.strip().splitlines() or [''])[-1]
    ctx.note('alice: ' + last)
    expect(last.endswith('; ejected'), f'alice: the result line says no "ejected": {last}')
    job_path, job = finished_job_on(ctx, dev_path)
    ctx.note(f'{job_path}: State={job.get("State")} Result={job.get("Result")!r}')
    expect(job.get('State') == 'done', f'{job_path}: State is {job.get("State")}, not done '
           f'({job.get("ErrorName")}: {job.get("ErrorMessage")})')
    expect(job.get('Result') == 'ejected', f'{job_path}: Result is {job.get("Result")!r}')
    deadline = time.monotonic() + 30
    while True:
        path, dev = ctx.device(node)
        if not dev or not dev.get('MediaPresent') or time.monotonic() > deadline:
            break
        time.sleep(1)
    expect(path and dev.get('MediaPresent') is False,
           f'{node}: MediaPresent is {dev.get("MediaPresent") if dev else None} 30 s after '
           'the eject')
    ctx.cleanup()
    ctx.expect_image_on_card(card, 'small.img')
    ctx.note(f'{card}: holds small.img')


def mbr(partitions):
    """A DOS partition table: [(first sector, sectors)], Linux type."""
    table = bytearray(512)
    for i, (start, sectors) in enumerate(partitions):
        entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + struct.pack('<II', start, sectors)
        table[446 + 16 * i:446 + 16 * (i + 1)] = entry
    table[510:512] = b'\x55\xaa'
    return bytes(table)


@check('power-off-refused-partition-in-use', 'alice flashes the second partition of a USB disk '
       'whose first partition is mounted, with `--power-off --eject`: the flash is done, but '
       'neither is done (it would take the mounted filesystem away) and the result says why')
def check_power_off_partition_in_use(ctx):
    serial = 'BMAPVM-PARTS1'
    size = 64 * MiB
    # Partitioned, with an ext4 filesystem in the first partition, on the
    # host: the guest has neither sfdisk nor mkfs.
    path = os.path.join(ctx.workdir, 'card-parts.img')
    with open(path, 'wb') as f:
        f.truncate(size)
        f.write(mbr([(2048, 32768), (34816, size // 512 - 34816)]))
    subprocess.run(['mkfs.ext4', '-q', '-F', '-L', 'inuse', '-E', 'offset=1048576', path,
                    '16M'], check=True, capture_output=True)
    ctx.vm.plug('parts', path, serial)
    ctx.cleanups.append(lambda: ctx.vm.unplug('parts'))
    ctx.cards['parts'] = path
    node = ctx.wait_disk(serial)
    mnt = '/mnt/bmapd-vm-parts'
    res = ctx.sh(f'udevadm settle --timeout=30; mkdir -p {mnt} && mount {node}1 {mnt}',
                 timeout=120)
    expect(res.status == 0, f'mounting {node}1: {res}')
    ctx.cleanups.append(lambda: ctx.sh(f'umount {mnt}; rmdir {mnt}'))
    part_path, _ = ctx.wait_device(f'{node}2')
    res = ctx.user('alice', f'bmapctl copy --power-off --eject {SMALL} {node}2', timeout=300)
    expect(res.status == 0, f'alice: bmapctl copy --power-off --eject {SMALL} {node}2: {res}'
           f'{ctx.bmapd_log()}')
    last = (res.err.strip().splitlines() or [''])[-1]
    ctx.note('alice: ' + last)
    why = f'{node}1, on the same disk as {node}2, is in use'
    expect(last.endswith(f'; not powered off: {why}; not ejected: {why}'),
           f'alice: the result line does not say that {node}1 is in use: {last}')
    job_path, job = finished_job_on(ctx, part_path)
    expect(job.get('State') == 'done', f'{job_path}: State is {job.get("State")}, not done')
    expect(disk_with_serial(ctx, serial) == node, f'{node} went although {node}1 is mounted')
    res = ctx.sh(f'findmnt -n -o SOURCE {mnt}')
    expect(res.out.strip() == f'{node}1', f'{mnt} is no longer mounted from {node}1: {res}')
    ctx.note(f'{node}1 still mounted at {mnt}; {node} still there')
