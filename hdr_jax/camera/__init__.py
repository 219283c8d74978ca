"""Camera model Z = f(E dt): response curves (sRGB, parametric, EMoR, DoRF), exposure brackets and
re-exposure, and perspective crops of HDR panoramas."""

from hdr_jax.camera.crf import (
    EMoR,
    GRID,
    apply_crf,
    apply_inverse_crf,
    default_training_crfs,
    gamma_crf,
    invert_crf,
    luminance,
    is_valid_crf,
    load_dorf,
    load_emor,
    parametric_crfs,
    s_curve_crf,
    sample_emor_crfs,
    select_representative_crfs,
    smooth_crf,
    srgb_crf,
    srgb_decode,
    srgb_encode,
)
from hdr_jax.camera.exposure import (
    TAU,
    expose,
    exposure_times,
    jpeg_roundtrip,
    naive_bracket_baseline,
    normalise_radiance,
    quantize_8bit,
    simulate_bracket,
    simulate_bracket_jax,
)
from hdr_jax.camera.panorama import is_panorama, perspective_crop, random_views, view_rays

__all__ = [
    "EMoR", "GRID", "apply_crf", "apply_inverse_crf", "default_training_crfs", "gamma_crf",
    "invert_crf", "is_valid_crf", "load_dorf", "load_emor", "parametric_crfs", "s_curve_crf",
    "luminance", "sample_emor_crfs", "select_representative_crfs", "smooth_crf", "srgb_crf",
    "srgb_decode", "srgb_encode", "TAU", "expose", "exposure_times", "jpeg_roundtrip",
    "naive_bracket_baseline", "normalise_radiance", "quantize_8bit", "simulate_bracket",
    "simulate_bracket_jax", "is_panorama", "perspective_crop", "random_views", "view_rays",
]
