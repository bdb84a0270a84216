"""Applying LoRAs to a loaded model for one job, and taking them off again exactly.

`apply_loras` is a context manager: on entry each requested network is attached, on exit
(always, also on errors or interrupts) the model is returned to the very same modules and
weight tensors it had, so the next job without a `<lora:...>` tag renders bit-for-bit the
base image. Two strategies:

- "adapters" (default): plain LoRA/LoCon modules become peft LoRA adapters injected next to
  the original layers (`peft.inject_adapter_in_model`); the original weights are never
  written. On exit every peft layer is replaced by its untouched base layer. Network types
  peft layers cannot express as they are stored (LoHa, LoKr, full diffs) are merged as below.
- "merge": like A1111, the weight change is added into the layer weights after keeping a copy
  of each touched tensor; on exit the copies are written back (exact, not a subtraction).

`benchmarks/bench_lora.py` measures both per job.
"""

from __future__ import annotations

import warnings as pywarnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch

from sdstudio.extensions.lora.names import ModuleIndex, normalise_dotted
from sdstudio.extensions.lora.networks import ModuleNetwork, ParsedLora

if TYPE_CHECKING:
    from peft.tuners.lora import LoraLayer

STRATEGIES = ("adapters", "merge")
ADAPTER_PREFIX = "sdstudio_lora_"


@dataclass
class LoadedNetwork:
    """One requested LoRA, parsed, with the multipliers of its tag."""

    name: str  # the name the prompt used (A1111's mentioned_name)
    parsed: ParsedLora
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0


@dataclass
class ApplyStats:
    """What got attached, for the report and tests."""

    adapter_modules: int = 0
    merged_modules: int = 0
    skipped: list[str] = field(default_factory=list)  # warnings


def _multiplier(net: LoadedNetwork, model_key: str) -> float:
    return net.unet_multiplier if model_key == "unet" else net.te_multiplier


def _resolve(index: ModuleIndex, module: ModuleNetwork) -> str | None:
    if module.kohya_style:
        return index.resolve(module.key)
    return index.resolve(normalise_dotted(module.key))


