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

MODEL_FILE_EXTENSIONS = (".pth", ".pt", ".ckpt", ".safetensors")
"""Extensions scanned in the upscaler and face-restoration folders."""


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
    """A model file's tensors: safetensors read directly, pickles through the safe unpickler."""
    path = Path(path)
    try:
        from sdstudio.models.state_dict import load_state_dict
    except ImportError:
        load_state_dict = None
    if load_state_dict is not None:
        return load_state_dict(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise ModelLoadError(f"{path.name}: not a readable safetensors file ({_first_line(exc)})") from exc
    raise ModelLoadError(f"{path.name}: pickle files need sdstudio.models.state_dict, which is not installed")


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


def list_model_files(folder: Path) -> list[Path]:
    """Model files under a folder, recursively, in a stable order."""
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_FILE_EXTENSIONS),
        key=lambda p: str(p).lower(),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
