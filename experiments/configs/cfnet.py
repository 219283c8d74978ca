"""CF-Net (stage 2) training config.

Usage: --config experiments/configs/cfnet.py[:VARIANT], VARIANT a comma-separated list of
    x2 | x4            scale (default x2)
    paper              paper widths (64 features, 6 groups, T=3) — the default model
    cpu                narrower model that trains on a laptop CPU (32 features, 3 groups, T=3)
    tiny               test-sized model and data (seconds per step)
    sice               train on a SICE folder (data.manual_dir) instead of synthetic pairs
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    opts = {v.strip() for v in variant.split(",") if v.strip()}
    config = ml_collections.ConfigDict()
    config.task = "cfnet"
    config.seed = 0

    config.model = ml_collections.ConfigDict(
        dict(
            features=64,
            num_groups=6,
            num_steps=3,
            scale=4 if "x4" in opts else 2,
            shared_step_weights=False,
            coupled=True,
            remat_policy="none",
            dtype="float32",
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
            eval_patch_size=128,
            num_eval=0,
        )
    )  # 0 = whole evaluation split

    config.loss = ml_collections.ConfigDict(dict(srb_weight=1.0, cfb_weight=1.0))
    config.optimizer = ml_collections.ConfigDict(
        dict(learning_rate=1e-4, b1=0.9, b2=0.999, decay_every=0, decay_rate=0.5, mu_dtype="")
    )

    config.batch_size = 4
    config.num_train_steps = 20_000
    config.log_every = 50
    config.eval_every = 1000
    config.checkpoint_every = 500
    config.max_checkpoints = 3

    if "cpu" in opts:
        # Trains on a laptop CPU in about half an hour (the bundled weights); see README.
        config.model.features = 32
        config.model.num_groups = 3
        config.optimizer.learning_rate = 2e-4
        config.batch_size = 4
        config.data.patch_size = 32
        config.data.num_eval = 48
        config.num_train_steps = 60 if config.model.scale == 4 else 200
        config.log_every = 20
        config.eval_every = 100 if config.model.scale == 2 else 60
        config.checkpoint_every = 50
    if "tiny" in opts:
        config.model.update(features=8, num_groups=2, num_steps=2)
        config.data.update(builder_config="tiny", patch_size=8, eval_patch_size=16, num_eval=2)
        config.batch_size = 2
        config.num_train_steps = 4
        config.log_every = 2
        config.eval_every = 4
        config.checkpoint_every = 2
    return config
