"""Discovery of model files in the data dir (A1111 layout) and lookup by name, title or hash.

Folders are scanned recursively on each listing (cheap: a directory walk); hashes come
from the HashCache, so only new or changed files are hashed. The bundled tiny model is
always listed as a checkpoint. Checkpoint files left directly in `models/` are moved
into `models/Stable-diffusion/` ("cleanup"), never over an existing file.
"""

from __future__ import annotations

import builtins
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdstudio.config import MODEL_KINDS, DataPaths, find_preview
from sdstudio.errors import ModelLoadError, NotFound
from sdstudio.models.detect import bundled_tiny_model, checkpoint_native_size
from sdstudio.models.hashes import FileHashes, HashCache
from sdstudio.models.state_dict import read_model_file_metadata

# A VAE kept beside its checkpoint (A1111: NAME.vae.safetensors) is a VAE, not a checkpoint.
VAE_BESIDE_SUFFIXES = (".vae.safetensors", ".vae.ckpt", ".vae.pt")
SD_VAE_AUTOMATIC = "Automatic"
SD_VAE_NONE = "None"


def _is_vae_beside(path: Path) -> bool:
    return path.name.lower().endswith(VAE_BESIDE_SUFFIXES)


@dataclass
class ModelEntry:
    """One model file as the API, CLI and UI list it."""

    type: str
    name: str  # relative path inside its folder, with extension (A1111's checkpoint "name")
    path: Path
    hashes: FileHashes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    config: Path | None = None  # NAME.yaml beside a checkpoint
    preview: Path | None = None
    bundled: bool = False
    problem: str | None = None  # why the file cannot be used (empty, cut short, unreadable); None: it looks whole

    @property
    def usable(self) -> bool:
        return self.problem is None

    def require_usable(self) -> ModelEntry:
        """This entry, or ModelLoadError naming the file and why it cannot be used."""
        if self.problem is not None:
            raise ModelLoadError(f"{self.name} cannot be used: {self.problem}")
        return self

    @property
    def model_name(self) -> str:
        """Name without extension, '/' folded to '_' (A1111's model_name)."""
        return str(Path(self.name).with_suffix("")).replace("/", "_").replace("\\", "_")

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def sha256(self) -> str | None:
        return self.hashes.sha256 if self.hashes else None

    @property
    def shorthash(self) -> str | None:
        return self.hashes.shorthash if self.hashes else None

    short_hash = shorthash

    @property
    def title(self) -> str:
        """`name.safetensors [abcdef1234]` as A1111 titles checkpoints."""
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    def to_json(self) -> dict[str, Any]:
        """The `models list --json` object."""
        data = {
            "type": self.type,
            "name": self.name,
            "model_name": self.model_name,
            "title": self.title,
            "path": str(self.path),
            "sha256": self.sha256,
            "shorthash": self.shorthash,
            "legacy_hash": self.hashes.legacy if self.hashes else None,
            "metadata": self.metadata,
            "config": str(self.config) if self.config else None,
            "preview": str(self.preview) if self.preview else None,
            "bundled": self.bundled,
            "usable": self.usable,
            "reason": self.problem,
        }
        if self.type == "lora":
            data["addnet_hash"] = self.hashes.addnet if self.hashes else None
        return data


