"""Stage-1 HDR on held-out views photographed by many cameras: the response-family protocol.

Single-image HDR is usually scored on sRGB renderings only, where the unprocessed input,
linearised with the inverse sRGB curve, is already exact below the clip level. A photo from
another camera is not: linearising it as sRGB bends every unclipped value, and whatever a method
fills into the clipped pixels has to agree with that bent scale. So each held-out view is
rendered through camera responses of four families, as an 8-bit PNG and as JPEG at two
qualities, exposed so that a fraction of the pixels clip:

* ``sRGB``;
* ``gamma``: x^(1/g), g = 1.8, 2.2, 2.6;
* ``gamma+S``: the same gammas followed by a film-like S-curve (:func:`crf.s_curve_crf`);
* ``EMoR``: curves sampled from the EMoR model (Grossberg and Nayar 2004) with a seed no
  training set uses, when the EMoR files are given.

Rows per input: the system (``pipeline.reconstruct`` without stage 2) as a blind user runs it,
the same without its highlight head or lift (``--no-highlights``: the merge's own levels in the
clipped pixels), with the camera's response given (``--response``: a user who knows the
camera; with the lift fitted for that linearisation when the weights have one, and without
it), and with the merge linearised with inverse sRGB (the system without its clip-level
estimate and curve choice); the input linearised with the inverse sRGB curve (what a tool
that does not know the camera does), with the curve the clip-level estimate bends
(:func:`pipeline.blind_linearisation`; inverse sRGB for weights without the estimate) and with
the true inverse response (an oracle: what is lost to not knowing the camera). Scores: the PU21
protocol of :func:`protocol.pu21_protocol` overall and on the clipped pixels, and the highlight
levels of :func:`protocol.highlight_levels`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hdr_jax import io as hdr_io
from hdr_jax import pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.data import hdr_brackets
from hdr_jax.eval import protocol, stats, system

__all__ = [
    "CLIP_FRACTIONS",
    "DEV_VIEWS",
    "EMOR_SEED",
    "EMOR_TRAINING_SEED",
    "ENCODINGS",
    "INPUT_ROW",
    "ROWS",
    "VIEWS",
    "development_views",
    "evaluate_input",
    "per_response",
    "plan",
    "render_input",
    "rendered_inputs",
    "response_families",
    "score_rows",
    "summarise",
]

#: JPEG quality per encoding (None: PNG, no compression).
ENCODINGS: dict[str, int | None] = {"PNG": None, "JPEG q90": 90, "JPEG q75": 75}
#: Fractions of clipped pixels; view i is exposed for CLIP_FRACTIONS[i % 3].
CLIP_FRACTIONS = (0.02, 0.05, 0.15)
#: Six (fov, elevation, azimuth) views per held-out panorama: 48 views of the 8 scenes.
VIEWS: tuple[tuple[float, float, float], ...] = tuple(
    (fov, el, az) for fov, el in ((80.0, 10.0), (60.0, 25.0)) for az in (0.0, 120.0, 240.0)
)
#: Development views of the training scenes (none of them is a held-out view angle): where blind
#: estimators are chosen without touching the held-out scenes.
DEV_VIEWS: tuple[tuple[float, float, float], ...] = (
    (70.0, 15.0, 60.0), (70.0, 15.0, 180.0), (70.0, 15.0, 300.0), (90.0, 0.0, 30.0))
#: Seed of the EMoR sample; the training sets draw theirs with seed 0.
EMOR_SEED = 20261201
#: Seed of every training set's EMoR sample (and of the development sets' curves).
EMOR_TRAINING_SEED = 0
ROWS = (
    "ours (default pipeline)",
    "ours without the highlight head (merge levels)",
    "ours (camera response given)",
    "ours (camera response given), no lift",
    "ours, merge linearised with inverse sRGB (no clip-level estimate)",
    "linearised input (inverse sRGB)",
    "linearised input, bent by the clip-level estimate",
    "linearised input (true inverse response, oracle)",
)
#: The row every gain is measured against: what a tool that does not know the camera does.
INPUT_ROW = ROWS[5]


def response_families(
    emor_dir: str | Path | None = None, n_emor: int = 10, *, training_seed: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """{family: {curve name: (1024,) response}}; the EMoR family only with ``emor_dir``, drawn
    with :data:`EMOR_SEED` (held-out) or, with ``training_seed``, :data:`EMOR_TRAINING_SEED` (a
    development set on training scenes, whose curves the training sets may contain)."""
    gammas = (1.8, 2.2, 2.6)
    families = {
        "sRGB": {"sRGB": crf_lib.srgb_crf()},
        "gamma": {f"gamma {g}": crf_lib.gamma_crf(g) for g in gammas},
        "gamma+S": {f"gamma {g} + S": crf_lib.s_curve_crf(6.0, gamma=g) for g in gammas},
    }
    if emor_dir:
        emor = crf_lib.load_emor(emor_dir)
        seed = EMOR_TRAINING_SEED if training_seed else EMOR_SEED
        curves = crf_lib.sample_emor_crfs(emor, n_emor, np.random.default_rng(seed))
        label = "EMoR (training seed)" if training_seed else "EMoR"
        families["EMoR"] = {f"{label} #{i}": c for i, c in enumerate(curves)}
    return families


def heldout_protocol_views(hdr_dir: str | Path, size: int, limit: int = 0) -> list[tuple]:
    """The protocol's views: :data:`VIEWS` of each held-out panorama in ``hdr_dir``
    (:func:`system.heldout_views`, at ``size`` px), ``limit`` of them spread over the scenes
    (:func:`protocol.spread_indices`; 0: all)."""
    views = list(system.heldout_views(hdr_dir, size=size, scale=1, views=VIEWS))
    return [views[i] for i in protocol.spread_indices(len(views), limit)]


def development_views(hdr_dir: str | Path, size: int, limit: int = 0) -> list[tuple]:
    """(scene, view angles, radiance) of the first ``limit`` (0: all) :data:`DEV_VIEWS` of each
    development scene in ``hdr_dir`` (:func:`hdr_brackets.split_development`; no held-out
    scene), at ``size`` px (:func:`system.render_view`), in scene order."""
    files = {f.stem: f for f in hdr_io.list_images(Path(hdr_dir), kinds=("hdr",))}
    out = []
    for scene in hdr_brackets.split_development(list(files))[1]:
        pano = np.maximum(hdr_io.read_hdr(files[scene]), 0.0).astype(np.float32)
        out += [(scene, view, system.render_view(pano, view, size, 1)[0])
                for view in DEV_VIEWS[: limit or None]]
    return out


def plan(
    num_views: int, families: Mapping[str, Mapping[str, np.ndarray]]
) -> list[dict[str, Any]]:
    """The inputs to render: for view i and each family, curve i (cycling through the family),
    every encoding, clip fraction CLIP_FRACTIONS[i % 3]. Deterministic.

    A family of three curves (gamma, gamma+S) therefore meets each curve at one clip fraction
    only (gamma 1.8 always at 2 %, 2.6 at 15 %): its family mean covers every curve and every
    fraction, but a per-curve figure of those families is that curve at that fraction."""
    out = []
    for i in range(num_views):
        for family, curves in families.items():
            names = list(curves)
            name = names[i % len(names)]
            for encoding in ENCODINGS:
                out.append(dict(view=i, family=family, curve=name, encoding=encoding,
                                fraction=CLIP_FRACTIONS[i % len(CLIP_FRACTIONS)]))
    return out


def render_input(
    radiance: np.ndarray, curve: np.ndarray, *, fraction: float, jpeg_quality: int | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """(photo, clipped mask, exposure) of one input: ``radiance`` (H, W, 3) rendered through
    ``curve``, exposed so that ``fraction`` of the pixels clip, then JPEG if ``jpeg_quality``
    (the clipped mask is taken before the JPEG step, so every encoding is scored on the same
    pixels)."""
    a = protocol.clipping_exposure(radiance, fraction, curve=curve)
    clean = protocol.render_srgb8(radiance, a, curve)
    clipped = protocol.clipped_mask(clean)
    ldr = protocol.jpeg_roundtrip(clean, jpeg_quality) if jpeg_quality else clean
    return ldr, clipped, a


def rendered_inputs(
    views: Sequence[tuple[str, np.ndarray]], families: Mapping[str, Mapping[str, np.ndarray]]
):
    """Every input of :func:`plan` over ``views`` ((scene, radiance) pairs), rendered
    (:func:`render_input`): yields (plan item, scene, radiance, curve, photo, clipped mask,
    exposure)."""
    for item in plan(len(views), families):
        scene, radiance = views[item["view"]]
        curve = families[item["family"]][item["curve"]]
        ldr, clipped, a = render_input(radiance, curve, fraction=item["fraction"],
                                       jpeg_quality=ENCODINGS[item["encoding"]])
        yield item, scene, radiance, curve, ldr, clipped, a


def evaluate_input(
    pipe: Any, radiance: np.ndarray, curve: np.ndarray, *, fraction: float,
    jpeg_quality: int | None,
) -> dict[str, Any]:
    """Scores of the :data:`ROWS` on one input (:func:`render_input`)."""
    ldr, clipped, a = render_input(radiance, curve, fraction=fraction, jpeg_quality=jpeg_quality)
    # One stack per input: the head's row fills the merge of the row without it (a photo
    # larger than the working side makes each row from its own shrunk copy).
    merged = pipeline.reconstruct(pipe, ldr, scale=None, highlights=False)
    blind, _ = pipeline.stage1_hdr(pipe, ldr, merged.stack)
    known = pipeline.reconstruct(pipe, ldr, scale=None, response_curve=curve)
    known_plain, _ = pipeline.stage1_hdr(pipe, ldr, known.stack, response_curve=curve,
                                         highlights=False)
    srgb = crf_lib.srgb_crf()
    plain, _ = pipeline.stage1_hdr(pipe, ldr, merged.stack, response_curve=srgb,
                                   highlights=False)
    bent, gain = pipeline.blind_linearisation(pipe, ldr)
    bent_input = gain * crf_lib.apply_inverse_crf(bent, ldr)
    preds = dict(zip(ROWS, (blind, merged.hdr, known.hdr, known_plain, plain,
                            protocol.linearise_srgb(ldr), bent_input,
                            protocol.linearise_srgb(ldr, curve))))
    return {"scores": score_rows(preds, radiance, clipped, a),
            "clipped_fraction": float(clipped.mean()), "exposure": a,
            "stage1_s": merged.timings.get("stage1_s")}


def score_rows(preds: Mapping[str, np.ndarray], radiance: np.ndarray, clipped: np.ndarray,
               exposure: float) -> dict[str, dict[str, float]]:
    """{row: scores} of each prediction of an input exposed by ``exposure``: the PU21
    protocol (:func:`protocol.pu21_protocol`) on ``clipped`` and the highlight levels
    (:func:`protocol.highlight_levels`, the clip at radiance 1 / ``exposure``)."""
    scores = {}
    for name, pred in preds.items():
        s = protocol.pu21_protocol(pred, radiance, clipped)
        scores[name] = s | protocol.highlight_levels(pred, radiance, clipped, s["gain"],
                                                     1.0 / exposure)
    return scores


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{family: {row: {metric: mean over the family's inputs}}} (NaN left out), plus the
    number of inputs per family under 'n'. Rows are those of the records' scores (the
    :data:`ROWS` for :func:`evaluate_input`'s), in their order."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for family in dict.fromkeys(r["family"] for r in records):
        rs = [r for r in records if r["family"] == family]
        out[family] = {}
        for row in rs[0]["scores"]:
            keys = rs[0]["scores"][row].keys()
            out[family][row] = {
                k: float(np.nanmean([r["scores"][row][k] for r in rs])) for k in keys if k != "gain"
            } | {"n": len(rs)}
    return out


def per_response(
    records: Sequence[Mapping[str, Any]], rows: Sequence[str] = (ROWS[0], ROWS[2]),
    metric: str = "pu21_clipped",
) -> dict[str, dict[str, dict[str, Any]]]:
    """{family: {curve: {"fractions": the clip fractions its inputs were exposed for, row:
    the paired gain over :data:`INPUT_ROW` (:func:`stats.compare`) plus "below", the share of
    the inputs where the row is under it}}} for each of ``rows``, on ``metric``. Under
    :func:`plan` a curve of a three-curve family meets one clip fraction only, so its figure is
    that curve at that fraction."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["family"], {}).setdefault(r["curve"], {})
    for family, curves in out.items():
        for curve in curves:
            rs = [r for r in records if r["family"] == family and r["curve"] == curve]
            ref = np.array([r["scores"][INPUT_ROW][metric] for r in rs], np.float64)
            entry: dict[str, Any] = {"fractions": sorted({float(r["fraction"]) for r in rs})}
            for row in rows:
                v = np.array([r["scores"][row][metric] for r in rs], np.float64)
                ok = ~(np.isnan(v) | np.isnan(ref))
                entry[row] = stats.compare(v, ref, paired=True) | {
                    "below": float(np.mean(v[ok] < ref[ok])) if ok.any() else float("nan")}
            curves[curve] = entry
    return out
