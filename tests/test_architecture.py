"""The house rules: the import-linter contracts of pyproject.toml (layers, the web's and the
configuration's forbidden imports, SQL only in `contimg.state`, no cycles) hold for the package."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is missing: install the test extra (pip install -e '.[test]')")
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" in done.stdout and "0 broken" in done.stdout


def test_a_broken_rule_is_caught(tmp_path):
    """The checker itself: a science module that imports the service breaks the layers contract."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is missing: install the test extra (pip install -e '.[test]')")
    pkg = tmp_path / "contimg"
    shutil.copytree(ROOT / "contimg", pkg, ignore=shutil.ignore_patterns("__pycache__", "static", "data", "*.cu"))
    (pkg / "flag" / "_bad.py").write_text("from contimg.service import core  # noqa: F401\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run([exe, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    assert "contimg.flag._bad -> contimg.service" in done.stdout


def test_the_package_diagram_is_current():
    """docs/architecture.md's diagram is the one tools/architecture_graph.py makes from the code."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import architecture_graph
    finally:
        sys.path.pop(0)
    text = architecture_graph.DOC.read_text()
    assert architecture_graph.current_block(text) == architecture_graph.block(), \
        "docs/architecture.md is stale: run python tools/architecture_graph.py --write"
