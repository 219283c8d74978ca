"""Training losses of both stages (pure functions of arrays)."""

from __future__ import annotations

import jax.numpy as jnp

from hdr_jax import metrics


def masked_l1(
    pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray, denominator: str = "all"
) -> jnp.ndarray:
    """DrTMO eq. 3/4: L1 between the masked prediction and the zero-padded target stack.

    pred, target: (B, N, H, W, C) NDHWC brackets; mask: (B, N), 1 where the bracket has an image.
    denominator='all' averages over the whole tensor as the public code does (padded slots stay in
    the denominator, so inputs near the end of the bracket weigh less); 'valid' averages over the
    valid slots only.
    """
    m = mask.astype(pred.dtype)[:, :, None, None, None]
    err = jnp.abs(pred * m - target * m)
    if denominator == "all":
        return jnp.mean(err)
    if denominator == "valid":
        per_slot = pred[0, 0].size
        return jnp.sum(err) / jnp.maximum(jnp.sum(m) * per_slot, 1.0)
    raise ValueError(f"denominator must be 'all' or 'valid', got {denominator!r}")


def masked_log_mse(
    pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray, eps: float = 1e-10
) -> jnp.ndarray:
    """Minus the mean PSNR (dB, peak 1) of the valid predicted exposures: 10 log10(MSE + eps)
    per (example, slot), averaged over the slots where ``mask`` is 1.

    Not in the paper (its loss is eq. 3/4, :func:`masked_l1`): this is the stage-1 evaluation
    metric itself, a mean of per-image PSNRs. It weighs each image's squared error by 1 / MSE, so
    images that an exposure change reproduces almost exactly (the naive bracket of an sRGB
    input) dominate, where L1 lets corrections learned for other responses degrade them.
    """
    m = mask.astype(jnp.float32)
    mse = jnp.mean(
        jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=(2, 3, 4)
    )
    per_slot = 10.0 * jnp.log10(mse + eps)
    return jnp.sum(per_slot * m) / jnp.maximum(jnp.sum(m), 1.0)


DRTMO_LOSSES = ("l1", "log_mse")


def drtmo_loss(
    pred: jnp.ndarray,
    target: jnp.ndarray,
    mask: jnp.ndarray,
    *,
    kind: str = "l1",
    denominator: str = "all",
) -> jnp.ndarray:
    """The stage-1 training loss selected by ``config.loss.kind``: 'l1' (eq. 3/4) or 'log_mse'."""
    if kind == "l1":
        return masked_l1(pred, target, mask, denominator)
    if kind == "log_mse":
        return masked_log_mse(pred, target, mask)
    raise ValueError(f"loss kind must be one of {DRTMO_LOSSES}, got {kind!r}")