def _fits_peft(module: ModuleNetwork, layer: torch.nn.Module) -> bool:
    """A plain LoRA whose down/up shapes a peft Linear/Conv2d adapter takes as they are."""
    if module.kind != "lora" or module.unsupported:
        return False
    down, up = module.tensors["down"], module.tensors["up"]
    if isinstance(layer, torch.nn.Linear):
        return (
            down.flatten(1).shape[1] == layer.in_features
            and up.flatten(1).shape[0] == layer.out_features
            and down.numel() == down.shape[0] * layer.in_features
        )
    if isinstance(layer, torch.nn.Conv2d):
        return (
            down.dim() == 4
            and tuple(down.shape[1:]) == (layer.in_channels // layer.groups, *layer.kernel_size)
            and up.dim() == 4
            and tuple(up.shape[2:]) == (1, 1)
            and up.shape[0] == layer.out_channels
            and layer.groups == 1
        )
    return False


def _weight_of(layer: torch.nn.Module) -> torch.Tensor:
    """A layer's weight (ModuleIndex keeps only layers that have one)."""
    return cast(torch.Tensor, layer.weight)  # torch types module attributes as Tensor | Module


def _bias_of(layer: torch.nn.Module) -> torch.Tensor | None:
    """A layer's bias, None when it has none."""
    bias: torch.Tensor | None = getattr(layer, "bias", None)
    return bias


def _peft_layer(model: torch.nn.Module, path: str) -> LoraLayer:
    """The peft LoRA layer `inject_adapter_in_model` put at `path`."""
    return cast("LoraLayer", model.get_submodule(path))


class _Attachment:
    """Everything attached to one model, so that `detach` can undo it exactly."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.weight_backups: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.peft_paths: list[str] = []
        self.had_peft_config = hasattr(model, "peft_config")
        self.old_peft_config: Any = getattr(model, "peft_config", None)  # peft's, whatever it holds

    def merge(self, path: str, layer: torch.nn.Module, delta: torch.Tensor, bias_delta: torch.Tensor | None) -> None:
        weight, bias = _weight_of(layer), _bias_of(layer)
        if path not in self.weight_backups:
            self.weight_backups[path] = (weight.detach().clone(), bias.detach().clone() if bias is not None else None)
        with torch.no_grad():
            weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
            if bias_delta is not None and bias is not None:
                bias.copy_((bias.float() + bias_delta.to(bias.device)).to(bias.dtype))

    def inject(self, adapter: str, networks: dict[str, tuple[ModuleNetwork, float]]) -> None:
        """One peft LoRA adapter over `networks` (path -> (module network, multiplier))."""
        from peft import LoraConfig, inject_adapter_in_model

        ranks = {path: int(module.tensors["down"].shape[0]) for path, (module, _) in networks.items()}
        config = LoraConfig(
            r=8,
            lora_alpha=8,
            target_modules=sorted(networks),
            # scaling = alpha/r = 1 for every module: alpha/rank x multiplier is folded into lora_B.
            rank_pattern={p: r for p, r in ranks.items()},
            alpha_pattern={p: r for p, r in ranks.items()},
            lora_dropout=0.0,
            bias="none",
            init_lora_weights=False,
        )
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("ignore")
            inject_adapter_in_model(config, self.model, adapter_name=adapter, low_cpu_mem_usage=True)
        for path, (module, multiplier) in networks.items():
            layer = _peft_layer(self.model, path)
            base = layer.get_base_layer()
            device, dtype = _weight_of(base).device, _weight_of(base).dtype
            down = module.tensors["down"].float()
            up = module.tensors["up"].float() * (module.scale * multiplier)
            if isinstance(base, torch.nn.Linear):
                down, up = down.flatten(1), up.flatten(1)
            layer.lora_A[adapter].weight = torch.nn.Parameter(down.to(device, dtype).contiguous(), requires_grad=False)
            layer.lora_B[adapter].weight = torch.nn.Parameter(up.to(device, dtype).contiguous(), requires_grad=False)
            if path not in self.peft_paths:
                self.peft_paths.append(path)

    def activate_all(self) -> None:
        """Every adapter present in a layer runs (peft activates only the newest by default)."""
        for path in self.peft_paths:
            layer = _peft_layer(self.model, path)
            names = list(layer.lora_A.keys())
            layer.set_adapter(names)
            for name in names:  # set_adapter marks them trainable; inference only here
                layer.lora_A[name].requires_grad_(False)
                layer.lora_B[name].requires_grad_(False)

    def detach(self) -> None:
        """Put back the original layers and weights."""
        # Found by scanning rather than from peft_paths, so a half-finished injection is undone too.
        ours = [
            path
            for path, layer in self.model.named_modules()
            if hasattr(layer, "get_base_layer")
            and any(str(n).startswith(ADAPTER_PREFIX) for n in getattr(layer, "lora_A", {}))
        ]
        for path in reversed(ours):
            parent_path, _, child = path.rpartition(".")
            parent = self.model.get_submodule(parent_path) if parent_path else self.model
            layer = getattr(parent, child)
            setattr(parent, child, layer.get_base_layer())
        self.peft_paths.clear()
        if self.had_peft_config:
            self.model.peft_config = self.old_peft_config
        elif hasattr(self.model, "peft_config"):
            del self.model.peft_config
        with torch.no_grad():
            for path, (weight, bias) in self.weight_backups.items():
                layer = self.model.get_submodule(path)
                _weight_of(layer).copy_(weight)
                if bias is not None:
                    cast(torch.Tensor, _bias_of(layer)).copy_(bias)  # it had this bias when backed up
        self.weight_backups.clear()


@contextmanager
def apply_loras(
    unet: torch.nn.Module | None,
    text_encoders: Sequence[torch.nn.Module],
    networks: Sequence[LoadedNetwork],
    strategy: str = "adapters",
    on_text_encoders_changed: Callable[[], None] | None = None,
) -> Iterator[ApplyStats]:
    """Attach `networks` to the UNet and text encoders for the duration of the block; undo exactly after."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}")
    models: dict[str, torch.nn.Module] = {}
    if unet is not None:
        models["unet"] = unet
    for i, encoder in enumerate(text_encoders):
        models[f"te{i}"] = encoder
    stats = ApplyStats()
    attachments: dict[str, _Attachment] = {}
    te_touched = False
    try:
        if networks:
            te_touched = _attach(models, networks, strategy, attachments, stats)
            if te_touched and on_text_encoders_changed is not None:
                on_text_encoders_changed()
        yield stats
    finally:
        for attachment in attachments.values():
            attachment.detach()
        if te_touched and on_text_encoders_changed is not None:
            on_text_encoders_changed()


