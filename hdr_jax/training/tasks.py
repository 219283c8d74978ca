"""Model-specific training pieces for both stages: init, pure train/eval steps, data.

Each task is a small object holding static things (model, optimiser, config); the steps are pure
functions of (state, batch) that the loop jits with the state donated.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow_datasets as tfds

from hdr_jax import bundle, losses, metrics, pipeline
from hdr_jax.data import (
    bracket_pipeline,
    hdr_brackets,
    highlight_views,
    pair_pipeline,
    sice,
    synthetic_pairs,
)
from hdr_jax.eval import protocol, stage1, stage2
from hdr_jax.models import highlight, registry, response
from hdr_jax.training import checkpoint
from hdr_jax.training.state import TrainState, make_optimizer


class DataError(ValueError):
    """The dataset a config names cannot be prepared (one line)."""


def prepare_builder(data_config: ml_collections.ConfigDict, builder_cls: type, **kwargs) -> Any:
    """Builds (once) the tfds array_record dataset and returns the builder; :class:`DataError`
    when it cannot (a missing or empty ``manual_dir``, files none of which yields an example)."""
    builder = builder_cls(
        data_dir=os.path.abspath(data_config.data_dir),
        config=data_config.builder_config,
        file_format="array_record",
        **kwargs,
    )
    manual_dir = os.path.abspath(data_config.manual_dir) if data_config.manual_dir else None
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    except (AssertionError, ValueError, OSError) as e:  # tfds states its checks as assertions
        text = checkpoint.first_line(e).split(". ")[0]  # tfds goes on with instructions
        raise DataError(f"cannot prepare the dataset {builder.name} from "
                        f"{manual_dir or 'its source'}: {text}") from e
    return builder


def initial_variables(config: ml_collections.ConfigDict, name: str, variables: dict) -> dict:
    """`variables`, or, with `config.init_weights` set to a weights directory (see
    hdr_jax.bundle), that directory's network `name` (shape-checked): fine-tuning starts from
    exported weights (a fresh optimiser state; resuming a workdir restores its own checkpoint)."""
    directory = config.get("init_weights", "")
    if not directory:
        return variables
    template = jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape, t.dtype), variables)
    loaded, _ = bundle.load_network(directory, name, template)
    return jax.tree.map(lambda t, v: jnp.asarray(v, t.dtype), variables, loaded)


def accumulate_gradients(
    grad_fn: Callable, params: Any, batch: dict, microbatches: int
) -> tuple[tuple[jax.Array, Any], Any]:
    """``grad_fn(params, batch)`` (a `jax.value_and_grad` with aux) averaged over `microbatches`
    equal slices of the batch, run one after another in a rolled `lax.scan`, so the step's
    activation memory is that of one slice. For a loss that is a mean over the batch (CF-Net's)
    this is the full-batch gradient up to float rounding."""
    microbatches = int(microbatches)
    if microbatches <= 1:
        return grad_fn(params, batch)
    size = jax.tree.leaves(batch)[0].shape[0]
    if size % microbatches:
        raise ValueError(f"batch size {size} is not divisible by microbatches={microbatches}")
    # Slice k takes rows k, k + m, k + 2m, ...: each device's block of a batch sharded over
    # devices then holds rows of every slice, so the slices stay where their rows are.
    slices = jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape(size // microbatches, microbatches, *x.shape[1:]), 0, 1),
        batch,
    )

    def body(acc, mb):
        out = grad_fn(params, mb)
        return jax.tree.map(jnp.add, acc, out), None

    shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], slices))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    total, _ = jax.lax.scan(body, zeros, slices)
    return jax.tree.map(lambda x: x / microbatches, total)


def process_shard() -> dict[str, int]:
    """The training pipelines' arguments that give this process its rows of each global batch."""
    return {"process_index": jax.process_index(), "process_count": jax.process_count()}


def new_state(rng: jax.Array, variables: dict, tx: optax.GradientTransformation) -> TrainState:
    """Step 0: `variables` (params, optional batch_stats) and a fresh optimiser state."""
    params = variables["params"]
    return TrainState(
        step=jnp.int32(0),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=rng,
    )


def apply_gradients(
    state: TrainState, tx: optax.GradientTransformation, grads: Any, **replace: Any
) -> TrainState:
    """One optimiser update of ``state.params``; ``replace`` sets other fields (batch_stats)."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, **replace)


class CFNetTask:
    """Stage 2: CF-Net with the eq. 19 loss."""

    def __init__(self, config: ml_collections.ConfigDict, *, builder: Any | None = None):
        self.config = config
        self.model = registry.build("cfnet", config.model)
        self.tx = make_optimizer(config.optimizer)
        self._builder = builder

    # -- data ---------------------------------------------------------------------------------
    @functools.cached_property
    def builder(self):
        if self._builder is None:
            d = self.config.data
            cls = sice.Sice if d.builder == "sice" else synthetic_pairs.SyntheticPairs
            d = d.copy_and_resolve_references()
            scale = self.config.model.scale
            # Builder configs are per scale: 'x2', 'x4', 'tiny_x2', ...
            d.builder_config = f"{d.builder_config}_x{scale}" if d.builder_config else f"x{scale}"
            self._builder = prepare_builder(d, cls)
        return self._builder

    def _source(self, split: str):
        return self.builder.as_data_source(split=split)

    def train_iterator(self):
        return pair_pipeline.make_train_iterator(
            self._source("train"),
            scale=self.config.model.scale,
            patch_size=self.config.data.patch_size,
            seed=self.config.seed,
            batch_size=self.config.batch_size,
            **process_shard(),
        )

    def eval_batches(self) -> Iterable[dict]:
        ds = pair_pipeline.make_dataset(
            self._source("test"),
            scale=self.config.model.scale,
            patch_size=self.config.data.eval_patch_size,
            train=False,
            seed=self.config.seed,
            batch_size=1,
            eval_mode="center",
        )
        n = self.config.data.num_eval or len(ds)
        for i, batch in enumerate(ds):
            if i >= n:
                break
            yield batch

    # -- steps --------------------------------------------------------------------------------
    def init_state(self, rng: jax.Array) -> TrainState:
        inputs = registry.example_inputs("cfnet", self.model, 1, self.config.data.patch_size)
        variables = registry.init("cfnet", self.model, rng, *inputs)
        name = f"cfnet_x{self.config.model.scale}"
        return new_state(rng, initial_variables(self.config, name, variables), self.tx)

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        cfg = self.config.loss

        def loss_fn(params, batch):
            out = self.model.apply({"params": params}, batch["over_lr"], batch["under_lr"])
            loss, terms = losses.cfnet_loss(
                out,
                batch,
                srb_weight=cfg.srb_weight,
                cfb_weight=cfg.cfb_weight,
                mef_weight=cfg.get("mef_weight", 0.0),
                colour_weight=cfg.get("colour_weight", 0.0),
            )
            terms["psnr"] = jnp.mean(metrics.psnr(out["fused"], batch["label_hr"]))
            return loss, terms

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, terms), grads = accumulate_gradients(
            grad_fn, state.params, batch, self.config.get("microbatches", 1)
        )
        psnr = terms.pop("psnr")
        out = {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}, "psnr": psnr}
        return apply_gradients(state, self.tx, grads), out

    def predict(self, params: Any, batch: dict) -> dict:
        return self.model.apply({"params": params}, batch["over_lr"], batch["under_lr"])

    def eval_step(self, state: TrainState, batch: dict) -> dict:
        out = self.predict(state.params, batch)
        label = batch["label_hr"]
        result = stage2.fused_scores(out["fused"], label, batch["under_hr"], batch["over_hr"])
        for t in range(out["steps_over"].shape[0]):
            step_img = 0.5 * (out["steps_over"][t] + out["steps_under"][t])
            result[f"psnr_step{t + 1}"] = protocol.psnr(step_img, label)
        return result

    def previews(self, state: TrainState, batch: dict) -> dict[str, np.ndarray]:
        out = jax.device_get(self.predict(state.params, batch))
        scale = self.config.model.scale
        up = lambda x: np.repeat(np.repeat(np.asarray(x[0]), scale, 0), scale, 1)
        row = np.concatenate(
            [
                up(batch["under_lr"]),
                up(batch["over_lr"]),
                out["fused"][0],
                np.asarray(batch["label_hr"][0]),
            ],
            axis=1,
        )
        return {"under_over_fused_label": row}


class _HdrBracketsData:
    """The ``hdr_brackets`` dataset of ``config.data`` (stage-1 tasks), built on first use."""

    config: ml_collections.ConfigDict
    _builder: Any

    @functools.cached_property
    def builder(self):
        if self._builder is None:
            d = self.config.data
            self._builder = prepare_builder(
                d, hdr_brackets.HdrBrackets, emor_dir=d.emor_dir or None
            )
        return self._builder

    def _source(self, split: str):
        return self.builder.as_data_source(split=split)


class DrTMOTask(_HdrBracketsData):
    """Stage 1: one exposure network (up or down) with the masked L1 loss of eq. 3/4."""

    def __init__(self, config: ml_collections.ConfigDict, *, builder: Any | None = None):
        self.config = config
        self.model = registry.build("drtmo", config.model)
        self.tx = make_optimizer(config.optimizer)
        self._builder = builder

    def train_iterator(self):
        return bracket_pipeline.make_train_iterator(
            self._source("train"),
            direction=self.config.direction,
            num_exposures=self.config.model.num_exposures,
            crop_size=self.config.data.crop_size,
            seed=self.config.seed,
            batch_size=self.config.batch_size,
            **process_shard(),
        )

    def eval_batches(self) -> Iterable[dict]:
        ds = bracket_pipeline.make_dataset(
            self._source("validation"),
            direction=self.config.direction,
            num_exposures=self.config.model.num_exposures,
            crop_size=None,
            train=False,
            seed=self.config.seed,
            batch_size=1,
        )
        n = self.config.data.num_eval or len(ds)
        for i, batch in enumerate(ds):
            if i >= n:
                break
            yield batch

    def init_state(self, rng: jax.Array) -> TrainState:
        inputs = registry.example_inputs("drtmo", self.model, 1, self.config.data.crop_size)
        variables = registry.init("drtmo", self.model, rng, *inputs)
        variables = initial_variables(self.config, f"drtmo_{self.config.direction}", variables)
        return new_state(rng, variables, self.tx)

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        dropout_rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            pred, updates = self.model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["input"],
                train=True,
                rngs={"dropout": dropout_rng},
                mutable=["batch_stats"],
            )
            loss = losses.drtmo_loss(
                pred,
                batch["target"],
                batch["mask"],
                kind=self.config.loss.get("kind", "l1"),
                denominator=self.config.loss.denominator,
            )
            return loss, (pred, updates["batch_stats"])

        (loss, (_pred, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        return apply_gradients(state, self.tx, grads, batch_stats=batch_stats), {"loss": loss}

    def predict(self, state: TrainState, x: jnp.ndarray) -> jnp.ndarray:
        return self.model.apply(state.variables, x, train=False)

    def eval_step(self, state: TrainState, batch: dict) -> dict:
        """PSNR of every valid predicted exposure, per exposure step (+1..+N or -1..-N), and its
        mean over the valid slots (NaN for an input with none)."""
        pred = self.predict(state, batch["input"])
        return stage1.exposure_scores(pred, batch["target"], batch["mask"])

    def previews(self, state: TrainState, batch: dict) -> dict[str, np.ndarray]:
        pred = np.asarray(jax.device_get(self.predict(state, batch["input"])))[0]
        target = np.asarray(batch["target"][0])
        return {
            "pred_over_true": np.concatenate(
                [np.concatenate(list(pred), 1), np.concatenate(list(target), 1)], 0
            )
        }


class ResponseTask(_HdrBracketsData):
    """Stage 1, up direction: which of the data's K camera responses produced an image
    (:mod:`hdr_jax.models.response`); softmax cross-entropy plus L2 on the dense kernels."""

    export_dtype = "float32"

    def __init__(self, config: ml_collections.ConfigDict, *, builder: Any | None = None):
        self.config = config
        d = config.data
        # The bank is a pure function of the data config; the exported weights carry it.
        bank = hdr_brackets.training_crfs(d.builder_config, d.emor_dir or None)
        self.bank_names = list(bank)
        self.bank = response.bank_array(bank)
        self.model = registry.build("response", {**config.model, "num_responses": len(self.bank)})
        self.tx = make_optimizer(config.optimizer)
        self._builder = builder

    def _dataset_options(self) -> dict:
        return {
            "direction": "up",
            "crop_size": self.config.data.crop_size or None,
            "include_hdr": True,
            "include_targets": False,
        }

    def train_iterator(self):
        return bracket_pipeline.make_train_iterator(
            self._source("train"),
            seed=self.config.seed,
            batch_size=self.config.batch_size,
            **self._dataset_options(),
            **process_shard(),
        )

    def eval_batches(self) -> Iterable[dict]:
        # Every input exposure of num_eval records spread evenly over the split (record-major).
        src = self._source("validation")
        n = min(self.config.data.num_eval or len(src), len(src))
        ds = bracket_pipeline.make_dataset(
            [src[i] for i in np.linspace(0, len(src) - 1, n).round().astype(int)],
            train=False,
            seed=self.config.seed,
            batch_size=self.config.batch_size,
            input_index="all",
            **{**self._dataset_options(), "crop_size": None},
        )
        yield from ds

    def variables_to_export(self, state: TrainState) -> dict:
        """The bundle keeps the bank's curves beside the parameters (pipeline.Pipeline)."""
        return {**state.variables, "responses": {"curves": jnp.asarray(self.bank)}}

    def model_config_to_export(self) -> dict:
        return {
            **self.config.model.to_dict(),
            "num_responses": len(self.bank),
            "responses": self.bank_names,
        }

    def init_state(self, rng: jax.Array) -> TrainState:
        inputs = registry.example_inputs("response", self.model, 2, self.config.data.crop_size or 32)
        variables = registry.init("response", self.model, rng, *inputs)
        return new_state(rng, variables, self.tx)

    def _labels(self, batch: dict) -> jnp.ndarray:
        return response.nearest_response(jnp.asarray(self.bank), batch["crf_curve"])

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        labels = self._labels(batch)

        def loss_fn(params):
            logits, updates = self.model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["input"],
                train=True,
                mutable=["batch_stats"],
            )
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            l2 = sum(
                jnp.sum(w**2)
                for path, w in jax.tree_util.tree_leaves_with_path(params)
                if "kernel" in jax.tree_util.keystr(path)
            )
            loss = ce + self.config.loss.l2 * l2
            return loss, (ce, logits, updates["batch_stats"])

        (loss, (ce, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        new_state = apply_gradients(state, self.tx, grads, batch_stats=batch_stats)
        return new_state, {"loss": loss, "cross_entropy": ce, "accuracy": accuracy}

    def eval_step(self, state: TrainState, batch: dict) -> dict:
        """Per image: accuracy, cross-entropy and the probability of the predicted response."""
        labels = self._labels(batch)
        logits = self.model.apply(state.variables, batch["input"], train=False)
        return {
            "accuracy": (jnp.argmax(logits, -1) == labels).astype(jnp.float32),
            "cross_entropy": optax.softmax_cross_entropy_with_integer_labels(logits, labels),
            "top_probability": jnp.max(jax.nn.softmax(logits), -1),
        }


class HighlightTask:
    """Stage 1: the highlight head (:mod:`hdr_jax.models.highlight`) on views rendered on the
    fly (:mod:`hdr_jax.data.highlight_views`), trained on the HDR protocol's PU21 error
    (:func:`losses.highlight_loss`)."""

    def __init__(self, config: ml_collections.ConfigDict, *, builder: Any | None = None):
        self.config = config
        self.model = registry.build("highlight", config.model)
        self.tx = make_optimizer(config.optimizer)
        del builder  # no stored dataset: the examples are rendered when drawn

    @functools.cached_property
    def builder(self):
        """The scenes and responses (loaded once; there is nothing to build)."""
        d = self.config.data
        emor = highlight_views.emor_training_curves(d.emor_dir or None)
        return {
            "curves": highlight_views.CurveSampler(emor),
            "train": [r for _, r in highlight_views.load_scenes(d.manual_dir, "train")],
            "validation": [r for _, r in highlight_views.load_scenes(d.manual_dir, "validation")],
        }

    @functools.cached_property
    def blind_linearisation(self) -> Any:
        """photo -> linear image for a photo of an unknown camera, as the pipeline linearises
        it for this head: inverse sRGB (None), or with ``model.linearisation`` 'bent' inverse
        sRGB bent by the clip-level estimate of ``data.cliplevel_weights`` (the pipeline's
        :func:`~hdr_jax.pipeline.blind_linearisation`)."""
        kind = self.config.model.get("linearisation", "srgb")
        if kind == "srgb":
            return None
        if kind != "bent":
            raise ValueError(f"model.linearisation must be 'srgb' or 'bent', got {kind!r}")
        pipe = pipeline.Pipeline(self.config.data.get("cliplevel_weights") or None)
        if pipe.cliplevel is None:
            raise ValueError(f"{pipe.directory}: no 'cliplevel' network to bend with")
        return functools.partial(pipeline.blind_linear, pipe)

    def _example_options(self) -> dict:
        d = self.config.data
        return dict(size=d.size, clip_range=tuple(d.clip_range),
                    jpeg_probability=d.jpeg_probability, known_probability=d.known_probability,
                    blind=self.blind_linearisation)

    def train_iterator(self):
        return highlight_views.make_train_iterator(
            self.builder["train"], self.builder["curves"], seed=self.config.seed,
            batch_size=self.config.batch_size, **self._example_options(), **process_shard())

    def eval_batches(self) -> Iterable[dict]:
        yield from highlight_views.make_dataset(
            self.builder["validation"], self.builder["curves"], seed=self.config.seed,
            batch_size=self.config.batch_size, train=False, num_eval=self.config.data.num_eval,
            **self._example_options())

    def init_state(self, rng: jax.Array) -> TrainState:
        inputs = registry.example_inputs("highlight", self.model, 1, self.config.data.size)
        variables = registry.init("highlight", self.model, rng, *inputs)
        return new_state(rng, initial_variables(self.config, "highlight", variables), self.tx)

    def predict(self, params: Any, batch: dict) -> jnp.ndarray:
        """The HDR of the batch's photos: the head's linearisation with its highlights."""
        known = batch["known"][:, 0]
        out = self.model.apply({"params": params},
                               highlight.input_features(batch["photo"], known))
        linear = highlight.linearise(out, batch["photo"], batch["linear"], known)
        return highlight.expand(linear, batch["photo"], out["log_ratio"])

    def _loss(self, params: Any, batch: dict) -> tuple[jnp.ndarray, dict]:
        pred = self.predict(params, batch)
        region = highlight.region_weight(batch["photo"])[..., 0] > 0
        return losses.highlight_loss(pred, batch["reference"], batch["clipped"], region,
                                     overall_weight=self.config.loss.overall_weight)

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        (loss, terms), grads = jax.value_and_grad(self._loss, has_aux=True)(state.params, batch)
        out = {"loss": loss, "loss_clipped": jnp.mean(terms["clipped"]),
               "loss_overall": jnp.mean(terms["overall"])}
        return apply_gradients(state, self.tx, grads), out

    def eval_step(self, state: TrainState, batch: dict) -> dict:
        """Per view: the protocol's PU21-PSNR on the clipped pixels and overall, of the head's
        HDR and of the photo linearised as given (inverse sRGB, or the true response where
        'known')."""
        out = {}
        no_region = jnp.zeros_like(batch["clipped"])
        for name, pred in (("", self.predict(state.params, batch)), ("_input", batch["linear"])):
            # The loss's terms without eps or region are the protocol's PSNRs (negated).
            _, terms = losses.highlight_loss(pred, batch["reference"], batch["clipped"],
                                             no_region, eps=0.0)
            out["pu21_clipped" + name] = -terms["clipped"]
            out["pu21" + name] = -terms["overall"]
        out["gain_clipped_db"] = out["pu21_clipped"] - out["pu21_clipped_input"]
        out["gain_db"] = out["pu21"] - out["pu21_input"]
        return out

    def previews(self, state: TrainState, batch: dict) -> dict[str, np.ndarray]:
        pred = np.asarray(jax.device_get(self.predict(state.params, batch)))[0]
        lin, ref = np.asarray(batch["linear"][0]), np.asarray(batch["reference"][0])
        top = float(np.percentile(ref, 99.9)) or 1.0
        gain = float(metrics.align_gain(pred, ref, batch["clipped"][0] < 0.5))
        show = lambda x: np.clip(np.log2(np.maximum(x, 1e-6) / top) / 10.0 + 1.0, 0.0, 1.0)
        return {"photo_linear_pred_true_log": np.concatenate(
            [np.asarray(batch["photo"][0]), show(lin * gain), show(pred * gain), show(ref)], 1)}


def make_task(config: ml_collections.ConfigDict, **kwargs) -> Any:
    if config.task == "cfnet":
        return CFNetTask(config, **kwargs)
    if config.task == "drtmo":
        return DrTMOTask(config, **kwargs)
    if config.task == "response":
        return ResponseTask(config, **kwargs)
    if config.task == "highlight":
        return HighlightTask(config, **kwargs)
    raise ValueError(f"unknown task {config.task!r}")