def highlight_loss(
    pred: jnp.ndarray,
    reference: jnp.ndarray,
    clipped: jnp.ndarray,
    region: jnp.ndarray,
    *,
    overall_weight: float = 1.0,
    eps: float = 1e-5,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The HDR protocol's PU21 error as a loss (Mantiuk and Azimi 2021; not in DrTMO). Per image,
    one gain fitted to ``pred`` on the pixels not ``clipped`` (median log luminance ratio, its
    subgradient flowing to the median pixel), then the mean squared difference of PU21-encoded
    channels (over 256^2) on the pixels of ``clipped`` or ``region`` (where a highlight was
    filled), and on all pixels; each as 10 log10(MSE + eps), minus the per-image PSNR the
    evaluation averages. Loss: the first plus ``overall_weight`` times the second, averaged
    over the images.

    pred, reference: (B, H, W, 3) linear, the reference in cd/m^2; clipped, region: (B, H, W).
    Returns (loss, {'gain': (B,), 'clipped': (B,), 'overall': (B,)}), the last two in dB of
    minus PSNR.
    """
    gain = metrics.align_gain(pred, reference, clipped < 0.5)
    d2 = jnp.square(metrics.pu21_encode(pred * gain[:, None, None, None])
                    - metrics.pu21_encode(reference)) / 256.0**2
    m = jnp.maximum(clipped, region).astype(pred.dtype)[..., None]
    mse = jnp.sum(d2 * m, axis=(1, 2, 3)) / jnp.maximum(3.0 * jnp.sum(m, axis=(1, 2, 3)), 1.0)
    on_clipped = 10.0 * jnp.log10(mse + eps)
    overall = 10.0 * jnp.log10(jnp.mean(d2, axis=(1, 2, 3)) + eps)
    loss = jnp.mean(on_clipped + overall_weight * overall)
    return loss, {"gain": gain, "clipped": on_clipped, "overall": overall}


def ssim_loss(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """1 - SSIM with CF-Net's settings (eq. 19, public code): window 7, sigma 1.5, K=(0.01, 0.03),
    data range 255 on images in [0, 255], valid filtering. Mean over the batch."""
    s = metrics.ssim(
        pred * 255.0,
        target * 255.0,
        data_range=255.0,
        window=7,
        sigma=1.5,
        k1=0.01,
        k2=0.03,
        padding="VALID",
    )
    return 1.0 - jnp.mean(s)


def chroma_loss(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Mean L1 distance of the CIE a*, b* chroma coordinates of two sRGB images, / 100 (a*, b*
    span about +-100): a colour term that, unlike SSIM on each channel or the grey MEF-SSIM,
    penalises a fused image that keeps the structure but loses the saturation. Mean over the
    batch; finite gradients at black, white and grey pixels."""
    ab_pred = metrics.srgb_to_lab(jnp.clip(pred, 0.0, 1.0))[..., 1:]
    ab_target = metrics.srgb_to_lab(jnp.clip(target, 0.0, 1.0))[..., 1:]
    return jnp.mean(jnp.abs(ab_pred - ab_target)) / 100.0


def cfnet_loss(
    outputs: dict,
    batch: dict,
    *,
    srb_weight: float = 1.0,
    cfb_weight: float = 1.0,
    mef_weight: float = 0.0,
    colour_weight: float = 0.0,
) -> tuple[jnp.ndarray, dict]:
    """CF-Net eq. 19: (1 - SSIM) of the SRB outputs against the HR over/under images plus
    (1 - SSIM) of every CFB output of both branches against the fused ground truth.

    ``mef_weight`` > 0 adds (1 - MEF-SSIM) of every CFB output against the HR pair (under, over),
    not in the paper (MEF-SSIM as a training loss follows Ma et al., MEF-Net, TIP 2019): a fused
    ground truth rendered from the true HDR is itself no MEF-SSIM optimum of the two extremes.
    ``colour_weight`` > 0 adds :func:`chroma_loss` of every CFB output against the fused ground
    truth (not in the paper either): the grey MEF-SSIM term cannot see colour.
    """
    terms = {
        "srb_over": ssim_loss(outputs["srb_over"], batch["over_hr"]),
        "srb_under": ssim_loss(outputs["srb_under"], batch["under_hr"]),
    }
    num_steps = outputs["steps_over"].shape[0]
    cfb = 0.0
    mef = 0.0
    colour = 0.0
    pair = jnp.stack([batch["under_hr"], batch["over_hr"]], axis=1)  # (B, 2, H, W, 3)
    for t in range(num_steps):
        for out in (outputs["steps_over"][t], outputs["steps_under"][t]):
            cfb = cfb + ssim_loss(out, batch["label_hr"])
            if mef_weight:
                mef = mef + 1.0 - jnp.mean(metrics.mef_ssim_filtered(out, pair))
            if colour_weight:
                colour = colour + chroma_loss(out, batch["label_hr"])
    terms["cfb"] = cfb
    total = srb_weight * (terms["srb_over"] + terms["srb_under"]) + cfb_weight * cfb
    if mef_weight:
        terms["mef"] = mef
        total = total + mef_weight * mef
    if colour_weight:
        terms["colour"] = colour
        total = total + colour_weight * colour
    return total, terms
