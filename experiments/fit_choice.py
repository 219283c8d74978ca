"""Fits the blind curve choice (:mod:`hdr_jax.models.curvechoice`) on rendered training views.

    python -m experiments.fit_choice --workdir W [--views 6000] [--parts 2] [--procs 2] \
        [--prototypes 16] [--l2 0.003,0.01,0.03,0.1] [--out hdr_jax/weights]

Views: :func:`experiments.clip_scalar.render_view` (the fitting scenes; the four training
families with the training EMoR curves drawn continuously, 1-30 % clipped, noise, JPEG, mosaics;
128 px at the protocol's pixel scale), in ``--parts`` streams seeded by the part, each its first
``--views / --parts`` views. Per view, every option of the choice is scored as the pipeline
applies it (:func:`pipeline.blind_option`, :func:`pipeline.lift_clipped`, the weights of
``--weights``): its clipped-pixel PU21-PSNR gain over the inverse-sRGB input
(:func:`protocol.pu21_protocol`), and the view's cues (:func:`curvechoice.photo_cues`). The
options' prototypes are the ``--prototypes`` shape prototypes of the training sampler's curves
(:func:`shapes.shape_prototypes`, typical exponents). The tables are cached per part in
``--workdir`` (a rerun renders only missing parts), together with the development inputs'
(the response protocol's inputs of the development scenes, training-seed EMoR curves:
:func:`responses.development_views`), which are never fitted on.

The choice is fitted (:func:`curvechoice.fit_choice`) to maximise the mean expected gain over
the training views, each family weighted equally, with each L2 penalty of ``--l2``, and the
penalty whose choice gains most on the development inputs (mean over the families) is kept;
``report.json`` in the workdir gives, for every penalty, the family means of the choice on the
training and the development inputs, and of each option alone and the per-input best option
(an oracle). With ``--out`` the kept choice and its option curves are written into that weights
directory as ``curvechoice``.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from experiments import clip_scalar
from hdr_jax import bundle, pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import shapes
from hdr_jax.data import highlight_views
from hdr_jax.eval import protocol, responses
from hdr_jax.models import curvechoice

# --hdr_dir, --emor_dir, --workdir, --views, --procs, --out and the views' settings are
# experiments.clip_scalar's flags, whose views this fits on.
_PARTS = flags.DEFINE_integer("parts", 2, "Streams of views (seeded by the part).")
_PROTOTYPES = flags.DEFINE_integer("prototypes", 16, "Shape prototypes among the options.")
_L2 = flags.DEFINE_list("l2", ["0.003", "0.01", "0.03", "0.1"], "L2 penalties on the "
                        "choice's weights; the one best on the development inputs is kept.")
_DEV_VIEWS = flags.DEFINE_integer("dev_views", 0, "Development views per scene (0: all).")
_FIT_STEPS = flags.DEFINE_integer("fit_steps", 3000, "Adam steps of the fit (full batch).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights with the clip-level estimate and the "
                               "lifts (default: the bundled weights).")

#: Seed of every part's stream of views (with the part).
VIEW_SEED = 77
FAMILIES = clip_scalar.FAMILIES


def option_curves(emor_dir: str | None, k: int) -> np.ndarray:
    """The (k, 1024) prototype curves of the options: the training sampler's shapes
    (:func:`shapes.prototype_pool`) at their typical exponents."""
    pool, powers = shapes.prototype_pool(
        highlight_views.CurveSampler(highlight_views.emor_training_curves(emor_dir)))
    feats = np.stack([shapes.shape_features(c) for c in pool])
    return shapes.shape_prototypes(pool, powers, feats, k)[1]


def option_gains(pipe: pipeline.Pipeline, ldr: np.ndarray, radiance: np.ndarray,
                 clipped: np.ndarray, k: float | None, curves: np.ndarray) -> np.ndarray:
    """(2 + len(curves),) clipped-pixel gains over the inverse-sRGB input of each option for
    one photo, linearised and lifted as the pipeline does (the merge aside)."""
    base = protocol.pu21_protocol(protocol.linearise_srgb(ldr), radiance, clipped)
    out = []
    for option in range(len(curvechoice.BENT) + len(curves)):
        if option < len(curvechoice.BENT):
            est = pipeline.blind_option(pipe, ldr, k, option)
        else:
            est = pipeline.BlindEstimate(None, curves[option - len(curvechoice.BENT)], 1.0, True)
        linear = np.asarray(crf_lib.apply_inverse_crf(est.curve, ldr), np.float32) * np.float32(
            est.gain)
        pred = pipeline.lift_clipped(pipe, linear, ldr, est)
        out.append(protocol.pu21_protocol(pred, radiance, clipped)["pu21_clipped"]
                   - base["pu21_clipped"])
    return np.array(out, np.float32)


def _score(pipe, ldr, radiance, clipped, curves) -> tuple[np.ndarray, np.ndarray]:
    k = pipeline.blind_clip_level(pipe, ldr)
    cues = curvechoice.photo_cues(ldr, 0.0 if k is None else k)
    return cues, option_gains(pipe, ldr, radiance, clipped, k, curves)


_WORKER: dict = {}


def _init_worker(flag_values: list[str], options: np.ndarray) -> None:
    clip_scalar._init_worker(flag_values)
    _WORKER.update(options=options, pipe=pipeline.Pipeline.load(_WEIGHTS.value))


def _part(args: tuple[int, int, str]) -> str:
    """Renders and scores part ``p``'s first ``n`` views into the file ``path``."""
    p, n, path = args
    rng = np.random.default_rng([VIEW_SEED, p])
    cues, gains, family = [], [], []
    while len(cues) < n:
        v = clip_scalar.render_view(clip_scalar._WORKER["scenes"], rng,
                                    clip_scalar._WORKER["curves"])
        if v is None:
            continue
        ldr = v["photo"].astype(np.float32) / 255.0
        radiance = np.exp2(v["log2_reference"].astype(np.float32))
        c, g = _score(_WORKER["pipe"], ldr, radiance, v["clipped"].astype(bool),
                      _WORKER["options"])
        cues.append(c)
        gains.append(g)
        family.append(int(v["family"]))
        if len(cues) % 500 == 0:
            logging.info("part %d: %d views", p, len(cues))
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez(tmp, cues=np.stack(cues), gains=np.stack(gains), family=np.array(family))
    tmp.replace(path)
    return path


