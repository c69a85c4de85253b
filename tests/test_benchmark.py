"""`peft-interp benchmark`: the protocols on fabricated dataset folders, the table against the unit results, the
base-to-novel split and few-shot sampling against hand-computed expectations, and resume after an interruption."""

import json
from unittest import mock

import numpy as np
import pytest
from peft import PeftModel

from peft_interp import benchmark
from peft_interp.benchmark import (
    BenchmarkConfig,
    DataSource,
    harmonic_mean,
    run_benchmark,
)
from peft_interp.datasets import dataset_folder

from .fake_datasets import SPLIT_FILE_LAYOUTS, write_everything
from .test_training import tiny_dinov2
from .tiny_models import make_clip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data = write_everything(root / "data")
    make_clip().save_pretrained(root / "clip")
    tiny_dinov2().save_pretrained(root / "dinov2")
    return root, data


def config(setup, tmp_path, **overrides):
    root, data = setup
    values = {"method": "coop", "protocol": "base_to_novel", "datasets": ["oxford_pets", "ucf101"],
              "output_dir": str(tmp_path), "data_root": str(data), "model": str(root / "clip"), "seeds": [1, 2],
              "training": {"max_steps": 2, "batch_size": 2}, "batch_size_eval": 16}
    return BenchmarkConfig(**{**values, **overrides})


def units(tmp_path, protocol):
    return {str(p.relative_to(tmp_path / "results" / protocol)): json.loads(p.read_text())
            for p in sorted((tmp_path / "results" / protocol).rglob("*.json"))}  # fmt: skip


def test_base_to_novel_split_and_few_shot_sampling_by_hand(setup):
    _, data = setup
    source = DataSource("oxford_pets", str(data), 28)
    entries = json.loads((dataset_folder("oxford_pets", data) / "split_zhou_OxfordPets.json").read_text())
    names = SPLIT_FILE_LAYOUTS["oxford_pets"][3]  # 4 classes: base = ids 0, 1; novel = ids 2, 3
    train = source.train("base", 2, seed=5)
    assert train.features["label"].names == names[:2]
    # hand-computed: per class in label order, rng.choice over that class's positions in the train list
    rng = np.random.default_rng(5)
    labels = np.array([label for _, label, _ in entries["train"]])
    expected = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        expected += [entries["train"][i][0] for i in rng.choice(members, size=2, replace=False)]
    paths = [item["path"] for item in train.cast_column("image", train.features["image"].__class__(decode=False))["image"]]
    assert [p.split("/images/")[1] for p in paths] == expected
    assert list(train["label"]) == [0, 0, 1, 1]
    novel = source.test("novel")
    assert novel.features["label"].names == names[2:] and list(novel["label"]) == [0, 0, 1, 1]
    cub = DataSource("cub", str(data), 28)  # 3 classes: base = first ceil(3 / 2) = 2
    assert cub.test("base").features["label"].names == ["Black_footed_Albatross", "Laysan_Albatross"]
    assert cub.test("novel").features["label"].names == ["Sooty_Albatross"]
    assert len(DataSource("oxford_pets", str(data), 28, max_test_per_class=1).test("all")) == 4


def test_base_to_novel_table_and_resume_after_an_interruption(setup, tmp_path):
    full = run_benchmark(config(setup, tmp_path / "full"))
    results = units(tmp_path / "full", "base_to_novel")
    assert sorted(results) == ["oxford_pets/seed1.json", "oxford_pets/seed2.json", "ucf101/seed1.json",
                               "ucf101/seed2.json"]  # fmt: skip
    # the table from the unit results, by hand: mean (population std) over seeds in %, HM of the means
    for dataset in ("oxford_pets", "ucf101"):
        base = [results[f"{dataset}/seed{s}.json"]["base"] for s in (1, 2)]
        novel = [results[f"{dataset}/seed{s}.json"]["novel"] for s in (1, 2)]
        row = full["datasets"][dataset]["all"]
        assert row["base"]["mean"] == pytest.approx(np.mean(base)) and row["base"]["std"] == pytest.approx(np.std(base))
        assert row["hm"]["mean"] == pytest.approx(harmonic_mean(np.mean(base), np.mean(novel)))
    average = full["average"]["all"]
    means = [full["datasets"][d]["all"] for d in ("oxford_pets", "ucf101")]
    assert average["base"] == pytest.approx(np.mean([m["base"]["mean"] for m in means]))
    assert average["hm"] == pytest.approx(harmonic_mean(average["base"], average["novel"]))
    table = (tmp_path / "full" / "table.md").read_text()
    assert "| dataset | base | novel | HM |" in table and "| OxfordPets |" in table and "| UCF101 |" in table
    assert "| **average** |" in table

    # seed 1 only, interrupted after its first unit (as a kill would), then run again: only the other unit runs,
    # and both units equal the uninterrupted run's
    calls, original = [], benchmark.run_unit

    def interrupted(*args):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(args[1:])
        return original(*args)

    resumed_dir = tmp_path / "resumed"
    with mock.patch.object(benchmark, "run_unit", interrupted), pytest.raises(KeyboardInterrupt):
        run_benchmark(config(setup, resumed_dir, seeds=[1]))
    assert calls == [("oxford_pets", 1, 16)]
    assert (resumed_dir / "table.md").exists()  # the table so far is written after every unit
    calls.clear()
    with mock.patch.object(benchmark, "run_unit", lambda *args: calls.append(args[1:]) or original(*args)):
        run_benchmark(config(setup, resumed_dir, seeds=[1]))
    assert calls == [("ucf101", 1, 16)]
    assert units(resumed_dir, "base_to_novel") == {name: value for name, value in results.items() if "seed1" in name}


