"""The script host: finds and loads scripts and extensions, and runs the ones a job asks for.

Sources, in A1111's order: sdstudio's built-in scripts (this package's `builtin/` folder,
loaded like any extension's), `DATA_DIR/scripts/*.py`, then `DATA_DIR/extensions/NAME/scripts/*.py`
for each enabled extension in name order. A file that fails to import, a script whose
`title`/`show`/`ui` raises, and a hook that raises are reported under the extension's name
(log, `/sdapi/v1/extensions`, the web UI) and skipped; the app and the job go on.

A request names scripts as A1111's API does: `script_name` (a selectable script's title,
any case) with `script_args` (its arguments in `ui()` order; missing ones get the
controls' defaults), and `alwayson_scripts: {"title": {"args": [...]}}`; always-on scripts
that a request does not mention run with their defaults, as in A1111.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.errors import InvalidRequest, SdStudioError
from sdstudio.extensions.scripts.base import AlwaysVisible, Script, ScriptLists
from sdstudio.extensions.scripts.callbacks import JOB_CALLBACKS, Callbacks
from sdstudio.extensions.scripts.controls import Control

if TYPE_CHECKING:
    from sdstudio.engine.scripting import (
        CFGDenoisedParams,
        CFGDenoiserParams,
        ImageSaveParams,
        PostprocessImageArgs,
        Processed,
        ScriptSelection,
        StableDiffusionProcessing,
        UNetCallParams,
    )

log = logging.getLogger(__name__)

BUILTIN = "builtin"
"""The owner name of sdstudio's own scripts."""
USER_SCRIPTS = "scripts"
"""The owner name of the files in DATA_DIR/scripts/."""
KINDS = ("txt2img", "img2img")
MAX_ERRORS_KEPT = 20  # per extension: the latest ones are shown


class ExtensionFailed(SdStudioError):
    """A selected script (or an extension's setup) raised: the job stops, naming the extension."""


@dataclass
class ExtensionStatus:
    """One extension as the Extensions tab and /sdapi/v1/extensions show it."""

    name: str
    path: Path
    enabled: bool
    builtin: bool = False
    scripts: list[str] = field(default_factory=list)  # titles of its loaded scripts
    errors: list[str] = field(default_factory=list)
    remote: str = ""  # the git remote it was installed from, when it is a git checkout
    version: str = ""  # the checkout's commit (short)
    commit_date: int = 0
    branch: str = ""


@dataclass
class LoadedScript:
    """A script instance for one tab, with its controls."""

    script: Script
    title: str
    controls: list[Control]
    alwayson: bool

    @property
    def name(self) -> str:
        """What requests match (A1111: the title, lowercased)."""
        return self.title.lower()

    @property
    def owner(self) -> str:
        return self.script.extension

    def arguments(self, given: Any, field_name: str) -> list[Any]:
        """A request's positional arguments for this script, each coerced; missing ones take the defaults."""
        if given is None:
            given = []
        if not isinstance(given, (list, tuple)):
            raise InvalidRequest(field_name, f"the arguments of {self.title!r} must be a list")
        args = []
        for index, control in enumerate(self.controls):
            if index >= len(given) or given[index] is None:
                args.append(control.default())
                continue
            try:
                args.append(control.coerce(given[index]))
            except (TypeError, ValueError) as exc:
                label = control.label or f"argument {index}"
                raise InvalidRequest(field_name, f"{self.title}: {label} ({index}): {exc}") from None
        args.extend(given[len(self.controls) :])  # scripts taking *args get the rest as sent
        return args

    def info(self, is_img2img: bool) -> dict[str, Any]:
        """A1111's /sdapi/v1/script-info entry."""
        return {
            "name": self.name,
            "is_alwayson": self.alwayson,
            "is_img2img": is_img2img,
            "args": [control.info_dict() for control in self.controls],
        }


@dataclass
class ExtensionOption:
    """One option an extension adds (A1111 `shared.opts.add_option(key, OptionInfo(...))`)."""

    key: str
    default: Any
    label: str
    section: str  # the Settings tab section it appears in
    choices: tuple[str, ...] = ()
    owner: str = ""


