"""Textual-inversion embeddings from the `embeddings/` folder, in the formats A1111 reads.

- A1111 `.pt`: a dict whose `string_to_param` holds one tensor under "*" (plus `step`,
  `sd_checkpoint`, `sd_checkpoint_name`).
- diffusers `.bin`: `{token: tensor}` with a single entry.
- `.safetensors`: a single tensor (usually `emb_params`), or SDXL's `clip_l` + `clip_g` pair.
- `.png` with the A1111 `.pt` contents in its `sd-ti-embedding` text chunk (base64 of JSON,
  tensors as `{"TORCHTENSOR": [[...]]}`), as A1111's training writes its preview images; the
  name comes from the data. PNGs without that chunk (previews of other files) are passed over.

An embedding is used when its file name (without extension) appears in a prompt. Its width
decides the model family it belongs to — 768 SD1, 1024 SD2, 768+1280 SDXL — and files made
for another family are listed as skipped, with a warning, as A1111 does. Pickled files are
read only through a restricted unpickler: nothing in an embedding file executes. A file
that cannot be read or is refused as unsafe is listed with the reason (the API puts it with
the skipped ones), and a generation whose prompt names it is warned.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdstudio.config import MODEL_KINDS, ModelKind
from sdstudio.errors import SdStudioError
from sdstudio.models.hashes import sha256_of_file
from sdstudio.models.safe_pickle import safe_load

logger = logging.getLogger(__name__)

# Vector width -> model family (SDXL files carry clip_l 768 + clip_g 1280 = 2048).
ARCHITECTURE_BY_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
SINGLE = ""  # key of the one tensor of a single-encoder embedding
SDXL_KEYS = ("clip_l", "clip_g")
# One 77-token CLIP window holds 75 prompt tokens; a longer embedding cannot be placed.
MAX_VECTORS = 75
PNG_CHUNK = "sd-ti-embedding"  # A1111's text chunk of an image that carries an embedding
TENSOR_KEY = "TORCHTENSOR"  # how A1111's JSON encoding marks a tensor

PickleLoader = Callable[[Path], Any]
IMAGE_KIND = ModelKind("embedding image", ("embeddings",), (".png",))  # images that may carry an embedding


@dataclass(frozen=True)
class Embedding:
    """One textual-inversion embedding, as float32 CPU tensors [vectors, width] per encoder key."""

    name: str
    path: Path
    tensors: dict[str, torch.Tensor] = field(repr=False, compare=False)
    vector_count: int
    width: int
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    sha256: str = ""  # of the file; "" when not read from one

    @property
    def shorthash(self) -> str:
        """A1111's short hash of an embedding: the first 12 hex digits of the file's sha256 ("TI hashes")."""
        return self.sha256[:12]

    @property
    def architecture(self) -> str:
        """ "sd1", "sd2", "sdxl", or "WIDTH-wide" for other text encoders (e.g. the tiny model)."""
        return ARCHITECTURE_BY_WIDTH.get(self.width, f"{self.width}-wide")

    @property
    def shape(self) -> int:
        """A1111's "shape": the vector width (summed over both encoders for SDXL)."""
        return self.width

    def vectors_for(self, key: str | None) -> torch.Tensor:
        """The vectors for one text encoder: key "clip_l"/"clip_g" for SDXL, None for one encoder."""
        if key and key in self.tensors:
            return self.tensors[key]
        if SINGLE in self.tensors:
            return self.tensors[SINGLE]
        raise KeyError(f"embedding {self.name} has no vectors for text encoder {key!r}")


class EmbeddingFileError(SdStudioError):
    """An embedding file could not be read as any known format."""


def default_pickle_loader(path: Path) -> Any:
    """Read a pickled `.pt`/`.bin` with sdstudio's restricted unpickler (nothing in the file runs)."""
    return safe_load(path)


def _as_matrix(value: Any, path: Path) -> torch.Tensor:
    """A [vectors, width] float32 CPU tensor from a stored tensor or parameter."""
    if not isinstance(value, torch.Tensor):
        raise EmbeddingFileError(f"{path.name}: expected a tensor, found {type(value).__name__}")
    tensor = value.detach().to("cpu", torch.float32)
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2 or tensor.shape[0] == 0:
        raise EmbeddingFileError(f"{path.name}: expected vectors of shape [count, width], found {list(tensor.shape)}")
    return tensor


