"""The two-stage system: photo -> exposure stack (DrTMO) -> HDR merge -> extreme pair -> CF-Net.

Stage 1: the DownExposureNet makes the darker exposures; the brighter ones are the photo
re-exposed with the camera response the ResponseClassifier recognises (hdr_jax/models/response.py;
the UpExposureNet with ``up_method='network'`` or for weights without a classifier). The
input-anchored merge keeps what the photo measured; where it clipped, the highlight head
(hdr_jax/models/highlight.py) predicts the radiance, when the weights have one.

Images are HWC float32 in [0, 1] at this level (one photo at a time); the networks see NHWC tiles.

Memory strategy (any size, bounded memory): both stages run on overlapping tiles of a fixed size
and the tile outputs are blended with a separable linear ramp over the overlap, so peak memory
depends on the tile size only, never on the photo. Stage 1 tiles are padded (reflect) to a
multiple of 2^depth. Batch norm runs with whatever statistics the exported model was configured
for; the bundled weights use running averages, which makes tiles consistent with each other.

HDR scale convention: the merge divides each linearised exposure by its relative exposure time
(input = 1), so the HDR value of a well-exposed input pixel equals its linearised input value:
input mid-grey is preserved.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hdr_jax import bundle, merge
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera.exposure import TAU, naive_bracket_baseline
from hdr_jax.eval import protocol
from hdr_jax.models import cliplevel, curvechoice, highlight, level, registry, response

# Stage-2 pair, in half-stop steps relative to the input: CF-Net's synthetic training pairs are
# exposed about -3 EV / +2 EV from a mid-grey key, so take the stack images nearest to that.
UNDER_STEP = -6
OVER_STEP = 4


@dataclasses.dataclass
class Network:
    """A module with its variables and a jitted apply function."""

    module: Any
    variables: dict
    entry: dict
    apply: Callable


def _load(directory: Path, name: str) -> Network:
    entry = bundle.read_manifest(directory).get(name)
    if entry is None:
        raise bundle.WeightsError(f"{directory}: manifest has no network {name!r}")
    try:
        kind = registry.kind_of(name)
        cfg = dict(entry["config"])
        module = registry.build(kind, cfg, inference=True)
        template = registry.abstract_variables(kind, module, batch=2 if kind == "response" else 1)
        if kind == "response":
            shape = (int(cfg["num_responses"]), crf_lib.N_SAMPLES)
            template["responses"] = {"curves": jax.ShapeDtypeStruct(shape, jnp.float32)}
        if kind == "curvechoice":
            shape = (int(cfg["num_options"]) - len(curvechoice.BENT), crf_lib.N_SAMPLES)
            template["options"] = {"curves": jax.ShapeDtypeStruct(shape, jnp.float32)}
    except (KeyError, TypeError, ValueError) as e:  # a hand-edited or foreign manifest
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        raise bundle.WeightsError(
            f"{directory}: invalid model config for {name!r} in the manifest "
            f"({type(e).__name__}: {detail})"
        ) from e
    variables, entry = bundle.load_network(directory, name, template)
    curves = {"response": "responses", "curvechoice": "options"}.get(kind)
    if curves and not all(crf_lib.is_valid_crf(c) for c in variables[curves]["curves"]):
        raise bundle.WeightsError(f"{directory}: {name!r} holds a non-monotone response curve")
    apply = jax.jit(registry.inference(kind, module))
    return Network(module, variables, entry, apply)


class Pipeline:
    """The networks of both stages, loaded from a weights directory on first use."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory else bundle.DEFAULT_DIR
        # fails early on a wrong directory
        self._names = set(bundle.read_manifest(self.directory))
        self._networks: dict[str, Network] = {}

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Pipeline:
        """Loads the stage-1 networks eagerly (so bad weights fail before any output)."""
        pipe = cls(directory)
        pipe.up, pipe.down, pipe.response, pipe.highlight, pipe.cliplevel  # noqa: B018
        pipe.level, pipe.level_known, pipe.curvechoice  # noqa: B018
        return pipe

    def network(self, name: str) -> Network:
        if name not in self._networks:
            self._networks[name] = _load(self.directory, name)
        return self._networks[name]

    @property
    def up(self) -> Network:
        return self.network("drtmo_up")

    @property
    def down(self) -> Network:
        return self.network("drtmo_down")

    @property
    def response(self) -> Network | None:
        """The response classifier, or None for a weights directory without one."""
        if "response" not in self._names:
            return None
        return self.network("response")

    @property
    def highlight(self) -> Network | None:
        """The highlight head, or None for a weights directory without one."""
        if "highlight" not in self._names:
            return None
        return self.network("highlight")

    @property
    def cliplevel(self) -> Network | None:
        """The clip-level estimate, or None for a weights directory without one."""
        if "cliplevel" not in self._names:
            return None
        return self.network("cliplevel")

    @property
    def level(self) -> Network | None:
        """The highlight lift, or None for a weights directory without one."""
        if "level" not in self._names:
            return None
        return self.network("level")

    @property
    def level_known(self) -> Network | None:
        """The highlight lift for photos whose camera response the user gives, or None for a
        weights directory without one."""
        if "level_known" not in self._names:
            return None
        return self.network("level_known")

    @property
    def curvechoice(self) -> Network | None:
        """The blind curve choice, or None for a weights directory without one."""
        if "curvechoice" not in self._names:
            return None
        return self.network("curvechoice")

    def cfnet(self, scale: int) -> Network:
        return self.network(f"cfnet_x{scale}")


