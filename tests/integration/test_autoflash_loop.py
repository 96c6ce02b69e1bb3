# SPDX-License-Identifier: GPL-2.0-or-later
'''Auto-flash onto real block devices: loop devices created through
/dev/loop-control and attached with losetup give the kernel's "add" and
"change" events, processed by systemd-udevd (started here when none runs)
as on a real system. Loop devices are not removable, so the rules allow
non-removable devices (asking for flash-system too); they match on the
cards' exact size, which no other loop device on this machine has.

Every card's bytes are checked: the image's mapped ranges, and the
device's old contents everywhere else.'''

import gzip
import os
import random
import shutil
import signal
import subprocess

import pytest

import bmapd_harness as h
from conftest import skip_without_loop_devices
from simcard import written_bytes

pytestmark = pytest.mark.loop

# Odd sizes: rules match these, never another test's loop devices.
CARD = 12 * h.MiB + 4096 * random.randint(1, 250)
BIG_CARD = CARD + 4 * h.MiB


@pytest.fixture(scope='module')
def udevd(tmp_path_factory):
    skip_without_loop_devices()
    if not os.access(h.UDEVD, os.X_OK):
        pytest.skip(f'{h.UDEVD} is not installed')
    u = h.Udevd(str(tmp_path_factory.mktemp('udevd')))
    yield u
    u.stop()


@pytest.fixture
def daemon(udevd, bus, client, polkit, tmp_path, daemon_config):
    '''bmapd, started once udevd runs.'''
    d = h.Daemon(bus, client, str(tmp_path), config=daemon_config)
    yield d
    rc = d.stop()
    print('---- bmapd log ----\n' + open(d.log_path).read())
    assert rc in (0, None) or rc == -15, f'bmapd exited with {rc}'


@pytest.fixture
def readers(udevd, tmp_path):
    made = []

    def make(size=CARD, attach=True, directory=None):
        reader = h.CardReader(str(tmp_path), size, directory=directory)
        made.append(reader)
        return reader.attach() if attach else reader

    yield make
    for reader in made:
        try:
            reader.remove()
        except OSError as e:
            print(f'cannot remove {reader.node}: {e}')


@pytest.fixture
def image(tmp_path):
    '''An 8 MiB sparse image with four data ranges, and its bmap.'''
    if not shutil.which('bmaptool'):
        pytest.skip('bmaptool is not installed (needed to make reference bmaps)')
    path = str(tmp_path / 'board.img')
    ranges = [(0, 64 * 1024), (1 * h.MiB, 512 * 1024), (3 * h.MiB + 4096, 8192),
              (7 * h.MiB, 1 * h.MiB)]
    h.make_sparse_image(path, 8 * h.MiB, ranges, seed='cards')
    bmap = path + '.bmap'
    h.bmaptool_create(path, bmap)
    return {'path': path, 'bmap': bmap, 'size': 8 * h.MiB, 'ranges': ranges,
            'mapped': sum(length for _, length in ranges)}


def match(size=CARD):
    return {'allow-non-removable': True, 'min-size': size, 'max-size': size}


def arm(client, polkit, fds, image, size=CARD, **options):
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    return client.add_auto_flash(fds(image['path']), bmap_fd=fds(image['bmap']),
                                 match=match(size), description='board.img', **options)


def assert_written(reader, image, fill=b'\xaa'):
    for offset, length in image['ranges']:
        assert reader.read(offset, length) == h.read_range(image['path'], offset, length), \
            f'{reader.node}: range at {offset} differs'
    # Unmapped blocks and the rest of the card keep what was there.
    assert reader.read(2 * h.MiB, 4096) == fill * 4096
    assert reader.read(image['size'], 4096) == fill * 4096


def assert_untouched(reader, fill=b'\xaa'):
    assert reader.sha256() == h.hashlib.sha256(fill * reader.size).hexdigest(), \
        f'{reader.node} was written'


def wait_cards(client, rule, n, timeout=60):
    '''The first @n CardFinished signals of @rule: [(device, job, state)].'''
    return h.wait_until(lambda: len(client.rule_signals(rule)) >= n
                        and client.rule_signals(rule)[:n], timeout, f'{n} cards of {rule}')


def settle(client):
    '''A round trip: whatever bmapd did for the events it has seen is
    announced before the reply.'''
    client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'Version')
    client.iterate(0.1)


