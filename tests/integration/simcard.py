# SPDX-License-Identifier: GPL-2.0-or-later
'''Simulated SD cards: real block devices that write and read at a card's
pace, for the integration tests and bench/ (which imports this file from
here; it needs nothing but the standard library).

qemu-storage-daemon exports a sparse file through FUSE behind a throttle
node (writes at 20 MB/s, reads at 80 MB/s by default, as a common SD card),
and a loop device over the exported file is the card. Several Cards are
several cards, each with its own daemon and throttle.

What a card was asked to write is counted by the block layer
(written_bytes()): qemu-storage-daemon 7.2 gives no write counters for a
FUSE export's BlockBackend in query-blockstats.'''

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time

QSD = 'qemu-storage-daemon'
MiB = 1024 * 1024

CARD_WRITE_BPS = 20 * MiB
CARD_READ_BPS = 80 * MiB


def written_bytes(dev):
    '''Bytes the block device @dev (anything with .name, such as a Card or
    a loop device, or a name such as "loop3") was asked to write: the
    write sectors of /sys/block/NAME/stat, whatever sent the writes. A
    counter that a loop device keeps across attachments: take differences.'''
    name = getattr(dev, 'name', dev)
    with open(f'/sys/block/{name}/stat') as f:
        return int(f.read().split()[6]) * 512


def cards_usable():
    '''None when Cards can be made here, else why not.'''
    if os.geteuid() != 0:
        return 'needs root for loop devices'
    if not shutil.which('losetup') or not os.path.exists('/dev/loop-control'):
        return 'no loop devices (losetup or /dev/loop-control missing)'
    if not shutil.which(QSD):
        return f'{QSD} is not installed (package qemu-system-common)'
    if not os.path.exists('/dev/fuse'):
        return 'no /dev/fuse'
    if not shutil.which('fusermount3') and not shutil.which('fusermount'):
        return 'fusermount3 is not installed (package fuse3)'
    return None


def stop_process(proc, timeout=20):
    '''Ends @proc (a Popen) with SIGTERM, and SIGKILL when it has not
    exited @timeout s later; nothing when it has already exited.'''
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.05)


class Card:
    '''A card of @size bytes (zeros at first): a loop device (.node, .name)
    over a file exported by qemu-storage-daemon through FUSE, throttled to
    @write_bps and @read_bps (no throttle when both are None). Its data
    lives in .backing, below every cache: zeros, or @fill repeated over each
    whole MiB. close() (or the with-statement) detaches and stops everything.

    @inject_errors, when not None, puts a blkdebug node between the file and
    the rest: a list of its "inject-error" rules (sectors of the backing
    file). The loop device starts @loop_offset bytes into the export.

    The loop device reads and writes the export through the page cache
    (--direct-io=off: direct I/O onto this FUSE file put data at the wrong
    offsets here), so pages just written can be read back from memory at
    once; drop_cache() forgets them, for a read that goes through the
    throttle as a card's would.'''

    def __init__(self, workdir, size, write_bps=CARD_WRITE_BPS, read_bps=CARD_READ_BPS,
                 fill=None, inject_errors=None, loop_offset=0, prefix='bmapd-card-'):
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=workdir)
        self.backing = os.path.join(self.dir, 'card.raw')
        self.export = os.path.join(self.dir, 'export.img')
        self.size = size
        self.loop_offset = loop_offset
        self.proc = None
        self.node = None
        self.name = None
        self.log = None
        with open(self.backing, 'wb') as f:
            if fill:
                block = fill * MiB
                for _ in range(size // MiB):
                    f.write(block)
            f.truncate(size)
        open(self.export, 'w').close()

        limits = {}
        if write_bps:
            limits['bps-write'] = write_bps
        if read_bps:
            limits['bps-read'] = read_bps
        args = [QSD,
                '--blockdev', json.dumps({'driver': 'file', 'node-name': 'file0',
                                          'filename': self.backing})]
        image = 'file0'
        if inject_errors is not None:
            faults = {'driver': 'blkdebug', 'node-name': 'faults', 'image': 'file0'}
            if inject_errors:
                faults['inject-error'] = inject_errors
            args += ['--blockdev', json.dumps(faults)]
            image = 'faults'
        args += ['--blockdev', json.dumps({'driver': 'raw', 'node-name': 'disk', 'file': image})]
        top = 'disk'
        if limits:
            args += ['--object', json.dumps({'qom-type': 'throttle-group', 'id': 'card',
                                             'limits': limits}),
                     '--blockdev', json.dumps({'driver': 'throttle', 'node-name': 'card',
                                               'file': 'disk', 'throttle-group': 'card'})]
            top = 'card'
        args += ['--export', json.dumps({'type': 'fuse', 'id': 'export', 'node-name': top,
                                         'mountpoint': self.export, 'writable': True})]
        self.log_path = os.path.join(self.dir, 'qsd.log')
        self.log = open(self.log_path, 'w')
        env = dict(os.environ)
        env.pop('LD_PRELOAD', None)  # umockdev's, when the tests run under it
        try:
            self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                         env=env)
            _wait_until(self._exported, 20, f'the FUSE export of {QSD}')
            offset = ['--offset', str(loop_offset)] if loop_offset else []
            self.node = subprocess.run(
                ['losetup', '--find', '--show', '--direct-io=off', *offset, self.export],
                check=True, capture_output=True, text=True).stdout.strip()
        except BaseException:
            self.close()
            raise
        self.name = os.path.basename(self.node)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _exported(self):
        if self.proc.poll() is not None:
            with open(self.log_path) as f:
                raise RuntimeError(f'{QSD} exited with {self.proc.returncode}: {f.read()}')
        return self._mounted()

    def _mounted(self):
        # Not os.path.ismount(): a FUSE mount whose server died fails stat().
        with open('/proc/self/mountinfo') as f:
            return any(line.split()[4] == self.export for line in f)

    def written_bytes(self):
        return written_bytes(self)

    def drop_cache(self):
        '''Forgets the card's pages cached above the throttle (the loop
        device's and the FUSE file's), so that the next read of the card
        costs what a card's read costs.'''
        for path in (self.node, self.export):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)

    def read_backing(self, offset, length):
        '''What reached the card at the loop device's @offset, below every
        cache.'''
        with open(self.backing, 'rb') as f:
            f.seek(self.loop_offset + offset)
            return f.read(length)

    def attached(self):
        return self.name is not None and os.path.exists(f'/sys/block/{self.name}/loop/backing_file')

    def detach(self):
        '''losetup -d: done at once when nobody holds the device open,
        else when the last holder (udev probing it) closes it (the kernel's
        autoclear).'''
        if self.node:
            subprocess.run(['losetup', '-d', self.node], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self):
        if self.node:
            # The export must outlive the loop device.
            self.detach()
            with contextlib.suppress(TimeoutError):
                _wait_until(lambda: not self.attached(), 30, f'{self.node} to let go')
            self.node = None
        if self.proc is not None:
            stop_process(self.proc)
        if self._mounted():
            subprocess.run(['umount', '-l', self.export], check=False)
        if self.log is not None:
            self.log.close()
            self.log = None
        shutil.rmtree(self.dir, ignore_errors=True)
