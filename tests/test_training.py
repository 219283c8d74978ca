"""Training end to end: exact resumption after a kill, config guards, and train -> export ->
restore -> infer through the `hdr-jax` commands.

Data are generated (hdr_jax.data.testing): a folder of tiny OpenEXR scenes for DrTMO and the
synthetic CF-Net pairs, and a miniature SICE tree. Models are the tiny training configs.

Resumption is compared for exact (bitwise) equality: the train step is deterministic on CPU and
a resumed run replays the same batches and per-step RNG, so any difference is a bug.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import PHOTO_HW, REPO_ROOT, files_under, make_photo, run_cli, run_python_checked

from experiments.configs import cfnet as cfnet_config
from experiments.configs import highlight as highlight_config
from experiments.configs import response as response_config
from hdr_jax import io as hio
from hdr_jax import pipeline
from hdr_jax.data import testing
from hdr_jax.eval import baselines
from hdr_jax.models import highlight
from hdr_jax.training import checkpoint, loop, tasks

# Trains, exports and restores tiny networks.
pytestmark = [pytest.mark.usefixtures("persistent_compilation_cache"), pytest.mark.slow]

SUBPROCESS_TIMEOUT = 600


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_data")
    testing.write_fake_hdr_folder(root / "hdr")
    testing.write_fake_sice(root / "sice")
    return {"hdr": root / "hdr", "sice": root / "sice", "tfds": root / "tfds"}


def _restore(workdir: Path, step: int | None = None):
    """The train state saved in `workdir` (latest or `step`), restored as the exporter does."""
    with open(workdir / "config.json") as f:
        config = ml_collections.ConfigDict(json.load(f))
    task = tasks.make_task(config, builder=object())
    template = jax.eval_shape(task.init_state, jax.random.key(0))
    manager = checkpoint.make_manager(str(workdir / "checkpoints"))
    try:
        return checkpoint.restore(manager, template, step=step)
    finally:
        manager.close()


def _arrays(state) -> list[np.ndarray]:
    """Every leaf of a train state as NumPy (PRNG keys as their raw key data)."""
    out = []
    for x in jax.tree.leaves(state):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def assert_states_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)


def assert_params_differ(a, b) -> None:
    assert any(not np.array_equal(x, y) for x, y in zip(_arrays(a.params), _arrays(b.params)))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _latest_step(workdir: Path) -> int | None:
    manager = checkpoint.make_manager(str(workdir / "checkpoints"))
    try:
        return manager.latest_step()
    finally:
        manager.close()


# -- DrTMO: a real `experiments.train` process, killed with SIGKILL and rerun --------------------

# Runs experiments.train, but once step 4 has been computed (its batch drawn from the iterator,
# the state advanced in memory) and before checkpoint 4 is written, it makes sure checkpoint 3
# is committed, says so, and hangs: the test then kills it with SIGKILL at a known point.
_HANG_AT_STEP_4 = """
import sys, time
from absl import app
from hdr_jax.training import checkpoint
_save = checkpoint.save
def save(manager, state, data_iterator=None):
    if int(state.step) == 4:
        manager.wait_until_finished()
        print("READY-TO-KILL", flush=True)
        time.sleep(3600)
    _save(manager, state, data_iterator)
