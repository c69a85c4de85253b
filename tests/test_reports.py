"""Explanation figures and the HTML report: pixels of the new figures, caption text, page contents per method."""

import dataclasses
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
    caption_lines,
    sample_indices,
    write_explanations,
    write_index,
)
from peft_interp.tuners.explanation import POSITION_SIMILARITY_MEANING, Explanation, PromptPosition
from peft_interp.visualization import (
    BACKGROUND,
    PALETTE,
    captioned_figure,
    concept_color,
    concept_overlay,
    concept_regions,
    concept_score_chart,
    font,
    muted_image,
    overlay_pixels,
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


# ----------------------------------------------------------------------------------------- matplotlib pictures
def test_concept_regions_take_the_largest_map_and_leave_background_unfilled():
    maps = torch.zeros(2, 2, 2)
    maps[0, 0, 0], maps[1, 0, 1] = 0.9, 0.8  # top row: concept 0 left, concept 1 right
    background = torch.zeros(2, 2)
    background[1] = 0.95  # bottom row: background
    regions = concept_regions(maps, background, size=2)
    assert regions.tolist() == [[0, 1], [-1, -1]]
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red: muted to grey 0.35 + 0.6 * 0.299
    pixels = overlay_pixels(image, regions, alpha=0.5)
    grey = 0.35 + 0.6 * 0.299
    np.testing.assert_allclose(muted_image(image, 2), np.full((2, 2, 3), grey), atol=1e-3)
    np.testing.assert_allclose(pixels[0, 0], 0.5 * grey + 0.5 * concept_color(0), atol=1e-3)
    np.testing.assert_allclose(pixels[0, 1], 0.5 * grey + 0.5 * concept_color(1), atol=1e-3)
    np.testing.assert_allclose(pixels[1, 0], [grey] * 3, atol=1e-3)  # background keeps the muted image
    assert len({tuple(concept_color(n)) for n in range(12)}) == 12  # distinct colours


# ----------------------------------------------------------------------------------------------- sampling
def test_sampling_spreads_over_classes_by_seed():
    labels = [0] * 10 + [1] * 10 + [2] * 10  # an image folder sorted by class
    picked = sample_indices(labels, 6, seed=0)
    assert sorted(labels[i] for i in picked) == [0, 0, 1, 1, 2, 2]
    assert len(set(picked)) == 6
    assert sample_indices(labels, 6, seed=0) == picked
    assert sample_indices(labels, 6, seed=1) != picked
    assert sorted(sample_indices(labels, 100, seed=0)) == list(range(30))  # all of them when fewer exist
    unbalanced = sample_indices([0] * 10 + [1], 3, seed=0)
    assert 10 in unbalanced  # the class with one image gets it


def test_sampling_misclassified_only():
    labels = [0, 0, 1, 1, 2, 2]
    predictions = [0, 1, 1, 0, 2, 0]  # wrong: indices 1, 3, 5
    assert sorted(sample_indices(labels, 6, seed=3, predictions=predictions, misclassified=True)) == [1, 3, 5]
    with pytest.raises(ValueError, match="one prediction per label"):
        sample_indices(labels, 2, misclassified=True)
    with pytest.raises(ValueError, match="at least 1"):
        sample_indices(labels, 0)


# ------------------------------------------------------------------------------------------ prompts as words
def test_an_unchanged_context_reads_as_itself_short_words_included():
    model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES, context_init="a photo of a"))
    prompt = model.explain(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)).prompt
    assert prompt.readable.tokens == ["a", "photo", "of", "a"] and prompt.readable.prompt == "a photo of a {}."
    torch.testing.assert_close(prompt.readable.similarities, torch.ones(4))
    lines = prompt.lines()
    assert lines[0] == "readable prompt (nearest whole words): a photo of a [class]."
    assert lines[1] == "  similarity per word: a 1.00, photo 1.00, of 1.00, a 1.00"
    assert any(line.startswith("similarity = cosine") for line in lines)  # the one-line meaning
    metadata = model.base_model.explanation_metadata()
    assert metadata["readable_prompt"] == "a photo of a {}."
    assert metadata["context_similarities"] == pytest.approx([1.0] * 4)


