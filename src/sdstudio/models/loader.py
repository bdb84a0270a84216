"""Loading single-file checkpoints (original LDM/CompVis layout) into diffusers components.

Steps: read the tensors (safe unpickling for pickles), detect the architecture, take
the LDM config (NAME.yaml beside the file, else the shipped one with the sizes read from
the weights), derive the diffusers component configs and convert the weights with
diffusers' own single-file functions, build the CLIP text encoder(s) with sizes read
from the weights. Nothing touches the network: every config comes from the yaml or the
weights, and the tokenizer belongs to the prompt layer.
"""

from __future__ import annotations

import contextlib
import gc
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from sdstudio.errors import ModelLoadError
from sdstudio.models.detect import (
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    SD2_V,
    SDXL_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    Architecture,
    UnknownLayout,
    architecture_from_config,
    detect_architecture,
    inferred_ldm_config,
    known_config,
    read_ldm_config,
    text_heads,
)
from sdstudio.models.devices import auto_weights_dtype
from sdstudio.models.ldm_names import ldm_unet_module_names
from sdstudio.models.state_dict import SAFETENSORS_SUFFIX, load_state_dict, read_safetensors_header

if TYPE_CHECKING:
    # diffusers' classes from their defining modules: mypy reads the top-level
    # `diffusers.UNet2DConditionModel` as diffusers' no-torch placeholder.
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    TextEncoder = CLIPTextModel | CLIPTextModelWithProjection

_ModuleT = TypeVar("_ModuleT", bound=torch.nn.Module)


@dataclass
class LoadedCheckpoint:
    """The diffusers components of one checkpoint and what the engine needs to drive them."""

    path: Path
    architecture: Architecture
    unet: Any
    vae: Any
    text_encoder: Any | None
    text_encoder_2: Any | None
    prediction_type: str
    vae_scaling_factor: float
    scheduler_config: dict[str, Any]
    ldm_config: dict[str, Any] = field(repr=False, default_factory=dict)
    dtype: torch.dtype = torch.float32
    device: str = "cpu"  # where it runs (with model CPU offload the weights wait on the CPU)
    vae_path: Path | None = None  # an external VAE replacing the baked-in one
    vae_hash: str = ""  # its short hash, for infotext (set by whoever resolved the file)

    @property
    def vae_name(self) -> str:
        """The external VAE's file name, as A1111's infotext "VAE" field; "" for the baked-in one."""
        return self.vae_path.name if self.vae_path else ""

    @property
    def family(self) -> str:
        """The conditioning family: "sd1", "sd2", "sdxl" or "sdxl_refiner"."""
        return self.architecture.family

    @property
    def is_inpainting(self) -> bool:
        return self.architecture.inpainting

    @property
    def text_encoders(self) -> list[Any]:
        return [e for e in (self.text_encoder, self.text_encoder_2) if e is not None]


