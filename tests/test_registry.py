"""hdr_jax.models.registry: one description of each network's build, inputs, init and inference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import cfnet as cfnet_config
from experiments.configs import drtmo as drtmo_config
from experiments.configs import highlight as highlight_config
from experiments.configs import response as response_config
from hdr_jax import bundle
from hdr_jax.models import curvechoice, registry

MODELS = {
    "drtmo": drtmo_config.get_config("up,tiny").model.to_dict(),
    "cfnet": cfnet_config.get_config("x2,tiny").model.to_dict(),
    "response": {**response_config.get_config("tiny").model.to_dict(), "num_responses": 3},
    "highlight": highlight_config.get_config("tiny,curve").model.to_dict(),
    "cliplevel": {"features": [4, 8, 8], "members": 2},
    "level": {"mean": [0.0] * 5, "scale": [1.0] * 5},
    "curvechoice": {"mean": [0.0] * len(curvechoice.FEATURES),
                    "scale": [1.0] * len(curvechoice.FEATURES), "num_options": 4},
}


def test_kind_of_bundled_names():
    assert [registry.kind_of(n) for n in bundle.NETWORKS] == [
        "drtmo", "drtmo", "response", "highlight", "cliplevel", "level", "level", "curvechoice",
        "cfnet", "cfnet"]
    with pytest.raises(ValueError, match="unknown network"):
        registry.kind_of("unet_x2")
    with pytest.raises(ValueError, match="unknown network kind"):
        registry.build("unet", {})


@pytest.mark.parametrize("kind", registry.KINDS)
def test_abstract_variables_match_init_and_inference_shapes(kind):
    module = registry.build(kind, MODELS[kind], inference=True)
    inputs = registry.example_inputs(kind, module, batch=2, size=32)
    variables = registry.init(kind, module, jax.random.key(0), *inputs)
    template = registry.abstract_variables(kind, module, batch=2, size=32)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), variables) == jax.tree.map(
        lambda a: (a.shape, a.dtype), template)
    out = registry.inference(kind, module)(variables, *[jnp.full(x.shape, 0.5) for x in inputs])
    if kind == "highlight":
        assert out["curve"].shape == (2, 65)
        out = out["log_ratio"]
    want = {"drtmo": (2, 8, 32, 32, 3), "cfnet": (2, 64, 64, 3), "response": (2, 3),
            "highlight": (2, 32, 32, 3), "cliplevel": (2,), "level": (2,),
            "curvechoice": (2, 4)}[kind]
    assert out.shape == want
    if kind == "response":
        np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, rtol=1e-5)


def test_inference_build_drops_training_only_settings():
    cf = registry.build("cfnet", {**MODELS["cfnet"], "remat_policy": "step", "conv_impl": "xla"},
                        inference=True)
    assert (cf.remat_policy, cf.conv_impl) == ("none", "auto")
    dr = registry.build("drtmo", {**MODELS["drtmo"], "remat": True}, inference=True)
    assert dr.remat is False
    assert registry.build("drtmo", {**MODELS["drtmo"], "remat": True}).remat is True


def test_train_batch_shapes():
    b = registry.train_batch("cfnet", MODELS["cfnet"], 3, 8)
    assert b["over_lr"].shape == (3, 8, 8, 3) and b["label_hr"].shape == (3, 16, 16, 3)
    d = registry.train_batch("drtmo", MODELS["drtmo"], 2, 32)
    assert d["target"].shape == (2, 8, 32, 32, 3) and d["mask"].shape == (2, 8)
