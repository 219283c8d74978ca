"""Times `hdr_jax.pipeline.reconstruct` on the bundled demo photo resized to N megapixels.

    python benchmarks/pipeline_timing.py --megapixels 1 --scale 2     # prints one JSON line
    python benchmarks/pipeline_timing.py --megapixels 12 --scale 0 --hdr-side 512
    PYTHONPATH=/path/to/other/checkout python benchmarks/pipeline_timing.py ...

It uses only the pipeline's oldest public calls (`io.read_ldr`, `Pipeline.load`, `reconstruct`
and its per-stage `timings`), so the benchmark times another checkout of the project (an older
commit in a `git worktree`) with this same script: whichever `hdr_jax` is first on the path is
timed, and the JSON says which. The first call includes compilation, as one `hdr-jax
reconstruct` does; run as a script, the imports are counted too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

_T_START = time.perf_counter()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from hdr_jax import io as hdr_io  # noqa: E402
from hdr_jax import pipeline  # noqa: E402

_IMPORT_S = time.perf_counter() - _T_START


def time_pipeline(megapixels: float, scale: int = 2, reps: int = 0,
                  hdr_side: int | None = None) -> dict:
    """Per-stage seconds of the first `reconstruct` call (x`scale`; 0: the HDR and preview
    only) and of `reps` more calls on the same photo (compiled), plus the weights' loading.
    ``hdr_side``: the HDR at that working side (``hdr-jax reconstruct --hdr-side``; only passed
    when given, so checkouts from before it can still be timed)."""
    photo = hdr_io.read_ldr(os.path.join(os.path.dirname(pipeline.__file__), "assets", "demo.jpg"))
    h0, w0 = photo.shape[:2]
    f = math.sqrt(megapixels * 1e6 / (h0 * w0))
    h, w = max(32, round(h0 * f)), max(32, round(w0 * f))
    image = np.clip(np.asarray(jax.image.resize(photo, (h, w, 3), "cubic")), 0.0, 1.0)
    t0 = time.perf_counter()
    pipe = pipeline.Pipeline.load()
    if scale:
        pipe.cfnet(scale)
    load_s = time.perf_counter() - t0
    runs = []
    for _ in range(1 + reps):
        t0 = time.perf_counter()
        extra = {} if hdr_side is None else {"hdr_side": hdr_side}
        res = pipeline.reconstruct(pipe, image, scale=scale or None, **extra)
        total = time.perf_counter() - t0
        stages = {k: round(v, 3) for k, v in res.timings.items()}
        stages["other_s"] = round(total - sum(res.timings.values()), 3)  # preview, glue
        runs.append({"total_s": total, **stages})
    return {
        "code": os.path.dirname(os.path.dirname(os.path.abspath(pipeline.__file__))),
        "width": w,
        "height": h,
        "megapixels": h * w / 1e6,
        "scale": scale,
        "hdr_side": hdr_side,
        "load_s": load_s,
        "first": runs[0],
        "warm": runs[1:],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--scale", type=int, default=2, help="stage-2 factor; 0: HDR only")
    parser.add_argument("--reps", type=int, default=0, help="more (compiled) calls to time")
    parser.add_argument("--hdr-side", type=int, default=None,
                        help="make the HDR at this working side (default: full resolution)")
    args = parser.parse_args(argv)
    print(json.dumps({**time_pipeline(args.megapixels, args.scale, args.reps, args.hdr_side),
                      "import_s": _IMPORT_S}), flush=True)


if __name__ == "__main__":
    main()