@contextlib.contextmanager
def _empty_weights() -> Iterator[None]:
    """Build modules without allocating/initialising weights that are overwritten anyway."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        yield


def _load_into(
    module: _ModuleT,
    weights: dict[str, torch.Tensor],
    what: str,
    path: Path,
    file_name: Callable[[str], str] = lambda name: name,
) -> _ModuleT:
    """Assign converted weights to a module built on the meta device; every weight must fit.

    `file_name` spells a missing weight as the file would (the error names what to look for there).
    """
    expected = set(module.state_dict().keys())
    given = {k: v for k, v in weights.items() if k in expected}
    missing = sorted(k for k in expected - set(given) if not k.endswith("position_ids"))
    if missing:
        raise ModelLoadError(
            f"{path.name}: the {what} weights are incomplete: {len(missing)} of {len(expected)} are missing"
            f" ({file_name(missing[0])}{' and more' if len(missing) > 1 else ''})"
        )
    module.load_state_dict(given, strict=False, assign=True)
    # buffers not in the file (e.g. CLIP position_ids) are recreated on the CPU
    for name, buffer in list(module.named_buffers()):
        if buffer.is_meta:
            raise ModelLoadError(f"{path.name}: the {what} has no value for {name}")
    return module


def _scheduler_config(ldm: dict[str, Any], prediction_type: str) -> dict[str, Any]:
    params = ldm.get("model", {}).get("params", {})
    return {
        "num_train_timesteps": int(params.get("timesteps", 1000)),
        "beta_start": float(params.get("linear_start", 0.00085)),
        "beta_end": float(params.get("linear_end", 0.012)),
        "beta_schedule": "scaled_linear",
        "prediction_type": prediction_type,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }


def _sdxl_time_conditioning(config: dict[str, Any], state_dict: dict[str, torch.Tensor], family: str) -> None:
    """SDXL's pooled-text + size/crop conditioning for any width.

    diffusers recognises SDXL's `label_emb` only at the standard context widths (2048,
    1280); for other sizes the time-embedding width is solved from the label_emb input:
    adm = pooled width + (6 base | 5 refiner) time ids x width.
    """
    if config.get("class_embed_type") != "projection":
        return
    adm = int(config["projection_class_embeddings_input_dim"])
    projection = next((v for k, v in state_dict.items() if k.endswith("model.text_projection")), None)
    pooled = int(projection.shape[1]) if projection is not None else 1280
    ids = 5 if family == "sdxl_refiner" else 6
    config["class_embed_type"] = None
    config["addition_embed_type"] = "text_time"
    config["addition_time_embed_dim"] = (adm - pooled) // ids


# diffusers' single-file converters (create_*_config_from_ldm, convert_*_checkpoint) carry no annotations,
# hence their `type: ignore[no-untyped-call]`s below.
def build_unet(
    ldm: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path, family: str = "sd1"
) -> UNet2DConditionModel:
    """The diffusers UNet of an LDM checkpoint."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    ddconfig = ldm["model"]["params"]["first_stage_config"]["params"]["ddconfig"]
    vae_scale = 2 ** (len(ddconfig.get("ch_mult", [1, 2, 4, 4])) - 1)
    image_size = int(ldm["model"]["params"].get("image_size", 64)) * vae_scale
    with warnings.catch_warnings():
        # diffusers marks image_size deprecated for its own from_single_file; for a config
        # built from the LDM yaml it is still what sets sample_size.
        warnings.simplefilter("ignore", FutureWarning)
        config = create_unet_diffusers_config_from_ldm(ldm, state_dict, image_size=image_size)  # type: ignore[no-untyped-call]
    if family.startswith("sdxl"):
        _sdxl_time_conditioning(config, state_dict, family)
    converted = convert_ldm_unet_checkpoint(state_dict, config)  # type: ignore[no-untyped-call]
    with _empty_weights():
        unet: UNet2DConditionModel = UNet2DConditionModel(**config)
    ldm_modules = ldm_unet_module_names(unet)

    def file_name(name: str) -> str:
        module, _, leaf = name.rpartition(".")
        return f"{UNET_PREFIX}{ldm_modules[module]}.{leaf}" if module in ldm_modules else name

    return _load_into(unet, converted, "UNet", path, file_name)


def build_vae(
    ldm: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path, scaling_factor: float
) -> AutoencoderKL:
    """The diffusers AutoencoderKL of an LDM checkpoint (keys under first_stage_model.)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, create_vae_diffusers_config_from_ldm
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    config = create_vae_diffusers_config_from_ldm(ldm, state_dict, scaling_factor=scaling_factor)  # type: ignore[no-untyped-call]
    converted = convert_ldm_vae_checkpoint(state_dict, config)  # type: ignore[no-untyped-call]
    with _empty_weights():
        vae: AutoencoderKL = AutoencoderKL(**config)
    return _load_into(vae, converted, "VAE", path)


def clip_text_config(
    weights: dict[str, torch.Tensor],
    *,
    prefix: str,
    hidden_act: str,
    heads: int | None = None,
    projection_dim: int | None = None,
) -> CLIPTextConfig:
    """A CLIPTextConfig whose sizes are read from HF-layout weights under `prefix`."""
    from transformers import CLIPTextConfig

    token = weights[prefix + "text_model.embeddings.token_embedding.weight"]
    positions = weights[prefix + "text_model.embeddings.position_embedding.weight"]
    layer_ids = {
        int(k[len(prefix) :].split(".")[3]) for k in weights if k.startswith(prefix + "text_model.encoder.layers.")
    }
    hidden = int(token.shape[1])
    intermediate = int(weights[prefix + "text_model.encoder.layers.0.mlp.fc1.weight"].shape[0])
    return CLIPTextConfig(
        vocab_size=int(token.shape[0]),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=len(layer_ids),
        num_attention_heads=heads or text_heads(hidden),
        max_position_embeddings=int(positions.shape[0]),
        hidden_act=hidden_act,
        projection_dim=projection_dim or hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407 if hidden_act == "quick_gelu" else 0,
    )


def fit_text_model_prefix(weights: dict[str, torch.Tensor], expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """HF-layout CLIP keys ("text_model.*") renamed to what this transformers version's model uses.

    transformers 5's CLIPTextModel holds its layers directly ("embeddings.*"), while files
    (and CLIPTextModelWithProjection) keep the "text_model." prefix.
    """
    if any(k.startswith("text_model.") for k in expected):
        return {
            k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v for k, v in weights.items()
        }
    return {k.removeprefix("text_model."): v for k, v in weights.items()}


def hf_text_model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CLIP text model's weights under the file layout's "text_model.*" names."""
    return {
        k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
        for k, v in model.state_dict().items()
        if not k.endswith("position_ids")
    }


