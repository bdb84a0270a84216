"""Interrogation: a prompt from an image, as A1111's "Interrogate CLIP" (and its API) gives one.

After A1111's modules/interrogate.py: BLIP writes a caption, then CLIP ranks the lines of
each category file (artists, flavors, mediums, movements) against the image and the best
line(s) of each are appended: "caption, medium, by artist, movement, flavor". A file named
`NAME.topN.txt` contributes its N best lines; A1111's options `interrogate_clip_num_beams`,
`interrogate_clip_min_length`, `interrogate_clip_max_length`, `interrogate_clip_dict_limit`,
`interrogate_clip_skip_categories`, `interrogate_return_ranks` and
`interrogate_keep_models_in_memory` are read from the settings with A1111's defaults.

The weights are found in the data dir's models/BLIP and models/CLIP, offline: A1111's own
files (models/BLIP/model_base_caption_capfilt_large.pth, Salesforce's BLIP checkpoint, and
OpenAI's models/CLIP/ViT-L-14.pt, which A1111 keeps in --clip-models-path, by default
~/.cache/clip) are converted to transformers' `BlipForConditionalGeneration` / `CLIPModel` as
they load (postprocess.blip_checkpoint, postprocess.openai_clip_checkpoint; nothing in either
file runs), and a Hugging Face model folder (config.json and weights) in either folder or a
subfolder is read as it is and wins when both are there. The category lines come from
models/interrogate/*.txt when there are any, else from the short lists sdstudio ships
(A1111 downloads clip-interrogator's). Artists are written "by NAME", as the phrase a prompt
uses. DeepDanbooru tagging is not built in: its model file is named, present or not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.errors import InvalidRequest, ModelLoadError, NotFound, NotImplementedYet
from sdstudio.models.devices import resolve_device, weights_dtype
from sdstudio.models.memory import ModelMemory, module_bytes
from sdstudio.postprocess.blip_checkpoint import A1111_BLIP_FILE, read_blip_checkpoint
from sdstudio.postprocess.model_files import _first_line
from sdstudio.postprocess.openai_clip_checkpoint import A1111_CLIP_FILE, read_openai_clip

INTERROGATE_MODELS = ("clip", "deepdanbooru")
"""The `model` values of /sdapi/v1/interrogate (A1111's)."""

BLIP_FOLDER = "models/BLIP"
CLIP_FOLDER = "models/CLIP"
CATEGORIES_FOLDER = "models/interrogate"
DEEPDANBOORU_FILE = "models/torch_deepdanbooru/model-resnet_custom_v3.pt"

BLIP_PROMPT = "a picture of"
"""The text A1111's BLIP caption model starts from; it is removed from the caption."""

CLIP_CONTEXT_LENGTH = 77
TEXT_BATCH = 256
"""Category lines encoded by CLIP at once (bounds memory for long files)."""

CATEGORY_ORDER = ("mediums", "artists", "movements", "flavors")
"""Where each category's matches go in the prompt; other files follow by name."""

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
MEMORY_KIND = "interrogator"

_TOP_COUNT = re.compile(r"\.top(\d+)$")


@dataclass(frozen=True)
class InterrogateOptions:
    """A1111's interrogate options (shared.opts names without the prefix), with A1111's defaults."""

    num_beams: int = 1
    min_length: int = 24
    max_length: int = 48
    dict_limit: int = 1500  # category lines considered per file; 0 = all
    skip_categories: tuple[str, ...] = ()
    return_ranks: bool = False
    keep_models_in_memory: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> InterrogateOptions:
        """The options as set (config.json or /options), A1111's defaults for the rest."""
        default = cls()

        def option(name: str, fallback: Any) -> Any:
            return getattr(settings, f"interrogate_{name}", fallback)

        skip = option("clip_skip_categories", ())
        return cls(
            num_beams=max(1, int(option("clip_num_beams", default.num_beams))),
            min_length=max(0, int(option("clip_min_length", default.min_length))),
            max_length=max(1, int(option("clip_max_length", default.max_length))),
            dict_limit=max(0, int(option("clip_dict_limit", default.dict_limit))),
            skip_categories=(skip,) if isinstance(skip, str) else tuple(str(name) for name in skip or ()),
            return_ranks=bool(option("return_ranks", default.return_ranks)),
            keep_models_in_memory=bool(option("keep_models_in_memory", default.keep_models_in_memory)),
        )


@dataclass(frozen=True)
class Category:
    """One category file: its name (file stem without `.topN`), how many lines to pick, its lines."""

    name: str
    top_count: int
    items: tuple[str, ...]


def read_categories(folder: Path, skip: tuple[str, ...] = ()) -> list[Category]:
    """The categories of the .txt files in `folder`, in prompt order; `skip` names stems to leave out."""
    categories = []
    for path in sorted(folder.glob("*.txt")):
        stem = path.stem
        match = _TOP_COUNT.search(stem)
        name = stem[: match.start()] if match else stem
        if stem in skip or name in skip:
            continue
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        items = tuple(line for line in lines if line)
        if items:
            categories.append(Category(name, int(match.group(1)) if match else 1, items))
    order = {name: index for index, name in enumerate(CATEGORY_ORDER)}
    return sorted(categories, key=lambda c: (order.get(c.name, len(order)), c.name))


def builtin_categories_folder() -> Path:
    """The category files sdstudio ships (used when models/interrogate has none)."""
    return Path(str(resources.files("sdstudio.assets").joinpath("interrogate")))


def prompt_phrase(category: str, line: str) -> str:
    """How a category line reads in a prompt: artists as "by NAME"."""
    if category == "artists" and not line.lower().startswith("by "):
        return f"by {line}"
    return line


@dataclass
class LoadedBlip:
    """A BLIP captioning model with its processor (image processor and BERT tokenizer)."""

    model: Any
    processor: Any


@dataclass
class LoadedClip:
    """A CLIP model with its image processor and tokenizer."""

    model: Any
    image_processor: Any
    tokenizer: Any


class Interrogator:
    """Captions images with BLIP + CLIP over the data dir's weights, loaded through the memory owner.

    `clip_tokenizer` gives the CLIP BPE tokenizer used when a CLIP folder ships none (every
    OpenAI CLIP shares one vocabulary; the composition root passes sdstudio's own).
    """

    def __init__(
        self,
        paths: DataPaths,
        settings: SettingsStore,
        memory: ModelMemory | None = None,
        clip_tokenizer: Callable[[], Any] | None = None,
    ):
        self.paths = paths
        self.settings_store = settings
        self.memory = memory if memory is not None else ModelMemory()
        self._clip_tokenizer = clip_tokenizer

    def interrogate(self, image: Image.Image, model: str = "clip") -> str:
        """The caption of `image` by `model` ("clip": BLIP caption + CLIP categories; "deepdanbooru")."""
        if model == "clip":
            return self.clip_prompt(image)
        if model == "deepdanbooru":
            return self.deepdanbooru_tags(image)
        raise InvalidRequest(
            "model", f"unknown interrogation model {model!r}; use one of {', '.join(INTERROGATE_MODELS)}"
        )

    def clip_prompt(self, image: Image.Image) -> str:
        """BLIP's caption followed by the best-matching category lines (A1111's "Interrogate CLIP")."""
        import torch

        settings = self.settings_store.current
        options = InterrogateOptions.from_settings(settings)
        device = resolve_device(settings.device)
        dtype = weights_dtype(settings.precision, device)
        # Both are found before anything loads: a missing CLIP is told without loading BLIP first.
        blip_weights = self._find_weights(BLIP_FOLDER, "blip", A1111_BLIP_FILE)
        clip_weights = self._find_weights(CLIP_FOLDER, "clip", A1111_CLIP_FILE)
        image = image.convert("RGB")
        try:
            blip = self._load(blip_weights, device, dtype, self._read_blip)
            parts = [self._caption(blip, image, options, device, dtype)]
            clip = self._load(clip_weights, device, dtype, self._read_clip)
            with torch.no_grad():
                image_features = _normalised(
                    _features(clip.model.get_image_features(**self._clip_pixels(clip, image, device, dtype)))
                )
                for category in read_categories(self.categories_folder(), options.skip_categories):
                    for line, probability in self._rank(clip, image_features, category, options, device):
                        phrase = prompt_phrase(category.name, line)
                        parts.append(f"({phrase}:{probability:.3f})" if options.return_ranks else phrase)
        finally:
            if not options.keep_models_in_memory and not device.startswith("cpu"):
                self.memory.release_kind(MEMORY_KIND)  # A1111 frees the accelerator for generation
        return ", ".join(part for part in parts if part)

    def deepdanbooru_tags(self, image: Image.Image) -> str:
        """DeepDanbooru tags: not built in; the error names the model file either way."""
        path = self.paths.root / DEEPDANBOORU_FILE
        if not path.is_file():
            raise NotFound(
                f"model: DeepDanbooru needs A1111's model-resnet_custom_v3.pt at {path}, which is missing "
                '(sdstudio does not run DeepDanbooru yet either; use model "clip")'
            )
        raise NotImplementedYet(
            f'model: DeepDanbooru tagging is not built into sdstudio yet ({path}); use model "clip"'
        )

    def categories_folder(self) -> Path:
        """models/interrogate when it holds category files, else the lists sdstudio ships."""
        folder = self.paths.root / CATEGORIES_FOLDER
        return folder if folder.is_dir() and any(folder.glob("*.txt")) else builtin_categories_folder()

    # -- finding and loading ----------------------------------------------------------

    def _find_weights(self, relative: str, model_type: str, a1111_file: str) -> Path:
        """A Hugging Face folder of `model_type` in data dir `relative` (itself or a subfolder), else A1111's file.

        A1111's file is `a1111_file` or, failing that, the first other file with its suffix
        (A1111 takes any .pth in models/BLIP; OpenAI names each CLIP "<name>.pt").
        """
        root = self.paths.root / relative
        candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
        for folder in candidates:
            if (folder / "config.json").is_file() and any((folder / name).is_file() for name in WEIGHT_FILES):
                if _config_model_type(folder) == model_type:
                    return folder
        suffix = Path(a1111_file).suffix
        files = [p for p in root.glob(f"*{suffix}") if p.is_file()] if root.is_dir() else []
        if files:
            return min(files, key=lambda p: (p.name != a1111_file, p.name))
        raise self._missing_model_error(root, relative, model_type)

    @staticmethod
    def _missing_model_error(root: Path, relative: str, model_type: str) -> Exception:
        if model_type == "blip":
            return NotFound(
                f"{relative}: no BLIP model in {root}; looked there for A1111's {A1111_BLIP_FILE} (or another BLIP "
                ".pth) and for a Hugging Face BLIP captioning folder (config.json, model.safetensors, "
                "preprocessor_config.json and the tokenizer files, as Salesforce/blip-image-captioning-base has them)"
            )
        return NotFound(
            f"{relative}: no CLIP model in {root}; looked there for OpenAI's {A1111_CLIP_FILE} (or another OpenAI "
            "ViT .pt; A1111 keeps them in --clip-models-path, by default ~/.cache/clip) and for a Hugging Face CLIP "
            "folder (config.json, model.safetensors and preprocessor_config.json, as openai/clip-vit-large-patch14 "
            "has them)"
        )

    def _load(self, weights: Path, device: str, dtype: Any, read: Callable[[Path], Any]) -> Any:
        """The model in `weights` (folder or file) on `device` in `dtype`, held by the memory owner; changes reload."""
        stats = [p.stat() for p in weights.iterdir() if p.is_file()] if weights.is_dir() else [weights.stat()]
        changed = max(s.st_mtime_ns for s in stats)  # a replaced file loads afresh
        key = f"{MEMORY_KIND}:{weights}:{sum(s.st_size for s in stats)}:{changed}:{device}:{dtype}"

        def load() -> Any:
            try:
                loaded = read(weights)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise ModelLoadError(f"{weights}: cannot be loaded ({_first_line(exc)})") from None
            loaded.model.to(device=device, dtype=dtype).eval()
            return loaded

        return self.memory.get_or_load(key, MEMORY_KIND, load, size_of=lambda value: module_bytes(value.model))

    @staticmethod
    def _read_blip(weights: Path) -> LoadedBlip:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        if weights.is_file():
            return LoadedBlip(*read_blip_checkpoint(weights))
        model = BlipForConditionalGeneration.from_pretrained(weights, local_files_only=True)
        return LoadedBlip(model, BlipProcessor.from_pretrained(weights, local_files_only=True))

    def _read_clip(self, weights: Path) -> LoadedClip:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        if weights.is_file():
            if self._clip_tokenizer is None:
                raise ModelLoadError(f"{weights.name}: OpenAI's CLIP files carry no tokenizer and none was given")
            return LoadedClip(*read_openai_clip(weights), self._clip_tokenizer())
        folder = weights
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        image_processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
        if any((folder / name).is_file() for name in TOKENIZER_FILES) or self._clip_tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        else:
            tokenizer = self._clip_tokenizer()
        return LoadedClip(model, image_processor, tokenizer)

    # -- running ----------------------------------------------------------------------

    @staticmethod
    def _caption(blip: LoadedBlip, image: Image.Image, options: InterrogateOptions, device: str, dtype: Any) -> str:
        """BLIP's caption of `image`, without the prompt it starts from."""
        import torch

        inputs = blip.processor(images=image, text=BLIP_PROMPT, return_tensors="pt")
        inputs = {name: value.to(device) for name, value in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.no_grad():
            ids = blip.model.generate(
                **inputs,
                num_beams=options.num_beams,
                min_length=options.min_length,
                max_length=max(options.max_length, options.min_length),
            )
        caption = str(blip.processor.decode(ids[0], skip_special_tokens=True)).strip()
        if caption.lower().startswith(BLIP_PROMPT):
            caption = caption[len(BLIP_PROMPT) :].strip()
        return caption

    @staticmethod
    def _clip_pixels(clip: LoadedClip, image: Image.Image, device: str, dtype: Any) -> dict[str, Any]:
        pixels = clip.image_processor(images=image, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels.to(device=device, dtype=dtype)}

    @staticmethod
    def _rank(
        clip: LoadedClip, image_features: Any, category: Category, options: InterrogateOptions, device: str
    ) -> list[tuple[str, float]]:
        """The category's best lines for the image with their probabilities (A1111's softmax of 100 x cosine)."""
        import torch

        items = category.items[: options.dict_limit] if options.dict_limit else category.items
        phrases = [prompt_phrase(category.name, line) for line in items]
        chunks = []
        for start in range(0, len(phrases), TEXT_BATCH):
            tokens = clip.tokenizer(
                phrases[start : start + TEXT_BATCH],
                padding=True,
                truncation=True,
                max_length=CLIP_CONTEXT_LENGTH,
                return_tensors="pt",
            )
            tokens = {name: value.to(device) for name, value in tokens.items()}
            chunks.append(_normalised(_features(clip.model.get_text_features(**tokens))))
        text_features = torch.cat(chunks)
        probabilities = (100.0 * image_features.float() @ text_features.float().T).softmax(dim=-1).mean(dim=0)
        top = probabilities.topk(min(category.top_count, len(items)))
        return [(items[int(index)], float(value)) for value, index in zip(top.values, top.indices)]


def _features(output: Any) -> Any:
    """The projected embedding of a CLIP `get_*_features` call (transformers 5 returns it as pooler_output)."""
    return getattr(output, "pooler_output", output)


def _normalised(features: Any) -> Any:
    return features / features.norm(dim=-1, keepdim=True)


def _config_model_type(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(config.get("model_type", "")) if isinstance(config, dict) else ""
