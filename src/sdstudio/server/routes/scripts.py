"""Scripts and extensions: A1111's /scripts, /script-info and /extensions listings."""

from __future__ import annotations

from fastapi import APIRouter

from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep

router = APIRouter()


@router.get("/scripts", response_model=m.ScriptsList)
def get_scripts(app: AppDep):
    """Every script's name (lowercased title) per tab, what `script_name`/`alwayson_scripts` match."""
    return m.ScriptsList(txt2img=app.scripts.titles("txt2img"), img2img=app.scripts.titles("img2img"))


@router.get("/script-info", response_model=list[m.ScriptInfo])
def get_script_info(app: AppDep):
    """Each script's arguments (label, value, minimum, maximum, step, choices), in `script_args` order."""
    return app.scripts.script_info()


@router.get("/extensions", response_model=list[m.ExtensionItem])
def get_extensions(app: AppDep):
    """The installed extensions (A1111's fields), with the problems each had (`errors`, sdstudio's)."""
    return [
        m.ExtensionItem(
            name=status.name,
            remote=status.remote,
            branch=status.branch,
            commit_hash=status.version,
            version=status.version,
            commit_date=status.commit_date,
            enabled=status.enabled,
            errors=status.errors,
        )
        for status in app.scripts.statuses
        if not status.builtin
    ]
