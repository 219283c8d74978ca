"""CF-Net (stage 2) training config.

Usage: --config experiments/configs/cfnet.py[:VARIANT], VARIANT a comma-separated list of
    x2 | x4            scale (default x2)
    paper              paper widths (64 features, 6 groups, T=3) — the default model
    cpu                narrower model that trains on a laptop CPU (32 features, 3 groups, T=3)
    tiny               test-sized model and data (seconds per step)
    sice               train on a SICE folder (data.manual_dir) instead of synthetic pairs
    colour             the colour fine-tuning of the bundled weights: 300 steps with the chroma
                       loss term, from config.init_weights (set it to the first stage's weights)
An unknown option is an error.
"""

import ml_collections

from experiments.configs import common

SCALES = ("x2", "x4")
VARIANTS = SCALES + ("paper", "cpu", "tiny", "sice", "colour")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    opts = common.parse_variant(variant, VARIANTS, name="cfnet")
    scale = common.one_of(opts, SCALES, name="cfnet", default="x2")
    if {"paper", "cpu"} <= opts:
        raise ValueError("cfnet config takes one of ['cpu', 'paper'], got both")
    config = ml_collections.ConfigDict()
    config.task = "cfnet"
    config.seed = 0
    config.init_weights = ""  # a weights directory to fine-tune from (hdr_jax/bundle.py)
    config.memory_budget = ""  # e.g. "4GiB": pick remat/bf16 to fit (hdr_jax/memory.py)

    config.model = ml_collections.ConfigDict(
        dict(
            features=64,
            num_groups=6,
            num_steps=3,
            scale=int(scale[1:]),
            shared_step_weights=False,
            coupled=True,
            remat_policy="none",
            dtype="float32",
            # 'auto' (hdr_jax/models/layers.py): lax.conv for the 3x3 and 3-tap convs, im2col for
            # the 2-tap phase convs of x4 and 1x1s: as fast as im2col on XLA:CPU with half the
            # memory (docs/benchmarks.md); 'xla' is what --memory_budget picks first
            conv_impl="auto",
            split_concat=False,  # dense 1x1 transitions without concat copies (memory setting)
            unroll_steps=None,  # None: rolled loop exactly when remat is on
            # 35 % of the fused chromaticity from the SRB images' exposure-weighted one
            # (hdr_jax.models.cfnet.restore_chroma; chosen on training-scene pairs); 0 = paper.
            chroma_blend=0.35,
        )
    )

    config.data = ml_collections.ConfigDict(
        dict(
            builder="sice" if "sice" in opts else "synthetic_pairs",
            builder_config=None,  # defaults to the scale's config
            data_dir="workdirs/tfds",  # where tfds writes the array_record files
            manual_dir="../shared/data/hdri",
            emor_dir="",
            patch_size=64,
            # LR centre crop for validation: an x4 LR test image has 64 px per side.
            eval_patch_size=64 if scale == "x4" else 128,
            num_eval=0,
        )
    )  # 0 = whole evaluation split

    # mef_weight: optional (1 - MEF-SSIM) term against the HR pair; colour_weight: optional
    # chroma term against the label (hdr_jax.losses.chroma_loss); 0 = the paper's eq. 19.
    config.loss = ml_collections.ConfigDict(
        dict(srb_weight=1.0, cfb_weight=1.0, mef_weight=0.0, colour_weight=0.0)
    )
    config.optimizer = common.adam(1e-4, decay_every=0, decay_rate=0.5, mu_dtype="", nu_dtype="")

    # Global batch, split over every device of every process (hdr_jax/training/parallel.py).
    config.batch_size = 4
    # Train state over the devices: "replicated", or split ZeRO/FSDP-style: "optimizer" (the
    # optimiser state) or "fsdp" (parameters and optimiser state).
    config.state_sharding = "replicated"
    # Gradient accumulation: the batch runs as this many equal slices in a rolled loop (same
    # gradient, activation memory of one slice; see hdr_jax.memory for when it is chosen).
    config.microbatches = 1
    common.set_schedule(config, num_train_steps=20_000, log_every=50, eval_every=1000,
                        checkpoint_every=500)
    config.max_checkpoints = 3

    if "cpu" in opts:
        # The recipe of the bundled weights (README "Bundled weights"): 1000 steps of batch 8,
        # trained with this config on a lent GPU; about 1 hour per network on 2 CPU cores.
        config.model.features = 32
        config.model.num_groups = 3
        config.optimizer.learning_rate = 2e-4
        config.batch_size = 8
        config.data.patch_size = 32
        config.data.num_eval = 48
        # MEF-SSIM term (see hdr_jax.losses.cfnet_loss): the synthetic ground truth alone scores
        # below Mertens fusion of the HR pair on MEF-SSIM (docs/results).
        config.loss.mef_weight = 1.0
        common.set_schedule(config, num_train_steps=1000, log_every=50, eval_every=500,
                            checkpoint_every=100)
    if "colour" in opts:
        # Second stage of the bundled recipe: the chroma term (hdr_jax.losses.chroma_loss)
        # against the label, on top of the cpu recipe's weights (config.init_weights).
        config.loss.colour_weight = 4.0
        common.set_schedule(config, num_train_steps=300, log_every=50, eval_every=300,
                            checkpoint_every=100)
    if "tiny" in opts:
        config.model.update(features=8, num_groups=2, num_steps=2)
        config.data.update(builder_config="tiny", patch_size=8, eval_patch_size=16, num_eval=2)
        common.set_tiny_schedule(config, batch_size=2)
    return config
