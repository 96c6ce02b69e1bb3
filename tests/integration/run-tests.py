#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
'''Runs bmapd's integration tests with pytest; exits 77 (skip) when what
they need is not installed. With --umockdev, runs the fake-hardware tests
under umockdev-wrapper.'''

import glob
import importlib.util
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Every test_*umockdev.py runs under umockdev-wrapper, and only there.
UMOCKDEV_TESTS = sorted(glob.glob(os.path.join(HERE, 'test_*umockdev.py')))


def missing_requirements(umockdev):
    missing = [m for m in ('gi', 'dbus', 'dbusmock', 'pytest')
               if importlib.util.find_spec(m) is None]
    if not shutil.which('dbus-daemon'):
        missing.append('dbus-daemon')
    if umockdev and not shutil.which('umockdev-wrapper'):
        missing.append('umockdev-wrapper')
    if not missing:
        import gi
        try:
            gi.require_version('Gio', '2.0')
            if umockdev:
                gi.require_version('UMockdev', '1.0')
        except ValueError as e:
            missing.append(str(e))
    return missing


def main():
    umockdev = '--umockdev' in sys.argv
    missing = missing_requirements(umockdev)
    if missing:
        print('SKIP: the integration tests need: ' + ', '.join(missing))
        return 77
    if umockdev and 'umockdev' not in os.environ.get('LD_PRELOAD', ''):
        os.execvp('umockdev-wrapper', ['umockdev-wrapper', sys.executable, *sys.argv])
    import pytest
    args = ['-p', 'no:cacheprovider', '-v', '-rfEs', '--rootdir', HERE]
    if umockdev:
        args += UMOCKDEV_TESTS
    else:
        args.append(HERE)
        for path in UMOCKDEV_TESTS:
            args += ['--ignore', path]
    args += [a for a in sys.argv[1:] if a != '--umockdev']
    sys.path.insert(0, HERE)
    return pytest.main(args)


if __name__ == '__main__':
    sys.exit(main())
