"""The A1111 `/sdapi/v1` wire format, written out by hand.

Field names, types and defaults follow A1111's `modules/api/models.py` (whose request
models are generated from `StableDiffusionProcessingTxt2Img/Img2Img`), so existing
clients work unmodified. These models are deliberately separate from the engine's
request type: the wire format stays stable when internals change. Unknown fields are
accepted and ignored, as A1111 clients send fields of newer or older versions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sdstudio.validation import CheckedModel

_LENIENT = ConfigDict(extra="ignore", populate_by_name=True, protected_namespaces=(), allow_inf_nan=False)


class _Body(CheckedModel):
    """A request body: NaN and infinity are refused in every float field, lone surrogates made writable."""

    model_config = _LENIENT


RequestBody = _Body
"""What every route's JSON body model derives from (routes outside this module too)."""


class _ProcessingFields(_Body):
    """Fields common to txt2img and img2img (A1111's StableDiffusionProcessing)."""

    prompt: str | list[str] | None = ""
    negative_prompt: str | list[str] | None = ""
    styles: list[str] | None = None
    seed: int | None = -1
    subseed: int | None = -1
    subseed_strength: float | None = 0
    seed_resize_from_h: int | None = -1
    seed_resize_from_w: int | None = -1
    seed_enable_extras: bool | None = True
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int | None = 1
    n_iter: int | None = 1
    steps: int | None = 50
    cfg_scale: float | None = 7.0
    distilled_cfg_scale: float | None = None
    width: int | None = 512
    height: int | None = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: str | None = None
    comments: dict | None = None
    # Extra fields A1111 adds to the generated model.
    sampler_index: str | None = "Euler"
    script_name: str | None = None
    script_args: list | None = Field(default_factory=list)
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict | None = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None


class StableDiffusionTxt2ImgProcessingAPI(_ProcessingFields):
    """POST /sdapi/v1/txt2img body."""

    enable_hr: bool | None = False
    denoising_strength: float | None = 0.75
    firstphase_width: int | None = 0
    firstphase_height: int | None = 0
    hr_scale: float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = 0
    hr_resize_x: int | None = 0
    hr_resize_y: int | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""
    hr_cfg: float | None = None
    hr_distilled_cfg: float | None = None


class StableDiffusionImg2ImgProcessingAPI(_ProcessingFields):
    """POST /sdapi/v1/img2img body."""

    init_images: list | None = None
    resize_mode: int | None = 0
    denoising_strength: float | None = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int | None = 4
    mask_blur_y: int | None = 4
    mask_blur: int | None = None
    mask_round: bool | None = True
    inpainting_fill: int | None = 0
    inpaint_full_res: bool | int | None = True
    inpaint_full_res_padding: int | None = 0
    inpainting_mask_invert: int | None = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = Field(default=False, exclude=True)


IGNORED_FIELDS: dict[str, str] = {
    "s_min_uncond": "NGMS (skipping the negative prompt at low sigmas) is not implemented; every step is guided",
    "firstpass_image": "a hires fix over a given first-pass image is not implemented; the first pass is generated",
    "comments": "A1111 shows comments on its web page only; they never reach the images",
    "distilled_cfg_scale": "Forge's distilled guidance for Flux; sdstudio runs no Flux model",
    "hr_distilled_cfg": "Forge's distilled guidance for Flux; sdstudio runs no Flux model",
    "firstphase_width": "pre-1.0 hires-fix sizing; use width/height with hr_scale or hr_resize_x/hr_resize_y",
    "firstphase_height": "pre-1.0 hires-fix sizing; use width/height with hr_scale or hr_resize_x/hr_resize_y",
    "image_cfg_scale": "only instruct-pix2pix models use it, and sdstudio runs none",
    "latent_mask": "a separate mask for the latent is not implemented; `mask` is used for both",
}
"""The A1111 txt2img/img2img body fields sdstudio accepts without effect, and why: the one list of them.

Every other field of the two bodies reaches the engine request or is acted on by the route
(routes/generation.py ROUTE_FIELDS); the endpoints' OpenAPI descriptions show this list.
"""


