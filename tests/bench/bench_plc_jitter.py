"""Poll-cycle jitter of the PLC link at a 10 ms period while units flow at 20 units/s.

The simulated conveyor PLC runs in its own process (as a real PLC is its own device) over Modbus
TCP on loopback, and for the RTU figure behind a pty bus. The controller process runs the PlcLink,
diverts every unit as it arrives, and for every unit runs the daemon's real damage check
(vision.damage.DamageChecker.check, Numba kernels warmed up first) on a simulated 1280x720 camera
frame, in a vision worker pool sized and used exactly as the daemon does (station.sim.yaml's
vision.workers, loop.run_in_executor), so the process carries a grading line's load.

Figures: lateness of each cycle start against its schedule (what a consumer of the snapshot sees),
the interval between cycle starts, the time one cycle (all input blocks) takes, and the damage
check's own time per frame. BENCH_PLC_REPEATS=N runs each transport N times and prints the spread
(the machine may be shared); BENCH_PLC_SECONDS sets the length of one run.

Run: .venv/bin/python -m tests.bench plc_jitter   (or: .venv/bin/python tests/bench/bench_plc_jitter.py [tcp|rtu])
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "var" / "numba-cache"))

import numpy as np

from plc.client import PlcLink
from plc.register_map import default_map
from plc.rtu import RtuBus, RtuPlcLink

REPO = Path(__file__).resolve().parents[2]
PERIOD_S = 0.01
RATE = 20.0
SECONDS = float(os.environ.get("BENCH_PLC_SECONDS", "10"))
REPEATS = int(os.environ.get("BENCH_PLC_REPEATS", "1"))
FRAMES = 8  # distinct simulated frames, cycled through the units
SPEED = 2500.0  # 50 mm units every 50 ms leave 75 mm gaps


def _sim_process(transport: str, conn: object) -> None:
    import logging

    from simulator.conveyor import SimulatedConveyor
    from simulator.rtu_bus import RtuBusSim

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    async def main() -> None:
        wire = RtuBusSim() if transport == "rtu" else None
        if wire is not None:
            wire.open()
            sim = SimulatedConveyor(
                belt_speed_mm_s=SPEED, min_gap_mm=20, transport="rtu", serial_port=wire.attach(), parity="N"
            )
        else:
            sim = SimulatedConveyor(belt_speed_mm_s=SPEED, min_gap_mm=20)
        async with sim:
            conn.send(wire.master_path if wire else sim.port)  # type: ignore[attr-defined]
            await asyncio.to_thread(conn.recv)  # type: ignore[attr-defined]  # controller is armed
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < SECONDS:
                sim.induct(50.0, n)
                n += 1
                await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
            await asyncio.sleep(2.0)  # let the last units leave
            wrong = [t for t, lane in sim.results.items() if lane not in (0, t % 5 + 1)]
            conn.send({"inducted": n, "exited": len(sim.results), "wrong": len(wrong),
                       "diverted": sum(1 for lane in sim.results.values() if lane)})  # type: ignore[attr-defined]
        if wire is not None:
            wire.close()

    asyncio.run(main())


def _frames(px_per_mm: float) -> list[np.ndarray]:
    """Camera frames of returned units as the simulated line renders them: mixed grades and sizes."""
    from simulator.render import generate_appearance, render_frame

    rng = np.random.default_rng(2026)
    kinds = [("A", "phone", 146.7, 71.5), ("B", "tablet", 248.6, 179.5), ("C", "laptop", 304.1, 215.0),
             ("D", "phone", 150.9, 75.7)]
    frames = []
    for i in range(FRAMES):
        grade, category, width, height = kinds[i % len(kinds)]
        appearance, _ = generate_appearance(grade, category, width, height, rng)  # type: ignore[arg-type]
        frames.append(render_frame(appearance, rng, px_per_mm=px_per_mm))
    return frames


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _controller(transport: str, endpoint: object, conn: object) -> dict[str, object]:
    from edge.config import load_station
    from vision.damage import DamageChecker, warm_up

    station = load_station(REPO / "config" / "station.sim.yaml")
    warm_up()
    checker = DamageChecker(px_per_mm=station.vision.px_per_mm)
    frames = _frames(station.vision.px_per_mm)
    check_ms: list[float] = []  # submit to result, queueing for the worker included
    worker_ms: list[float] = []  # the check alone, on the worker thread

    def timed_check(frame: np.ndarray) -> object:
        began = time.perf_counter()
        try:
            return checker.check(frame)
        finally:
            worker_ms.append((time.perf_counter() - began) * 1000)
    # The daemon's vision worker pool (edge/daemon.py), used as edge/pipeline.py uses it.
    executor = ThreadPoolExecutor(max_workers=station.vision.workers, thread_name_prefix="vision")
    kwargs = {"poll_period_s": PERIOD_S, "record_cycles": 100_000, "timeout_s": 0.1}
    bus = None
    if transport == "rtu":
        bus = RtuBus(str(endpoint), parity="N", timeout_s=0.1)
        link: PlcLink = RtuPlcLink(bus, default_map(), **kwargs)  # type: ignore[arg-type]
    else:
        link = PlcLink("127.0.0.1", int(endpoint), default_map(), **kwargs)  # type: ignore[arg-type]
    statuses: dict[str, int] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def unit(item_id: int) -> None:
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        await loop.run_in_executor(executor, timed_check, frames[item_id % len(frames)])
        check_ms.append((time.perf_counter() - began) * 1000)
        status = (await link.divert(item_id, item_id % 5 + 1)).status
        statuses[status] = statuses.get(status, 0) + 1

    async with link:
        try:
            await link.wait_armed(10)
        except TimeoutError:
            raise SystemExit(f"link never armed: {link.state} {link.safety_state} {link.counters}") from None
        assert link.cycles is not None
        link.cycles.clear()
        conn.send("go")  # type: ignore[attr-defined]
        t_end = time.monotonic() + SECONDS + 1.0
        while time.monotonic() < t_end:
            try:
                arrival = await asyncio.wait_for(link.arrivals.get(), 0.2)
            except TimeoutError:
                continue
            task = asyncio.create_task(unit(arrival.item_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        cycles = list(link.cycles)
        counters = dict(link.counters)
    executor.shutdown()
    if bus is not None:
        bus.close()
    late = [(began - sched) * 1000 for sched, began, _ in cycles]
    intervals = [(b2 - b1) * 1000 for (_, b1, _), (_, b2, _) in itertools.pairwise(cycles)]
    busy = [(end - began) * 1000 for _, began, end in cycles]
    return {"cycles": len(cycles), "late": late, "intervals": intervals, "busy": busy,
            "statuses": statuses, "counters": counters, "check_ms": check_ms, "worker_ms": worker_ms}


def run(transport: str) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_sim_process, args=(transport, child), daemon=True)
    proc.start()
    endpoint = parent.recv()
    result = asyncio.run(_controller(transport, endpoint, parent))
    line = parent.recv()
    proc.join(10)
    late, iv, busy, check = result["late"], result["intervals"], result["busy"], result["check_ms"]
    assert isinstance(late, list) and isinstance(iv, list) and isinstance(busy, list) and isinstance(check, list)
    print(f"[{transport}] period {PERIOD_S * 1000:.0f} ms, {RATE:.0f} units/s for {SECONDS:.0f} s, "
          f"{result['cycles']} poll cycles")
    print(f"  start lateness ms  p50 {_pct(late, 0.5):6.2f}  p99 {_pct(late, 0.99):6.2f}  max {max(late):6.2f}")
    print(f"  interval ms        p50 {_pct(iv, 0.5):6.2f}  p99 {_pct(iv, 0.99):6.2f}  "
          f"stdev {statistics.pstdev(iv):5.2f}")
    print(f"  cycle busy ms      p50 {_pct(busy, 0.5):6.2f}  p99 {_pct(busy, 0.99):6.2f}")
    worker = result["worker_ms"]
    assert isinstance(worker, list)
    print(f"  damage check ms    p50 {_pct(worker, 0.5):6.2f}  p99 {_pct(worker, 0.99):6.2f}  on the worker;  "
          f"with queueing p50 {_pct(check, 0.5):6.2f}  p99 {_pct(check, 0.99):6.2f}  ({len(check)} frames)")
    counters = result["counters"]
    assert isinstance(counters, dict)
    print(f"  units: {line}  divert statuses: {result['statuses']}  "
          f"read_errors {counters['read_errors']} missed_arrivals {counters['missed_arrivals']}")
    return _pct(late, 0.5), _pct(late, 0.99)


if __name__ == "__main__":
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    for transport in sys.argv[1:] if len(sys.argv) > 1 and sys.argv[1] in ("tcp", "rtu") else ("tcp", "rtu"):
        figures = [run(transport) for _ in range(REPEATS)]
        if REPEATS > 1:
            p50s, p99s = sorted(f[0] for f in figures), sorted(f[1] for f in figures)
            print(f"[{transport}] over {REPEATS} runs: start lateness p50 {p50s[0]:.2f}..{p50s[-1]:.2f} ms "
                  f"(median {statistics.median(p50s):.2f}), p99 {p99s[0]:.2f}..{p99s[-1]:.2f} ms "
                  f"(median {statistics.median(p99s):.2f})")