def test_new_disk_is_flashed(daemon, client, polkit, readers, image, fds):
    rule = arm(client, polkit, fds, image, verify_written=True)
    reader = readers()
    dev = client.wait_device(reader.node)
    [(device, job, state)] = wait_cards(client, rule, 1)
    assert (device, state) == (dev, 'done')
    assert_written(reader, image)

    props = client.get_all(job, h.JOB_IFACE)
    assert props['State'] == 'done' and props['Device'] == dev
    assert props['Operation'] == 'flash' and props['Description'] == 'board.img'
    assert props['StartedByUid'] == os.geteuid()
    assert props['ErrorName'] == ''
    assert client.get(rule, h.AUTOFLASH_IFACE, 'Flashed') == 1
    assert client.get(rule, h.AUTOFLASH_IFACE, 'Failed') == 0
    assert client.get(dev, h.DEVICE_IFACE, 'Job') == '/'
    assert h.can_open_exclusive(reader.node)
    # No polkit check for the card: the rule's authorization covers it.
    assert [c[0] for c in polkit.checks()] == [h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM]
    log = daemon.read_log()
    assert 'following block devices through the udev netlink group' in log
    # The log line that stands for the journal entry (test_journal_entry).
    assert f'card in {reader.node} (serial unknown): done, ' in log


def test_medium_inserted_into_a_reader(daemon, client, polkit, readers, image, fds):
    reader = readers(size=0)  # a reader without a card
    dev = client.wait_device(reader.node)
    assert client.get(dev, h.DEVICE_IFACE, 'MediaPresent') is False
    rule = arm(client, polkit, fds, image)

    reader.insert(CARD)
    [(device, job, state)] = wait_cards(client, rule, 1)
    assert (device, state) == (dev, 'done')
    assert_written(reader, image)

    # Taken out, and another card in: a new insertion.
    reader.eject()
    h.wait_until(lambda: not client.get(dev, h.DEVICE_IFACE, 'MediaPresent'), 20, 'no card')
    reader.insert(CARD)
    cards = wait_cards(client, rule, 2)
    assert cards[1][0] == dev and cards[1][2] == 'done' and cards[1][1] != job
    assert_written(reader, image)
    assert client.get(rule, h.AUTOFLASH_IFACE, 'Flashed') == 2
    # The same card (diskseq) is not flashed again by other events.
    reader.uevent('change')
    settle(client)
    assert len(client.jobs_for(dev)) == 2


def test_devices_present_before_the_rule(daemon, client, polkit, readers, image, fds):
    present = readers()
    present_dev = client.wait_device(present.node)
    rule = arm(client, polkit, fds, image)
    present.uevent('change')  # heard of again, nothing new
    newer = readers()
    newer_dev = client.wait_device(newer.node)
    [(device, _, state)] = wait_cards(client, rule, 1)
    assert (device, state) == (newer_dev, 'done')
    assert_written(newer, image)
    settle(client)
    assert client.jobs_for(present_dev) == []
    assert_untouched(present)


def test_busy_devices_are_never_flashed(daemon, client, polkit, readers, image, fds, tmp_path):
    # A device the size of a card, with a mounted filesystem: Busy.
    busy = readers(attach=False)
    subprocess.run(['mkfs.ext4', '-q', '-F', busy.backing], check=True, capture_output=True)
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    busy.attach()
    subprocess.run(['mount', busy.node, str(mnt)], check=True)
    try:
        dev = client.wait_device(busy.node)
        h.wait_until(lambda: client.get(dev, h.DEVICE_IFACE, 'Busy'), 20, 'Busy')
        rule = arm(client, polkit, fds, image)
        before = busy.sha256()
        # The disk goes and comes back: new to the rule, but busy.
        busy.uevent('remove')
        client.wait_device_gone(busy.node)
        busy.uevent('add')
        client.wait_device(busy.node)
        settle(client)
        assert client.jobs_for(dev) == []
        assert busy.sha256() == before
    finally:
        subprocess.run(['umount', str(mnt)], check=False)
    assert client.rule_signals(rule) == []
    assert 'in use (mounted or held by another device)' in daemon.read_log()


