"""hdr_jax.memory: compile-only analysis, the training-settings search and the tile choice, and
the budget where users set it (experiments.train --memory_budget, hdr-jax --memory-budget).

Compiles dominate the cost on this CPU, so the selection logic is checked with fake peak tables
and the XLA readings on small functions whose buffer sizes are known in closed form.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import cli_in_process

from hdr_jax import memory

F32 = 4


# -- parse_bytes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("4GiB", 4 * 2**30),
        ("4 gib", 4 * 2**30),
        ("512MB", 512 * 10**6),
        ("1.5KiB", 1536),
        ("2G", 2 * 2**30),
        ("100", 100),
        (2048, 2048),
        ("1e3B", 1000),
    ],
)
def test_parse_bytes(text, expected):
    assert memory.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "4 parsecs", "-1GiB", "0", "4GiBs", "nan",
                                  "1e400", "1e300GiB", "1e308T", 1e308 * 10])
def test_parse_bytes_rejects(text):
    with pytest.raises(ValueError, match="memory size"):
        memory.parse_bytes(text)


# -- reading XLA's buffer assignment --------------------------------------------------------------


def _spec(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def test_memory_stats_match_closed_form_sizes():
    """Arguments and outputs are exactly the arrays' bytes; donation aliases the output that
    reuses the donated buffer, and the peak formula subtracts it once."""
    n = 64

    def f(a, b):
        return a * 2.0 + 1.0, jnp.tanh(a @ b)

    args = (_spec(n, n), _spec(n, 2 * n))
    plain = memory.memory_stats(jax.jit(f).lower(*args).compile())
    assert plain.argument == (n * n + 2 * n * n) * F32
    # the outputs, plus a few bytes of XLA's tuple index table
    assert 0 <= plain.output - (n * n + 2 * n * n) * F32 <= 64
    assert plain.alias == 0
    assert plain.peak == plain.argument + plain.output + plain.temp

    donated = memory.memory_stats(jax.jit(f, donate_argnums=0).lower(*args).compile())
    assert donated.alias == n * n * F32  # out[0] has a's shape and reuses its buffer
    assert donated.peak == plain.peak - n * n * F32 + (donated.temp - plain.temp)
    assert memory.compiled_peak_bytes(f, *args, donate_argnums=0) == donated.peak


def test_temp_counts_intermediates():
    """A live intermediate that is neither argument nor output shows up as temp."""
    n = 256

    def f(a):
        h = jnp.sin(a @ a)  # (n, n) intermediate, needed by both outputs
        return jnp.sum(h @ a), jnp.sum(h * 2.0)

    stats = memory.memory_stats(jax.jit(f).lower(_spec(n, n)).compile())
    assert stats.temp >= n * n * F32


def test_analysis_options_do_not_change_buffer_assignment():
    """The fast analysis compile reads the same numbers as a default compile (conv net + grad)."""
    import flax.linen as nn

    net = nn.Sequential([nn.Conv(8, (3, 3)), nn.relu, nn.Conv(3, (3, 3))])
    x = _spec(2, 16, 16, 3)
    params = jax.eval_shape(net.init, jax.random.key(0), x)

    def loss(p, x):
        return jnp.mean(net.apply(p, x) ** 2)

    lowered = jax.jit(jax.grad(loss)).lower(params, x)
    fast = memory.memory_stats(lowered.compile(compiler_options=memory.ANALYSIS_OPTIONS))
    full = memory.memory_stats(lowered.compile())
    assert fast == full


# -- choosing settings (fake peaks: the logic, not XLA) -------------------------------------------


CF_MODEL = {"features": 8, "num_groups": 2, "num_steps": 2, "scale": 2}


def _fake_train_peaks(monkeypatch, peaks: dict[str, int]) -> list[str]:
    calls = []
    names = {repr(s): n for n, s in memory.training_candidates(CF_MODEL, 4)}

    def fake(config, batch_size, patch, settings, compiler_options):
        name = names[repr(settings)]
        calls.append(name)
        return peaks[name]

    monkeypatch.setattr(memory.budget, "_train_peak", fake)
    return calls


def test_choose_training_settings_takes_the_cheapest_fit(monkeypatch):
    names = [n for n, _ in memory.training_candidates(CF_MODEL, 4)]
    assert names == [
        "xla",
        "xla+remat:step",
        "xla+remat:step+bf16",
        "xla+remat:step+bf16+microbatches:2",
        "xla+remat:step+bf16+microbatches:4",
    ]
    assert [n for n, _ in memory.training_candidates(CF_MODEL, 3)][-1].endswith("microbatches:3")
    gib = 2**30
    peaks = dict(zip(names, [9 * gib, 5 * gib, 4.5 * gib, 3 * gib, 2 * gib]))
    calls = _fake_train_peaks(monkeypatch, peaks)
    choice = memory.choose_training_settings(CF_MODEL, 4, 64, "4GiB")
    assert choice["name"] == names[3]
    assert choice["model"] == {
        "remat_policy": "step",
        "dtype": "bfloat16",
        "conv_impl": "xla",
        "split_concat": True,
    }
    assert choice["optimizer"] == {"mu_dtype": "bfloat16", "nu_dtype": "bfloat16"}
    assert choice["microbatches"] == 2
    assert choice["peak_bytes"] == 3 * gib and choice["budget_bytes"] == 4 * gib
    # cheapest first, then the most saving (hopeless budgets fail fast), then in order
    assert calls == [names[0], names[-1], names[1], names[2], names[3]]

    calls.clear()
    assert memory.choose_training_settings(CF_MODEL, 4, 64, "10GiB")["name"] == "xla"
    assert calls == ["xla"]


def test_choose_training_settings_raises_before_running(monkeypatch):
    names = [n for n, _ in memory.training_candidates(CF_MODEL, 4)]
    calls = _fake_train_peaks(monkeypatch, dict.fromkeys(names, 5 * 2**30))
    with pytest.raises(memory.MemoryBudgetError, match=r"no training setting fits 4\.00 GiB"):
        memory.choose_training_settings(CF_MODEL, 4, 64, "4GiB")
    assert len(calls) == 2


def test_choose_tile_bisects_to_the_largest_fit(monkeypatch):
    calls = []

    def fake(config, batch_size, tile, settings, compiler_options):
        calls.append(tile)
        return memory.MemoryStats(argument=tile**2 * 1000, output=0, alias=0, temp=0), 0.0

    monkeypatch.setattr(memory.tiles, "inference_analysis", fake)
    cands = [32, 48, 64, 96, 128, 192, 256, 384, 512]
    for budget in (32**2 * 1000, 100**2 * 1000, 300**2 * 1000, 10**9):
        calls.clear()
        got = memory.choose_tile(CF_MODEL, budget, candidates=cands)
        brute = max(t for t in cands if t**2 * 1000 <= budget)
        assert got["tile"] == brute and got["peak_bytes"] == brute**2 * 1000
        assert len(calls) <= 1 + int(np.ceil(np.log2(len(cands)))) + 1
    with pytest.raises(memory.MemoryBudgetError, match="no inference tile fits"):
        memory.choose_tile(CF_MODEL, 1000, candidates=cands)
    # resident bytes (the other stage-1 network) count against the budget
    got = memory.choose_tile(CF_MODEL, 100**2 * 1000, candidates=cands, resident_bytes=5 * 10**6)
    assert got["tile"] == 64


def test_bad_inputs():
    with pytest.raises(ValueError, match="batch_size and patch"):
        memory.training_step_fn(CF_MODEL, 0, 64)
    with pytest.raises(ValueError, match="DrTMO/CF-Net model section"):
        memory.training_step_fn({"foo": 1}, 1, 64)


# -- the budget where users set it: training -------------------------------------------------------


def _drtmo_tiny():
    from experiments.configs import drtmo as drtmo_config

    return drtmo_config.get_config("up,tiny")


def test_training_budget_applies_the_chosen_settings(monkeypatch):
    """Off by default; the config as given is kept when it fits; otherwise the chosen overrides
    land in the returned config and the task built from it uses them."""
    from hdr_jax.training import tasks

    config = _drtmo_tiny()
    assert config.memory_budget == ""
    assert memory.apply_training_budget(config) == (config, None)

    names = [n for n, _ in memory.training_candidates(config)]
    assert names == ["xla", "xla+adam_bf16", "xla+bf16"]
    peaks = {"as configured": 9, "xla": 6, "xla+adam_bf16": 5, "xla+bf16": 3}

    def fake(cfg, batch_size, patch, settings, compiler_options):
        assert (batch_size, patch) == (config.batch_size, config.data.crop_size)
        if not settings:
            return peaks["as configured"] * 2**30
        name = next(n for n, s in memory.training_candidates(cfg) if s == settings)
        return peaks[name] * 2**30

    monkeypatch.setattr(memory.budget, "_train_peak", fake)
    config.memory_budget = "20GiB"
    same, choice = memory.apply_training_budget(config, log=None)
    assert same is config and choice["name"] == "as configured"

    config.memory_budget = "5GiB"
    lines = []
    chosen, choice = memory.apply_training_budget(config, log=lines.append)
    assert choice["name"] == "xla+adam_bf16" and choice["peak_bytes"] == 5 * 2**30
    assert chosen.model.conv_impl == "xla" and chosen.optimizer.nu_dtype == "bfloat16"
    assert config.model.conv_impl == "im2col"  # the caller's config is untouched
    assert len(lines) == 1 and "'xla+adam_bf16', compiled peak 5.00 GiB" in lines[0]
    task = tasks.make_task(chosen, builder=object())
    assert task.model.conv_impl == "xla"

    config.memory_budget = "2GiB"
    with pytest.raises(memory.MemoryBudgetError, match=r"no training setting fits 2\.00 GiB"):
        memory.apply_training_budget(config)
    config.memory_budget = "2 parsecs"
    with pytest.raises(memory.MemoryBudgetError, match="memory_budget: cannot parse"):
        memory.apply_training_budget(config)


# Runs experiments.train's main with the real compile-only analysis but a stub training loop,
# once per budget given on the command line; prints what the loop would have received.
_TRAIN_WITH_BUDGETS = """
import json, sys
from absl import flags
from hdr_jax.training import loop
from experiments import train

