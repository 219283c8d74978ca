"""Camera simulation for stage-1 training data (SPEC section 2): CRFs, exposure brackets and
perspective crops of HDR panoramas."""

from hdr_jax.camera.crf import (
    EMoR,
    GRID,
    apply_crf,
    apply_inverse_crf,
    default_training_crfs,
    gamma_crf,
    invert_crf,
    is_valid_crf,
    load_dorf,
    load_emor,
    parametric_crfs,
    s_curve_crf,
    sample_emor_crfs,
    select_representative_crfs,
    smooth_crf,
    srgb_crf,
)
from hdr_jax.camera.exposure import (
    expose,
    exposure_times,
    normalise_radiance,
    quantize_8bit,
    simulate_bracket,
    simulate_bracket_jax,
)
from hdr_jax.camera.panorama import perspective_crop, random_views, view_rays

__all__ = [
    "EMoR", "GRID", "apply_crf", "apply_inverse_crf", "default_training_crfs", "gamma_crf",
    "invert_crf", "is_valid_crf", "load_dorf", "load_emor", "parametric_crfs", "s_curve_crf",
    "sample_emor_crfs", "select_representative_crfs", "smooth_crf", "srgb_crf",
    "expose", "exposure_times", "normalise_radiance", "quantize_8bit", "simulate_bracket",
    "simulate_bracket_jax", "perspective_crop", "random_views", "view_rays",
]
