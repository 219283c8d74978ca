"""Response-classifier training config (stage 1, up direction; hdr_jax/models/response.py).

Usage: --config experiments/configs/response.py[:VARIANT], VARIANT
    (empty)            the bundled recipe: 'small' hdr_brackets views, 5 parametric responses
    tiny               test-sized data (2 responses, 32x32 views)

It trains in minutes on a CPU: the features are fixed and the MLP is small.
"""

import ml_collections

from experiments.configs import drtmo


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    opts = {v.strip() for v in variant.split(",") if v.strip()}
    unknown = opts - {"tiny"}
    if unknown:
        raise ValueError(f"unknown response config variant(s) {sorted(unknown)}")
    config = ml_collections.ConfigDict()
    config.task = "response"
    config.seed = 0

    config.model = ml_collections.ConfigDict(dict(hidden=(64,)))
    # The DrTMO networks' data: the same views, responses and held-out scenes.
    config.data = drtmo.get_config("up,tiny" if "tiny" in opts else "up").data
    config.data.update(
        crop_size=0,  # 0: whole views (the classifier's features are size-agnostic)
        num_eval=80,  # validation records; every input exposure of each is scored
    )
    # L2 on the dense kernels: 720 training views of 18 scenes are few for 76 features.
    config.loss = ml_collections.ConfigDict(dict(l2=1e-3))
    config.optimizer = ml_collections.ConfigDict(dict(learning_rate=1e-3, b1=0.9, b2=0.999))
    # Global batch, split over every device of every process (hdr_jax/training/parallel.py).
    config.batch_size = 64
    # Train state over the devices: "replicated", or split ZeRO/FSDP-style: "optimizer" (the
    # optimiser state) or "fsdp" (parameters and optimiser state).
    config.state_sharding = "replicated"
    config.num_train_steps = 3000
    config.log_every = 100
    config.eval_every = 500
    config.checkpoint_every = 500
    config.max_checkpoints = 2

    if "tiny" in opts:
        config.data.num_eval = 2
        config.model.hidden = (8,)
        config.batch_size = 4
        config.num_train_steps = 4
        config.log_every = 2
        config.eval_every = 4
        config.checkpoint_every = 2
    return config