def test_several_cards_at_once(daemon, client, polkit, readers, image, fds):
    rule = arm(client, polkit, fds, image)
    cards = [readers() for _ in range(3)]
    devs = {client.wait_device(r.node): r for r in cards}
    finished = wait_cards(client, rule, 3)
    assert {d for d, _, _ in finished} == set(devs)
    assert {s for _, _, s in finished} == {'done'}
    assert len({j for _, j, _ in finished}) == 3
    for reader in cards:
        assert_written(reader, image)
    assert client.get(rule, h.AUTOFLASH_IFACE, 'Flashed') == 3


@pytest.mark.parametrize('daemon_config', ['[Daemon]\nMaxJobs=1\n'])
def test_cards_wait_for_a_place(daemon, client, polkit, readers, image, fds):
    rule = arm(client, polkit, fds, image)
    cards = [readers() for _ in range(3)]
    for reader in cards:
        client.wait_device(reader.node)
    finished = wait_cards(client, rule, 3)
    assert [s for _, _, s in finished] == ['done'] * 3
    for reader in cards:
        assert_written(reader, image)
    # One at a time: each job was announced after the previous one finished.
    events = [(m, args[0] if m == 'InterfacesAdded' else path)
              for path, iface, m, args in client.signals
              if (m == 'InterfacesAdded' and args[0].startswith(h.JOB_PREFIX))
              or (m == 'Finished' and iface == h.JOB_IFACE)]
    assert [m for m, _ in events] == ['InterfacesAdded', 'Finished'] * 3


def test_count_disarms_the_rule(daemon, client, polkit, readers, image, fds):
    rule = arm(client, polkit, fds, image, count=2)
    first = readers()
    wait_cards(client, rule, 1)
    second = readers()
    cards = wait_cards(client, rule, 2)
    assert [s for _, _, s in cards] == ['done', 'done']
    # Spent: gone once its last card has finished, and nothing is armed.
    h.wait_until(lambda: rule not in client.rules(), 10, 'the rule to go')
    assert client.get(h.MANAGER_PATH, h.MANAGER_IFACE, 'AutoFlashArmed') is False
    third = readers()
    third_dev = client.wait_device(third.node)
    settle(client)
    assert client.jobs_for(third_dev) == []
    assert_written(first, image)
    assert_written(second, image)
    assert_untouched(third)
    assert 'its count of 2 cards is reached' in daemon.read_log()


def test_count_counts_cards_started(daemon, client, polkit, readers, image, fds):
    # Two cards at once with count 1: the first taken is the only one.
    rule = arm(client, polkit, fds, image, count=1)
    cards = [readers(), readers()]
    [(device, _, state)] = wait_cards(client, rule, 1)
    assert state == 'done'
    h.wait_until(lambda: rule not in client.rules(), 10, 'the rule to go')
    for reader in cards:
        dev = client.wait_device(reader.node)
        if dev == device:
            assert_written(reader, image)
        else:
            assert client.jobs_for(dev) == []
            assert_untouched(reader)


def test_too_small_card_fails(daemon, client, polkit, readers, tmp_path, fds):
    big = str(tmp_path / 'big.img')
    h.make_sparse_image(big, CARD + h.MiB, [(0, 4096), (CARD, 4096)], seed='big')
    h.bmaptool_create(big, big + '.bmap')
    rule = arm(client, polkit, fds, {'path': big, 'bmap': big + '.bmap'})
    reader = readers()
    dev = client.wait_device(reader.node)
    [(device, job, state)] = wait_cards(client, rule, 1)
    assert (device, state) == (dev, 'failed')
    props = client.get_all(job, h.JOB_IFACE)  # still there to be read
    assert props['ErrorName'] == h.ERROR + 'DeviceTooSmall'
    assert reader.node in props['ErrorMessage']
    assert client.get(rule, h.AUTOFLASH_IFACE, 'Failed') == 1
    assert_untouched(reader)


