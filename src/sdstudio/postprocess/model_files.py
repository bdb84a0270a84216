"""Reading upscaler and face-restoration model files into spandrel descriptors, safely.

Files are read into a state dict by sdstudio's own loaders (safetensors directly, pickles
through the restricted unpickler of `sdstudio.models`), and only the state dict is handed
to spandrel (`ArchRegistry.load`), so neither spandrel nor torch ever unpickles a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.errors import ModelLoadError, SdStudioError
from sdstudio.models.devices import resolve_device
from sdstudio.models.memory import ModelMemory, module_bytes


def build_spandrel_registry():
    """spandrel's main architectures plus spandrel_extra_arches (CodeFormer, SRFormer, ...).

    spandrel documents `MAIN_REGISTRY.add(*EXTRA_REGISTRY)`; we add them to a copy so the
    library's global registry is never modified (no process-wide side effects).
    """
    from spandrel import MAIN_REGISTRY
    from spandrel_extra_arches import EXTRA_REGISTRY

    registry = MAIN_REGISTRY.copy()
    registry.add(*EXTRA_REGISTRY, ignore_duplicates=True)
    return registry


def read_state_dict(path: Path) -> dict[str, Any]:
    """A model file's contents: safetensors read directly, pickles through the safe unpickler.

    Pickles keep their nesting (`params_ema`, `params`, `state_dict`...): spandrel's
    canonicalisation unwraps the layouts the upscaler and face-restoration projects publish.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from sdstudio.models.state_dict import load_state_dict

        return load_state_dict(path)
    from sdstudio.models.safe_pickle import safe_load

    loaded = safe_load(path)
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"{path.name}: holds a {type(loaded).__name__}, not a dict of weights")
    return loaded


@dataclass(frozen=True)
class LoadedModel:
    """A spandrel model descriptor and what it is."""

    descriptor: Any
    architecture: str
    purpose: str
    scale: int


def load_spandrel_model(path: Path, registry) -> LoadedModel:
    """Load a model file through spandrel; every failure becomes a one-line ModelLoadError."""
    from spandrel import ImageModelDescriptor, UnsupportedModelError

    path = Path(path)
    try:
        state_dict = read_state_dict(path)
    except SdStudioError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{path.name}: could not be read ({_first_line(exc)})") from exc
    try:
        descriptor = registry.load(state_dict)
    except UnsupportedModelError as exc:
        raise ModelLoadError(f"{path.name}: architecture not recognised by spandrel") from exc
    except Exception as exc:
        raise ModelLoadError(f"{path.name}: weights do not fit a known architecture ({_first_line(exc)})") from exc
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelLoadError(
            f"{path.name}: a {descriptor.architecture.name} {descriptor.purpose} model, not an image-to-image model"
        )
    descriptor.eval()
    return LoadedModel(
        descriptor=descriptor,
        architecture=descriptor.architecture.name,
        purpose=descriptor.purpose,
        scale=int(descriptor.scale),
    )


class SpandrelModels:
    """Spandrel models of one kind (upscaler, face restorer), loaded through the memory owner.

    The registries keep no model of their own: `ModelMemory` holds them under a key that
    includes the file's size and mtime, so a replaced file is loaded afresh, and what the
    owner drops under its budget is freed.
    """

    def __init__(
        self, kind: str, device: str = "auto", memory: ModelMemory | None = None, spandrel_registry: Any = None
    ):
        self.kind = kind
        self._device_choice = device
        self._device: str | None = None
        self.memory = memory if memory is not None else ModelMemory()
        self._spandrel_registry = spandrel_registry

    @property
    def device(self) -> str:
        """The torch device models run on ("auto" resolved on first use)."""
        if self._device is None:
            self._device = resolve_device(self._device_choice)
        return self._device

    @property
    def spandrel_registry(self) -> Any:
        """The spandrel architecture registry (built on first use, so import stays cheap)."""
        if self._spandrel_registry is None:
            self._spandrel_registry = build_spandrel_registry()
        return self._spandrel_registry

    def load(self, path: Path, check: Callable[[LoadedModel], None] | None = None) -> LoadedModel:
        """The model in `path` on the device; `check` may refuse it (raise) before it is kept."""
        stat = path.stat()

        def load() -> LoadedModel:
            loaded = load_spandrel_model(path, self.spandrel_registry)
            if check is not None:
                check(loaded)
            loaded.descriptor.to(self.device)
            return loaded

        key = f"{self.kind}:{path}:{stat.st_size}:{stat.st_mtime_ns}"
        return self.memory.get_or_load(key, self.kind, load, size_of=lambda m: module_bytes(m.descriptor.model))

    def unload(self) -> None:
        """Drop every model of this kind."""
        self.memory.release_kind(self.kind)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