def stub(task, config, workdir, progress=True):
    print("LOOP", json.dumps({"remat": task.model.remat, "budget": config.memory_budget}))

loop.train_and_evaluate = stub
for budget in sys.argv[2:]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", "--config=experiments/configs/drtmo.py:up,tiny",
                 "--workdir=" + sys.argv[1], "--memory_budget=" + budget])
    try:
        train.main(["train"])
    except SystemExit as e:
        print("EXIT", json.dumps(e.code))
"""


@pytest.mark.slow
def test_train_script_budget(tmp_path):
    """`experiments.train --memory_budget`: a budget that fits trains as configured (after one
    compile-only analysis); one that cannot fit stops with a one-line error, the training loop
    never reached and nothing written."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    workdir = tmp_path / "w"
    res = subprocess.run(
        [sys.executable, "-c", _TRAIN_WITH_BUDGETS, str(workdir), "1GiB", "64KiB"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = [line for line in res.stdout.splitlines() if line.split(" ")[0] in ("LOOP", "EXIT")]
    assert len(out) == 2, res.stdout
    assert json.loads(out[0][5:]) == {"remat": False, "budget": "1GiB"}
    assert "memory budget 1.00 GiB: training with 'as configured'" in res.stdout
    message = json.loads(out[1][5:])
    assert out[1].startswith("EXIT") and "\n" not in message
    assert message.startswith(
        "experiments.train: error: no training setting fits 64.0 KiB at batch 2"
    )
    assert not workdir.exists()


# -- the budget where users set it: inference (hdr-jax --memory-budget) ---------------------------


@pytest.mark.slow
def test_cli_memory_budget_picks_the_tiles(
    tiny_weights, photo_png, dark_png, tmp_path, capfd, monkeypatch
):
    """The tiles chosen for the budget reach `generate_stack` / `fuse_pair`; a budget below the
    weights' own size is a one-line error before any output; a malformed one a usage error."""
    from conftest import assert_one_line_error, files_under

    from hdr_jax import pipeline

    used = []
    for name in ("generate_stack", "fuse_pair"):
        original = getattr(pipeline, name)

        def spy(*args, _f=original, _n=name, **kwargs):
            used.append((_n, kwargs.get("tile")))
            return _f(*args, **kwargs)

        monkeypatch.setattr(pipeline, name, spy)

    def main(*args):
        return cli_in_process(args, capfd)

    out = tmp_path / "out"
    common = ("--weights", tiny_weights)
    # 48x64 photo: stage 1 (tiny DrTMO, depth 5) covers it with one 64 tile; CF-Net's LR tile
    # is the largest of 32 / 48 / 64 that fits. Find the stage-2 peaks to set a budget between.
    pipe = pipeline.Pipeline.load(tiny_weights)
    fit = memory.choose_pipeline_tiles(pipe, "1GiB", (48, 64), stage1=True, scale=2)
    assert (fit["stage1_tile"], fit["stage2_tile"]) == (64, 64)
    peaks = dict(fit["stage2"]["tried"])
    stage1_peak = fit["stage1"]["peak_bytes"]
    assert peaks[64] > peaks[32] and stage1_peak > 0
    # stage 2 alone (`fuse`): a budget between the tiles' peaks picks the largest that fits
    budget = max(peaks[32], peaks.get(48, 0)) + 1
    want = 32 if peaks.get(48, budget + 1) > budget else 48
    assert peaks[64] > budget, "the budget must rule out the 64 tile"
    rc, err = main(
        "fuse", dark_png, photo_png, "-o", tmp_path / "f.png", "--memory-budget", budget, *common
    )
    assert rc == 0 and used == [("fuse_pair", want)], err
    assert f"stage 2 tile {want}" in err

    used.clear()
    budget = max(stage1_peak, peaks[64]) + 1
    rc, err = main("reconstruct", photo_png, "-o", out, "--memory-budget", budget, *common)
    assert rc == 0, err
    assert "stage 2 tile 64" in err and "stage 1 tile 64" in err
    assert used == [("generate_stack", 64), ("fuse_pair", 64)]
    assert len(files_under(out)) == 3

    bad = tmp_path / "bad"
    rc, err = main("brackets", photo_png, "-o", bad, "--memory-budget", "64KiB", *common)
    assert_one_line_error(rc, err, contains="--memory-budget: stage 1 (DrTMO): no inference tile")
    assert files_under(bad) == []
    rc, err = main(
        "fuse", dark_png, photo_png, "-o", bad / "f.png", "--memory-budget", "4 parsecs", *common
    )
    assert rc == 2 and "cannot parse a memory size" in err
