"""An always-on script using every hook and callback, recording them (tests/extensions/test_scripts_contract.py)."""

from PIL import Image

from sdstudio.extensions.scripts import AlwaysVisible, Checkbox, Script, Textbox

EVENTS = []  # (event, details) in the order they happened; the test reads it through the script instance


def register_callbacks(callbacks):
    callbacks.on_app_started(lambda app: EVENTS.append(("app_started", type(app).__name__)))
    callbacks.on_model_loaded(lambda model: EVENTS.append(("model_loaded", model.name)))
    callbacks.on_cfg_denoiser(lambda params: EVENTS.append(("cfg_denoiser", params.sampling_step)))
    callbacks.on_cfg_denoised(lambda params: EVENTS.append(("cfg_denoised", params.total_sampling_steps)))

    def before_saved(params):
        EVENTS.append(("before_image_saved", params.p.seeds if params.p is not None else None))
        if "parameters" in params.pnginfo:
            params.pnginfo["parameters"] += ", Probe saved: yes"

    callbacks.on_before_image_saved(before_saved)
    callbacks.on_image_saved(lambda params: EVENTS.append(("image_saved", params.filename)))
    callbacks.on_infotext_pasted(lambda text, params: EVENTS.append(("infotext_pasted", text)))
    callbacks.on_script_unloaded(lambda: EVENTS.append(("script_unloaded", None)))
    callbacks.on_ui_settings(
        lambda options: options.add_option("probe_strength", 0.5, "Probe strength", section="Probe", choices=())
    )


class Probe(Script):
    events = EVENTS
    infotext_fields = [(0, "Probe"), (1, "Probe tag")]  # pasting these keys fills the arguments

    def title(self):
        return "Probe"

    def show(self, is_img2img):
        return AlwaysVisible

    def ui(self, is_img2img):
        return [Checkbox(label="Enabled", value=False), Textbox(label="Tag", value="default-tag")]

    def setup(self, p, enabled, tag):
        EVENTS.append(("setup", (enabled, tag)))

    def before_process(self, p, enabled, tag):
        EVENTS.append(("before_process", (p.prompt, p.steps)))
        if enabled:
            p.steps = 3  # a field changed before processing takes effect

    def process(self, p, enabled, tag):
        EVENTS.append(("process", (list(p.all_prompts), list(p.all_seeds))))
        if enabled:
            p.all_prompts = [f"{prompt}, {tag} {i}" for i, prompt in enumerate(p.all_prompts)]
            p.extra_generation_params.update({"Probe": True, "Probe tag": tag})

    def before_process_batch(self, p, enabled, tag, batch_number, prompts, seeds, subseeds):
        EVENTS.append(("before_process_batch", (batch_number, list(prompts), list(seeds))))

    def process_batch(self, p, enabled, tag, batch_number, prompts, seeds, subseeds):
        EVENTS.append(("process_batch", batch_number))

    def postprocess_batch(self, p, enabled, tag, images, batch_number):
        EVENTS.append(
            ("postprocess_batch", (batch_number, tuple(images.shape), float(images.min()), float(images.max())))
        )

    def postprocess_image(self, p, pp, enabled, tag):
        EVENTS.append(("postprocess_image", p.batch_index))
        if enabled:
            pp.image = Image.new("RGB", pp.image.size, (255, 0, 255))

    def postprocess(self, p, processed, enabled, tag):
        EVENTS.append(("postprocess", len(processed.images)))
