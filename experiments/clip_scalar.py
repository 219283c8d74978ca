"""A blind estimate of the clip-level scalar: one number per photo that bends inverse sRGB.

    python -m experiments.clip_scalar --mode train --objective scalar --workdir W1
    python -m experiments.clip_scalar --mode train --objective metric --init W1 --workdir W2
    python -m experiments.clip_scalar --mode evaluate --estimators W2,W3 --split dev|heldout \
        [--out DIR]
    python -m experiments.clip_scalar --mode export --estimators W2,W3 --ceiling 0 --offset 0.1 \
        --out hdr_jax/weights

The scalar k is log2 of the ratio of the two gains that fit the true and the inverse-sRGB
linearisation of a photo to its radiance on the unclipped pixels: where the clip level sits
above the midtones. A photo is linearised with inverse sRGB bent from its median code to 2^k at
the clip (:func:`hdr_jax.eval.protocol.linearise_warped`); the oracle's k is worth +2.3 to +2.5
dB on the clipped pixels of the response protocol (``experiments.linearisation_study``).

A power response on one scene is the same photo as another power on a scene of other contrast,
so whatever the estimator learns beyond the non-power parts of a curve (toe, shoulder) is a
scene prior; with 13 training panoramas it learns the scenes unless the views hide them. The
training views (:func:`render_view`) therefore randomise what is the scene's and not the
camera's: contrast raised to a power U(0.7, 1.4) about the median, veiling glare, white balance,
and (p = 0.5) a mosaic of 2-4 rectangles of views of different scenes at gains 2^U(-1.5, 1.5).
Each view is rendered as the highlight head's are (random response of the four training
families, 1-30 % clipped, sensor noise, JPEG q60-98 on 60 %, flip) at 128 px with a field of
view U(20, 55) deg: the pixel scale of the protocol's 256-px views.

Network: :class:`hdr_jax.models.cliplevel.ShoulderPooledEstimator` (a small local CNN whose
per-position estimates are averaged where shoulder codes are, shrunk towards 0). Two
objectives:

* ``scalar``: Huber loss on the oracle's k (the estimate of the posterior mean);
* ``metric``: the HDR protocol's PU21 error of the warped linearisation
  (:func:`hdr_jax.losses.highlight_loss`: clipped pixels plus half the overall term), so the
  network learns when a wrong bend costs more than it gains, and that brightening the clip
  relative to the midtones pays where the clipped regions are brighter than the clip.

Views are rendered by one worker process per core (a fixed number each, seeded by the worker,
so the data are a pure function of the flags) and held in memory; the step runs on the default
JAX device. Checkpoints every ``--checkpoint_every`` steps (batches are drawn from a generator
seeded by the step), so a rerun resumes with the same result. ``--mode evaluate`` averages the
estimates of the given workdirs and scores the development scenes (every fourth training scene,
never in the estimator's training views) or the held-out scenes. ``--ceiling`` and ``--offset``
bound the estimate (:func:`hdr_jax.models.cliplevel.bounded`) where it is evaluated and in the
exported network; in the metric objective the ceiling bounds what the loss sees.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import multiprocessing as mp
import os
import time
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging
from flax import serialization

from hdr_jax import bundle, losses, metrics
from hdr_jax import io as hdr_io
from hdr_jax.camera import crf as crf_lib
from hdr_jax.data import hdr_brackets, highlight_views
from hdr_jax.eval import protocol, report, responses, system
from hdr_jax.models import cliplevel

_MODE = flags.DEFINE_enum("mode", None, ["train", "evaluate", "export"], "What to run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Training: parameters and checkpoints.")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_EMOR_DIR = flags.DEFINE_string("emor_dir", "../shared/data/crf", "EMoR model folder.")
_OBJECTIVE = flags.DEFINE_enum("objective", "scalar", ["scalar", "metric"], "Training loss.")
_INIT = flags.DEFINE_string("init", "", "Workdir whose parameters start the training.")
_VIEWS = flags.DEFINE_integer("views", 100_000, "Training views rendered.")
_PROCS = flags.DEFINE_integer("procs", 0, "Rendering processes (0: one per core).")
_SCENES = flags.DEFINE_integer("num_scenes", 13, "Training scenes used (first N of a fixed order).")
_MOSAIC = flags.DEFINE_float("mosaic_probability", 0.5, "Share of mosaic views.")
_FEATURES = flags.DEFINE_list("features", ["32", "64", "128"], "CNN widths.")
_STEPS = flags.DEFINE_integer("steps", 4000, "Training steps.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Training batch.")
_LR = flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate (warm-up, cosine decay).")
_CKPT = flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
_SEED = flags.DEFINE_integer("seed", 0, "Initialisation and batch order.")
_ESTIMATORS = flags.DEFINE_list("estimators", [], "Evaluate: workdirs whose estimates average.")
_SPLIT = flags.DEFINE_enum("split", "dev", ["dev", "heldout"], "Evaluate: scenes.")
_OUT = flags.DEFINE_string("out", "", "Evaluate: publish results.{json,md} here; export: the "
                           "weights directory the estimators join as 'cliplevel'.")
_TRAINED_ON = flags.DEFINE_string("trained_on", "", "Export: where the estimators were trained.")
_CEILING = flags.DEFINE_float("ceiling", None, "Largest k: in the metric objective (training), the "
                               "evaluated mean, the exported network (none: unbounded).")
_OFFSET = flags.DEFINE_float("offset", 0.0, "Added to the estimate before the ceiling: the "
                             "evaluated mean and the exported network.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

#: Training views: half the protocol's size at half its field of view, the same pixel scale.
SIZE = 128
FOV_RANGE = (20.0, 55.0)
FAMILIES = ("sRGB", "gamma", "gamma+S", "EMoR")
PARAMS = "params.msgpack"
#: Weight of the overall PU21 term next to the clipped pixels' in the metric objective.
OVERALL_WEIGHT = 0.5


# -- scenes and views ---------------------------------------------------------------------------


def _read_scenes(names: list[str]) -> dict[str, np.ndarray]:
    files = {f.stem: f for f in hdr_io.list_images(Path(_HDR_DIR.value), kinds=("hdr",))}
    return {s: np.maximum(hdr_io.read_hdr(files[s]), 0.0).astype(np.float32) for s in names}


def _stems() -> list[str]:
    return [f.stem for f in hdr_io.list_images(Path(_HDR_DIR.value), kinds=("hdr",))]


def _augment(view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scene contrast about the median, veiling glare, white balance (module docstring)."""
    lum = view.mean(-1)
    med = float(np.median(lum[lum > 0])) if np.any(lum > 0) else 1.0
    view = med * (view / med) ** np.float32(rng.uniform(0.7, 1.4))
    if rng.random() < 0.5:
        sigma = float(rng.uniform(1.0, 6.0))
        view = view + np.float32(rng.uniform(0.02, 0.3)) * cv2.GaussianBlur(view, (0, 0), sigma)
    return (view * np.exp(rng.uniform(-0.4, 0.4, 3))).astype(np.float32)


