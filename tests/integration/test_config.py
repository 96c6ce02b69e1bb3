# SPDX-License-Identifier: GPL-2.0-or-later
'''bmapd.conf: what a bad file does, and the idle timeout.'''

import os
import signal
import subprocess

import pytest

import bmapd_harness as h


@pytest.mark.parametrize('config,words', [
    ('[Daemon]\nMaxJobs=lots\n', ['MaxJobs=lots']),
    ('[Daemon]\nMaxJobs=0\n', ['MaxJobs=0']),
    ('[Daemon]\nIdleTimeoutSec=-5\n', ['IdleTimeoutSec=-5']),
    ('[Daemon]\nMaxJob=3\n', ['MaxJob=3', 'unknown key']),
    ('[Deamon]\nMaxJobs=3\n', ['[Deamon]', 'unknown group']),
    ('this is not a key file\n', ['bmapd.conf']),
])
def test_bad_config_refuses_to_start(bus, client, tmp_path, config, words):
    d = h.Daemon(bus, client, str(tmp_path), config=config, wait=False)
    rc = d.wait_exit(30)
    log = d.read_log()
    d.stop()
    assert rc == 1
    for word in words:
        assert word in log, log
    assert 'ready' not in log


def test_missing_explicit_config_refuses_to_start(bus, tmp_path):
    result = subprocess.run([h.find_bmapd(), '--bus-address', bus.address, '--config',
                             str(tmp_path / 'nope.conf')], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert 'nope.conf' in result.stderr


def test_idle_timeout_exits(bus, client, polkit, tmp_path):
    d = h.Daemon(bus, client, str(tmp_path), config='[Daemon]\nIdleTimeoutSec=1\n',
                 args=('--idle-timeout', '-1'), wait=False)
    # -1 leaves the config's value in charge.
    assert d.wait_exit(30) == 0
    log = d.read_log()
    assert 'ready' in log and 'idle for 1 s, exiting' in log
    d.stop()


def test_sighup_reloads(bus, client, polkit, tmp_path):
    d = h.Daemon(bus, client, str(tmp_path), config='[Daemon]\nMaxJobs=2\n')
    try:
        with open(d.config_path, 'w') as f:
            f.write('[Daemon]\nMaxJobs=5\n')
        d.signal(signal.SIGHUP)
        h.wait_until(lambda: 'MaxJobs=5' in d.read_log(), 10, 'the reload')
        with open(d.config_path, 'w') as f:
            f.write('[Daemon]\nMaxJobs=many\n')
        d.signal(signal.SIGHUP)
        h.wait_until(lambda: 'keeping the old configuration' in d.read_log(), 10, 'the refusal')
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0


def test_version_and_help():
    out = subprocess.run([h.find_bmapd(), '--version'], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith('bmapd ')
    out = subprocess.run([h.find_bmapd(), '--help'], capture_output=True, text=True)
    assert out.returncode == 0 and '--bus-address' in out.stdout
    out = subprocess.run([h.find_bmapd(), '--frobnicate'], capture_output=True, text=True)
    assert out.returncode == 2
    assert os.path.basename(h.find_bmapd()) == 'bmapd'
