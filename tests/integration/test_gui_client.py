# SPDX-License-Identifier: GPL-2.0-or-later
'''A desktop imaging tool's view of bmapd: only Gio's D-Bus API, a GLib main
loop, the ObjectManager to find devices, fd passing for the image, and the
job's signals to follow it to the end. No bmapctl, no test helpers for the
D-Bus side.'''

import os

import pytest

import bmapd_harness as h
from gi.repository import Gio, GLib

pytestmark = pytest.mark.loop


class ImagingApp:
    '''What a GUI does, in the order it does it.'''

    def __init__(self, address):
        self.conn = Gio.DBusConnection.new_for_address_sync(
            address,
            Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
            None, None)
        self.loop = GLib.MainLoop()
        self.progress = []
        self.finished = None
        self.states = []
        self.job = None

    def devices(self):
        reply = self.conn.call_sync('org.bmapd.bmapd1', '/org/bmapd/bmapd1',
                                    'org.freedesktop.DBus.ObjectManager', 'GetManagedObjects',
                                    None, GLib.VariantType('(a{oa{sa{sv}}})'),
                                    Gio.DBusCallFlags.NONE, -1, None)
        objects = reply.unpack()[0]
        return {path: ifaces['org.bmapd.bmapd1.Device'] for path, ifaces in objects.items()
                if 'org.bmapd.bmapd1.Device' in ifaces}

    def _on_job_signal(self, conn, sender, path, iface, member, params):
        if path != self.job:
            return
        if member == 'Progress':
            self.progress.append(params.unpack())
        elif member == 'Finished':
            self.finished = params.unpack()
            self.loop.quit()

    def _on_properties(self, conn, sender, path, iface, member, params):
        changed_iface, changed, _ = params.unpack()
        if path == self.job and 'State' in changed:
            self.states.append(changed['State'])

    def flash(self, device, image_path, bmap_path,
              flags=Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION, options=None):
        # Subscribe first: the job may end before the reply is read.
        subs = [
            self.conn.signal_subscribe('org.bmapd.bmapd1', 'org.bmapd.bmapd1.Job', None, None,
                                       None, Gio.DBusSignalFlags.NONE, self._on_job_signal),
            self.conn.signal_subscribe('org.bmapd.bmapd1', 'org.freedesktop.DBus.Properties',
                                       'PropertiesChanged', None, 'org.bmapd.bmapd1.Job',
                                       Gio.DBusSignalFlags.NONE, self._on_properties),
        ]
        image_fd = os.open(image_path, os.O_RDONLY | os.O_CLOEXEC)
        bmap_fd = os.open(bmap_path, os.O_RDONLY | os.O_CLOEXEC)
        fd_list = Gio.UnixFDList.new_from_array([image_fd, bmap_fd])  # takes them
        if options is None:
            options = {'description': GLib.Variant('s', os.path.basename(image_path)),
                       'bind-to-caller': GLib.Variant('b', True)}
        options = dict(options, bmap=GLib.Variant('h', 1))

        def on_reply(conn, res):
            try:
                reply, _ = conn.call_with_unix_fd_list_finish(res)
                self.job = reply.unpack()[0]
            except GLib.Error as e:
                self.finished = ('call-failed', Gio.DBusError.get_remote_error(e), e.message)
                self.loop.quit()

        self.conn.call_with_unix_fd_list(
            'org.bmapd.bmapd1', '/org/bmapd/bmapd1', 'org.bmapd.bmapd1.Manager', 'Flash',
            GLib.Variant('(oha{sv})', (device, 0, options)), GLib.VariantType('(o)'),
            flags, 600000, fd_list, None, on_reply)
        GLib.timeout_add_seconds(60, self.loop.quit)
        self.loop.run()
        for sub in subs:
            self.conn.signal_unsubscribe(sub)
        return self.finished


def test_gui_flow(daemon, bus, polkit, loop, image):
    polkit.set_challenge([h.ACTION_FLASH])  # a password dialog would come up
    app = ImagingApp(bus.address)
    h.wait_until(lambda: any(p['Node'] == loop.node for p in app.devices().values()), 20,
                 'the loop device')
    [(device, props)] = [(path, p) for path, p in app.devices().items()
                         if p['Node'] == loop.node]
    assert props['Size'] == loop.size and props['MediaPresent'] and props['Job'] == '/'

    state, error_name, message = app.flash(device, image['path'], image['bmap'])
    assert (state, error_name) == ('done', ''), message
    assert app.job is not None and app.job.startswith('/org/bmapd/bmapd1/job/')
    assert app.states[-1] == 'done' and 'writing' in app.states
    assert app.progress, 'no Progress signal'
    # One progress for the whole job (writing the mapped bytes, then the
    # sync): it ends with everything done and never goes back.
    last_done, last_total, _ = app.progress[-1]
    assert last_done == last_total >= sum(length for _, length in image['ranges'])
    assert [p[0] for p in app.progress] == sorted(p[0] for p in app.progress)
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length)


def test_gui_flow_with_defaults(daemon, bus, polkit, loop, image):
    '''A GUI that knows nothing of authorization: no message flags, no
    options but the bmap. bmapd lets polkit ask, the agent asks for the
    password, and the flash goes through.'''
    polkit.set_challenge([h.ACTION_FLASH])
    app = ImagingApp(bus.address)
    h.wait_until(lambda: any(p['Node'] == loop.node for p in app.devices().values()), 20,
                 'the loop device')
    [device] = [path for path, p in app.devices().items() if p['Node'] == loop.node]

    state, error_name, message = app.flash(device, image['path'], image['bmap'],
                                           flags=Gio.DBusCallFlags.NONE, options={})
    assert (state, error_name) == ('done', ''), message
    name = app.conn.get_unique_name()
    [(action, _, flags, _, subject, _)] = polkit.checks()
    assert (action, subject) == (h.ACTION_FLASH, name)
    assert flags & 1, 'bmapd did not let polkit ask for a password'
    assert polkit.agent_requests() == [(h.ACTION_FLASH, name)]
    last_done, last_total, _ = app.progress[-1]
    assert last_done == last_total > 0
    for offset, length in image['ranges']:
        assert loop.read(offset, length) == h.read_range(image['path'], offset, length)