def test_nearest_tokens_are_shown_beside_the_readable_words_when_they_differ():
    model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES))
    set_context_to_words(model, CONTEXT_WORDS)
    tuner = model.base_model
    piece = load_clip_tokenizer().convert_tokens_to_ids("ing")  # a word piece: no whole word
    with torch.no_grad():
        tuner.context_layer.context["default"][1] = tuner.context_layer.weight[piece]
    prompt = tuner.prompt_explanation()
    assert prompt.nearest.tokens == ["fluffy", "ing", "striped", "animal"]
    assert prompt.readable.tokens[0] == "fluffy" and prompt.readable.tokens[1] != "ing"
    lines = prompt.lines()
    assert "nearest tokens (nearest tokens of the whole vocabulary): fluffy ing striped animal [class]." in lines


def test_class_specific_contexts_read_per_class():
    model = get_peft_model(make_clip(), CoOpConfig(class_names=["cat", "dog"], class_specific_context=True))
    set_context_to_words(model, CONTEXT_WORDS, row=0)
    set_context_to_words(model, ["a", "brown", "running", "puppy"], row=1)
    assert model.base_model.prompt_explanation().lines() == [
        "cat: fluffy small striped animal cat.",
        "dog: a brown running puppy dog.",
    ]


def test_ipl_shows_its_selected_words_beside_the_nearest_tokens_and_dualview_its_views():
    ipl = get_peft_model(make_clip(), IPLConfig(class_names=["cat", "dog", "owl"], variant="coverage_anchor")).base_model
    prompt = ipl.prompt_explanation()
    assert prompt.readable.prompt == ipl.explain_prompt().prompt and prompt.readable.how == "IPL's selected words"
    assert prompt.nearest.tokens == ipl.decode_context().tokens and prompt.positions is None
    assert prompt.lines()[0].startswith("readable prompt (IPL's selected words): ")  # side by side, as CoOp

    dual = get_peft_model(make_clip(), DualViewMIConfig(class_names=["cat", "dog", "owl"])).base_model
    views = dual.explain_views()
    notes = dual.prompt_explanation().notes
    assert notes == [
        f"mean view similarity (soft vs hand-crafted, cosine): {views.view_similarity.mean():.3f}",
        f"MI lower bound between the views: {views.mi_lower_bound:.3f} nats",
    ]


LEARNT_WORDS = ["fluffy", "striped", "animal", "bright", "wooden", "green"]  # single readable CLIP tokens
MIXED_IN = ["river", "house", "table", "stone", "cloud", "metal"]
SELECTED = ["golden", "forest"]


def word_ids(words) -> torch.Tensor:
    return torch.tensor([load_clip_tokenizer().encode(word, add_special_tokens=False)[0] for word in words])


def hybrid_ipl_with_known_prompt():
    """A hybrid IPL whose slots hold SELECTED and whose learnt vectors are 0.75 e(LEARNT_WORDS) + 0.25 e(MIXED_IN):
    each one's nearest readable word is its LEARNT_WORDS word, at a cosine below 1; returns (model, cosines)."""
    model = get_peft_model(make_clip(), IPLConfig(class_names=CLASSES))
    tuner = model.base_model
    table = tuner.context_layer.weight
    vectors = 0.75 * table[word_ids(LEARNT_WORDS)] + 0.25 * table[word_ids(MIXED_IN)]
    with torch.no_grad():
        tuner.context_layer.context["default"].copy_(vectors)
        tuner.ipl_assignment["default"].token_ids.copy_(word_ids(SELECTED))
    cosines = torch.nn.functional.cosine_similarity(vectors, table[word_ids(LEARNT_WORDS)], dim=-1)
    assert (cosines < 0.99).all()  # the learnt vectors print below 1.00
    return model, cosines.tolist()


def drawn_positions(page: str) -> list[tuple[str, str, str, str]]:
    """Per drawn prompt position: (kind, text, similarity, note), unescaped, in page order."""
    cell = (r'<span class="position ([^"]*)"><span class="text">(.*?)</span>'
            r'<span class="similarity">(.*?)</span><span class="note">(.*?)</span></span>')  # fmt: skip
    return [tuple(html.unescape(part).replace("\xa0", "") for part in found) for found in re.findall(cell, page)]


