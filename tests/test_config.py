from pathlib import Path

import pytest
import yaml

from edge.catalog import Catalog
from edge.cli import main
from edge.config import load_station
from edge.policy import load_policy
from edge.yamlconf import ConfigError

from .conftest import CONFIG


def test_shipped_configs_are_valid() -> None:
    for name in ("station.example.yaml", "station.sim.yaml"):
        station = load_station(CONFIG / name)
        assert station.lane_for("quarantine").id == station.reject_lane
        assert load_policy(station.grading_policy).rules
        assert len(Catalog.load(station.catalog)) >= 10


def _write_station(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((CONFIG / "station.example.yaml").read_text())
    data["grading_policy"] = str(CONFIG / "grading.yaml")
    data["catalog"] = str(CONFIG / "catalog.csv")
    mutate(data)
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_unknown_key_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    path = _write_station(tmp_path, lambda d: d["scanner"].update(baud=115200))
    with pytest.raises(ConfigError) as caught:
        load_station(path)
    problem = caught.value.problems[0]
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "baud:" in text)
    assert problem.startswith(f"{path}:{line}: scanner.baud:")
    assert "Extra inputs are not permitted" in problem


def test_topic_ids_are_restricted(tmp_path: Path) -> None:
    path = _write_station(tmp_path, lambda d: d.update(site="dc/berlin"))
    with pytest.raises(ConfigError, match="site"):
        load_station(path)


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("ridge_max_width_px", 1.0, "greater than or equal to 2.5"),
        ("ridge_max_width_px", 40, "less than or equal to 12"),
        ("ridge_min_gap_ratio", 1.0, "less than 1"),
        ("ridge_min_two_sided", -0.1, "greater than or equal to 0"),
        ("ridge_min_two_sided", "high", "valid number"),
    ],
)
def test_bad_ridge_rules_are_refused(tmp_path: Path, field: str, value: object, bound: str) -> None:
    path = _write_station(tmp_path, lambda d: d["vision"].update({field: value}))
    with pytest.raises(ConfigError) as caught:
        load_station(path)
    problem = caught.value.problems[0]
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if f"{field}:" in text)
    assert problem.startswith(f"{path}:{line}: vision.{field}:") and bound in problem, problem


def test_ridge_rules_reach_the_checker(tmp_path: Path) -> None:
    from vision.damage import DamageChecker

    station = load_station(CONFIG / "station.example.yaml")
    defaults = DamageChecker()
    # The configuration's defaults are the checker's: an unchanged station file changes nothing.
    assert station.vision.ridge_rules() == {
        "ridge_min_gap_ratio": defaults.ridge_min_gap_ratio,
        "ridge_min_two_sided": defaults.ridge_min_two_sided,
        "ridge_max_width_px": defaults.ridge_max_width_px,
        "crack_max_width_px": defaults.crack_max_width_px,
        "crack_min_wander_px": defaults.crack_min_wander_px,
        "bent_scratch_max_width_px": defaults.bent_scratch_max_width_px,
    }
    path = _write_station(tmp_path, lambda d: d["vision"].update(
        ridge_max_width_px=6.5, ridge_min_gap_ratio=0.25, crack_max_width_px=7.0, bent_scratch_max_width_px=6.5))
    checker = DamageChecker(**load_station(path).vision.ridge_rules())
    assert (checker.ridge_max_width_px, checker.ridge_min_gap_ratio) == (6.5, 0.25)


@pytest.mark.parametrize("narrower", ["crack_max_width_px", "bent_scratch_max_width_px"])
def test_crack_and_bent_scratch_widths_cannot_fall_below_the_scratch_width(tmp_path: Path, narrower: str) -> None:
    # Raising only ridge_max_width_px (a blurrier camera) would silently drop cracks between the two.
    others = {"crack_max_width_px": 7.5, "bent_scratch_max_width_px": 7.0}
    wide_enough = {name: value for name, value in others.items() if name != narrower}
    path = _write_station(tmp_path, lambda d: d["vision"].update(ridge_max_width_px=7.0, **wide_enough))
    with pytest.raises(ConfigError, match=narrower):
        load_station(path)
    path = _write_station(tmp_path, lambda d: d["vision"].update(ridge_max_width_px=7.0, **others))
    assert load_station(path).vision.ridge_rules()[narrower] == others[narrower]


def test_every_disposition_needs_a_lane(tmp_path: Path) -> None:
    path = _write_station(tmp_path, lambda d: d.update(lanes=[lane for lane in d["lanes"] if lane["id"] != 5]))
    with pytest.raises(ConfigError, match="recycle"):
        load_station(path)


def test_lane_must_name_a_known_cell(tmp_path: Path) -> None:
    def mutate(d):
        d["lanes"][1]["cell"] = "cell-zz"
    with pytest.raises(ConfigError, match="cell-zz"):
        load_station(_write_station(tmp_path, mutate))


def test_environment_variables_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_PLC", "10.1.2.3")
    path = _write_station(tmp_path, lambda d: d["plc"].update(host="${EDGE_TEST_PLC}", port="${EDGE_NOPE:-1502}"))
    station = load_station(path)
    assert station.plc.host == "10.1.2.3" and station.plc.port == 1502


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("controller_id: a\nsite: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        load_station(path)


def test_policy_rejects_b_looser_than_a(tmp_path: Path) -> None:
    data = yaml.safe_load((CONFIG / "grading.yaml").read_text())
    data["cosmetic"]["A"]["max_scratches"] = 20
    path = tmp_path / "grading.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="grade A limits"):
        load_policy(path)


def test_catalog_rejects_bad_check_digit(tmp_path: Path) -> None:
    text = (CONFIG / "catalog.csv").read_text().splitlines()
    fields = text[1].split(",")
    fields[1] = fields[1][:-1] + str((int(fields[1][-1]) + 1) % 10)
    text[1] = ",".join(fields)
    path = tmp_path / "catalog.csv"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(ConfigError, match=r"catalog.csv:2: gtin"):
        Catalog.load(path)


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(CONFIG / "station.example.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
    bad = _write_station(tmp_path, lambda d: d["plc"].update(port=70000))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "plc.port" in err and str(bad) in err
