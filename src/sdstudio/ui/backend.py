"""What the web UI asks of sdstudio's services, in one narrow object.

`UiBackend` is the UI's only door to the rest of the program: it lists checkpoints,
styles, extra networks and upscalers, counts prompt tokens, validates and saves settings,
and builds generation requests. Tabs receive it (and the job queue) as arguments; nothing
is global. `UiBackend.from_app` wires it over the composition root's `App`; tests build
it the same way over a temporary data dir. Heavy modules (torch, the engine) are imported
when first used, so building the UI stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.config import MODEL_KINDS, DataPaths, Settings, SettingsStore, find_preview
from sdstudio.errors import InvalidRequest, SdStudioError

if TYPE_CHECKING:
    from sdstudio.app import App
    from sdstudio.engine.job_queue import Job, JobSubmitter
    from sdstudio.engine.scripting import ScriptSelection
    from sdstudio.extensions.manager import ExtensionManager
    from sdstudio.extensions.scripts.host import ExtensionOption, ExtensionStatus
    from sdstudio.prompts.conditioning import PromptTokenizer
    from sdstudio.ui.page_assets import PageAssets

CHUNK_TOKENS = 75


@dataclass(frozen=True)
class NetworkCard:
    """One extra network as a card: its name, file, preview image and prompt text."""

    kind: str  # "lora" | "embedding" | "hypernetwork"
    name: str
    path: Path
    preview: Path | None

    @property
    def prompt_text(self) -> str:
        """What clicking the card inserts (A1111: `<lora:name:1>`, `<hypernet:name:1>`: the default multiplier 1)."""
        tag = {"lora": "lora", "hypernetwork": "hypernet"}.get(self.kind)  # an embedding is its name
        return f"<{tag}:{self.name}:1>" if tag else self.name


@dataclass(frozen=True)
class TokenCount:
    """Tokens used by a prompt and the size of the 75-token chunks they fill (A1111's counter)."""

    used: int
    limit: int

    @property
    def text(self) -> str:
        return f"{self.used}/{self.limit}"


@dataclass
class UiBackend:
    """The operations the web UI uses, over one data dir's services."""

    settings_store: SettingsStore
    paths: DataPaths
    engine: Any = None  # sdstudio.engine.service.GenerationService (None: generation unavailable)
    styles: Any = None  # sdstudio.prompts.styles.StyleDatabase
    postprocess: Any = None  # sdstudio.postprocess.extras.PostprocessService
    registry: Any = None  # sdstudio.models.registry.ModelRegistry (App.models)
    checkpoints: Any = None  # sdstudio.engine.checkpoints.CheckpointModels (App.checkpoints): loads the chosen one
    scripts: Any = None  # sdstudio.extensions.scripts.host.ScriptHost (App.scripts)
    extensions: Any = None  # sdstudio.extensions.manager.ExtensionManager (App.extensions)
    merger: Any = None  # sdstudio.models.merge.CheckpointMerger (App.merger)
    extension_access: bool = True
    """Whether the page may install, enable, disable and remove extensions (A1111 refuses it with --listen)."""
    tasks: Any = None
    """The server's task runner (ui.queue.QueueTasks): the page's jobs are stored as tasks, the Queue tab shows them."""
    _tokenizer: PromptTokenizer | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_app(cls, app: App, extension_access: bool = True, tasks: Any = None) -> UiBackend:
        """Wire the backend over the composition root's services (optional ones when present) and the task runner."""
        return cls(
            settings_store=app.settings_store,
            paths=app.paths,
            engine=app.engine,
            styles=app.styles,
            postprocess=app.postprocess,
            registry=app.models,
            checkpoints=app.checkpoints,
            scripts=app.scripts,
            extensions=app.extensions,
            merger=app.merger,
            extension_access=extension_access,
            tasks=tasks,
        )

    @property
    def settings(self) -> Settings:
        """The settings in force now (read-only; change them with `apply_settings`)."""
        return self.settings_store.current

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint_titles(self) -> list[str]:
        """Checkpoint names for the dropdown (A1111's names: path inside models/Stable-diffusion).

        Names without hashes: hashing a new multi-GB file would hold up the page; the
        registry finds a checkpoint by name as well as by title.
        """
        if self.registry is not None:
            entries = self.registry.list("checkpoint", with_hashes=False, include_unusable=False)
            return [entry.name for entry in entries]
        folder = self.paths.folder("checkpoint")
        return [p.relative_to(folder).as_posix() for p in MODEL_KINDS["checkpoint"].files_in(folder)]

    def refresh_checkpoints(self) -> list[str]:
        """Rescan the model folders and list checkpoints again (the registry scans on every call)."""
        return self.checkpoint_titles()

    def current_checkpoint(self) -> str | None:
        """The dropdown entry for the settings' sd_model_checkpoint (a name, title or hash), else the first."""
        titles = self.checkpoint_titles()
        chosen = self.settings.sd_model_checkpoint
        if chosen in titles:
            return chosen
        if chosen and self.registry is not None:
            try:
                name = self.registry.find_checkpoint(chosen).name
            except SdStudioError:
                name = None
            if name in titles:
                return name
        return titles[0] if titles else None

    def native_size(self, title: str | None = None) -> int | None:
        """The side length checkpoint `title` (default: the dropdown's) was trained at; None when there is none.

        Width and height follow it, as A1111's Forge presets do for SD and SDXL.
        """
        from sdstudio.models.registry import ModelRegistry

        registry = self.registry if self.registry is not None else ModelRegistry(self.paths, save_hashes=False)
        title = title or self.current_checkpoint()
        try:
            return int(registry.native_size(title)) if title else None
        except SdStudioError:  # a name typed into the dropdown that matches nothing
            return None

    def select_checkpoint(self, title: str | None, queue: JobSubmitter) -> None:
        """Load checkpoint `title` (a job on `queue`), then make it the one for the next jobs in config.json.

        As the API's POST /options and A1111: a file that cannot be loaded is an error naming
        sd_model_checkpoint and the previous checkpoint stays selected. The selected one again is no change.
        """
        if title and title != self.current_checkpoint():
            self.apply_settings({"sd_model_checkpoint": title}, queue)

    # -- checkpoint merger -------------------------------------------------------------------

    def checkpoint_merger(self):
        """The Checkpoint Merger over this data dir's models (built on first use when not given)."""
        if self.merger is None:
            from sdstudio.models.merge import CheckpointMerger
            from sdstudio.models.registry import ModelRegistry

            self.merger = CheckpointMerger(self.registry or ModelRegistry(self.paths))
        return self.merger

    def bake_vae_choices(self) -> list[str]:
        """The merger's Bake in VAE dropdown: "None", then the VAE files (A1111's names)."""
        if self.registry is not None:
            names = [e.name for e in self.registry.list("vae", with_hashes=False, include_unusable=False)]
        else:
            names = [
                path.relative_to(folder).as_posix()
                for folder in self.paths.folders("vae")
                for path in MODEL_KINDS["vae"].files_in(folder)
            ]
        return ["None", *names]

    def read_merge_metadata(self, *names: str | None) -> str:
        """The selected checkpoints' metadata as JSON text (A1111's "Read metadata from selected checkpoints")."""
        text: str = self.checkpoint_merger().read_metadata(names)
        return text

    def submit_merge(self, fields: dict[str, Any], queue: JobSubmitter) -> Job:
        """Check the merger's fields (InvalidRequest naming one) and queue the merge, as the API's merge-checkpoints."""
        from sdstudio.engine.job_queue import submit_merge
        from sdstudio.models.merge import MergeRequest

        return submit_merge(queue, self.checkpoint_merger(), MergeRequest(**fields))

    # -- prompts -----------------------------------------------------------------------------

    def style_names(self, reload: bool = False) -> list[str]:
        """Saved prompt styles (styles.csv), re-read from disk when asked."""
        db = self._style_database()
        if db is None:
            return []
        if reload:
            db.reload()
        return db.names()

    def _style_database(self):
        if self.styles is None and self.paths.styles_file.exists():
            from sdstudio.prompts.styles import StyleDatabase

            self.styles = StyleDatabase(self.paths.styles_file)
        return self.styles

    def count_tokens(self, prompt: str, steps: int = 20) -> TokenCount:
        """A1111's token counter: the longest scheduled variant of the prompt, in 75-token chunks.

        Extra-network tags are removed and `AND`, prompt editing, emphasis and BREAK are
        parsed first, as A1111's `get_prompt_lengths` does; embeddings count as their words.
        """
        # Token counting needs no model: the bundled CLIP BPE and no embeddings.
        from sdstudio.prompts.conditioning import EmbeddingLookup, PromptTokenizer, tokenize_into_chunks
        from sdstudio.prompts.extra_networks import extract_extra_networks
        from sdstudio.prompts.parser import parse_composable_prompt, prompt_schedules

        text, _ = extract_extra_networks(prompt or "")
        variants = [
            schedule_text
            for part, _w in parse_composable_prompt(text)
            for _end, schedule_text in prompt_schedules(part, max(1, int(steps or 1)))
        ]
        if self._tokenizer is None:
            self._tokenizer = PromptTokenizer(None, unescape_html=True)
        used = 0
        for variant in variants or [""]:
            _chunks, count = tokenize_into_chunks(variant, self._tokenizer, EmbeddingLookup(None, self._tokenizer))
            used = max(used, count)
        limit = max(CHUNK_TOKENS, math.ceil(used / CHUNK_TOKENS) * CHUNK_TOKENS)
        return TokenCount(used, limit)

    # -- extra networks ----------------------------------------------------------------------

    def network_cards(self, kind: str) -> list[NetworkCard]:
        """LoRA, embedding or hypernetwork files as cards (names as A1111 uses them in prompts: the file stem)."""
        if self.registry is not None:
            entries = self.registry.list(kind, with_hashes=False)
            return [NetworkCard(kind, e.stem, e.path, e.preview) for e in entries]
        return [
            NetworkCard(kind, path.stem, path, find_preview(path))
            for folder in self.paths.folders(kind)
            for path in MODEL_KINDS[kind].files_in(folder)
        ]

    # -- images ------------------------------------------------------------------------------

    def check_image(self, source: bytes | Path, field: str) -> None:
        """Refuse an uploaded image over img_max_decode_mp (or not an image) by `field`, before it is decoded.

        Every image box of the page calls this (ui.image_inputs), as the API decodes through the same limit.
        """
        from sdstudio.postprocess.image_files import check_client_image

        check_client_image(source, field, self.settings.img_max_decode_mp)

    # -- postprocess -------------------------------------------------------------------------

    def postprocess_service(self):
        """The Extras service (upscalers, face restoration), built on first use; None if unavailable."""
        if self.postprocess is None:
            from sdstudio.postprocess.extras import PostprocessService

            self.postprocess = PostprocessService.build(self.paths, self.settings_store)
        return self.postprocess

    def upscaler_names(self) -> list[str]:
        """Usable upscalers (None, Lanczos, Nearest, then model files)."""
        service = self.postprocess_service()
        return service.upscalers.names() if service is not None else []

    def face_restorer_names(self) -> list[str]:
        """Face restoration models listed by the postprocess service (GFPGAN, CodeFormer)."""
        service = self.postprocess_service()
        if service is None:
            return []
        try:
            return [info.name for info in service.face_restorers.list()]
        except Exception:  # listing is informative; a broken model folder must not break the tab
            return []

    # -- scripts and extensions --------------------------------------------------------------

    def selectable_scripts(self, kind: str) -> list[Any]:
        """The Script dropdown's scripts of a tab (the host's LoadedScript entries: title, controls)."""
        return self.scripts.selectable(kind) if self.scripts is not None else []

    def alwayson_scripts(self, kind: str) -> list[Any]:
        """The always-on scripts of a tab."""
        return self.scripts.alwayson(kind) if self.scripts is not None else []

    def check_scripts(self, kind: str, selection: ScriptSelection | None) -> None:
        """Refuse an unknown script or a bad argument before the job queues (InvalidRequest naming the field)."""
        if self.scripts is not None and selection is not None:
            self.scripts.for_job(kind, selection)

    def pasted_parameters(self, infotext: str) -> dict[str, Any]:
        """A pasted infotext's parameters, after the extensions' infotext_pasted callbacks (as the API reads it)."""
        from sdstudio.engine.infotext import parse_generation_parameters

        if not infotext or not infotext.strip():
            return {}
        params = parse_generation_parameters(infotext)
        if self.scripts is not None:
            self.scripts.callbacks.call("infotext_pasted", infotext, params)
        return params

    def script_args_from_infotext(self, kind: str, params: dict[str, Any]) -> dict[str, list[Any]]:
        """Always-on scripts' arguments (by script name) from pasted parameters, by their `infotext_fields`."""
        return self.scripts.args_from_infotext(kind, params) if self.scripts is not None else {}

    def extension_statuses(self) -> list[ExtensionStatus]:
        """The installed extensions with their state, scripts and problems."""
        return self.extensions.list() if self.extensions is not None else []

    def _extension_manager(self) -> ExtensionManager:
        if self.extensions is None:
            raise SdStudioError("extensions cannot be changed here: the web UI was built without the script host")
        if not self.extension_access:
            raise SdStudioError(
                "extensions cannot be changed from the web UI while sdstudio listens on all interfaces (--listen); "
                "use `sdstudio extensions` on the machine itself"
            )
        manager: ExtensionManager = self.extensions
        return manager

    def install_extension(self, source: str, name: str | None = None) -> ExtensionStatus:
        """Install an extension from a folder or git URL (scripts reload at once)."""
        if not (source or "").strip():
            raise InvalidRequest("source", "give a folder or a git URL to install from")
        return self._extension_manager().install(source, (name or "").strip() or None)

    def set_enabled_extensions(self, enabled: list[str]) -> list[str]:
        """Enable the installed extensions named in `enabled` and disable the others; returns those changed."""
        manager = self._extension_manager()
        changed = []
        for status in manager.list():
            wanted = status.name in enabled
            if wanted != status.enabled:
                (manager.enable if wanted else manager.disable)(status.name)
                changed.append(status.name)
        return changed

    def remove_extension(self, name: str) -> None:
        """Delete an installed extension's folder (scripts reload at once)."""
        if not name:
            raise InvalidRequest("name", "choose the extension to remove")
        self._extension_manager().remove(name)

    def extension_tabs(self) -> list[tuple[str, Any, str, str]]:
        """(extension, builder, title, elem_id) for each tab the extensions' ui_tabs callbacks return.

        A callback that raises, or returns something that is not [(builder, title, elem_id)], is
        reported under its extension's name and skipped.
        """
        if self.scripts is None:
            return []
        callbacks = self.scripts.callbacks
        tabs = []
        for owner in dict.fromkeys(entry.owner for entry in callbacks.entries("ui_tabs")):
            for returned in callbacks.call("ui_tabs", owners={owner}):
                if returned is None:  # a callback that adds no tab
                    continue
                for entry in returned if isinstance(returned, (list, tuple)) else [returned]:
                    if not (isinstance(entry, (list, tuple)) and len(entry) in (2, 3)):
                        self.report_extension(owner, f"ui_tabs: expected (builder, title, elem_id), got {entry!r}")
                        continue
                    title = str(entry[1])
                    elem_id = str(entry[2]) if len(entry) == 3 else title
                    tabs.append((owner, entry[0], title, elem_id))
        return tabs

    def report_extension(self, owner: str, message: str) -> None:
        """Record an extension's problem (logged, and shown in the Extensions tab)."""
        if self.scripts is not None:
            self.scripts.report(owner, message)

    def extension_options(self) -> list[ExtensionOption]:
        """The options extensions add (their ui_settings callbacks), for the Settings tab."""
        return self.scripts.options() if self.scripts is not None else []

    def enabled_extension_folders(self) -> list[Path]:
        """The folders of the enabled extensions (DATA_DIR/extensions/NAME), in name order."""
        if self.scripts is None:
            return []
        enabled = {status.name for status in self.scripts.statuses if status.enabled}
        return [folder for folder in self.scripts.extension_folders() if folder.name in enabled]

    def page_assets(self) -> PageAssets:
        """The enabled extensions' javascript/*.js and style.css for the page; unreadable ones are reported."""
        from sdstudio.ui.page_assets import extension_page_assets

        assets = extension_page_assets(self.enabled_extension_folders())
        for owner, message in assets.problems:
            self.report_extension(owner, message)
        return assets

    # -- localization ------------------------------------------------------------------------

    def localization_folders(self) -> list[Path]:
        """Where localizations/*.json are found: sdstudio's own, the data dir's, then each enabled extension's."""
        from sdstudio.ui.localization import BUNDLED_LOCALIZATIONS

        extensions = [folder / "localizations" for folder in self.enabled_extension_folders()]
        return [BUNDLED_LOCALIZATIONS, self.paths.root / "localizations", *extensions]

    def localization_names(self) -> list[str]:
        """The `localization` setting's choices: "None" (English), then every localization found."""
        from sdstudio.ui.localization import NO_LOCALIZATION, localization_files

        return [NO_LOCALIZATION, *sorted(localization_files(self.localization_folders()), key=str.lower)]

    def localization(self) -> dict[str, Any]:
        """The mapping of English text to translated text the page applies now (the `localization` setting)."""
        from sdstudio.ui.localization import localization_for

        return localization_for(self.settings.localization, self.localization_folders())

    def option_value(self, name: str) -> Any:
        """An option's value now: sdstudio's own, an extension's (its default until saved), or config.json's."""
        settings = self.settings
        if name in type(settings).model_fields:
            return getattr(settings, name)
        if self.scripts is not None:
            try:
                return self.scripts.option(settings, name)
            except KeyError:
                pass
        return (settings.model_extra or {}).get(name)

    # -- settings ----------------------------------------------------------------------------

    def apply_settings(self, changes: dict[str, Any], queue: JobSubmitter | None = None) -> list[str]:
        """Check option changes, load a newly chosen checkpoint (a job on `queue`), then save config.json.

        Returns the names that changed. Checked and loaded as the API's POST /options does
        (sdstudio.engine.option_changes): nothing is saved when a value or the checkpoint is refused.
        """
        from sdstudio.engine.option_changes import checked_option_changes, checkpoint_not_loaded, submit_checkpoint_load

        if self.registry is not None:
            changes = checked_option_changes(self.settings_store, self.registry, changes)
        if changes.get("sd_model_checkpoint"):
            if self.checkpoints is None or queue is None:
                raise SdStudioError("a checkpoint cannot be chosen here: the web UI was built without the engine")
            job = submit_checkpoint_load(self.settings_store, self.checkpoints, queue, changes)
            if job is not None:
                try:
                    job.future.result()
                except SdStudioError as exc:
                    raise checkpoint_not_loaded(exc) from None
        return self.settings_store.change(changes)