def embedding_from_data(name: str, path: Path, data: Any) -> Embedding:
    """Recognise the three formats (A1111 create_embedding_from_data) and build an Embedding."""
    if not isinstance(data, dict) or not data:
        raise EmbeddingFileError(f"{path.name}: not an embedding (expected a dict of tensors)")
    extra: dict[str, Any] = {}
    if "string_to_param" in data:  # A1111 textual inversion .pt
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)  # old torch saved a ParameterDict
        if not isinstance(params, dict) or len(params) != 1:
            raise EmbeddingFileError(f"{path.name}: string_to_param must hold exactly one tensor")
        tensors = {SINGLE: _as_matrix(next(iter(params.values())), path)}
        step = data.get("step")
        extra = {
            "step": int(step) if isinstance(step, (int, float)) else None,
            "sd_checkpoint": data.get("sd_checkpoint") if isinstance(data.get("sd_checkpoint"), str) else None,
            "sd_checkpoint_name": data.get("sd_checkpoint_name")
            if isinstance(data.get("sd_checkpoint_name"), str)
            else None,
        }
    elif all(key in data for key in SDXL_KEYS):  # SDXL: one tensor per text encoder
        tensors = {key: _as_matrix(data[key], path) for key in SDXL_KEYS}
        if tensors["clip_l"].shape[0] != tensors["clip_g"].shape[0]:
            raise EmbeddingFileError(f"{path.name}: clip_l and clip_g have different vector counts")
    elif len(data) == 1:  # diffusers concept {token: tensor} or safetensors {"emb_params": tensor}
        tensors = {SINGLE: _as_matrix(next(iter(data.values())), path)}
    else:
        raise EmbeddingFileError(
            f"{path.name}: not a textual-inversion embedding (keys {sorted(map(str, data))[:5]}); "
            "expected string_to_param, clip_l/clip_g or a single tensor"
        )
    count = next(iter(tensors.values())).shape[0]
    width = sum(t.shape[1] for t in tensors.values())
    return Embedding(name=name, path=path, tensors=tensors, vector_count=count, width=width, **extra)


class NoEmbeddingInImage(EmbeddingFileError):
    """A PNG in the embeddings folder without an `sd-ti-embedding` chunk (a preview, not an embedding)."""