def training_tables(workdir: Path, options: np.ndarray, argv: list[str]) -> dict:
    """Every part's tables, rendering the parts not cached in ``workdir`` (a cached part of at
    least the views asked for gives its first ones: the stream is the same)."""
    per = -(-_VIEWS.value // _PARTS.value)
    paths = [str(workdir / f"part{p}.npz") for p in range(_PARTS.value)]

    def enough(path: str) -> bool:
        return Path(path).exists() and len(np.load(path)["family"]) >= per

    todo = [(p, per, path) for p, path in enumerate(paths) if not enough(path)]
    if todo:
        procs = min(len(todo), _PROCS.value or mp.cpu_count())
        # spawn: each worker starts its own JAX; an executor, as clip_scalar's views.
        with concurrent.futures.ProcessPoolExecutor(
                procs, mp.get_context("spawn"), initializer=_init_worker,
                initargs=(argv, options)) as pool:
            list(pool.map(_part, todo))
    parts = [np.load(path) for path in paths]
    return {k: np.concatenate([q[k][:per] for q in parts]) for k in ("cues", "gains", "family")}


def development_tables(workdir: Path, options: np.ndarray) -> dict:
    """The development inputs' tables (cached as ``development.npz``; ``developmentN.npz``
    for N views per scene)."""
    path = workdir / f"development{_DEV_VIEWS.value or ''}.npz"
    if not path.exists():
        pipe = pipeline.Pipeline.load(_WEIGHTS.value)
        views = [(scene, radiance) for scene, _, radiance in
                 responses.development_views(_HDR_DIR.value, 2 * clip_scalar.SIZE,
                                             _DEV_VIEWS.value)]
        families = responses.response_families(_EMOR_DIR.value or None, training_seed=True)
        cues, gains, family = [], [], []
        for item, _, radiance, _, ldr, clipped, _ in responses.rendered_inputs(views, families):
            if clipped.all() or not clipped.any():
                continue
            c, g = _score(pipe, ldr, radiance, clipped, options)
            cues.append(c)
            gains.append(g)
            family.append(FAMILIES.index(item["family"]))
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, cues=np.stack(cues), gains=np.stack(gains), family=np.array(family))
        tmp.replace(path)
    return dict(np.load(path))


