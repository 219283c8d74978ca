"""Renders the bundled demo photo: an 8-bit sRGB JPEG view of a held-out CC0 HDR panorama,
exposed so that 5% of its pixels clip (as a real photo of a high-contrast scene would).

  python -m experiments.make_demo --hdr ../shared/data/hdri/blender_sunset.exr \
      --out hdr_jax/assets/demo.jpg
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from hdr_jax import io as hdr_io
from hdr_jax.camera import crf, panorama

_HDR = flags.DEFINE_string("hdr", "../shared/data/hdri/blender_sunset.exr", "Panorama (held out).")
_OUT = flags.DEFINE_string("out", "hdr_jax/assets/demo.jpg", "Output JPEG.")
_VIEW = flags.DEFINE_list("view", ["75", "8", "60"], "fov, elevation, azimuth in degrees.")
_SIZE = flags.DEFINE_list("size", ["384", "512"], "height, width.")
_CLIP = flags.DEFINE_float("clip_fraction", 0.05, "Fraction of pixels with a clipped channel.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output.")


def expose_for_clipping(radiance: np.ndarray, fraction: float) -> float:
    """Exposure gain g such that `fraction` of pixels have max(g * E) >= 1 (the quantile of the
    per-pixel max channel)."""
    return 1.0 / float(np.quantile(radiance.max(axis=-1), 1.0 - fraction))


def main(argv):
    del argv
    fov, elev, azim = (float(v) for v in _VIEW.value)
    h, w = (int(v) for v in _SIZE.value)
    view = panorama.perspective_crop(hdr_io.read_hdr(_HDR.value), fov, elev, azim, (h, w))
    gain = expose_for_clipping(view, _CLIP.value)
    image = crf.apply_crf(crf.srgb_crf(), np.clip(view * gain, 0.0, 1.0))
    hdr_io.write_ldr(_OUT.value, image, overwrite=_OVERWRITE.value, quality=92)
    clipped = float(np.mean(np.round(image * 255).max(-1) >= 255))
    print(f"{_OUT.value}: {w}x{h}, exposure gain {gain:.3g}, {100 * clipped:.1f}% pixels clipped")


if __name__ == "__main__":
    app.run(main)
