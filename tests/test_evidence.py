"""Evidence images: what is cut out of the frame, what is drawn, and how the writer thread behaves
when it falls behind (bounded backlog, counted drops, back to normal scheduling to catch up)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from vision import evidence
from vision.evidence import (
    CROP_MARGIN_PX,
    MIN_CROP_WIDTH_PX,
    EvidenceWriter,
    cut_evidence,
    draw_evidence,
    evidence_region,
    render_evidence,
)
from vision.report import DamageReport, Defect

ROOT = Path(__file__).resolve().parents[1]

FRAME_SHAPE = (720, 1280, 3)
# A phone-sized unit in the middle of the frame, a crack across it and a label on it.
CORNERS = ((500.0, 200.0), (780.0, 200.0), (780.0, 560.0), (500.0, 560.0))
CRACK = Defect(
    kind="crack",
    x_mm=20.0,
    y_mm=30.0,
    length_mm=25.0,
    width_mm=0.5,
    area_mm2=5.0,
    confidence=0.9,
    frame_px=(600.0, 300.0),
    outline_px=((560.0, 280.0), (650.0, 280.0), (650.0, 320.0), (560.0, 320.0)),
)


def _report(**changes: object) -> DamageReport:
    fields: dict[str, object] = {
        "device_found": True,
        "device_width_mm": 71.5,
        "device_height_mm": 146.7,
        "defects": [CRACK],
        "damage_score": 0.4,
        "device_corners_px": CORNERS,
        "label_regions_px": ((520, 480, 600, 540),),
    }
    fields.update(changes)
    return DamageReport(**fields)  # type: ignore[arg-type]


def _frame() -> np.ndarray:
    return np.random.default_rng(3).integers(60, 120, FRAME_SHAPE, np.uint8)


def test_region_is_the_unit_and_its_findings_plus_a_margin() -> None:
    x0, y0, x1, y1 = evidence_region(FRAME_SHAPE, _report())
    assert (y0, y1) == (200 - CROP_MARGIN_PX, 560 + CROP_MARGIN_PX + 1)
    assert x0 <= 500 - CROP_MARGIN_PX and x1 >= 780 + CROP_MARGIN_PX
    assert x1 - x0 >= MIN_CROP_WIDTH_PX and (x1 - x0) * (y1 - y0) < FRAME_SHAPE[0] * FRAME_SHAPE[1] / 3


def test_region_grows_to_hold_a_finding_label_and_stays_inside_the_frame() -> None:
    near_edge = Defect(**{**CRACK.__dict__, "frame_px": (1200.0, 30.0), "outline_px": ((1190.0, 20.0),)})
    x0, y0, x1, y1 = evidence_region(FRAME_SHAPE, _report(defects=[near_edge]))
    assert (y0, x1) == (0, 1280)  # the label runs off the frame: cut at its edge
    corners_at_the_edge = ((0.0, 0.0), (100.0, 0.0), (100.0, 50.0), (0.0, 50.0))
    x0, y0, x1, y1 = evidence_region(
        FRAME_SHAPE, _report(device_corners_px=corners_at_the_edge, defects=[], label_regions_px=())
    )
    assert (x0, y0) == (0, 0) and x1 == MIN_CROP_WIDTH_PX and y1 <= 50 + CROP_MARGIN_PX + 1


def test_whole_frame_when_nothing_was_located() -> None:
    report = _report(device_found=False, device_corners_px=(), defects=[], label_regions_px=())
    assert evidence_region(FRAME_SHAPE, report) == (0, 0, 1280, 720)
    image = render_evidence(cut_evidence(_frame(), report), None, "no unit")
    assert image.shape == FRAME_SHAPE  # header drawn over the top, as edge inspect's images


def test_crop_shows_the_findings_at_full_resolution_under_a_header() -> None:
    frame = _frame()
    before = frame.copy()
    crop = cut_evidence(frame, _report())
    image = render_evidence(crop, "D", "U1 item 7 repair")
    np.testing.assert_array_equal(frame, before)  # drawn on a copy
    x0, y0, x1, y1 = crop.region
    header = image.shape[0] - (y1 - y0)
    assert image.shape[1] == x1 - x0 and header > 0
    # Below the header the pixels are the frame's own (1:1), except where something is drawn.
    body = image[header:]
    same = (body == frame[y0:y1, x0:x1]).all(axis=2)
    assert same[:10, :10].all()
    # The crack's outline in red, where the frame has it.
    red = (body[..., 2] > 200) & (body[..., 1] < 60) & (body[..., 0] < 60)
    assert red[280 - y0 - 2 : 320 - y0 + 3, 560 - x0 - 2 : 650 - x0 + 3].sum() > 50
    # Header text is white on black.
    assert (image[:header] > 200).any() and (image[:header, :, 0] == 0).mean() > 0.8


def test_grey_frames_and_the_whole_frame_mode_of_draw_evidence() -> None:
    grey = _frame()[..., 0].copy()
    image = draw_evidence(grey, _report(), "B", crop=True)
    assert image.ndim == 3 and image.shape[1] < 1280
    assert draw_evidence(grey, _report(), "B").shape == FRAME_SHAPE


def test_long_header_lines_wrap_to_the_crop() -> None:
    many = [Defect(**{**CRACK.__dict__, "kind": "scratch"}) for _ in range(30)]
    image = draw_evidence(_frame(), _report(defects=many), "C", "caption " * 30, crop=True)
    _, y0, _, y1 = evidence_region(FRAME_SHAPE, _report(defects=many))
    assert image.shape[0] - (y1 - y0) > 3 * evidence.HEADER_LINE_PX  # several lines, none cut off the side


def test_writer_writes_a_cropped_jpeg_and_reports_its_backlog(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path)
    path = writer.submit("U0123456789abcdef", _frame(), _report(), "D", "caption")
    writer.close()
    assert path is not None and path.parent.parent == tmp_path
    image = cv2.imread(str(path))
    assert image is not None and image.shape[1] < 1280 and image.shape[0] < 720
    stats = writer.stats()
    stats.pop("priority_raised", None)  # closed with the image maybe still queued: raised to finish it
    assert stats == {"pending": 0, "peak_pending": 1, "written": 1}
    assert writer.cpu_ns > 0
    assert writer.submit("U1", _frame(), _report(), "D") is None  # closed: dropped and counted, no exception
    assert writer.error_counters() == {"evidence:dropped": 1} and writer.pending == 0
    with pytest.raises(ValueError):
        writer.path_for("../../etc/passwd")


def _gated_disk(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[int]]:
    """A disk that holds every write until the gate opens, noting the writer's scheduling policy."""
    gate = threading.Event()
    policies: list[int] = []
    real_write = evidence.write_atomically

    def slow_disk(path: Path, data: bytes) -> None:
        policies.append(os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else -1)
        assert gate.wait(30)
        real_write(path, data)

    monkeypatch.setattr(evidence, "write_atomically", slow_disk)
    return gate, policies


