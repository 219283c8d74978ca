"""Response-classifier training config (stage 1, up direction; hdr_jax/models/response.py).

Usage: --config experiments/configs/response.py[:VARIANT], VARIANT
    (empty)            the bundled recipe: 'small' hdr_brackets views, 5 parametric responses
    tiny               test-sized data (2 responses, 32x32 views)

It trains in minutes on a CPU: the features are fixed and the MLP is small.
"""

import ml_collections

from experiments.configs import common, drtmo


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    opts = common.parse_variant(variant, ("tiny",), name="response")
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
    config.optimizer = common.adam(1e-3)
    # Global batch, split over every device of every process (hdr_jax/training/parallel.py).
    config.batch_size = 64
    # Train state over the devices: "replicated", or split ZeRO/FSDP-style: "optimizer" (the
    # optimiser state) or "fsdp" (parameters and optimiser state).
    config.state_sharding = "replicated"
    common.set_schedule(config, num_train_steps=3000, log_every=100, eval_every=500,
                        checkpoint_every=500)
    config.max_checkpoints = 2

    if "tiny" in opts:
        config.data.num_eval = 2
        config.model.hidden = (8,)
        common.set_tiny_schedule(config, batch_size=4)
    return config
