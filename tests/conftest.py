"""Shared fixtures: tiny weights, generated photos, and a fast way to run `hdr-jax` subprocesses.

Compile time dominates every test that runs a network on 2 CPU cores, so two settings apply:

* XLA's CPU backend optimisation level 0 (set below, before JAX starts its backend). At the
  tiny test shapes the LLVM passes cost 5-20x more time than the code they optimise saves.
  Set `XLA_FLAGS` yourself (any `--xla_backend_optimization_level`) to override it.
* A session-wide persistent compilation cache, shared by the subprocesses the tests start
  (`cli_env`) and, where a module asks for it (`persistent_compilation_cache`), by the test
  process: a kill + resume or a second CLI call then reuses the first one's executables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `experiments` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from experiments.configs import cfnet as cfnet_config
from experiments.configs import drtmo as drtmo_config
from hdr_jax import bundle
from hdr_jax import io as hio
from hdr_jax import cli
from hdr_jax.data import testing
from hdr_jax.models import factory, registry

PHOTO_HW = (48, 64)  # every network test uses this size, so compiled executables are shared


# -- order ---------------------------------------------------------------------------------------

# The files that take longest on 2 CPU cores (their tests' summed durations), longest first. The
# README's command hands whole files to two workers in collection order, so a long file collected
# last would run alone at the end; started first, the short files fill in around them.
LONGEST_FILES = (
    "test_training.py",
    "test_reliability.py",
    "test_ablations.py",
    "test_calibrate.py",
    "test_parallel.py",
    "test_cliplevel.py",
    "test_profile.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: the tests of a file keep their order


# -- process state -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def signal_dispositions_kept() -> Iterator[None]:
    """Fails a test that leaves SIGINT or SIGTERM handled otherwise than it found them, and
    restores them: every process the worker starts afterwards would inherit an ignored signal
    (a multiprocessing pool's terminate() then waits forever on its workers)."""
    names = (signal.SIGINT, signal.SIGTERM)
    before = [signal.getsignal(s) for s in names]
    yield
    after = [signal.getsignal(s) for s in names]
    for s, handler in zip(names, before):
        signal.signal(s, handler)
    assert after == before, f"the test left the handlers of SIGINT, SIGTERM as {after}"


# -- compilation cache --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def xla_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xla_cache")


@contextlib.contextmanager
def persistent_cache(directory: Path) -> Iterator[None]:
    """Enables JAX's persistent compilation cache in this process, and restores it after."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    old = {n: getattr(jax.config, n) for n in names}
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cc.reset_cache()
    try:
        yield
    finally:
        for n, v in old.items():
            jax.config.update(n, v)
        cc.reset_cache()


@pytest.fixture(scope="module")
def persistent_compilation_cache(xla_cache_dir) -> Iterator[None]:
    with persistent_cache(xla_cache_dir):
        yield


@pytest.fixture(scope="session")
def cli_env(xla_cache_dir) -> dict[str, str]:
    """Environment for subprocesses: repo importable, CPU, shared compilation cache."""
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(xla_cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def run_cli(
    args: Sequence[str], env: dict[str, str], *, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`hdr-jax ARGS` in a fresh interpreter (exactly what the console script runs)."""
    return subprocess.run(
        [sys.executable, "-m", "hdr_jax.cli", *map(str, args)],
        check=False,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python_checked(argv: Sequence[str], env: dict[str, str], timeout: float):
    """``python ARGV`` in the repository root; fails the test (with the output's tail) unless it
    exits 0."""
    res = subprocess.run([sys.executable, *map(str, argv)], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line_error(rc: int, stderr: str, *, contains: str = "") -> str:
    """The CLI contract for expected failures: status 1, exactly one stderr line, no traceback."""
    lines = stderr_lines(stderr)
    assert rc == 1, (rc, stderr)
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("hdr-jax: error: "), stderr
    assert contains.lower() in lines[0].lower(), (contains, lines[0])
    return lines[0]


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else []


# -- models and weights -------------------------------------------------------------------------


def tiny_model_configs() -> dict[str, dict]:
    """The model sections of the tiny training configs, as the weights manifest stores them."""
    return {
        "drtmo_up": drtmo_config.get_config("up,tiny").model.to_dict(),
        "drtmo_down": drtmo_config.get_config("down,tiny").model.to_dict(),
        "cfnet_x2": cfnet_config.get_config("x2,tiny").model.to_dict(),
    }


def variable_template(name: str, model_config: dict):
    """Shapes/dtypes of a network's variables, without running (or compiling) its init."""
    if name.startswith("drtmo"):
        module = factory.make_drtmo(model_config)
        x = jax.ShapeDtypeStruct((1, 2**module.depth, 2**module.depth, 3), np.float32)
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        return jax.eval_shape(lambda x: module.init(rngs, x, train=False), x)
    module = factory.make_cfnet(model_config)
    x = jax.ShapeDtypeStruct((1, 16, 16, 3), np.float32)
    return jax.eval_shape(lambda x: module.init(jax.random.key(0), x, x), x)


def random_variables(template, seed: int = 0) -> dict:
    """Plausible random variables for a template: scaled normal kernels, zero biases, identity
    batch norm, PReLU slope 0.25. Enough for a network to produce finite, input-dependent output."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        shape = leaf.shape
        if "kernel" in name:
            fan_in = int(np.prod(shape[:-1]))
            return rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape).astype(np.float32)
        if "scale" in name or "var" in name:
            return np.ones(shape, np.float32)
        if "slope" in name:
            return np.full(shape, 0.25, np.float32)
        return np.zeros(shape, np.float32)  # bias, BN offset, running mean

    return jax.tree_util.tree_map_with_path(fill, template)


def write_random_weights(directory: Path, names: Sequence[str] | None = None) -> Path:
    configs = tiny_model_configs()
    for i, name in enumerate(names or configs):
        variables = random_variables(variable_template(name, configs[name]), seed=i)
        bundle.save_network(directory, name, variables, configs[name])
    return directory


#: A tiny clip-level estimate's model config (two members).
TINY_CLIPLEVEL = {"features": [4, 8, 8], "members": 2}


def save_clip_level(directory: Path, bias: float = -0.8) -> None:
    """Adds a tiny clip-level estimate to a weights directory: random convolutions, every
    member's output bias ``bias``, so it says about ``bias`` on photos with a shoulder."""
    module = registry.build("cliplevel", TINY_CLIPLEVEL)
    variables = random_variables(registry.abstract_variables("cliplevel", module), seed=2)
    for member in ("member0", "member1"):
        variables["params"][member]["estimate"]["bias"] = np.full((1,), bias, np.float32)
    bundle.save_network(directory, "cliplevel", variables, TINY_CLIPLEVEL)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights directory (drtmo_up, drtmo_down, cfnet_x2) of tiny random networks.

    Tests must not modify it: copy it first (`shutil.copytree`)."""
    return write_random_weights(tmp_path_factory.mktemp("tiny_weights"))


# -- images -------------------------------------------------------------------------------------


def make_photo(seed: int = 0, hw: tuple[int, int] = PHOTO_HW) -> np.ndarray:
    """A display-referred photo of a generated scene, with some clipped highlights."""
    rng = np.random.default_rng(seed)
    return testing.render_exposure(testing.fake_radiance(rng, *hw), 1.0).astype(np.float32)


def with_nclx(avif: bytes, primaries: int, transfer: int) -> bytes:
    """An AVIF file's bytes with the H.273 primaries and transfer codes of its (first) nclx
    colour box replaced: Pillow's encoder writes sRGB's."""
    at = avif.index(b"colrnclx") + 8
    return avif[:at] + struct.pack(">HH", primaries, transfer) + avif[at + 4:]


@pytest.fixture(scope="session")
def photo_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    hio.write_ldr(path, make_photo())
    return path


@pytest.fixture(scope="session")
def dark_png(tmp_path_factory) -> Path:
    """:func:`photo_png`'s scene two stops darker: the under-exposure `fuse` takes first."""
    path = tmp_path_factory.mktemp("photos") / "dark.png"
    hio.write_ldr(path, make_photo() * 0.25)
    return path


@pytest.fixture(scope="session")
def fake_hdr_dir(tmp_path_factory):
    """A folder of small generated HDR scenes (`testing.write_fake_hdr_folder`); read-only."""
    d = tmp_path_factory.mktemp("fake_hdr")
    testing.write_fake_hdr_folder(d)
    return d


def cli_in_process(args, capfd) -> tuple[int, str]:
    """``hdr-jax ARGS`` run in this process: (exit status, what it wrote to stderr)."""
    capfd.readouterr()
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse
        rc = e.code
    return rc, capfd.readouterr().err
