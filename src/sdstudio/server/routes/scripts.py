"""Scripts and extensions: sdstudio has none to offer, so A1111 clients get empty listings."""

from __future__ import annotations

from fastapi import APIRouter

from sdstudio.server import api_models as m

router = APIRouter()


@router.get("/scripts", response_model=m.ScriptsList)
def get_scripts():
    return m.ScriptsList(txt2img=[], img2img=[])


@router.get("/script-info")
def get_script_info():
    return []


@router.get("/extensions", response_model=list[m.ExtensionItem])
def get_extensions():
    return []