def ignored_fields_description(body: type[BaseModel]) -> str:
    """An endpoint's OpenAPI description: the body's fields in IGNORED_FIELDS, one line each."""
    lines = [f"- `{name}`: {why}" for name, why in IGNORED_FIELDS.items() if name in body.model_fields]
    return "A1111 fields accepted without effect:\n\n" + "\n".join(lines)


class TextToImageResponse(BaseModel):
    images: list[str] | None = Field(default=None, description="The generated images in base64 format.")
    parameters: dict
    info: str


class ImageToImageResponse(TextToImageResponse):
    pass


class ExtrasBaseRequest(_Body):
    resize_mode: Literal[0, 1] = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    codeformer_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    codeformer_weight: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    # Bounds as postprocess.extras.ExtrasOptions: out of range is a 422 here, not a 500 there.
    upscaling_resize: float = Field(default=2, gt=0, le=16, allow_inf_nan=False)
    upscaling_resize_w: int = Field(default=512, ge=1, le=16384)
    upscaling_resize_h: int = Field(default=512, ge=1, le=16384)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = ""


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str | None = None


class FileData(BaseModel):
    data: str
    name: str


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData]


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


class PNGInfoRequest(_Body):
    image: str


class PNGInfoResponse(BaseModel):
    info: str
    items: dict
    parameters: dict


class InterrogateRequest(_Body):
    image: str = Field(default="", description="Image to work on, must be a Base64 string containing the image's data.")
    model: str = Field(default="clip", description='The interrogate model used: "clip" or "deepdanbooru".')


class InterrogateResponse(BaseModel):
    caption: str | None = Field(default=None, description="The generated caption for the image.")


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict
    current_image: str | None = None
    textinfo: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class UpscalerItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class SDVaeItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_name: str
    filename: str


class RealesrganItem(BaseModel):
    name: str
    path: str | None = None
    scale: int | None = None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: str | None = None


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class EmbeddingItem(BaseModel):
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int
    vectors: int


class SkippedEmbeddingItem(EmbeddingItem):
    reason: str | None = None  # sdstudio: why it is skipped (other model family, unreadable, refused as unsafe)


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, SkippedEmbeddingItem]


class MemoryResponse(BaseModel):
    ram: dict
    cuda: dict
    models: dict | None = (
        None  # sdstudio: what the model-memory owner holds (budget, resident bytes, one row per model)
    )


class ScriptsList(BaseModel):
    txt2img: list | None = None
    img2img: list | None = None


class ScriptArg(BaseModel):
    label: str | None = None
    value: Any | None = None
    minimum: Any | None = None
    maximum: Any | None = None
    step: Any | None = None
    choices: list[Any] | None = None


class ScriptInfo(BaseModel):
    name: str | None = None
    is_alwayson: bool | None = None
    is_img2img: bool | None = None
    args: list[ScriptArg]


class ExtensionItem(BaseModel):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: int
    enabled: bool
    errors: list[str] = []  # sdstudio's: what failed when it was loaded or run (newest last)


