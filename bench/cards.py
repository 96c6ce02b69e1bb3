# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/run --cases cards: bmapctl and bmaptool on simulated SD cards.

Cards are tests/integration/simcard.py's: loop devices over files that
qemu-storage-daemon exports through FUSE behind a throttle (20 MB/s writes,
80 MB/s reads). The image is about 1 GiB with about 300 MiB mapped, as xz
and zst; the "next build" is the same image with about 10% of its mapped
blocks changed. For each format, each round times:

  first    a card's first flash: bmapctl copy vs bmaptool copy, and the
           card's floor (mapped bytes / write rate)
  reflash  the card holds the image: bmapctl copy --minimize-writes vs
           bmaptool copy
  next     the card holds the image, the next build goes on:
           bmapctl copy --minimize-writes vs bmaptool copy
  four     four cards from one image: one bmapctl copy IMG D1 D2 D3 D4 vs
           four bmaptool copy at once

bmapctl runs in-process (--local). Every command is checked: each card's
mapped ranges, read below every cache, must equal the image's.
"""

import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
import simcard  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB

FORMATS = ("xz", "zst")
SIZES = {
    # label: (image size, bytes of files put into it)
    "full": (1 * GiB, 210 * MiB),
    "quick": (256 * MiB, 64 * MiB),
}
# The next build: this share of the mapped blocks changed, in runs of
# NEXT_RUN_BLOCKS blocks (files rewritten in place, not scattered bytes).
NEXT_SHARE = 0.10
NEXT_RUN_BLOCKS = 64
NEXT_VERSION = "1"
N_CARDS = 4

STEPS = ("first", "reflash", "next", "four")
# step -> minimum speedup over bmaptool
SPEEDUP_TARGETS = {"reflash": 3.0, "next": 2.5}
# four cards: wall time and user CPU time of one bmapctl command for four
# cards, at most these times those of one card (decoding the image four
# times would cost about 4x the CPU).
FOUR_TIME_TARGET = 1.15
FOUR_CPU_TARGET = 1.5


def mib(n):
    return n / MiB


class Result:
    """The runs of one command of one step."""

    def __init__(self, label, step):
        self.label = label
        self.step = step
        self.times = []
        self.cpu = []  # user CPU seconds of the process(es) and their children
        self.rss_kib = []
        self.written = []  # bytes the cards were asked to write, all cards
        self.error = None
        self.mismatch = None
        self.unsupported = None

    @staticmethod
    def _median(values):
        return statistics.median(values) if values else None

    @property
    def median(self):
        return self._median(self.times)

    @property
    def cpu_median(self):
        return self._median(self.cpu)

    @property
    def written_median(self):
        return self._median(self.written)

    @property
    def peak_rss_mib(self):
        return max(self.rss_kib) / 1024 if self.rss_kib else None


# ------------------------------------------------------------------ images


def mapped_ranges(bmap):
    """[(offset, length)] of the bytes the bmap maps, and the image size."""
    root = ET.parse(bmap).getroot()
    bs = int(root.findtext("BlockSize"))
    size = int(root.findtext("ImageSize"))
    out = []
    for r in root.iter("Range"):
        first, _, last = r.text.strip().partition("-")
        last = last or first
        start = int(first) * bs
        out.append((start, min((int(last) + 1) * bs, size) - start))
    return out, size, bs


def digest_ranges(path, ranges):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for offset, length in ranges:
            f.seek(offset)
            left = length
            while left:
                chunk = f.read(min(left, 8 * MiB))
                if not chunk:
                    h.update(b"<short>")
                    break
                h.update(chunk)
                left -= len(chunk)
    return h.hexdigest()


def copy_sparse(src, dst):
    """Copies src to dst keeping its holes exactly where they are (cp
    --sparse=always would also make holes of written zeros, and the next
    build's bmap would differ from the first's in more than its data)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        fout.truncate(size)
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fin.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break  # only a hole is left
            hole = os.lseek(fin.fileno(), data, os.SEEK_HOLE)
            fin.seek(data)
            fout.seek(data)
            left = hole - data
            while left:
                chunk = fin.read(min(left, 8 * MiB))
                fout.write(chunk)
                left -= len(chunk)
            pos = hole


