"""Start-up and memory over a long run: `edge sim` + `edge run` against a real mosquitto.

1. Ready after start: from the daemon's process creation to its READY log line (the kernels are
   warmed before READY), against the 3 s budget for a warm Numba cache. `edge warm-up` fills the
   cache first (its time says whether it was already warm; `--cold` skips it), and the daemon's own
   "vision kernels ready in" line says what the start cost.
2. Resident memory (VmRSS and RssAnon from /proc) sampled every `--sample` seconds over a run of
   `--units` units at `--rate` units/s: start (at READY), steady (median once the first `--settle`
   of the units are graded), end and peak, against the 250 MB budget; and the growth per 1000 units
   of RssAnon over the steady part, as the median rise between consecutive blocks (see
   block_growth_per_1000), against "no growth" (under `--growth-limit` MB per 1000 units). The
   allocator's high water rises in steps whenever many units are in flight at once (a busy machine),
   so a least-squares slope says more about when the last burst happened than about a leak.

The simulator renders frames a little ahead of induction (`--lookahead`), at a rate its core keeps
up with; frame rendering is not what this measures, so a moderate rate is the default.

Run: .venv/bin/python -m tests.bench soak   or
     .venv/bin/python tests/bench/bench_soak.py [--units N] [--rate R] [--sample S] [--cold]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.launch import Line, cpu_s, rss_mb, simulated_line  # noqa: E402
from tests.conftest import Mosquitto  # noqa: E402

READY_BUDGET_S = 3.0
RSS_BUDGET_MB = 250.0
# The daemon's per-unit log line ("unit U... latency=12.3ms" as text, "latency_ms" in JSON lines).
_GRADED = re.compile(rb"latency=|\"latency_ms\"")
_KERNELS_READY = re.compile(r"vision kernels ready in ([0-9.]+) s")
_INDUCTED = re.compile(rb"sim: inducted unit (\d+)/")


def numba_cache_dir() -> Path:
    """Where the simulator's station file puts the Numba cache (simulator/line.py)."""
    return Path(os.environ.get("EDGE_BENCH_NUMBA_CACHE", Path.home() / ".cache" / "edge" / "numba"))


def warm_cache(cache_dir: Path) -> str:
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "edge", "warm-up", "--cache-dir", str(cache_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"edge warm-up failed: {result.stderr[-500:]}")
    return f"edge warm-up {time.monotonic() - began:.1f} s wall ({result.stdout.strip()})"


def graded(line: Line) -> int:
    return len(_GRADED.findall((line.workdir / "daemon.log").read_bytes()))


def inducted(line: Line) -> int:
    counts = _INDUCTED.findall((line.workdir / "sim.log").read_bytes())
    return int(counts[-1]) if counts else 0


def rss_anon_mb(pid: int) -> float:
    """Anonymous resident memory (RssAnon) in MB: the daemon's own heap, without the shared library
    and Numba code pages (RssFile), which are constant after READY."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024.0
    raise ValueError(f"no RssAnon for process {pid}")


def block_growth_per_1000(points: list[tuple[int, float]], blocks: int = 6) -> float:
    """MB per 1000 units that memory keeps growing by: the steady part cut into `blocks` blocks of
    equal units, the median of the increases between consecutive block medians. A leak raises every
    block; the allocator's high water rising once (a burst of units in flight on a busy machine)
    raises one or two, which a least-squares slope turns into anything from 0 to +25 MB per 1000."""
    if len(points) < 2 * blocks:
        return slope_per_1000(points)
    low, high = points[0][0], points[-1][0]
    width = (high - low) / blocks or 1
    medians = []
    for i in range(blocks):
        last = i == blocks - 1
        block = [p for p in points if low + i * width <= p[0] < low + (i + 1) * width or (last and p[0] == high)]
        if block:
            medians.append((statistics.median(p[0] for p in block), statistics.median(p[1] for p in block)))
    rises = [1000.0 * (y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in itertools.pairwise(medians) if x2 > x1]
    return statistics.median(rises) if rises else 0.0


def slope_per_1000(points: list[tuple[int, float]]) -> float:
    """Least-squares MB per 1000 units through (units graded, RSS MB) points."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return 1000.0 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def soak(args: argparse.Namespace, broker: Mosquitto, workdir: Path) -> None:
    cache_dir = numba_cache_dir()
    cache_note = "not warmed first (--cold)" if args.cold else warm_cache(cache_dir)
    print(f"Numba cache {cache_dir}: {cache_note}", flush=True)
    changes = {
        "units": args.units,
        "rate_per_s": args.rate,
        "seed": 31,
        "belt_speed_mm_s": args.belt_speed,
        "camera_lookahead_units": args.lookahead,
    }
    samples: list[Sample] = []
    with simulated_line(broker, workdir, changes) as line:
        ready_s = line.wait_ready()
        assert line.daemon is not None
        pid = line.daemon.pid
        ready_cpu_s = cpu_s(pid)
        start_rss = rss_mb(pid)
        kernels = _KERNELS_READY.search(line.daemon_log())
        print(
            f"ready after start: {ready_s:.2f} s wall, {ready_cpu_s:.2f} s CPU "
            f"(kernels ready in {kernels.group(1) + ' s' if kernels else '?'}); "
            f"budget <= {READY_BUDGET_S:.0f} s: {'OK' if ready_s <= READY_BUDGET_S else 'OVER'}",
            flush=True,
        )
        print(f"RSS at READY: {start_rss:.1f} MB; inducting {args.units} units at {args.rate:g}/s", flush=True)
        began = last_print = time.monotonic()
        deadline = began + args.units / args.rate * 3 + 120
        while line.sim.poll() is None and line.daemon.poll() is None and time.monotonic() < deadline:
            time.sleep(args.sample)
            now = time.monotonic()
            samples.append((now - began, graded(line), rss_mb(pid), rss_anon_mb(pid)))
            if now - last_print >= args.progress:
                last_print = now
                _, done, rss, _ = samples[-1]
                print(
                    f"  {now - began:6.0f} s: {inducted(line):5d} units inducted, {done:5d} graded, RSS {rss:6.1f} MB",
                    flush=True,
                )
        if line.daemon.poll() is not None:
            print(f"the daemon exited early with {line.daemon.returncode}", flush=True)
        if time.monotonic() >= deadline:
            print("the run did not finish in time: figures are over what was graded", flush=True)
        busy_cpu_s = cpu_s(pid) - ready_cpu_s if line.daemon.poll() is None else float("nan")
        print(f"the simulator inducted {inducted(line)} units; the daemon graded {graded(line)} of them", flush=True)
    if args.keep_logs:
        Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
        for name in ("sim.log", "daemon.log"):
            shutil.copy(workdir / name, Path(args.keep_logs) / name)
    report(args, samples, start_rss, busy_cpu_s)


