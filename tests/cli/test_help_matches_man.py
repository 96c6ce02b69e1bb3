# SPDX-License-Identifier: GPL-2.0-or-later
"""bmapctl's --help and its man page tell the same story: every command and
option that one lists, the other documents."""

import os
import re
import subprocess

BMAPCTL = os.environ.get("BMAPCTL", "bmapctl")
MAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "bmapctl.1")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def help_text(*args):
    proc = subprocess.run([BMAPCTL, *args, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def commands():
    text = help_text()
    block = text.split("Commands:")[1].split("Global options:")[0]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def man_text():
    with open(MAN) as f:
        # troff escapes the dashes: \-\-bmap
        return f.read().replace("\\-", "-")


def test_every_command_is_in_the_man_page():
    man = man_text()
    for command in commands():
        assert re.search(rf"^\.(B|TP|BR|BI)?\s*\"?{re.escape(command)}\b", man, re.M) or \
            f".B {command}" in man or f"BI \"{command} " in man, f"{command} missing in bmapctl(1)"


def test_every_option_in_help_is_in_the_man_page():
    man = man_text()
    for command in commands():
        for option in set(OPTION.findall(help_text(command))):
            if option in ("--help-all", "--help-global"):
                continue  # GOption's own
            assert option in man, f"bmapctl {command} {option} is not in bmapctl(1)"


def test_every_option_in_the_man_page_is_in_help():
    documented = set(OPTION.findall(man_text()))
    offered = set(OPTION.findall(help_text()))
    for command in commands():
        offered |= set(OPTION.findall(help_text(command)))
    # create and copy take beginnings of their options (--nob), as bmaptool.
    abbreviations = {d for d in documented if any(o.startswith(d) for o in offered)}
    missing = documented - offered - abbreviations
    assert missing == set(), f"documented but not offered: {missing}"
