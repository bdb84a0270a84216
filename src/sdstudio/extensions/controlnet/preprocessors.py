"""ControlNet preprocessors ("modules") under sd-webui-controlnet's names, sliders and outputs.

Two tables:

* `PREPROCESSORS` — modules that need no downloaded weights, built on numpy/OpenCV:

  ====================  ================================  ============================  =============
  module                threshold_a (range, default)      threshold_b                   map size
  ====================  ================================  ============================  =============
  none                  -                                 -                             input
  invert                -                                 -                             input
  canny                 Low Threshold (1-255, 100)        High Threshold (1-255, 200)   processor_res
  threshold             Binarization Threshold (0-255,    -                             processor_res
                        127)
  blur_gaussian         Sigma (0.01-64, 9)                -                             processor_res
  scribble_xdog         XDoG Threshold (1-64, 32)         -                             processor_res
  lineart_standard      -                                 -                             processor_res
  shuffle               - (random flow from `seed`)       -                             processor_res
  tile_resample         Down Sampling Rate (1-8, 1)       -                             input / rate
  tile_colorfix         Variation (3-32, 8)               -                             input
  tile_colorfix+sharp   Variation (3-32, 8)               Sharpness (0-2, 1)            input
  t2ia_color_grid       -                                 -                             processor_res
  recolor_luminance     Gamma Correction (0.1-2, 1)       -                             input
  recolor_intensity     Gamma Correction (0.1-2, 1)       -                             input
  inpaint               -                                 -                             input (+mask)
  inpaint_only          -                                 -                             input (+mask)
  reference_only        Style Fidelity (0-1, 0.5)         -                             input, REF
  reference_adain       Style Fidelity (0-1, 0.5)         -                             input, REF
  reference_adain+attn  Style Fidelity (0-1, 0.5)         -                             input, REF
  ====================  ================================  ============================  =============

  REF marks the reference modes (`Preprocessor.reference`, model_free in module_detail).

  "processor_res" means the short side is scaled to processor_res (sd-webui-controlnet's
  resize_image_with_pad: cubic up / area down, edge-padded to a multiple of 64 while the filter runs,
  the pad cut off after). Modules marked "input" keep the input size, as sd-webui-controlnet's do; the
  unit resizes every map to the generation size afterwards. Reference modules need no ControlNet
  model: the "map" is the image itself, which the reference attention/AdaIN hooks use.

  Inpaint mask, uint8 form: `inpaint`/`inpaint_only` given a mask (the `mask` argument, white =
  repaint, or the image's alpha channel as sd-webui-controlnet takes it) return an RGBA map: RGB is
  the image, alpha is 255 on masked pixels and 0 elsewhere (sd-webui-controlnet's own RGBA feed).
  `control_values` turns such a map into the float map the ControlNet reads: RGB / 255 with
  masked pixels set to -1, as sd-webui-controlnet's inpaint control does.

* `NETWORK_PREPROCESSORS` — modules that run a network (depth, pose, line art, segmentation),
  built from the `_NETWORK_MODULES` table (module -> weight files, sliders after Resolution). The
  files are sd-webui-controlnet's annotator files, relative to its annotator folder
  (`extensions/sd-webui-controlnet/annotator/downloads/<subdir>/<file>`). A module is listed only
  when its files exist; running one whose file is missing raises NotFound naming the file, and
  running one whose files exist raises NotImplementedYet (sdstudio has no network for it yet).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from sdstudio.errors import InvalidRequest, NotFound, NotImplementedYet

ANNOTATOR_DOWNLOADS = Path("extensions/sd-webui-controlnet/annotator/downloads")

Array = np.ndarray[Any, Any]
RunFunction = Callable[[Array, int, float, float], Array]


@dataclass(frozen=True)
class SliderSpec:
    """One slider of a module as sd-webui-controlnet's module_detail lists it."""

    name: str
    value: float
    minimum: float
    maximum: float
    step: float = 0.01

    def api_json(self) -> dict[str, Any]:
        """The slider in sd-webui-controlnet's API shape."""
        return {"name": self.name, "value": self.value, "min": self.minimum, "max": self.maximum, "step": self.step}