checkpoint.save = save
from experiments import train
sys.argv = ["experiments.train"] + sys.argv[1:]
app.run(train.main)
"""


def _drtmo_args(data: dict[str, Path], workdir: Path) -> list[str]:
    return [
        "--config=experiments/configs/drtmo.py:up,tiny",
        f"--config.data.manual_dir={data['hdr']}",
        f"--config.data.data_dir={data['tfds']}",
        "--config.num_train_steps=6",
        "--config.checkpoint_every=1",
        "--config.eval_every=0",
        "--noprogress",
        f"--workdir={workdir}",
    ]


def _train_subprocess(args: list[str], env: dict[str, str]) -> None:
    run_python_checked(["-m", "experiments.train", *args], env, SUBPROCESS_TIMEOUT)


@pytest.fixture(scope="module")
def drtmo_uninterrupted(data, cli_env, tmp_path_factory) -> Path:
    """Workdir of an uninterrupted 6-step run of drtmo.py:up,tiny (also builds its dataset)."""
    workdir = tmp_path_factory.mktemp("drtmo_a")
    _train_subprocess(_drtmo_args(data, workdir), cli_env)
    return workdir


def test_drtmo_sigkill_and_resume_equals_uninterrupted(
    data, cli_env, drtmo_uninterrupted, tmp_path
):
    workdir = tmp_path / "drtmo_b"
    args = _drtmo_args(data, workdir)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HANG_AT_STEP_4, *args],
        env=cli_env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(SUBPROCESS_TIMEOUT, proc.kill)
    watchdog.start()
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if line.strip() == "READY-TO-KILL":
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
    finally:
        watchdog.cancel()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(output)[-3000:]
    assert _latest_step(workdir) == 3

    _train_subprocess(args, cli_env)  # the same command again: resumes at step 3
    assert _latest_step(workdir) == 6
    resumed, uninterrupted = _restore(workdir), _restore(drtmo_uninterrupted)
    assert int(resumed.step) == 6
    assert_states_equal(resumed, uninterrupted)
    assert_params_differ(uninterrupted, _restore(drtmo_uninterrupted, step=4))


def test_cli_refuses_a_workdir_of_another_model_in_one_line(data, cli_env, drtmo_uninterrupted):
    args = [a for a in _drtmo_args(data, drtmo_uninterrupted) if "num_train_steps" not in a]
    res = subprocess.run(
        [sys.executable, "-m", "experiments.train", *args, "--config.num_train_steps=8",
         "--config.model.depth=4"],
        env=cli_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("experiments.train: error: "), res.stderr
    assert "different model config" in lines[0]
    assert _latest_step(drtmo_uninterrupted) == 6  # nothing was trained or written


def _one_line_error(res, status: int, text: str) -> None:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == status, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("experiments.train: error: "), res.stderr
    assert text in lines[0], lines[0]


def test_cli_bad_configs_workdirs_and_data_in_one_line(data, cli_env, drtmo_uninterrupted,
                                                        tmp_path):
    def run(*extra, workdir=None, args=None):
        args = args if args is not None else [
            a for a in _drtmo_args(data, workdir or tmp_path / "w") if "num_train" not in a]
        return subprocess.run(
            [sys.executable, "-m", "experiments.train", *args, *extra],
            env=cli_env, cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )

    # Settings no run can have, and config files or overrides that do not load: before any
    # data is built or any file written.
    for extra, status, text in [
        (["--config.num_train_steps=0"], 1, "config.num_train_steps must be a whole number >= 1"),
        (["--config.batch_size=-2"], 1, "config.batch_size must be"),
        (["--config.optimizer.learning_rate=nan"], 1, "must be a finite number"),
        (["--config.train.steps=5"], 2, "the config has no key 'train'"),
        (["--config.num_train_step=5"], 2, 'Did you mean "num_train_steps"'),
    ]:
        _one_line_error(run(*extra), status, text)
    res = run(args=["--config=experiments/configs/nope.py:tiny", f"--workdir={tmp_path / 'w'}"])
    _one_line_error(res, 2, "No such file or directory")
    assert not (tmp_path / "w").exists()
    # A data folder that is not there.
    res = run(args=["--config=experiments/configs/drtmo.py:up,tiny",
                    f"--config.data.manual_dir={tmp_path / 'nowhere'}",
                    f"--config.data.data_dir={tmp_path / 'tfds'}", "--noprogress",
                    f"--workdir={tmp_path / 'w'}"])
    _one_line_error(res, 1, "cannot prepare the dataset hdr_brackets")
    # A workdir whose checkpoints is a file, whose config.json is not JSON, or whose latest
    # checkpoint is damaged.
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "checkpoints").write_text("x")
    _one_line_error(run("--config.num_train_steps=8", workdir=tmp_path / "wf"), 1,
                    "its checkpoints is a file, not a folder")
    shutil.copytree(drtmo_uninterrupted, tmp_path / "wj")
    (tmp_path / "wj" / "config.json").write_text("not json")
    _one_line_error(run("--config.num_train_steps=8", workdir=tmp_path / "wj"), 1,
                    "cannot be read as the run's config")
    shutil.copytree(drtmo_uninterrupted, tmp_path / "wd")
    biggest = max((tmp_path / "wd" / "checkpoints" / "6").rglob("*"), key=lambda f: (
        f.is_file() and "ocdbt" in str(f), f.stat().st_size))
    with open(biggest, "r+b") as f:
        f.truncate(1000)
    _one_line_error(run("--config.num_train_steps=8", workdir=tmp_path / "wd"), 1,
                    "cannot be read (damaged?)")


def test_abandoned_read_errors_are_dropped_only_after_a_failed_restore(monkeypatch):
    import logging
    import types

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(str(u.exc_value)))
    monkeypatch.setattr(checkpoint, "_restore_failed", False)
    asyncio_log = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_log, "filters", [])
    checkpoint.drop_abandoned_read_errors()
    checkpoint.drop_abandoned_read_errors()  # a second install does not stack
    assert len(asyncio_log.filters) == 1

    def unraisable(e):
        return types.SimpleNamespace(exc_type=type(e), exc_value=e, exc_traceback=None,
                                     err_msg=None, object=None)

    def logged():
        return asyncio_log.filter(logging.LogRecord("asyncio", logging.ERROR, "", 0,
                                                    "Task exception was never retrieved",
                                                    None, None))

    sys.unraisablehook(unraisable(RuntimeError("Event loop is closed")))  # always dropped
    sys.unraisablehook(unraisable(ValueError("a bug of ours")))
    assert seen == ["a bug of ours"] and logged()
    monkeypatch.setattr(checkpoint, "_restore_failed", True)
    sys.unraisablehook(unraisable(ValueError("the read error again")))
    assert seen == ["a bug of ours"] and not logged()


def test_a_lost_evaluation_is_made_up_on_resume(data, cli_env, drtmo_uninterrupted, tmp_path):
    # A run killed after its last checkpoint and before that step's evaluation: the rerun has
    # no step to train, evaluates the step, and says so; a second rerun adds nothing.
    workdir = tmp_path / "w"
    shutil.copytree(drtmo_uninterrupted, workdir)  # trained to step 6 without evaluations
    args = [a.replace("--config.eval_every=0", "--config.eval_every=3")
            for a in _drtmo_args(data, workdir)]
    for _ in range(2):
        res = subprocess.run([sys.executable, "-m", "experiments.train", *args], env=cli_env,
                             cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=SUBPROCESS_TIMEOUT)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "already at step 6 (config.num_train_steps 6): nothing to train" in res.stderr
        evals = [r for r in _jsonl(workdir / "metrics.jsonl") if r["split"] == "eval"]
        assert [r["step"] for r in evals] == [6] and np.isfinite(evals[0]["psnr"])
    assert _latest_step(workdir) == 6
    assert_states_equal(_restore(workdir), _restore(drtmo_uninterrupted))


# -- CF-Net: train_and_evaluate in this process, 3 steps then 6 --------------------------------


def _cfnet_config(data: dict[str, Path], steps: int, **data_overrides):
    config = cfnet_config.get_config("x2,tiny")
    config.data.manual_dir = str(data["hdr"])
    config.data.data_dir = str(data["tfds"])
    config.data.update(data_overrides)
    config.num_train_steps = steps
    config.checkpoint_every = 1
    config.eval_every = 0
    return config


def _train(config, workdir: Path):
    return loop.train_and_evaluate(tasks.make_task(config), config, str(workdir), progress=False)


@pytest.fixture(scope="module")
def cfnet_uninterrupted(data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cfnet_a")
    return workdir, _train(_cfnet_config(data, 6), workdir)


def test_cfnet_resume_equals_uninterrupted(data, cfnet_uninterrupted, tmp_path):
    _, state_a = cfnet_uninterrupted
    state_3 = _train(_cfnet_config(data, 3), tmp_path)
    assert int(state_3.step) == 3
    state_b = _train(_cfnet_config(data, 6), tmp_path)  # new task, new iterator: resumes at 3
    assert int(state_b.step) == 6
    assert_states_equal(state_b, state_a)
    assert_states_equal(_restore(tmp_path), state_a)  # and that is what the checkpoint holds
    assert_params_differ(state_a, state_3)
    # Each run logged its own steps once: 2 and 3 (first run), then 4 and 6 (the resumed run).
    logged = [r["step"] for r in _jsonl(tmp_path / "metrics.jsonl")]
    assert logged == [2, 3, 4, 6]


def test_workdir_refuses_another_model_config(data, cfnet_uninterrupted):
    workdir, _ = cfnet_uninterrupted
    config = _cfnet_config(data, 8)
    config.model.features = 12
    with pytest.raises(checkpoint.CheckpointMismatchError, match="different model config") as e:
        _train(config, workdir)
    assert "\n" not in str(e.value)
    assert _latest_step(workdir) == 6  # nothing was trained or written

    # Without the config record, restoring into the other model's shapes still fails cleanly.
    template = jax.eval_shape(
        tasks.make_task(config, builder=object()).init_state, jax.random.key(0)
    )
    manager = checkpoint.make_manager(str(workdir / "checkpoints"))
    try:
        with pytest.raises(checkpoint.CheckpointMismatchError) as e:
            checkpoint.restore(manager, template)
    finally:
        manager.close()
    assert "\n" not in str(e.value)


# -- Response classifier: 2 steps then 4, in this process -----------------------------------------


def _short_run(config, steps: int):
    """``config`` set to train ``steps`` steps, checkpointing every step, evaluating every 2."""
    config.num_train_steps = steps
    config.checkpoint_every = 1
    config.eval_every = 2
    return config


def _response_config(data: dict[str, Path], steps: int):
    config = response_config.get_config("tiny")
    config.data.manual_dir = str(data["hdr"])
    config.data.data_dir = str(data["tfds"])
    return _short_run(config, steps)


@pytest.fixture(scope="module")
def response_uninterrupted(data, drtmo_uninterrupted, tmp_path_factory):
    # (drtmo_uninterrupted first: it builds the shared 'tiny' hdr_brackets data in a subprocess)
    workdir = tmp_path_factory.mktemp("response_a")
    return workdir, _train(_response_config(data, 4), workdir)


def _resumed_at_2_equals(uninterrupted, make_config, tmp_path: Path) -> list[dict]:
    """Trains ``make_config(2)`` in ``tmp_path``, then reruns it as ``make_config(4)`` (resuming
    at 2): the result equals the uninterrupted 4-step run. Returns that run's eval records
    (steps 2 and 4)."""
    workdir, state_a = uninterrupted
    state_2 = _train(make_config(2), tmp_path)
    state_b = _train(make_config(4), tmp_path)  # resumes at 2: the same batches drawn
    assert_states_equal(state_b, state_a)
    assert_params_differ(state_a, state_2)
    evals = [r for r in _jsonl(workdir / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    return evals


def test_response_resume_equals_uninterrupted(data, response_uninterrupted, tmp_path):
    evals = _resumed_at_2_equals(response_uninterrupted,
                                 lambda steps: _response_config(data, steps), tmp_path)
    for r in evals:
        assert 0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["cross_entropy"])
        assert 0.5 <= r["top_probability"] <= 1.0  # two responses in the tiny data


# -- Highlight head: 2 steps then 4, in this process ---------------------------------------------


def _highlight_config(data: dict[str, Path], steps: int):
    config = highlight_config.get_config("tiny")
    config.data.manual_dir = str(data["hdr"])
    return _short_run(config, steps)


@pytest.fixture(scope="module")
def highlight_uninterrupted(data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("highlight_a")
    return workdir, _train(_highlight_config(data, 4), workdir)


def test_highlight_resume_equals_uninterrupted(data, highlight_uninterrupted, tmp_path):
    # The views are rendered when drawn: resuming must redraw exactly the same ones.
    evals = _resumed_at_2_equals(highlight_uninterrupted,
                                 lambda steps: _highlight_config(data, steps), tmp_path)
    for r in evals:
        assert all(math.isfinite(r[k]) for k in ("pu21", "pu21_clipped", "pu21_clipped_input"))
        assert r["gain_clipped_db"] == pytest.approx(r["pu21_clipped"] - r["pu21_clipped_input"])


# -- train on SICE -> export -> restore -> hdr-jax fuse / evaluate / reconstruct ------------------


@pytest.fixture(scope="module")
def trained_weights(data, drtmo_uninterrupted, response_uninterrupted, highlight_uninterrupted,
                    tmp_path_factory) -> dict:
    from experiments.export_weights import export_one

    workdir = tmp_path_factory.mktemp("cfnet_sice")
    # SICE has per-scale builder configs only ('x2'), not the synthetic pairs' 'tiny_x2'.
    config = _cfnet_config(
        data, 4, builder="sice", builder_config=None, manual_dir=str(data["sice"])
    )
    config.eval_every = 4
    config.checkpoint_every = 2
    _train(config, workdir)
    weights = tmp_path_factory.mktemp("trained") / "weights"
    export_one(str(workdir), "cfnet_x2", str(weights), "float16")
    # One tiny DrTMO run serves as both stage-1 networks: the pipeline only needs their shapes.
    export_one(str(drtmo_uninterrupted), "drtmo_up", str(weights), "float16")
    export_one(str(drtmo_uninterrupted), "drtmo_down", str(weights), "float16")
    export_one(str(response_uninterrupted[0]), "response", str(weights), "float16")
    export_one(str(highlight_uninterrupted[0]), "highlight", str(weights), "float16")
    return {"weights": weights, "workdir": workdir, "response": response_uninterrupted,
            "highlight": highlight_uninterrupted}


def test_sice_training_logs_eval_and_previews(trained_weights):
    workdir = trained_weights["workdir"]
    records = _jsonl(workdir / "metrics.jsonl")
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [4]
    assert all(math.isfinite(evals[0][k]) for k in ("psnr", "ssim", "psnr_step1", "psnr_step2"))
    assert [p.name for p in files_under(workdir / "previews")] == [
        "under_over_fused_label_0000004.png"
    ]


def test_exported_weights_restore_into_the_pipeline(trained_weights, data, cli_env, tmp_path):
    weights, workdir = trained_weights["weights"], trained_weights["workdir"]
    manifest = json.loads((weights / "manifest.json").read_text())
    assert set(manifest) == {"cfnet_x2", "drtmo_up", "drtmo_down", "response", "highlight"}
    assert manifest["cfnet_x2"]["steps"] == 4 and manifest["drtmo_up"]["steps"] == 6
    assert manifest["cfnet_x2"]["training_data"]["builder"] == "sice"
    assert math.isfinite(manifest["cfnet_x2"]["eval"]["psnr"])

    # The pipeline's CF-Net holds the checkpoint's parameters, rounded to float16.
    state = _restore(workdir)
    net = pipeline.Pipeline(weights).cfnet(2)
    expected = jax.tree.map(
        lambda x: np.asarray(x).astype(np.float16).astype(np.float32), state.params
    )
    assert_states_equal(net.variables["params"], expected)

    # fuse_pair equals the training code's forward pass (same argument order, single tile).
    seq = sorted((data["sice"] / "Dataset_Part1" / "1").iterdir())
    by_brightness = sorted(seq, key=lambda p: hio.read_ldr(p).mean())
    under_path, over_path = by_brightness[0], by_brightness[-1]
    under, over = hio.read_ldr(under_path), hio.read_ldr(over_path)
    fused = pipeline.fuse_pair(net, under, over)
    task = tasks.make_task(_cfnet_config(data, 1), builder=object())
    # (Traced like the pipeline's own apply, so the compiled executable is shared.)
    predict = jax.jit(
        lambda v, o, u: task.predict(v["params"], {"over_lr": o, "under_lr": u})["fused"]
    )
    direct = predict({"params": expected}, over[None], under[None])[0]
    assert fused.shape == (2 * under.shape[0], 2 * under.shape[1], 3)
    np.testing.assert_allclose(fused, np.asarray(direct), atol=1e-5)

    # The classifier: exact float32 parameters, the training data's bank, the task's forward.
    _, r_state = trained_weights["response"]
    assert manifest["response"]["dtype"] == "float32" and manifest["response"]["steps"] == 4
    r_task = tasks.make_task(_response_config(data, 4), builder=object())
    assert manifest["response"]["config"]["responses"] == r_task.bank_names
    r_net = pipeline.Pipeline(weights).response
    assert_states_equal(r_net.variables["params"], jax.device_get(r_state.params))
    np.testing.assert_array_equal(r_net.variables["responses"]["curves"], r_task.bank)
    probs = r_net.apply(r_net.variables, under[None, :32, :32])
    logits = r_task.model.apply(
        jax.device_get(r_state.variables), under[None, :32, :32], train=False
    )
    np.testing.assert_allclose(probs, jax.nn.softmax(logits), atol=1e-6)

    # The highlight head: the checkpoint's parameters in float16, the task's HDR on a photo.
    _, h_state = trained_weights["highlight"]
    h_net = pipeline.Pipeline(weights).highlight
    h_params = jax.tree.map(
        lambda x: np.asarray(x).astype(np.float16).astype(np.float32), h_state.params
    )
    assert_states_equal(h_net.variables["params"], h_params)
    photo = make_photo(hw=(32, 32))  # the tiny head's working size: no downscaling
    h_task = tasks.make_task(_highlight_config(data, 4), builder=object())
    batch = {"photo": photo[None], "linear": photo[None] ** 2.2, "known": np.ones((1, 1))}
    expected = np.asarray(h_task.predict(h_params, batch))[0]
    log_ratio, _ = pipeline.run_highlight_head(pipeline.Pipeline(weights), photo,
                                               known_response=True)
    got = np.asarray(highlight.expand(photo**2.2, photo, log_ratio))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The recipe's head has no curve estimate: a blind photo is linearised as sRGB.
    assert pipeline.run_highlight_head(pipeline.Pipeline(weights), photo)[1] is None

    # `hdr-jax fuse` writes the same image (8-bit).
    out = tmp_path / "fused.png"
    res = run_cli(["fuse", under_path, over_path, "-o", out, "--weights", weights], cli_env)
    assert res.returncode == 0, res.stderr
    assert np.max(np.abs(hio.read_ldr(out) - np.clip(fused, 0, 1))) <= 0.5 / 255 + 1e-6


def test_cli_evaluate_sice(trained_weights, data, cli_env, tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", "sice", "--data-dir", data["sice"], "--weights", trained_weights["weights"]]
    res = run_cli([*args, "--out", out, "--tfds-dir", data["tfds"]], cli_env)
    assert res.returncode == 0, res.stderr
    results = json.loads((out / "results.json").read_text())
    rows = ["CF-Net (ours)", *baselines.baseline_methods()]
    assert list(results) == rows
    for name in rows:
        assert results[name]["n"] == 1  # the fake tree has one held-out sequence
        for metric in ("psnr", "ssim", "mef_ssim", "ciede2000", "mef_ssim_c"):
            assert math.isfinite(results[name][metric]), (name, metric)
        assert 0 < results[name]["ssim"] <= 1
    assert results["bicubic (under)"]["psnr"] != results["bicubic (over)"]["psnr"]
    md = (out / "results.md").read_text()
    assert all(f"| {name} |" in md for name in rows)
    # A second run refuses to replace the results.
    res = run_cli([*args, "--out", out, "--tfds-dir", data["tfds"]], cli_env)
    assert res.returncode == 1 and "exists" in res.stderr


def test_cli_reconstruct_with_stack(trained_weights, cli_env, tmp_path):
    photo = tmp_path / "in" / "scene.png"
    photo.parent.mkdir()
    hio.write_ldr(photo, make_photo(7))
    out = tmp_path / "out"
    res = run_cli(
        ["reconstruct", photo, "-o", out, "--stack", "--weights", trained_weights["weights"]],
        cli_env,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    h, w = PHOTO_HW
    hdr = hio.read_hdr(out / "scene.exr")
    assert hdr.shape == (h, w, 3) and np.all(np.isfinite(hdr)) and np.all(hdr >= 0)
    assert hdr.max() > 0
    assert hio.read_ldr(out / "scene_fused.png").shape == (2 * h, 2 * w, 3)
    preview = hio.read_ldr(out / "scene_preview.png")
    assert preview.shape == (h, w, 3) and preview.max() > preview.min()
    evs = [f"{k / 2:+.1f}" for k in range(-8, 9)]
    stack = [out / f"scene_ev{ev}.png" for ev in evs]
    assert sorted(files_under(out)) == sorted(
        stack + [out / "scene.exr", out / "scene_fused.png", out / "scene_preview.png"]
    )
    # The centre of the stack is the input itself.
    np.testing.assert_array_equal(hio.read_ldr(out / "scene_ev+0.0.png"), hio.read_ldr(photo))


def test_init_weights_starts_from_exported_networks(tiny_weights):
    from experiments.configs import drtmo as drtmo_config
    from hdr_jax import bundle

    for config, name in (
        (drtmo_config.get_config("down,tiny"), "drtmo_down"),
        (cfnet_config.get_config("x2,tiny"), "cfnet_x2"),
    ):
        fresh = tasks.make_task(config, builder=object()).init_state(jax.random.key(0))
        config.init_weights = str(tiny_weights)
        task = tasks.make_task(config, builder=object())
        state = task.init_state(jax.random.key(0))
        stored, _ = bundle.load_network(tiny_weights, name)
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(stored["params"])):
            np.testing.assert_array_equal(np.asarray(a), b)
        assert not all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(fresh.params), jax.tree.leaves(state.params))
        )
        if name.startswith("drtmo"):  # batch-norm statistics come along
            for a, b in zip(
                jax.tree.leaves(state.batch_stats), jax.tree.leaves(stored["batch_stats"])
            ):
                np.testing.assert_array_equal(np.asarray(a), b)
        # Export and the memory analysis trace init_state abstractly: that path loads too.
        shapes = jax.eval_shape(task.init_state, jax.random.key(0))
        assert jax.tree.structure(shapes.params) == jax.tree.structure(state.params)

    config = cfnet_config.get_config("x2,tiny")
    config.model.features = 12  # not the stored network's width
    config.init_weights = str(tiny_weights)
    with pytest.raises(bundle.WeightsError, match="do not match the model config"):
        tasks.make_task(config, builder=object()).init_state(jax.random.key(0))


def test_cfnet_microbatches_give_the_full_batch_step():
    """config.microbatches=2 (gradient accumulation in a rolled loop) makes the same update as
    one pass over the whole batch, up to float rounding; a batch it cannot split is an error."""
    config = cfnet_config.get_config("tiny")
    config.batch_size = 4
    rng = np.random.default_rng(0)
    p, hr = config.data.patch_size, config.data.patch_size * config.model.scale
    batch = {
        "over_lr": rng.uniform(0.4, 1.0, (4, p, p, 3)),
        "under_lr": rng.uniform(0.0, 0.6, (4, p, p, 3)),
        **{k: rng.uniform(0.0, 1.0, (4, hr, hr, 3)) for k in ("over_hr", "under_hr", "label_hr")},
    }
    batch = {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}
    results = []
    for m in (1, 2):
        config.microbatches = m
        task = tasks.make_task(config, builder=object())
        state = task.init_state(jax.random.key(0))
        results.append(jax.jit(task.train_step)(state, batch))
    (s1, m1), (s2, m2) = results
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["psnr"], m2["psnr"], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s1.params, s2.params
    )
    assert_params_differ(s1, task.init_state(jax.random.key(0)))
    config.microbatches = 3
    task = tasks.make_task(config, builder=object())
    with pytest.raises(ValueError, match="divisible by microbatches"):
        jax.eval_shape(task.train_step, task.init_state(jax.random.key(0)), batch)


def test_low_precision_adam_matches_optax_and_stores_bf16():
    """scale_by_adam_low_precision with float32 storage is optax.adam; with bf16 moments the
    state is bf16 and a few steps stay close to float32 Adam."""
    from hdr_jax.training import state as state_lib

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((7, 5)), jnp.float32)}
    grads = [{"w": jnp.asarray(rng.standard_normal((7, 5)), jnp.float32)} for _ in range(5)]

    def run(cfg):
        tx = state_lib.make_optimizer(ml_collections.ConfigDict(cfg))
        p, s = params, tx.init(params)
        for g in grads:
            u, s = tx.update(g, s, p)
            p = jax.tree.map(jnp.add, p, u)
        return p, s

    base = {"learning_rate": 1e-2, "b1": 0.5, "b2": 0.999}
    ref, _ = run(base)
    same, _ = run({**base, "nu_dtype": "float32"})
    np.testing.assert_allclose(same["w"], ref["w"], rtol=1e-6, atol=1e-7)
    low, s = run({**base, "mu_dtype": "bfloat16", "nu_dtype": "bfloat16"})
    moments = s[0]
    assert moments.mu["w"].dtype == jnp.bfloat16 and moments.nu["w"].dtype == jnp.bfloat16
    assert int(moments.count) == len(grads)
    step = np.abs(np.asarray(ref["w"] - params["w"]))
    np.testing.assert_allclose(low["w"], ref["w"], atol=0.02 * step.max())


def test_a_signal_stops_training_within_two_steps(tmp_path, monkeypatch):
    """SIGTERM while the host asks for the 40th batch of 60 slow steps that log and checkpoint
    only at the end: the run stops after step 40, and quickly. JAX dispatches asynchronously;
    unbounded, the host would have queued all 40 steps in a fraction of their compute time,
    and the signal would wait for nearly all of them. Bounded (one step queued behind the one
    computing), the wait is about two steps: a small part of the time the 40 steps took. The
    wait is timed to when the last step has computed, where the checkpoint write begins: the
    write's own time (orbax's threads on a busy machine) is not what the bound is about."""
    import time

    import grain

    from hdr_jax import interrupts
    from hdr_jax.training.state import TrainState

    clock = {}

    def load(i):
        if i == 0:
            clock["first"] = time.perf_counter()
        if i == 39:
            clock["signal"] = time.perf_counter()
            os.kill(os.getpid(), signal.SIGTERM)
        return {"x": np.full((1,), i, np.float32)}

    class SlowTask:
        def init_state(self, rng):
            w = jnp.eye(384, dtype=jnp.float32)
            return TrainState(step=jnp.int32(0), params={"w": w}, batch_stats={}, opt_state={},
                              rng=rng)

        def train_step(self, state, batch):
            w = state.params["w"]
            for _ in range(60):  # tens of ms per step
                w = jnp.tanh(w @ w + batch["x"][0]) * 0.5
            return state.replace(step=state.step + 1, params={"w": w}), {"m": jnp.mean(w)}

        def eval_step(self, state, batch):
            return {}

        def train_iterator(self):
            return iter(grain.MapDataset.range(60).map(load).to_iter_dataset(
                grain.ReadOptions(prefetch_buffer_size=0)))

        def eval_batches(self):
            return []

    save = checkpoint.save

    def timed_save(manager, state, *args, **kwargs):
        jax.block_until_ready(state)
        clock.setdefault("stopped", time.perf_counter())
        return save(manager, state, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", timed_save)
    total = 60
    config = ml_collections.ConfigDict(
        dict(seed=0, batch_size=1, num_train_steps=total, log_every=total, eval_every=0,
             checkpoint_every=total, model={})
    )
    with interrupts.handled(), pytest.raises(interrupts.Interrupted):
        loop.train_and_evaluate(SlowTask(), config, str(tmp_path), progress=False)
    waited = clock["stopped"] - clock["signal"]
    manager = checkpoint.make_manager(str(tmp_path / "checkpoints"))
    assert manager.latest_step() == 40  # the step in flight is the last, and checkpointed
    manager.close()
    # Without the bound the wait is several times the time to the signal, with it a few percent.
    assert waited < 0.25 * (clock["signal"] - clock["first"]), (waited, clock)
