"""Make peft-interp's methods first-class PEFT methods.

PEFT dispatches on two enums stored in ``adapter_config.json``: ``peft_type`` picks the config and tuner classes,
``task_type`` picks the ``PeftModel`` subclass. ``import peft_interp`` extends both enums and fills PEFT's mappings,
so that ``get_peft_model(model, IVPTConfig(...))`` and ``PeftModel.from_pretrained(base, path)`` work like for any
built-in method. Every method of this package plugs in with one call::

    register_method("ivpt", IVPTConfig, IVPTModel)

Our ``peft_type`` values carry the hint ``"<NAME>: import peft_interp to load"``. Without ``import peft_interp``
PEFT fails on the unknown value with ``KeyError: 'PEFT_INTERP_IVPT: import peft_interp to load'``: the only
message PEFT prints is that value, so the value itself tells the user what to do.

All methods share one task type, :data:`INTERP_TASK_TYPE`, served by :class:`PeftModelForInterpretability`, whose
``forward`` runs the tuner's own forward (an adapted model returns logits and explanations, not the backbone's
hidden states) and which exposes ``explain``.
"""

from __future__ import annotations

import enum
from typing import Any

from peft import PeftModel
from peft.auto import MODEL_TYPE_TO_PEFT_MODEL_MAPPING
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


def register_method(method: str, config_cls: type, model_cls: type) -> None:
    """Register ``config_cls`` / ``model_cls`` (a ``BaseTuner``) as the PEFT method ``method`` (idempotent)."""
    peft_type = peft_type_for(method)
    PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls
    PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = model_cls
    PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = model_cls.prefix


class PeftModelForInterpretability(PeftModel):
    """A ``PeftModel`` whose forward is the tuner's forward.

    ``model(pixel_values=..., labels=...)`` returns the method's output (``loss``, ``logits`` and the method's
    explanation tensors); inside ``with model.disable_adapter():`` it returns exactly what the base model returns.
    """

    def forward(self, *args: Any, **kwargs: Any):
        # transformers.Trainer passes this hint for summed losses; our losses are batch means, so it is not needed.
        kwargs.pop("num_items_in_batch", None)
        with self._enable_peft_forward_hooks(*args, **kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k not in self.special_peft_forward_args}
            return self.base_model(*args, **kwargs)

    def explain(self, *args: Any, **kwargs: Any):
        """The active adapter's explanation of its decisions (see the tuner's ``explain``)."""
        return self.base_model.explain(*args, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any):
        """Upload the adapter with its explanation and a model card (see :func:`peft_interp.sharing.push_adapter`);
        PEFT's own ``push_to_hub`` would drop both."""
        from .sharing import push_adapter

        return push_adapter(self, repo_id, **kwargs)


MODEL_TYPE_TO_PEFT_MODEL_MAPPING[INTERP_TASK_TYPE] = PeftModelForInterpretability