def embedding_to_b64(data: dict[str, Any]) -> str:
    """A1111's `sd-ti-embedding` chunk text: base64 of the data as JSON, tensors as {"TORCHTENSOR": lists}."""

    def encode(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return {TENSOR_KEY: value.detach().cpu().float().tolist()}
        raise TypeError(f"cannot write {type(value).__name__} into an embedding image")

    return base64.b64encode(json.dumps(data, default=encode).encode("utf-8")).decode("ascii")


def embedding_from_b64(text: str) -> dict[str, Any]:
    """The data of an `sd-ti-embedding` chunk (tensors back as float32 tensors)."""

    def decode(value: dict[str, Any]) -> Any:
        if set(value) == {TENSOR_KEY}:
            return torch.tensor(value[TENSOR_KEY], dtype=torch.float32)
        return value

    data = json.loads(base64.b64decode(text, validate=True), object_hook=decode)
    if not isinstance(data, dict):
        raise EmbeddingFileError("the sd-ti-embedding chunk does not hold a dict")
    return data


def _embedding_image_data(path: Path) -> dict[str, Any]:
    from PIL import Image

    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(PNG_CHUNK)
    if text is None:
        raise NoEmbeddingInImage(f"{path.name}: no {PNG_CHUNK} chunk")
    try:
        return embedding_from_b64(text)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise EmbeddingFileError(f"{path.name}: the {PNG_CHUNK} chunk cannot be read ({exc})") from exc


def load_embedding_file(path: Path, pickle_loader: PickleLoader = default_pickle_loader) -> Embedding:
    """Read one embedding file; raises SdStudioError subclasses for unreadable or unsafe files."""
    suffix = path.suffix.lower()
    name = path.stem
    try:
        if suffix == ".png":
            data = _embedding_image_data(path)
            name = str(data.get("name") or name)
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = pickle_loader(path)
    except SdStudioError:
        raise
    except Exception as exc:  # a corrupt or refused file must not stop the others from loading
        raise EmbeddingFileError(f"{path.name}: cannot be read as an embedding ({type(exc).__name__}: {exc})") from exc
    return dataclasses.replace(embedding_from_data(name, path, data), sha256=sha256_of_file(path))


class EmbeddingDatabase:
    """The embeddings of one folder (recursive), filtered to the loaded model's vector width.

    `expected_width` is the text encoder's token-embedding width (SDXL: both encoders summed);
    None accepts every width. Files are re-read only when their size or mtime changes.
    """

    def __init__(
        self, folder: str | Path, expected_width: int | None = None, pickle_loader: PickleLoader = default_pickle_loader
    ):
        self.folder = Path(folder)
        self.expected_width = expected_width
        self.pickle_loader = pickle_loader
        self.embeddings: dict[str, Embedding] = {}
        self.skipped: dict[str, Embedding] = {}
        self.errors: dict[Path, str] = {}
        self.generation = 0  # bumped on every reload, so users of the lookup can refresh
        self._file_cache: dict[Path, tuple[tuple[int, int], Embedding | str | None]] = {}
        self.reload()

    def _read(self, path: Path) -> Embedding | str | None:
        try:
            stat = path.stat()
        except OSError as exc:
            return f"{path.name}: {exc}"
        stamp = (stat.st_size, stat.st_mtime_ns)
        cached = self._file_cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            result: Embedding | str | None = load_embedding_file(path, self.pickle_loader)
        except NoEmbeddingInImage:
            result = None
        except SdStudioError as exc:
            result = str(exc)
        self._file_cache[path] = (stamp, result)
        return result

    def set_expected_width(self, expected_width: int | None) -> None:
        """Switch to another model's vector width (after a checkpoint change) and rescan."""
        self.expected_width = expected_width
        self.reload()

    def reload(self) -> None:
        """Rescan the folder; warns about skipped and unreadable files."""
        embeddings: dict[str, Embedding] = {}
        skipped: dict[str, Embedding] = {}
        errors: dict[Path, str] = {}
        files = MODEL_KINDS["embedding"].files_in(self.folder) + IMAGE_KIND.files_in(self.folder)
        for path in files:
            result = self._read(path)
            if result is None:
                continue
            if isinstance(result, str):
                errors[path] = result
                logger.warning("embedding skipped: %s", result)
                continue
            if result.vector_count > MAX_VECTORS:
                errors[path] = (
                    f"{path.name}: {result.vector_count} vectors, more than the {MAX_VECTORS} a prompt chunk holds"
                )
                logger.warning("embedding skipped: %s", errors[path])
                continue
            if self.expected_width is not None and result.width != self.expected_width:
                skipped[result.name] = result
                logger.warning(
                    "embedding %s is for %s (width %d) but the model needs width %d; skipped",
                    result.name,
                    result.architecture,
                    result.width,
                    self.expected_width,
                )
                continue
            if result.name in embeddings:
                logger.warning(
                    "embedding name %s is used by %s and %s; the latter is used",
                    result.name,
                    embeddings[result.name].path,
                    path,
                )
            embeddings[result.name] = result
        live = set(files)
        self._file_cache = {p: v for p, v in self._file_cache.items() if p in live}
        self.embeddings, self.skipped, self.errors = embeddings, skipped, errors
        self.generation += 1

    def get(self, name: str) -> Embedding | None:
        """The usable embedding called `name`, if any."""
        return self.embeddings.get(name)

    def skip_reason(self, embedding: Embedding) -> str:
        """Why a readable embedding is skipped: it was made for another model family."""
        return (
            f"{embedding.path.name}: made for {embedding.architecture} (width {embedding.width}); "
            f"the loaded model needs width {self.expected_width}"
        )

    def unusable(self) -> dict[str, str]:
        """Name -> why, for the files that could not be read or were refused (a usable namesake wins)."""
        reasons: dict[str, list[str]] = {}
        for path, message in self.errors.items():
            if path.stem not in self.embeddings:
                reasons.setdefault(path.stem, []).append(message)
        return {name: "; ".join(messages) for name, messages in reasons.items()}

    def warnings_for(self, texts: Iterable[str]) -> list[str]:
        """A warning for each unusable embedding the texts name (the prompt then reads its name as words)."""
        unusable = self.unusable()
        if not unusable:
            return []
        joined = "\n".join(texts)
        return [
            f"embedding {name!r} is not used: {reason}"
            for name, reason in unusable.items()
            if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", joined, re.IGNORECASE)
        ]

    def listing(self) -> list[dict[str, Any]]:
        """Name, vector count, shape and family of every usable and skipped embedding, and why, for display.

        Files that could not be read or were refused are listed too (status "unusable"), with the reason.
        """
        rows = []
        for status, table in (("loaded", self.embeddings), ("skipped", self.skipped)):
            for emb in table.values():
                rows.append(
                    {
                        "name": emb.name,
                        "status": status,
                        "vectors": emb.vector_count,
                        "shape": emb.shape,
                        "architecture": emb.architecture,
                        "path": str(emb.path),
                        "step": emb.step,
                        "reason": self.skip_reason(emb) if status == "skipped" else None,
                    }
                )
        for path, message in self.errors.items():
            rows.append(
                {
                    "name": path.stem,
                    "status": "unusable",
                    "vectors": None,
                    "shape": None,
                    "architecture": None,
                    "path": str(path),
                    "step": None,
                    "reason": message,
                }
            )
        return rows

    def api_listing(self) -> dict[str, dict[str, dict[str, Any]]]:
        """A1111's `/sdapi/v1/embeddings` body: {"loaded": {...}, "skipped": {...}}, skipped ones with a `reason`."""

        def item(emb: Embedding) -> dict[str, Any]:
            return {
                "step": emb.step,
                "sd_checkpoint": emb.sd_checkpoint,
                "sd_checkpoint_name": emb.sd_checkpoint_name,
                "shape": emb.shape,
                "vectors": emb.vector_count,
            }

        # Unreadable and refused files go with the skipped ones (A1111 clients read `skipped` as
        # "there but not usable"); A1111's numbers stay ints (0: unknown) and `reason` says why.
        unreadable = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 0, "vectors": 0}
        skipped = {n: {**item(e), "reason": self.skip_reason(e)} for n, e in self.skipped.items()}
        skipped.update((n, {**unreadable, "reason": why}) for n, why in self.unusable().items() if n not in skipped)
        return {"loaded": {n: item(e) for n, e in self.embeddings.items()}, "skipped": skipped}