def build_next(imgdir, bmaptool, run, log):
    """The next build of imgdir/image.img: a copy with NEXT_SHARE of its
    mapped blocks rewritten with other data, its bmap and its xz and zst
    versions, cached in imgdir/next/. Returns (image, bmap, blocks changed)."""
    nextdir = imgdir / "next"
    img, bmap = nextdir / "next.img", nextdir / "next.img.bmap"
    ready = nextdir / "READY"
    key = f"{NEXT_VERSION} {NEXT_SHARE} {NEXT_RUN_BLOCKS}\n"
    if ready.exists() and ready.read_text().split("\n")[0] + "\n" == key:
        return img, bmap, int(ready.read_text().split("\n")[1])
    log(f"cards: building the next build in {nextdir}")
    nextdir.mkdir(exist_ok=True)
    copy_sparse(imgdir / "image.img", img)
    ranges, _, bs = mapped_ranges(imgdir / "image.img.bmap")
    blocks = [b for offset, length in ranges
              for b in range(offset // bs, (offset + length) // bs, NEXT_RUN_BLOCKS)]
    rng = random.Random(f"bmapd-bench-next-{NEXT_VERSION}")
    want = int(sum(length for _, length in ranges) // bs * NEXT_SHARE)
    changed = 0
    limits = {offset // bs: (offset + length) // bs for offset, length in ranges}
    ends = sorted(limits.items())
    with open(img, "r+b") as f:
        for start in rng.sample(blocks, len(blocks)):
            if changed >= want:
                break
            # The run stays inside its range.
            end = next(e for s, e in reversed(ends) if s <= start)
            n = min(NEXT_RUN_BLOCKS, end - start, want - changed)
            f.seek(start * bs)
            f.write(rng.randbytes(n * bs))
            changed += n
    run([bmaptool, "create", "-o", bmap, img], capture_output=True)
    for fmt, argv in (("xz", ["xz", "-T0", "-6", "-c", img]),
                      ("zst", ["zstd", "-q", "-T0", "-3", "-c", img])):
        with open(f"{img}.{fmt}", "wb") as out:
            run(argv, stdout=out)
    ready.write_text(f"{key}{changed}\n")
    return img, bmap, changed


# ------------------------------------------------------------------ timing


def measure(argvs):
    """Runs the argvs at once; returns (seconds until the last ended,
    [(user CPU seconds, peak RSS KiB, error or None)]). The CPU time and
    RSS of each include its children (bmaptool's decompressor)."""
    procs = []
    t0 = time.perf_counter()
    for argv in argvs:
        err = tempfile.TemporaryFile()
        procs.append((subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL,
                                       stderr=err), err))
    out = []
    for p, err in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        error = None
        if p.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            error = (p.returncode, f"exit status {p.returncode}: " + " / ".join(tail))
        err.close()
        out.append((usage.ru_utime, usage.ru_maxrss, error))
    return time.perf_counter() - t0, out


class Bench:
    def __init__(self, args, cards, images, run, log):
        self.args = args
        self.cards = cards
        self.images = images  # name -> {"src": {fmt: path}, "bmap", "ranges", "digest"}
        self.run = run
        self.log = log

    def check(self, cards, image):
        """None when every card holds the image's mapped ranges."""
        img = self.images[image]
        for card in cards:
            if digest_ranges(card.backing, img["ranges"]) != img["digest"]:
                return f"{card.node} does not hold {image}'s mapped ranges"
        return None

    def settle(self):
        """Before a timed command: nothing of the cards left in the page
        cache, nothing left to write."""
        for card in self.cards:
            card.drop_cache()

    def ctl(self, *argv):
        return [self.args.bmapctl, "--local", *argv]

    def step(self, res, tag, argvs, cards, image):
        if res.error or res.unsupported:
            return
        self.settle()
        before = sum(c.written_bytes() for c in cards)
        seconds, procs = measure(argvs)
        written = sum(c.written_bytes() for c in cards) - before
        errors = [e for _, _, e in procs if e]
        if errors and res.label == "bmapctl" and len(cards) > 1 and errors[0][0] == 2:
            res.unsupported = "not supported by this bmapctl: " + errors[0][1]
            self.log(f"  cards {tag:11} {res.step:7} {res.label:9} {res.unsupported}")
            return
        if errors:
            res.error = errors[0][1]
        else:
            res.times.append(seconds)
            res.cpu.append(sum(cpu for cpu, _, _ in procs))
            res.rss_kib.append(max(rss for _, rss, _ in procs))
            res.written.append(written)
            mismatch = self.check(cards, image)
            if mismatch and not res.mismatch:
                res.mismatch = f"{tag}: {mismatch}"
        self.log(f"  cards {tag:11} {res.step:7} {res.label:9} {seconds:7.2f} s "
                 f"cpu {sum(c for c, _, _ in procs):6.2f} s "
                 f"{max(r for _, r, _ in procs) / 1024:6.1f} MiB "
                 f"wrote {mib(written):7.1f} MiB"
                 + (f"  FAILED: {res.error}" if res.error else "")
                 + (f"  WRONG: {res.mismatch}" if res.mismatch else ""))

    def restore(self, card, image, fmt):
        """Untimed: puts image onto card (writing what differs only)."""
        img = self.images[image]
        self.run(self.ctl("copy", "--minimize-writes", "--bmap", img["bmap"], img["src"][fmt],
                          card.node), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        mismatch = self.check([card], image)
        if mismatch:
            raise RuntimeError(f"restoring {image} onto the card: {mismatch}")

    def round(self, fmt, tag, results):
        one, cards = self.cards[0], self.cards
        first, second = self.images["image"], self.images["next"]
        tool = self.args.bmaptool

        def tool_copy(img, card):
            return [tool, "copy", "--bmap", img["bmap"], img["src"][fmt], card.node]

        r = results["first"]
        self.step(r["bmapctl"], tag, [self.ctl("copy", "--bmap", first["bmap"],
                                               first["src"][fmt], one.node)], [one], "image")
        self.step(r["bmaptool"], tag, [tool_copy(first, one)], [one], "image")

        # The card holds the image (bmaptool just wrote it).
        r = results["reflash"]
        self.step(r["bmapctl"], tag, [self.ctl("copy", "--minimize-writes", "--bmap",
                                               first["bmap"], first["src"][fmt], one.node)],
                  [one], "image")
        self.step(r["bmaptool"], tag, [tool_copy(first, one)], [one], "image")

        r = results["next"]
        self.step(r["bmapctl"], tag, [self.ctl("copy", "--minimize-writes", "--bmap",
                                               second["bmap"], second["src"][fmt], one.node)],
                  [one], "next")
        self.restore(one, "image", fmt)
        self.step(r["bmaptool"], tag, [tool_copy(second, one)], [one], "next")

        r = results["four"]
        self.step(r["bmapctl"], tag, [self.ctl("copy", "--bmap", first["bmap"],
                                               first["src"][fmt], *[c.node for c in cards])],
                  cards, "image")
        self.step(r["bmaptool"], tag, [tool_copy(first, c) for c in cards], cards, "image")


def unusable():
    """None when the cards case can run here, else why not."""
    return simcard.cards_usable()


def bench_cards(args, build_image, run, log):
    """Builds (or reuses) the cards' images, makes the cards, runs the
    rounds; returns what report() takes."""
    size, content = SIZES["quick" if args.quick else "full"]
    imgdir = args.workdir / f"cards-image-v{args.image_version}-{size // MiB}M"
    meta = build_image(imgdir, size, content, args.bmaptool, formats=FORMATS)
    next_img, next_bmap, changed = build_next(imgdir, args.bmaptool, run, log)

    images = {}
    for name, img, bmap in (("image", imgdir / "image.img", imgdir / "image.img.bmap"),
                            ("next", next_img, next_bmap)):
        ranges, img_size, bs = mapped_ranges(bmap)
        images[name] = {"src": {f: Path(f"{img}.{f}") for f in FORMATS}, "bmap": bmap,
                        "ranges": ranges, "digest": digest_ranges(img, ranges), "size": img_size}
        # Inputs stay in the page cache for every tool: read them once.
        run(["cat", bmap, *images[name]["src"].values()], stdout=subprocess.DEVNULL)
    mapped = sum(length for _, length in images["image"]["ranges"])

    carddir = args.workdir / "cards"
    carddir.mkdir(parents=True, exist_ok=True)
    card_size = size + 64 * MiB  # a card is a little larger than its image
    cards = []
    results = {fmt: {step: {tool: Result(tool, step) for tool in ("bmapctl", "bmaptool")}
                     for step in STEPS} for fmt in FORMATS}
    try:
        for _ in range(N_CARDS):
            cards.append(simcard.Card(str(carddir), card_size))
        log(f"cards: {N_CARDS} cards of {mib(card_size):.0f} MiB "
            f"({', '.join(c.node for c in cards)}), writing at "
            f"{mib(simcard.CARD_WRITE_BPS):.0f} MiB/s, reading at "
            f"{mib(simcard.CARD_READ_BPS):.0f} MiB/s")
        bench = Bench(args, cards, images, run, log)
        for i in range(args.runs):
            for fmt in FORMATS:
                bench.round(fmt, f"{fmt} run {i + 1}/{args.runs}", results[fmt])
    finally:
        for card in cards:
            card.close()
    return {
        "results": results,
        "image_size": images["image"]["size"],
        "mapped": mapped,
        "changed_bytes": changed * meta["block_size"],
        "content": meta["content_bytes"],
        "compressed": {f: images["image"]["src"][f].stat().st_size for f in FORMATS},
        "compressors": meta["compressors"],
    }


# ------------------------------------------------------------------ report


def fmt_s(x):
    return "-" if x is None else f"{x:.2f} s"


def fmt_x(x):
    return "-" if x is None else f"{x:.2f}x"


def fmt_mib(x):
    return "-" if x is None else f"{mib(x):.0f} MiB"


def ratio(a, b):
    return a / b if a is not None and b else None


def report(cards, runs, add):
    """Adds the cards section to the report; returns the verdicts as
    [(target, measured, ok)] and the failed commands as [(what, error)]."""
    results = cards["results"]
    mapped = cards["mapped"]
    floor = mapped / simcard.CARD_WRITE_BPS
    add("## Cards")
    add("")
    add(f"- Cards: loop devices over qemu-storage-daemon FUSE exports with a throttle "
        f"node: writes at {mib(simcard.CARD_WRITE_BPS):.0f} MiB/s, reads at "
        f"{mib(simcard.CARD_READ_BPS):.0f} MiB/s; {N_CARDS} cards, each with its own "
        "daemon and throttle (tests/integration/simcard.py).")
    add(f"- Image: {mib(cards['image_size']):.0f} MiB ext4 from "
        f"{mib(cards['content']):.0f} MiB of files, {mib(mapped):.0f} MiB mapped; "
        + ", ".join(f"{f} {mib(n):.0f} MiB (`{cards['compressors'][f]}`)"
                    for f, n in cards["compressed"].items())
        + f". The next build differs in {mib(cards['changed_bytes']):.0f} MiB "
        f"({100 * cards['changed_bytes'] / mapped:.0f}% of the mapped blocks, in runs of "
        f"{NEXT_RUN_BLOCKS} blocks).")
    add(f"- The card's floor: {mib(mapped):.0f} MiB mapped / "
        f"{mib(simcard.CARD_WRITE_BPS):.0f} MiB/s = {floor:.2f} s; reading them "
        f"(what a reflash that finds everything in place must do) takes "
        f"{mapped / simcard.CARD_READ_BPS:.2f} s.")
    add(f"- Method: median of {runs} run(s), no warm-up; bmapctl in-process "
        "(`--local`). The cards' cached pages are dropped before every command. "
        "CPU is the user CPU time of the command's process(es) and their "
        "children (getrusage); RSS the largest peak of them; written what the "
        "cards' block devices were asked to write. After every command each "
        "card's mapped ranges, read below every cache, are compared with the "
        "image's.")
    add("")
    add("| format | case | bmapctl | bmaptool | speedup | bmapctl/floor | bmapctl wrote "
        "| bmaptool wrote | bmapctl CPU | bmaptool CPU | bmapctl RSS | bmaptool RSS | output |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for fmt, steps in results.items():
        for step, r in steps.items():
            ctl, tool = r["bmapctl"], r["bmaptool"]
            if ctl.unsupported:
                out = "bmapctl: not supported"
            elif ctl.error or tool.error:
                out = "not compared"
            elif ctl.mismatch or tool.mismatch:
                out = "WRONG"
            else:
                out = "correct"
            add(f"| {fmt} | {step} | {fmt_s(ctl.median)} | {fmt_s(tool.median)} "
                f"| {fmt_x(ratio(tool.median, ctl.median))} "
                f"| {fmt_x(ratio(ctl.median, floor)) if step in ('first', 'four') else '-'} "
                f"| {fmt_mib(ctl.written_median)} | {fmt_mib(tool.written_median)} "
                f"| {fmt_s(ctl.cpu_median)} | {fmt_s(tool.cpu_median)} "
                f"| {fmt_mib(ctl.peak_rss_mib * MiB if ctl.peak_rss_mib else None)} "
                f"| {fmt_mib(tool.peak_rss_mib * MiB if tool.peak_rss_mib else None)} "
                f"| {out} |")
    add("")

    verdicts = []
    for fmt, steps in results.items():
        for step, minimum in SPEEDUP_TARGETS.items():
            ctl, tool = steps[step]["bmapctl"], steps[step]["bmaptool"]
            s = ratio(tool.median, ctl.median)
            verdicts.append((f"cards {fmt} {step}: >= {minimum:g}x faster than bmaptool",
                             fmt_x(s), s is not None and s >= minimum))
        one, four = steps["first"]["bmapctl"], steps["four"]["bmapctl"]
        if four.unsupported:
            verdicts.append((f"cards {fmt} four: {N_CARDS} cards in <= "
                             f"{FOUR_TIME_TARGET:g}x the time of one", four.unsupported, False))
        else:
            q = ratio(four.median, one.median)
            tool_q = ratio(steps["four"]["bmaptool"].median, steps["first"]["bmaptool"].median)
            verdicts.append((f"cards {fmt} four: {N_CARDS} cards in <= {FOUR_TIME_TARGET:g}x "
                             "the time of one", f"{fmt_x(q)} ({fmt_s(four.median)} / "
                             f"{fmt_s(one.median)}; bmaptool {fmt_x(tool_q)})",
                             q is not None and q <= FOUR_TIME_TARGET))
            c = ratio(four.cpu_median, one.cpu_median)
            tool_c = ratio(steps["four"]["bmaptool"].cpu_median,
                           steps["first"]["bmaptool"].cpu_median)
            verdicts.append((f"cards {fmt} four: user CPU <= {FOUR_CPU_TARGET:g}x one card's "
                             "(the image decoded once)",
                             f"{fmt_x(c)} ({fmt_s(four.cpu_median)} / "
                             f"{fmt_s(one.cpu_median)}; bmaptool {fmt_x(tool_c)})",
                             c is not None and c <= FOUR_CPU_TARGET))
        for step, r in steps.items():
            bad = [f"{res.label}: {res.mismatch or res.error}"
                   for res in r.values() if res.mismatch or res.error]
            if r["bmapctl"].unsupported:
                continue
            verdicts.append((f"cards {fmt} {step}: every card holds the image",
                             "; ".join(bad) or "in every run", not bad))
    errors = [(f"cards {fmt} {step}, {res.label}", res.error)
              for fmt, steps in results.items() for step, r in steps.items()
              for res in r.values() if res.error]
    return verdicts, errors


def runs_table(cards, add):
    """Every run's seconds, for the details of the report."""
    for fmt, steps in cards["results"].items():
        for step, r in steps.items():
            for res in r.values():
                add(f"| cards {fmt} {step} | {res.label} | "
                    + " ".join(f"{t:.2f}" for t in res.times) + " |")
