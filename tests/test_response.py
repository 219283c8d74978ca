"""The response classifier (hdr_jax/models/response.py): features against a NumPy reference,
the pinned parameter count, learnability on generated data, the analytic up-exposure and its use
in the pipeline."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hdr_jax import bundle, pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import exposure
from hdr_jax.data import testing
from hdr_jax.camera.exposure import naive_bracket_baseline
from hdr_jax.models import factory, response


def _features_reference(x: np.ndarray) -> np.ndarray:
    """Straight NumPy (np.histogram, boolean masks) for one HWC image."""
    x = x.astype(np.float64)
    hist = np.histogram(np.clip(x, 0, 1 - 1e-12), bins=32, range=(0, 1))[0] / x.size
    lum = x.mean(-1)
    grads = []
    for gx, m in (
        (np.abs(np.diff(x, axis=1)).mean(-1), 0.5 * (lum[:, 1:] + lum[:, :-1])),
        (np.abs(np.diff(x, axis=0)).mean(-1), 0.5 * (lum[1:] + lum[:-1])),
    ):
        b = np.clip(np.floor(m * 16), 0, 15)
        grads.append(
            [np.log(gx[b == k].mean() + 1e-4) if (b == k).sum() > 4 else -9.0 for k in range(16)]
        )
    sat = x.max(-1) - x.min(-1)
    b = np.clip(np.floor(lum * 8), 0, 7)
    s = [sat[b == k].mean() if (b == k).sum() > 4 else 0.0 for k in range(8)]
    moments = [x.mean(), x.std(), (x < 0.5 / 255).mean(), (x > 254.5 / 255).mean()]
    return np.concatenate([hist, np.ravel(grads), s, moments])


def _render(seed: int, curve: np.ndarray, size: int = 32, stops: float = 10.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = exposure.normalise_radiance(testing.fake_radiance(rng, size, size, stops=stops))
    dt = float(2.0 ** rng.uniform(-2, 2))
    return np.asarray(exposure.expose(e, dt, curve), np.float32)


def test_features_match_numpy_reference():
    rng = np.random.default_rng(0)
    images = [
        _render(1, crf_lib.srgb_crf(), 40),
        _render(2, crf_lib.gamma_crf(1.4), 40),
        np.rint(rng.uniform(0, 1, (40, 40, 3)) * 255) / 255,  # every bin populated
        np.zeros((40, 40, 3)),  # empty bins -> fill values
    ]
    x = np.stack(images).astype(np.float32)
    got = np.asarray(jax.jit(response.response_features)(jnp.asarray(x)))
    assert got.shape == (4, response.NUM_FEATURES)
    for g, img in zip(got, x):
        np.testing.assert_allclose(g, _features_reference(img), rtol=2e-4, atol=2e-5)


def test_features_reject_bad_shapes():
    with pytest.raises(ValueError, match="NHWC"):
        response.response_features(jnp.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="at least 2x2"):
        response.response_features(jnp.zeros((1, 1, 8, 3)))


def test_parameter_count_of_bundled_config():
    # BN 2 x 76 + Dense 76 x 64 + 64 + Dense 64 x 5 + 5 = 152 + 4928 + 325.
    m = factory.make_response({"hidden": (64,)}, num_responses=5)
    v = m.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
    assert sum(x.size for x in jax.tree.leaves(v["params"])) == 5405
    assert set(v) == {"params", "batch_stats"}


def test_nearest_response_labels_bank_members():
    bank = response.bank_array(crf_lib.default_training_crfs(k=5))
    curves = bank[[3, 0, 4]] + 1e-4
    np.testing.assert_array_equal(response.nearest_response(bank, curves), [3, 0, 4])
    with pytest.raises(ValueError, match="bank"):
        response.bank_array([crf_lib.srgb_crf()])


def test_reexposure_with_the_true_response_reproduces_brighter_exposures():
    curves = [crf_lib.gamma_crf(1.4), crf_lib.s_curve_crf(8.0, 0.55)]
    bank = response.bank_array(curves)
    e = exposure.normalise_radiance(testing.fake_radiance(np.random.default_rng(3), 32, 32))
    x = np.stack([exposure.expose(e, 0.25, c) for c in curves]).astype(np.float32)
    steps = np.arange(1, 5)
    probs = np.array([[0.9, 0.1], [0.3, 0.7]], np.float32)
    got = np.asarray(response.reexpose_with_responses(x, probs, bank, steps))
    assert got.shape == (2, 4, 32, 32, 3)
    for i, c in enumerate(curves):
        np.testing.assert_allclose(
            got[i], naive_bracket_baseline(x[i], steps, 2**0.5, c), atol=1e-6
        )
        for k, s in enumerate(steps):
            truth = exposure.expose(e, 0.25 * 2 ** (s / 2), c)
            ok = (x[i] > 2 / 255) & (x[i] < 250 / 255)  # unclipped, above the quantisation floor
            # 8-bit input: the error is the input's rounding pushed through f(tau^s f^-1(.))
            assert np.abs(got[i, k] - truth)[ok].mean() < 0.01


def test_tiles_for_classification():
    assert response.tiles_for_classification(np.zeros((100, 90, 3))).shape == (1, 100, 90, 3)
    # 600 x 800 -> area downscale by 2 -> 300 x 400 -> 2 x 3 tiles of 128
    img = np.random.default_rng(0).uniform(size=(600, 800, 3)).astype(np.float32)
    t = response.tiles_for_classification(img)
    assert t.shape == (6, 128, 128, 3)
    np.testing.assert_allclose(t[0, 0, 0], img[:2, :2].mean((0, 1)), rtol=1e-5)
    # 4000 x 6000 -> factor 15 -> 266 x 400: 6 tiles, of which max_tiles are kept
    assert response.tiles_for_classification(np.zeros((4000, 6000, 3))).shape == (6, 128, 128, 3)
    assert response.tiles_for_classification(np.zeros((4000, 6000, 3)), max_tiles=4).shape[0] == 4


def test_classifier_learns_to_tell_responses_apart():
    """A few hundred Adam steps on generated scenes: held-out scenes far above chance."""
    curves = [crf_lib.gamma_crf(1.4), crf_lib.srgb_crf(), crf_lib.s_curve_crf(8.0, 0.55)]
    n_train, n_test = 60, 30

    def data(offset, n):
        xs = [_render(offset + i, curves[i % 3]) for i in range(n)]
        return jnp.asarray(np.stack(xs)), jnp.asarray(np.arange(n) % 3)

    (xtr, ytr), (xte, yte) = data(0, n_train), data(1000, n_test)
    model = response.ResponseClassifier(num_responses=3, hidden=(32,))
    v = model.init(jax.random.key(0), xtr, train=False)
    tx = optax.adam(1e-2)
    state = (v["params"], v["batch_stats"], tx.init(v["params"]))

    @jax.jit
    def step(state):
        params, stats, opt = state

        def loss(p):
            logits, upd = model.apply(
                {"params": p, "batch_stats": stats}, xtr, train=True, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, ytr).mean(), upd

        (_, upd), g = jax.value_and_grad(loss, has_aux=True)(params)
        u, opt = tx.update(g, opt)
        return optax.apply_updates(params, u), upd["batch_stats"], opt

    for _ in range(300):
        state = step(state)
    logits = model.apply({"params": state[0], "batch_stats": state[1]}, xte, train=False)
    assert float(jnp.mean(jnp.argmax(logits, -1) == yte)) >= 0.7  # chance: 1/3


# -- the pipeline's up-exposures -------------------------------------------------------------


def _weights(tmp_path, curves, *, bias_to: int = 0):
    """Tiny stage-1 networks plus a classifier whose logits favour bank entry ``bias_to``."""
    d = tmp_path / "weights"
    cfg = {"width": "tiny", "depth": 5, "num_exposures": 8,
           "bn_use_running_average_at_inference": True}  # fmt: skip
    m = factory.make_drtmo(cfg)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
    v = m.init(rngs, jnp.zeros((1, 32, 32, 3)), train=False)
    for name in ("drtmo_up", "drtmo_down"):
        bundle.save_network(d, name, v, cfg)
    r_cfg = {"hidden": [8], "num_responses": len(curves)}
    r = factory.make_response(r_cfg)
    rv = jax.tree.map(np.array, r.init(jax.random.key(1), jnp.zeros((2, 32, 32, 3)), train=False))
    rv["params"]["logits"]["bias"][bias_to] = 5.0
    rv["responses"] = {"curves": response.bank_array(curves)}
    bundle.save_network(d, "response", rv, r_cfg, dtype="float32")
    return d


def test_pipeline_up_exposures_use_the_recognised_response(tmp_path):
    curves = [crf_lib.gamma_crf(1.4), crf_lib.s_curve_crf(8.0, 0.55)]
    pipe = pipeline.Pipeline.load(_weights(tmp_path, curves, bias_to=1))
    photo = _render(5, curves[1], size=48)
    probs, curve = pipeline.estimate_response(pipe, photo)
    assert probs.shape == (2,) and probs.sum() == pytest.approx(1.0, abs=1e-5) and probs[1] > 0.9
    np.testing.assert_array_equal(curve, curves[1])
    stack = pipeline.generate_stack(pipe, photo, tile=32, overlap=8)  # tiled
    np.testing.assert_allclose(
        stack[9:],
        naive_bracket_baseline(photo, np.arange(1, 9), pipeline.TAU, curves[1]),
        atol=1e-6,
    )
    # The network path is still there on request, and differs.
    net = pipeline.generate_stack(pipe, photo, tile=32, overlap=8, up_method="network")
    np.testing.assert_array_equal(net[:9], stack[:9])
    assert np.abs(net[9:] - stack[9:]).max() > 0.01
    batch = pipeline.up_brackets(pipe, np.stack([photo, photo]))
    np.testing.assert_allclose(batch[0], stack[9:], atol=1e-6)
    with pytest.raises(ValueError, match="up_method"):
        pipeline.generate_stack(pipe, photo, up_method="magic")


def test_a_known_response_drives_the_up_exposures_and_the_merge(tmp_path):
    # The classifier would pick gamma 1.4; the user says the camera is gamma 2.6.
    curves = [crf_lib.gamma_crf(1.4), crf_lib.srgb_crf()]
    pipe = pipeline.Pipeline.load(_weights(tmp_path, curves, bias_to=0))
    known = crf_lib.gamma_crf(2.6)
    rng = np.random.default_rng(7)
    radiance = exposure.normalise_radiance(testing.fake_radiance(rng, 48, 48, stops=6.0))
    photo = np.asarray(exposure.expose(radiance, 0.5, known), np.float32)
    stack = pipeline.generate_stack(pipe, photo, tile=32, overlap=8, response_curve=known)
    np.testing.assert_allclose(
        stack[9:], naive_bracket_baseline(photo, np.arange(1, 9), pipeline.TAU, known), atol=1e-6
    )
    res = pipeline.reconstruct(pipe, photo, scale=None, response_curve=known)
    assumed = pipeline.reconstruct(pipe, photo, scale=None)
    # Unclipped input pixels keep their value: the known curve's inverse, not the sRGB one.
    ok = photo.max(-1) < 250 / 255
    np.testing.assert_allclose(res.hdr[ok], crf_lib.apply_inverse_crf(known, photo)[ok],
                               rtol=1e-5, atol=1e-6)
    true = np.minimum(radiance * 0.5, 1.0)[ok]
    err_known = np.abs(np.log2(res.hdr[ok] + 1e-3) - np.log2(true + 1e-3)).mean()
    err_assumed = np.abs(np.log2(assumed.hdr[ok] + 1e-3) - np.log2(true + 1e-3)).mean()
    assert err_known < 0.05 < err_assumed
    # The same curve linearises a degenerate (all clipped) photo.
    flat = np.ones((32, 32, 3), np.float32)
    hdr, _ = pipeline.merge_photo_stack(np.stack([flat] * 17), flat, "anchored", known)
    np.testing.assert_allclose(hdr, crf_lib.apply_inverse_crf(known, flat))


def test_pipeline_without_classifier_falls_back_to_the_network(tmp_path):
    d = _weights(tmp_path, [crf_lib.gamma_crf(1.4), crf_lib.srgb_crf()])
    manifest = bundle.read_manifest(d)
    del manifest["response"]
    (d / "manifest.json").write_text(__import__("json").dumps(manifest))
    pipe = pipeline.Pipeline.load(d)
    assert pipe.response is None
    photo = _render(6, crf_lib.srgb_crf(), size=32)
    a = pipeline.generate_stack(pipe, photo)
    b = pipeline.generate_stack(pipe, photo, up_method="network")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(bundle.WeightsError, match="no 'response'"):
        pipeline.estimate_response(pipe, photo)


def test_bad_response_bank_is_refused(tmp_path):
    curves = [crf_lib.gamma_crf(1.4), crf_lib.srgb_crf()]
    d = _weights(tmp_path, curves)
    r_cfg = {"hidden": [8], "num_responses": 2}
    r = factory.make_response(r_cfg)
    rv = jax.tree.map(np.array, r.init(jax.random.key(1), jnp.zeros((2, 32, 32, 3)), train=False))
    rv["responses"] = {"curves": np.stack([curves[0], curves[1][::-1].copy()])}  # decreasing
    bundle.save_network(d, "response", rv, r_cfg, dtype="float32")
    with pytest.raises(bundle.WeightsError, match="non-monotone"):
        pipeline.Pipeline.load(d)
    # A bank of the wrong size for the config: a shape mismatch, one line.
    bundle.save_network(d, "response", rv, {"hidden": [8], "num_responses": 3}, dtype="float32")
    with pytest.raises(bundle.WeightsError, match="do not match"):
        pipeline.Pipeline.load(d)
