"""IntCoOp never trains silently without attributes: `peft-interp train --attribute-source` and its refusals."""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from PIL import Image

from peft_interp.cli import main
from peft_interp.pipeline import label_attributes, method_config
from peft_interp.data import load_clip_tokenizer
from peft_interp.training.data import Columns, ImageTransform

from .test_training import write_imagefolder
from .tiny_models import IMAGE_SIZE, make_clip

NAMES = ["tree", "cat"]


def rows(count=4):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)) for _ in range(count)]
    return Dataset.from_dict({"image": images, "label": [i % 2 for i in range(count)], "id": [f"im{i}" for i in range(count)]})


def args(**values):
    defaults = dict(method="intcoop", attribute_source=None, attribute_column=None, attribute_id_column="id")
    return argparse.Namespace(**{**defaults, **values})


def label(spec=None, dataset=None, **values):
    config = method_config("intcoop", NAMES, {"visual_prompt_depth": 1})
    transform = ImageTransform(IMAGE_SIZE)
    return label_attributes(args(attribute_source=spec, **values), make_clip(), transform, dataset or rows(),
                            NAMES, Columns(), config)  # fmt: skip


def test_intcoop_without_an_attribute_source_is_refused():
    with pytest.raises(SystemExit, match="trains IntCoOp's attribute extractor .* give --attribute-source \\(column:"):
        label(None)
    ipl_config = method_config("ipl", NAMES, {"context_learner": "intcoop"})  # IPL over IntCoOp is refused too
    assert getattr(ipl_config, "attribute_loss_weight", None) is not None


def test_zero_shot_labels_are_the_best_adjective_by_hand(tmp_path, capsys):
    (tmp_path / "adjectives.txt").write_text("# colours\ngreen\n\nstriped\nwooden\n")
    dataset, columns = label(f"zero-shot:{tmp_path / 'adjectives.txt'}")
    assert columns.attribute == "attribute"
    assert "IntCoOp attributes: zero-shot CLIP over 3 adjectives" in capsys.readouterr().out
    clip, tokenizer, transform = make_clip(), load_clip_tokenizer(), ImageTransform(IMAGE_SIZE)
    for row in dataset:
        name = NAMES[row["label"]]
        with torch.no_grad():
            image = F.normalize(clip.get_image_features(pixel_values=transform(row["image"])[None]).pooler_output, dim=-1)
            scores = {}
            for adjective in ("green", "striped", "wooden"):
                ids = torch.tensor([tokenizer.encode(f"a photo of a {adjective} {name}.")])
                text = F.normalize(clip.get_text_features(input_ids=ids).pooler_output, dim=-1)
                scores[adjective] = float(image @ text.T)
        assert row["attribute"] == max(scores, key=scores.get)


def test_label_file_and_column_sources(tmp_path, capsys):
    (tmp_path / "labels.json").write_text(json.dumps({"im0": "green", "im2": "dark"}))
    dataset, columns = label(f"file:{tmp_path / 'labels.json'}")
    assert dataset[columns.attribute] == ["green", "", "dark", ""]
    assert "2 of 4 training images have a word" in capsys.readouterr().out
    with_words = rows().add_column("adjective", ["soft", "", "", "shiny"])
    dataset, columns = label("column:adjective", dataset=with_words)
    assert columns.attribute == "adjective" and dataset["adjective"] == ["soft", "", "", "shiny"]
    dataset, columns = label(None, dataset=with_words, attribute_column="adjective")  # the older flag
    assert columns.attribute == "adjective"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("column:missing", "no column 'missing'"),
        ("file:/nonexistent.json", "no label file '/nonexistent.json'"),
        ("caption", "unknown attribute source 'caption': expected column:NAME, file:PATH"),
        ("blip2:/nonexistent/blip2", "the BLIP-2 checkpoint '/nonexistent/blip2' cannot be loaded here"),
    ],
)
def test_bad_sources_are_refused_naming_them(spec, message):
    with pytest.raises(SystemExit, match=message):
        label(spec)


def test_a_label_file_needs_the_id_column(tmp_path):
    (tmp_path / "labels.csv").write_text("id,attribute\nim0,green\n")
    with pytest.raises(SystemExit, match="no column 'image_id' \\(choose it with --attribute-id-column\\)"):
        label(f"file:{tmp_path / 'labels.csv'}", attribute_id_column="image_id")


def test_train_intcoop_from_the_command_line_says_which_labeller(tmp_path, capsys):
    model_dir = tmp_path / "clip"
    make_clip().save_pretrained(model_dir)
    images = write_imagefolder(tmp_path / "images", classes=("tree", "cat"), per_class=2, size=IMAGE_SIZE)
    common = ["--model", str(model_dir), "--dataset", f"imagefolder:{images}", "--split", "train"]
    with pytest.raises(SystemExit, match="give --attribute-source"):
        main(["train", "--method", "intcoop", *common, "--max-steps", "1", "--output-dir", str(tmp_path / "none")])
    main(["train", "--method", "intcoop", *common, "--max-steps", "1", "--batch-size", "2", "--attribute-source",
          "zero-shot", "--set", "visual_prompt_depth=1", "--output-dir", str(tmp_path / "run")])  # fmt: skip
    out = capsys.readouterr().out
    assert "IntCoOp attributes: zero-shot CLIP over 42 adjectives (the built-in list); 4 of 4" in out
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