def _build_clip(
    weights: dict[str, torch.Tensor],
    path: Path,
    what: str,
    *,
    hidden_act: str,
    heads: int | None,
    with_projection: bool,
) -> TextEncoder:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    projection = weights.get("text_projection.weight")
    config = clip_text_config(
        weights,
        prefix="",
        hidden_act=hidden_act,
        heads=heads,
        projection_dim=int(projection.shape[0]) if projection is not None else None,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with _empty_weights():
        model = cls(config)
    expected = model.state_dict()
    weights = fit_text_model_prefix(weights, expected)
    return _load_into(model, weights, what, path)


def _text_heads(ldm: dict[str, Any]) -> int | None:
    params = (ldm.get("model", {}).get("params", {}).get("cond_stage_config") or {}).get("params") or {}
    heads = params.get("num_attention_heads")
    return int(heads) if heads else None


def build_text_encoders(
    architecture: Architecture, ldm: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path
) -> tuple[TextEncoder | None, TextEncoder | None]:
    """(text_encoder, text_encoder_2) for the architecture; unused slots are None."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    def strip(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}

    def open_clip(prefix: str, with_projection: bool, what: str) -> TextEncoder:
        # Sizes come from the OpenCLIP weights; diffusers' converter does the renaming.
        token = state_dict[prefix + "token_embedding.weight"]
        hidden = int(token.shape[1])
        layers = {
            int(k[len(prefix) :].split(".")[2]) for k in state_dict if k.startswith(prefix + "transformer.resblocks.")
        }
        from transformers import CLIPTextConfig

        proj = state_dict.get(prefix + "text_projection")
        config = CLIPTextConfig(
            vocab_size=int(token.shape[0]),
            hidden_size=hidden,
            intermediate_size=int(state_dict[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            num_hidden_layers=len(layers),
            num_attention_heads=text_heads(hidden),
            max_position_embeddings=int(state_dict[prefix + "positional_embedding"].shape[0]),
            hidden_act="gelu",
            projection_dim=int(proj.shape[1]) if proj is not None else hidden,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=0,
        )
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        with _empty_weights():
            model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)
        converted = convert_open_clip_checkpoint(model, state_dict, prefix=prefix)  # type: ignore[no-untyped-call]
        if not with_projection:
            converted.pop("text_projection.weight", None)
        expected = model.state_dict()
        converted = fit_text_model_prefix(converted, expected)
        return _load_into(model, converted, what, path)

    family = architecture.family
    if family == "sd1":
        weights = strip(SD1_TEXT_PREFIX)
        return _build_clip(
            weights, path, "text encoder", hidden_act="quick_gelu", heads=_text_heads(ldm), with_projection=False
        ), None
    if family == "sd2":
        return open_clip(SD2_TEXT_PREFIX, False, "text encoder"), None
    if family == "sdxl":
        clip_l = strip(SDXL_PREFIX + "0.transformer.")
        text_encoder = _build_clip(
            clip_l, path, "CLIP-L text encoder", hidden_act="quick_gelu", heads=None, with_projection=False
        )
        return text_encoder, open_clip(SDXL_PREFIX + "1.model.", True, "OpenCLIP-G text encoder")
    if family == "sdxl_refiner":
        return None, open_clip(SDXL_PREFIX + "0.model.", True, "OpenCLIP-G text encoder")
    raise ModelLoadError(f"{path.name}: no text encoder loader for {architecture.name}")


def _sd2_is_v_prediction(unet: UNet2DConditionModel) -> bool:
    """A1111's test (sd_models_config.is_using_v_parameterization_for_sd2): run the UNet once."""
    with torch.no_grad():
        dtype = next(unet.parameters()).dtype
        x = torch.ones((1, unet.config["in_channels"], 8, 8), dtype=dtype) * 0.5
        context = torch.ones((1, 2, unet.config["cross_attention_dim"]), dtype=dtype) * 0.5
        out = unet(x, torch.tensor([999]), encoder_hidden_states=context).sample
        return float((out[:, :4] - x[:, :4]).mean()) < -1


def unet_parameters_in_header(path: Path) -> int:
    """How many UNet weights a single-file checkpoint holds, from its safetensors header (nothing read)."""
    header = read_safetensors_header(path)
    return sum(
        math.prod(int(size) for size in entry["shape"])
        for key, entry in header.items()
        if key.startswith(UNET_PREFIX) and isinstance(entry, dict)
    )


def _read_dtypes(
    dtype: torch.dtype | None, auto: bool, no_half_vae: bool, device: str
) -> Callable[[str], torch.dtype | None]:
    """Each weight's dtype as it is read: the model's, the VAE's fp32 where it stays so; None = as stored."""
    vae_fp32 = no_half_vae or (auto and device.startswith("cpu"))

    def dtype_for(key: str) -> torch.dtype | None:
        if vae_fp32 and key.startswith(VAE_PREFIX):
            return torch.float32
        return dtype

    return dtype_for


def load_checkpoint(
    path: str | Path,
    *,
    yaml_path: str | Path | None = None,
    device: str = "cpu",
    dtype: torch.dtype | None = torch.float32,
    vae_path: str | Path | None = None,
    no_half_vae: bool = False,
) -> LoadedCheckpoint:
    """Load a single-file checkpoint into diffusers components (offline).

    `dtype` None is precision "auto": chosen from the device and the UNet's size
    (models.devices.auto_weights_dtype), with the VAE kept fp32 on the CPU.
    """
    path = Path(path)
    auto = dtype is None
    if auto and path.suffix.lower() == SAFETENSORS_SUFFIX:  # the UNet's size is in the header: choose now
        dtype = auto_weights_dtype(device, unet_parameters_in_header(path))
    # Each tensor is read straight into the dtype its module will run in (the VAE may stay fp32), so the
    # file's copy and a converted one are never both held. A pickle under "auto" is read as stored and
    # cast once its UNet's size is known (below).
    state_dict = load_state_dict(path, float_dtype=_read_dtypes(dtype, auto, no_half_vae, device))
    detected = detect_architecture(state_dict)
    given_yaml = Path(yaml_path) if yaml_path else known_config(path)
    if given_yaml:
        ldm = read_ldm_config(given_yaml)
        architecture = architecture_from_config(ldm, detected)
    else:
        try:
            ldm = inferred_ldm_config(state_dict, detected)
        except UnknownLayout as exc:
            raise ModelLoadError(
                f"{path.name}: no {path.stem}.yaml beside it and its {exc.part} layout is not one sdstudio"
                f" can infer: {exc.reason}"
            ) from None
        architecture = detected

    params = ldm["model"]["params"]
    scaling_factor = float(params.get("scale_factor", 0.18215))
    try:
        unet = build_unet(ldm, state_dict, path, architecture.family)
        vae_state = state_dict
        if vae_path is not None:
            vae_state = {
                VAE_PREFIX + k if not k.startswith(VAE_PREFIX) else k: v for k, v in load_state_dict(vae_path).items()
            }
        vae = build_vae(ldm, vae_state, Path(vae_path) if vae_path else path, scaling_factor)
        text_encoder, text_encoder_2 = build_text_encoders(architecture, ldm, state_dict, path)
    except KeyError as exc:
        raise ModelLoadError(f"{path.name}: missing weight {exc} for a {architecture.name} checkpoint") from None
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"{path.name}: weights do not fit a {architecture.name} model ({str(exc).splitlines()[0]})"
        ) from None
    del state_dict, vae_state  # the modules hold their weights now; these would keep every tensor twice
    gc.collect()

    if architecture.family == "sd2" and not given_yaml and not architecture.inpainting and _sd2_is_v_prediction(unet):
        architecture = SD2_V
    prediction_type = architecture.prediction_type

    if dtype is None:
        dtype = auto_weights_dtype(device, sum(p.numel() for p in unet.parameters()))
    keep_vae_fp32 = no_half_vae or dtype == torch.float32 or (auto and device.startswith("cpu"))
    vae_dtype = torch.float32 if keep_vae_fp32 else dtype
    if dtype == torch.bfloat16 and device.startswith("cpu"):
        # oneDNN's bf16 convolutions run NHWC without reorders
        torch.nn.Module.to(unet, memory_format=torch.channels_last)
    for module, module_dtype in ((unet, dtype), (text_encoder, dtype), (text_encoder_2, dtype), (vae, vae_dtype)):
        if module is None:
            continue
        current = next(module.parameters())
        if current.dtype != module_dtype or current.device != torch.device(device):
            # torch's own Module.to: diffusers' ModelMixin.to only adds a warning about modules to keep in
            # fp32 when loading with from_pretrained (none here: it prints an empty list at every bf16 load)
            torch.nn.Module.to(module, device=device, dtype=module_dtype)
        module.eval().requires_grad_(False)
    return LoadedCheckpoint(
        path=path,
        architecture=architecture,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        prediction_type=prediction_type,
        vae_scaling_factor=scaling_factor,
        scheduler_config=_scheduler_config(ldm, prediction_type),
        ldm_config=ldm,
        dtype=dtype,
        device=device,
        vae_path=Path(vae_path) if vae_path else None,
    )
