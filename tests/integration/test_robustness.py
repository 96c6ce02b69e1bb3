# SPDX-License-Identifier: GPL-2.0-or-later
'''bmapd runs as root and every local user may call it: a caller's pipes,
strings and the administrator's rule files must not stop, hang or fool it
(issue 10).'''

import errno
import fcntl
import os
import select
import shutil
import signal
import subprocess
import threading

import pytest

import bmapd_harness as h

F_SETPIPE_SZ = 1031
ESCAPES = '\x1b]0;pwned\x07\x1b[2J'
ESCAPES_SHOWN = '\\x1b]0;pwned\\x07\\x1b[2J'


def ping(client):
    '''bmapd answers org.freedesktop.DBus.Peer.Ping (sd-bus does it for it).'''
    client.call(h.MANAGER_PATH, 'org.freedesktop.DBus.Peer', 'Ping', timeout_ms=10000)


def finished_or_exited(client, daemon, job, timeout=60):
    '''The job's Finished arguments; fails at once if bmapd dies instead.'''
    def check():
        if daemon.proc.poll() is not None:
            raise AssertionError(f'bmapd exited with {daemon.proc.returncode}:\n'
                                 + daemon.read_log())
        return (client.job_signals(job, 'Finished') or [None])[0]
    return h.wait_until(check, timeout, f'{job} to finish')


def full_pipe():
    '''A pipe whose buffer is full and that nobody reads: (read end, write end).
    The write end is left blocking, as a caller would pass it.'''
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    except OSError:
        pass  # the default size only takes longer to fill
    h.nonblock(w)
    try:
        while True:
            os.write(w, b'x' * 65536)
    except BlockingIOError:
        pass
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return r, w


def start_stuck_create(client, image_path, fds):
    '''A Create whose worker has hashed the image and now writes the bmap
    into a full pipe; returns (job, read end, write end).'''
    r, w = full_pipe()
    job = client.create(fds(image_path), w)
    # The last progress report comes right before the bmap is written.
    h.wait_until(lambda: (client.get(job, h.JOB_IFACE, 'BytesTotal') > 0
                          and client.get(job, h.JOB_IFACE, 'BytesDone')
                          == client.get(job, h.JOB_IFACE, 'BytesTotal')),
                 30, 'the create job to hash the whole image')
    return job, r, w


@pytest.fixture
def sparse(tmp_path):
    path = str(tmp_path / 'sparse.img')
    h.make_sparse_image(path, 4 * h.MiB, [(0, 8192), (1 * h.MiB, 64 * 1024)])
    return path


# ---- a caller's pipes ----

def test_create_into_a_pipe_whose_reader_is_closed(daemon, client, polkit, sparse, fds):
    polkit.set_allowed([h.ACTION_CREATE])
    r, w = os.pipe2(os.O_CLOEXEC)
    os.close(r)
    try:
        job = client.create(fds(sparse), w)
    finally:
        os.close(w)
    state, name, message = finished_or_exited(client, daemon, job)
    assert state == 'failed', message
    assert name == h.ERROR + 'IO'
    assert 'bmap_out' in message and 'EPIPE' in message, message
    ping(client)


def test_create_into_a_pipe_nobody_reads_is_canceled(daemon, client, polkit, sparse, fds):
    polkit.set_allowed([h.ACTION_CREATE])
    job, r, w = start_stuck_create(client, sparse, fds)
    try:
        box = client.cancel(job, block=False)
        h.wait_until(lambda: box, 20, 'Cancel() to be answered')
        assert 'error' not in box, box
        state, _, message = client.wait_finished(job, timeout=20)
        assert state == 'canceled', message
        ping(client)
    finally:
        os.close(r)
        os.close(w)


def test_create_into_a_pipe_then_reader_closes_while_writing(daemon, client, polkit, sparse,
                                                             fds):
    '''The reader goes away while the worker waits for room in the pipe.'''
    polkit.set_allowed([h.ACTION_CREATE])
    job, r, w = start_stuck_create(client, sparse, fds)
    os.close(r)
    os.close(w)
    state, _, message = finished_or_exited(client, daemon, job, timeout=20)
    assert state == 'failed' and 'bmap_out' in message and 'EPIPE' in message, message
    ping(client)


@pytest.mark.loop
def test_flash_from_a_pipe_that_stalls_in_its_first_bytes_is_canceled(daemon, client, polkit,
                                                                       loop, fds):
    '''A writer that sends a few bytes, fewer than the engine needs to tell
    the compression, then nothing while it keeps the pipe open.'''
    polkit.set_allowed([h.ACTION_FLASH])
    dev = client.wait_device(loop.node)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(w, b'abc')
        job = client.flash(dev, r, nobmap=True)
        client.wait_state(job, ('preparing', 'writing'))
        box = client.cancel(job, block=False)
        h.wait_until(lambda: box, 20, 'Cancel() to be answered')
        assert 'error' not in box, box
        state, _, message = client.wait_finished(job, timeout=20)
        assert state == 'canceled', message
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.loop
def test_sigterm_with_stuck_create_and_running_flash(bus, client, polkit, tmp_path, sparse,
                                                    loop, fds):
    polkit.set_allowed([h.ACTION_CREATE, h.ACTION_FLASH])
    d = h.Daemon(bus, client, str(tmp_path))
    slow = None
    r = w = None
    try:
        dev = client.wait_device(loop.node)
        # A flash fed slowly through a pipe: its worker waits for the image.
        slow = h.SlowPipe(h.pattern('slow', 8 * h.MiB), chunk=64 * 1024, delay=0.5).start()
        flash = client.flash(dev, slow.read_fd, nobmap=True)
        client.wait_state(flash, ('writing',))
        create, r, w = start_stuck_create(client, sparse, fds)

        d.signal(signal.SIGTERM)
        # A liveness bound, not a speed one.
        rc = d.wait_exit(timeout=30)
        assert rc == 0, d.read_log()
        client.iterate(0.5)
        for job in (flash, create):
            signals = client.job_signals(job, 'Finished')
            assert signals, f'no Finished for {job}:\n{d.read_log()}'
            assert signals[0][0] in ('failed', 'canceled'), signals
        assert h.can_open_exclusive(loop.node)
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        d.log.close()
        if slow is not None:
            slow.stop()
            slow.close_read()
        for fd in (r, w):
            if fd is not None:
                os.close(fd)