def family_weights(family: np.ndarray) -> np.ndarray:
    """Weights that give each family present the same total."""
    counts = np.bincount(family, minlength=len(FAMILIES)).astype(np.float64)
    return 1.0 / counts[family]


def family_means(gains: np.ndarray, family: np.ndarray) -> dict[str, float]:
    out = {FAMILIES[f]: float(gains[family == f].mean()) for f in np.unique(family)}
    return out | {"mean": float(np.mean(list(out.values())))}


def summary(tables: dict, logits: np.ndarray) -> dict:
    """Family means of each option alone, of the choice and of the per-input best option."""
    g, fam = tables["gains"], tables["family"]
    names = list(curvechoice.BENT) + [f"prototype {j}" for j in range(g.shape[1] - 2)]
    choice = np.argmax(logits, 1)
    out = {name: family_means(g[:, j], fam) for j, name in enumerate(names)}
    out["the choice"] = family_means(g[np.arange(len(g)), choice], fam)
    out["the best option per input (oracle)"] = family_means(g.max(1), fam)
    out["options chosen"] = {FAMILIES[f]: np.bincount(choice[fam == f],
                                                      minlength=g.shape[1]).tolist()
                             for f in np.unique(fam)}
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    workdir = Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    options = option_curves(_EMOR_DIR.value or None, _PROTOTYPES.value)
    train = training_tables(workdir, options, [argv[0]] + flags.FLAGS.flags_into_string().split())
    dev = development_tables(workdir, options)
    fits, rep = {}, {"fits": {}}
    for l2 in (float(v) for v in _L2.value):
        mean, scale, params = curvechoice.fit_choice(
            train["cues"], train["gains"], family_weights(train["family"]), l2=l2,
            steps=_FIT_STEPS.value)
        module = curvechoice.CurveChoiceNet(mean=tuple(mean), scale=tuple(scale),
                                            num_options=train["gains"].shape[1])
        fits[l2] = (mean, scale, params)
        rep["fits"][str(l2)] = {name: summary(t, np.asarray(module.apply({"params": params},
                                                                          t["cues"])))
                                for name, t in (("training views", train),
                                                ("development inputs", dev))}
        logging.info("l2 %g: development inputs, the choice %s", l2,
                     rep["fits"][str(l2)]["development inputs"]["the choice"])
    kept = max(fits, key=lambda l2: rep["fits"][str(l2)]["development inputs"]["the choice"][
        "mean"])
    mean, scale, params = fits[kept]
    rep |= {"kept l2": kept, "views": len(train["family"]),
            "development inputs": len(dev["family"]), "prototypes": _PROTOTYPES.value,
            "seconds": time.perf_counter() - t0}
    (workdir / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
    if _OUT.value:
        config = {"mean": [float(v) for v in mean], "scale": [float(v) for v in scale],
                  "num_options": int(train["gains"].shape[1])}
        info = {"recipe": "experiments/fit_choice.py", "l2": kept,
                "report": {name: rep["fits"][str(kept)][name]["the choice"]
                           for name in ("training views", "development inputs")},
                "trained_on": "rendered views of the fitting scenes (module docstring of "
                              "experiments/fit_choice.py)"}
        path = bundle.save_network(_OUT.value, "curvechoice",
                                   {"params": params, "options": {"curves": options}}, config,
                                   dtype="float32", info=info, compress=True)
        print(f"curvechoice: {train['gains'].shape[1]} options -> {path}")


_VIEWS, _PROCS, _WORKDIR, _OUT = (clip_scalar._VIEWS, clip_scalar._PROCS, clip_scalar._WORKDIR,
                                  clip_scalar._OUT)
_HDR_DIR, _EMOR_DIR = clip_scalar._HDR_DIR, clip_scalar._EMOR_DIR

if __name__ == "__main__":
    flags.FLAGS.set_default("views", 6000)
    app.run(main)
