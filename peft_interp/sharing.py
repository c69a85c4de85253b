"""Sharing adapters together with their explanations: model cards, ``explanation.json``, Hub upload and loading.

An adapter folder written by :func:`save_for_hub` (and uploaded by :func:`push_adapter`, or
``model.push_to_hub(repo_id)``) holds::

    adapter_config.json          PEFT's config (class names, readable prompt, ... live here too)
    adapter_model.safetensors    the weights
    explanation.json             what the adapter explains: concepts / readable prompt, class names, metrics
    examples/*.png               example explanations (one picture per image), when images were given
    README.md                    a model card rendered from ``model_cards/adapter.md``, with Hub metadata

:func:`load_explanation` reads ``explanation.json`` without any weights; :func:`load_adapter` checks the weights
file before PEFT reads it and returns the model with its explanation attached.
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, hf_hub_download

from .shipped import shipped_backbone
from .registry import method_spec
from .tuners.explanation import POSITION_SIMILARITY_MEANING, PromptPosition, position_prompt, position_similarity_line

EXPLANATION_FILE = "explanation.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CARD_TEMPLATE = Path(__file__).resolve().parent / "model_cards" / "adapter.md"  # the repository's model_cards/


# --------------------------------------------------------------------------------------------------- writing
def save_for_hub(
    model,
    save_directory: str | Path,
    *,
    repo_id: str | None = None,
    metrics: dict[str, float] | None = None,
    dataset: str | None = None,
    example_images: torch.Tensor | None = None,
    example_pixels: torch.Tensor | None = None,
    license: str = "apache-2.0",
    training_notes: str = "",
) -> Path:
    """Write the adapter, ``explanation.json``, example pictures and a model card to ``save_directory``.

    Args:
        model: a ``PeftModel`` of a peft-interp method.
        repo_id: the Hub repository the card's snippets refer to (default: the folder name).
        metrics: evaluation results, in percent, e.g. ``{"accuracy": 91.0}`` (become model-index entries on the card).
        dataset: name or Hub id of the evaluation dataset.
        example_pixels: ``(B, 3, S, S)`` model inputs to explain in ``examples/`` (every method: one picture per image);
            ``example_images``: the same images as ``(B, S, S, 3)`` uint8 for display.
    """
    save_directory = Path(save_directory)
    model.save_pretrained(save_directory)
    tuner = model.base_model
    adapter_name = model.active_adapter
    config = model.peft_config[adapter_name]
    explanation = tuner.explanation_metadata(adapter_name)
    explanation["metrics"] = {name: float(f"{value:.6g}") for name, value in (metrics or {}).items()}
    if example_pixels is not None:
        explanation["examples"] = _write_examples(model, save_directory, example_pixels, example_images)
    (save_directory / EXPLANATION_FILE).write_text(json.dumps(explanation, indent=2, default=_jsonable))
    card = render_model_card(config, explanation, repo_id or save_directory.name, dataset, license, training_notes)
    card.save(save_directory / "README.md")
    return save_directory


def _jsonable(value: Any):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_examples(model, folder: Path, pixels: torch.Tensor, images) -> list[str]:
    """``examples/image_{i}.png``: the explanation of each example image, drawn as on the explanation pages (class
    and prediction, concept maps with their legend, score bars); returns the paths relative to ``folder``."""
    import numpy as np

    from .reports import _num_classes, explain_in_eval_mode, explanation_report, resolve_class_names

    tuner = model.base_model
    explanation = explain_in_eval_mode(model, tuner, pixels)
    shown = np.asarray(images) if images is not None else _min_max_pictures(pixels)
    names = resolve_class_names(tuner, _num_classes(tuner), None)
    (folder / "examples").mkdir(exist_ok=True)
    report = explanation_report(tuner, explanation, pixels, shown, None, names, folder / "examples")
    return [f"examples/{filename}" for filename, _ in report.figures]


def _min_max_pictures(pixels: torch.Tensor):
    """Min-max scale model inputs to uint8 pictures ``(B, S, S, 3)``."""
    low = pixels.amin(dim=(1, 2, 3), keepdim=True)
    high = pixels.amax(dim=(1, 2, 3), keepdim=True)
    return ((pixels - low) / (high - low).clamp_min(1e-8) * 255).byte().permute(0, 2, 3, 1).numpy()


def render_model_card(
    config, explanation: dict, repo_id: str, dataset: str | None, license: str, training_notes: str = ""
) -> ModelCard:
    """The model card of an adapter: Hub metadata (PEFT's ``library_name`` and ``base_model``, tags, datasets,
    metrics as model-index entries, license) and the ``model_cards/adapter.md`` template filled in; the method's
    title, summary, citation and task come from its :class:`~peft_interp.registry.MethodSpec`."""
    method = explanation["method"]
    spec = method_spec(method)
    base_path = config.base_model_name_or_path
    # Only a valid Hub id goes into the metadata and the link; a local folder, a backbone shipped with peft-interp
    # ("peft-interp/conceptworld-clip", not on the Hub) or anything else is named in the text.
    is_hub_id = base_path and not Path(base_path).expanduser().exists() and _is_repo_id(base_path)
    base_model = base_path if is_hub_id and shipped_backbone(base_path) is None else None
    metrics = explanation.get("metrics", {})
    eval_results = [
        EvalResult(
            task_type=spec.task,
            dataset_type=dataset or "custom",
            dataset_name=dataset or "custom",
            metric_type=name,
            metric_value=float(value),
        )
        for name, value in metrics.items()
    ]
    card_data = ModelCardData(
        library_name="peft",
        base_model=base_model,
        license=license,
        tags=["peft", "peft-interp", method, "interpretability", spec.task]
        + ([f"base_model:adapter:{base_model}"] if base_model else []),
        datasets=[dataset] if dataset else None,
        metrics=sorted(metrics) or None,
        pipeline_tag=spec.task,
        model_name=repo_id,
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATE),
        title=markdown_text(repo_id),
        method_title=spec.title,
        method_summary=spec.summary,
        base_model=markdown_text(base_model or base_path or "a custom base model"),
        base_model_link=f"https://huggingface.co/{quote(base_model, safe='/')}" if base_model else "#usage",
        repo_id_literal=python_literal(repo_id),
        explanation_markdown=_explanation_markdown(explanation),
        usage=usage_snippet(config, repo_id),
        metrics_markdown="\n".join(f"- **{markdown_text(k)}**: {v:.4g}" for k, v in metrics.items()) or "No metrics recorded.",
        training_markdown=training_notes or "See `adapter_config.json` for every hyper-parameter.",
        citation=spec.citation,
    )


# Characters with a meaning in Markdown (CommonMark's backslash-escapable ASCII punctuation, less the harmless ones).
_MARKDOWN_SPECIAL = "\\`*_[]()#+-!|~>"


def markdown_text(value) -> str:
    """``value`` as inert Markdown text: HTML escaped (``<script>`` shows as text), Markdown punctuation
    backslash-escaped, line breaks folded into spaces."""
    text = html.escape(" ".join(str(value).split()), quote=True)
    return "".join(f"\\{char}" if char in _MARKDOWN_SPECIAL else char for char in text)


def python_literal(value: str) -> str:
    """``value`` as a Python string literal that stays one literal whatever it holds (``json.dumps`` escapes
    quotes, backslashes and control characters; backticks are escaped too, so no code fence can close)."""
    return json.dumps(str(value)).replace("`", "\\u0060")


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _explanation_markdown(explanation: dict) -> str:
    lines = []
    if explanation.get("prompt_positions"):  # IPL's hybrid prompt, as its explanation page draws it
        positions = [PromptPosition(**position) for position in explanation["prompt_positions"]]
        lines.append(f"Prompt as the model reads it: **{markdown_text(position_prompt(positions))}** (selected words "
                     "as they are; `[w]`: a learnt vector, shown as its nearest readable word w).")  # fmt: skip
        lines.append(f"Similarity per position: {markdown_text(position_similarity_line(positions))}. "
                     f"{markdown_text(POSITION_SIMILARITY_MEANING)}")  # fmt: skip
    elif explanation.get("readable_prompt"):
        lines.append(f"Readable prompt: **{markdown_text(explanation['readable_prompt'])}** (`{{}}` is the class name).")
    if explanation.get("concepts"):
        concepts = [markdown_text(concept) for concept in explanation["concepts"]]
        lines.append(f"Concepts ({len(concepts)}): " + ", ".join(concepts) + ".")
    if explanation.get("class_names"):
        names = [markdown_text(name) for name in explanation["class_names"]]
        shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
        lines.append(f"Classes: {shown}.")
    for example in explanation.get("examples", []):
        lines.append(f"![example explanation]({example})")
    return "\n\n".join(lines) or "See `explanation.json`."


def usage_snippet(config, repo_id: str) -> str:
    """Python that loads the adapter on its base model and runs it."""
    base = config.base_model_name_or_path or "<base model>"
    model_class = "CLIPModel" if method_spec(config.method_name).family == "clip" else "AutoModel"
    if shipped_backbone(base) is not None:  # shipped with the package, loaded offline
        imports, loading = "from peft_interp.shipped import load_base_model", f"base = load_base_model({python_literal(base)})"
    else:
        imports = f"from transformers import {model_class}"
        loading = f"base = {model_class}.from_pretrained({python_literal(base)})"
    return "\n".join(
        [
            "import torch",
            imports,
            "",
            "import peft_interp  # registers the method with PEFT",
            "from peft_interp.sharing import load_adapter",
            "",
            loading,
            f"model = load_adapter(base, {python_literal(repo_id)}).eval()",
            "explanation = model.explanation  # the contents of explanation.json",
        ]
    )


def push_adapter(
    model, repo_id: str, *, token: str | None = None, private: bool = False, commit_message: str | None = None, **kwargs
):
    """Save with :func:`save_for_hub` (``kwargs`` go there) and upload the folder to the Hub model repo ``repo_id``."""
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as folder:
        save_for_hub(model, folder, repo_id=repo_id, **kwargs)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message=commit_message or f"Upload {model.peft_config[model.active_adapter].peft_type.name} adapter",
        )


# --------------------------------------------------------------------------------------------------- reading
def _local_or_hub_file(repo_or_path: str | Path, filename: str, **hub_kwargs) -> Path:
    local = Path(repo_or_path) / filename
    if local.is_file():
        return local
    if Path(repo_or_path).is_dir():
        raise FileNotFoundError(f"{filename} not found in {repo_or_path}.")
    return Path(hf_hub_download(str(repo_or_path), filename, **hub_kwargs))


def load_explanation(repo_or_path: str | Path, **hub_kwargs) -> dict:
    """The ``explanation.json`` of a saved or uploaded adapter, without loading any weights."""
    return json.loads(_local_or_hub_file(repo_or_path, EXPLANATION_FILE, **hub_kwargs).read_text())


def check_weights_file(path: str | Path) -> None:
    """Raise a clear ``ValueError`` if ``path`` is not a complete safetensors file, does not match the hash and
    tensor list recorded when it was saved, or holds non-finite values (:func:`peft_interp.weights.verify_weights_file`)."""
    from .weights import verify_weights_file

    verify_weights_file(path)


def load_adapter(base_model, repo_or_path: str | Path, **kwargs):
    """``PeftModel.from_pretrained`` after checking the weights file; the model's ``explanation`` attribute holds
    ``explanation.json`` (``None`` if the folder has none)."""
    from peft import PeftModel

    hub_kwargs = {key: kwargs[key] for key in ("revision", "token") if key in kwargs}
    config_file = _local_or_hub_file(repo_or_path, "adapter_config.json", **hub_kwargs)
    try:
        json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    check_weights_file(_local_or_hub_file(repo_or_path, WEIGHTS_FILE, **hub_kwargs))
    model = PeftModel.from_pretrained(base_model, str(repo_or_path), **kwargs)
    try:
        model.explanation = load_explanation(repo_or_path, **hub_kwargs)
    except (FileNotFoundError, OSError):
        model.explanation = None
    return model