def test_hybrid_ipl_page_draws_the_prompt_as_the_model_reads_it(tmp_path, images, labels):
    model, cosines = hybrid_ipl_with_known_prompt()
    page = write_explanations(model, images, pictures(), tmp_path, labels, max_images=2).read_text()
    learnt = [("learnt", word, f"{cosine:.2f}", "learnt vector") for word, cosine in zip(LEARNT_WORDS, cosines)]
    words = [("word", word, "1.00", "selected word, frozen") for word in SELECTED]
    # [SOS] A_1 w_1 A_2 w_2 P <class>. : two learnt vectors before each word, two before the class name
    assert drawn_positions(page) == [
        *learnt[0:2], words[0], *learnt[2:4], words[1], *learnt[4:6], ("slot", "[class].", "", "class name")
    ]
    text = html.unescape(page)
    assert "similarity per word" not in text and "readable prompt" not in text  # not the CoOp layout
    assert "<dt>prompt as the model reads it</dt>" in page and POSITION_SIMILARITY_MEANING in text
    nearest = model.base_model.decode_context().tokens  # whole vocabulary, put in place of the learnt vectors
    assert (f"nearest tokens of the whole vocabulary in place of the learnt vectors: [{nearest[0]}] [{nearest[1]}] "
            f"golden [{nearest[2]}] [{nearest[3]}] forest [{nearest[4]}] [{nearest[5]}] [class].") in text  # fmt: skip
    assert ("decoded prompt measured: [fluffy] [striped] golden [animal] [bright] forest [wooden] [green] "
            "[class].") in text  # fmt: skip


def test_hybrid_positions_escape_their_text_and_the_card_and_json_say_what_the_page_shows(tmp_path):
    positions = [PromptPosition("<b>x</b>", "learnt", 0.5, "a & b"), PromptPosition("y", "learnt", 0.49),
                 PromptPosition("w", "word", 1.0)]  # fmt: skip
    page = write_index(tmp_path, "t", [], ["method: ipl", positions]).read_text()
    assert "<b>x" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "a &amp; b" in page
    assert drawn_positions(page) == [  # below 0.5 a learnt vector's word is greyed out
        ("learnt", "<b>x</b>", "0.50", "a & b"), ("learnt weak", "y", "0.49", ""), ("word", "w", "1.00", "")
    ]
    with pytest.raises(ValueError, match="`kind` must be one of"):
        PromptPosition("x", "vector")

    model, cosines = hybrid_ipl_with_known_prompt()
    metadata = model.base_model.explanation_metadata()
    drawn = model.base_model.prompt_explanation().positions
    assert metadata["prompt_positions"] == [dataclasses.asdict(position) for position in drawn]
    assert metadata["selected_words"] == SELECTED and metadata["context_tokens"] == LEARNT_WORDS
    assert metadata["context_similarities"] == pytest.approx(cosines)
    assert metadata["decoded_prompt"] == "[fluffy] [striped] golden [animal] [bright] forest [wooden] [green] {}."
    card = reports_card_text(model, metadata)
    assert "Prompt as the model reads it: **\\[fluffy\\] \\[striped\\] golden" in card
    assert "golden 1.00 \\(selected word, frozen\\)" in card and f"fluffy {cosines[0]:.2f}, striped" in card


def reports_card_text(model, metadata) -> str:
    from peft_interp.sharing import render_model_card

    return render_model_card(model.peft_config["default"], metadata, "me/ipl", None, "mit").text


# ---------------------------------------------------------------------------------------- explanation contract
METHOD_MODELS = [
    ("ivpt", lambda: get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3))),
    ("vpt_deep", lambda: get_peft_model(make_backbone("dinov2"), VPTDeepConfig(num_classes=3))),
    ("coop", lambda: get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES))),
    ("ipl", lambda: get_peft_model(make_clip(), IPLConfig(class_names=CLASSES))),
    ("intcoop", lambda: get_peft_model(make_clip(), IntCoOpConfig(class_names=CLASSES, visual_prompt_depth=2))),
    ("dualview_mi", lambda: get_peft_model(make_clip(), DualViewMIConfig(class_names=CLASSES))),
]


@pytest.mark.parametrize("method, build", METHOD_MODELS, ids=[m for m, _ in METHOD_MODELS])
def test_every_method_explains_through_the_peft_model(method, build, images):
    model = build().eval()
    explanation = model.explain(images)
    assert isinstance(explanation, Explanation)
    with torch.no_grad():
        torch.testing.assert_close(explanation.logits, model(pixel_values=images).logits)
    torch.testing.assert_close(explanation.predictions, explanation.logits.argmax(-1))
    visual = method in ("ivpt", "vpt_deep")
    assert (explanation.maps is not None) == visual and (explanation.prompt is not None) == (not visual)
    if visual:
        assert explanation.maps.shape[:2] == (4, len(explanation.map_names))
    if method == "ivpt":  # contributions sum to the predicted logit
        picked = explanation.logits.gather(1, explanation.predictions[:, None])[:, 0]
        torch.testing.assert_close(explanation.contributions.sum(-1), picked)
        torch.testing.assert_close(explanation.maps.sum(1) + explanation.background, torch.ones(4, 4, 4))


