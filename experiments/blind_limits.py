"""How well a blind camera estimate must work, and why the gammas cannot be told apart (analysis).

    python -m experiments.blind_limits [--split dev|heldout] [--hdr_dir DIR] [--emor_dir DIR] \
        [--weights DIR] [--size 256] [--limit N] [--views_per_scene 12] \
        [--parts accuracy] [--parts spread] [--parts curves] [--parts prototypes] \
        [--out docs/results/blind_limits/SPLIT] [--overwrite]

A photo of an unknown camera is linearised with inverse sRGB bent at the clip by a scalar k
(:func:`protocol.linearise_warped`), read from the photo by a small network, and its clipped
pixels are then raised by the weights' highlight lift (:func:`level.lift`, whose features include
k). Two questions about k, and one about whole curves:

* ``accuracy``: how much of the clipped-pixel gain depends on how well k is estimated. Each
  input's clipped-pixel PU21-PSNR gain over the inverse-sRGB input is tabulated on the grid of k
  :data:`GRID` (linearised, then lifted with that k as the lift's feature) and read at: k = 0;
  the weights' estimate (scored exactly, not from the table); the best constant k of each family
  (an estimator that knows the family but not the curve within it); the mean k of the photo's
  exponent twins (below: an estimator that knows the camera up to the exponent a photo cannot
  show); the weights' estimate moved a share :data:`CLOSER` of the way to the true k
  (:func:`protocol.clip_level_scalar`), which cuts its rms error by that share and keeps where
  its errors lie; and the true k. Inputs: the development scenes (``--split dev``:
  :func:`responses.development_views`, the training seed's EMoR curves) or the held-out
  protocol's views (``--split heldout``: :func:`responses.heldout_protocol_views`, the held-out
  EMoR curves); every family, the protocol's encodings and clip fractions. Nothing is fitted or
  chosen on either. The lift was fitted with the weights' estimate as its feature, so the rows
  of other estimates are what those estimates get with today's lift, not with one refitted.
* ``curves``: the same question for an estimate of the whole curve instead of k. The k above
  bends inverse sRGB at the clip, a one-parameter family of curves that even the true k fits
  only roughly to a shouldered camera. Here each input is linearised with its true inverse
  response (the oracle) and with the inverse of each of its exponent twins (below), alone and
  lifted by the weights' lift for a known response (``level_known``): an estimator that knows the
  curve's shape and guesses its exponent at the middle of the twins, or at one of them, which on
  average is the mean over them. Same inputs as ``accuracy``; nothing is fitted. Not run
  unless named (``--parts curves``).
* ``prototypes``: how coarsely the shape must be known. Every curve's exponent twins share one
  twin that codes mid-grey as sRGB does (:func:`shapes.canonical`); training responses brought to
  them are clustered into K shapes (k-means of ln f^-1 at :data:`shapes.SHAPE_CODES`, K in
  :data:`PROTOTYPES`; each prototype the member nearest its cluster's centre), and each input
  is linearised with the prototype nearest its own canonical twin: what an estimator that
  classifies the shape into K classes without error would reach, at the canonical exponent and
  at the median of the exponents that brought the prototype's cluster to it (where training
  cameras of that shape sit). Also scored: the input's own canonical twin, today's estimate
  (the weights' k and its lift), and gated rows that keep today's estimate on the power-like
  families (sRGB, gamma) and use the prototype on the others (a perfect gate as well). Not run
  unless named.
* ``spread``: a photo f(E a) of a scene E is the same photo as f(x^(1/p)) of the scene E^p at
  exposure a^p, for any response f and exponent p > 0; so a camera is known from one photo only
  up to the exponent of its input, unless the prior over scenes says E is likelier than E^p.
  Gamma 2.6 and gamma 1.8 differ by p = 1.44 exactly so (:func:`exponent_twins` names the twins
  of each protocol curve). How wide that prior is: for random views (field of view 40-110 deg,
  elevation -10-40 deg) of the training and of the held-out panoramas, the log2 range of
  luminance between the 10th percentile and the level at which the protocol's clip fractions
  clip (the range the unclipped part of the photo shows, which the exponent p stretches by p);
  its quantiles over the views, and the ratio of its 90th to its 10th percentile. Then, for that
  range and for other statistics of the same views that the exponent scales by p (the median
  step of log luminance between pixels 1, 4 and 16 px apart, and the inverse slope of the
  brightest pixels' log survival: :func:`scaling_cues`), the spread of their logs over the
  views, and the best correlation a linear read of each could have with the log gamma of the
  protocol's three gammas, were the scenes the views: sd(ln g) / sqrt(sd(ln g)^2 + spread^2);
  and the same for all of them read together, the best linear combination on these views.
  ``--parts spread`` runs this part alone.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import io as hdr_io
from hdr_jax import pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import shapes
from hdr_jax.data import hdr_brackets, highlight_views
from hdr_jax.eval import protocol, report, responses, system
from hdr_jax.models import level

_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_EMOR_DIR = flags.DEFINE_string("emor_dir", "", "EMoR model folder (adds the EMoR family).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) input view, pixels.")
_SPLIT = flags.DEFINE_enum("split", "dev", ["dev", "heldout"], "Inputs of the accuracy part.")
_LIMIT = flags.DEFINE_integer("limit", 0, "dev: views per scene (0: all DEV_VIEWS); heldout: "
                              "views spread over the scenes (0: all).")
_SPREAD_VIEWS = flags.DEFINE_integer("views_per_scene", 12, "Random views per panorama (spread).")
_PARTS = flags.DEFINE_multi_enum("parts", ["accuracy", "spread"],
                                 ["accuracy", "curves", "prototypes", "spread"],
                                 "Parts to run (repeat the flag for several).")
_OUT = flags.DEFINE_string("out", "", "Output folder (default docs/results/blind_limits/SPLIT).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

#: The k each input's gain is tabulated on (the true k of the inputs lies within), finer near 0,
#: where the lift, which reads k, changes fastest.
GRID = np.unique(np.round(np.concatenate([np.linspace(-2.5, 1.5, 41),
                                          np.linspace(-0.3, 0.3, 25)]), 6))
#: Shares of the way from the weights' estimate to the true k that the graded estimates move.
CLOSER = (0.25, 0.5, 0.75)
#: Luminance quantile the spread is measured from (the dark end of the photo's range).
DARK_QUANTILE = 0.1
#: The protocol's gammas (:func:`responses.response_families`).
GAMMAS = (1.8, 2.2, 2.6)
#: Cues: pixels counted as unclipped lie below the level this share of the view exceeds and at
#: most this many stops under it (an 8-bit photo's useful codes); pixel distances of the steps;
#: shares of the brightest pixels whose survival the tail slope is fitted over.
CUE_CLIP, CUE_STOPS, CUE_STEPS, CUE_TAIL = 0.05, 8.0, (1, 4, 16), (0.05, 0.3)
COMBINED = "all of them, weighed by their covariance (a bound)"


def scaling_cues(lum: np.ndarray) -> dict[str, float]:
    """Statistics of a view's luminance (h, w) that the scene's exponent p multiplies by p:
    the log2 range from the 10th percentile to the clip level of :data:`CUE_CLIP`; the median
    |ln L(x + s) - ln L(x)| over horizontal and vertical pairs s px apart, both unclipped and
    within :data:`CUE_STOPS` of the clip level; and -1 / (slope of ln survival against ln L)
    over the brightest :data:`CUE_TAIL` shares of the pixels."""
    def quantile(q: float) -> float:  # a pixel's own value, so that it commutes with a power
        return float(np.quantile(lum, q, method="inverted_cdf"))

    clip = quantile(1.0 - CUE_CLIP)
    out = {"range to the clip (log2)": math.log2(clip / quantile(DARK_QUANTILE))}
    log = np.log(np.maximum(lum, 1e-30))
    ok = (lum < clip) & (lum > clip * 2.0 ** -CUE_STOPS)
    for s in CUE_STEPS:
        steps = [np.abs(log[:, s:] - log[:, :-s])[ok[:, s:] & ok[:, :-s]],
                 np.abs(log[s:] - log[:-s])[ok[s:] & ok[:-s]]]
        out[f"median log step, {s} px"] = float(np.median(np.concatenate(steps)))
    ranked = np.sort(lum.ravel())[::-1]
    lo, hi = (int(f * ranked.size) for f in CUE_TAIL)
    slope = np.polyfit(np.log(ranked[lo:hi]), np.log(np.arange(lo, hi) / ranked.size), 1)[0]
    out["highlight tail (inverse slope)"] = float(-1.0 / slope)
    return out


def lifted(pipe: pipeline.Pipeline, ldr: np.ndarray, k: float) -> np.ndarray:
    """The photo linearised with inverse sRGB bent by ``k``, its clipped pixels lifted by the
    weights' lift for that k (a lift below 0 keeps them at least at the clip code's value, as
    in the pipeline)."""
    zm = np.float32(protocol.warp_median_code(ldr))
    linear = np.asarray(protocol.warp_codes(ldr, np.float32(k), zm), np.float32)
    clip_value = float(np.asarray(protocol.warp_codes(np.ones((1, 1, 3), np.float32),
                                                      np.float32(k), zm)).max())
    return level.lift(linear, ldr, pipeline.estimate_lift(pipe, ldr, k), clip_value)


def exponent_twins(family: str, curve: np.ndarray, families: dict) -> list[np.ndarray]:
    """The cameras a photo through ``curve`` cannot be told from without a scene prior (module
    docstring): the family's curves for the gamma families, which differ by their exponent only;
    the curve itself for sRGB; for any other curve f, f(x^(2.2 / g)) for each g of
    :data:`GAMMAS` (the same spread of exponents around the curve)."""
    if family in ("gamma", "gamma+S"):
        return list(families[family].values())
    if family == "sRGB":
        return [curve]
    return [shapes.with_exponent(curve, GAMMAS[1] / g) for g in GAMMAS]


def twin_scalar(ldr: np.ndarray, clipped: np.ndarray, curves: list[np.ndarray]) -> float:
    """The mean over ``curves`` of the k each would give the photo were it the camera: the
    photo's own linearisation with that curve stands for the scene (its twin), so this needs no
    radiance."""
    return float(np.mean([protocol.clip_level_scalar(ldr, protocol.linearise_srgb(ldr, c), c,
                                                     clipped) for c in curves]))


def family_means(records: list[dict], values: np.ndarray) -> dict[str, float]:
    families = list(dict.fromkeys(r["family"] for r in records))
    fam = np.array([r["family"] for r in records])
    out = {f: float(np.mean(values[fam == f])) for f in families}
    return out | {"mean": float(np.mean([out[f] for f in families]))}


#: The two ways each k is scored: the photo linearised and lifted, and linearised alone.
SCORINGS = ("lifted", "linearised alone")


def scored_inputs(views: list, families: dict):
    """The protocol's inputs that have clipped and unclipped pixels (:func:`responses.
    rendered_inputs`), each with the clipped-pixel PU21-PSNR of its inverse-sRGB linearisation,
    which every gain here is measured against: (plan item, scene, radiance, curve, photo,
    clipped mask, that score)."""
    for item, scene, radiance, curve, ldr, clipped, _ in responses.rendered_inputs(views,
                                                                                   families):
        if clipped.all() or not clipped.any():
            continue
        base = protocol.pu21_protocol(protocol.linearise_srgb(ldr), radiance,
                                      clipped)["pu21_clipped"]
        yield item, scene, radiance, curve, ldr, clipped, base


def k_gains(pipe: pipeline.Pipeline, ldr: np.ndarray, radiance: np.ndarray,
            clipped: np.ndarray, base: float):
    """A function of k: the clipped-pixel gains over ``base`` of the photo linearised with
    inverse sRGB bent by k, lifted by the weights' lift for that k and alone (:data:`SCORINGS`
    order)."""

    def gains(k: float) -> list[float]:
        preds = (lifted(pipe, ldr, k), protocol.linearise_warped(ldr, k))
        return [protocol.pu21_protocol(p, radiance, clipped)["pu21_clipped"] - base
                for p in preds]

    return gains


def weights_k(pipe: pipeline.Pipeline, ldr: np.ndarray) -> float:
    """The weights' blind estimate of k for the photo (0, inverse sRGB, without one)."""
    k = pipeline.blind_clip_level(pipe, ldr)
    return 0.0 if k is None else k


def accuracy(pipe: pipeline.Pipeline, views: list, families: dict) -> dict:
    records = []
    for item, scene, radiance, curve, ldr, clipped, base in scored_inputs(views, families):
        gains = k_gains(pipe, ldr, radiance, clipped, base)
        k_weights = weights_k(pipe, ldr)
        records.append({**item, "scene": scene,
                        "k_true": protocol.clip_level_scalar(ldr, radiance, curve, clipped),
                        "k_weights": k_weights, "gain_weights": gains(k_weights),
                        "k_twins": twin_scalar(ldr, clipped, exponent_twins(item["family"],
                                                                            curve, families)),
                        "gains": [gains(float(k)) for k in GRID]})
    k_true = np.array([r["k_true"] for r in records])
    k_weights = np.array([r["k_weights"] for r in records])
    fam = np.array([r["family"] for r in records])
    rows = {}
    for j, scoring in enumerate(SCORINGS):
        table = np.array([r["gains"] for r in records])[:, :, j]

        def at(ks: np.ndarray, table=table) -> np.ndarray:
            # Linear interpolation in each input's table; beyond the grid, its end.
            return np.array([np.interp(k, GRID, row) for k, row in zip(ks, table)])

        out = rows[scoring] = {}

        def row(name: str, ks: np.ndarray, values: np.ndarray | None = None, out=out, at=at):
            out[name] = family_means(records, at(ks) if values is None else values) | {
                "rmse_k": float(np.sqrt(np.mean((ks - k_true) ** 2)))}

        row("k = 0 (inverse sRGB)", np.zeros(len(records)))
        row("the weights' estimate", k_weights,
            np.array([r["gain_weights"][j] for r in records]))
        best = np.zeros(len(records))
        for f in dict.fromkeys(fam):
            best[fam == f] = GRID[int(np.argmax(table[fam == f].mean(0)))]
        row("best constant k per family (the family known)", best)
        row("the curve known up to its exponent (mean k of its twins)",
            np.array([r["k_twins"] for r in records]))
        for w in CLOSER:
            row(f"the estimate moved {w:.0%} of the way to the true k",
                k_weights + w * (k_true - k_weights))
        row("true k", k_true)
    corr = {f: (float(np.corrcoef(k_weights[fam == f], k_true[fam == f])[0, 1])
                if k_weights[fam == f].std() > 0 and k_true[fam == f].std() > 0
                else float("nan"))
            for f in dict.fromkeys(fam)}
    return {"rows": rows, "weights_correlation": corr,
            "k_true": {"mean": float(k_true.mean()), "sd": float(k_true.std())},
            "inputs": records}


#: Rows of the ``curves`` part, each a linearisation by a whole curve; gains over the
#: inverse-sRGB input on the clipped pixels.
CURVE_ROWS = ("the true curve (oracle)",
              "its shape known, its exponent the middle of its twins",
              "its shape known, its exponent one of its twins (mean over them)")


def curve_gains(pipe: pipeline.Pipeline, ldr: np.ndarray, radiance: np.ndarray,
                clipped: np.ndarray, base: float):
    """A function of a curve: the clipped-pixel gains over ``base`` of the photo linearised
    with that curve, lifted by the weights' lift for a known response and alone (:data:`SCORINGS`
    order)."""
    lift = pipeline.estimate_lift(pipe, ldr, None, known_response=True)

    def gains(c: np.ndarray) -> list[float]:
        linear = protocol.linearise_srgb(ldr, c)
        clip = float(crf_lib.apply_inverse_crf(c, np.float32(protocol.CLIP_LEVEL)))
        preds = (level.lift(linear, ldr, lift, clip), linear)
        return [protocol.pu21_protocol(p, radiance, clipped)["pu21_clipped"] - base
                for p in preds]

    return gains


def whole_curves(pipe: pipeline.Pipeline, views: list, families: dict) -> dict:
    """Clipped-pixel gains of whole-curve linearisations (module docstring, ``curves``)."""
    records = []
    for item, scene, radiance, curve, ldr, clipped, base in scored_inputs(views, families):
        gains = curve_gains(pipe, ldr, radiance, clipped, base)
        twins = exponent_twins(item["family"], curve, families)
        records.append({**item, "scene": scene, "true": gains(curve),
                        "twins": [gains(c) for c in twins], "middle": len(twins) // 2})
    rows = {}
    for j, scoring in enumerate(SCORINGS):
        values = (np.array([r["true"][j] for r in records]),
                  np.array([r["twins"][r["middle"]][j] for r in records]),
                  np.array([np.mean([t[j] for t in r["twins"]]) for r in records]))
        rows[scoring] = {name: family_means(records, v) for name, v in zip(CURVE_ROWS, values)}
    return {"rows": rows, "inputs": records}


#: Numbers of shape prototypes the ``prototypes`` part scores.
PROTOTYPES = (1, 2, 4, 8, 16)
#: Radiances at which the results file records each prototype's code.
PROTOTYPE_SAMPLES = 33


def prototype_pool(emor_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The training sampler's responses (:class:`highlight_views.CurveSampler`, the training
    EMoR curves with ``emor_dir``) brought to their canonical twins (:func:`shapes.
    prototype_pool`)."""
    return shapes.prototype_pool(
        highlight_views.CurveSampler(highlight_views.emor_training_curves(emor_dir)))


#: Families whose curves are powers (or sRGB, nearly one): the ``prototypes`` part's gated rows
#: leave them to today's estimate.
POWER_FAMILIES = ("sRGB", "gamma")


def prototypes(pipe: pipeline.Pipeline, views: list, families: dict,
               emor_dir: str | None) -> dict:
    """Clipped-pixel gains of linearising with a shape prototype (module docstring,
    ``prototypes``)."""
    pool, powers = prototype_pool(emor_dir)
    feats = np.stack([shapes.shape_features(c) for c in pool])
    protos = {k: shapes.shape_prototypes(pool, powers, feats, k) for k in PROTOTYPES}
    records = []
    for item, scene, radiance, curve, ldr, clipped, base in scored_inputs(views, families):
        gains = curve_gains(pipe, ldr, radiance, clipped, base)
        own, _ = shapes.canonical(curve)
        shape = shapes.shape_features(own)
        nearest = {k: int(np.argmin(((f - shape) ** 2).sum(1))) for k, (*_, f) in protos.items()}
        today = k_gains(pipe, ldr, radiance, clipped, base)(weights_k(pipe, ldr))
        records.append({**item, "scene": scene, "true": gains(curve), "canonical": gains(own),
                        "today": today, "nearest": {str(k): i for k, i in nearest.items()},
                        "prototype": {str(k): gains(protos[k][0][i]) for k, i in nearest.items()},
                        "typical": {str(k): gains(protos[k][1][i]) for k, i in nearest.items()}})
    fam = np.array([r["family"] for r in records])
    power = np.isin(fam, POWER_FAMILIES)
    rows = {}
    for j, scoring in enumerate(SCORINGS):
        table = rows[scoring] = {}

        def row(name: str, values: np.ndarray, table=table):
            table[name] = family_means(records, values)

        row("the true curve (oracle)", np.array([r["true"][j] for r in records]))
        row("its shape known, its exponent the canonical one",
            np.array([r["canonical"][j] for r in records]))
        today = np.array([r["today"][j] for r in records])
        row("today's estimate (the weights' k)", today)
        for k in PROTOTYPES:
            row(f"the nearest of {k} shape prototypes, canonical exponent",
                np.array([r["prototype"][str(k)][j] for r in records]))
        for k in PROTOTYPES:
            v = np.array([r["typical"][str(k)][j] for r in records])
            row(f"the nearest of {k} shape prototypes, typical exponent", v)
            row(f"sRGB and gamma as today, the others the nearest of {k} (typical exponent)",
                np.where(power, today, v))
    # The prototypes for the record, at a few radiances (the draw and seeds rebuild them whole).
    x = np.linspace(0.0, 1.0, PROTOTYPE_SAMPLES)
    return {"rows": rows, "inputs": records,
            "prototypes": {"radiance": x.tolist()} | {
                str(k): {name: [np.round(crf_lib.apply_crf(c, x), 5).tolist() for c in curves]
                         for name, curves in (("canonical", p), ("typical", t))}
                for k, (p, t, _) in protos.items()}}


def spread(hdr_dir: str, views_per_scene: int, size: int) -> dict:
    files = {f.stem: f for f in hdr_io.list_images(Path(hdr_dir), kinds=("hdr",))}
    train, heldout = hdr_brackets.split_scenes(list(files))[:2]
    rng = np.random.default_rng(0)
    out, sd_gamma = {}, float(np.std(np.log(GAMMAS)))
    for split, scenes in (("training scenes", train), ("held-out scenes", heldout)):
        values, cues = [], {}
        for scene in scenes:
            pano = np.maximum(hdr_io.read_hdr(files[scene]), 0.0).astype(np.float32)
            for _ in range(views_per_scene):
                view = (float(rng.uniform(40, 110)), float(rng.uniform(-10, 40)),
                        float(rng.uniform(0, 360)))
                lum = crf_lib.luminance(system.render_view(pano, view, size, 1)[0])
                if np.quantile(lum, DARK_QUANTILE) <= 0:
                    continue
                for name, v in scaling_cues(lum).items():
                    cues.setdefault(name, []).append(v)
                lum = lum[lum > 0]
                dark = float(np.quantile(lum, DARK_QUANTILE))
                values += [math.log2(float(np.quantile(lum, 1.0 - f)) / dark)
                           for f in responses.CLIP_FRACTIONS]
        if values:
            q = {p: float(np.quantile(values, p)) for p in (0.1, 0.25, 0.5, 0.75, 0.9)}
            logs = {name: np.log(v) for name, v in cues.items()}
            stats = {name: (float(np.mean(x)), float(np.std(x))) for name, x in logs.items()}
            # All of them read together: every log shifts by the same ln p, so the best linear
            # read weighs them by the inverse of their covariance over the views (fitted on
            # these views: a bound).
            if len(values) > len(responses.CLIP_FRACTIONS) * (len(logs) + 1):  # cov invertible
                cov, ones = np.cov(np.array(list(logs.values()))), np.ones(len(logs))
                stats[COMBINED] = (None, float(1.0 / np.sqrt(ones @ np.linalg.solve(cov, ones))))
            out[split] = {"views": len(values) // len(responses.CLIP_FRACTIONS),
                          "quantiles": q, "p90_over_p10": q[0.9] / q[0.1],
                          "cues": {name: {"mean_ln": mean, "sd_ln": sd,
                                          "best_corr": sd_gamma / math.hypot(sd_gamma, sd)}
                                   for name, (mean, sd) in stats.items()}}
    return out


def markdown(res: dict) -> str:
    acc, lines = res.get("accuracy"), []
    where = "development" if res["split"] == "dev" else "held-out"
    if acc is not None:
        lines += [f"## Clipped-pixel gain against the accuracy of k ({len(acc['inputs'])} "
                  f"{where} inputs)", "",
                  "PU21-PSNR on the clipped pixels over the inverse-sRGB input (dB), mean per "
                  "family, the photo linearised with inverse sRGB bent by each k; last column: "
                  "rms error of k over all inputs (stops).", ""]
    for scoring, table in acc["rows"].items() if acc else ():
        fams = [f for f in next(iter(table.values())) if f not in ("mean", "rmse_k")]
        rows = [[name] + [f"{v[f]:+.2f}" for f in fams + ["mean"]] + [f"{v['rmse_k']:.2f}"]
                for name, v in table.items()]
        lines += [f"### {scoring.capitalize()}" + (" (the weights' lift for that k)"
                                                    if scoring == "lifted" else ""), "",
                  report.markdown_table(["k from"] + fams + ["mean", "rms error of k"], rows),
                  ""]
    lines += [] if acc is None else [
              "The weights' estimate against the true k, correlation per family: "
              + ", ".join(f"{f} {report.fmt(v)}" for f, v in acc["weights_correlation"].items())
              + f"; true k mean {acc['k_true']['mean']:+.2f}, sd {acc['k_true']['sd']:.2f}.", ""]
    for part, title in (("curves", "Whole curves with the exponent unknown"),
                        ("prototypes", "Shape prototypes, the exponent canonical")):
        cur = res.get(part)
        if cur is None:
            continue
        lines += [f"## {title} ({len(cur['inputs'])} {where} inputs)", "",
                  "PU21-PSNR on the clipped pixels over the inverse-sRGB input (dB), mean per "
                  "family, the photo linearised with each curve; lifted: the weights' lift for a "
                  "known response.", ""]
        if part == "prototypes":
            lines += [f"Prototypes: medoids of k-means clusters of {shapes.POOL_SIZE} training "
                      "responses brought to the canonical exponent (mid-grey coded as sRGB "
                      "codes it), chosen for each input as the one nearest its own curve's "
                      "canonical twin (a perfect classifier of shape), scored at the canonical "
                      "exponent and at the median exponent of the prototype's cluster (typical); "
                      "today's estimate: inverse sRGB bent by the weights' k, lifted by its "
                      "lift.", ""]
        for scoring, table in cur["rows"].items():
            fams = [f for f in next(iter(table.values())) if f != "mean"]
            rows = [[name] + [f"{v[f]:+.2f}" for f in fams + ["mean"]]
                    for name, v in table.items()]
            lines += [f"### {scoring.capitalize()}", "",
                      report.markdown_table(["curve"] + fams + ["mean"], rows), ""]
    sp = res.get("spread")
    if sp:
        qs = list(next(iter(sp.values()))["quantiles"])
        rows = [[split, str(v["views"])] + [f"{v['quantiles'][q]:.2f}" for q in qs]
                + [f"{v['p90_over_p10']:.2f}"] for split, v in sp.items()]
        lines += ["## How wide the scene prior is (log2 luminance range below the clip)", "",
                  report.markdown_table(["panoramas", "views"] + [f"q{round(100 * q)}" for q in qs]
                                        + ["q90 / q10"], rows), "",
                  f"Gamma {GAMMAS[-1]} against gamma {GAMMAS[0]} stretches that range by "
                  f"{GAMMAS[-1] / GAMMAS[0]:.2f}.", ""]
        names = list(dict.fromkeys(n for v in sp.values() for n in v["cues"]))
        rows = [[name] + ["" if (v := sp[split]["cues"].get(name, {}).get(key)) is None
                          else f"{v:{fmt}}"
                          for split in sp for key, fmt in (("sd_ln", ".2f"), ("mean_ln", "+.2f"),
                                                           ("best_corr", ".2f"))]
                for name in names]
        lines += ["## Statistics the exponent scales, over the views", "",
                  f"sd of ln g over the protocol's gammas: {np.std(np.log(GAMMAS)):.3f}. "
                  "Per statistic and set of panoramas: sd and mean of its log over the views, "
                  "and the best correlation a linear read of it could have with ln g.", "",
                  report.markdown_table(["statistic"] + [f"{split}: {c}" for split in sp
                                                         for c in ("sd", "mean", "corr.")],
                                        rows), ""]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    out = Path(_OUT.value or f"docs/results/blind_limits/{_SPLIT.value}")
    report.refuse_existing(out, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    dev = _SPLIT.value == "dev"
    res = {"grid": GRID.tolist(), "split": _SPLIT.value, "closer": list(CLOSER)}
    if {"accuracy", "curves", "prototypes"} & set(_PARTS.value):
        if dev:
            views = [(scene, radiance) for scene, _, radiance in
                     responses.development_views(_HDR_DIR.value, _SIZE.value, _LIMIT.value)]
        else:
            views = [(v[0], v[2]) for v in
                     responses.heldout_protocol_views(_HDR_DIR.value, _SIZE.value, _LIMIT.value)]
        if not views:
            sys.exit(f"{_HDR_DIR.value}: no {'development' if dev else 'held-out'} scene")
        pipe = pipeline.Pipeline.load(_WEIGHTS.value)
        families = responses.response_families(_EMOR_DIR.value or None, training_seed=dev)
        if "accuracy" in _PARTS.value:
            res["accuracy"] = accuracy(pipe, views, families)
        if "curves" in _PARTS.value:
            res["curves"] = whole_curves(pipe, views, families)
        if "prototypes" in _PARTS.value:
            res["prototypes"] = prototypes(pipe, views, families, _EMOR_DIR.value or None)
    if "spread" in _PARTS.value:
        res["spread"] = spread(_HDR_DIR.value, _SPREAD_VIEWS.value, _SIZE.value)
    res["total_s"] = time.perf_counter() - t0
    report.publish(out, res, markdown(res), overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    app.run(main)
