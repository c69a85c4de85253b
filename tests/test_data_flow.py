"""Data flows through arguments: the CLIP prompt methods' losses and eval logits come through the core's hooks (its
forward is written once), IVPT's prompt levels hand their records to the forward pass that asked for them and keep
nothing afterwards, and no tuner reads a config field its config family does not declare."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model

import peft_interp
from peft_interp import CoOpConfig, DualViewMIConfig, IntCoOpConfig, IVPTConfig, MaPLeConfig
from peft_interp.tuners.base import _subclasses
from peft_interp.tuners.clip_prompt.model import ClipPromptTuner
from peft_interp.tuners.intcoop.model import IntCoOpModel
from peft_interp.tuners.ivpt.layer import IVPTPromptLevel, LevelRecord, recording_levels

from .tiny_models import make_backbone, make_clip

CLASSES = ["cat", "small dog", "owl"]


# ------------------------------------------------------------------------------------------- CLIP prompt core
def test_clip_prompt_methods_write_no_forward_of_their_own():
    """Every CLIP prompt method (IPL over each learner included) runs the core's forward; only IntCoOp, whose
    forward takes per-image attribute words and builds its own batch, has one."""
    import peft_interp.tuners.ipl.model  # noqa: F401  (the IPL classes over each learner)

    for cls in _subclasses(ClipPromptTuner):
        tuners = [owner for owner in cls.__mro__ if issubclass(owner, ClipPromptTuner)]
        owners = {owner for owner in tuners if "forward" in vars(owner)} - {ClipPromptTuner, IntCoOpModel}
        assert not owners, f"{cls.__name__} overrides forward in {sorted(o.__name__ for o in owners)}"
        assert "_classify" not in vars(cls) or cls is ClipPromptTuner


def test_dualview_eval_loss_is_on_the_soft_logits_and_fusion_changes_only_the_returned_logits(images):
    labels = torch.tensor([0, 1, 2, 1])
    model = get_peft_model(make_clip(), DualViewMIConfig(class_names=CLASSES, augmentation="none",
                                                         inference="late_fusion", fusion_weight=0.25))  # fmt: skip
    with torch.no_grad():
        model.base_model.context_layer.context["default"].normal_()  # soft view != hand-crafted view
        soft = model.train()(pixel_values=images, labels=labels)
        fused = model.eval()(pixel_values=images, labels=labels)
    hand = model.base_model.hand_crafted_features("default")
    scale = model.base_model.model.logit_scale.exp()
    assert torch.equal(fused.loss_terms["classification"], F.cross_entropy(soft.logits, labels))
    assert torch.equal(fused.loss_terms["mutual_information"], soft.loss_terms["mutual_information"])
    torch.testing.assert_close(fused.logits, 0.25 * soft.logits + 0.75 * scale * soft.image_embeds @ hand.T)
    assert not torch.allclose(fused.logits, soft.logits)


@pytest.mark.parametrize("config_class", [CoOpConfig, IntCoOpConfig])
def test_explain_describes_the_adapter_whose_predictions_it_returns(images, config_class):
    settings = {"visual_prompt_depth": 1} if config_class is IntCoOpConfig else {}
    model = get_peft_model(make_clip(), config_class(class_names=CLASSES, **settings)).eval()
    model.add_adapter("other", config_class(class_names=CLASSES, **settings))
    with torch.no_grad():
        model.base_model.context_layer.context["other"].normal_()  # the two prompts differ
    with pytest.raises(ValueError, match=r"active adapter 'default'; call `set_adapter\('other'\)` first"):
        model.explain(images, adapter_name="other")
    model.set_adapter("other")
    with torch.no_grad():
        explanation = model.explain(images, adapter_name="other")
        logits = model(pixel_values=images).logits
    torch.testing.assert_close(explanation.logits, logits)
    decoded = {name: model.base_model.prompt_explanation(name).nearest.token_ids for name in ("default", "other")}
    assert torch.equal(explanation.prompt.nearest.token_ids, decoded["other"])
    assert not torch.equal(decoded["other"], decoded["default"])


def test_maple_refuses_image_embeds_only_while_its_adapter_prompts_the_image_tower(images):
    model = get_peft_model(make_clip(), MaPLeConfig(class_names=CLASSES, prompt_depth=2)).eval()
    image_embeds = model.base_model.frozen_image_features(images)
    with pytest.raises(ValueError, match="MaPLeModel prompts the image tower: pass `pixel_values`"):
        model(image_embeds=image_embeds)
    with model.disable_adapter(), torch.no_grad():  # zero-shot CLIP: precomputed features are the same features
        assert torch.equal(model(image_embeds=image_embeds).logits, model(pixel_values=images).logits)


# ------------------------------------------------------------------------------------------- IVPT level records
def ivpt():
    torch.manual_seed(0)
    return get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3, num_prototypes=[9, 7, 5]))


def prompt_levels(model) -> list[IVPTPromptLevel]:
    return [module for module in model.modules() if isinstance(module, IVPTPromptLevel)]


def assert_levels_hold_nothing(model) -> None:
    for level in prompt_levels(model):
        assert level.sink is None
        held = [name for name, value in vars(level).items() if isinstance(value, (torch.Tensor, LevelRecord, list))]
        assert not held, held


def test_levels_hold_no_record_after_forward_explain_or_a_bare_backbone_run(images):
    model = ivpt()
    levels = prompt_levels(model)
    assert len(levels) == 2
    model.train()(pixel_values=images, labels=torch.tensor([0, 1, 2, 1])).loss.backward()  # + equivariance pass
    assert_levels_hold_nothing(model)
    model.eval().explain(images)
    assert_levels_hold_nothing(model)
    model.base_model.encode_image(images)  # the levels run, nobody asked for their records (e.g. concept naming)
    assert_levels_hold_nothing(model)


def test_each_forward_gets_the_records_of_its_own_images(images):
    model = ivpt().eval()
    tuner = model.base_model
    other = torch.rot90(images, k=1, dims=(2, 3))
    with torch.no_grad():
        first, _ = tuner._concepts(images)
        between, _ = tuner._concepts(other)
        again, _ = tuner._concepts(images)
    assert len(first) == len(again) == 2
    for a, b, c in zip(first, again, between):
        assert torch.equal(a.maps, b.maps) and torch.equal(a.grouping, b.grouping)
        assert not torch.equal(a.maps, c.maps)


def test_an_exception_mid_forward_leaves_no_stale_record(images):
    model = ivpt().eval()
    expected = model.explain(images)
    layers = model.base_model.model.encoder.layer

    def fail(*_):
        raise RuntimeError("boom")

    hook = layers[-1].register_forward_pre_hook(fail)  # after the prompted blocks ran and recorded
    try:
        with pytest.raises(RuntimeError, match="boom"):
            model.explain(images)
    finally:
        hook.remove()
    assert_levels_hold_nothing(model)
    after = model.explain(images)
    for a, b in zip(after.level_maps, expected.level_maps):
        assert torch.equal(a, b)


def test_a_level_whose_block_did_not_run_is_named(images, monkeypatch):
    model = ivpt()
    tuner = model.base_model
    tokens = torch.zeros(len(images), 1 + 16, 32)
    monkeypatch.setattr(tuner, "encode_image", lambda pixel_values: tokens)  # the blocks never run
    with pytest.raises(RuntimeError, match=r"level of `encoder\.layer\.\d` ran 0 times in one forward pass"):
        tuner._concepts(images)
    assert_levels_hold_nothing(model)


def test_recording_lists_are_per_call_and_nested_recordings_restore_the_outer_one(images):
    model = ivpt().eval()
    levels = dict(model.base_model._prompt_levels())
    with recording_levels(levels) as outer:
        with recording_levels(levels) as inner:
            model.base_model.encode_image(images)
        assert all(level.sink is outer[name] for name, level in levels.items())
        model.base_model.encode_image(images)
    assert [len(records) for records in inner.values()] == [1, 1]
    assert [len(records) for records in outer.values()] == [1, 1] and outer is not inner
    assert_levels_hold_nothing(model)


# ------------------------------------------------------------------------------------------- config fields
def test_tuners_read_config_fields_by_name_not_by_probing():
    """A tuner reads the fields its config family declares (``config.name``); probing with a default
    (``getattr(config, name, default)``, ``hasattr(config, name)``) is how a shared base ends up reading one method's
    field. The one probe left: the CLIP core's ``learning_rate``, which every CLIP config declares except IPL over
    CoOp (whose recipe is then CoOp's)."""
    root = Path(peft_interp.__file__).parent / "tuners"
    probes = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "config.py":  # a config validating its own fields by name
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bhasattr\((self\.)?config\b|\bgetattr\((self\.)?config, [^,()]+, ", line):  # a default
                probes.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    allowed = ['clip_prompt/model.py', 'getattr(config, "learning_rate", None)']
    assert [p for p in probes if not (p.startswith(allowed[0]) and allowed[1] in p)] == []
