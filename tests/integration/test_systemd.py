# SPDX-License-Identifier: GPL-2.0-or-later
'''What bmapd tells systemd: READY, STATUS, watchdog pings, STOPPING.'''

import os
import socket
import threading

import pytest

import bmapd_harness as h


class NotifySocket:
    '''Plays systemd's NOTIFY_SOCKET, and reads it all the time as systemd
    does: a unix datagram socket queues only net.unix.max_dgram_qlen (10)
    messages, and a sender's sd_notify() blocks once they are unread, so a
    test that stops reading for two seconds of watchdog pings would freeze
    bmapd's loop itself.'''

    def __init__(self, tmpdir):
        self.path = os.path.join(tmpdir, 'notify')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []
        self.lock = threading.Lock()
        self.stopping = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while not self.stopping:
            try:
                message = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append(message)

    def poll(self):
        with self.lock:
            return list(self.messages)

    def seen(self, text):
        return any(text in m for m in self.poll())

    def close(self):
        self.stopping = True
        self.reader.join(5)
        self.sock.close()


@pytest.fixture
def notify(bus):
    n = NotifySocket(bus.dir)
    yield n
    n.close()


def test_ready_status_and_watchdog(bus, client, polkit, notify, tmp_path, fds):
    d = h.Daemon(bus, client, str(tmp_path),
                 env={'NOTIFY_SOCKET': notify.path, 'WATCHDOG_USEC': '400000'})
    try:
        h.wait_until(lambda: notify.seen('READY=1'), 10, 'READY=1')
        assert notify.seen('STATUS=idle')
        h.wait_until(lambda: sum('WATCHDOG=1' in m for m in notify.poll()) >= 2, 10,
                     'watchdog pings')

        polkit.set_allowed([h.ACTION_CREATE])
        polkit.set_hold(True)
        img = tmp_path / 'n.img'
        img.write_bytes(h.pattern('notify', 64 * 1024))
        reply = client.call_async(h.MANAGER_PATH, h.MANAGER_IFACE, 'Create',
                                  h.GLib.Variant('(hha{sv})', (0, 1, {})),
                                  [fds(str(img)),
                                   fds(str(tmp_path / 'n.bmap'), os.O_WRONLY | os.O_CREAT)])
        h.wait_until(lambda: notify.seen('STATUS=1 job running'), 10, 'STATUS=1 job running')
        # The call counts from its arrival, before bmapd, having read its
        # descriptors on a thread, asks polkit: release only a held check.
        h.wait_until(lambda: polkit.held_count() == 1, 10, 'the polkit check')
        polkit.release_held()
        h.wait_until(lambda: reply, 10, 'the Create reply')
        client.wait_finished(reply['result'][0])

        def idle_again():
            statuses = [m for m in notify.poll() if m.startswith('STATUS=')]
            return statuses[-1] == 'STATUS=idle' and 'STATUS=1 job running' in statuses

        h.wait_until(idle_again, 10, 'STATUS=idle again')
    finally:
        assert d.stop() == 0
    # Sent before bmapd exited; the reader thread may not have taken it yet.
    h.wait_until(lambda: notify.seen('STOPPING=1'), 5, 'STOPPING=1')