class MergeCheckpointsRequest(_Body):
    """A1111's Checkpoint Merger (`run_modelmerger`'s parameters, its UI's defaults)."""

    model_config = ConfigDict(protected_namespaces=())

    primary_model_name: str = Field(default="", description="Model A: a checkpoint name, title or hash.")
    secondary_model_name: str | None = Field(default="", description="Model B (Weighted sum, Add difference).")
    tertiary_model_name: str | None = Field(default="", description="Model C (Add difference).")
    interp_method: Literal["No interpolation", "Weighted sum", "Add difference"] = Field(
        default="Weighted sum", description="A·(1 - M) + B·M, A + (B - C)·M, or A alone (format change, VAE bake)."
    )
    multiplier: float = Field(default=0.3, description="M; 0 gives model A.")
    save_as_half: bool = Field(default=False, description="Save float32 weights as float16.")
    custom_name: str = Field(
        default="", description="File name without extension; empty: A1111's name such as `0.7(A) + 0.3(B)`."
    )
    checkpoint_format: Literal["safetensors", "ckpt"] = "safetensors"
    config_source: int | str = Field(
        default=0, description='Copy the yaml from: 0 "A, B or C", 1 "B", 2 "C", 3 "Don\'t" (index or label).'
    )
    bake_in_vae: str | None = Field(default="None", description='A VAE from models/VAE, or "None".')
    discard_weights: str | None = Field(default="", description="Leave out weights whose name matches this regex.")
    save_metadata: bool = Field(default=True, description="Write safetensors metadata (the merge recipe).")
    add_merge_recipe: bool = Field(default=True, description="Add `sd_merge_recipe` and `sd_merge_models`.")
    copy_metadata_fields: bool = Field(default=True, description="Copy the merged models' metadata.")
    metadata_json: str | dict[str, Any] | None = Field(default="{}", description="More metadata, a JSON object.")


class MergeCheckpointsResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    info: str = Field(description='A1111\'s result line, "Checkpoint saved to PATH".')
    title: str = Field(description="The new checkpoint's title (name and short hash), as /sd-models lists it.")
    model_name: str
    filename: str
    sha256: str | None = None
    config: str | None = Field(default=None, description="The yaml copied beside it, if any.")
    is_inpainting: bool = False
    is_instruct_pix2pix: bool = False


# -- Hypernetworks (A1111's modules/api/models.py HypernetworkItem; create_hypernetwork's arguments) --


class HypernetworkItem(BaseModel):
    name: str = Field(description="The file name without `.pt`: what `<hypernet:NAME:1>` uses.")
    path: str | None = None


class CreateHypernetworkRequest(_Body):
    """A1111's `create_hypernetwork` arguments, with its Create hypernetwork form's defaults."""

    name: str = Field(description="File name: letters, digits and `._- ` are kept (A1111).")
    enable_sizes: list[int | str] = Field(
        default=[768, 320, 640, 1280], description="Context widths to make layers for (768 SD1, 1024 SD2)."
    )
    overwrite_old: bool = Field(default=False, description="Replace a hypernetwork of the same name.")
    layer_structure: str | list[float] | None = Field(
        default="1, 2, 1", description="Layer widths as multiples of the context width, from 1 to 1."
    )
    activation_func: str | None = Field(default="linear", description="linear, relu, leakyrelu, elu, swish, ...")
    weight_init: str | None = Field(
        default="Normal", description="Normal, XavierUniform, XavierNormal, KaimingUniform or KaimingNormal."
    )
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: str | list[float] | None = Field(
        default="0, 0, 0", description="Dropout after each layer (used with use_dropout), first and last 0."
    )


class CreateHypernetworkResponse(BaseModel):
    info: str = Field(description='A1111\'s result line, such as "create hypernetwork filename: PATH".')


class TrainHypernetworkRequest(_Body):
    """A1111's `train_hypernetwork` arguments (its Train tab's defaults); the ones sdstudio does not use yet are
    accepted and named in the answer's `warnings` when set."""

    hypernetwork_name: str = Field(description="A hypernetwork in models/hypernetworks (file name without .pt).")
    learn_rate: str | float = Field(default="0.00001", description="The learning rate (one number).")
    batch_size: int = 1
    gradient_step: int = Field(default=1, description="Batches per optimizer step (gradient accumulation).")
    data_root: str = Field(description="Folder of training images with .txt captions, in the data dir.")
    log_directory: str = Field(
        default="textual_inversion", description="Where the run's state goes, in the data dir: LOG_DIRECTORY/NAME."
    )
    training_width: int = 512
    training_height: int = 512
    varsize: bool = False
    steps: int = 100000
    clip_grad_mode: str | None = "disabled"
    clip_grad_value: str | float | None = "0.1"
    shuffle_tags: bool = False
    tag_drop_out: float = 0
    latent_sampling_method: str | None = "once"
    use_weight: bool = False
    create_image_every: int = 0
    save_hypernetwork_every: int = 500
    template_filename: str | None = None
    preview_from_txt2img: bool = False
    preview_prompt: str | None = ""
    preview_negative_prompt: str | None = ""
    preview_steps: int | None = 20
    preview_sampler_name: str | None = None
    preview_sampler_index: int | str | None = None
    preview_cfg_scale: float | None = 7.0
    preview_seed: int | None = -1
    preview_width: int | None = 512
    preview_height: int | None = 512


