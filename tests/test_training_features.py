"""Evaluation during training with the best adapter kept, and --push-to-hub through the sharing code (mocked Hub)."""

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from peft_interp import IVPTConfig, VPTDeepConfig
from peft_interp.training import InterpTrainer, TrainingArguments

from .test_training import (
    IMAGE_SIZE,
    assert_same_weights,
    stack,
    tensor_rows,
    tiny_dinov2,
)


def make_trainer(output_dir, config_cls=VPTDeepConfig, **overrides):
    model = get_peft_model(tiny_dinov2(), config_cls(num_classes=2, image_size=IMAGE_SIZE))
    args = TrainingArguments(str(output_dir), **{"max_steps": 6, "batch_size": 2, "logging_steps": 1,
                                                 "report_to": None, **overrides})  # fmt: skip
    return InterpTrainer(model, args, tensor_rows(), stack, progress=False, eval_dataset=tensor_rows(6, 2)[::-1])


def test_best_adapter_is_the_one_with_the_best_evaluation(tmp_path):
    trainer = make_trainer(tmp_path, eval_steps=2, save_steps=1, save_total_limit=None)
    scripted = iter([0.5, 0.75, 0.25])  # steps 2, 4, 6: the best is step 4
    with mock.patch.object(InterpTrainer, "evaluate", lambda self, model=None: {"eval_accuracy": next(scripted)}):
        output = trainer.train()
    assert output.best_metric == 0.75 and output.best_adapter_dir == tmp_path / "best-adapter"
    assert_same_weights(load_file(tmp_path / "best-adapter" / "adapter_model.safetensors"),
                        load_file(tmp_path / "checkpoint-4" / "adapter_model.safetensors"))  # fmt: skip
    assert json.loads((tmp_path / "best-adapter" / "best_metric.json").read_text()) == {"step": 4, "eval_accuracy": 0.75}
    state = json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())
    assert (state["best_step"], state["best_metric"]) == (4, 0.75)
    assert [(r["step"], r["eval_accuracy"]) for r in state["log_history"] if "eval_accuracy" in r] == [
        (2, 0.5), (4, 0.75), (6, 0.25)]  # fmt: skip


def test_evaluation_is_real_accuracy_and_does_not_change_training(tmp_path):
    """IVPT draws random numbers while training (Gumbel noise, equivariance): evaluating in between must not move
    them, so the final adapter is bit-identical to a run without evaluation."""
    plain = make_trainer(tmp_path / "plain", IVPTConfig).train()
    evaluated_trainer = make_trainer(tmp_path / "evaluated", IVPTConfig, eval_steps=3)
    evaluated = evaluated_trainer.train()
    assert_same_weights(load_file(plain.adapter_dir / "adapter_model.safetensors"),
                        load_file(evaluated.adapter_dir / "adapter_model.safetensors"))  # fmt: skip
    # the recorded accuracy is the best adapter's accuracy, recomputed independently
    best = PeftModel.from_pretrained(tiny_dinov2(), evaluated.best_adapter_dir).eval()
    rows = tensor_rows(6, 2)[::-1]
    with torch.no_grad():
        logits = best(pixel_values=torch.stack([r["pixel_values"] for r in rows])).logits
    expected = (logits.argmax(-1) == torch.stack([r["labels"] for r in rows])).float().mean().item()
    assert evaluated.best_metric == pytest.approx(expected)


def test_eval_steps_without_a_validation_set_is_refused(tmp_path):
    model = get_peft_model(tiny_dinov2(), VPTDeepConfig(num_classes=2, image_size=IMAGE_SIZE))
    with pytest.raises(ValueError, match="eval_steps is set but no eval_dataset"):
        InterpTrainer(model, TrainingArguments(str(tmp_path), eval_steps=2), tensor_rows(), stack)


def test_cli_train_evaluates_keeps_the_best_and_pushes_it(tmp_path):
    from peft_interp.cli import main

    from .test_training import write_imagefolder

    tiny_dinov2().save_pretrained(tmp_path / "model")
    images = write_imagefolder(tmp_path / "images")
    uploads = []

    def upload_folder(**kwargs):
        folder = Path(kwargs["folder_path"])  # a temporary folder: read it while it exists
        uploads.append({"repo_id": kwargs["repo_id"], "files": sorted(path.name for path in folder.iterdir()),
                        "explanation": json.loads((folder / "explanation.json").read_text()),
                        "weights": load_file(folder / "adapter_model.safetensors")})  # fmt: skip
        return mock.Mock(oid="abc123")

    with mock.patch("peft_interp.sharing.HfApi") as api:
        api.return_value.upload_folder.side_effect = upload_folder
        main(["train", "--method", "vpt_deep", "--model", str(tmp_path / "model"), "--dataset", f"imagefolder:{images}",
              "--split", "train", "--batch-size", "2", "--max-steps", "4", "--eval-steps", "2", "--eval-split", "train",
              "--output-dir", str(tmp_path / "run"), "--push-to-hub", "me/vpt-test"])  # fmt: skip
    api.return_value.create_repo.assert_called_once_with("me/vpt-test", private=False, exist_ok=True, repo_type="model")
    (upload,) = uploads
    assert upload["repo_id"] == "me/vpt-test"
    assert {"adapter_config.json", "adapter_model.safetensors", "explanation.json", "README.md"} <= set(upload["files"])
    best = json.loads((tmp_path / "run" / "best-adapter" / "best_metric.json").read_text())
    assert upload["explanation"]["metrics"] == {"validation_accuracy": pytest.approx(best["eval_accuracy"])}
    assert_same_weights(upload["weights"], load_file(tmp_path / "run" / "best-adapter" / "adapter_model.safetensors"))