def _attach(
    models: dict[str, torch.nn.Module],
    networks: Sequence[LoadedNetwork],
    strategy: str,
    attachments: dict[str, _Attachment],
    stats: ApplyStats,
) -> bool:
    indexes: dict[str, ModuleIndex] = {}
    merged: dict[str, dict[str, list[tuple[ModuleNetwork, float]]]] = {}
    te_touched = False
    for number, net in enumerate(networks):
        adapters: dict[str, dict[str, tuple[ModuleNetwork, float]]] = {}
        unmatched = 0
        missing_models: set[str] = set()
        for (model_key, _), module in net.parsed.modules.items():
            multiplier = _multiplier(net, model_key)
            if multiplier == 0:
                continue  # weight 0: this part of the network is not applied at all
            model = models.get(model_key)
            if model is None:
                missing_models.add(model_key)
                continue
            if model_key not in indexes:
                indexes[model_key] = (
                    ModuleIndex.for_unet(model) if model_key == "unet" else ModuleIndex.for_text_encoder(model)
                )
            path = _resolve(indexes[model_key], module)
            if path is None:
                unmatched += 1
                continue
            why = module.unsupported
            if why:
                stats.skipped.append(f"{net.name}: {module.key}: {why} is not supported; that layer is left unchanged")
                continue
            layer = indexes[model_key].modules[path]
            if strategy == "adapters" and _fits_peft(module, layer):
                adapters.setdefault(model_key, {})[path] = (module, multiplier)
            else:
                merged.setdefault(model_key, {}).setdefault(path, []).append((module, multiplier))
            te_touched = te_touched or model_key != "unet"
        if unmatched:
            stats.skipped.append(
                f"{net.name}: {unmatched} layer(s) match no module of this model (LoRA made for another model family?)"
            )
        if missing_models:
            stats.skipped.append(
                f"{net.name}: has weights for {', '.join(sorted(missing_models))} which this model does not have"
            )
        for model_key, chosen in adapters.items():
            attachment = attachments.setdefault(model_key, _Attachment(models[model_key]))
            attachment.inject(f"{ADAPTER_PREFIX}{number}", chosen)
            stats.adapter_modules += len(chosen)
    for model_key, by_path in merged.items():
        attachment = attachments.setdefault(model_key, _Attachment(models[model_key]))
        index = indexes[model_key]
        for path, items in by_path.items():
            layer = index.modules[path]
            weight = _weight_of(layer)
            delta = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            bias_delta = None
            for module, multiplier in items:
                try:
                    delta += module.delta_weight(weight.shape).to(delta.device) * multiplier
                except ValueError as exc:
                    stats.skipped.append(f"{module.key}: {exc}; that layer is left unchanged")
                    continue
                extra = module.delta_bias()
                if extra is not None:
                    bias_delta = extra * multiplier if bias_delta is None else bias_delta + extra * multiplier
            attachment.merge(path, layer, delta, bias_delta)
            stats.merged_modules += 1
    for attachment in attachments.values():
        attachment.activate_all()
    return te_touched
