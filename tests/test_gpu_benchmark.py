"""benchmarks/gpu.sh runs end to end: its CPU dry run (tiny shapes) writes the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # this python
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--platform", "cpu", "--quick",
         "--steps", "2", "--pipeline_mp", "0.01", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["backend"] == "cpu"
    assert [r["name"] for r in report["training"]] == ["cfnet_x4", "drtmo_up"]
    for row in report["training"]:
        assert row["status"] == "ok", row
        assert row["steps"] == 2 and row["steps_per_s"] > 0
        assert row["xla_memory"]["peak"] == row["chooser_peak_bytes"] > 0
    (pipe,) = report["pipeline"]
    assert pipe["megapixels"] == pytest.approx(0.01, rel=0.05) and pipe["first"]["total_s"] > 0
    md = out.with_suffix(".md").read_text()
    assert "| cfnet_x4 | 2 x 8 |" in md and "| drtmo_up | 1 x 32 |" in md


def test_gpu_script_refuses_a_backend_it_does_not_run_on(tmp_path):
    """--platform gpu on a CPU-only JAX is a usage error, not a CPU run labelled as GPU."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--platform", "gpu", "--out", str(tmp_path / "x")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0 and "JAX runs on cpu" in proc.stderr
    assert not (tmp_path / "x.json").exists()
