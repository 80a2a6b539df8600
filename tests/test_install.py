"""scripts/install.sh staged into a throwaway root (DESTDIR); this machine's /opt and /etc are untouched.

The package is zipped into a wheel from the source tree and installed offline with
--no-deps; the staged virtualenv then borrows the test environment's dependencies through a .pth
file so `edge warm-up` and `edge check-config` run for real from the installed copy.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from .conftest import REPO

SOURCES = ("edge", "drivers", "vision", "plc", "simulator")


def _wheel(tmp_path: Path) -> Path:
    """A pure-Python wheel of the source tree, zipped by hand: the test environment has no `wheel`
    package for setuptools' bdist_wheel, and tests must not need the network."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name, version = project["name"].replace("-", "_"), project["version"]
    info = f"{name}-{version}.dist-info"
    wheel = tmp_path / f"{name}-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in SOURCES:
            for source in sorted((REPO / package).rglob("*.py")):
                if "__pycache__" not in source.parts:
                    arcname = source.relative_to(REPO).as_posix()
                    archive.write(source, arcname)
                    records.append(arcname)
        scripts = "".join(f"{key} = {value}\n" for key, value in project["scripts"].items())
        meta = {
            "METADATA": f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {version}\n",
            "WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            "entry_points.txt": f"[console_scripts]\n{scripts}",
        }
        for file, text in meta.items():
            archive.writestr(f"{info}/{file}", text)
            records.append(f"{info}/{file}")
        archive.writestr(f"{info}/RECORD", "".join(f"{r},,\n" for r in [*records, f"{info}/RECORD"]))
    return wheel


def _install(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(root), "PACKAGE": str(wheel), "PIP_ARGS": "--no-deps --no-index",
           "SKIP_WARMUP": "1", "PYTHON": sys.executable}
    return subprocess.run(["sh", str(REPO / "scripts" / "install.sh")], env=env, capture_output=True, text=True,
                          timeout=600)


def test_install_into_a_staging_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    wheel = _wheel(tmp_path)
    result = _install(root, wheel)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "libzbar0" not in result.stdout, "the default zxing backend needs no system library"

    venv = root / "opt/edge/venv"
    assert (venv / "bin/edge").is_file()
    assert (root / "etc/systemd/system/edge.service").read_text() == (REPO / "systemd/edge.service").read_text()
    for name in ("station.yaml", "grading.yaml", "catalog.csv"):
        assert (root / "etc/edge" / name).is_file()
    assert stat.S_IMODE((root / "etc/edge/credentials").stat().st_mode) == 0o700
    assert (root / "var/lib/edge/numba-cache").is_dir()
    assert (root / "opt/edge/share/docs/deploy.md").is_file()

    # borrow numba, numpy, pydantic... from the test environment, then run the installed command
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(venv / "bin/python"), "-c", purelib], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "zz-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    cache = root / "var/lib/edge/numba-cache"
    warm = subprocess.run([str(venv / "bin/edge"), "warm-up", "--cache-dir", str(cache)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "vision kernels warm" in warm.stdout
    assert list(cache.rglob("*.nbi")), "warm-up left no Numba cache index"
    # the installed package is the one that ran, not the source tree
    where = subprocess.run([str(venv / "bin/python"), "-c", "import edge; print(edge.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert where.startswith(str(venv))
    check = subprocess.run([str(venv / "bin/edge"), "check-config", str(root / "etc/edge/station.yaml")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr

    # a second run (an upgrade) keeps what ops edited
    station = root / "etc/edge/station.yaml"
    station.write_text(station.read_text().replace("controller_id: edge-01", "controller_id: edge-07"))
    again = _install(root, wheel)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "controller_id: edge-07" in station.read_text()
    assert "keeping existing /etc/edge/station.yaml" in again.stdout


def test_install_refuses_a_system_install_without_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # As root it would really install; run it as nobody instead when we can.
        if shutil.which("runuser") is None:
            return
        command = ["runuser", "-u", "nobody", "--", "sh", str(REPO / "scripts/install.sh")]
    else:
        command = ["sh", str(REPO / "scripts/install.sh")]
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode != 0
    assert "run as root" in result.stderr


def test_install_picks_the_pyzbar_backend_a_station_asks_for(tmp_path: Path) -> None:
    root = tmp_path / "root"
    station = root / "etc/edge/station.yaml"
    station.parent.mkdir(parents=True)
    example = (REPO / "config/station.example.yaml").read_text()
    station.write_text(example.replace("\nvision:\n", "\nvision:\n  barcode_backend: pyzbar\n", 1))
    assert "barcode_backend: pyzbar" in station.read_text()

    result = _install(root, _wheel(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uses the pyzbar barcode backend: installing it" in result.stdout
    # a staged install cannot install system packages for the target, and says what the target needs
    assert "the target needs libzbar0" in result.stdout
    assert "barcode_backend: pyzbar" in station.read_text(), "an existing station.yaml is never overwritten"

