"""Reading upscaler and face-restoration model files into spandrel descriptors, safely.

Files are read into a state dict by sdstudio's own loaders (safetensors directly, pickles
through the restricted unpickler of `sdstudio.models`), and only the state dict is handed
to spandrel (`ArchRegistry.load`), so neither spandrel nor torch ever unpickles a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.errors import ModelLoadError, SdStudioError


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


def resolve_device(device: str) -> str:
    """A torch device name; "auto" means the first CUDA GPU when there is one, else the CPU."""
    if device not in ("auto", "", None):
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
        raise ModelLoadError(f"{path.name}: a {descriptor.architecture.name} {descriptor.purpose} model, not an image-to-image model")
    descriptor.eval()
    return LoadedModel(
        descriptor=descriptor,
        architecture=descriptor.architecture.name,
        purpose=descriptor.purpose,
        scale=int(descriptor.scale),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
