"""Make peft-interp's methods first-class PEFT methods.

PEFT dispatches on two enums stored in ``adapter_config.json``: ``peft_type`` picks the config and tuner classes,
``task_type`` picks the ``PeftModel`` subclass. ``import peft_interp`` extends both enums and fills PEFT's mappings,
so that ``get_peft_model(model, IVPTConfig(...))`` and ``PeftModel.from_pretrained(base, path)`` work like for any
built-in method. Every method of this package plugs in with one call in its package's ``__init__.py``, which
describes it to the rest of the library too (command line, model cards, recipes)::

    register_method(MethodSpec(IVPTConfig, IVPTModel, family="vision", title=..., summary=..., citation=...))

Our ``peft_type`` values carry the hint ``"<NAME>: import peft_interp to load"``. Without ``import peft_interp``
PEFT fails on the unknown value with ``KeyError: 'PEFT_INTERP_IVPT: import peft_interp to load'``: the only
message PEFT prints is that value, so the value itself tells the user what to do.

All methods share one task type, :data:`INTERP_TASK_TYPE`, served by :class:`PeftModelForInterpretability`, whose
``forward`` runs the tuner's own forward (an adapted model returns logits and explanations, not the backbone's
hidden states) and which exposes ``explain``. As for PEFT's own task types, ``AutoPeftModel`` refuses an adapter with
a task type; :class:`AutoPeftModelForInterpretability` is the auto class of ours.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from peft import PeftModel
from peft.auto import MODEL_TYPE_TO_PEFT_MODEL_MAPPING, _BaseAutoPeftModel
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType, TaskType

NAMESPACE = "PEFT_INTERP"
IMPORT_HINT = "import peft_interp to load"


def _extend_str_enum(enum_cls: type[enum.Enum], member_name: str, value: str) -> enum.Enum:
    """Add ``member_name = value`` to a str-valued Enum in place (idempotent)."""
    if member_name in enum_cls._member_map_:
        return enum_cls._member_map_[member_name]
    member = str.__new__(enum_cls, value)
    member._name_ = member_name
    member._value_ = value
    member.__objclass__ = enum_cls
    enum_cls._member_map_[member_name] = member
    enum_cls._value2member_map_[value] = member
    enum_cls._member_names_.append(member_name)
    return member


def peft_type_for(method: str) -> PeftType:
    """The namespaced ``PeftType`` member of a peft-interp method, e.g. ``"ivpt"`` -> ``PEFT_INTERP_IVPT``."""
    member_name = f"{NAMESPACE}_{method.upper()}"
    return _extend_str_enum(PeftType, member_name, f"{member_name}: {IMPORT_HINT}")


INTERP_TASK_TYPE: TaskType = _extend_str_enum(TaskType, f"{NAMESPACE}_CLASSIFICATION", f"{NAMESPACE}_CLASSIFICATION")


class Family(NamedTuple):
    """What the methods adapting one kind of base model share."""

    default_backbone: str  # the shipped backbone ``peft-interp train`` uses without --model
    task: str  # the Hub task of their model cards' model-index entries


FAMILIES = {
    "vision": Family("conceptworld-dinov2", "image-classification"),  # visual prompts: DINOv2 / CLIP vision towers
    "clip": Family("conceptworld-clip", "zero-shot-image-classification"),  # CLIP text (and image) prompts
}


def config_for_classes(config_cls: type, class_names: list[str], settings: dict):
    """``config_cls`` for ``class_names`` (and ``num_classes`` when the config has that field), ``settings``
    (field -> value) applied on top."""
    base = {"class_names": class_names}
    if "num_classes" in config_cls.__dataclass_fields__:
        base["num_classes"] = len(class_names)
    return config_cls(**{**base, **settings})


@dataclass(frozen=True)
class MethodSpec:
    """A method as the rest of peft-interp sees it; each method's package registers one with :func:`register_method`.

    Args:
        config_class: its ``PeftConfig``; ``config_class.method_name`` is the method's name (``--method``,
            ``peft_type`` and ``explanation.json``).
        model_class: its tuner (a ``BaseTuner``).
        family: a key of :data:`FAMILIES`: ``"vision"`` (visual prompts in a vision transformer, own head) or
            ``"clip"`` (CLIP prompts scoring class names); decides the default backbone, the card's task, the
            recipe augmentation and the ``--image-size`` checks.
        title, summary, citation: the model card's method title, one-paragraph summary and BibTeX entry.
        config_from_classes: ``(config_class, class_names, settings) -> config``, how the command line and the
            benchmark build the config for a dataset's classes (default :func:`config_for_classes`).
    """

    config_class: type
    model_class: type
    family: str
    title: str
    summary: str
    citation: str
    config_from_classes: Callable[[type, list[str], dict], Any] = config_for_classes

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"MethodSpec.family: expected one of {list(FAMILIES)}, got {self.family!r}")
        if not getattr(self.config_class, "method_name", ""):
            raise ValueError(f"MethodSpec.config_class: {self.config_class.__name__} has no method_name")

    @property
    def name(self) -> str:
        return self.config_class.method_name

    @property
    def default_backbone(self) -> str:
        return FAMILIES[self.family].default_backbone

    @property
    def task(self) -> str:
        return FAMILIES[self.family].task

    def make_config(self, class_names: list[str], settings: dict):
        """The method's config for ``class_names`` with ``settings`` (field -> value) applied."""
        return self.config_from_classes(self.config_class, class_names, settings)


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> None:
    """Register ``spec``'s config and tuner as a PEFT method, and ``spec`` for the rest of peft-interp
    (idempotent; :func:`registered_methods` lists methods in registration order)."""
    peft_type = peft_type_for(spec.name)
    PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = spec.config_class
    PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = spec.model_class
    PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = spec.model_class.prefix
    _METHODS[spec.name] = spec


