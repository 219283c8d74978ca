"""The highlight head: its network, region, loss (against the NumPy HDR protocol), on-the-fly
data and its place in the pipeline."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_photo, random_variables, run_cli, save_clip_level

from experiments.configs import highlight as highlight_config
from hdr_jax import bundle, losses, pipeline
from hdr_jax import io as hio
from hdr_jax.camera import crf as crf_lib
from hdr_jax.data import highlight_views, testing
from hdr_jax.eval import protocol, responses, system
from hdr_jax.models import highlight, registry
from hdr_jax.training import tasks


def _module(variant: str = "tiny,curve"):
    return registry.build("highlight", highlight_config.get_config(variant).model)


def test_parameter_counts_are_pinned():
    for variant, count in (("tiny,curve", 3_887), ("tiny", 3_311), ("curve", 561_299),
                           ("", 555_091)):
        module = _module(variant)
        shapes = registry.abstract_variables("highlight", module)
        assert sum(x.size for x in jax.tree.leaves(shapes)) == count


def test_a_fresh_head_returns_the_photo_linearised_as_srgb():
    module = _module()
    photo = jnp.asarray(make_photo(hw=(32, 48))[None])
    variables = registry.init("highlight", module, jax.random.key(0),
                              *registry.example_inputs("highlight", module, 1, 32))
    out = registry.inference("highlight", module)(variables, highlight.input_features(photo))
    assert out["log_ratio"].shape == photo.shape
    assert out["curve"].shape == (1, highlight.CURVE_KNOTS + 1)
    np.testing.assert_array_equal(np.asarray(out["log_ratio"]), 0.0)
    np.testing.assert_allclose(np.asarray(out["curve"])[0], highlight.srgb_knots(), atol=1e-6)
    srgb = crf_lib.srgb_decode(np.asarray(photo))
    linear = highlight.linearise(out, photo, jnp.zeros_like(photo), jnp.zeros(1))
    np.testing.assert_allclose(np.asarray(linear), srgb, atol=2e-4)  # 64 linear segments
    known = highlight.linearise(out, photo, photo**2, jnp.ones(1))
    np.testing.assert_array_equal(np.asarray(known), np.asarray(photo**2))
    np.testing.assert_array_equal(np.asarray(highlight.expand(linear, photo, out["log_ratio"])),
                                  np.asarray(linear))


def test_curve_knots_and_their_response():
    rng = np.random.default_rng(1)
    z = rng.random((2, 5, 7, 3)).astype(np.float32)
    curve = np.stack([highlight.srgb_knots(), np.linspace(0.0, 1.0, highlight.CURVE_KNOTS + 1)])
    got = np.asarray(highlight.apply_knots(jnp.asarray(curve), jnp.asarray(z)))
    grid = np.linspace(0.0, 1.0, highlight.CURVE_KNOTS + 1)
    for i in range(2):
        np.testing.assert_allclose(got[i], np.interp(z[i], grid, curve[i]), atol=1e-6)
    # The response whose inverse the knots are: linearising with it gives the knots' values.
    f = highlight.response_from_knots(curve[0])
    assert crf_lib.is_valid_crf(f)
    np.testing.assert_allclose(crf_lib.apply_inverse_crf(f, z[0]), got[0], atol=2e-3)
    np.testing.assert_allclose(f, crf_lib.srgb_crf(), atol=2e-3)


def test_region_weight_and_inputs():
    levels = np.array([0.0, 200, 224, 237, 250, 254, 255]) / 255.0
    photo = np.zeros((1, 1, 7, 3), np.float32)
    photo[..., 1] = levels  # the brightest channel decides
    expected = np.clip((levels - 224 / 255) / (26 / 255), 0.0, 1.0)
    w = np.asarray(highlight.region_weight(jnp.asarray(photo)))[0, 0, :, 0]
    np.testing.assert_allclose(w, expected, atol=1e-6)
    x = highlight.input_features(jnp.asarray(photo), jnp.array([1.0]))
    assert x.shape == (1, 1, 7, highlight.NUM_INPUTS)
    np.testing.assert_array_equal(x[..., :3], photo)
    np.testing.assert_array_equal(x[..., 4], 1.0)
    # expand: exp(w r) on the linear values, nothing where w = 0
    r = jnp.full(photo.shape, 0.5)
    out = np.asarray(highlight.expand(jnp.ones_like(r), jnp.asarray(photo), r))
    np.testing.assert_allclose(out[0, 0, :, 0], np.exp(0.5 * expected), rtol=1e-6)


def test_loss_is_minus_the_protocol_psnrs():
    rng = np.random.default_rng(0)
    ref = rng.lognormal(0.0, 2.0, (2, 24, 24, 3)).astype(np.float32)
    lum = 0.2126 * ref[..., 0] + 0.7152 * ref[..., 1] + 0.0722 * ref[..., 2]
    ref *= (1000.0 / np.percentile(lum.reshape(2, -1), 99.9, axis=1))[:, None, None, None]
    pred = (ref * rng.lognormal(0.0, 0.3, ref.shape) * np.array([3.0, 0.5])[:, None, None, None])
    pred = pred.astype(np.float32)
    clipped = (rng.random((2, 24, 24)) < 0.2).astype(np.float32)
    args = (jnp.asarray(pred), jnp.asarray(ref), jnp.asarray(clipped))
    loss, terms = losses.highlight_loss(*args, jnp.zeros_like(clipped), overall_weight=0.5,
                                        eps=0.0)
    scores = [protocol.pu21_protocol(p, r, c > 0) for p, r, c in zip(pred, ref, clipped)]
    np.testing.assert_allclose(-np.asarray(terms["clipped"]), [s["pu21_clipped"] for s in scores],
                               rtol=1e-4)
    np.testing.assert_allclose(-np.asarray(terms["overall"]), [s["pu21"] for s in scores],
                               rtol=1e-4)
    np.testing.assert_allclose(np.asarray(terms["gain"]), [s["gain"] for s in scores], rtol=1e-5)
    expected = -np.mean([s["pu21_clipped"] + 0.5 * s["pu21"] for s in scores])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    # The region adds its pixels to the first term: all pixels make it the overall error.
    _, terms_all = losses.highlight_loss(*args, jnp.ones_like(clipped), eps=0.0)
    np.testing.assert_allclose(terms_all["clipped"], terms_all["overall"], rtol=1e-5)
    g = jax.grad(lambda p: losses.highlight_loss(p, *args[1:], jnp.zeros_like(clipped))[0])(
        args[0])
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0


def test_curve_sampler_draws_valid_responses_of_every_family():
    sampler = highlight_views.CurveSampler(np.stack([crf_lib.gamma_crf(1.9)]))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        family, curve = sampler(rng)
        seen.add(family)
        assert crf_lib.is_valid_crf(curve)
    assert seen == {"sRGB", "gamma", "gamma+S", "EMoR"}
    assert highlight_views.CurveSampler(None).families == ("sRGB", "gamma", "gamma+S")


def test_examples_follow_the_protocol(fake_hdr_dir):
    scenes = [r for _, r in highlight_views.load_scenes(fake_hdr_dir, "train")]
    sampler = highlight_views.CurveSampler(None)
    fractions = []
    for i in range(12):
        ex = highlight_views.make_example(scenes[i % len(scenes)], np.random.default_rng(i),
                                          sampler, size=32, jpeg_probability=0.0)
        assert ex["photo"].shape == ex["reference"].shape == (32, 32, 3)
        assert ex["clipped"].shape == (32, 32) and ex["known"].shape == (1,)
        np.testing.assert_array_equal(ex["clipped"] > 0, protocol.clipped_mask(ex["photo"]))
        lum = 0.2126 * ex["reference"][..., 0] + 0.7152 * ex["reference"][..., 1]
        lum += 0.0722 * ex["reference"][..., 2]
        assert np.percentile(lum, 99.9) == pytest.approx(1000.0, rel=1e-4)
        if not ex["known"][0]:
            np.testing.assert_array_equal(ex["linear"], protocol.linearise_srgb(ex["photo"]))
        fractions.append(ex["clipped"].mean())
    assert 0.005 < np.median(fractions) < 0.35
    # A generator state gives one example.
    a, b = (highlight_views.make_example(scenes[0], np.random.default_rng(7), sampler, size=32)
            for _ in range(2))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_held_out_scenes_are_not_training_scenes(fake_hdr_dir):
    train = {s for s, _ in highlight_views.load_scenes(fake_hdr_dir, "train")}
    held = {s for s, _ in highlight_views.load_scenes(fake_hdr_dir, "validation")}
    assert train and held and not train & held
    assert held == {p.stem for p in system.heldout_scenes(fake_hdr_dir)}


def test_train_stream_resumes_from_its_state(fake_hdr_dir):
    scenes = [r for _, r in highlight_views.load_scenes(fake_hdr_dir, "train")]
    kw = dict(size=32, seed=3, batch_size=2)
    it = highlight_views.make_train_iterator(scenes, highlight_views.CurveSampler(None), **kw)
    next(it)
    state = it.get_state()
    expected = next(it)
    again = highlight_views.make_train_iterator(scenes, highlight_views.CurveSampler(None), **kw)
    again.set_state(state)
    got = next(again)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


@pytest.fixture(scope="module")
def head_weights(tiny_weights, tmp_path_factory):
    """The tiny weights plus a random highlight head (non-zero output layer)."""
    directory = tmp_path_factory.mktemp("head") / "weights"
    shutil.copytree(tiny_weights, directory)
    config = highlight_config.get_config("tiny,curve").model.to_dict()
    template = registry.abstract_variables("highlight", registry.build("highlight", config))
    bundle.save_network(directory, "highlight", random_variables(template, seed=5), config)
    return directory


def test_combine_is_the_weighted_geometric_mean_in_the_region():
    rng = np.random.default_rng(3)
    photo = rng.uniform(0.0, 1.0, (6, 7, 3)).astype(np.float32)
    photo[:2] = 1.0  # some pixels at the clip, some in the ramp, most below it
    head = rng.uniform(0.5, 20.0, photo.shape).astype(np.float32)
    merged = rng.uniform(0.5, 20.0, photo.shape).astype(np.float32)
    inside = photo.max(-1) > highlight.REGION_LOW
    assert inside.any() and (~inside).any()
    for weight in (0.0, 0.3, 1.0):
        got = np.asarray(highlight.combine(head, merged, photo, weight))
        want = np.where(inside[..., None], head**weight * merged ** (1 - weight), merged)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_pipeline_fills_the_bright_pixels_and_linearises_with_its_estimate(head_weights,
                                                                           tiny_weights):
    photo = make_photo(hw=(24, 32))  # within the tiny head's working size: no downscaling
    photo[6:12, 8:20] = 1.0  # a clipped blob
    pipe = pipeline.Pipeline.load(head_weights)
    with_head = pipeline.reconstruct(pipe, photo, scale=None)
    without = pipeline.reconstruct(pipe, photo, scale=None, highlights=False)
    bare = pipeline.reconstruct(pipeline.Pipeline.load(tiny_weights), photo, scale=None)
    np.testing.assert_array_equal(without.hdr, bare.hdr)  # the flag is the head, nothing else
    # Outside the region: the merge linearised with the head's curve, i.e. the photo through
    # the inverse of that curve; inside: times the head's ratio.
    log_ratio, curve = pipeline.run_highlight_head(pipe, photo)
    assert curve is not None and crf_lib.is_valid_crf(curve)
    assert np.abs(curve - crf_lib.srgb_crf()).max() > 1e-3  # random weights: not inverse sRGB
    linear = crf_lib.apply_inverse_crf(curve, photo)
    region = np.asarray(highlight.region_weight(jnp.asarray(photo)))[..., 0] > 0
    np.testing.assert_allclose(with_head.hdr[~region], linear[~region], rtol=1e-5, atol=1e-7)
    merged, _ = pipeline.merge_photo_stack(with_head.stack, photo, "anchored", curve)
    filled = np.asarray(highlight.expand(linear, photo, log_ratio))
    expected = np.sqrt(filled * merged)  # HEAD_WEIGHT 0.5: the geometric mean
    assert highlight.HEAD_WEIGHT == 0.5
    np.testing.assert_allclose(with_head.hdr[region], expected[region], rtol=1e-5)
    assert not np.allclose(with_head.hdr[region], merged[region])
    assert not np.allclose(with_head.hdr[region], filled[region])
    # The head's own forward pass, as the training task runs it (one photo, no downscaling).
    net = pipe.highlight
    out = net.apply(net.variables, highlight.input_features(jnp.asarray(photo[None])))
    np.testing.assert_allclose(log_ratio, np.asarray(out["log_ratio"])[0], rtol=1e-6)
    np.testing.assert_allclose(crf_lib.apply_inverse_crf(curve, photo),
                               np.asarray(highlight.apply_knots(out["curve"], photo[None]))[0],
                               atol=3e-3)
    # `hdr-jax brackets` merges its stack the same way.
    hdr, _ = pipeline.photo_hdr(pipe, with_head.stack, photo)
    np.testing.assert_array_equal(hdr, with_head.hdr)
    # A response the user gives is used as given, with the head's flag set.
    gamma = crf_lib.gamma_crf(2.0)
    given = pipeline.reconstruct(pipe, photo, scale=None, response_curve=gamma)
    lin_given = crf_lib.apply_inverse_crf(gamma, photo)
    np.testing.assert_allclose(given.hdr[~region], lin_given[~region], rtol=1e-5, atol=1e-7)
    r_known, none = pipeline.run_highlight_head(pipe, photo, known_response=True)
    assert none is None
    merged_given, _ = pipeline.merge_photo_stack(given.stack, photo, "anchored", gamma)
    filled_given = np.asarray(highlight.expand(lin_given, photo, r_known))
    np.testing.assert_allclose(given.hdr[region], np.sqrt(filled_given * merged_given)[region],
                               rtol=1e-5)


def test_large_photos_run_the_head_at_its_working_size(head_weights, monkeypatch):
    pipe = pipeline.Pipeline.load(head_weights)
    assert pipe.highlight.entry["config"]["working_size"] == 32
    photo = make_photo(hw=(40, 72))
    seen = []
    apply = pipe.highlight.apply
    monkeypatch.setattr(pipe.highlight, "apply", lambda v, x: seen.append(x.shape) or apply(v, x))
    r, curve = pipeline.run_highlight_head(pipe, photo)
    assert r.shape == photo.shape and np.all(np.isfinite(r)) and curve.shape == (1024,)
    assert seen == [(1, 20, 32, highlight.NUM_INPUTS)]  # 18 x 32, padded to a multiple of 4


def test_weights_without_a_head_have_none(tiny_weights):
    pipe = pipeline.Pipeline.load(tiny_weights)
    assert pipe.highlight is None
    with pytest.raises(bundle.WeightsError, match="no 'highlight' network"):
        pipeline.run_highlight_head(pipe, make_photo(hw=(8, 8)))


def test_fake_scenes_make_a_tiny_task_dataset(tmp_path):
    testing.write_fake_hdr_folder(tmp_path)
    config = highlight_config.get_config("tiny")
    config.data.manual_dir = str(tmp_path)
    task = tasks.make_task(config)
    batches = list(task.eval_batches())
    assert sum(len(b["photo"]) for b in batches) == config.data.num_eval
    shapes = registry.train_batch("highlight", config.model, config.batch_size, config.data.size)
    batch = next(task.train_iterator())
    assert {k: v.shape for k, v in batch.items()} == {k: v.shape for k, v in shapes.items()}


def test_cli_reconstruct_with_and_without_the_head(head_weights, cli_env, tmp_path):
    photo = make_photo(hw=(32, 48))  # the CLI's smallest photo; larger than the working size
    photo[6:12, 8:20] = 1.0
    src = tmp_path / "photo.png"
    hio.write_ldr(src, photo)
    image = hio.read_ldr(src)
    pipe = pipeline.Pipeline.load(head_weights)
    written = []
    for flags, highlights in (([], True), (["--no-highlights"], False)):
        out = tmp_path / f"out_{highlights}"
        res = run_cli(["reconstruct", src, "-o", out, "--weights", head_weights, "--scale", "0",
                       "--quiet", *flags], cli_env)
        assert res.returncode == 0, res.stderr
        expected = pipeline.reconstruct(pipe, image, scale=None, highlights=highlights).hdr
        written.append(hio.read_hdr(out / "photo.exr"))
        np.testing.assert_allclose(written[-1], expected, rtol=1e-6)
    assert not np.allclose(*written)


def test_response_protocol_scores_the_head_and_the_merge_from_one_stack(head_weights,
                                                                         tiny_weights):
    radiance = testing.fake_radiance(np.random.default_rng(4), 64, 64, stops=12.0)
    kw = dict(fraction=0.05, jpeg_quality=None)
    curve = crf_lib.s_curve_crf(6.0, gamma=2.2)
    with_head = responses.evaluate_input(pipeline.Pipeline.load(head_weights), radiance, curve,
                                         **kw)["scores"]
    bare = responses.evaluate_input(pipeline.Pipeline.load(tiny_weights), radiance, curve,
                                    **kw)["scores"]
    ours, no_head = responses.ROWS[:2]
    assert with_head[no_head] == bare[ours] == bare[no_head]
    assert with_head[ours]["pu21"] != with_head[no_head]["pu21"]


@pytest.fixture(scope="module")
def bent_head_weights(tiny_weights, tmp_path_factory):
    """The tiny weights plus a clip-level estimate (k = -0.8 where the photo has a shoulder)
    and a random head trained, by its config, on the linearisation that estimate bends."""
    directory = tmp_path_factory.mktemp("bent") / "weights"
    shutil.copytree(tiny_weights, directory)
    save_clip_level(directory)
    config = highlight_config.get_config("tiny,bent").model.to_dict()
    assert config["linearisation"] == "bent" and not config["estimate_curve"]
    template = registry.abstract_variables("highlight", registry.build("highlight", config))
    bundle.save_network(directory, "highlight", random_variables(template, seed=5), config)
    return directory


def test_a_bent_head_fills_on_top_of_the_bent_linearisation(bent_head_weights):
    photo = make_photo(hw=(24, 32))
    photo[6:12, 8:20] = 1.0
    photo[4:6, 8:20] = 0.93  # a shoulder next to the blob, so the estimate bends
    pipe = pipeline.Pipeline.load(bent_head_weights)
    curve, gain = pipeline.blind_linearisation(pipe, photo)
    assert gain < 0.9  # the estimate bends down
    linear = pipeline.blind_linear(pipe, photo)
    np.testing.assert_allclose(linear, crf_lib.apply_inverse_crf(curve, photo) * gain, rtol=1e-6)
    out = pipeline.reconstruct(pipe, photo, scale=None)
    region = np.asarray(highlight.region_weight(jnp.asarray(photo)))[..., 0] > 0
    np.testing.assert_allclose(out.hdr[~region], linear[~region], rtol=1e-5, atol=1e-7)
    log_ratio, estimate = pipeline.run_highlight_head(pipe, photo)
    assert estimate is None
    merged, _ = pipeline.merge_photo_stack(out.stack, photo, "anchored", curve)
    filled = np.asarray(highlight.expand(linear, photo, log_ratio))
    np.testing.assert_allclose(out.hdr[region], np.sqrt(filled * merged * gain)[region],
                               rtol=1e-5)
    # Inverse sRGB would be a different HDR: the config decides the linearisation.
    assert not np.allclose(out.hdr[~region], protocol.linearise_srgb(photo)[~region])


def test_the_bent_task_renders_examples_with_the_pipelines_linearisation(fake_hdr_dir,
                                                                         bent_head_weights):
    config = highlight_config.get_config("tiny,bent")
    config.data.manual_dir = str(fake_hdr_dir)
    config.data.cliplevel_weights = str(bent_head_weights)
    config.data.known_probability = 0.5
    task = tasks.make_task(config)
    pipe = pipeline.Pipeline.load(bent_head_weights)
    scenes = [r for _, r in highlight_views.load_scenes(fake_hdr_dir, "train")]
    kinds = set()
    for i in range(8):
        ex = highlight_views.make_example(scenes[i % len(scenes)], np.random.default_rng(i),
                                          highlight_views.CurveSampler(None), size=32,
                                          known_probability=0.5, blind=task.blind_linearisation)
        if not ex["known"][0]:
            np.testing.assert_allclose(ex["linear"], pipeline.blind_linear(pipe, ex["photo"]),
                                       rtol=1e-6)
        kinds.add(bool(ex["known"][0]))
    assert kinds == {True, False}
    batch = next(task.train_iterator())
    assert batch["linear"].shape == (config.batch_size, 32, 32, 3)
    config.model.linearisation = "curvy"
    with pytest.raises(ValueError, match="'srgb' or 'bent'"):
        tasks.make_task(config).blind_linearisation  # noqa: B018
