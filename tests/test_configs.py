"""The training configs: strict variants and the values the bundled recipes depend on."""

from __future__ import annotations

import pytest

from experiments.configs import cfnet, common, drtmo, highlight, response


@pytest.mark.parametrize(
    "module, variant, match",
    [
        (cfnet, "x3", "unknown cfnet config variant.*'x3'"),
        (cfnet, "x2,tyni", "unknown cfnet.*'tyni'"),
        (cfnet, "x2,x4", "one of"),
        (cfnet, "paper,cpu", "one of"),
        (drtmo, "up,down", "one of"),
        (drtmo, "cpu", "needs one of"),
        (drtmo, "up,full", "unknown drtmo.*'full'"),
        (drtmo, "up,cpu,half", "one of"),
        (response, "small", "unknown response"),
        (highlight, "curves", "unknown highlight.*'curves'"),
    ],
)
def test_a_bad_variant_is_an_error(module, variant, match):
    with pytest.raises(ValueError, match=match):
        module.get_config(variant)


def test_parse_variant_ignores_spaces_and_empty_items():
    assert common.parse_variant(" x2 , tiny,,", cfnet.VARIANTS, name="cfnet") == {"x2", "tiny"}
    assert common.parse_variant("", cfnet.VARIANTS, name="cfnet") == frozenset()


def test_drtmo_width_presets_set_each_value_once():
    cpu, paper = drtmo.get_config("up"), drtmo.get_config("down,paper")
    assert (cpu.optimizer.learning_rate, cpu.model.dropout_rate, cpu.model.depth) == (1e-4, 0.0, 7)
    assert (cpu.model.residual_base, cpu.batch_size, cpu.data.crop_size) == ("naive", 8, 128)
    assert cpu.model.bn_use_running_average_at_inference
    assert (paper.optimizer.learning_rate, paper.model.dropout_rate, paper.model.depth) == (2e-4, 0.5, 8)
    assert (paper.model.residual_base, paper.batch_size, paper.data.builder_config) == ("input", 1, "default")
    assert paper.direction == paper.model.direction == "down"
    assert not paper.model.bn_use_running_average_at_inference


def test_cfnet_scale_and_tiny_schedule():
    x4 = cfnet.get_config("x4,cpu")
    assert (x4.model.scale, x4.model.features, x4.data.eval_patch_size) == (4, 32, 64)
    tiny = cfnet.get_config("tiny")
    assert tiny.model.scale == 2
    assert (tiny.num_train_steps, tiny.log_every, tiny.eval_every, tiny.checkpoint_every) == (4, 2, 4, 2)


def test_cfnet_colour_stage_of_the_bundled_recipe():
    base, colour = cfnet.get_config("x2,cpu"), cfnet.get_config("x2,cpu,colour")
    assert (base.loss.colour_weight, base.loss.mef_weight, base.num_train_steps) == (0.0, 1.0, 1000)
    assert (colour.loss.colour_weight, colour.loss.mef_weight, colour.num_train_steps) == (4.0, 1.0, 300)
    assert base.model.chroma_blend == colour.model.chroma_blend == 0.35
    # Only the loss and the schedule differ: the colour stage fine-tunes the same network.
    assert colour.model.to_dict() == base.model.to_dict()


def test_highlight_views_are_the_working_size():
    base, tiny = highlight.get_config(""), highlight.get_config("curve,tiny")
    assert (base.data.size, base.model.estimate_curve) == (128, False)
    assert (tiny.data.size, tiny.model.working_size, tiny.model.estimate_curve) == (32, 32, True)