class TrainHypernetworkResponse(BaseModel):
    info: str = Field(description='A1111\'s result line, "train hypernetwork complete: filename: PATH error: None".')
    steps: int | None = Field(default=None, description="Steps the file has been trained for now.")
    losses: list[float] = Field(
        default_factory=list, description="The loss of each step so far (earlier runs' from the run's state)."
    )
    warnings: list[str] = Field(default_factory=list, description="A1111 options that were set but not used.")


class CreateEmbeddingRequest(_Body):
    """A1111's create/embedding (`create_embedding`'s parameters)."""

    name: str = Field(default="", description="Embedding name: letters, digits, '.', '_', '-' and spaces are kept.")
    num_vectors_per_token: int = Field(default=1, description="Vectors the embedding takes in a prompt (1-75).")
    overwrite_old: bool = Field(default=False, description="Replace an embedding of that name.")
    init_text: str = Field(default="*", description="Words whose token embeddings start the vectors.")


class CreateEmbeddingResponse(BaseModel):
    info: str = Field(description='A1111\'s "create embedding filename: PATH".')
    filename: str = ""


class TrainEmbeddingRequest(_Body):
    """A1111's train/embedding (`train_embedding`'s parameters, its UI's defaults).

    `data_root` and `log_directory` are folders inside the data dir (relative to it, or absolute inside it).
    """

    id_task: str | None = None
    embedding_name: str = Field(default="", description="The embedding to train (create it first).")
    learn_rate: str | float = Field(default="0.005", description="Rate or schedule: '0.005:100, 1e-5:1000, 1e-6'.")
    batch_size: int = 1
    gradient_step: int = Field(default=1, description="Batches per optimizer step (gradient accumulation).")
    data_root: str = Field(default="", description="Folder of training images (captions in same-named .txt).")
    log_directory: str = Field(default="textual_inversion", description="Logs, numbered embeddings, previews.")
    training_width: int = 512
    training_height: int = 512
    varsize: bool = Field(default=False, description="Keep each image's own size.")
    steps: int = Field(default=100000, description="The step training ends at (a run continues from the saved one).")
    clip_grad_mode: Literal["disabled", "value", "norm"] = "disabled"
    clip_grad_value: str | float = "0.1"
    shuffle_tags: bool = False
    tag_drop_out: float = 0.0
    latent_sampling_method: Literal["once", "deterministic", "random"] = "once"
    use_weight: bool = Field(default=False, description="Use the images' alpha channel as loss weight.")
    create_image_every: int = 500
    save_embedding_every: int = 500
    template_filename: str = Field(default="style_filewords.txt", description="A file of textual_inversion_templates.")
    save_image_with_stored_embedding: bool = True
    preview_from_txt2img: bool = False
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = 20
    preview_sampler_name: str | None = Field(default=None, description="Default Euler.")
    preview_sampler_index: int | str | None = Field(default=None, description="Older clients' name for the sampler.")
    preview_cfg_scale: float = 7.0
    preview_seed: int = -1
    preview_width: int = 512
    preview_height: int = 512
    save_safetensors: bool = Field(default=False, description="sdstudio: also write kohya .safetensors copies.")
    seed: int = Field(default=0, description="sdstudio: seed of the data order and noise.")


class TrainEmbeddingResponse(BaseModel):
    info: str = Field(description='A1111\'s "train embedding complete: filename: PATH error: None".')
    filename: str = ""
    step: int = 0
    interrupted: bool = False