def test_a_writer_that_falls_behind_drops_and_counts_but_loses_nothing_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, policies = _gated_disk(monkeypatch)
    writer = EvidenceWriter(tmp_path, max_pending=5, raise_at=3)
    paths = [writer.submit("U0000", _frame(), _report(), "B")]
    for _ in range(3000):  # the worker is at the (blocked) disk with the first image
        if policies:
            break
        threading.Event().wait(0.01)
    paths += [writer.submit(f"U{n:04d}", _frame(), _report(), "B") for n in range(1, 8)]
    assert writer.pending == 5 and writer.counters["dropped"] == 3
    assert paths[5:] == [None, None, None] and all(p is not None for p in paths[:5])
    assert writer.error_counters() == {"evidence:dropped": 3}
    gate.set()
    for _ in range(3000):  # caught up before the stop (closing would raise it again)
        if writer.pending == 0:
            break
        threading.Event().wait(0.01)
    writer.close()
    assert writer.stats()["pending"] == 0 and writer.counters["written"] == 5
    assert all(p is not None and p.exists() for p in paths[:5])
    if hasattr(os, "SCHED_IDLE"):
        # First image under SCHED_IDLE; with the backlog at raise_at the writer ran at normal
        # scheduling, and went back to idle once it had caught up.
        assert policies[0] == os.SCHED_IDLE
        assert os.SCHED_OTHER in policies and writer.counters["priority_raised"] == 1
        assert policies[-1] == os.SCHED_IDLE


def test_failed_writes_are_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    writer = EvidenceWriter(blocker)  # every day folder would be inside a file: writes fail
    assert writer.submit("U1", _frame(), _report(), "A") is not None
    writer.close()
    assert writer.counters["failed"] == 1 and writer.pending == 0
    assert writer.error_counters() == {"evidence:failed": 1}


@pytest.mark.skipif(
    not hasattr(os, "SCHED_IDLE") or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs Linux, root and setpriv to run as an unprivileged user",
)
def test_an_unprivileged_writer_does_not_go_idle_for_good() -> None:
    """Without CAP_SYS_NICE (and with the default RLIMIT_NICE) a thread cannot leave SCHED_IDLE, so
    the writer could never catch up: the probe says so and the writer stays at nice 10 instead."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import os, tempfile; from vision import evidence; "
        "w = evidence.EvidenceWriter(tempfile.mkdtemp()); "
        "print(evidence.idle_scheduling_is_reversible(), "
        "w._pool.submit(lambda: (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))).result())"
    )
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", f"({os.SCHED_OTHER},", "10)"]


def test_writer_falls_back_to_nice_10_where_idle_scheduling_is_not_reversible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evidence, "idle_scheduling_is_reversible", lambda: False)
    writer = EvidenceWriter(tmp_path)
    try:
        policy, nice = writer._pool.submit(
            lambda: (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
        ).result()
    finally:
        writer.close()
    assert (policy, nice) == (os.SCHED_OTHER, 10)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux only")
def test_closing_raises_an_idle_writer_so_the_stop_never_waits_on_a_starved_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, policies = _gated_disk(monkeypatch)
    writer = EvidenceWriter(tmp_path, max_pending=8, raise_at=8)  # a backlog of 2 never raises it
    writer.submit("U0", _frame(), _report(), "B")
    writer.submit("U1", _frame(), _report(), "B")
    for _ in range(3000):
        if policies:
            break
        threading.Event().wait(0.01)
    assert policies == [os.SCHED_IDLE]
    closing = threading.Thread(target=writer.close)
    closing.start()
    for _ in range(3000):
        if writer.counters["priority_raised"]:
            break
        threading.Event().wait(0.01)
    gate.set()
    closing.join(30)
    assert not closing.is_alive() and writer.counters["written"] == 2
    assert writer.counters["priority_raised"] == 1 and policies[-1] == os.SCHED_OTHER


def test_any_failure_while_drawing_is_counted_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def overflow(*_args: object, **_kwargs: object) -> np.ndarray:
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(evidence, "cut_evidence", overflow)
    writer = EvidenceWriter(tmp_path)
    assert writer.submit("U1", _frame(), _report(), "A") is not None
    writer.close()
    assert writer.counters["failed"] == 1 and writer.pending == 0 and writer.counters["written"] == 0