# ------------------------------------------------------------------------------------------------ whole pages
def test_caption_lines_list_true_class_then_top_k_in_percent():
    lines = caption_lines(torch.tensor([0.1, 0.6, 0.05, 0.25]), ["a", "b", "c", "d"], label=2)
    assert lines == ["true: c", "1. b: 60.0%", "2. d: 25.0%", "3. a: 10.0%"]


def test_index_escapes_text_enlarges_on_click_and_ends_with_the_glossary(tmp_path):
    sections = [("<b>images</b>", [("image_0.png", "WRONG\ntrue: <script>alert(1)</script>"), ("image_1.png", "ok")])]
    page = write_index(tmp_path, "birds & <cats>", sections, ["prompt: a <i>photo</i>"], {"logit": "a <score>"})
    page = page.read_text()
    assert "<script>" not in page and "<b>images" not in page and "<i>photo" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "birds &amp; &lt;cats&gt;" in page
    assert image_sources(page) == ["image_0.png", "image_0.png", "image_1.png", "image_1.png"]  # figure + enlarged
    assert '<a href="#enlarged-0">' in page and 'id="enlarged-0"' in page and ".lightbox:target" in page
    assert page.count('<figure class="wrong">') == 1
    assert "<dt>logit</dt><dd>a &lt;score&gt;</dd>" in page


@pytest.fixture
def ivpt_model():
    return get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3, concept_names=["a", "b", "c", "d"]))


def test_ivpt_page_has_one_picture_per_image_marks_wrong_ones_and_restores_modes(tmp_path, ivpt_model, images):
    ivpt_model.train()
    modes = [module.training for module in ivpt_model.modules()]
    ivpt_model.eval()
    predictions = ivpt_model.explain(images[:3]).predictions.tolist()
    ivpt_model.train()
    labels = [predictions[0], (predictions[1] + 1) % 3, predictions[2]]  # the second image is misclassified
    path = write_explanations(ivpt_model, images, pictures(), tmp_path, labels, CLASSES, max_images=3)
    page = path.read_text()
    assert written_pngs(tmp_path) == {"image_0.png", "image_1.png", "image_2.png"}
    assert [caption[0] == "WRONG" for caption in captions(page)] == [False, True, False]
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "method: ivpt" in page and "concepts: a, b, c, d" in page
    assert "<dt>contribution</dt>" in page and "<dt>concept map</dt>" in page and "<dt>WRONG</dt>" in page
    assert [module.training for module in ivpt_model.modules()] == modes


def test_the_picture_draws_what_the_explanation_holds(tmp_path, ivpt_model, images, labels):
    ivpt_model.eval()
    explanation = ivpt_model.explain(images[:2])
    with mock.patch.object(reports, "explanation_figure", wraps=reports.explanation_figure) as figure:
        write_explanations(ivpt_model, images, pictures(), tmp_path, labels, max_images=2)
    for i, call in enumerate(figure.call_args_list):
        names, values, _, title, unit = call.args[3]
        assert names == ["a", "b", "c", "d"] and unit == ""
        assert values == pytest.approx(explanation.contributions[i].tolist())
        assert title.startswith(f"contributions to the logit of 'class {int(explanation.predictions[i])}'")
        torch.testing.assert_close(call.kwargs["maps"], explanation.maps[i])
        torch.testing.assert_close(call.kwargs["background"], explanation.background[i])

    # the same tuner with an explanation that holds no maps gets probability bars only: chosen by the explanation
    plain = Explanation(logits=explanation.logits, predictions=explanation.predictions)
    with mock.patch.object(type(ivpt_model.base_model), "explain", return_value=plain):
        with mock.patch.object(reports, "explanation_figure", wraps=reports.explanation_figure) as figure:
            page = write_explanations(ivpt_model, images, pictures(), tmp_path / "plain", labels, max_images=2)
    probabilities = explanation.logits.softmax(-1)
    for i, call in enumerate(figure.call_args_list):
        assert call.kwargs["maps"] is None and call.args[3][4] == "%"
        assert call.args[3][1][0] == pytest.approx(100 * probabilities[i].max().item())
    assert "<dt>contribution</dt>" not in page.read_text()