def test_few_shot_protocol_table(setup, tmp_path):
    table = run_benchmark(config(setup, tmp_path, protocol="few_shot", datasets=["dtd"], shots=[1, 2], seeds=[1]))
    assert sorted(units(tmp_path, "few_shot")) == ["dtd/1shot-seed1.json", "dtd/2shot-seed1.json"]
    assert set(table["datasets"]["dtd"]) == {"1shot", "2shot"}
    assert "| dataset | 1-shot | 2-shot |" in (tmp_path / "table.md").read_text()


def test_cross_dataset_scores_the_imagenet_prompt_on_each_target(setup, tmp_path):
    root, data = setup
    cfg = config(setup, tmp_path, protocol="domain_generalization", datasets=["imagenet_a", "imagenetv2"], seeds=[1])
    table = run_benchmark(cfg)
    results = units(tmp_path, "domain_generalization")
    assert sorted(results) == ["imagenet/seed1.json", "imagenet_a/seed1.json", "imagenetv2/seed1.json"]
    # independent check: the trained adapter, pointed at ImageNet-A's 3 classes, scores the recorded accuracy
    from peft_interp.pipeline import load_backbone
    from peft_interp.datasets import load_benchmark_dataset
    from peft_interp.data.preprocessing import CLIP_MEAN, CLIP_STD, ImageTransform
    from peft_interp.training.data import ImageCollator
    from peft_interp.evaluation.runner import evaluate_accuracy

    adapter = tmp_path / "runs" / "domain_generalization" / "imagenet" / "16shot-seed1" / "adapter"
    model = PeftModel.from_pretrained(load_backbone(str(root / "clip")), adapter).eval()
    target = load_benchmark_dataset("imagenet_a", dataset_folder("imagenet_a", data), "test")
    model.base_model.set_class_names(target.features["label"].names)
    accuracy = evaluate_accuracy(model, target, ImageCollator(ImageTransform(28, CLIP_MEAN, CLIP_STD)))["accuracy"]
    assert results["imagenet_a/seed1.json"]["accuracy"] == pytest.approx(accuracy)
    assert table["average"]["all"]["accuracy"] == pytest.approx(
        np.mean([results["imagenet_a/seed1.json"]["accuracy"], results["imagenetv2/seed1.json"]["accuracy"]]))
    header = (tmp_path / "table.md").read_text().splitlines()[2]
    assert header == "| source: ImageNet | ImageNetA | ImageNetV2 | average |"


def test_parts_protocol_ivpt_on_cub(setup, tmp_path):
    root, data = setup
    cfg = config(setup, tmp_path, method="ivpt", protocol="parts", datasets=["cub"], model=str(root / "dinov2"),
                 seeds=[1], image_size=32)  # fmt: skip
    table = run_benchmark(cfg)
    (result,) = units(tmp_path, "parts").values()
    assert {"accuracy", "consistency", "stability"} <= set(result) and "alignment" not in result
    assert 0 <= result["accuracy"] <= 100 and 0 <= result["consistency"] <= 100 and 0 <= result["stability"] <= 100
    assert "| dataset | accuracy | consistency | stability |" in (tmp_path / "table.md").read_text()
    assert table["datasets"]["cub"]["all"]["consistency"]["mean"] == pytest.approx(result["consistency"])
    # `peft-interp evaluate --parts` on CUB scores the same box crops
    from peft_interp.cli import main

    adapter = tmp_path / "runs" / "parts" / "cub" / "16shot-seed1" / "adapter"
    main(["evaluate", "--adapter", str(adapter), "--model", str(root / "dinov2"), "--dataset",
          f"cub:{dataset_folder('cub', data)}", "--split", "test", "--parts", "--image-size", "32", "--batch-size", "16",
          "--output", str(tmp_path / "parts.json")])  # fmt: skip
    evaluated = json.loads((tmp_path / "parts.json").read_text())
    assert evaluated["consistency"] == pytest.approx(result["consistency"])


def test_protocol_checks(setup, tmp_path):
    with pytest.raises(ValueError, match="needs a CLIP method"):
        config(setup, tmp_path, method="ivpt")
    with pytest.raises(ValueError, match="protocol parts scores prototype maps"):
        config(setup, tmp_path, protocol="parts")
    with pytest.raises(ValueError, match="unknown dataset 'pets'"):
        config(setup, tmp_path, datasets=["pets"])
    with pytest.raises(ValueError, match="give --data-root"):
        config(setup, tmp_path, data_root=None)
    assert config(setup, tmp_path, datasets=["coop11"]).datasets[:2] == ["imagenet", "caltech101"]