def registered_methods(family: str | None = None) -> dict[str, MethodSpec]:
    """Name -> :class:`MethodSpec` of every registered method (of ``family`` when given), in registration order."""
    return {name: spec for name, spec in _METHODS.items() if family in (None, spec.family)}


def method_spec(method: str) -> MethodSpec:
    """The :class:`MethodSpec` of the registered method ``method``."""
    if method not in _METHODS:
        raise ValueError(f"method {method!r} is not a peft-interp method ({', '.join(_METHODS)})")
    return _METHODS[method]


class PeftModelForInterpretability(PeftModel):
    """A ``PeftModel`` whose forward is the tuner's forward.

    ``model(pixel_values=..., labels=...)`` returns the method's output (``loss``, ``logits`` and the method's
    explanation tensors); inside ``with model.disable_adapter():`` it returns exactly what the base model returns.

    ``get_base_model()`` returns the module this forward runs, the tuner (as PEFT does for its prompt-learning
    methods), so that ``transformers.Trainer`` reads the inputs (``pixel_values``, ``labels``, ...) and label names
    from its signature; the backbone itself is ``model.base_model.model``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with warnings.catch_warnings():
            # PeftModel.__init__ reads transformers' deprecated `is_gradient_checkpointing` alias (transformers >= 5)
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            super().__init__(*args, **kwargs)

    def get_base_model(self):
        return self.base_model

    def forward(self, *args: Any, **kwargs: Any):
        # transformers.Trainer passes this hint for summed losses; our losses are batch means, so it is not needed.
        kwargs.pop("num_items_in_batch", None)
        self._check_inputs(kwargs.get("pixel_values", args[0] if args else None), kwargs.get("labels"))
        with self._enable_peft_forward_hooks(*args, **kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k not in self.special_peft_forward_args}
            return self.base_model(*args, **kwargs)

    def explain(self, *args: Any, **kwargs: Any):
        """The active adapter's explanation of its decisions on ``pixel_values``: a
        :class:`~peft_interp.tuners.explanation.Explanation` (or a method's subclass of it), for every method."""
        self._check_inputs(kwargs.get("pixel_values", args[0] if args else None), None)
        return self.base_model.explain(*args, **kwargs)

    def _check_inputs(self, pixel_values, labels) -> None:
        """Our own checks of ``pixel_values`` / ``labels`` (:mod:`peft_interp.validation`) before the adapted
        forward pass; with adapters disabled the base model gets them as they are."""
        from .validation import check_labels, check_pixel_values

        tuner = self.base_model
        if tuner.active_adapter_in_use() is None:
            return
        config = self.peft_config[tuner.active_adapters[0]]
        vision = getattr(tuner.model.config, "vision_config", tuner.model.config)
        if pixel_values is not None:
            layout = getattr(tuner, "layout", None)
            size = config.resolved_image_size(layout) if hasattr(config, "resolved_image_size") and layout else vision.image_size
            check_pixel_values(pixel_values, getattr(vision, "num_channels", 3), size)
        if labels is not None:
            num_classes = getattr(config, "num_classes", None) or len(config.class_names or [])
            batch = len(pixel_values) if isinstance(pixel_values, torch.Tensor) else len(labels)
            check_labels(labels, batch, num_classes)

    # ----------------------------------------------------------------------------------- verified save / load
    def save_pretrained(self, save_directory: str, safe_serialization: bool = True, selected_adapters=None, **kwargs):
        """PEFT's ``save_pretrained`` (safetensors only), then the weights' hash, tensor list and ``peft_type``
        are recorded in each weights file's header (:func:`peft_interp.weights.record_weights_metadata`)."""
        from .weights import WEIGHTS_FILE, record_weights_metadata

        if not safe_serialization:
            raise ValueError("safe_serialization=False: peft-interp adapters are saved as safetensors only (a pickled "
                             "adapter_model.bin could run code when loaded)")  # fmt: skip
        # Our adapters never change the base model's embedding matrices; PEFT's "auto" would look the base model's
        # config up on the Hub to find out (a request per save, and a warning for the shipped backbones' names).
        kwargs.setdefault("save_embedding_layers", False)
        super().save_pretrained(save_directory, safe_serialization=True, selected_adapters=selected_adapters, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        for name in selected_adapters or list(self.peft_config):
            folder = Path(save_directory) / (name if name != "default" else "")
            record_weights_metadata(folder / WEIGHTS_FILE, self.peft_config[name].peft_type)

    def load_adapter(self, model_id, adapter_name: str, is_trainable: bool = False, **kwargs: Any):
        """PEFT's ``load_adapter`` after :func:`peft_interp.weights.verify_weights_file` and a check that the file
        holds exactly this adapter's parameters (used by ``PeftModel.from_pretrained`` too)."""
        from peft.config import PeftConfig
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

        from .weights import check_adapter_keys, verify_weights_file

        hub_kwargs, _ = self._split_kwargs(dict(kwargs))
        added = adapter_name not in self.peft_config
        if added:  # PEFT's own steps for a new adapter, so that its parameters can be checked before loading
            config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[PeftConfig._get_peft_type(model_id, **hub_kwargs)]
            config = config_cls.from_pretrained(model_id, **hub_kwargs)
            self._check_new_adapter_config(config, is_trainable=is_trainable)
            config.inference_mode = not is_trainable
            self.add_adapter(adapter_name, config, low_cpu_mem_usage=kwargs.get("low_cpu_mem_usage", False),
                             autocast_adapter_dtype=kwargs.get("autocast_adapter_dtype", True))  # fmt: skip
            if is_trainable:
                self.set_requires_grad(adapter_name)
        try:
            path = _weights_file(model_id, hub_kwargs)
            saved = verify_weights_file(path, self.peft_config[adapter_name].peft_type)
            check_adapter_keys(self, adapter_name, saved, path)
        except Exception:
            if added:
                self.delete_adapter(adapter_name)
            raise
        return super().load_adapter(model_id, adapter_name, is_trainable=is_trainable, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any):
        """Upload the adapter with its explanation and a model card (see :func:`peft_interp.sharing.push_adapter`);
        PEFT's own ``push_to_hub`` would drop both."""
        from .sharing import push_adapter

        return push_adapter(self, repo_id, **kwargs)


def _weights_file(model_id, hub_kwargs: dict):
    """The local path of an adapter's weights file (downloaded from the Hub when ``model_id`` is no folder)."""
    from .weights import WEIGHTS_FILE, weights_path

    folder = Path(model_id) / (hub_kwargs.get("subfolder") or "")
    if folder.is_dir() or Path(model_id).exists():
        return weights_path(folder)
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(model_id), WEIGHTS_FILE, **hub_kwargs))


MODEL_TYPE_TO_PEFT_MODEL_MAPPING[INTERP_TASK_TYPE] = PeftModelForInterpretability


class _BaseModelLoader:
    """``from_pretrained`` of the base model an adapter names, shipped backbones included (offline)."""

    @staticmethod
    def from_pretrained(name_or_path: str, revision: str | None = None, **kwargs: Any):
        from .shipped import load_base_model

        return load_base_model(name_or_path, **({"revision": revision} if revision else {}), **kwargs)


class AutoPeftModelForInterpretability(_BaseAutoPeftModel):
    """``AutoPeftModelForInterpretability.from_pretrained(adapter)`` loads the base model the adapter names
    (``base_model_name_or_path``: a Hub id, a folder, or a backbone shipped with peft-interp) and the adapter on it,
    like PEFT's ``AutoPeftModelFor...`` classes."""

    _target_class = _BaseModelLoader
    _target_peft_class = PeftModelForInterpretability