def test_rule_of_another_user(daemon, client, bus, polkit, readers, image, fds):
    '''StartedByUid of the cards' jobs is the rule's caller, not root.'''
    polkit.set_allowed([h.ACTION_AUTO_FLASH, h.ACTION_FLASH_SYSTEM])
    image_fd, bmap_fd = fds(image['path']), fds(image['bmap'])
    script = f'''
import sys
sys.path.insert(0, {h.HERE!r})
import bmapd_harness as h
c = h.Client({bus.address!r})
print(c.add_auto_flash({image_fd}, bmap_fd={bmap_fd}, match={match()!r}, keep=True))
'''
    out = subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
                          h.PYTHON, '-c', script], capture_output=True, text=True, timeout=60,
                         pass_fds=(image_fd, bmap_fd))
    assert out.returncode == 0, out.stderr
    rule = out.stdout.strip()
    # The caller has left; the rule was kept.
    assert client.get(rule, h.AUTOFLASH_IFACE, 'StartedByUid') == 65534
    reader = readers()
    [(_, job, state)] = wait_cards(client, rule, 1)
    assert state == 'done'
    assert client.get(job, h.JOB_IFACE, 'StartedByUid') == 65534
    assert_written(reader, image)


def test_rule_refreshes_a_board_writing_what_differs(daemon, client, polkit, readers, image,
                                                     fds):
    '''A lab station refreshing boards: the card holds the image but for
    one block; a rule with minimize-writes checks every mapped byte and
    writes that block alone, as the block layer counts.'''
    reader = readers(attach=False)
    with open(image['path'], 'rb') as src, open(reader.backing, 'r+b') as card:
        for offset, length in image['ranges']:
            src.seek(offset)
            card.seek(offset)
            card.write(src.read(length))
        card.seek(1 * h.MiB + 8192)
        card.write(b'\x00' * 4096)
    rule = arm(client, polkit, fds, image, minimize_writes=True, verify_written=True)
    before = written_bytes(reader)
    reader.attach()
    [(_, job, state)] = wait_cards(client, rule, 1)
    assert state == 'done'
    props = client.get_all(job, h.JOB_IFACE)
    assert props['BytesChecked'] == image['mapped']
    assert props['BytesWritten'] == 4096
    assert written_bytes(reader) - before == 4096
    assert 'found in place, not written' in props['Result'], props['Result']
    assert_written(reader, image)


def write_rule_file(directory, image, size=CARD, extra=''):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'line.conf')
    with open(path, 'w') as f:
        f.write(f'[Rule]\nImage={image["path"]}\nBmap={image["bmap"]}\n{extra}'
                f'[Match]\nAllowNonRemovable=true\nMinSize={size}\nMaxSize={size}\n')
    return path


def test_rule_file_flashes_and_reloads(udevd, bus, client, polkit, readers, image, tmp_path):
    rules_dir = str(tmp_path / 'autoflash.d')
    conf = write_rule_file(rules_dir, image)
    d = h.Daemon(bus, client, str(tmp_path), autoflash_dir=rules_dir)
    try:
        [(rule, props)] = client.rules().items()
        assert props['Source'] == 'config' and props['ConfigFile'] == conf
        reader = readers()
        [(_, job, state)] = wait_cards(client, rule, 1)
        assert state == 'done'
        assert_written(reader, image)
        job_props = client.get_all(job, h.JOB_IFACE)
        assert job_props['StartedByUid'] == 0 and job_props['Description'] == 'board.img'
        # No polkit for rule files or their cards.
        assert polkit.checks() == []

        # The next image: reload, and the next card gets it.
        other = str(tmp_path / 'next.img')
        ranges = [(0, 8192), (5 * h.MiB, 64 * 1024)]
        h.make_sparse_image(other, 6 * h.MiB, ranges, seed='next')
        h.bmaptool_create(other, other + '.bmap')
        write_rule_file(rules_dir, {'path': other, 'bmap': other + '.bmap'},
                        extra='Description=next\n')
        d.signal(signal.SIGHUP)
        h.wait_until(lambda: rule not in client.rules() and len(client.rules()) == 1, 10,
                     'the reload')
        [(new_rule, props)] = client.rules().items()
        assert props['Description'] == 'next' and props['Flashed'] == 0
        second = readers()
        [(_, _, state)] = wait_cards(client, new_rule, 1)
        assert state == 'done'
        assert_written(second, {'path': other, 'size': 6 * h.MiB, 'ranges': ranges})
    finally:
        assert d.stop() in (0, -15)
        print(open(d.log_path).read())


