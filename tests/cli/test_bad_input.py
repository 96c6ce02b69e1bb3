# SPDX-License-Identifier: GPL-2.0-or-later
"""Hostile input that the fuzzers found (tests/fuzz/regress/): bmapctl copy
reports a bad image with exit status 1 and a message, it does not crash."""

import os
import subprocess

import pytest

BMAPCTL = os.environ.get("BMAPCTL", "bmapctl")
REGRESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "regress")
GZIP_REPRODUCERS = sorted(f for f in os.listdir(REGRESS) if f.endswith(".gz"))


@pytest.mark.parametrize("name", GZIP_REPRODUCERS)
def test_copy_nobmap_reports_a_corrupt_gzip(tmp_path, name):
    target = tmp_path / "out.img"
    proc = subprocess.run([BMAPCTL, "copy", "--nobmap", os.path.join(REGRESS, name), str(target)],
                          capture_output=True, text=True, timeout=120)
    # A crash is a negative status (killed by SIGABRT or SIGSEGV).
    assert proc.returncode == 1, f"status {proc.returncode}: {proc.stderr}"
    assert "corrupt gzip data" in proc.stderr, proc.stderr
    assert "assertion" not in proc.stderr and "ERROR:" not in proc.stderr, proc.stderr
