"""Data-parallel training: 4 virtual CPU devices against one, resharding a checkpoint, and two
real processes on 127.0.0.1 (jax.distributed, gloo) killed and resumed.

Multi-device runs are subprocesses (this process keeps its one device): tests/parallel_checks.py
with `--xla_force_host_platform_device_count=4` measures every 4-device check in one
interpreter; the tolerances are held here. Equality is to float tolerance, not bitwise: a
sharded step sums the gradient over devices in another order than one device does.

The two-process run has one device per process (CPU collectives with a forced host device count
have crashed) and bounded timeouts (gloo gives up when processes arrive far apart); its children
are killed whatever the outcome.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grain
import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, run_python_checked
from test_training import _HANG_AT_STEP_4, _restore

from experiments.configs import cfnet as cfnet_config
from experiments.configs import response as response_config
from hdr_jax.data import sharding, testing
from hdr_jax.training import loop, tasks

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("persistent_compilation_cache")]

CHECKS_TIMEOUT = 600
PAIR_TIMEOUT = 300


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """The fake HDR folder with the tiny hdr_brackets and synthetic-pair datasets built (here,
    once, so that no subprocess builds them and the two processes start level)."""
    root = tmp_path_factory.mktemp("parallel_data")
    testing.write_fake_hdr_folder(root / "hdr")
    data = {"hdr": root / "hdr", "tfds": root / "tfds"}
    for config in (response_config.get_config("tiny"), cfnet_config.get_config("x2,tiny")):
        config.data.manual_dir, config.data.data_dir = str(data["hdr"]), str(data["tfds"])
        tasks.make_task(config).builder  # noqa: B018  (builds the dataset)
    return data


# -- 4 virtual devices ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_devices(data, cli_env, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("four_devices")
    env = dict(cli_env)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    run_python_checked(
        [REPO_ROOT / "tests" / "parallel_checks.py", data["hdr"], data["tfds"], out / "runs",
         out / "results.json"],
        env, CHECKS_TIMEOUT,
    )
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize(
    "check",
    [
        "cfnet/fsdp",
        "drtmo/replicated",
        "drtmo/optimizer",
        "drtmo/fsdp",
        "response/replicated",
        "response/optimizer",
        "response/fsdp",
    ],
)
def test_one_step_on_4_devices_equals_1(four_devices, check):
    r = four_devices["steps"][check]
    mode = check.split("/")[1]
    assert r["devices"] == 4
    np.testing.assert_allclose(r["loss_4"], r["loss_1"], rtol=1e-6)
    # One Adam step moves parameters by about the learning rate (1e-4 .. 1e-3); float
    # reordering of the gradient sum moves them by orders of magnitude less.
    assert r["changed"] > 5e-5
    assert r["params_diff"] < 1e-6 and r["opt_state_diff"] < 1e-6 and r["batch_stats_diff"] < 1e-6
    # The state is split as asked (all but odd-sized leaves such as a 3-channel bias).
    assert (r["params_sharded"] > 0.99) == (mode == "fsdp")
    assert (r["opt_state_sharded"] > 0.99) == (mode != "replicated")
    if mode == "replicated":
        assert r["params_sharded"] == 0.0 and r["opt_state_sharded"] == 0.0


@pytest.mark.parametrize("devices", [1, 2])
def test_checkpoint_saved_on_4_devices_resumes_on_1_and_2(four_devices, devices):
    r = four_devices["reshard"][f"4->{devices}"]
    assert r["restored_step"] == 2 and r["step"] == 4
    assert r["restore_diff"] == 0.0  # restoring is exact, whatever the layout
    assert r["restored_devices"] == devices and r["devices"] == devices
    # On 2 devices the FSDP state is split again; on one, replicated.
    assert (r["restored_params_sharded"] > 0.99) == (devices == 2)
    assert four_devices["reshard"]["moved"] > 1e-3  # two more steps of lr 1e-3
    (evaluation,) = four_devices["reshard"]["reference_eval"]  # on 4 devices, FSDP state
    assert evaluation["step"] == 4 and 0.0 <= evaluation["accuracy"] <= 1.0
    assert four_devices["reshard"]["drtmo_previews"] == ["pred_over_true_0000001.png"]
    assert r["state_diff"] < 1e-6


def test_memory_budget_analyses_the_per_device_batch(four_devices):
    r = four_devices["memory"]
    assert r["chosen_peak"] == r["peak_batch_1"]  # global batch 4 over 4 devices
    assert r["peak_batch_4"] > r["peak_batch_1"]


def test_a_batch_that_does_not_split_over_the_devices_is_one_line(data, cli_env, tmp_path):
    env = dict(cli_env)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
    workdir = tmp_path / "run"
    args = [*_response_args(data, workdir), "--config.batch_size=6"]
    res = subprocess.run(
        [sys.executable, "-m", "experiments.train", *args],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CHECKS_TIMEOUT,
        check=False,
    )
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert lines[0] == (
        "experiments.train: error: batch_size 6 does not divide over 4 devices; "
        "use a multiple of 4"
    )
    assert not workdir.exists()


# -- two processes --------------------------------------------------------------------------------

# experiments.train killed at a known point: once step 3 has been computed, checkpoint 2 is
# committed and the process hangs before writing checkpoint 3.
_HANG_AT_STEP_3 = _HANG_AT_STEP_4.replace("int(state.step) == 4", "int(state.step) == 3")
assert _HANG_AT_STEP_3 != _HANG_AT_STEP_4

STEPS = 4


def _response_args(data: dict[str, Path], workdir: Path) -> list[str]:
    return [
        "--config=experiments/configs/response.py:tiny",
        f"--config.data.manual_dir={data['hdr']}",
        f"--config.data.data_dir={data['tfds']}",
        f"--config.num_train_steps={STEPS}",
        "--config.checkpoint_every=1",
        f"--config.eval_every={STEPS}",
        "--noprogress",
        f"--workdir={workdir}",
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_pair(args: list[str], env: dict, logs: Path, *, hang: bool) -> None:
    """Both processes of a 2-process run; with `hang`, until both say READY-TO-KILL, then
    SIGKILL. Children are killed on any failure or timeout."""
    port = _free_port()
    program = ["-c", _HANG_AT_STEP_3] if hang else ["-m", "experiments.train"]
    procs, files = [], []
    try:
        for i in range(2):
            dist = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
            files.append(open(logs / f"{'hang' if hang else 'run'}_{i}.log", "w"))
            procs.append(
                subprocess.Popen(
                    [sys.executable, *program, *args, *dist, f"--process_id={i}",
                     "--distributed_timeout=60"],
                    env=env,
                    cwd=REPO_ROOT,
                    stdout=files[-1],
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + PAIR_TIMEOUT
        while time.monotonic() < deadline:
            if hang and all(
                "READY-TO-KILL" in (logs / f"hang_{i}.log").read_text() for i in range(2)
            ):
                break
            if not hang and all(p.poll() is not None for p in procs):
                break
            if hang and any(p.poll() is not None for p in procs):
                break  # one died early: fail below with its log
            time.sleep(0.5)
        if hang:
            for p in procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGKILL)
            codes = [p.wait(30) for p in procs]
            ok = codes == [-signal.SIGKILL] * 2
        else:
            codes = [p.poll() for p in procs]
            ok = codes == [0, 0]
        logs_text = "\n".join((logs / f).read_text()[-3000:] for f in sorted(os.listdir(logs)))
        assert ok, f"exit codes {codes}\n{logs_text}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()


def test_two_processes_killed_and_resumed_equal_one_process(data, cli_env, tmp_path):
    workdir, logs = tmp_path / "two", tmp_path / "logs"
    logs.mkdir()
    args = _response_args(data, workdir)
    _run_pair(args, cli_env, logs, hang=True)
    ckpt = workdir / "checkpoints"
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())[-1] == 2
    # Each process's grain iterator state is in the checkpoint.
    states = sorted(f for f in os.listdir(ckpt / "2" / "data") if f.startswith("process_"))
    assert states == ["process_0-of-2.json", "process_1-of-2.json"]
    _run_pair(args, cli_env, logs, hang=False)  # the same command again: resumes at 2

    config = response_config.get_config("tiny")
    config.data.manual_dir, config.data.data_dir = str(data["hdr"]), str(data["tfds"])
    config.num_train_steps, config.checkpoint_every, config.eval_every = STEPS, 1, STEPS
    one = loop.train_and_evaluate(
        tasks.make_task(config), config, str(tmp_path / "one"), progress=False
    )
    two = _restore(workdir)
    assert int(two.step) == int(one.step) == STEPS
    diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(two.params), jax.tree.leaves(one.params))
    )
    assert diff < 1e-6  # (other rows or another order would differ by ~ the learning rate)
    # Process 0 alone logged: step 2 (first run), step 4 and the evaluation (resumed run).
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [("train", 2), ("train", 4), ("eval", 4)]


# -- per-process data -----------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [2, 4])
def test_process_shards_together_are_the_one_process_batches(processes):
    """Process p's batch s is rows [p b, (p + 1) b) of the one-process batch s, for a shuffled,
    repeated, randomly augmented stream (its randomness keyed by the global index)."""
    ds = grain.MapDataset.range(7).shuffle(seed=3).repeat()
    ds = ds.random_map(lambda i, rng: {"x": i, "r": rng.integers(1 << 30)}, seed=5)
    one = sharding.batch_for_process(ds, 8)
    shards = [sharding.batch_for_process(ds, 8, p, processes) for p in range(processes)]
    for s in range(5):  # past the first epoch boundary (7 examples)
        joined = {k: np.concatenate([shard[s][k] for shard in shards]) for k in ("x", "r")}
        for k in joined:
            np.testing.assert_array_equal(joined[k], one[s][k])
    with pytest.raises(ValueError, match="does not divide over 3 processes"):
        sharding.batch_for_process(ds, 8, 0, 3)