class OptionCollector:
    """What a `ui_settings` callback gets: `add_option(key, default, label, section=..., choices=...)`."""

    def __init__(self) -> None:
        self.options: list[ExtensionOption] = []

    def add_option(
        self, key: str, default: Any, label: str = "", section: str = "Extensions", choices: Any = ()
    ) -> None:
        """Declare an option (its value lives in config.json under `key`, like A1111's)."""
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"option key {key!r} must be an identifier")
        if key in Settings.model_fields:
            raise ValueError(f"option key {key!r} is one of sdstudio's own options")
        self.options.append(ExtensionOption(key, default, label or key, section, tuple(choices or ())))


class ScriptHost:
    """Loads the scripts and extensions of one data dir and gives each job its scripts (app-owned)."""

    def __init__(
        self,
        paths: DataPaths,
        settings: SettingsStore,
        builtin_dir: Path | None = None,
        lists: ScriptLists | None = None,
    ) -> None:
        self.paths = paths
        self.settings_store = settings
        self.lists = lists if lists is not None else ScriptLists()  # the choices scripts' ui() lists
        self.builtin_dir = builtin_dir if builtin_dir is not None else Path(__file__).parent / "builtin"
        self.callbacks = Callbacks(report=self.report)
        self.errors: dict[str, list[str]] = {}
        self.scripts: dict[str, list[LoadedScript]] = {kind: [] for kind in KINDS}
        self.statuses: list[ExtensionStatus] = []
        self._modules: list[str] = []
        self._loads = 0  # how many times load() ran (part of the module names)

    @property
    def extensions_dir(self) -> Path:
        return self.paths.root / "extensions"

    @property
    def user_scripts_dir(self) -> Path:
        return self.paths.root / "scripts"

    # Loading

    def load(self) -> None:
        """(Re)load every enabled source; what was loaded before is unloaded first."""
        self.unload()
        self._loads += 1
        settings = self.settings_store.current
        off = settings.disable_all_extensions
        disabled = set(settings.disabled_extensions)
        sources: list[tuple[ExtensionStatus, Path]] = []
        if off != "all":
            builtin = ExtensionStatus(BUILTIN, self.builtin_dir, enabled=True, builtin=True)
            sources.append((builtin, self.builtin_dir))
            if self.user_scripts_dir.is_dir() and off == "none":
                sources.append(
                    (ExtensionStatus(USER_SCRIPTS, self.user_scripts_dir, enabled=True), self.user_scripts_dir)
                )
        self.statuses = [status for status, _ in sources]
        for folder in self.extension_folders():
            status = ExtensionStatus(folder.name, folder, enabled=off == "none" and folder.name not in disabled)
            status.remote, status.version, status.commit_date, status.branch = _git_info(folder)
            self.statuses.append(status)
            if status.enabled:
                missing = _missing_requirements(folder)
                if missing:
                    self.report(folder.name, f"not loaded: it needs {', '.join(missing)}, which is not installed")
                    continue
                sources.append((status, folder / "scripts"))
        for status, folder in sources:
            for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
                self._load_file(status, path)
        for status in self.statuses:
            status.errors = list(self.errors.get(status.name, []))

    def extension_folders(self) -> list[Path]:
        """The installed extensions' folders (DATA_DIR/extensions/*), by name."""
        if not self.extensions_dir.is_dir():
            return []
        return sorted(
            (p for p in self.extensions_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
            key=lambda p: p.name.lower(),
        )

    def _load_file(self, status: ExtensionStatus, path: Path) -> None:
        owner = status.name
        # Unique per host and load: Python's module table is shared by everything in the process.
        module_name = "_".join(
            ["sdstudio_scripts", f"{id(self):x}", str(self._loads), _identifier(owner), _identifier(path.stem)]
        )
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            self.report(owner, f"{path.name}: cannot be imported")
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling in the module look their module up
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 (SystemExit from a script must not stop the app)
            if isinstance(exc, KeyboardInterrupt):
                raise
            del sys.modules[module_name]
            self.report(owner, f"{path.name} failed to import: {type(exc).__name__}: {exc}")
            return
        self._modules.append(module_name)
        register = getattr(module, "register_callbacks", None)
        if callable(register):
            try:
                register(self.callbacks.for_owner(owner))
            except Exception as exc:
                self.report(owner, f"{path.name}: register_callbacks failed: {type(exc).__name__}: {exc}")
        classes = [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Script) and value.__module__ == module_name
        ]
        for cls in classes:
            for kind in KINDS:
                loaded = self._instantiate(cls, owner, path, kind)
                if loaded is None:
                    continue
                if any(other.name == loaded.name for other in self.scripts[kind]):
                    self.report(owner, f"{path.name}: a script titled {loaded.title!r} is already loaded; skipped")
                    continue
                self.scripts[kind].append(loaded)
                if loaded.title not in status.scripts:
                    status.scripts.append(loaded.title)

    def _instantiate(self, cls: type[Script], owner: str, path: Path, kind: str) -> LoadedScript | None:
        is_img2img = kind == "img2img"
        try:
            script = cls()
            script.filename, script.extension = str(path), owner
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            script.lists = self.lists
            visibility = script.show(is_img2img)
            if not visibility:
                return None
            title = str(script.title())
            controls = list(script.ui(is_img2img) or [])
        except Exception as exc:
            self.report(owner, f"{path.name}: {cls.__name__} failed to set up: {type(exc).__name__}: {exc}")
            return None
        bad = [c for c in controls if not isinstance(c, Control)]
        if bad:
            self.report(owner, f"{path.name}: {title}: ui() must return controls, got {type(bad[0]).__name__}")
            return None
        return LoadedScript(script, title, controls, alwayson=visibility is AlwaysVisible)

    def unload(self) -> None:
        """Forget every loaded script and callback (each extension's script_unloaded callbacks run first)."""
        for owner in {entry.owner for entry in self.callbacks.registered}:
            self.callbacks.remove_owner(owner)
        for name in self._modules:
            sys.modules.pop(name, None)
        self._modules = []
        self.scripts = {kind: [] for kind in KINDS}
        self.errors = {}

    def report(self, owner: str, message: str) -> None:
        """Record a problem of an extension (shown in the Extensions tab and /sdapi/v1/extensions)."""
        log.warning("extension %s: %s", owner, message)
        kept = self.errors.setdefault(owner, [])
        kept.append(message)
        del kept[:-MAX_ERRORS_KEPT]
        for status in self.statuses:
            if status.name == owner and message not in status.errors:
                status.errors.append(message)
                del status.errors[:-MAX_ERRORS_KEPT]

    # What front ends list

    def titles(self, kind: str) -> list[str]:
        """A1111's /sdapi/v1/scripts list for a tab: every script's name (lowercased title)."""
        return [entry.name for entry in self.scripts[kind]]

    def selectable(self, kind: str) -> list[LoadedScript]:
        """The Script dropdown's scripts for a tab."""
        return [entry for entry in self.scripts[kind] if not entry.alwayson]

    def alwayson(self, kind: str) -> list[LoadedScript]:
        """The always-on scripts of a tab."""
        return [entry for entry in self.scripts[kind] if entry.alwayson]

    def script_info(self) -> list[dict[str, Any]]:
        """A1111's /sdapi/v1/script-info: every script of both tabs with its arguments."""
        return [entry.info(kind == "img2img") for kind in KINDS for entry in self.scripts[kind]]

    def find(self, kind: str, name: str, field_name: str = "script_name") -> LoadedScript:
        """A tab's script by title (any case); InvalidRequest naming the installed ones otherwise."""
        wanted = name.strip().lower()
        for entry in self.scripts[kind]:
            if entry.name == wanted:
                return entry
        known = ", ".join(repr(entry.name) for entry in self.scripts[kind]) or "none"
        raise InvalidRequest(field_name, f"script {name!r} is not installed for {kind}; installed: {known}")

    def args_from_infotext(self, kind: str, params: dict[str, Any]) -> dict[str, list[Any]]:
        """Always-on scripts' arguments from a pasted infotext's parameters (their `infotext_fields`).

        Only scripts with at least one of their keys in `params` are returned; the other
        arguments keep their defaults.
        """
        found: dict[str, list[Any]] = {}
        for entry in self.alwayson(kind):
            fields = [(index, key) for index, key in entry.script.infotext_fields if key in params]
            if not fields:
                continue
            args = entry.arguments([], "infotext")
            for index, key in fields:
                if 0 <= index < len(entry.controls):
                    try:
                        args[index] = entry.controls[index].coerce(params[key])
                    except (TypeError, ValueError):
                        continue  # an unreadable value keeps the default, as A1111's paste does
            found[entry.name] = args
        return found

    # Extension options (on_ui_settings)

    def options(self) -> list[ExtensionOption]:
        """The options the extensions added in their `ui_settings` callbacks (shown in the Settings tab)."""
        collector = OptionCollector()
        self.callbacks.call("ui_settings", collector)
        return collector.options

    def option(self, settings: Settings, key: str) -> Any:
        """An extension option's value: config.json's when set, else the default the extension declared."""
        extra = settings.model_extra or {}
        if key in extra:
            return extra[key]
        for option in self.options():
            if option.key == key:
                return option.default
        raise KeyError(key)

    # Jobs

    def for_job(self, kind: str, selection: ScriptSelection) -> JobScriptRun:
        """The scripts one request runs with, its arguments checked (InvalidRequest naming the field)."""
        if kind not in KINDS:
            raise InvalidRequest("kind", f"scripts run in txt2img or img2img, not {kind!r}")
        selected = None
        if selection.script_name and selection.script_name.strip().lower() not in ("", "none"):
            entry = self.find(kind, selection.script_name)
            if entry.alwayson:
                raise InvalidRequest(
                    "script_name", f"{entry.title!r} is always on; give its arguments in alwayson_scripts"
                )
            selected = (entry, entry.arguments(selection.script_args, "script_args"))
        given: dict[str, Any] = {}
        for name, value in (selection.alwayson_scripts or {}).items():
            entry = self.find(kind, str(name), "alwayson_scripts")
            if not entry.alwayson:
                raise InvalidRequest("alwayson_scripts", f"{entry.title!r} is not an always-on script; use script_name")
            args = value.get("args", []) if isinstance(value, dict) else value
            given[entry.name] = entry.arguments(args, f"alwayson_scripts.{name}.args")
        alwayson = [
            (entry, given.get(entry.name) or entry.arguments([], "alwayson_scripts")) for entry in self.alwayson(kind)
        ]
        return JobScriptRun(self, selected, alwayson)