def _one_view(scenes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    pano = scenes[int(rng.integers(len(scenes)))]
    for _ in range(9):  # enough positive pixels to clip the fraction
        view = np.maximum(hdr_brackets.panorama_view(
            pano, float(rng.uniform(*FOV_RANGE)), float(rng.uniform(-25.0, 45.0)),
            float(rng.uniform(-180.0, 180.0)), SIZE), 0.0)
        if np.mean(view.max(-1) > 0) > 0.5:
            break
    return _augment(view, rng)


def _mosaic(scenes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """2-4 rectangles, each from a view of a random scene at a random relative gain."""
    out = _one_view(scenes, rng)
    kind = int(rng.integers(3))
    lo, hi = SIZE // 4, 3 * SIZE // 4
    if kind == 0:
        cuts = [(slice(None), slice(int(rng.integers(lo, hi)), None))]
    elif kind == 1:
        cuts = [(slice(int(rng.integers(lo, hi)), None), slice(None))]
    else:
        cy, cx = (int(rng.integers(lo, hi)) for _ in range(2))
        cuts = [(slice(None, cy), slice(cx, None)), (slice(cy, None), slice(None, cx)),
                (slice(cy, None), slice(cx, None))]
    for sl in cuts:
        out[sl] = (_one_view(scenes, rng) * np.float32(2.0 ** rng.uniform(-1.5, 1.5)))[sl]
    return out


def render_view(scenes: list[np.ndarray], rng: np.random.Generator,
                curves: highlight_views.CurveSampler) -> dict[str, np.ndarray] | None:
    """One training view (module docstring), or None when nothing (or everything) clipped:
    uint8 ``photo``, the oracle ``target`` scalar, ``family`` index, and for the metric
    objective the protocol-scaled reference as float16 log2 (``log2_reference``), the
    ``clipped`` mask and the ``median_code`` of the warp."""
    view = _mosaic(scenes, rng) if rng.random() < _MOSAIC.value else _one_view(scenes, rng)
    family, curve = curves(rng)
    fraction = math.exp(rng.uniform(math.log(0.01), math.log(0.30)))
    level = float(np.quantile(view.max(-1), 1.0 - fraction)) or float(view.max()) or 1.0
    clip_z = (protocol.CLIP_LEVEL * 255.0 - 0.5) / 255.0
    exposed = view * np.float32(
        float(crf_lib.apply_inverse_crf(curve, np.float32(clip_z))) / level)
    noise = float(rng.uniform(0.0, 0.01))
    exposed = exposed + rng.normal(0.0, 1.0, exposed.shape).astype(np.float32) * (
        noise * np.sqrt(np.clip(exposed, 0.0, 1.0)))
    photo = protocol.render_srgb8(np.maximum(exposed, 0.0), 1.0, curve)
    clipped = protocol.clipped_mask(photo)
    if rng.random() < 0.6:
        photo = protocol.jpeg_roundtrip(photo, int(rng.integers(60, 99)))
    if clipped.all() or not clipped.any():
        return None
    target = protocol.clip_level_scalar(photo, view, curve, clipped)
    if rng.random() < 0.5:
        photo, view, clipped = photo[:, ::-1], view[:, ::-1], clipped[:, ::-1]
    lum = np.asarray(metrics.luminance(view))[..., 0]
    ref = view * np.float32(protocol.PEAK_LUMINANCE / max(
        float(np.percentile(lum, protocol.PEAK_PERCENTILE)), 1e-12))
    return {"photo": np.round(photo * 255.0).astype(np.uint8), "target": np.float32(target),
            "family": np.int8(FAMILIES.index(family)),
            # log2 in float16: the references span more than float16's range
            "log2_reference": np.log2(np.maximum(ref, 1e-30)).astype(np.float16),
            "clipped": clipped.astype(np.uint8),
            "median_code": np.float32(protocol.warp_median_code(photo))}


_WORKER: dict = {}


def _init_worker(flag_values: list[str]) -> None:
    flags.FLAGS(flag_values, known_only=True)
    train, _ = hdr_brackets.split_development(_stems())
    order = np.random.default_rng(5).permutation(len(train))
    names = [train[i] for i in order[:_SCENES.value]]
    _WORKER["scenes"] = list(_read_scenes(names).values())
    _WORKER["curves"] = highlight_views.CurveSampler(
        highlight_views.emor_training_curves(_EMOR_DIR.value or None))


def _render_part(args: tuple[int, int]) -> dict[str, np.ndarray]:
    part, n = args
    rng = np.random.default_rng([23, part])
    views = []
    while len(views) < n:
        v = render_view(_WORKER["scenes"], rng, _WORKER["curves"])
        if v is not None:
            views.append(v)
    return {k: np.stack([v[k] for v in views]) for k in views[0]}


def render_views(num: int, procs: int, argv: list[str]) -> dict[str, np.ndarray]:
    """``num`` training views from ``procs`` worker processes (a fixed share each)."""
    per = -(-num // procs)
    # spawn: each worker starts its own JAX (the parent's is not forked). An executor rather
    # than a Pool: its workers leave on a message, not on SIGTERM (which a parent started with
    # it ignored passes on to them, so that a Pool's terminate() waits forever), and a worker
    # that dies (the kernel's OOM killer) is an error here instead of a map that never returns.
    with concurrent.futures.ProcessPoolExecutor(
            procs, mp.get_context("spawn"), initializer=_init_worker, initargs=(argv,)) as pool:
        parts = list(pool.map(_render_part, [(p, per) for p in range(procs)]))
    return {k: np.concatenate([p[k] for p in parts])[:num] for k in parts[0]}


# -- the network --------------------------------------------------------------------------------


def _load(workdir: str | Path) -> tuple[cliplevel.ShoulderPooledEstimator, dict]:
    blob = serialization.msgpack_restore((Path(workdir) / PARAMS).read_bytes())
    model = cliplevel.ShoulderPooledEstimator(tuple(int(f) for f in blob["features"]))
    return model, blob["params"]


def estimate(workdirs: list[str], photos: np.ndarray, batch: int = 16) -> np.ndarray:
    """Mean estimate of the estimators in ``workdirs`` for photos (N, H, W, 3) in [0, 1]."""
    out = []
    for wd in workdirs:
        model, params = _load(wd)
        fn = jax.jit(lambda z, m=model, p=params: m.apply({"params": p}, z))
        out.append(np.concatenate([np.asarray(fn(jnp.asarray(photos[i:i + batch], jnp.float32)))
                                   for i in range(0, len(photos), batch)]))
    return np.asarray(cliplevel.bounded(np.mean(out, axis=0), _CEILING.value, _OFFSET.value))


# -- training -----------------------------------------------------------------------------------


def _loss_fn(model, objective, params, batch):
    z = batch["photo"].astype(jnp.float32) / 255.0
    k = model.apply({"params": params}, z)
    if objective == "scalar":
        return jnp.mean(optax.huber_loss(k, batch["target"], delta=1.0))
    # The loss sees the bounded k; its gradient passes the bound (straight through), so a photo
    # estimated above the ceiling still learns when a bend down pays.
    k = k - jax.lax.stop_gradient(k - cliplevel.bounded(k, _CEILING.value))
    lin = protocol.warp_codes(z, k, batch["median_code"])
    clipped = batch["clipped"].astype(jnp.float32)
    loss, _ = losses.highlight_loss(lin, jnp.exp2(batch["log2_reference"].astype(jnp.float32)),
                                    clipped, jnp.zeros_like(clipped),
                                    overall_weight=OVERALL_WEIGHT, eps=1e-8)
    return loss


def train(workdir: Path, argv: list[str]) -> None:
    model = cliplevel.ShoulderPooledEstimator(tuple(int(f) for f in _FEATURES.value))
    steps = _STEPS.value
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(
        0.0, _LR.value, min(200, steps // 10), steps), weight_decay=1e-4)
    if _INIT.value:
        params = _load(_INIT.value)[1]
    else:
        params = model.init(jax.random.key(_SEED.value), jnp.zeros((1, 32, 32, 3)))["params"]
    state = {"params": params, "opt": tx.init(params), "step": 0}
    ckpt = workdir / "checkpoint.msgpack"
    if ckpt.exists():
        state = serialization.from_bytes(state, ckpt.read_bytes())
        logging.info("resumed at step %d", state["step"])
    t0 = time.perf_counter()
    data = render_views(_VIEWS.value, _PROCS.value or os.cpu_count() or 1, argv)
    keys = ("photo", "target") if _OBJECTIVE.value == "scalar" else (
        "photo", "log2_reference", "clipped", "median_code")
    data = {k: jax.device_put(data[k]) for k in keys}
    logging.info("%d views rendered in %.0f s", len(data["photo"]), time.perf_counter() - t0)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt, batch):
        loss, g = jax.value_and_grad(functools.partial(_loss_fn, model, _OBJECTIVE.value))(
            params, batch)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    params, opt, n = state["params"], state["opt"], len(data["photo"])
    for i in range(int(state["step"]), steps):
        idx = jnp.asarray(np.random.default_rng([_SEED.value, i]).integers(0, n, _BATCH.value))
        params, opt, loss = step(params, opt, {k: v[idx] for k, v in data.items()})
        if (i + 1) % 250 == 0:
            logging.info("step %d loss %.4f", i + 1, float(loss))
        if (i + 1) % _CKPT.value == 0 or i + 1 == steps:
            _write(ckpt, serialization.to_bytes({"params": params, "opt": opt, "step": i + 1}))
    blob = {"params": jax.device_get(params), "features": list(model.features),
            "meta": {"objective": _OBJECTIVE.value, "steps": steps, "learning_rate": _LR.value,
                     "views": n, "scenes": _SCENES.value, "init": _INIT.value,
                     "ceiling": _CEILING.value}}
    _write(workdir / PARAMS, serialization.msgpack_serialize(blob))


def _write(path: Path, data: bytes) -> None:
    with hdr_io.atomic_output(path, overwrite=True) as tmp:
        tmp.write_bytes(data)


# -- evaluation ---------------------------------------------------------------------------------


def _inputs(split: str) -> list[dict]:
    """The protocol's inputs (:func:`responses.plan`) of the split."""
    if split == "heldout":
        views = [(s, lr) for s, _, lr, _ in system.heldout_views(
            _HDR_DIR.value, size=2 * SIZE, scale=1, views=responses.VIEWS)]
        families = responses.response_families(_EMOR_DIR.value or None)
    else:
        _, dev = hdr_brackets.split_development(_stems())
        views = [(s, system.render_view(img, v, 2 * SIZE, 1)[0])
                 for s, img in _read_scenes(dev).items() for v in responses.DEV_VIEWS]
        families = responses.response_families(_EMOR_DIR.value or None, training_seed=True)
    return [{**item, "scene": scene, "ldr": ldr, "clipped": clipped, "radiance": radiance,
             "exposure": a, "target": protocol.clip_level_scalar(ldr, radiance, curve, clipped)}
            for item, scene, radiance, curve, ldr, clipped, a in responses.rendered_inputs(
                views, families)]


def evaluate() -> None:
    inputs = _inputs(_SPLIT.value)
    preds = estimate(_ESTIMATORS.value, np.stack([r["ldr"] for r in inputs]))
    rows = ("inverse sRGB", "oracle scalar (analysis)", "blind estimate")
    records = []
    for r, p in zip(inputs, preds):
        scores = {}
        for name, k in zip(rows, (0.0, r["target"], float(p))):
            lin = protocol.linearise_warped(r["ldr"], k)
            s = protocol.pu21_protocol(lin, r["radiance"], r["clipped"])
            scores[name] = {"pu21": s["pu21"], "pu21_clipped": s["pu21_clipped"], "k": k} | (
                protocol.highlight_levels(lin, r["radiance"], r["clipped"], s["gain"],
                                          1.0 / r["exposure"]))
        records.append({k: r[k] for k in ("view", "family", "curve", "encoding", "fraction",
                                          "scene", "target")} | {"scores": scores})
    summary = responses.summarise(records)
    fams = [f for f in FAMILIES if f in summary]
    tab = []
    for row in rows:
        cells = [f"{summary[f][row]['pu21_clipped']:.2f} ({summary[f][row]['pu21']:.2f})"
                 for f in fams]
        gains = [summary[f][row]["pu21_clipped"] - summary[f][rows[0]]["pu21_clipped"]
                 for f in fams]
        tab.append([row] + cells + [f"{np.mean(gains):+.2f}"])
    lev = [[row] + [f"{summary[f][row]['log2_ratio_median']:+.2f}" for f in fams] for row in rows]
    t = np.array([r["target"] for r in records])
    est = []
    for f in fams:
        m = np.array([r["family"] == f for r in records])
        corr = float(np.corrcoef(preds[m], t[m])[0, 1]) if t[m].std() > 0 else float("nan")
        est.append([f, f"{t[m].mean():+.2f}", f"{preds[m].mean():+.2f} ({preds[m].std():.2f})",
                    f"{corr:.2f}"])
    md = [f"## Blind clip-level scalar ({_SPLIT.value} scenes, {len(records)} inputs)", "",
          "PU21-PSNR on the clipped pixels (overall in brackets), mean per family; last column: "
          "mean over the families minus inverse sRGB's. Estimators: "
          + ", ".join(f"`{Path(w).name}`" for w in _ESTIMATORS.value) + " (mean"
          + (f", plus {_OFFSET.value:g}" if _OFFSET.value else "")
          + (f", at most {_CEILING.value:g}" if _CEILING.value is not None else "") + ").", "",
          report.markdown_table(["linearisation"] + fams + ["vs inverse sRGB"], tab), "",
          "Median log2(predicted / true) on the clipped pixels:", "",
          report.markdown_table(["linearisation"] + fams, lev), "",
          "The estimate against the oracle's scalar:", "",
          report.markdown_table(["family", "oracle (mean)", "estimate (mean, sd)",
                                 "correlation"], est), ""]
    res = {"split": _SPLIT.value, "estimators": _ESTIMATORS.value, "ceiling": _CEILING.value,
           "offset": _OFFSET.value, "summary": summary,
           "inputs": records}
    if _OUT.value:
        report.publish(Path(_OUT.value), res, "\n".join(md), overwrite=_OVERWRITE.value)
    else:
        print("\n".join(md))


def export() -> None:
    """The estimators as the members of one :class:`cliplevel.ClipLevelNet` ('cliplevel')."""
    blobs = [serialization.msgpack_restore((Path(w) / PARAMS).read_bytes())
             for w in _ESTIMATORS.value]
    features = [int(f) for f in blobs[0]["features"]]
    if any([int(f) for f in b["features"]] != features for b in blobs):
        raise app.UsageError("--estimators differ in --features")
    variables = {"params": {f"member{i}": b["params"] for i, b in enumerate(blobs)}}
    info = {"members": [b.get("meta", {}) for b in blobs], "trained_on": _TRAINED_ON.value,
            "recipe": "experiments/clip_scalar.py"}
    path = bundle.save_network(_OUT.value, "cliplevel", variables,
                               {"features": features, "members": len(blobs),
                                "ceiling": _CEILING.value, "offset": _OFFSET.value},
                               dtype="float32",
                               info=info, compress=True)
    print(f"cliplevel: {len(blobs)} members -> {path}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if _MODE.value in ("evaluate", "export"):
        if not _ESTIMATORS.value:
            raise app.UsageError(f"--mode {_MODE.value} needs --estimators")
        if _MODE.value == "export":
            if not _OUT.value:
                raise app.UsageError("--mode export needs --out")
            return export()
        return evaluate()
    if not _WORKDIR.value:
        raise app.UsageError("--mode train needs --workdir")
    workdir = Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    train(workdir, [argv[0]] + flags.FLAGS.flags_into_string().split())
    return None


if __name__ == "__main__":
    flags.mark_flags_as_required(["mode"])
    app.run(main)