def test_clip_page_shows_the_prompt_faithfulness_and_attribute_notes(tmp_path, images, labels):
    model = get_peft_model(make_clip(), IntCoOpConfig(class_names=CLASSES, visual_prompt_depth=2)).eval()
    explanation = model.explain(images[:2])
    page = write_explanations(model, images, pictures(), tmp_path, labels, max_images=2).read_text()
    text = html.unescape(page)
    assert "readable prompt (nearest whole words): a photo of a [class]." in text
    assert "decoded-prompt faithfulness" in text and "<dt>similarity</dt>" in page
    for caption, notes in zip(captions(page), explanation.image_notes):
        assert caption[-1] == notes[-1] and notes[-1].startswith("attributes: ")


def test_inputs_are_checked(tmp_path, ivpt_model, images):
    with pytest.raises(ValueError, match="2 class names"):
        write_explanations(ivpt_model, images, pictures(), tmp_path, class_names=["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        write_explanations(ivpt_model, images, pictures().astype(np.float32), tmp_path)
    with pytest.raises(TypeError, match="peft-interp"):
        write_explanations(torch.nn.Linear(2, 2), images, pictures(), tmp_path)


# -------------------------------------------------------------------------------------------------- galleries
def test_concept_crop_boxes_the_strongest_patches_with_a_margin():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    concept_map = torch.zeros(4, 4)
    concept_map[1, 2] = 1.0
    concept_map[2, 2] = 0.9
    crop = reports.concept_crop(image, concept_map, size=8, fraction=0.125)  # 2 patches: (1, 2) and (2, 2)
    assert crop.shape == (8, 6, 3)  # rows 0-3 (margin) x columns 1-3 (margin, clipped right), 2 px per patch


def test_gallery_shows_each_concept_top_images_and_the_class_table(tmp_path, ivpt_model, images, labels):
    ivpt_model.eval()
    explanation = ivpt_model.explain(images)
    with mock.patch.object(reports, "concept_crop", wraps=reports.concept_crop) as crop:
        page = reports.write_concept_gallery(ivpt_model, images, pictures(), tmp_path, labels, CLASSES, top_k=2)
    assert written_pngs(tmp_path) == {f"concept_{n}.png" for n in range(4)} | {"classes.png"}
    peaks = explanation.maps.flatten(2).max(-1).values  # (4 images, 4 concepts)
    shown = [call.args[1] for call in crop.call_args_list]  # the maps of the cropped images, concept by concept
    for n in range(4):
        best = peaks[:, n].topk(2).indices
        for map_shown, i in zip(shown[2 * n : 2 * n + 2], best):
            torch.testing.assert_close(map_shown, explanation.maps[i, n])
    text = page.read_text()
    assert "<h2>classes</h2>" in text and "<dt>peak</dt>" in text and "&lt;script&gt;" not in text  # names in PNGs
    with pytest.raises(ValueError, match="no concept maps"):
        reports.write_concept_gallery(get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES)), images,
                                      pictures(), tmp_path / "coop")  # fmt: skip


def test_demo_prints_the_hybrid_prompt_as_the_model_reads_it():
    from peft_interp.demo import _prompt_as_read
    from peft_interp.tuners.explanation import ContextDecoding, PromptPosition
    from peft_interp.tuners.ipl import HybridPromptDecoding

    vectors = {"tokens": ["tiny", "green"], "token_ids": torch.tensor([1, 2]), "distances": torch.zeros(2),
               "similarities": torch.tensor([0.3, 0.4])}  # fmt: skip
    positions = [
        PromptPosition("tiny", "learnt", 0.3, "learnt vector"),
        PromptPosition("striped", "word", 1.0, "selected word, frozen"),
        PromptPosition("green", "learnt", 0.4, "learnt vector"),
        PromptPosition("[class].", "slot", None, "class name"),
    ]
    hybrid = HybridPromptDecoding(**vectors, prompt="* striped * {}.", words=["striped"], positions=positions)
    assert _prompt_as_read(hybrid) == "[tiny] striped [green] [class]."
    assert _prompt_as_read(ContextDecoding(**vectors, prompt="tiny green {}.")) == "tiny green {}."