RESOLUTION = SliderSpec("Resolution", 512, 64, 2048, 8)
# Above the slider's 2048 because pixel perfect asks for the generation's own short side.
MAX_PROCESSOR_RES = 8192


@dataclass(frozen=True)
class Preprocessor:
    """A module: its run function, its sliders (Resolution first when shown) and the weight files it needs."""

    name: str
    run: RunFunction
    sliders: tuple[SliderSpec, ...]
    weight_files: tuple[str, ...] = ()
    model_free: bool = False
    reference: bool = False
    accepts_mask: bool = False
    run_seeded: Callable[[Array, int, np.random.Generator], Array] | None = None

    @property
    def threshold_sliders(self) -> tuple[SliderSpec, ...]:
        """The sliders threshold_a and threshold_b set, in that order."""
        return tuple(s for s in self.sliders if s.name != RESOLUTION.name)

    def threshold_default(self, index: int) -> float:
        """The default of threshold_a (index 0) or threshold_b (index 1); 0 where the module has none."""
        sliders = self.threshold_sliders
        return float(sliders[index].value) if index < len(sliders) else 0.0


# --- image helpers -------------------------------------------------------------------------


def to_rgb_array(image: Image.Image) -> Array:
    """HxWx3 uint8 RGB; transparency is composited over white as sd-webui-controlnet's HWC3 does."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA")).astype(np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        return (rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)
    return np.asarray(image.convert("RGB")).copy()


def _gray_to_rgb(gray: Array) -> Array:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _resize_short_side(image: Array, resolution: int) -> Array:
    height, width = image.shape[:2]
    scale = float(resolution) / float(min(height, width))
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    size = (int(np.round(width * scale)), int(np.round(height * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=interpolation))


def _on_resized(image: Array, resolution: int, apply: Callable[[Array], Array]) -> Array:
    """Run `apply` on the image scaled to `resolution` and edge-padded to a multiple of 64, then cut the pad."""
    resized = _resize_short_side(image, resolution)
    height, width = resized.shape[:2]
    pad_h, pad_w = -height % 64, -width % 64
    padded = np.pad(resized, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge")
    result = apply(np.ascontiguousarray(padded))
    if result.ndim == 2:
        result = _gray_to_rgb(result)
    return np.ascontiguousarray(result[:height, :width])


# --- modules that need no weights ----------------------------------------------------------


def _identity(image: Array, resolution: int, a: float, b: float) -> Array:
    return image


def _invert(image: Array, resolution: int, a: float, b: float) -> Array:
    return 255 - image


def _canny(image: Array, resolution: int, low: float, high: float) -> Array:
    return _on_resized(image, resolution, lambda x: cv2.Canny(x, int(low), int(high)))


def _threshold(image: Array, resolution: int, level: float, b: float) -> Array:
    def binarize(x: Array) -> Array:
        return np.where(np.min(x, axis=2) > level, 255, 0).astype(np.uint8)

    return _on_resized(image, resolution, binarize)


def _blur_gaussian(image: Array, resolution: int, sigma: float, b: float) -> Array:
    # sd-webui-controlnet cuts the pad before blurring, so borders blur against themselves.
    resized = _on_resized(image, resolution, lambda x: x)
    return np.asarray(cv2.GaussianBlur(resized, (0, 0), max(float(sigma), 0.01)))


def _scribble_xdog(image: Array, resolution: int, level: float, b: float) -> Array:
    def xdog(x: Array) -> Array:
        fine = cv2.GaussianBlur(x.astype(np.float32), (0, 0), 0.5)
        coarse = cv2.GaussianBlur(x.astype(np.float32), (0, 0), 5.0)
        strength = np.min(coarse - fine, axis=2).clip(0, 255)
        # sd-webui-controlnet doubles this in uint8, which wraps the strongest lines back under the
        # threshold; doubled without wrapping here so strong lines stay drawn.
        return np.where(2 * strength > level, 255, 0).astype(np.uint8)

    return _on_resized(image, resolution, xdog)


def _lineart_standard(image: Array, resolution: int, a: float, b: float) -> Array:
    def lines(x: Array) -> Array:
        pixels = x.astype(np.float32)
        blurred = cv2.GaussianBlur(pixels, (0, 0), 6.0)
        intensity = np.min(blurred - pixels, axis=2).clip(0, 255)
        strong = intensity[intensity > 8]
        intensity /= max(16.0, float(np.median(strong)) if strong.size else 0.0)
        return (intensity * 127).clip(0, 255).astype(np.uint8)

    return _on_resized(image, resolution, lines)


def _noise_disk(height: int, width: int, period: int, rng: np.random.Generator) -> Array:
    """Smooth noise in [0, 1]: random values on a coarse grid, cubic-interpolated (a random flow field)."""
    coarse = rng.uniform(0.0, 1.0, size=(height // period + 2, width // period + 2)).astype(np.float32)
    noise = cv2.resize(coarse, (width + 2 * period, height + 2 * period), interpolation=cv2.INTER_CUBIC)
    noise = noise[period : period + height, period : period + width]
    noise = noise - noise.min()
    return np.asarray(noise / max(float(noise.max()), 1e-8))


def _shuffle_seeded(image: Array, resolution: int, rng: np.random.Generator) -> Array:
    resized = _on_resized(image, resolution, lambda x: x)
    height, width = resized.shape[:2]
    flow_x = _noise_disk(height, width, 256, rng) * float(width - 1)
    flow_y = _noise_disk(height, width, 256, rng) * float(height - 1)
    return np.asarray(cv2.remap(resized, flow_x, flow_y, cv2.INTER_LINEAR))


def _shuffle(image: Array, resolution: int, a: float, b: float) -> Array:
    return _shuffle_seeded(image, resolution, np.random.default_rng())


def _tile_resample(image: Array, resolution: int, rate: float, b: float) -> Array:
    if rate < 1.1:
        return image
    height, width = image.shape[:2]
    size = (int(width / rate), int(height / rate))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def _color_grid(image: Array, resolution: int, a: float, b: float) -> Array:
    height, width = image.shape[:2]
    if height < width:
        size = (int(round(width / height * resolution)), resolution)
    else:
        size = (resolution, int(round(height / width * resolution)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    cells = cv2.resize(resized, (max(size[0] // 64, 1), max(size[1] // 64, 1)), interpolation=cv2.INTER_CUBIC)
    return np.asarray(cv2.resize(cells, size, interpolation=cv2.INTER_NEAREST))


def _gamma(channel: Array, gamma: float) -> Array:
    corrected = (channel.astype(np.float32) / 255.0) ** gamma
    return _gray_to_rgb((corrected * 255.0).clip(0, 255).astype(np.uint8))


def _recolor_luminance(image: Array, resolution: int, gamma: float, b: float) -> Array:
    # sd-webui-controlnet converts the RGB array with OpenCV's BGR2LAB; kept so maps match its own.
    return _gamma(cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[:, :, 0], gamma)


def _recolor_intensity(image: Array, resolution: int, gamma: float, b: float) -> Array:
    return _gamma(cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[:, :, 2], gamma)


def _sliders(*specs: tuple[str, float, float, float, float]) -> tuple[SliderSpec, ...]:
    return tuple(SliderSpec(*spec) for spec in specs)


_VARIATION = ("Variation", 8.0, 3.0, 32.0, 1.0)
_STYLE_FIDELITY = ("Style Fidelity (only for Balanced mode)", 0.5, 0.0, 1.0, 0.01)
_GAMMA = ("Gamma Correction", 1.0, 0.1, 2.0, 0.001)


def _model_free_table() -> dict[str, Preprocessor]:
    resolution = (RESOLUTION,)
    entries = [
        Preprocessor("none", _identity, resolution),
        Preprocessor("invert", _invert, ()),
        Preprocessor(
            "canny",
            _canny,
            resolution + _sliders(("Low Threshold", 100, 1, 255, 1), ("High Threshold", 200, 1, 255, 1)),
        ),
        Preprocessor("threshold", _threshold, resolution + _sliders(("Binarization Threshold", 127, 0, 255, 0.01))),
        Preprocessor("blur_gaussian", _blur_gaussian, resolution + _sliders(("Sigma", 9.0, 0.01, 64.0, 0.01))),
        Preprocessor("scribble_xdog", _scribble_xdog, resolution + _sliders(("XDoG Threshold", 32, 1, 64, 0.01))),
        Preprocessor("lineart_standard", _lineart_standard, ()),
        Preprocessor("shuffle", _shuffle, (), run_seeded=_shuffle_seeded),
        Preprocessor("tile_resample", _tile_resample, _sliders(("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01))),
        # The colour fix itself happens while sampling; the map is the image.
        Preprocessor("tile_colorfix", _identity, _sliders(_VARIATION)),
        Preprocessor("tile_colorfix+sharp", _identity, _sliders(_VARIATION, ("Sharpness", 1.0, 0.0, 2.0, 0.01))),
        Preprocessor("t2ia_color_grid", _color_grid, resolution),
        Preprocessor("recolor_luminance", _recolor_luminance, _sliders(_GAMMA)),
        Preprocessor("recolor_intensity", _recolor_intensity, _sliders(_GAMMA)),
        Preprocessor("inpaint", _identity, (), accepts_mask=True),
        Preprocessor("inpaint_only", _identity, (), accepts_mask=True),
    ]
    entries += [
        Preprocessor(name, _identity, _sliders(_STYLE_FIDELITY), model_free=True, reference=True)
        for name in ("reference_only", "reference_adain", "reference_adain+attn")
    ]
    return {entry.name: entry for entry in entries}


PREPROCESSORS: dict[str, Preprocessor] = _model_free_table()


# --- modules that need a network -----------------------------------------------------------


def _needs_network(name: str) -> RunFunction:
    def run(image: Array, resolution: int, a: float, b: float) -> Array:
        raise NotImplementedYet(f"ControlNet preprocessor {name!r} runs a network that sdstudio cannot run yet")

    return run


_MIDAS = ("midas/dpt_hybrid-midas-501f0c75.pt",)
_LERES = ("leres/res101.pth",)
_OPENPOSE = ("openpose/body_pose_model.pth",)
_OPENPOSE_HAND = ("openpose/hand_pose_model.pth",)
_OPENPOSE_FACE = ("openpose/facenet.pth",)
_HED = ("hed/ControlNetHED.pth",)
_PIDINET = ("pidinet/table5_pidinet.pth",)
_LERES_REMOVE = (("Remove Near %", 0, 0, 100, 0.1), ("Remove Background %", 0, 0, 100, 0.1))

# name -> (weight files under the annotator folder, sliders after Resolution)
_NETWORK_MODULES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, float, float, float, float], ...]]] = {
    "depth_midas": (_MIDAS, ()),
    "normal_midas": (_MIDAS, (("Normal Background Threshold", 0.4, 0.0, 1.0, 0.01),)),
    "depth_leres": (_LERES, _LERES_REMOVE),
    "depth_leres++": (_LERES + ("leres/latest_net_G.pth",), _LERES_REMOVE),
    "depth_zoe": (("zoedepth/ZoeD_M12_N.pt",), ()),
    "normal_bae": (("normal_bae/scannet.pt",), ()),
    "openpose": (_OPENPOSE, ()),
    "openpose_hand": (_OPENPOSE + _OPENPOSE_HAND, ()),
    "openpose_face": (_OPENPOSE + _OPENPOSE_FACE, ()),
    "openpose_faceonly": (_OPENPOSE_FACE, ()),
    "openpose_full": (_OPENPOSE + _OPENPOSE_HAND + _OPENPOSE_FACE, ()),
    "dw_openpose_full": (("openpose/yolox_l.onnx", "openpose/dw-ll_ucoco_384.onnx"), ()),
    "lineart_realistic": (("lineart/sk_model.pth",), ()),
    "lineart_coarse": (("lineart/sk_model2.pth",), ()),
    "lineart_anime": (("lineart_anime/netG.pth",), ()),
    "lineart_anime_denoise": (("manga_line/erika.pth",), ()),
    "softedge_hed": (_HED, ()),
    "softedge_hedsafe": (_HED, ()),
    "scribble_hed": (_HED, ()),
    "softedge_pidinet": (_PIDINET, ()),
    "softedge_pidisafe": (_PIDINET, ()),
    "scribble_pidinet": (_PIDINET, ()),
    "t2ia_sketch_pidi": (_PIDINET, ()),
    "mlsd": (
        ("mlsd/mlsd_large_512_fp32.pth",),
        (("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01), ("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)),
    ),
    "seg_ofade20k": (("oneformer/250_16_swin_l_oneformer_ade20k_160k.pth",), ()),
    "seg_ofcoco": (("oneformer/150_16_swin_l_oneformer_coco_100ep.pth",), ()),
    "seg_ufade20k": (("uniformer/upernet_global_small.pth",), ()),
    "seg_anime_face": (("anime_face_segment/UNet.pth",), ()),
}

NETWORK_PREPROCESSORS: dict[str, Preprocessor] = {
    name: Preprocessor(name, _needs_network(name), (RESOLUTION,) + _sliders(*extra), weight_files=files)
    for name, (files, extra) in _NETWORK_MODULES.items()
}

# sd-webui-controlnet's other spellings (internal keys and UI labels) that clients send as `module`.
MODULE_ALIASES: dict[str, str] = {
    "inpaint_global_harmonious": "inpaint",
    "invert (from white bg & black line)": "invert",
    "lineart_standard (from white bg & black line)": "lineart_standard",
    "color": "t2ia_color_grid",
    "depth": "depth_midas",
    "normal_map": "normal_midas",
    "lineart": "lineart_realistic",
    "hed": "softedge_hed",
    "hed_safe": "softedge_hedsafe",
    "pidinet": "softedge_pidinet",
    "pidinet_safe": "softedge_pidisafe",
    "pidinet_scribble": "scribble_pidinet",
    "pidinet_sketch": "t2ia_sketch_pidi",
    "oneformer_ade20k": "seg_ofade20k",
    "oneformer_coco": "seg_ofcoco",
    "segmentation": "seg_ufade20k",
    "anime_face_segment": "seg_anime_face",
}


# --- lookup, listing and running -----------------------------------------------------------


def _weight_path(models_dir: Path | None, relative: str) -> Path | None:
    """The weight file under `models_dir` (the annotator folder itself, or a data dir holding it)."""
    if models_dir is None:
        return None
    for base in (models_dir, models_dir / ANNOTATOR_DOWNLOADS):
        if (base / relative).is_file():
            return base / relative
    return None


def _missing_weights(module: Preprocessor, models_dir: Path | None) -> list[str]:
    return [name for name in module.weight_files if _weight_path(models_dir, name) is None]


def find_preprocessor(name: str) -> Preprocessor:
    """The module called `name` (or one of sd-webui-controlnet's other spellings); NotFound naming it."""
    key = MODULE_ALIASES.get(name, name)
    found = PREPROCESSORS.get(key) or NETWORK_PREPROCESSORS.get(key)
    if found is None:
        raise NotFound(f"ControlNet preprocessor (module) not found: {name!r}")
    return found


def module_list(models_dir: Path | None) -> list[str]:
    """Module names usable now: "none" first, then the others by name; network ones only with their files."""
    usable = [name for name in NETWORK_PREPROCESSORS if not _missing_weights(NETWORK_PREPROCESSORS[name], models_dir)]
    others = sorted([name for name in PREPROCESSORS if name != "none"] + usable)
    return ["none", *others]


def module_detail(models_dir: Path | None) -> dict[str, Any]:
    """sd-webui-controlnet's /controlnet/module_list?module_detail=true answer."""
    names = module_list(models_dir)
    detail = {
        name: {
            "model_free": find_preprocessor(name).model_free,
            "sliders": [slider.api_json() for slider in find_preprocessor(name).sliders],
        }
        for name in names
    }
    return {"module_list": names, "module_detail": detail}


def _mask_array(image: Image.Image, mask: Image.Image | None) -> Array | None:
    """The inpaint mask as HxW bool (True = repaint), from `mask` or else the image's alpha channel."""
    if mask is not None:
        gray = np.asarray(mask.convert("L").resize(image.size, Image.Resampling.NEAREST))
        return np.asarray(gray > 127)
    if image.mode == "RGBA":
        alpha = np.asarray(image)[:, :, 3]
        # An alpha channel that is all opaque or all clear carries no mask (sd-webui-controlnet's rule).
        if (alpha <= 5).all() or (alpha >= 250).all():
            return None
        return np.asarray(alpha > 127)
    return None


def run_preprocessor(
    name: str,
    image: Image.Image,
    processor_res: int = 512,
    threshold_a: float | None = None,
    threshold_b: float | None = None,
    *,
    models_dir: Path | None = None,
    mask: Image.Image | None = None,
    seed: int | None = None,
) -> Image.Image:
    """Run module `name` on `image` and return its control map (None thresholds = the module's defaults)."""
    module = find_preprocessor(name)
    missing = _missing_weights(module, models_dir)
    if missing:
        raise NotFound(
            f"ControlNet preprocessor {name!r} needs the weight file {ANNOTATOR_DOWNLOADS / missing[0]}, "
            "which is not there"
        )
    a = module.threshold_default(0) if threshold_a is None or threshold_a < 0 else float(threshold_a)
    b = module.threshold_default(1) if threshold_b is None or threshold_b < 0 else float(threshold_b)
    if processor_res > MAX_PROCESSOR_RES:
        raise InvalidRequest("processor_res", f"must be at most {MAX_PROCESSOR_RES}, got {processor_res}")
    resolution = RESOLUTION.value if processor_res < 64 else processor_res
    if module.accepts_mask:
        inpaint_mask = _mask_array(image, mask)
        pixels = np.asarray(image.convert("RGB")).copy()
        if inpaint_mask is None:
            return Image.fromarray(pixels)
        alpha = np.where(inpaint_mask, 255, 0).astype(np.uint8)
        return Image.fromarray(np.concatenate([pixels, alpha[:, :, None]], axis=2), mode="RGBA")
    pixels = to_rgb_array(image)
    if module.run_seeded is not None and seed is not None:
        result = module.run_seeded(pixels, int(resolution), np.random.default_rng(seed))
    else:
        result = module.run(pixels, int(resolution), a, b)
    return Image.fromarray(np.ascontiguousarray(result.astype(np.uint8)), mode="RGB")


def control_values(control_map: Image.Image) -> Array:
    """The float HxWx3 map a ControlNet reads: RGB / 255, with inpaint-masked pixels (alpha > 127) at -1."""
    rgba = np.asarray(control_map if control_map.mode == "RGBA" else control_map.convert("RGB"))
    values = rgba[:, :, :3].astype(np.float32) / 255.0
    if rgba.shape[2] == 4:
        values[rgba[:, :, 3] > 127] = -1.0
    return values
