"""Hypernetworks: A1111's listing, `create/hypernetwork` and `train/hypernetwork` (files in models/hypernetworks)."""

from __future__ import annotations

from fastapi import APIRouter

from sdstudio.app import App
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, ClientQueueDep, wait_for

router = APIRouter()


@router.get("/hypernetworks", response_model=list[m.HypernetworkItem])
def get_hypernetworks(app: AppDep):
    from sdstudio.extensions.hypernetwork import list_hypernetworks

    return list_hypernetworks(app.hypernetworks)


@router.post(
    "/create/hypernetwork",
    response_model=m.CreateHypernetworkResponse,
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
    return m.CreateHypernetworkResponse(info=f"create hypernetwork filename: {path}")


# A1111 options this trainer does not use yet, with the value that means "off": set otherwise, they are named.
UNUSED_WHEN_SET = {
    "varsize": False,
    "shuffle_tags": False,
    "tag_drop_out": 0,
    "use_weight": False,
    "create_image_every": 0,
    "preview_from_txt2img": False,
}


@router.post(
    "/train/hypernetwork",
    response_model=m.TrainHypernetworkResponse,
    description="A1111's Train hypernetwork: trains models/hypernetworks/NAME.pt on the images of data_root (with "
    ".txt captions; an image without one is captioned with the name) over the loaded SD1/SD2 model, on the job queue "
    "(progress on /progress, /interrupt stops it after the current step and saves). data_root and log_directory are "
    "folders in the data dir (relative, or absolute inside it). Training continues from the "
    "step saved in the file up to `steps`; the .pt (and A1111's .pt.optim) are written every "
    "save_hypernetwork_every steps and at the end. Square training only (training_width); one learning rate. "
    "A bad value is a 4xx naming the field.",
)
async def train_hypernetwork(body: m.TrainHypernetworkRequest, app: AppDep, queue: ClientQueueDep):
    run, warnings = _training_run(body, app)
    result = await wait_for(queue.submit("train-hypernetwork", run))
    info = f"train hypernetwork complete: filename: {result.path} error: None"
    if result.interrupted:
        info = f"train hypernetwork interrupted at step {result.steps}: filename: {result.path} error: None"
    return m.TrainHypernetworkResponse(info=info, steps=result.steps, losses=result.losses, warnings=warnings)


def _training_run(body: m.TrainHypernetworkRequest, app: App):
    """The job's work, after every check that needs no model (a bad field fails before anything is queued)."""
    from sdstudio.errors import InvalidRequest, NotFound
    from sdstudio.extensions.hypernetwork import hypernetworks_applied, load_hypernetwork_file
    from sdstudio.extensions.hypernetwork.library import attention_widths
    from sdstudio.training.hypernetwork_training import (
        HypernetworkTrainingConfig,
        train_hypernetwork,
        training_base_of,
    )
    from sdstudio.training.lora_dataset import scan_training_folder

    entry = app.hypernetworks.find(body.hypernetwork_name)
    if entry is None:
        raise NotFound(f"hypernetwork_name: no hypernetwork {body.hypernetwork_name!r} in {app.hypernetworks.folder}")
    try:
        learn_rate = float(body.learn_rate)
    except ValueError:
        raise InvalidRequest(
            "learn_rate", f"{body.learn_rate!r}: give one number (schedules are not supported yet)"
        ) from None
    if body.training_height != body.training_width:
        raise InvalidRequest("training_height", "must equal training_width (square training only for now)")
    config = HypernetworkTrainingConfig(
        learn_rate=learn_rate,
        batch_size=body.batch_size,
        gradient_step=body.gradient_step,
        steps=body.steps,
        resolution=body.training_width,
        save_every=body.save_hypernetwork_every,
    )
    config.check()
    try:
        # Inside the data dir only: a client must not make the server read (or list) folders elsewhere.
        images = scan_training_folder(app.paths.resolve_inside(body.data_root))
    except ValueError as exc:
        raise InvalidRequest("data_root", f"{exc}; copy the images into the data dir") from None
    except InvalidRequest as exc:
        raise InvalidRequest("data_root", exc.reason) from None
    try:
        state_dir = app.paths.resolve_inside(body.log_directory) / entry.name
    except ValueError as exc:
        raise InvalidRequest("log_directory", str(exc)) from None
    warnings = [
        f"{name} is not supported yet and was not used"
        for name, off in UNUSED_WHEN_SET.items()
        if getattr(body, name) != off
    ]
    if (body.clip_grad_mode or "disabled") != "disabled":
        warnings.append("clip_grad_mode is not supported yet and was not used")

    def run(job):
        model = app.engine.model_source(None)
        net = load_hypernetwork_file(entry.path)
        widths = attention_widths(model.unet)
        if not set(net.layers) & set(widths):
            raise InvalidRequest(
                "hypernetwork_name",
                f"{entry.path.name} has layers for {sorted(net.layers)}; this model's attention takes {widths}",
            )
        return train_hypernetwork(
            training_base_of(model),
            images,
            net,
            entry.path,
            lambda unet: hypernetworks_applied(unet, [(net, 1.0)]),
            config,
            state_dir=state_dir,
            on_step=lambda step, loss: job.report(
                f"Training hypernetwork {entry.name}: loss {loss:.6f}", step, config.steps
            ),
            interrupted=lambda: job.cancel.interrupted,
        )

    return run, warnings