class JobScriptRun:
    """One request's scripts: A1111's ScriptRunner calls for a job, each script's failures isolated.

    An always-on script that raises is reported, named in the job's warnings and left out
    for the rest of the job; the selected script's `run` raising stops the job with an
    error naming its extension. A user error (SdStudioError) a script raises passes through.
    """

    def __init__(
        self,
        host: ScriptHost,
        selected: tuple[LoadedScript, list[Any]] | None,
        alwayson: list[tuple[LoadedScript, list[Any]]],
    ) -> None:
        self.host = host
        self.selected = selected
        self.alwayson_scripts = alwayson
        self.failed: set[int] = set()  # ids of scripts and callbacks switched off for this job
        self.p: StableDiffusionProcessing | None = None

    @property
    def active(self) -> bool:
        return bool(self.selected or self.alwayson_scripts) or any(self.host.callbacks.has(n) for n in JOB_CALLBACKS)

    def _warn(self, message: str) -> None:
        if self.p is not None and message not in self.p.warnings:
            self.p.warnings.append(message)

    def _failed(self, owner: str, what: str, exc: Exception, key: int) -> None:
        self.failed.add(key)
        message = f"extension {owner}: {what} failed and was skipped for this job: {type(exc).__name__}: {exc}"
        self.host.report(owner, message)
        self._warn(message)

    def _each(self, hook: str, p: StableDiffusionProcessing, *lead: Any, **kwargs: Any) -> None:
        for entry, args in self.alwayson_scripts:
            if id(entry) in self.failed:
                continue
            try:
                getattr(entry.script, hook)(p, *lead, *args, **kwargs)
            except SdStudioError:
                raise
            except Exception as exc:
                self._failed(entry.owner, f"script {entry.title!r} ({hook})", exc, id(entry))

    def _callbacks(self, name: str, *args: Any) -> None:
        for registered in self.host.callbacks.entries(name):
            if id(registered) in self.failed:
                continue
            try:
                registered.function(*args)
            except SdStudioError:
                raise
            except Exception as exc:
                self._failed(registered.owner, f"callback {name}", exc, id(registered))

    def setup(self, p: StableDiffusionProcessing) -> None:
        self.p = p
        p.script_args = [arg for _, args in self.alwayson_scripts for arg in args]
        if self.selected is not None:
            entry, args = self.selected
            p.script_args = [*p.script_args, *args]
            self._run_selected(entry, "setup", lambda: entry.script.setup(p, *args))
        self._each("setup", p)

    def run(self, p: StableDiffusionProcessing) -> Processed | None:
        if self.selected is None:
            return None
        entry, args = self.selected
        result: Processed | None = self._run_selected(entry, "run", lambda: entry.script.run(p, *args))
        return result

    def _run_selected(self, entry: LoadedScript, hook: str, call: Any) -> Any:
        try:
            return call()
        except SdStudioError:
            raise
        except Exception as exc:
            message = f"extension {entry.owner}: script {entry.title!r} failed in {hook}: {type(exc).__name__}: {exc}"
            self.host.report(entry.owner, message)
            raise ExtensionFailed(message) from exc

    def before_process(self, p: StableDiffusionProcessing) -> None:
        self._each("before_process", p)

    def process(self, p: StableDiffusionProcessing) -> None:
        self._each("process", p)

    def before_process_batch(
        self, p: StableDiffusionProcessing, batch_number: int, prompts: list[str], seeds: list[int], subseeds: list[int]
    ) -> None:
        self._each(
            "before_process_batch", p, batch_number=batch_number, prompts=prompts, seeds=seeds, subseeds=subseeds
        )

    def process_batch(
        self, p: StableDiffusionProcessing, batch_number: int, prompts: list[str], seeds: list[int], subseeds: list[int]
    ) -> None:
        self._each("process_batch", p, batch_number=batch_number, prompts=prompts, seeds=seeds, subseeds=subseeds)

    def postprocess_batch(self, p: StableDiffusionProcessing, images: Any, batch_number: int) -> None:
        self._each("postprocess_batch", p, images=images, batch_number=batch_number)

    def postprocess_image(self, p: StableDiffusionProcessing, pp: PostprocessImageArgs) -> None:
        self._each("postprocess_image", p, pp)

    def postprocess(self, p: StableDiffusionProcessing, processed: Processed) -> None:
        self._each("postprocess", p, processed)

    def before_image_saved(self, params: ImageSaveParams) -> None:
        self._callbacks("before_image_saved", params)

    def image_saved(self, params: ImageSaveParams) -> None:
        self._callbacks("image_saved", params)

    def cfg_denoiser(self, params: CFGDenoiserParams) -> None:
        self._callbacks("cfg_denoiser", params)

    def cfg_denoised(self, params: CFGDenoisedParams) -> None:
        self._callbacks("cfg_denoised", params)

    def unet_kwargs(self, params: UNetCallParams) -> dict[str, Any]:
        """The always-on scripts' extra UNet arguments for this call, merged (residuals summed)."""
        from sdstudio.engine.sampling import merge_unet_kwargs

        merged: dict[str, Any] = {}
        if self.p is None:
            return merged
        for entry, args in self.alwayson_scripts:
            if id(entry) in self.failed or type(entry.script).unet_kwargs is Script.unet_kwargs:
                continue
            try:
                added = entry.script.unet_kwargs(self.p, params, *args)
            except SdStudioError:
                raise
            except Exception as exc:
                self._failed(entry.owner, f"script {entry.title!r} (unet_kwargs)", exc, id(entry))
                continue
            if added:
                merged = merge_unet_kwargs(merged, added)
        return merged


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _missing_requirements(folder: Path) -> list[str]:
    """Python packages an extension's metadata.ini declares ([Extension] Python-Requires) that are not installed.

    sdstudio never installs packages for an extension (no network, no install.py); it says what is missing.
    """
    manifest = folder / "metadata.ini"
    if not manifest.is_file():
        return []
    parser = configparser.ConfigParser()
    try:
        parser.read(manifest, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return []
    wanted = parser.get("Extension", "Python-Requires", fallback="")
    missing = []
    for requirement in (part.strip() for part in wanted.split(",")):
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip()
        if not name:
            continue
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def _git_info(folder: Path) -> tuple[str, str, int, str]:
    """(remote URL, short commit, commit time, branch) of a git checkout, read from its files (no git needed)."""
    git = folder / ".git"
    if not git.is_dir():
        return "", "", 0, ""
    remote = branch = commit = ""
    try:
        config = configparser.ConfigParser(strict=False)
        config.read(git / "config", encoding="utf-8")
        remote = config.get('remote "origin"', "url", fallback="")
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref: "):
            ref = head[5:]
            branch = ref.rsplit("/", 1)[-1]
            ref_file = git / ref
            if ref_file.is_file():
                commit = ref_file.read_text(encoding="utf-8").strip()
            else:
                packed = git / "packed-refs"
                for line in packed.read_text(encoding="utf-8").splitlines() if packed.is_file() else []:
                    if line.endswith(" " + ref):
                        commit = line.split()[0]
        else:
            commit = head
    except (OSError, configparser.Error, UnicodeDecodeError):
        pass
    return remote, commit[:8], 0, branch
