"""Highlight-head training config (stage 1; hdr_jax/models/highlight.py).

Usage: --config experiments/configs/highlight.py[:VARIANT], VARIANT
    (empty)            the measured recipe (docs/results/highlight; not in the bundled weights):
                       128-px views of the training panoramas rendered on the fly through random
                       responses (EMoR ones too with --config.data.emor_dir), highlights only
    curve              the head also estimates the inverse response (the linearisation)
    bent               the head fills on top of inverse sRGB bent by the clip-level estimate
                       of --config.data.cliplevel_weights (default: the bundled weights), as
                       the pipeline linearises a photo of an unknown camera
    tiny               test-sized (32-px views, a two-level network, 4 steps)
"""

import ml_collections

from experiments.configs import common


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    opts = common.parse_variant(variant, ("curve", "bent", "tiny"), name="highlight")
    config = ml_collections.ConfigDict()
    config.task = "highlight"
    config.seed = 0
    config.init_weights = ""  # a weights directory to fine-tune from (hdr_jax/bundle.py)
    config.memory_budget = ""

    # estimate_curve: the head also estimates the inverse response (False: inverse sRGB).
    # working_size: the longest side the head sees at inference (a larger photo is area-
    # downscaled for it), the side of the training views.
    config.model = ml_collections.ConfigDict(
        dict(features=(16, 32, 64, 96), estimate_curve="curve" in opts, working_size=128,
             linearisation="bent" if "bent" in opts else "srgb")
    )
    config.data = ml_collections.ConfigDict(
        dict(
            builder="highlight_views",  # rendered on the fly; no stored dataset
            builder_config="",
            manual_dir="../shared/data/hdri",  # the HDR scenes (panoramas or ordinary HDR images)
            emor_dir="",  # the EMoR model: adds its sampled responses to the training cameras
            cliplevel_weights="",  # weights with the clip-level estimate ('bent'; "": bundled)
            size=config.model.get_ref("working_size"),
            clip_range=(0.01, 0.30),
            jpeg_probability=0.6,
            # Share of views linearised with the true response (a user who gives it).
            known_probability=0.1,
            num_eval=32,
        )
    )
    # Loss: PU21 error on the clipped (and filled) pixels plus this weight times the error on
    # all pixels (the curve estimate moves every pixel).
    config.loss = ml_collections.ConfigDict(dict(overall_weight=1.0))
    config.optimizer = common.adam(3e-4, grad_clip=1.0, decay_every=5000, decay_rate=0.5)
    config.batch_size = 8
    config.state_sharding = "replicated"
    common.set_schedule(config, num_train_steps=12000, log_every=100, eval_every=2000,
                        checkpoint_every=500)
    config.max_checkpoints = 2
    if "bent" in opts:  # the length that fits one CPU core in 1.5 h (the bend costs per view)
        config.num_train_steps = 8000
        config.optimizer.decay_every = 3500

    if "tiny" in opts:
        config.model.features = (4, 8)
        config.model.working_size = 32
        config.data.num_eval = 2
        common.set_tiny_schedule(config, batch_size=2)
    return config