# ---- a caller's strings ----

def collect_lines(stream, lines):
    for line in stream:
        lines.append(line)


def test_description_escapes_are_shown_escaped(daemon, client, polkit, sparse, fds, bus,
                                               tmp_path):
    polkit.set_allowed([h.ACTION_CREATE])
    exe = h.find_bmapctl()
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    mon = subprocess.Popen([exe, 'monitor'], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    lines = []
    reader = threading.Thread(target=collect_lines, args=(mon.stdout, lines), daemon=True)
    reader.start()
    try:
        h.wait_until(lambda: any(b'monitoring bmapd' in line for line in lines), 20,
                     'bmapctl monitor to start')
        out = str(tmp_path / 'out.bmap')
        job = client.create(fds(sparse), fds(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            description=ESCAPES)
        assert client.wait_finished(job)[0] == 'done'
        h.wait_until(lambda: any(b'done' in line for line in lines), 20,
                     'bmapctl monitor to see the job finish')
    finally:
        mon.send_signal(signal.SIGINT)
        mon.wait(20)
        reader.join(10)
        mon.stdout.close()
        mon.stderr.close()
    monitor_out = b''.join(lines)
    assert b'\x1b' not in monitor_out and b'\x07' not in monitor_out, monitor_out
    assert ESCAPES_SHOWN.encode() in monitor_out, monitor_out

    jobs = subprocess.run([exe, 'jobs'], env=env, capture_output=True, timeout=60)
    assert jobs.returncode == 0, jobs.stderr
    assert b'\x1b' not in jobs.stdout and b'\x07' not in jobs.stdout, jobs.stdout
    assert ESCAPES_SHOWN.encode() in jobs.stdout, jobs.stdout

    # Error messages quote what they were given.
    cancel = subprocess.run([exe, 'cancel', ESCAPES], env=env, capture_output=True, timeout=60)
    assert cancel.returncode != 0
    assert b'\x1b' not in cancel.stderr and ESCAPES_SHOWN.encode() in cancel.stderr, cancel.stderr

    log = daemon.read_log()
    assert '\x1b' not in log and '\x07' not in log
    assert any(ESCAPES_SHOWN in line and 'started' in line for line in log.splitlines()), log


# ---- the administrator's rule files ----

@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        pytest.skip('needs root to make files owned by another user')


def write(path, text, mode=0o644):
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def test_rule_files_unsafe_owners_and_modes_are_refused(as_root, bus, client, polkit, tmp_path,
                                                        sparse):
    rules_dir = tmp_path / 'autoflash.d'
    rules_dir.mkdir()
    rule = f'[Rule]\nImage={sparse}\nNoBmap=true\n'

    good = write(rules_dir / 'good.conf', rule)
    group_writable = write(rules_dir / 'group-writable.conf', rule, 0o664)
    world_writable = write(rules_dir / 'world-writable.conf', rule, 0o646)
    users = write(rules_dir / 'users.conf', rule)
    os.chown(users, 65534, 65534)

    # An image reached through a root-owned symbolic link into a directory
    # another user can write to: that user chooses what is flashed.
    user_dir = tmp_path / 'user-images'
    user_dir.mkdir()
    os.chown(user_dir, 65534, 65534)
    shutil.copy(sparse, user_dir / 'board.img')
    os.symlink(user_dir / 'board.img', tmp_path / 'board-link.img')
    via_link = write(rules_dir / 'via-link.conf',
                     f'[Rule]\nImage={tmp_path / "board-link.img"}\nNoBmap=true\n')
    # A symbolic link owned by another user, in a root-owned directory.
    os.symlink(sparse, tmp_path / 'users-link.img')
    os.lchown(tmp_path / 'users-link.img', 65534, 65534)
    users_link = write(rules_dir / 'users-link.conf',
                       f'[Rule]\nImage={tmp_path / "users-link.img"}\nNoBmap=true\n')
    # A root-owned link in a root-owned directory is followed.
    os.symlink(sparse, tmp_path / 'root-link.img')
    root_link = write(rules_dir / 'root-link.conf',
                      f'[Rule]\nImage={tmp_path / "root-link.img"}\nNoBmap=true\n')

    d = h.Daemon(bus, client, str(tmp_path), autoflash_dir=str(rules_dir))
    try:
        loaded = {props['ConfigFile'] for props in client.rules().values()}
        assert loaded == {str(good), str(root_link)}, d.read_log()
        log = d.read_log()
        expected = {
            group_writable: ['mode 0664', 'group'],
            world_writable: ['mode 0646', 'others'],
            users: ['uid 65534'],
            via_link: [str(user_dir), 'uid 65534', 'Image='],
            users_link: [str(tmp_path / 'users-link.img'), 'uid 65534', 'Image='],
        }
        for path, words in expected.items():
            lines = [line for line in log.splitlines()
                     if str(path) in line and 'not loaded' in line]
            assert lines, f'{path} was not reported:\n{log}'
            for word in words:
                assert any(word in line for line in lines), f'{word!r} not in {lines}'
    finally:
        assert d.stop() in (0, -15)
