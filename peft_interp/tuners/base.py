"""The BaseTuner plumbing shared by every peft-interp tuner.

Our tuners differ from LoRA-style ones in two ways, both handled here once:

* They keep state that no single wrapped module owns (a classification head, a final concept level, prompt
  generators) in ``nn.ModuleDict``\\ s keyed by adapter name on the tuner itself, named in ``shared_module_names``.
  PEFT saves and loads them with the adapter; :meth:`set_adapter`, :meth:`delete_adapter` and :meth:`unload` cover
  them too.
* They choose their target modules from the model's structure, not from ``target_modules`` patterns: a subclass
  returns, from :meth:`InterpTuner._adapter_modules`, the exact module names to wrap (each with the wrapper class
  and its arguments) and its shared modules. :meth:`InterpTuner.inject_adapter` is the one entry point of every
  loading route (``get_peft_model``, ``add_adapter``, ``load_adapter`` / ``from_pretrained``): it checks the base
  model first, then builds what the subclass planned.

Each tuner defines its own ``forward``; :meth:`active_adapter_in_use` tells it whether an adapter is enabled.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from peft.tuners.tuners_utils import BaseTuner, _get_submodules
from torch import nn

from ..validation import check_hf_model
from .layers import InterpLayer
from .recipe import TrainingRecipe

# Base-model facts an adapter depends on; recorded in the config and checked when it is loaded on a model.
SIGNATURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "patch_size", "num_register_tokens", "vocab_size",
                  "projection_dim")  # fmt: skip


def base_model_signature(model: nn.Module) -> dict:
    """The :data:`SIGNATURE_KEYS` of ``model.config`` and of its ``vision_config`` / ``text_config``."""
    config = model.config.to_dict()
    signature = {key: config[key] for key in SIGNATURE_KEYS if key in config}
    for sub in ("vision_config", "text_config"):
        if isinstance(config.get(sub), dict):
            signature.update({f"{sub}.{key}": config[sub][key] for key in SIGNATURE_KEYS if key in config[sub]})
    return signature


def check_base_model(config, model: nn.Module) -> None:
    """Record the base model's signature in ``config``, or, if it has one, raise when ``model`` differs."""
    current = base_model_signature(model)
    saved = config.base_model_signature
    if saved and saved != current:
        differences = {key: (saved.get(key), current.get(key)) for key in sorted(saved.keys() | current.keys())
                       if saved.get(key) != current.get(key)}  # fmt: skip
        details = "; ".join(f"{key}: adapter {a!r} vs model {b!r}" for key, (a, b) in differences.items())
        raise ValueError(
            f"This {type(config).__name__} adapter was made for a different base model ({details}). Load it on the "
            f"base model it was trained on (`base_model_name_or_path`={config.base_model_name_or_path!r})."
        )
    config.base_model_signature = current


class LayerPlan(NamedTuple):
    """How one module is adapted: wrapped in ``layer_cls(module, adapter_name, *args, inference_mode=...)``, or,
    if it is already a ``layer_cls``, given the adapter by ``update_layer(adapter_name, *args, inference_mode=...)``."""

    layer_cls: type[InterpLayer]
    args: tuple


def _subclasses(cls: type) -> list[type]:
    return [cls] + [sub for direct in cls.__subclasses__() for sub in _subclasses(direct)]


def adapter_containers() -> set[str]:
    """Names of every container keyed by adapter name, in our layers and on our tuners (all methods)."""
    names = {name for layer in _subclasses(InterpLayer) for name in getattr(layer, "adapter_layer_names", ())}
    return names | {name for tuner in _subclasses(InterpTuner) for name in tuner.shared_module_names}