def test_rule_file_passes_flash_options_on(udevd, bus, client, polkit, readers, image,
                                           tmp_path):
    '''MinimizeWrites=, Discard=, ZeroUnmapped= and RelocateGPT= of a rule
    file reach its cards' jobs.'''
    rules_dir = str(tmp_path / 'autoflash.d')
    write_rule_file(rules_dir, image, extra='MinimizeWrites=true\nDiscard=true\n'
                    'ZeroUnmapped=true\nRelocateGPT=true\n')
    d = h.Daemon(bus, client, str(tmp_path), autoflash_dir=rules_dir)
    try:
        [rule] = client.rules()
        reader = readers()
        [(_, job, state)] = wait_cards(client, rule, 1)
        assert state == 'done'
        props = client.get_all(job, h.JOB_IFACE)
        # Every mapped byte was checked (the card held none of them).
        assert props['BytesChecked'] == props['BytesWritten'] == image['mapped']
        for words in ('unmapped discarded', 'unmapped zeroed', 'no GPT'):
            assert words in props['Result'], props['Result']
        for offset, length in image['ranges']:
            assert reader.read(offset, length) == h.read_range(image['path'], offset, length)
        # The image's unmapped blocks read back as zeros; beyond it, the
        # card keeps what it had.
        assert reader.read(2 * h.MiB, 4096) == bytes(4096)
        assert reader.read(image['size'], 4096) == b'\xaa' * 4096
    finally:
        assert d.stop() in (0, -15)
        print(open(d.log_path).read())


def test_journal_entry(udevd, bus, client, polkit, readers, image, fds, tmp_path):
    if os.path.exists(h.FakeJournal.DIR):
        pytest.skip('a journal runs here; not replacing its socket')
    journal = h.FakeJournal()
    try:
        log = tmp_path / 'bmapd.log'
        log.touch()
        st = os.stat(log)
        d = h.Daemon(bus, client, str(tmp_path),
                     env={'JOURNAL_STREAM': f'{st.st_dev}:{st.st_ino}'})
        try:
            rule = arm(client, polkit, fds, image)
            reader = readers()
            [(_, job, state)] = wait_cards(client, rule, 1)
            assert state == 'done'
            entries = h.wait_until(
                lambda: [e for e in journal.poll()
                         if e.get('MESSAGE_ID') == '524a5880e6f947298346a4f9c6d7fc6f'],
                10, 'the card entry')
        finally:
            d.stop()
    finally:
        journal.close()
    [entry] = entries
    assert entry['RULE_ID'] == rule.rsplit('/', 1)[1]
    assert entry['JOB_ID'] == job.rsplit('/', 1)[1]
    assert entry['DEVICE'] == reader.node
    assert entry['SERIAL'] == ''  # loop devices have none
    assert entry['RESULT'] == 'done' and entry['ERROR'] == ''
    assert entry['BYTES'] == str(image['mapped'])
    assert int(entry['DURATION_USEC']) >= 0
    assert reader.node in entry['MESSAGE'] and entry['PRIORITY'] == '6'


@pytest.mark.parametrize('compressed', [False, True], ids=['raw', 'gzip'])
def test_image_that_cannot_be_opened_again(udevd, bus, client, polkit, readers, image, fds,
                                           tmp_path, compressed):
    '''As the service runs (root without CAP_DAC_OVERRIDE), another user's
    private image cannot be opened again through /proc/self/fd: the cards
    share its descriptor (raw) or read it through a feeder thread (gzip),
    two at once.'''
    if not shutil.which('setpriv'):
        pytest.skip('setpriv is not installed')
    path = image['path']
    if compressed:
        path += '.gz'
        with open(image['path'], 'rb') as src, gzip.open(path, 'wb', compresslevel=1) as dst:
            shutil.copyfileobj(src, dst)
    os.chown(path, 65534, 65534)
    os.chmod(path, 0o600)
    d = h.Daemon(bus, client, str(tmp_path),
                 wrapper=('setpriv', '--bounding-set=-all', '--inh-caps=-all', '--'))
    try:
        with open(f'/proc/{d.proc.pid}/status') as f:
            assert 'CapEff:\t0000000000000000' in f.read()
        rule = arm(client, polkit, fds, {'path': path, 'bmap': image['bmap']})
        cards = [readers(), readers()]
        finished = wait_cards(client, rule, 2)
        assert [s for _, _, s in finished] == ['done', 'done']
        for reader in cards:
            assert_written(reader, image)
        how = 'a thread feeds each job' if compressed else 'jobs share its descriptor'
        assert how in d.read_log()
    finally:
        d.stop()
        print(open(d.log_path).read())
