"""Hypernetworks: A1111's listing and `create/hypernetwork` (files in models/hypernetworks)."""

from __future__ import annotations

from fastapi import APIRouter

from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep

router = APIRouter()


@router.get("/hypernetworks", response_model=list[m.HypernetworkItem])
def get_hypernetworks(app: AppDep):
    from sdstudio.extensions.hypernetwork import list_hypernetworks

    return list_hypernetworks(app.hypernetworks)


@router.post(
    "/create/hypernetwork",
    response_model=m.CreateResponse,
    description="A1111's Create hypernetwork: a new, randomly initialised hypernetwork in models/hypernetworks, "
    "usable at once as `<hypernet:NAME:1>`. Fields left out take A1111's form defaults. A bad value, or a name "
    "that is taken without overwrite_old, is a 422 naming the field (A1111 answers 200 with the error as text).",
)
def create_hypernetwork(body: m.CreateHypernetworkRequest, app: AppDep):
    from sdstudio.extensions.hypernetwork import create_hypernetwork

    path = create_hypernetwork(
        app.paths.folder("hypernetwork"),
        body.name,
        enable_sizes=body.enable_sizes,
        layer_structure="1, 2, 1" if body.layer_structure is None else body.layer_structure,
        activation_func=body.activation_func,
        weight_init=body.weight_init or "Normal",
        add_layer_norm=body.add_layer_norm,
        use_dropout=body.use_dropout,
        dropout_structure=body.dropout_structure,
        overwrite_old=body.overwrite_old,
    )
    return m.CreateResponse(info=f"create hypernetwork filename: {path}")