class InterpTuner(BaseTuner):
    uses_shared_state = True
    tuner_layer_cls = InterpLayer
    target_module_mapping: dict[str, list[str]] = {}
    shared_module_names: tuple[str, ...] = ()
    accepts_loss_kwargs = False  # transformers.Trainer: our losses are batch means, scale them for accumulation

    # ------------------------------------------------------------------------------------------ saved state keys
    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """Checkpoint key of a model state-dict key: the adapter name dropped after its container, also where the
        container holds whole modules (``ivpt_head.<name>.concepts.prototypes``), which PEFT's default (adapter name
        second to last) leaves in. Without this, an adapter saved as ``"default"`` loads as another name (or one
        saved under another name loads as ``"default"``) with those weights silently missing."""
        for container in adapter_containers():
            marker = f".{container}.{adapter_name}."
            if marker in key:
                return key.replace(marker, f".{container}.", 1)
        return super()._remove_adapter_name_from_key(key, adapter_name)

    # ------------------------------------------------------------------------------------------------- injection
    def _adapter_modules(
        self, model: nn.Module, config, adapter_name: str
    ) -> tuple[dict[str, LayerPlan], dict[str, nn.Module]]:
        """What a new adapter adds: ``{module name: LayerPlan}`` of the modules to wrap and ``{shared module name:
        module}`` (see :attr:`shared_module_names`). Raise a ``ValueError`` naming the field for a bad config."""
        raise NotImplementedError

    def inject_adapter(self, model: nn.Module, adapter_name: str, **kwargs: Any) -> None:
        """Check the base model, then add the adapter the subclass plans (the one entry point of every loading
        route: PEFT calls it from ``get_peft_model``, ``add_adapter`` and ``load_adapter`` / ``from_pretrained``)."""
        config = self.peft_config[adapter_name]
        check_hf_model(model, config)
        check_base_model(config, model)  # before any module is created or weight loaded
        layers, shared = self._adapter_modules(model, config, adapter_name)
        if not layers:
            raise ValueError(f"{type(config).__name__} adapts no module: prompt at least one block.")
        self._add_shared_modules(adapter_name, shared, next(model.parameters()).device)
        # PEFT's callbacks below (_check_target_module_exists, _create_and_replace) take no extra argument: the plan
        # is readable by them for the duration of this call only.
        self._layer_plan = layers
        try:
            super().inject_adapter(model, adapter_name, **kwargs)
        finally:
            del self._layer_plan

    def _prepare_adapter_config(self, peft_config, model_config):
        return peft_config  # targets come from the model's structure, see _adapter_modules

    def _check_target_module_exists(self, peft_config, key: str) -> bool:
        return key in self._layer_plan

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key) -> None:
        layer_cls, args = self._layer_plan[current_key]
        if isinstance(target, layer_cls):
            target.update_layer(adapter_name, *args, inference_mode=config.inference_mode)
        else:
            layer = layer_cls(target, adapter_name, *args, inference_mode=config.inference_mode)
            self._replace_module(parent, target_name, layer, target)

    def _add_shared_modules(self, adapter_name: str, modules: dict[str, nn.Module], device) -> None:
        """Store ``modules`` (name -> module) under ``adapter_name`` in the tuner's shared ModuleDicts."""
        for name, module in modules.items():
            if name not in self.shared_module_names:
                raise ValueError(f"{name!r} is not in {type(self).__name__}.shared_module_names")
            if name not in self._modules:
                self.add_module(name, nn.ModuleDict())
            self._modules[name][adapter_name] = module.to(device)

    # --------------------------------------------------------------------------------------- adapter management
    def _shared_modules(self) -> list[nn.ModuleDict]:
        return [self._modules[name] for name in self.shared_module_names if name in self._modules]

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        super().set_adapter(adapter_name, inference_mode=inference_mode)
        active = set(self.active_adapters)
        for modules in self._shared_modules():
            for name, module in modules.items():
                module.requires_grad_(name in active and not inference_mode)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        for modules in self._shared_modules():
            if adapter_name in modules:
                del modules[adapter_name]

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        if merge:
            raise NotImplementedError("Prompt tokens cannot be merged into the base weights; use `unload()`.")
        for key in [key for key, module in self.model.named_modules() if isinstance(module, InterpLayer)]:
            parent, target, target_name = _get_submodules(self.model, key)
            setattr(parent, target_name, target.get_base_layer())
        for name in self.shared_module_names:
            self._modules.pop(name, None)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        return self.model

    def explanation_metadata(self, adapter_name: str | None = None) -> dict:
        """What the adapter explains, as JSON-ready data (written to ``explanation.json`` when sharing)."""
        config = self.peft_config[adapter_name or self.active_adapters[0]]
        return {
            "method": config.method_name,
            "peft_type": config.peft_type.name,
            "base_model": config.base_model_name_or_path,
            "class_names": config.class_names,
        }

    # -------------------------------------------------------------------------------------------------- training
    def training_recipe(self) -> TrainingRecipe:
        """The method's optimiser and schedule (overridden by each method with its paper's numbers)."""
        return TrainingRecipe()

    def optimizer_param_groups(self) -> list[dict]:
        """Parameter groups of the active adapter; groups may carry their own ``lr``."""
        params = [param for param in self.parameters() if param.requires_grad]
        return [{"params": params, "lr": self.training_recipe().learning_rate}]

    def on_train_begin(self, train_dataset, collate_fn, steps_per_epoch: int) -> None:
        """Called by the trainers once before the first step (also when resuming) with the training rows, the collate
        function that turns a list of them into model inputs, and the optimiser steps per epoch; methods whose
        discrete phases read the training data (IPL's task-loss word selection) cache what they need here."""

    def on_train_step_begin(self, step: int) -> None:
        """Called by the trainers before optimiser step ``step`` (0-based); methods with discrete phases (IPL's
        token selection) run them here."""

    def on_epoch_end(self, epoch: int, num_epochs: int) -> None:
        """Called by the trainers after the last optimiser step of epoch ``epoch`` (1-based) of ``num_epochs``;
        methods that act per epoch (PromptSRC's Gaussian prompt aggregation) run them here."""

    def active_adapter_in_use(self) -> str | None:
        """The adapter the next forward runs with, or None when adapters are disabled."""
        for module in self.model.modules():
            if isinstance(module, InterpLayer):
                return module.active_adapter_name()
        return None
