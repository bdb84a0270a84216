"""Scripts and extensions: sdstudio has none to offer, so A1111 clients get empty listings."""

from __future__ import annotations

from fastapi import APIRouter

from sdstudio.server import api_models as m

router = APIRouter()


def installed_scripts(kind: str) -> list[str]:
    """The scripts a txt2img or img2img request may name (`script_name`, `alwayson_scripts`): none yet."""
    return []


@router.get("/scripts", response_model=m.ScriptsList)
def get_scripts():
    return m.ScriptsList(txt2img=installed_scripts("txt2img"), img2img=installed_scripts("img2img"))


@router.get("/script-info")
def get_script_info():
    return []


@router.get("/extensions", response_model=list[m.ExtensionItem])
def get_extensions():
    return []
