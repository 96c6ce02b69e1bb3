# SPDX-License-Identifier: GPL-2.0-or-later
'''A minimal udisks2 mock for bmapd's "unmount" option (python-dbusmock
template): AddFilesystem(name, mount_point) exports
/org/freedesktop/UDisks2/block_devices/NAME with a Filesystem.Unmount that
really unmounts MOUNT_POINT, as udisksd would.'''

import dbus

from dbusmock import MOCK_IFACE

BUS_NAME = 'org.freedesktop.UDisks2'
MAIN_OBJ = '/org/freedesktop/UDisks2'
MAIN_IFACE = 'org.freedesktop.UDisks2.Manager'
SYSTEM_BUS = True


def load(mock, _parameters):
    mock.AddProperties(MAIN_IFACE, dbus.Dictionary({'Version': '2.9.4'}, signature='sv'))


@dbus.service.method(MOCK_IFACE, in_signature='ss', out_signature='')
def AddFilesystem(self, name, mount_point):
    path = '/org/freedesktop/UDisks2/block_devices/' + name
    code = ('import subprocess\n'
            f'subprocess.run(["umount", {str(mount_point)!r}], check=True)\n')
    self.AddObject(path, 'org.freedesktop.UDisks2.Filesystem',
                   {'MountPoints': dbus.Array([], signature='ay')},
                   [('Unmount', 'a{sv}', '', code)])
