"""Model memory: the one owner of what is loaded, and the memory switches of a checkpoint.

`ModelMemory` holds every loaded model (checkpoint parts, upscalers, face restorers, LoRA
weights, and whatever extensions load) under a key with its size in bytes. Services ask it
for a model with `get_or_load`; it keeps them in least-recently-used order and drops the
oldest when a new one would not fit the budget, so what is resident stays within it, and
`/sdapi/v1/memory` reports one truth. Services keep no model of their own between calls:
what the owner drops is freed (ComfyUI's model management and InvokeAI's model cache do the
same job).

The switches (VAE tiling, attention slicing, model CPU offload) go through diffusers' and
accelerate's own APIs (`AutoencoderKL.enable_tiling`, `set_attention_slice`,
`accelerate.cpu_offload_with_hook`), so nothing in torch or diffusers is patched.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:  # torch is imported when a model is measured, not when this module is
    import torch

T = TypeVar("T")


def module_bytes(*modules: Any) -> int:
    """Bytes held by the parameters and buffers of torch modules (None entries are skipped)."""
    import torch

    seen: set[int] = set()
    total = 0
    for module in modules:
        if module is None:
            continue
        tensors: Iterable[torch.Tensor]
        if isinstance(module, torch.nn.Module):
            tensors = [*module.parameters(), *module.buffers()]
        elif isinstance(module, torch.Tensor):
            tensors = [module]
        elif isinstance(module, dict):
            tensors = [t for t in module.values() if isinstance(t, torch.Tensor)]
        else:
            continue
        for tensor in tensors:
            if id(tensor) not in seen:  # tied weights count once
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


@dataclass
class ResidentModel:
    """One loaded model as the memory owner tracks it."""

    key: str
    kind: str
    value: Any
    size_bytes: int
    loaded_at: float
    used_at: float


class ModelMemory:
    """Owns every loaded model; least recently used first out when the budget is exceeded.

    `budget_bytes()` is read at each load (a setting can change it while running); 0 or
    less means no byte budget. `limits` bounds how many models of a kind stay loaded
    (A1111 keeps one checkpoint: `{"checkpoint": 1}`). A model that is larger than the
    whole budget is still loaded (the job needs it) after everything else is dropped.
    """

    def __init__(
        self,
        budget_bytes: Callable[[], int] | int = 0,
        limits: Callable[[], dict[str, int]] | dict[str, int] | None = None,
    ):
        fixed_limits = dict(limits or {}) if not callable(limits) else {}
        self._budget = budget_bytes if callable(budget_bytes) else (lambda: int(budget_bytes))
        self._limits = limits if callable(limits) else (lambda: fixed_limits)
        self._lock = threading.RLock()
        self._resident: OrderedDict[str, ResidentModel] = OrderedDict()

    @property
    def budget_bytes(self) -> int:
        """The current budget in bytes (0: none)."""
        return max(0, int(self._budget()))

    def get(self, key: str) -> Any | None:
        """The resident model under `key` (marked as just used), or None."""
        with self._lock:
            entry = self._resident.get(key)
            if entry is None:
                return None
            entry.used_at = time.monotonic()
            self._resident.move_to_end(key)
            return entry.value

    def peek(self, key: str) -> Any | None:
        """The resident model under `key` without marking it used, or None."""
        with self._lock:
            entry = self._resident.get(key)
            return entry.value if entry is not None else None

    def get_or_load(self, key: str, kind: str, load: Callable[[], T], size_of: Callable[[T], int] = module_bytes) -> T:
        """The model under `key`, loading it with `load()` when absent (older models make room first)."""
        with self._lock:
            found = self.get(key)
            if found is not None:
                return cast(T, found)  # stored under this key by the same loader
            # Make room before loading, so the old and the new never add up past the budget
            # (the new one's size is unknown until loaded: free what the kind's limit asks for,
            # then drop oldest-first after the load if the sum is over).
            self._evict_for_kind(kind, keep=None)
            value = load()
            size = int(size_of(value))
            now = time.monotonic()
            self._resident[key] = ResidentModel(key, kind, value, size, now, now)
            self._evict_over_budget(keep=key)
            return value

    def release(self, key: str) -> bool:
        """Drop one model (e.g. A1111's unload-checkpoint); False when it was not loaded."""
        with self._lock:
            dropped = self._resident.pop(key, None) is not None
        if dropped:
            _collect()
        return dropped

    def release_kind(self, kind: str) -> int:
        """Drop every model of a kind; returns how many were dropped."""
        with self._lock:
            keys = [k for k, e in self._resident.items() if e.kind == kind]
            for key in keys:
                del self._resident[key]
        if keys:
            _collect()
        return len(keys)

    def keys(self, kind: str | None = None) -> list[str]:
        """Resident keys, least recently used first."""
        with self._lock:
            return [k for k, e in self._resident.items() if kind is None or e.kind == kind]

    def resident_bytes(self) -> int:
        """Total size of the resident models."""
        with self._lock:
            return sum(e.size_bytes for e in self._resident.values())

    def report(self) -> dict[str, Any]:
        """What is loaded, for /sdapi/v1/memory: budget, total and one row per model."""
        with self._lock:
            rows = [{"key": e.key, "kind": e.kind, "bytes": e.size_bytes} for e in self._resident.values()]
        return {"budget": self.budget_bytes, "resident": sum(r["bytes"] for r in rows), "models": rows}

    def _evict_for_kind(self, kind: str, keep: str | None) -> None:
        limit = self._limits().get(kind)
        if limit is None:
            return
        same = [k for k, e in self._resident.items() if e.kind == kind and k != keep]
        # the new model takes one place of the kind's limit
        excess = len(same) - (max(1, limit) - 1)
        for key in same[: max(0, excess)]:
            del self._resident[key]
        if excess > 0:
            _collect()

    def _evict_over_budget(self, keep: str) -> None:
        budget = self.budget_bytes
        if budget <= 0:
            return
        dropped = False
        while self.resident_bytes() > budget:
            victim = next((k for k in self._resident if k != keep), None)
            if victim is None:
                break
            del self._resident[victim]
            dropped = True
        if dropped:
            _collect()


def _collect() -> None:
    """Return freed memory now rather than at the next garbage collection."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class MemoryOptions:
    """The memory policy of one load (from Settings: vae_tiling, attention_slicing, cpu_offload)."""

    vae_tiling: bool = False
    attention_slicing: bool = False
    cpu_offload: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> MemoryOptions:
        return cls(bool(settings.vae_tiling), bool(settings.attention_slicing), bool(settings.cpu_offload))


def apply_memory_options(loaded: Any, options: MemoryOptions, execution_device: str | torch.device) -> list[str]:
    """Switch the options on for `loaded` (a LoadedCheckpoint); returns notes on what was skipped.

    Model CPU offload keeps every component in CPU memory and moves one at a time to the
    accelerator while it runs (text encoder, then UNet, then VAE); it needs the components
    loaded on the CPU and only means something when `execution_device` is an accelerator.
    """
    import torch

    notes: list[str] = []
    if options.vae_tiling:
        loaded.vae.enable_tiling()
    if options.attention_slicing:
        loaded.unet.set_attention_slice("auto")
    if options.cpu_offload:
        device = torch.device(execution_device)
        if device.type == "cpu":
            notes.append("cpu_offload: the model already runs on the CPU; nothing to offload")
        else:
            from accelerate import cpu_offload_with_hook

            hook = None
            for module in (loaded.text_encoder, getattr(loaded, "text_encoder_2", None), loaded.unet, loaded.vae):
                if module is not None:
                    _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
    return notes
