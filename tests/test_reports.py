"""Explanation figures and the HTML report: pixels of the new figures, caption text, page contents per method."""

import html
import re
from unittest import mock

import numpy as np
import pytest
import torch
from peft import get_peft_model

from peft_interp import (
    CoOpConfig,
    DualViewMIConfig,
    IntCoOpConfig,
    IPLConfig,
    IVPTConfig,
    VPTDeepConfig,
    reports,
)
from peft_interp.data import load_clip_tokenizer
from peft_interp.reports import (
    prediction_lines,
    prompt_lines,
    readable_prompt,
    write_explanations,
    write_index,
)
from peft_interp.visualization import (
    BACKGROUND,
    PALETTE,
    captioned_figure,
    concept_overlay,
    concept_score_chart,
    font,
    wrap_text,
)

from .tiny_models import IMAGE_SIZE, make_backbone, make_clip

CLASSES = ["cat", "<script>alert(1)</script>", "small dog"]
CONTEXT_WORDS = ["fluffy", "small", "striped", "animal"]  # single whole-word CLIP tokens


# ------------------------------------------------------------------------------------------------------- helpers
def pictures(count: int = 4) -> np.ndarray:
    """``(count, 28, 28, 3)`` uint8 display images."""
    return np.random.default_rng(0).integers(0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


def color_mask(image, color) -> np.ndarray:
    """``(H, W)`` bool: pixels exactly ``color``."""
    return (np.asarray(image, dtype=np.int64) == np.asarray(color, dtype=np.int64)).all(-1)


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def captions(page: str) -> list[list[str]]:
    """Per figure its caption lines, unescaped."""
    return [
        [html.unescape(line) for line in caption.split("<br>")]
        for caption in re.findall(r"<figcaption>(.*?)</figcaption>", page)
    ]


def written_pngs(folder) -> set[str]:
    return {path.name for path in folder.glob("*.png")}


def set_context_to_words(model, words, row=None):
    """Put the token embeddings of ``words`` into the shared context (or class ``row`` of a class-specific one)."""
    tuner = model.base_model
    ids = load_clip_tokenizer().encode(" ".join(words), add_special_tokens=False)
    assert len(ids) == len(words)
    context = tuner.context_layer.context["default"]
    with torch.no_grad():
        (context if row is None else context[row]).copy_(tuner.context_layer.weight[ids])


# ----------------------------------------------------------------------------------------------------- figures
def test_overlay_blends_each_pixel_with_its_strongest_concept_colour():
    image = np.empty((12, 12, 3), dtype=np.uint8)
    image[:] = (40, 80, 120)
    maps = torch.zeros(4, 6, 6)  # 3 concepts + background
    maps[1, :, :2] = 1.0  # concept 1 on the left
    maps[3, :, 2:4] = 1.0  # background in the middle
    maps[2, :, 4:] = 1.0  # concept 2 on the right
    tile = 60
    figure = concept_overlay(image, maps, ["beak", "wing", "tail"], tile=tile)
    pixels = np.asarray(figure, dtype=np.float32)
    base = np.array([40, 80, 120], dtype=np.float32)
    for x, color in [(4, PALETTE[1]), (30, BACKGROUND), (56, PALETTE[2])]:
        np.testing.assert_allclose(pixels[30, x], 0.45 * base + 0.55 * color, atol=1)
    assert figure.width > tile and figure.height >= tile  # the legend sits right of the overlay


def test_legend_holds_a_swatch_of_every_concept_and_no_other():
    maps = torch.rand(4, 3, 3)
    figure = concept_overlay(np.zeros((9, 9, 3), dtype=np.uint8), maps, ["beak", "wing", "tail"], tile=48)
    legend = np.asarray(figure)[:, 48:]
    for color in [*PALETTE[:3], BACKGROUND]:
        assert color_mask(legend, color).sum() >= 100  # a 12 x 12 swatch
    assert not color_mask(legend, PALETTE[3]).any()


def test_overlay_rejects_wrong_number_of_names():
    with pytest.raises(ValueError, match="2 concept names for 3 concepts"):
        concept_overlay(np.zeros((4, 4, 3), dtype=np.uint8), torch.rand(4, 2, 2), ["a", "b"])


def test_score_chart_bars_are_proportional_signed_and_in_order():
    scores = [2.0, -1.0, 0.5, 0.0]
    chart = concept_score_chart(scores, ["beak", "wing", "tail", "eye"], title="contributions to 'cat'")
    pixels = np.asarray(chart)
    bars = [np.nonzero(color_mask(pixels, PALETTE[k])) for k in range(3)]  # (ys, xs) per bar
    lengths = [xs.max() - xs.min() + 1 for _, xs in bars]
    for (ys, xs), length in zip(bars, lengths):  # solid rectangles
        assert len(xs) == length * (ys.max() - ys.min() + 1)
    assert abs(lengths[0] - 2 * lengths[1]) <= 1 and abs(lengths[0] - 4 * lengths[2]) <= 2
    assert lengths[0] > 100  # the bars use the chart's width
    axis = bars[1][1].max() + 1  # the negative bar ends at the axis, the positive ones start after it
    assert bars[0][1].min() == bars[2][1].min() == axis + 1
    assert (pixels[bars[0][0].min() : bars[2][0].max(), axis] == 0).all()  # the black zero axis
    assert bars[0][0].max() < bars[1][0].min() and bars[1][0].max() < bars[2][0].min()  # rows top to bottom
    assert not color_mask(pixels, PALETTE[3]).any()  # a zero score draws no bar


def test_score_chart_with_only_positive_scores_puts_the_axis_left():
    chart = concept_score_chart(torch.tensor([1.0, 3.0]), ["a", "b"], width=300)
    pixels = np.asarray(chart)
    xs = [np.nonzero(color_mask(pixels, PALETTE[k]))[1] for k in range(2)]
    assert xs[0].min() == xs[1].min()
    assert abs((xs[1].max() - xs[1].min() + 1) - 3 * (xs[0].max() - xs[0].min() + 1)) <= 2
    assert xs[1].max() > 200  # the largest bar spans most of the plot


def test_wrap_text_fits_the_width_and_keeps_every_word():
    text_font = font(12)
    text = "prompt: fluffy small striped animal photo of a red-headed blue-bodied bird " * 3
    lines = wrap_text(text.strip(), 120, text_font)
    assert len(lines) > 3
    assert all(text_font.getlength(line) <= 120 for line in lines)
    assert " ".join(lines) == text.strip()
    assert all(text_font.getlength(line) <= 40 for line in wrap_text("x" * 50, 40, text_font))


def test_captioned_figure_keeps_aspect_and_writes_text_below():
    image = np.full((10, 20, 3), 255, dtype=np.uint8)
    figure = captioned_figure(image, ["1. cat: 90.0%", "a very long line " * 6], tile=100)
    pixels = np.asarray(figure)
    assert figure.width == 100 and figure.height > 50 + 4 * 12  # 100 x 50 picture, several wrapped lines
    assert (pixels[:50] == 255).all()  # the white picture
    assert (pixels[50:] < 128).any()  # dark text under it


# ----------------------------------------------------------------------------------------------- caption text
def test_prediction_lines_list_true_class_then_top_k_best_first():
    lines = prediction_lines(torch.tensor([0.1, 0.6, 0.05, 0.25]), ["a", "b", "c", "d"], label=2)
    assert lines == ["true: c", "1. b: 60.0%", "2. d: 25.0%", "3. a: 10.0%"]
    assert prediction_lines(torch.tensor([0.3, 0.7]), ["a", "b"]) == ["1. b: 70.0%", "2. a: 30.0%"]


def test_coop_prompt_lines_are_the_decoded_readable_prompt():
    model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES))
    set_context_to_words(model, CONTEXT_WORDS)
    tuner = model.base_model
    lines = prompt_lines(tuner)
    decoded = tuner.decode_context(candidate_ids=tuner.readable_vocabulary())
    assert lines[0] == f"prompt: {readable_prompt(decoded)}" == "prompt: fluffy small striped animal [class]."
    assert lines[1].startswith("word cosine: fluffy 1.00, small 1.00")