class ModelRegistry:
    """Lists and finds model files under one data dir."""

    def __init__(self, paths: DataPaths, hash_cache: HashCache | None = None, save_hashes: bool = True):
        self.paths = paths
        # save_hashes=False: new hashes wait in memory for hash_cache.save() (nothing written before that)
        self.hash_cache = hash_cache or HashCache(paths.cache_dir / "hashes.json", autosave=save_hashes)
        # Each file's check (a pickle scan reads the whole file) by (size, mtime): a listing re-checks only changes.
        self._checked: dict[Path, tuple[tuple[int, int], dict[str, str] | ModelLoadError]] = {}

    def cleanup_stray_checkpoints(self) -> list[str]:
        """Move checkpoint files lying directly in models/ into models/Stable-diffusion/; returns notes."""
        notes: list[str] = []
        models = self.paths.models
        if not models.is_dir():
            return notes
        target_dir = self.paths.folder("checkpoint")
        for stray in sorted(models.iterdir()):
            if not stray.is_file() or not stray.name.lower().endswith(MODEL_KINDS["checkpoint"].suffixes):
                continue
            target = target_dir / stray.name
            if target.exists():
                notes.append(f"left {stray} where it is: {target} already exists")
                continue
            target_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(str(stray), str(target))
            yaml = stray.with_suffix(".yaml")
            if yaml.is_file() and not target.with_suffix(".yaml").exists():
                shutil.move(str(yaml), str(target.with_suffix(".yaml")))
            notes.append(f"moved {stray.name} into {target_dir}")
        return notes

    def _entry(self, kind: str, root: Path, path: Path, with_hashes: bool) -> ModelEntry:
        """One file as listed; a file that is empty, cut short or unreadable is listed with its `problem`."""
        name = path.relative_to(root).as_posix() if root in path.parents else path.name
        entry = ModelEntry(type=kind, name=name, path=path.resolve())
        checked = self._check_file(path)
        if isinstance(checked, ModelLoadError):  # listing never fails on one bad file
            entry.problem = str(checked).removeprefix(f"{path.name}: ")
        else:
            entry.metadata = dict(checked)
        try:
            # a broken file is not hashed: a cut-short download would be re-hashed at every listing as it grows
            entry.hashes = (
                self.hash_cache.hashes(path) if with_hashes and entry.usable else self.hash_cache.cached(path)
            )
        except OSError as exc:
            entry.problem = entry.problem or f"cannot be read ({exc.strerror or exc})"
        yaml = path.with_suffix(".yaml")
        entry.config = yaml if yaml.is_file() else None
        entry.preview = find_preview(path)
        return entry

    def _check_file(self, path: Path) -> dict[str, str] | ModelLoadError:
        """`read_model_file_metadata(path)`, or the error it raised, remembered while the file is unchanged."""
        try:
            stat = path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        known = self._checked.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            checked: dict[str, str] | ModelLoadError = read_model_file_metadata(path)
        except ModelLoadError as exc:
            checked = exc
        self._checked[path] = (stamp, checked)
        return checked

    def list(self, kind: str, with_hashes: bool = True, include_unusable: bool = True) -> list[ModelEntry]:
        """Every file of a kind, sorted by name; checkpoints include the bundled tiny model.

        Files that cannot be used are listed with their `problem` unless `include_unusable` is False.
        """
        if kind not in MODEL_KINDS:
            raise NotFound(f"unknown model type {kind!r}; known: {', '.join(MODEL_KINDS)}")
        if kind == "checkpoint":
            self.cleanup_stray_checkpoints()
        entries = [
            self._entry(kind, root, path, with_hashes)
            for root in self.paths.folders(kind)
            for path in MODEL_KINDS[kind].files_in(root)
            if not (kind == "checkpoint" and _is_vae_beside(path))
        ]
        if kind == "vae":
            root = self.paths.folder("checkpoint")
            entries += [
                self._entry(kind, root, p, with_hashes) for p in MODEL_KINDS["vae"].files_in(root) if _is_vae_beside(p)
            ]
        if kind == "checkpoint":
            bundled = bundled_tiny_model()
            if bundled is not None and not any(e.path == bundled.resolve() for e in entries):
                entry = self._entry(kind, bundled.parent, bundled, with_hashes)
                entry.bundled = True
                entries.append(entry)
        if not include_unusable:
            entries = [e for e in entries if e.usable]
        return sorted(entries, key=lambda e: (e.bundled, e.name.lower()))

    def list_all(self, with_hashes: bool = True) -> builtins.list[ModelEntry]:  # `list` here is the method above
        """Every model of every kind."""
        return [entry for kind in MODEL_KINDS for entry in self.list(kind, with_hashes)]

    def find(self, kind: str, query: str, with_hashes: bool = True) -> ModelEntry:
        """A model by name (with or without extension), title, short hash, sha256, legacy hash or path.

        `with_hashes=False` hashes only when the query is not a name or path (the entry found
        by name then has just its cached hashes, if any).
        """
        query = query.strip()
        as_path = Path(query).expanduser()
        if as_path.suffix and as_path.is_file():
            resolved = as_path.resolve()
            for entry in self.list(kind, with_hashes=False):
                if entry.path == resolved:
                    return self._with_hashes(entry) if with_hashes else entry
            return self._entry(kind, resolved.parent, resolved, with_hashes)
        entries = self.list(kind, with_hashes=False)
        by_name = [
            e for e in entries if query in (e.name, e.stem, e.model_name, Path(e.name).with_suffix("").as_posix())
        ]
        if by_name:
            return self._with_hashes(by_name[0]) if with_hashes else by_name[0]
        hashed = [self._with_hashes(e) for e in entries]
        for entry in hashed:
            if query in (entry.title, entry.sha256, entry.shorthash) or (entry.hashes and query == entry.hashes.legacy):
                return entry
        if query.endswith("]") and "[" in query:  # a title whose hash changed: match the name part
            return self.find(kind, query[: query.rindex("[")].strip(), with_hashes)
        names = ", ".join(e.name for e in entries) or "none"
        raise NotFound(f"no {kind.replace('_', ' ')} named {query!r} (available: {names})")

    def find_usable(self, kind: str, query: str, with_hashes: bool = True) -> ModelEntry:
        """`find`, refusing a file that cannot be used (ModelLoadError naming it and the reason)."""
        return self.find(kind, query, with_hashes).require_usable()

    def _with_hashes(self, entry: ModelEntry) -> ModelEntry:
        if entry.hashes is None and entry.usable:
            entry.hashes = self.hash_cache.hashes(entry.path)
        return entry

    def find_checkpoint(self, query: str, with_hashes: bool = True) -> ModelEntry:
        """A checkpoint by name, title, hash or path."""
        return self.find("checkpoint", query, with_hashes)

    def vae_for(self, sd_vae: str, checkpoint: Path) -> ModelEntry | None:
        """The external VAE the `sd_vae` setting picks for `checkpoint` (None: the checkpoint's own VAE).

        As A1111: "None" keeps the baked-in VAE; "Automatic" takes a VAE whose file name starts
        with the checkpoint's name (from models/VAE, or NAME.vae.safetensors beside the checkpoint),
        else the baked-in one; any other value names a file in models/VAE.
        """
        choice = (sd_vae or SD_VAE_AUTOMATIC).strip()
        if choice == SD_VAE_NONE:
            return None
        vaes = self.list("vae", with_hashes=False)
        if choice == SD_VAE_AUTOMATIC:
            stem = Path(checkpoint).name.rsplit(".", 1)[0]
            near = [e for e in vaes if e.path.name.startswith(stem) and e.usable]
            return self._with_hashes(near[0]) if near else None
        try:
            return self.find_usable("vae", choice)
        except NotFound:
            names = ", ".join(e.name for e in vaes) or "none"
            raise NotFound(
                f"sd_vae: no VAE named {choice!r} in {self.paths.folder('vae')} (available: {names}; "
                f"or use {SD_VAE_AUTOMATIC!r} / {SD_VAE_NONE!r})"
            ) from None

    def native_size(self, query: str = "") -> int:
        """The side length the checkpoint `query` (name, title or hash; "" the default) was trained at.

        Hashes only a query that is no name; NotFound when no checkpoint matches.
        """
        return checkpoint_native_size(self.default_checkpoint(query, with_hashes=False).path)

    def default_checkpoint(self, configured: str = "", with_hashes: bool = True) -> ModelEntry:
        """The configured checkpoint, else the first one found, else the bundled tiny model."""
        if configured:
            return self.find_checkpoint(configured, with_hashes)
        entries = self.list("checkpoint", with_hashes=False, include_unusable=False)
        if not entries:
            raise NotFound(f"no checkpoint found: put a .safetensors file into {self.paths.folder('checkpoint')}")
        return self._with_hashes(entries[0]) if with_hashes else entries[0]