Sample = tuple[float, int, float, float]  # (s since READY, units graded, VmRSS MB, RssAnon MB)


def report(args: argparse.Namespace, samples: list[Sample], start_rss: float, cpu: float) -> None:
    if not samples or samples[-1][1] == 0:
        print("no units were graded: nothing to report")
        return
    total = samples[-1][1]
    steady = [(units, rss) for _, units, rss, _ in samples if units >= args.settle * total]
    steady_anon = [(units, anon) for _, units, _, anon in samples if units >= args.settle * total]
    steady_rss = statistics.median(rss for _, rss in steady) if steady else float("nan")
    end_rss = samples[-1][2]
    peak_rss = max(rss for _, _, rss, _ in samples)
    growth = block_growth_per_1000(steady_anon)
    print(f"memory over {total} units graded ({samples[-1][0]:.0f} s, {cpu * 1000 / total:.1f} ms CPU per unit):")
    print(
        f"  RSS start {start_rss:.1f} MB, steady {steady_rss:.1f} MB (median past the first {args.settle:.0%} "
        f"of units), end {end_rss:.1f} MB, peak {peak_rss:.1f} MB"
    )
    peak_anon = max(sample[3] for sample in samples)
    print(f"  RssAnon start {samples[0][3]:.1f} MB, end {samples[-1][3]:.1f} MB, peak {peak_anon:.1f} MB")
    print(f"  growth over the steady part (RssAnon, median rise between 6 blocks): {growth:+.2f} MB per 1000 "
          f"units ({len(steady)} samples; least-squares slope of VmRSS {slope_per_1000(steady):+.2f})")
    previous = samples[0]
    for sample in samples[1:]:
        if sample[3] - previous[3] >= 2.0:
            print(f"  high water rose {sample[3] - previous[3]:+.1f} MB at unit {sample[1]} ({sample[0]:.0f} s)")
        previous = sample
    within = peak_rss <= RSS_BUDGET_MB
    flat = growth <= args.growth_limit
    print(
        f"  budget <= {RSS_BUDGET_MB:.0f} MB: {'OK' if within else 'OVER'} (peak); "
        f"no growth (<= {args.growth_limit:g} MB per 1000 units): {'OK' if flat else 'GROWING'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=6000, help="units to induct (default 6000: ~13 min at 8/s)")
    parser.add_argument("--rate", type=float, default=8.0, help="units per second")
    parser.add_argument("--belt-speed", type=float, default=6000.0, help="mm/s (a unit plus its gap is ~265 mm)")
    parser.add_argument("--lookahead", type=int, default=30, help="frames the simulator renders ahead")
    parser.add_argument("--sample", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--progress", type=float, default=15.0, help="seconds between progress lines")
    parser.add_argument("--settle", type=float, default=0.5, help="share of units before memory counts as steady")
    parser.add_argument("--growth-limit", type=float, default=1.0, help="MB per 1000 units still called flat")
    parser.add_argument("--cold", action="store_true", help="do not run edge warm-up first")
    parser.add_argument("--keep-logs", metavar="DIR", default=None, help="copy the sim and daemon logs here")
    args = parser.parse_args()
    if args.units <= 0 or args.rate <= 0:
        parser.error("--units and --rate must be positive")
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        workdir = Path(tmp)
        (workdir / "broker").mkdir()
        broker = Mosquitto(workdir / "broker")
        broker.start()
        try:
            soak(args, broker, workdir)
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