def test_class_specific_prompt_lines_decode_each_class_context():
    model = get_peft_model(make_clip(), CoOpConfig(class_names=["cat", "dog"], class_specific_context=True))
    set_context_to_words(model, CONTEXT_WORDS, row=0)
    set_context_to_words(model, ["happy", "brown", "running", "puppy"], row=1)
    assert prompt_lines(model.base_model) == [
        "cat: fluffy small striped animal cat.",
        "dog: happy brown running puppy dog.",
    ]


def test_ipl_and_dualview_prompt_lines_use_their_explanations():
    ipl = get_peft_model(make_clip(), IPLConfig(class_names=["cat", "dog", "owl"])).base_model
    assert prompt_lines(ipl)[0] == f"prompt: {readable_prompt(ipl.explain_prompt())}"

    dual = get_peft_model(make_clip(), DualViewMIConfig(class_names=["cat", "dog", "owl"])).base_model
    views = dual.explain_views()
    lines = prompt_lines(dual)
    assert lines[0] == f"prompt: {readable_prompt(views.context)}"
    assert f"mean view similarity (soft vs hand-crafted): {views.view_similarity.mean():.3f}" in lines
    assert f"MI lower bound: {views.mi_lower_bound:.3f} nats" in lines


# --------------------------------------------------------------------------------------------------------- html
def test_index_escapes_text_and_links_the_figures(tmp_path):
    sections = [("<b>images</b>", [("image_0.png", "true: <script>alert(1)</script>\n1. cat: 90.0%")])]
    path = write_index(tmp_path, "birds & <cats>", sections, summary=["prompt: a <i>photo</i> of [class]."])
    page = path.read_text()
    assert path == tmp_path / "index.html"
    assert "<script>" not in page and "<b>images" not in page and "<i>photo" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "birds &amp; &lt;cats&gt;" in page
    assert image_sources(page) == ["image_0.png"]
    assert captions(page) == [["true: <script>alert(1)</script>", "1. cat: 90.0%"]]


