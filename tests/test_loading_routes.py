"""Every method on every loading route refuses a base model other than the one its adapter was made for, before
any weight is read, with a message naming the difference; on the right base every route gives the saved model.
One row per method: tests/method_rows.py, shared with tests/test_conformance.py."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from peft_interp.sharing import load_adapter

from .method_rows import METHODS_BY_NAME as METHODS

ROUTES = ["PeftModel.from_pretrained", "sharing.load_adapter", "PeftModel.load_adapter", "get_peft_model"]


def load(route: str, base, folder):
    if route == "PeftModel.from_pretrained":
        return PeftModel.from_pretrained(base, folder)
    if route == "sharing.load_adapter":
        return load_adapter(base, folder)
    config = PeftConfig.from_pretrained(folder)
    if route == "get_peft_model":  # a saved config (it carries the base model's signature) on a new model
        return get_peft_model(base, config)
    model = get_peft_model(base, config)  # the second adapter of a model: load_adapter
    model.load_adapter(folder, adapter_name="saved")
    model.set_adapter("saved")
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Per method: the folder of a saved adapter with perturbed weights."""
    folders = {}
    for method, row in METHODS.items():
        torch.manual_seed(0)
        model = get_peft_model(row.make_base(), row.make_config())
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(torch.randn_like(param) * 0.1)
        folders[method] = tmp_path_factory.mktemp(method)
        model.save_pretrained(folders[method])
    return folders


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("method", list(METHODS))
def test_another_base_model_is_refused_naming_the_difference(saved, method, route):
    other, key = METHODS[method].make_other_base, METHODS[method].differing_key
    with mock.patch("peft.peft_model.set_peft_model_state_dict") as load_weights:
        with pytest.raises(ValueError, match=rf"different base model \({key}: adapter \d+|different base model "
                                             rf"\({key}: adapter '"):  # fmt: skip
            load(route, other(), saved[method])
    load_weights.assert_not_called()


@pytest.mark.parametrize("method", list(METHODS))
def test_the_right_base_model_loads_on_every_route(saved, method, images):
    base = METHODS[method].make_base
    results = []
    for route in ROUTES[:3]:  # get_peft_model builds a fresh adapter: nothing to compare
        model = load(route, base(), saved[method]).eval()
        with torch.no_grad():
            results.append(model(pixel_values=images).logits)
    assert all(torch.equal(logits, results[0]) for logits in results[1:])
    fresh = get_peft_model(base(), METHODS[method].make_config()).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(pixel_values=images).logits, results[0])  # the saved weights were loaded


@pytest.mark.parametrize("method", list(METHODS))
def test_saved_keys_carry_no_adapter_name_and_other_names_round_trip(saved, method, images, tmp_path):
    """Checkpoint keys are free of the adapter name (also inside containers of whole modules, like IVPT's head or
    IntCoOp's attention), so an adapter saved under one name loads under any other with every weight."""
    keys = load_file(saved[method] / "adapter_model.safetensors").keys()
    assert not [key for key in keys if ".default" in key]
    config, base = METHODS[method].make_config, METHODS[method].make_base
    reference = PeftModel.from_pretrained(base(), saved[method]).eval()
    renamed = get_peft_model(base(), config(), adapter_name="birds")
    renamed.load_adapter(saved[method], adapter_name="birds")  # overwrite the fresh weights of "birds"
    renamed.save_pretrained(tmp_path)
    back = PeftModel.from_pretrained(base(), tmp_path / "birds").eval()  # PEFT saves other names in a sub-folder
    with torch.no_grad():
        expected = reference(pixel_values=images).logits
        assert torch.equal(renamed.eval()(pixel_values=images).logits, expected)
        assert torch.equal(back(pixel_values=images).logits, expected)
