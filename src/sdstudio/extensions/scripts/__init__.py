"""Scripts and extensions: what a script file imports.

    from sdstudio.extensions.scripts import Script, AlwaysVisible, Slider, process_images

    class Sharpen(Script):
        def title(self):
            return "Sharpen"

        def show(self, is_img2img):
            return AlwaysVisible

        def ui(self, is_img2img):
            return [Checkbox(label="Sharpen", value=False)]

        def postprocess_image(self, p, pp, enabled):
            if enabled:
                pp.image = pp.image.filter(ImageFilter.SHARPEN)
                p.extra_generation_params["Sharpen"] = True

The names follow A1111's modules/scripts.py, modules/processing.py and
modules/script_callbacks.py; see host.py for loading and base.py for the hooks.
"""

from sdstudio.engine.scripting import (
    CFGDenoisedParams,
    CFGDenoiserParams,
    ImageSaveParams,
    PostprocessImageArgs,
    Processed,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
    fix_seed,
    process_images,
    script_result,
    seed_of,
)
from sdstudio.extensions.scripts.base import AlwaysVisible, Script
from sdstudio.extensions.scripts.controls import (
    HTML,
    Checkbox,
    CheckboxGroup,
    Control,
    Dropdown,
    File,
    Image,
    Number,
    Radio,
    Slider,
    Textbox,
)

__all__ = [
    "AlwaysVisible",
    "CFGDenoisedParams",
    "CFGDenoiserParams",
    "Checkbox",
    "CheckboxGroup",
    "Control",
    "Dropdown",
    "File",
    "HTML",
    "Image",
    "ImageSaveParams",
    "Number",
    "PostprocessImageArgs",
    "Processed",
    "Radio",
    "Script",
    "Slider",
    "StableDiffusionProcessing",
    "StableDiffusionProcessingImg2Img",
    "StableDiffusionProcessingTxt2Img",
    "Textbox",
    "fix_seed",
    "process_images",
    "script_result",
    "seed_of",
]
