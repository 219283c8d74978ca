"""Fits the highlight lift (:mod:`hdr_jax.models.level`) on rendered views of the fitting scenes.

    python -m experiments.fit_level --hdr_dir ../shared/data/hdri --emor_dir ../shared/data/crf \
        --workdir W [--out hdr_jax/weights]

Each view of the fitting scenes (:func:`hdr_brackets.split_development`; the protocol's
development views of every training scene but every fourth, which are the development scenes;
with ``--random_views N`` also N random views per fitting scene, tabulated apart) is rendered
through every camera response of the four families as the response protocol renders its
inputs (:func:`responses.rendered_inputs`, PNG and JPEG, 2/5/15 % clipped). Per input the script
tabulates the HDR protocol's PU21-PSNR on the clipped pixels of the pipeline's blind
linearisation (:func:`pipeline.blind_linear`, the weights of ``--weights``; with
``--response true`` the photo linearised with its camera's own response, the pipeline's
linearisation when the user gives the response) lifted by 2^(l w)
(:func:`level.lift_weight`) over a grid of l (:func:`protocol.pu21_clipped_lifted`), and the
photo's features (:func:`level.photo_features`).

The lift's linear model is then fitted to maximise the mean over the inputs of the tabulated
gain at its prediction, each family weighted equally (:func:`level.fit_linear`). The
development scenes' inputs are scored the same way and reported next to the fitting scenes'
(inverse-sRGB input, the blind linearisation, the lifted one, the per-input best l).

The tabulated scores are cached in ``--workdir`` (``tables_fitting.npz``,
``tables_development.npz``; ``tables_true_*`` with ``--response true``), so a rerun refits
without rendering; with ``--out`` the fitted network is written into that weights directory as
``level`` (``level_known`` with ``--response true``; float32, a few hundred bytes).
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import bundle, pipeline
from hdr_jax import io as hdr_io
from hdr_jax.camera import panorama
from hdr_jax.data import hdr_brackets
from hdr_jax.eval import protocol, responses, system
from hdr_jax.models import level

_HDR_DIR = flags.DEFINE_string("hdr_dir", None, "Folder of HDR panoramas.", required=True)
_EMOR_DIR = flags.DEFINE_string("emor_dir", "", "EMoR files (the EMoR family; none: skipped).")
_WEIGHTS = flags.DEFINE_string("weights", "", "Weights with the clip-level estimate "
                               "(default: the bundled weights).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the tables and the report go.",
                               required=True)
_OUT = flags.DEFINE_string("out", "", "Weights directory to write the fitted lift into.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the rendered views (the protocol's).")
_VIEWS = flags.DEFINE_integer("views", 0, "Views per scene (0: every development view).")
_ALL_SCENES = flags.DEFINE_bool(
    "all_scenes", False, "Fit on the development scenes too (every training scene; the "
    "development report is then in-sample), once the form has been chosen on them.")
_RESPONSE = flags.DEFINE_enum(
    "response", "blind", ["blind", "true"], "Linearisation the lift is fitted on: the blind one "
    "(photos of an unknown camera; network 'level') or the camera's true response (photos whose "
    "response the user gives; network 'level_known', features with clip level 0).")
_RANDOM_VIEWS = flags.DEFINE_integer(
    "random_views", 0, "Random views per fitting scene on top of the development views (field "
    "of view 40-110 deg, elevation -10-40 deg, any azimuth; seeded by the scene's name).")

FAMILIES = ("sRGB", "gamma", "gamma+S", "EMoR")
#: Per --response: the network written, the name of the unlifted row, the prefix of the cached
#: tables and of the fit report.
MODES = {"blind": ("level", "blind linearisation", ""),
         "true": ("level_known", "true linearisation", "true_")}


def _tables(pipe: pipeline.Pipeline, scenes: list[str], families: dict,
            extra: int = 0) -> dict[str, np.ndarray]:
    files = {f.stem: f for f in hdr_io.list_images(Path(_HDR_DIR.value), kinds=("hdr",))}
    views = []
    for s in scenes:
        pano = np.maximum(hdr_io.read_hdr(files[s]), 0.0).astype(np.float32)
        angles = list(responses.DEV_VIEWS[:_VIEWS.value or None]) + panorama.random_views(
            np.random.default_rng(zlib.crc32(s.encode())), extra, (40.0, 110.0), (-10.0, 40.0))
        views += [(s, system.render_view(pano, v, _SIZE.value, 1)[0]) for v in angles]
    rows = {k: [] for k in ("family", "scene", "encoding", "features", "input", "scores")}
    for item, scene, radiance, curve, ldr, clipped, _ in responses.rendered_inputs(views,
                                                                                   families):
        if _RESPONSE.value == "true":
            k, base = None, protocol.linearise_srgb(ldr, curve)
        else:
            k = pipeline.blind_clip_level(pipe, ldr)
            base = pipeline.blind_linear(pipe, ldr, k)
        rows["family"].append(item["family"])
        rows["scene"].append(scene)
        rows["encoding"].append(item["encoding"])
        rows["features"].append(level.photo_features(ldr, 0.0 if k is None else k))
        rows["input"].append(protocol.pu21_protocol(protocol.linearise_srgb(ldr), radiance,
                                                    clipped)["pu21_clipped"])
        rows["scores"].append(protocol.pu21_clipped_lifted(
            base, radiance, clipped, level.lift_weight(ldr), level.GRID))
    return {k: np.asarray(v) for k, v in rows.items()}


def _report(table: dict[str, np.ndarray], lifts: np.ndarray) -> dict[str, dict[str, float]]:
    zero = int(np.argmin(np.abs(level.GRID)))
    base = MODES[_RESPONSE.value][1]
    rows = {base: table["scores"][:, zero],
            "lifted": level.score_at(table["scores"], lifts),
            "best lift per input (analysis)": table["scores"].max(1)}
    out = {}
    for name, s in rows.items():
        gain = s - table["input"]
        out[name] = {f: float(gain[table["family"] == f].mean()) for f in FAMILIES
                     if np.any(table["family"] == f)}
        out[name]["mean"] = float(np.mean(list(out[name].values())))
    return out


def _markdown(report: dict, tables: dict[str, dict[str, np.ndarray]], fitted_scenes: str) -> str:
    lines = ["Gain (dB) over the inverse-sRGB input in the HDR protocol's PU21-PSNR on the clipped "
             "pixels, mean per family (`python -m experiments.fit_level --response "
             f"{_RESPONSE.value}`); the lift is fitted on {fitted_scenes} only.", ""]
    for split, rows in report.items():
        fams = [f for f in FAMILIES if f in next(iter(rows.values()))]
        n = len(tables[split]["input"])
        lines += [f"{split} scenes ({n} inputs):", "",
                  "| | " + " | ".join(fams) + " | mean |", "|---" * (len(fams) + 2) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{g[f]:+.2f}" for f in fams)
                  + f" | {g['mean']:+.2f} |" for name, g in rows.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    workdir = Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    pipe = pipeline.Pipeline(_WEIGHTS.value or None)
    stems = [f.stem for f in hdr_io.list_images(Path(_HDR_DIR.value), kinds=("hdr",))]
    families = responses.response_families(_EMOR_DIR.value or None, training_seed=True)
    tables = {}
    for split, scenes in zip(("fitting", "development"), hdr_brackets.split_development(stems)):
        extra = _RANDOM_VIEWS.value if split == "fitting" else 0
        name = (f"tables_{MODES[_RESPONSE.value][2]}{split}"
                + (f"_random{extra}" if extra else ""))
        path = workdir / f"{name}.npz"
        if not path.exists():
            t0 = time.perf_counter()
            t = _tables(pipe, scenes, families, extra)
            tmp = workdir / f"{name}.tmp.npz"
            np.savez(tmp, **t)
            tmp.replace(path)
            print(f"{split}: {len(t['input'])} inputs in {time.perf_counter() - t0:.0f} s",
                  flush=True)
        with np.load(path) as f:
            tables[split] = {k: f[k] for k in f.files}
    fit_on = ["fitting", "development"] if _ALL_SCENES.value else ["fitting"]
    fitted_scenes = f"the {' and '.join(fit_on)} scenes"
    t = {k: np.concatenate([tables[s][k] for s in fit_on]) for k in tables["fitting"]}
    fam = t["family"]
    weights = np.array([1.0 / np.mean(fam == f) for f in fam])
    mean, scale, theta = level.fit_linear(t["features"], t["scores"] - t["input"][:, None],
                                          weights)
    report = {}
    for split, t in tables.items():
        z = (t["features"] - mean) / scale
        report[split] = _report(t, theta[0] + z @ theta[1:])  # score_at bounds the lift
    result = {"fitted_on": fit_on, "features": list(level.FEATURES), "mean": mean.tolist(),
              "scale": scale.tolist(), "bias": float(theta[0]), "weights": theta[1:].tolist(),
              "report": report}
    stem = f"fit_{MODES[_RESPONSE.value][2]}".rstrip("_")  # fit / fit_true
    (workdir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (workdir / f"{stem}.md").write_text(_markdown(report, tables, fitted_scenes))
    for split, rows in report.items():
        print(split)
        for name, g in rows.items():
            print(f"  {name:32s}", " ".join(f"{f} {v:+.2f}" for f, v in g.items()))
    print("bias", round(theta[0], 3), dict(zip(level.FEATURES, np.round(theta[1:], 3))))
    if _OUT.value:
        variables = {"params": {"lift": {"kernel": np.asarray(theta[1:], np.float32)[:, None],
                                         "bias": np.asarray(theta[:1], np.float32)}}}
        config = {"mean": mean.tolist(), "scale": scale.tolist()}
        info = {"recipe": "experiments/fit_level.py", "response": _RESPONSE.value,
                "report": report,
                "trained_on": f"rendered views of {fitted_scenes} (module docstring of "
                              "experiments/fit_level.py)"}
        name = MODES[_RESPONSE.value][0]
        path = bundle.save_network(_OUT.value, name, variables, config, dtype="float32",
                                   info=info, compress=True)
        print(f"{name} -> {path}")


if __name__ == "__main__":
    app.run(main)
