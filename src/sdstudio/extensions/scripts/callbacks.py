"""Callbacks: A1111's script_callbacks, registered on an object the app owns instead of module state.

A script file registers its callbacks in a function the loader calls with this registry:

    def register_callbacks(callbacks):
        callbacks.on_image_saved(lambda params: print("saved", params.filename))

A callback that raises is reported under its extension's name and skipped; the others and
the job go on (job callbacks that failed once stay off for the rest of that job).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CALLBACK_NAMES = (
    "app_started",  # (app): the app's services are built (the server or UI starts)
    "model_loaded",  # (model): a checkpoint was loaded (GenerationModel)
    "ui_tabs",  # (): returns [(component builder, title, elem_id)] for extra web UI tabs
    "ui_settings",  # (options): add options with options.add_option(...)
    "before_image_saved",  # (ImageSaveParams): may replace .image or change .pnginfo
    "image_saved",  # (ImageSaveParams): .filename is the written file
    "cfg_denoiser",  # (CFGDenoiserParams): before each guided UNet call
    "cfg_denoised",  # (CFGDenoisedParams): after it
    "infotext_pasted",  # (infotext, params dict): may change the parsed fields
    "script_unloaded",  # (): the extension is being unloaded (reload, disable)
)
"""A1111's callback names (script_callbacks.on_<name>), the ones sdstudio calls."""

JOB_CALLBACKS = ("before_image_saved", "image_saved", "cfg_denoiser", "cfg_denoised")
"""Callbacks called while a job runs (a failing one is skipped for the rest of the job)."""


@dataclass
class Registered:
    """One registered callback and the extension it came from."""

    name: str
    function: Callable[..., Any]
    owner: str


ErrorReport = Callable[[str, str], None]
"""`report(extension_name, message)`: where a failing callback is reported."""


class Callbacks:
    """All registered callbacks, by A1111's names; calls them with errors isolated per extension."""

    def __init__(self, report: ErrorReport | None = None) -> None:
        self.registered: list[Registered] = []
        self.report = report or (lambda owner, message: log.warning("extension %s: %s", owner, message))

    def add(self, name: str, function: Callable[..., Any], owner: str) -> None:
        """Register `function` for the callback `name` on behalf of extension `owner`."""
        if name not in CALLBACK_NAMES:
            raise ValueError(f"unknown callback {name!r}; known: {', '.join(CALLBACK_NAMES)}")
        if not callable(function):
            raise TypeError(f"callback {name}: {function!r} is not callable")
        self.registered.append(Registered(name, function, owner))

    def for_owner(self, owner: str) -> OwnedCallbacks:
        """The registration interface a script file gets (`on_image_saved(fn)`...), recording its owner."""
        return OwnedCallbacks(self, owner)

    def remove_owner(self, owner: str) -> None:
        """Forget an extension's callbacks (it was unloaded), after calling its script_unloaded callbacks."""
        self.call("script_unloaded", owners={owner})
        self.registered = [entry for entry in self.registered if entry.owner != owner]

    def has(self, name: str) -> bool:
        """Whether any callback is registered under `name`."""
        return any(entry.name == name for entry in self.registered)

    def entries(self, name: str) -> list[Registered]:
        """The callbacks registered under `name`, in registration order."""
        return [entry for entry in self.registered if entry.name == name]

    def call(self, name: str, *args: Any, owners: set[str] | None = None) -> list[Any]:
        """Call every `name` callback (of `owners`, when given); a failing one is reported and skipped.

        Returns what the callbacks returned, failed ones left out.
        """
        results = []
        for entry in self.entries(name):
            if owners is not None and entry.owner not in owners:
                continue
            try:
                results.append(entry.function(*args))
            except Exception as exc:  # an extension's bug must not stop the app
                self.report(entry.owner, f"{name} callback failed: {type(exc).__name__}: {exc}")
        return results


class OwnedCallbacks:
    """`on_<name>(function)` for each of A1111's callbacks, registering on behalf of one extension."""

    def __init__(self, registry: Callbacks, owner: str) -> None:
        self._registry = registry
        self.owner = owner

    def __getattr__(self, attribute: str) -> Callable[[Callable[..., Any]], None]:
        name = attribute.removeprefix("on_")
        if not attribute.startswith("on_") or name not in CALLBACK_NAMES:
            raise AttributeError(attribute)
        return lambda function: self._registry.add(name, function, self.owner)