# ------------------------------------------------------------------------------------------------ whole reports
@pytest.fixture
def ivpt_model():
    return get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3, concept_names=["a", "b", "c", "d"]))


def test_ivpt_report_lists_exactly_its_figures_and_escapes_class_names(tmp_path, ivpt_model, images, labels):
    ivpt_model.train()
    modes = [module.training for module in ivpt_model.modules()]
    path = write_explanations(ivpt_model, images, pictures(), tmp_path, labels, CLASSES, max_images=3)
    page = path.read_text()
    expected = {f"image_{i}_{kind}.png" for i in range(3) for kind in ("concepts", "scores")}
    assert written_pngs(tmp_path) == expected
    assert sorted(image_sources(page)) == sorted(expected)
    assert all((tmp_path / source).is_file() for source in image_sources(page))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "method: ivpt" in page and "concepts: a, b, c, d" in page
    assert [module.training for module in ivpt_model.modules()] == modes  # train mode restored


def test_ivpt_scores_chart_draws_the_explanation_contributions(tmp_path, ivpt_model, images, labels):
    ivpt_model.eval()
    explanation = ivpt_model.explain(images[:2])
    with mock.patch.object(reports, "concept_score_chart", wraps=reports.concept_score_chart) as chart:
        write_explanations(ivpt_model, images, pictures(), tmp_path, labels, max_images=2)
    assert chart.call_count == 2
    for i, call in enumerate(chart.call_args_list):
        torch.testing.assert_close(call.args[0], explanation.contributions[i])
        assert call.args[1] == ["a", "b", "c", "d"]
        predicted = int(explanation.predictions[i])
        assert call.kwargs["title"].startswith(f"concept contributions to 'class {predicted}'")


def test_coop_report_writes_the_prompt_figure_and_top3_captions(tmp_path, images, labels):
    model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES)).eval()
    set_context_to_words(model, CONTEXT_WORDS)
    with torch.no_grad():
        probabilities = model(pixel_values=images).logits.softmax(-1)
    with mock.patch.object(reports, "text_figure", wraps=reports.text_figure) as text_figure:
        page = write_explanations(model, images, pictures(), tmp_path, labels).read_text()
    assert text_figure.call_args_list[0].args[0][0] == "prompt: fluffy small striped animal [class]."
    assert written_pngs(tmp_path) == {"prompt.png"} | {f"image_{i}.png" for i in range(4)}
    assert sorted(image_sources(page)) == sorted(written_pngs(tmp_path))
    figure_captions = captions(page)
    assert figure_captions[0][0] == "prompt: fluffy small striped animal [class]."
    for i in range(4):
        assert figure_captions[1 + i] == prediction_lines(probabilities[i], CLASSES, int(labels[i]))
    assert "<script>" not in page


def test_intcoop_captions_name_the_predicted_attribute_words(tmp_path, images):
    model = get_peft_model(make_clip(), IntCoOpConfig(class_names=CLASSES, visual_prompt_depth=2)).eval()
    explanation = model.base_model.explain(images[:2])
    page = write_explanations(model, images, pictures(), tmp_path, max_images=2).read_text()
    image_captions = captions(page)[1:]
    assert len(image_captions) == 2
    for caption, words, scores in zip(image_captions, explanation.attribute_words, explanation.attribute_scores):
        assert caption[-1] == "attributes: " + ", ".join(f"{w} {s:.2f}" for w, s in zip(words, scores.tolist()))


def test_other_methods_get_prediction_figures_only(tmp_path, images):
    model = get_peft_model(make_backbone("dinov2"), VPTDeepConfig(num_classes=3)).eval()
    with torch.no_grad():
        probabilities = model(pixel_values=images[:2]).logits.softmax(-1)
    page = write_explanations(model.base_model, images, pictures(), tmp_path, max_images=2).read_text()
    assert written_pngs(tmp_path) == {"image_0.png", "image_1.png"}
    assert captions(page) == [prediction_lines(probabilities[i], ["class 0", "class 1", "class 2"]) for i in range(2)]
    assert "method: vpt_deep" in page


def test_inputs_are_checked(tmp_path, ivpt_model, images):
    with pytest.raises(ValueError, match="2 class names"):
        write_explanations(ivpt_model, images, pictures(), tmp_path, class_names=["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        write_explanations(ivpt_model, images, pictures().astype(np.float32), tmp_path)
    with pytest.raises(TypeError, match="peft-interp"):
        write_explanations(torch.nn.Linear(2, 2), images, pictures(), tmp_path)
