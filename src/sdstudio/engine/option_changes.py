"""Changing options as A1111 does: every value checked first, a new checkpoint loaded before it is saved.

The API's POST /options and the web UI (checkpoint dropdown, Settings tab) change options
through these steps, so a value that cannot be used or a checkpoint that cannot be loaded is
refused by name in both, nothing is saved, and the previous checkpoint stays selected:

    changes = checked_option_changes(store, models, changes)
    job = submit_checkpoint_load(store, checkpoints, queue, changes)  # None: no checkpoint chosen
    ... wait for job; a SdStudioError becomes checkpoint_not_loaded(exc) ...
    store.change(changes)

(The API awaits the job, the UI blocks on it; the rest is shared.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdstudio.errors import InvalidRequest, ModelLoadError, SdStudioError

if TYPE_CHECKING:
    from sdstudio.config import SettingsStore
    from sdstudio.engine.checkpoints import CheckpointModels
    from sdstudio.engine.job_queue import Job, JobSubmitter
    from sdstudio.models.registry import ModelEntry, ModelRegistry


def checked_option_changes(store: SettingsStore, models: ModelRegistry, changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` with every value checked and named model files found and usable; the checkpoint as its title.

    Nothing is saved. A refused value is an InvalidRequest naming the option, a missing model NotFound.
    """
    from sdstudio.models.registry import SD_VAE_AUTOMATIC, SD_VAE_NONE

    store.check(changes)  # refused values (a path outside the data dir, a NaN...) fail before any lookup
    checkpoint = changes.get("sd_model_checkpoint")
    if checkpoint:
        entry = models.find_checkpoint(str(checkpoint))
        _refuse_unusable("sd_model_checkpoint", entry)
        changes = {**changes, "sd_model_checkpoint": entry.title}
    vae = changes.get("sd_vae")
    if isinstance(vae, str) and vae.strip() not in ("", SD_VAE_AUTOMATIC, SD_VAE_NONE):
        _refuse_unusable("sd_vae", models.find("vae", vae, with_hashes=False))
    return changes


def submit_checkpoint_load(
    store: SettingsStore, checkpoints: CheckpointModels, queue: JobSubmitter, changes: dict[str, Any]
) -> Job | None:
    """Queue loading the checkpoint `changes` choose, with the other changes in force; None when they choose none.

    In line with the queue, as A1111 loads a checkpoint when the option changes; the caller saves
    the changes only once the job succeeded.
    """
    if not changes.get("sd_model_checkpoint"):
        return None
    settings = store.pending(changes)
    return queue.submit("load-checkpoint", lambda job: checkpoints(None, settings) and None)


def checkpoint_not_loaded(exc: SdStudioError) -> InvalidRequest:
    """The error for a chosen checkpoint whose load failed: names the option and says nothing changed."""
    return InvalidRequest("sd_model_checkpoint", f"{exc}; the previous checkpoint stays selected")


def _refuse_unusable(option: str, entry: ModelEntry) -> None:
    """A model file that cannot be used (empty, cut short...) is refused before the option is saved."""
    try:
        entry.require_usable()
    except ModelLoadError as exc:
        raise InvalidRequest(option, str(exc)) from None