# -- tiling -------------------------------------------------------------------------------------


#: Mirrored border (pixels) around each stage-1 tile, cropped from the networks' outputs.
STAGE1_MARGIN = 16
#: Default largest stage-1 tile (before that margin): the networks see at most 1024 x 1024, where
#: the bundled DrTMO peaks near 0.5 GiB and runs as fast per pixel as on smaller tiles.
STAGE1_TILE = 1024 - 2 * STAGE1_MARGIN
#: Default stage-2 LR tile: with the 'auto' conv (hdr_jax/models/layers.py) a 256-px tile of the
#: bundled CF-Net peaks at 0.39 GiB (XLA analysis), and its 16-px overlap recomputes 14% of the
#: pixels instead of 31% at 128 px.
STAGE2_TILE = 256


def _ramp(n: int, overlap: int) -> np.ndarray:
    """1-D blending weight: linear ramps of length `overlap` at both ends, never zero."""
    w = np.ones(n, np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        w[:overlap] = np.minimum(w[:overlap], r)
        w[-overlap:] = np.minimum(w[-overlap:], r[::-1])
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def tile_length(size: int, max_tile: int, overlap: int, *, multiple: int = 1,
                margin: int = 0) -> int:
    """The tile length along an axis of `size` pixels: the fewest tiles of at most `max_tile`
    that cover it with `overlap`, each as short as that count allows, then lengthened (up to
    `max_tile`) to where `length + 2 * margin` is a multiple of `multiple`.

    The work of a tiled stage is the number of tiles times the (padded) tile area, so equal
    tiles just long enough beat a fixed tile size whose last tile mostly re-computes its
    neighbour, and a network that pads its input to a multiple might as well see real pixels.
    """
    if size <= max_tile:
        n = 1
    elif max_tile <= overlap:
        raise ValueError(f"tile {max_tile} must be longer than the overlap {overlap}")
    else:
        n = -(-(size - overlap) // (max_tile - overlap))
    length = -(-(size + (n - 1) * overlap) // n)
    padded = -(-(length + 2 * margin) // multiple) * multiple
    return min(size, max_tile, max(length, padded - 2 * margin))


def tiled_apply(
    fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    tile: int | tuple[int, int],
    overlap: int,
    out_scale: int = 1,
    lead_shape: tuple[int, ...] = (),
    out_channels: int = 3,
) -> np.ndarray:
    """Applies `fn` (HWC tile -> (*lead, s*h, s*w, C)) over overlapping tiles and blends.

    `tile`: the tile's side, or its (height, width). Tiles smaller than that only occur when the
    image itself is smaller; `fn` must accept them. All tiles of one image have one shape.
    """
    h, w = image.shape[:2]
    tile_h, tile_w = (tile, tile) if isinstance(tile, (int, np.integer)) else tile
    s = out_scale
    out = np.zeros(lead_shape + (h * s, w * s, out_channels), np.float32)
    wsum = np.zeros((h * s, w * s, 1), np.float32)
    th, tw = min(tile_h, h), min(tile_w, w)
    for y in _starts(h, tile_h, overlap):
        for x in _starts(w, tile_w, overlap):
            patch = image[y : y + th, x : x + tw]
            res = np.asarray(fn(patch), np.float32)
            if not res.flags.writeable:  # a device array's view: weighted in place below
                res = res.copy()
            wy = _ramp(th * s, overlap * s if h > tile_h else 0)
            wx = _ramp(tw * s, overlap * s if w > tile_w else 0)
            wt = (wy[:, None] * wx[None, :])[..., None]
            out[..., y * s : (y + th) * s, x * s : (x + tw) * s, :] += np.multiply(res, wt, out=res)
            wsum[y * s : (y + th) * s, x * s : (x + tw) * s] += wt
    out /= wsum  # in place: the stack of a large photo is the biggest array of the pipeline
    return out


# -- stage 1 ------------------------------------------------------------------------------------


def _pad_reflect(
    x: np.ndarray, multiple: int, margin: int = 0
) -> tuple[np.ndarray, tuple[int, int]]:
    """Mirror-pads HWC `x` by `margin` on every side and then up to a multiple of `multiple`."""
    h, w = x.shape[:2]
    ph, pw = -(h + 2 * margin) % multiple, -(w + 2 * margin) % multiple
    pads = ((margin, margin + ph), (margin, margin + pw), (0, 0))
    mode = "reflect" if min(h, w) > max(p for pair in pads[:2] for p in pair) else "edge"
    return np.pad(x, pads, mode=mode), (h, w)


#: How the up-exposures are made: 'response' re-exposes the photo analytically with the camera
#: response the classifier recognises (DrTMO eq. 1; beats the paper's network on held-out scenes,
#: docs/results/drtmo); 'network' runs the UpExposureNet.
UP_METHODS = ("response", "network")


def estimate_response(pipe: Pipeline, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities over the bank (K,), the most probable curve (1024,)) for one HWC photo:
    the classifier's probabilities averaged over :func:`response.tiles_for_classification`."""
    net = pipe.response
    if net is None:
        raise bundle.WeightsError(f"{pipe.directory}: no 'response' network in the weights")
    tiles = response.tiles_for_classification(image)
    probs = np.asarray(net.apply(net.variables, jnp.asarray(tiles))).mean(0)
    return probs, np.asarray(net.variables["responses"]["curves"][int(np.argmax(probs))])


def up_brackets(pipe: Pipeline, images: np.ndarray, up_method: str = "response") -> np.ndarray:
    """(N, H, W, 3) whole images -> (N, 8, H, W, 3) up-exposures, each image on its own (the
    stage-1 evaluation's batch of bracket images; photos go through :func:`generate_stack`)."""
    images = np.asarray(images, np.float32)
    if up_method == "network":
        return np.asarray(pipe.up.apply(pipe.up.variables, jnp.asarray(images)))
    if up_method != "response":
        raise ValueError(f"up_method must be one of {UP_METHODS}, got {up_method!r}")
    steps = np.arange(1, pipe.up.module.num_exposures + 1)
    probs = np.stack([estimate_response(pipe, img)[0] for img in images])
    bank = pipe.response.variables["responses"]["curves"]
    return np.asarray(response.reexpose_with_responses(images, probs, bank, steps, TAU))


# One fused pass over the tile for all the up-exposures (NumPy would make several).
_reexpose = jax.jit(naive_bracket_baseline, static_argnums=2)


def generate_stack(
    pipe: Pipeline,
    image: np.ndarray,
    *,
    tile: int = STAGE1_TILE,
    overlap: int = 64,
    up_method: str | None = None,
    response_curve: np.ndarray | None = None,
) -> np.ndarray:
    """Returns the (17, H, W, 3) stack [d8..d1, input, u1..u8]: the DownExposureNet below the
    input, the up-exposures (``up_method``, see :data:`UP_METHODS`; default 'response' when the
    weights have a classifier or ``response_curve`` is given, else 'network') above it.

    ``response_curve``: the camera's (1024,) response when the user knows it; 'response' then
    re-exposes with it instead of the classifier's choice."""
    if up_method is None:
        has_curve = pipe.response is not None or response_curve is not None
        up_method = "response" if has_curve else "network"
    if up_method not in UP_METHODS:
        raise ValueError(f"up_method must be one of {UP_METHODS}, got {up_method!r}")
    n = pipe.up.module.num_exposures
    steps = np.arange(1, n + 1)
    curve = None
    if up_method == "response":
        if response_curve is None:
            response_curve = estimate_response(pipe, image)[1]
        curve = jnp.asarray(response_curve)
    multiple = 2**pipe.up.module.depth
    # Mirrored context around every tile: zero padding at a tile's border would otherwise show
    # as a bright or dark seam along the photo's edges (interior seams are blended away).
    m = STAGE1_MARGIN
    tiles = tuple(tile_length(n, tile, overlap, multiple=multiple, margin=m)
                  for n in image.shape[:2])

    def both(patch: np.ndarray) -> np.ndarray:
        padded, (h, w) = _pad_reflect(patch, multiple, m)
        x = jnp.asarray(padded[None])
        if curve is None:
            up = np.asarray(pipe.up.apply(pipe.up.variables, x))[0, :, m : m + h, m : m + w]
        else:  # pointwise, so tiling changes nothing
            up = np.asarray(_reexpose(jnp.asarray(patch), steps, TAU, curve))
        down = np.asarray(pipe.down.apply(pipe.down.variables, x))[0, :, m : m + h, m : m + w]
        return np.concatenate([down[::-1], patch[None], up], axis=0)

    stack = tiled_apply(both, image, tile=tiles, overlap=overlap, lead_shape=(2 * n + 1,))
    return grey(stack) if achromatic(image) else stack


#: Longest side the highlight head sees when its config has no ``working_size`` (the side of
#: its training views).
HIGHLIGHT_MAX_SIDE = 512


def run_highlight_head(
    pipe: Pipeline, image: np.ndarray, *, known_response: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """The highlight head on one photo (HWC, [0, 1]): (log ratio (H, W, 3), the camera response
    it estimates (1024,), or None for a head without a curve estimate or with
    ``known_response``)."""
    net = pipe.highlight
    if net is None:
        raise bundle.WeightsError(f"{pipe.directory}: no 'highlight' network in the weights")
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    # A larger photo is area-downscaled to the head's working size (the scale of its training
    # views) and the log ratio upsampled bilinearly: the ratio is smooth inside a highlight and
    # the region weight that bounds it is applied at full resolution. One call covers the whole
    # photo, so the head's global statistics (and its curve) are the photo's, not a tile's.
    side = int(net.entry["config"].get("working_size") or HIGHLIGHT_MAX_SIDE)
    f = min(1.0, side / max(h, w))
    small = image
    if f < 1.0:
        size = (max(1, round(w * f)), max(1, round(h * f)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    padded, (sh, sw) = _pad_reflect(small, net.module.multiple)
    out = net.apply(net.variables, highlight.input_features(jnp.asarray(padded[None]),
                                                            float(known_response)))
    r = np.asarray(out["log_ratio"])[0, :sh, :sw]
    if f < 1.0:
        r = cv2.resize(r, (w, h), interpolation=cv2.INTER_LINEAR)
    curve = None
    if "curve" in out and not known_response:
        curve = highlight.response_from_knots(np.asarray(out["curve"])[0])
    return r, curve


def estimate_clip_level(pipe: Pipeline, image: np.ndarray) -> float:
    """The clip-level scalar k of one HWC photo (:mod:`hdr_jax.models.cliplevel`)."""
    net = pipe.cliplevel
    if net is None:
        raise bundle.WeightsError(f"{pipe.directory}: no 'cliplevel' network in the weights")
    z = jnp.asarray(cliplevel.estimator_input(image))
    return float(np.asarray(net.apply(net.variables, z))[0])


def blind_clip_level(pipe: Pipeline, image: np.ndarray) -> float | None:
    """:func:`estimate_clip_level` of a photo of an unknown camera, or None when the weights
    have no estimate or the photo is :func:`degenerate`."""
    if pipe.cliplevel is None or degenerate(image):
        return None
    return estimate_clip_level(pipe, image)


def blind_linearisation(
    pipe: Pipeline, image: np.ndarray, clip_level: float | None = None
) -> tuple[np.ndarray, float]:
    """(curve, gain) of the bent linearisation of a photo of an unknown camera: inverse sRGB
    bent at the clip by the estimated clip level (:func:`cliplevel.warped_response`;
    ``clip_level`` when the caller has :func:`blind_clip_level` already) when the weights have
    the estimate and the photo is not :func:`degenerate`, else inverse sRGB (gain 1). The
    pipeline merges with :func:`blind_estimate`'s choice, of which this is one option."""
    k = blind_clip_level(pipe, image) if clip_level is None else clip_level
    if k is None:
        return crf_lib.srgb_crf(), 1.0
    return cliplevel.warped_response(image, k)


class BlindEstimate(NamedTuple):
    """How a photo of an unknown camera is linearised and lifted: the clip level the blind lift
    reads (None: 0), the curve and gain of the linearisation, and whether the curve is a whole
    camera response (lifted by the lift for a known response instead of the blind one)."""

    clip_level: float | None
    curve: np.ndarray
    gain: float
    whole_curve: bool = False


def blind_choice(pipe: Pipeline, image: np.ndarray, clip_level: float) -> int | None:
    """The option (:func:`blind_option`) the weights' curve choice picks for one HWC photo with
    clip level ``clip_level``, or None when the weights have no choice or the photo is
    :func:`degenerate`."""
    net = pipe.curvechoice
    if net is None or degenerate(image):
        return None
    cues = curvechoice.photo_cues(image, clip_level)
    return int(np.argmax(np.asarray(net.apply(net.variables, jnp.asarray(cues[None])))[0]))


def blind_option(pipe: Pipeline, image: np.ndarray, clip_level: float | None,
                 option: int) -> BlindEstimate:
    """Option ``option`` of :mod:`hdr_jax.models.curvechoice` for a photo with clip level
    ``clip_level``: 0 inverse sRGB, 1 the bent linearisation (:func:`blind_linearisation`),
    2 + j the weights' prototype j (a whole curve, gain 1)."""
    if option == 0 or clip_level is None:
        return BlindEstimate(None, crf_lib.srgb_crf(), 1.0)
    if option == 1:
        return BlindEstimate(clip_level, *blind_linearisation(pipe, image, clip_level))
    curves = pipe.curvechoice.variables["options"]["curves"]
    return BlindEstimate(None, np.asarray(curves[option - len(curvechoice.BENT)]), 1.0, True)


def blind_estimate(pipe: Pipeline, image: np.ndarray) -> BlindEstimate:
    """How a photo of an unknown camera is linearised: with the weights' curve choice the
    option it picks (:func:`blind_choice`), without one the bent linearisation
    (:func:`blind_clip_level`, :func:`blind_linearisation`)."""
    k = blind_clip_level(pipe, image)
    option = None if k is None else blind_choice(pipe, image, k)
    return blind_option(pipe, image, k, 1 if option is None else option)


def lift_clipped(pipe: Pipeline, hdr: np.ndarray, image: np.ndarray,
                 estimate: BlindEstimate) -> np.ndarray:
    """``hdr`` (the photo linearised or merged with ``estimate``'s curve, times its gain) with
    the clipped pixels lifted (:func:`level.lift` by :func:`estimate_lift`: the lift for a known
    response for a whole curve, else the blind lift at the estimate's clip level); a lift below
    0 lowers no clipped pixel below the clip code's linear value. Unchanged when the weights
    lack that lift or the photo is :func:`degenerate`."""
    if lift_network(pipe, estimate.whole_curve) is None or degenerate(image):
        return hdr
    clip = estimate.gain * float(crf_lib.apply_inverse_crf(estimate.curve,
                                                           np.float32(protocol.CLIP_LEVEL)))
    lift = estimate_lift(pipe, image, estimate.clip_level, known_response=estimate.whole_curve)
    return level.lift(hdr, image, lift, clip)


def lift_network(pipe: Pipeline, known_response: bool = False) -> Network | None:
    """The highlight lift for a photo linearised with its camera's own response
    (``level_known``) or with the blind linearisation (``level``); None if the weights lack it."""
    return pipe.level_known if known_response else pipe.level


def estimate_lift(pipe: Pipeline, image: np.ndarray, clip_level: float | None,
                  *, known_response: bool = False) -> float:
    """The log2 highlight lift of one HWC photo (:mod:`hdr_jax.models.level`) from its
    features with ``clip_level`` (:func:`blind_clip_level`; None counts as 0, inverse sRGB).
    ``known_response``: the lift fitted for photos linearised with their camera's own response
    (``level_known``) instead of the blind one (``level``)."""
    net = lift_network(pipe, known_response)
    if net is None:
        name = "level_known" if known_response else "level"
        raise bundle.WeightsError(f"{pipe.directory}: no {name!r} network in the weights")
    f = level.photo_features(image, 0.0 if clip_level is None else clip_level)
    return float(np.asarray(net.apply(net.variables, jnp.asarray(f[None])))[0])


def blind_linear(
    pipe: Pipeline, image: np.ndarray, clip_level: float | None = None
) -> np.ndarray:
    """A photo of an unknown camera linearised with :func:`blind_linearisation` (times its gain,
    so the midtones keep their inverse-sRGB values): the bent linearisation, which a highlight
    head trained on it fills on top of."""
    curve, gain = blind_linearisation(pipe, image, clip_level)
    return np.asarray(crf_lib.apply_inverse_crf(curve, image), np.float32) * np.float32(gain)


def photo_hdr(
    pipe: Pipeline,
    stack: np.ndarray,
    image: np.ndarray,
    method: str = "anchored",
    response_curve: np.ndarray | None = None,
    highlights: bool = True,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The HDR of one photo from its stack (:func:`_photo_hdr`) and the merge's kept range."""
    hdr, kept, _ = _photo_hdr(pipe, stack, image, method, response_curve, highlights)
    return hdr, kept


def _photo_hdr(
    pipe: Pipeline,
    stack: np.ndarray,
    image: np.ndarray,
    method: str,
    response_curve: np.ndarray | None,
    highlights: bool,
    blind: BlindEstimate | None = None,
) -> tuple[np.ndarray, tuple[int, int], tuple[np.ndarray, float]]:
    """(HDR, kept range, (curve, gain) the photo was linearised with). The HDR of one photo
    from its stack: :func:`merge_photo_stack`, or, with ``highlights``
    (the anchored merge, weights with a highlight head, a photo that is not
    :func:`degenerate`), the anchored merge linearised with ``response_curve`` (when the user
    gave it) or else the head's curve estimate (a head without one: inverse sRGB, or for a head
    trained on it (``linearisation`` 'bent' in its config) :func:`blind_linearisation`),
    combined with the head's radiance wherever the photo is near or at the clip level
    (:func:`highlight.expand`, :func:`highlight.combine`). Without a head, a photo of an
    unknown camera is merged with :func:`blind_estimate`'s curve (times its gain, so with the
    bent linearisation the input's midtones keep their inverse-sRGB values), one with a given
    response with that response, and, with ``highlights`` and the anchored merge, its clipped
    pixels are lifted (:func:`lift_clipped`). ``blind``: the :func:`blind_estimate` when the
    caller has it (of the full-resolution photo when ``image`` is a shrunk copy of it)."""
    if not (highlights and method == "anchored" and pipe.highlight is not None
            and not degenerate(image)):
        if response_curve is not None:
            est = BlindEstimate(None, np.asarray(response_curve), 1.0, True)
        else:
            est = blind_estimate(pipe, image) if blind is None else blind
        hdr, kept = merge_photo_stack(stack, image, method, est.curve)
        hdr = hdr * np.float32(est.gain)
        if highlights and method == "anchored":
            hdr = lift_clipped(pipe, hdr, image, est)
        return hdr, kept, (np.asarray(est.curve), est.gain)
    image = np.asarray(image, np.float32)
    known = response_curve is not None
    log_ratio, estimate = run_highlight_head(pipe, image, known_response=known)
    gain = 1.0
    if known:
        curve = np.asarray(response_curve)
    elif estimate is not None:
        curve = estimate
    elif pipe.highlight.entry["config"].get("linearisation", "srgb") == "bent":
        # A head trained on the bent linearisation fills on top of that linearisation (of the
        # full-resolution photo's clip level when the caller has it).
        k = blind.clip_level if blind is not None and blind.clip_level is not None else None
        curve, gain = blind_linearisation(pipe, image, k)
    else:
        curve = crf_lib.srgb_crf()
    hdr, kept = merge_photo_stack(stack, image, method, curve)
    hdr = hdr * np.float32(gain)
    linear = crf_lib.apply_inverse_crf(curve, image) * np.float32(gain)
    photo = jnp.asarray(image)
    filled = highlight.expand(jnp.asarray(linear), photo, jnp.asarray(log_ratio))
    return (np.asarray(highlight.combine(filled, jnp.asarray(hdr), photo), np.float32), kept,
            (np.asarray(curve), gain))


#: Default short side (px) above which stage 1 makes a photo's HDR from a copy of the photo
#: shrunk to it (:func:`working_scale_hdr`); None: always at full resolution. The networks were
#: trained on views of a few hundred pixels and their receptive field is fixed in pixels, so a
#: working scale near that size fills large clipped regions from the context they were trained
#: with, and costs stage 1 a fraction of the time on a large photo; at full resolution the fill
#: sees the photo's finer detail. The default is full resolution (the held-out comparison is in
#: docs/results/working_scale); ``hdr-jax reconstruct --hdr-side`` picks a working scale.
HDR_SIDE: int | None = None


def shrinks(image: np.ndarray, hdr_side: int | None = HDR_SIDE) -> bool:
    """Whether a photo's HDR is made at the working scale (:func:`working_scale_hdr`)."""
    return hdr_side is not None and min(np.shape(image)[:2]) > hdr_side


def stage1_hdr(
    pipe: Pipeline,
    image: np.ndarray,
    stack: np.ndarray | None,
    *,
    method: str = "anchored",
    response_curve: np.ndarray | None = None,
    highlights: bool = True,
    hdr_side: int | None = HDR_SIDE,
    up_method: str | None = None,
    tile: int = STAGE1_TILE,
) -> tuple[np.ndarray, tuple[int, int]]:
    """(HDR, kept range) of a photo: :func:`photo_hdr` of its full-resolution ``stack``, or, when
    its short side is above ``hdr_side`` (:func:`shrinks`), :func:`working_scale_hdr` (which
    makes its own stack; ``stack`` may then be None)."""
    if shrinks(image, hdr_side):
        return working_scale_hdr(pipe, image, hdr_side, method=method,
                                 response_curve=response_curve, highlights=highlights,
                                 up_method=up_method, tile=tile)
    if stack is None:
        raise ValueError("stage1_hdr: a photo at or below the working side needs its stack")
    return photo_hdr(pipe, stack, image, method, response_curve, highlights)


def working_scale_hdr(
    pipe: Pipeline,
    image: np.ndarray,
    side: int,
    *,
    method: str = "anchored",
    response_curve: np.ndarray | None = None,
    highlights: bool = True,
    up_method: str | None = None,
    tile: int = STAGE1_TILE,
) -> tuple[np.ndarray, tuple[int, int]]:
    """(HDR, kept range) of a photo whose short side is above ``side``: stage 1 and the merge
    (:func:`generate_stack`, :func:`photo_hdr`) run on the photo area-shrunk to a ``side``-px
    short side; the ratio of that HDR to the shrunk photo's linearisation, upsampled (bilinear,
    in the log domain), then raises the full-resolution photo's clipped pixels (any channel at
    :data:`protocol.CLIP_LEVEL`; the merge keeps every other pixel at the linearised input, and
    the lift touches only clipped ones), so every measured pixel keeps its full-resolution
    value and the fill is the one the networks make at the scale they were trained at."""
    h, w = image.shape[:2]
    s = side / min(h, w)
    small = cv2.resize(np.asarray(image, np.float32), (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    stack = generate_stack(pipe, small, tile=tile, up_method=up_method,
                           response_curve=response_curve)
    # The camera is estimated from the whole photo, as without a working scale: the measured
    # pixels then keep the values they have at full resolution, whatever the side.
    blind = None if response_curve is not None else blind_estimate(pipe, image)
    hdr, kept, (curve, gain) = _photo_hdr(pipe, stack, small, method, response_curve, highlights,
                                          blind)
    lin_small = np.asarray(crf_lib.apply_inverse_crf(curve, small), np.float32) * np.float32(gain)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where((lin_small > 0) & (hdr > 0), np.log(hdr / lin_small), 0.0)
    log_ratio = cv2.resize(log_ratio.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    linear = np.asarray(crf_lib.apply_inverse_crf(curve, image), np.float32) * np.float32(gain)
    clipped = protocol.clipped_mask(image)[..., None]
    return np.where(clipped, linear * np.exp(log_ratio), linear).astype(np.float32), kept


# -- stage 2 ------------------------------------------------------------------------------------


def fuse_pair(
    net: Network,
    under: np.ndarray,
    over: np.ndarray,
    *,
    tile: int = STAGE2_TILE,
    overlap: int = 16,
) -> np.ndarray:
    """CF-Net on an under/over pair of equal size (HWC, [0,1]); returns the fused (sH, sW, 3)."""
    if under.shape != over.shape:
        raise ValueError(f"under and over images differ in size: {under.shape} vs {over.shape}")
    pair = np.concatenate([under, over], axis=-1)

    def run(patch: np.ndarray) -> np.ndarray:
        u, o = jnp.asarray(patch[None, ..., :3]), jnp.asarray(patch[None, ..., 3:])
        return np.asarray(net.apply(net.variables, o, u))[0]

    tiles = tuple(tile_length(n, tile, overlap) for n in pair.shape[:2])
    fused = tiled_apply(run, pair, tile=tiles, overlap=overlap, out_scale=net.module.scale)
    return grey(fused) if achromatic(under) and achromatic(over) else fused


def achromatic(image: np.ndarray) -> bool:
    """Whether every pixel of ``image`` (..., 3) has three equal channels (a black-and-white
    photo)."""
    return bool(np.all(image[..., :1] == image[..., 1:]))


def grey(image: np.ndarray) -> np.ndarray:
    """``image`` (..., 3) with every channel set to its Rec. 709 luma: the networks are not
    symmetric in the channels, so a black-and-white photo's output gets a faint tint otherwise.
    The luma is kept within each pixel's channels, which float rounding would leave by an ulp:
    a pixel that is grey already (the photo itself, a clipped white) stays exactly as it is."""
    luma = np.clip(crf_lib.luminance(image), image.min(axis=-1), image.max(axis=-1))
    return np.repeat(luma[..., None], 3, axis=-1)


def pick_pair(stack: np.ndarray, kept: tuple[int, int]) -> tuple[int, int]:
    """Stack indices of the stage-2 under/over pair, within the monotone range kept by the merge."""
    centre = (len(stack) - 1) // 2
    lo, hi = kept
    return max(lo, centre + UNDER_STEP), min(hi, centre + OVER_STEP)


# -- preview ------------------------------------------------------------------------------------


def tonemap_preview(
    hdr: np.ndarray, key: float = 0.18, white_percentile: float = 99.5
) -> np.ndarray:
    """Global photographic tone mapping (Reinhard et al. 2002, eq. 4 with L_white) on luminance,
    colour ratios kept, then the sRGB curve: a display-ready view of a linear HDR image."""
    hdr = np.maximum(np.asarray(hdr, np.float32), 0.0)
    lum = 0.2126 * hdr[..., 0] + 0.7152 * hdr[..., 1] + 0.0722 * hdr[..., 2]
    log_mean = float(np.exp(np.mean(np.log(lum + 1e-6))))
    scaled = key / max(log_mean, 1e-8) * lum
    # L_white below 1 would map it to display white: a flat or low-contrast image has no
    # highlight to burn out, so the curve is never steeper than the simple operator L / (1 + L).
    white = max(float(np.percentile(scaled, white_percentile)), 1.0)
    mapped = scaled * (1.0 + scaled / white**2) / (1.0 + scaled)
    ratio = mapped / np.maximum(lum, 1e-8)
    return crf_lib.apply_crf(crf_lib.srgb_crf(), np.clip(hdr * ratio[..., None], 0.0, 1.0))


# -- the whole thing ----------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    stack: np.ndarray | None  # (17, H, W, 3); None when reconstruct was told not to make it
    kept: tuple[int, int]  # index range used by the merge
    hdr: np.ndarray  # (H, W, 3) linear radiance, input mid-grey preserved
    pair: tuple[int, int] | None  # stack indices fed to stage 2 (None without a stack)
    fused: np.ndarray | None  # (sH, sW, 3)
    preview: np.ndarray  # (H, W, 3) display-referred
    timings: dict  # stage1_s (full-resolution stack), merge_s (the HDR; with a working scale
    # also stage 1 on the shrunk copy), stage2_s


def reconstruct(
    pipe: Pipeline,
    image: np.ndarray,
    *,
    scale: int | None = 2,
    merge_method: str = "anchored",
    stage1_tile: int = STAGE1_TILE,
    stage2_tile: int = STAGE2_TILE,
    up_method: str | None = None,
    response_curve: np.ndarray | None = None,
    highlights: bool = True,
    hdr_side: int | None = HDR_SIDE,
    full_stack: bool = False,
) -> Result:
    """Photo (HWC, [0,1]) -> stack, HDR, fused x`scale` image (None: skip stage 2), preview.

    ``response_curve``: the camera's (1024,) response (:func:`crf.parse_response`), when known:
    the up-exposures and the merge's linearisation use it; otherwise the up-exposures use the
    recognised response and the merge the sRGB curve. ``highlights``: the highlight head fills
    what the photo clipped, or the highlight lift raises it (:func:`photo_hdr`: anchored merge,
    weights with a head or a lift, a photo that is not :func:`degenerate`); otherwise the
    merge's levels stay. ``hdr_side``: a photo with a longer short side gets its HDR from
    :func:`working_scale_hdr` at that side (None: at full resolution; :func:`stage1_hdr`).
    ``full_stack``: generate the full-resolution stack (``Result.stack``) for such a photo even
    without stage 2 (which needs it); otherwise ``Result.stack`` is then None."""
    t = {}
    t0 = time.perf_counter()
    shrink = shrinks(image, hdr_side)
    stack = None
    if not shrink or full_stack or scale:
        stack = generate_stack(pipe, image, tile=stage1_tile, up_method=up_method,
                               response_curve=response_curve)
    t["stage1_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # For a shrunk photo this includes stage 1 at the working scale.
    hdr, kept = stage1_hdr(pipe, image, stack, method=merge_method, response_curve=response_curve,
                           highlights=highlights, hdr_side=hdr_side, up_method=up_method,
                           tile=stage1_tile)
    t["merge_s"] = time.perf_counter() - t0
    pair = None
    if stack is not None:
        # The stage-2 pair comes from the full-resolution stack: its own monotone range.
        own = merge.select_monotone(stack, (len(stack) - 1) // 2) if shrink else kept
        pair = pick_pair(stack, own)
    fused = None
    if scale:
        t0 = time.perf_counter()
        fused = fuse_pair(pipe.cfnet(scale), stack[pair[0]], stack[pair[1]], tile=stage2_tile)
        if achromatic(image):
            fused = grey(fused)
        t["stage2_s"] = time.perf_counter() - t0
    preview = tonemap_preview(hdr)
    return Result(stack, kept, hdr, pair, fused, preview, t)


#: A photo whose every sample is within this of 0 (or of 1) records no scene detail at all.
FLAT_TOLERANCE = 1.5 / 255


def degenerate(image: np.ndarray) -> str | None:
    """'all black' or 'all clipped' for a photo with no sample off the bottom (top) of its
    range, else None. Such a photo says nothing about the scene beyond one bound on it."""
    image = np.asarray(image)
    if float(image.max()) <= FLAT_TOLERANCE:
        return "all black"
    if float(image.min()) >= 1.0 - FLAT_TOLERANCE:
        return "all clipped"
    return None


def merge_photo_stack(
    stack: np.ndarray,
    image: np.ndarray,
    method: str = "anchored",
    response_curve: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The HDR of one photo from its (17, H, W, 3) stack: `merge.merge_stack`, with Debevec's
    arbitrary gain matched to the input, and for a :func:`degenerate` photo its own linearised
    values (0 for black, the sensor's ceiling for clipped), since any merged detail, colour or
    gain there would be invented by the networks. Linearised with ``response_curve`` (sRGB
    when None)."""
    curve = crf_lib.srgb_crf() if response_curve is None else np.asarray(response_curve)
    hdr, kept = merge.merge_stack(stack, method=method, tau=TAU, curve=curve)
    if degenerate(image):
        return np.asarray(crf_lib.apply_inverse_crf(curve, image), np.float32), kept
    if method == "debevec":
        hdr = _match_input_scale(hdr, image, curve)
    return hdr, kept


def _match_input_scale(hdr: np.ndarray, image: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Scales an HDR of arbitrary gain so well-exposed input pixels keep their linear value."""
    lin = crf_lib.apply_inverse_crf(curve, image)
    ok = (image > 0.05) & (image < 0.95) & (hdr > 0)
    if not np.any(ok):
        return hdr
    return hdr * float(np.exp(np.median(np.log(lin[ok]) - np.log(hdr[ok]))))
