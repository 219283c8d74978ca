"""DrTMO (stage 1) training config: one network per run.

Usage: --config experiments/configs/drtmo.py:VARIANT, VARIANT a comma-separated list of
    up | down          which exposure network (required)
    paper | half | cpu width preset (default cpu: trains on a laptop CPU)
    tiny               test-sized model and data
An unknown option is an error.
"""

import ml_collections

from experiments.configs import common

DIRECTIONS = ("up", "down")
WIDTHS = ("paper", "half", "cpu")
VARIANTS = DIRECTIONS + WIDTHS + ("tiny",)


def get_config(variant: str = "up") -> ml_collections.ConfigDict:
    opts = common.parse_variant(variant, VARIANTS, name="drtmo")
    direction = common.one_of(opts, DIRECTIONS, name="drtmo")
    width = common.one_of(opts, WIDTHS, name="drtmo", default="cpu")
    paper_width = width in ("paper", "half")
    config = ml_collections.ConfigDict()
    config.task = "drtmo"
    config.seed = 0
    config.init_weights = ""  # a weights directory to fine-tune from (hdr_jax/bundle.py)
    config.memory_budget = ""  # e.g. "4GiB": pick remat/bf16 to fit (hdr_jax/memory.py)
    config.direction = direction

    config.model = ml_collections.ConfigDict(
        dict(
            width=width,
            # The CPU crop of 128 reaches a 1x1 bottleneck after 7 stride-2 layers. The paper's
            # depth 9 takes 512x512 crops; the 'default' builder stores 256x256 crops, so one
            # encoder layer fewer reaches the same bottleneck.
            depth=8 if paper_width else 7,
            num_exposures=8,
            use_skips=True,
            use_residual=True,
            # CPU default: start from the naive exposure change (see ExposureBracketNet); the
            # paper adds the input itself.
            residual_base="input" if paper_width else "naive",
            direction=direction,
            decoder_3d=True,
            # Running averages at inference make overlapping tiles of a large photo consistent
            # (the public code's batch statistics at batch 1 would differ tile by tile).
            bn_use_running_average_at_inference=not paper_width,
            # Dropout 0.5 as the paper at paper widths; none on the CPU default: with
            # running-average batch norm at inference, dropout before the next layer's BN shifts
            # the variance BN saw in training (brackets fell below the naive start with it).
            dropout_rate=0.5 if paper_width else 0.0,
            dtype="float32",
            remat=False,
            # im2col: XLA:CPU's 3-d conv gradients are much slower as lax.conv; 'xla' is the
            # memory saver (hdr_jax/memory.py picks it under --memory_budget)
            conv_impl="im2col",
        )
    )

    config.data = ml_collections.ConfigDict(
        dict(
            builder="hdr_brackets",
            builder_config="default" if paper_width else "small",
            data_dir="workdirs/tfds",
            manual_dir="../shared/data/hdri",
            emor_dir="",
            crop_size=256 if paper_width else 128,
            num_eval=64,
        )
    )

    # kind: 'l1' (eq. 3/4, the paper) or 'log_mse' (minus the mean per-image PSNR, the
    # evaluation metric; losses.masked_log_mse). denominator: of 'l1' (losses.masked_l1).
    config.loss = ml_collections.ConfigDict(dict(kind="l1", denominator="all"))
    # lr 2e-4 as the paper at paper widths; half of it on the CPU default, where the network
    # learns a correction of the naive bracket.
    config.optimizer = common.adam(
        2e-4 if paper_width else 1e-4, b1=0.5, decay_every=0, decay_rate=0.5, mu_dtype="",
        nu_dtype="",
    )

    # The recipe of the bundled weights (README "Bundled weights"): 6000 steps of batch 8
    # (paper widths: batch 1, as the paper).
    # Global batch, split over every device of every process (hdr_jax/training/parallel.py).
    config.batch_size = 1 if paper_width else 8
    # Train state over the devices: "replicated", or split ZeRO/FSDP-style: "optimizer" (the
    # optimiser state) or "fsdp" (parameters and optimiser state).
    config.state_sharding = "replicated"
    common.set_schedule(config, num_train_steps=6000, log_every=50, eval_every=1000,
                        checkpoint_every=250)
    config.max_checkpoints = 3

    if "tiny" in opts:
        config.model.width = "tiny"
        config.model.depth = 5  # 32x32 crops
        config.data.update(builder_config="tiny", crop_size=32, num_eval=2)
        common.set_tiny_schedule(config, batch_size=2)
    return config
