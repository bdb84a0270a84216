"""Post-processing: upscalers, face restorers, latent upscale modes, extras, PNG info."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter

from sdstudio.app import App
from sdstudio.engine.infotext import parse_generation_parameters
from sdstudio.engine.request import HIRES_LATENT_UPSCALERS, decode_base64_image
from sdstudio.engine.saving import read_infotext
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, ClientQueueDep, TasksDep, wait_for
from sdstudio.server.images import encode_image_base64
from sdstudio.server.tasks import OutputImage, PreparedTask, TaskOutput

if TYPE_CHECKING:
    from sdstudio.postprocess.extras import ExtrasResult

router = APIRouter()

EXTRAS_SINGLE = "extras-single-image"
EXTRAS_BATCH = "extras-batch-images"


@router.get("/upscalers", response_model=list[m.UpscalerItem])
def get_upscalers(app: AppDep):
    return [m.UpscalerItem(**info.to_api_dict()) for info in app.postprocess.upscalers.list(include_unusable=False)]


@router.get("/realesrgan-models", response_model=list[m.RealesrganItem])
def get_realesrgan_models(app: AppDep):
    """The usable model files in models/RealESRGAN (A1111 lists the published ones by download URL)."""
    from sdstudio.postprocess.upscalers import REALESRGAN_FOLDER

    folder = app.paths.folder("upscaler", REALESRGAN_FOLDER)
    return [
        m.RealesrganItem(name=info.name, path=info.model_path, scale=round(info.scale) if info.scale else None)
        for info in app.postprocess.upscalers.list(include_unusable=False)
        if info.model_path is not None and Path(info.model_path).is_relative_to(folder)
    ]


@router.get("/face-restorers", response_model=list[m.FaceRestorerItem])
def get_face_restorers(app: AppDep):
    return [m.FaceRestorerItem(name=row.name, cmd_dir=row.cmd_dir) for row in app.postprocess.face_restorers.list()]


@router.get("/latent-upscale-modes", response_model=list[m.LatentUpscalerModeItem])
def get_latent_upscale_modes():
    return [m.LatentUpscalerModeItem(name=name) for name in HIRES_LATENT_UPSCALERS]


def prepare_extras_single(app: App, body: m.ExtrasSingleImageRequest) -> PreparedTask[m.ExtrasSingleImageRequest]:
    """Decode the image (a 4xx at once) and make the extras work; the API does not save (A1111)."""
    from sdstudio.postprocess.extras import ExtrasSingleImageRequest

    # A1111 decodes at the API edge (extras_single_image_api); the service takes PIL images.
    image = decode_base64_image(body.image, "image", app.settings.img_max_decode_mp)
    request = ExtrasSingleImageRequest(**body.model_dump(exclude={"image"}), image=image)
    return PreparedTask(body, lambda control: app.postprocess.run_single(request, save=False))


def prepare_extras_batch(app: App, body: m.ExtrasBatchImagesRequest) -> PreparedTask[m.ExtrasBatchImagesRequest]:
    """Decode the images (a 4xx naming the one that fails) and make the extras work."""
    from sdstudio.postprocess.extras import ExtrasBatchImagesRequest, NamedImage

    # A1111's FileData items: base64 `data` and a file `name`, decoded here as A1111 does.
    limit = app.settings.img_max_decode_mp
    decoded = [
        NamedImage(image=decode_base64_image(item.data, f"imageList[{index}].data", limit), name=item.name)
        for index, item in enumerate(body.imageList)
    ]
    request = ExtrasBatchImagesRequest(**body.model_dump(exclude={"imageList"}), imageList=decoded)
    return PreparedTask(body, lambda control: app.postprocess.run_batch(request, save=False))


def extras_output(result: ExtrasResult) -> TaskOutput:
    """What an extras task keeps: the processed images (those returned) with their infotexts, and html_info."""
    images = [OutputImage(item.image, item.infotext, item.saved_path) for item in result.images if item.image]
    return TaskOutput(images, {"html_info": result.html_info})


@router.post("/extra-single-image", response_model=m.ExtrasSingleImageResponse)
async def extra_single_image(body: m.ExtrasSingleImageRequest, app: AppDep, queue: ClientQueueDep, tasks: TasksDep):
    job = tasks.submit(EXTRAS_SINGLE, body, prepare_extras_single(app, body), queue, None)
    result = await wait_for(job)
    processed = result.images[0] if result.images else None
    return m.ExtrasSingleImageResponse(
        html_info=result.html_info,
        image=encode_image_base64(processed.image, processed.infotext)
        if processed is not None and body.show_extras_results
        else None,
    )


@router.post("/extra-batch-images", response_model=m.ExtrasBatchImagesResponse)
async def extra_batch_images(body: m.ExtrasBatchImagesRequest, app: AppDep, queue: ClientQueueDep, tasks: TasksDep):
    job = tasks.submit(EXTRAS_BATCH, body, prepare_extras_batch(app, body), queue, None)
    result = await wait_for(job)
    images = (
        [encode_image_base64(item.image, item.infotext) for item in result.images] if body.show_extras_results else []
    )
    return m.ExtrasBatchImagesResponse(html_info=result.html_info, images=images)


@router.post("/png-info", response_model=m.PNGInfoResponse)
def png_info(body: m.PNGInfoRequest, app: AppDep):
    image = decode_base64_image(body.image, "image", app.settings.img_max_decode_mp)
    info = read_infotext(image) or ""
    items = {k: v for k, v in image.info.items() if isinstance(v, (str, int, float)) and k != "parameters"}
    if info:
        items["parameters"] = info
    return m.PNGInfoResponse(info=info, items=items, parameters=parse_generation_parameters(info) if info else {})
