"""The pipeline's vision additions (issue 5) with the real journal, grading, damage check, barcode
reader and evidence writer. The devices around them are stand-ins: a camera that hands over a
rendered frame, a scale with a fixed reading, a PLC that accepts every divert and a scanner that
never reads. Their real drivers talk to real peers in test_camera, test_scale, test_plc_* and the
end-to-end test; here the point is what the pipeline does with a frame once it has one."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.alarms import Alarms
from edge.catalog import Catalog
from edge.config import load_station
from edge.contract import Envelope, Topics
from edge.journal import Journal, read_unit_history
from edge.pipeline import Arrival, Pipeline
from edge.policy import load_policy
from simulator.render import OutlineSpec, generate_appearance, render_frame
from vision.damage import DamageChecker, warm_up

ROOT = Path(__file__).resolve().parents[1]
GTIN = "00614141001002"  # PH-IP13-128-MID: 146.7 x 71.5 mm, 174 g


@dataclass
class _Weight:
    grams: float


class _Scale:
    async def read_weight(self, stable_only: bool = True, deadline_s: float = 0.25) -> Any:
        return _Weight(174.0)


class _Camera:
    def __init__(self, frame: np.ndarray) -> None:
        self.frame = frame

    async def fetch(self, trigger_id: int) -> np.ndarray:
        return self.frame


@dataclass
class _Divert:
    status: str = "accepted"


class _Plc:
    async def divert(self, item_id: int, lane: int, timeout_s: float = 0.2) -> Any:
        return _Divert()


class _NoReads:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    async def claim(self, seen_at: float) -> Any:
        return None


@dataclass
class _Read:
    text: str
    symbology: str = "GS1 DataMatrix"


class _OneRead:
    """The scanner read the unit's label (what it read is not what these tests are about)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.counters: dict[str, int] = {}

    async def claim(self, seen_at: float) -> Any:
        return _Read(self.text)


async def _run_unit(tmp_path: Path, frame: np.ndarray, reads: Any = None) -> dict[str, Any]:
    config = load_station(ROOT / "config" / "station.sim.yaml")
    config = config.model_copy(update={
        "journal": config.journal.model_copy(update={"path": tmp_path / "j.db", "evidence_dir": tmp_path / "ev"}),
    })
    topics = Topics(config.mqtt.topic_prefix, config.site, config.line)
    envelope = Envelope(config.controller_id)
    warm_up()
    with ThreadPoolExecutor(1, thread_name_prefix="vision") as pool:
        async with Journal(config.journal.path) as journal:
            pipeline = Pipeline(
                config=config, policy=load_policy(config.grading_policy), catalog=Catalog.load(config.catalog),
                journal=journal, envelope=envelope, topics=topics, alarms=Alarms(journal, envelope, topics),
                reads=reads or _NoReads(), scale=_Scale(), camera=_Camera(frame), checker=DamageChecker(px_per_mm=3.0),
                vision_executor=pool, plc=_Plc(),
            )
            await pipeline.handle(Arrival(item_id=7, seen_at=asyncio.get_running_loop().time()))
            assert pipeline.errors.get("pipeline:crash", 0) == 0, pipeline.errors
            pipeline.evidence.close()
            errors = dict(pipeline.errors)
    db = sqlite3.connect(tmp_path / "j.db")
    unit_id = db.execute("SELECT unit_id FROM units").fetchone()[0]
    db.close()
    history = read_unit_history(tmp_path / "j.db", unit_id)
    assert history is not None
    return {**history, "errors": errors}


def _frame(**changes: Any) -> np.ndarray:
    rng = np.random.default_rng(21)
    appearance, _ = generate_appearance("B", "phone", 146.7, 71.5, rng, label_text=f"(01){GTIN}(21)PIPE0001")
    return render_frame(replace(appearance, **changes), rng)


def test_no_scanner_read_is_recovered_from_the_frame_with_evidence(tmp_path: Path) -> None:
    history = asyncio.run(_run_unit(tmp_path, _frame()))
    decision = history["decision"]
    assert decision["identity"]["gtin"] == GTIN and decision["identity"]["serial"] == "PIPE0001"
    assert decision["identity"]["sku"] == "PH-IP13-128-MID"
    assert decision["grade"] == "B" and decision["disposition"] != "quarantine", decision["reasons"]
    read = next(e for e in history["events"] if e["kind"] == "read")
    assert read["data"]["source"] == "camera"
    assert history["errors"].get("frame_barcode:read") == 1
    evidence = Path(decision["vision"]["evidence"])
    assert evidence.is_relative_to(tmp_path / "ev") and evidence.exists()
    image = cv2.imread(str(evidence))  # the phone cut out of the 1280x720 frame, at full resolution
    assert image is not None and 200 < image.shape[1] < 1280 and 200 < image.shape[0] < 720
    assert decision["vision"]["expected_size_mm"] == [146.7, 71.5]


def test_no_read_and_no_label_is_quarantined(tmp_path: Path) -> None:
    history = asyncio.run(_run_unit(tmp_path, _frame(label=None)))
    assert history["decision"]["disposition"] == "quarantine"
    assert "no barcode read" in history["decision"]["reasons"]
    assert history["errors"].get("frame_barcode:none") == 1


@pytest.mark.parametrize(
    ("outline", "grade"),
    [([OutlineSpec("dent", 0, 60.0, 12.0, 2.0)], "C"), ([OutlineSpec("missing_part", 2, 70.0, 30.0, 5.5)], "D")],
)
def test_outline_damage_grades_the_unit(tmp_path: Path, outline: list[OutlineSpec], grade: str) -> None:
    history = asyncio.run(_run_unit(tmp_path, _frame(outline=outline, defects=[])))
    assert history["decision"]["grade"] == grade, history["decision"]["reasons"]


def test_frame_without_a_unit_is_quarantined_with_the_reason(tmp_path: Path) -> None:
    """A frame of patterned background only (the photo-eye fired on something else, or the camera
    looked at the wrong place): never a grade, never an exception; counted, and the reason kept."""
    rng = np.random.default_rng(8)
    weave = cv2.GaussianBlur(rng.normal(0, 40, (720, 1280)).astype(np.float32), (0, 0), 3)
    frame = np.clip(np.stack([140 + weave, 130 + weave, 120 + weave], axis=2), 0, 255).astype(np.uint8)
    history = asyncio.run(_run_unit(tmp_path, frame, _OneRead(f"(01){GTIN}(21)NODEV001")))
    decision = history["decision"]
    assert decision["identity"]["sku"] == "PH-IP13-128-MID"
    assert decision["disposition"] == "quarantine" and decision["grade"] is None
    assert any(reason.startswith("vision failed:") for reason in decision["reasons"]), decision["reasons"]
    assert history["errors"].get("vision:no_device", 0) + history["errors"].get("vision:error", 0) == 1
