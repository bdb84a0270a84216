"""End-to-end generation through GenerationService with a tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from tiny_models import tiny_generation_model, tiny_vae

from sdstudio.config import Settings, SettingsStore
from sdstudio.engine.infotext import request_fields_from_infotext
from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest
from sdstudio.engine.saving import read_infotext
from sdstudio.engine.service import GenerationControl, GenerationService
from sdstudio.errors import InvalidRequest

SMALL = dict(width=64, height=64, steps=3)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_same_request_twice_gives_identical_images_and_other_seed_differs(service):
    request = Txt2ImgRequest(prompt="a red cube", seed=42, sampler_name="Euler a", **SMALL)
    first = service.txt2img(request)
    second = service.txt2img(request)
    other = service.txt2img(Txt2ImgRequest(prompt="a red cube", seed=43, sampler_name="Euler a", **SMALL))
    assert np.array_equal(_pixels(first.images[0]), _pixels(second.images[0]))
    assert not np.array_equal(_pixels(first.images[0]), _pixels(other.images[0]))
    assert first.seeds == [42]


def test_batch_images_match_single_runs_of_their_seeds(service):
    batch = service.txt2img(
        Txt2ImgRequest(prompt="p", seed=10, batch_size=2, sampler_name="DPM++ 2M SDE", do_not_save_grid=True, **SMALL)
    )
    alone = service.txt2img(Txt2ImgRequest(prompt="p", seed=11, sampler_name="DPM++ 2M SDE", **SMALL))
    assert batch.seeds == [10, 11]
    assert np.abs(_pixels(batch.images[1]) - _pixels(alone.images[0])).max() <= 1


def test_files_saved_as_a1111_with_infotext_and_grid(service, paths):
    result = service.txt2img(Txt2ImgRequest(prompt="a: cat/dog", seed=7, batch_size=2, n_iter=2, **SMALL))
    assert len(result.saved_paths) == 4 and result.grid_path is not None
    names = [p.name for p in result.saved_paths]
    assert names[0] == "00000-7-a_ cat_dog.png" and names[3].startswith("00003-10-")
    assert result.saved_paths[0].parent.parent == paths.root / "outputs" / "txt2img-images"
    assert result.grid_path.parent.parent == paths.root / "outputs" / "txt2img-grids"
    assert result.index_of_first_image == 1 and result.images[0].size == (128, 128)
    with Image.open(result.saved_paths[2]) as saved:
        assert read_infotext(saved) == result.infotexts[2]
    assert "Seed: 9," in result.infotexts[2] and result.seeds == [7, 8, 9, 10]
    assert result.info["infotexts"][1:] == result.infotexts and len(result.info["infotexts"]) == 5


def test_infotext_round_trips_to_the_same_request(service):
    request = Txt2ImgRequest(
        prompt="a castle, sunset\nsecond line",
        negative_prompt="blurry: low",
        seed=5,
        subseed=9,
        subseed_strength=0.25,
        sampler_name="DPM++ SDE",
        scheduler="Exponential",
        cfg_scale=4.5,
        enable_hr=True,
        hr_scale=1.5,
        hr_upscaler="Latent (nearest)",
        hr_second_pass_steps=2,
        denoising_strength=0.6,
        **SMALL,
    )
    result = service.txt2img(request)
    with Image.open(result.saved_paths[0]) as saved:
        fields = request_fields_from_infotext(read_infotext(saved))
    parsed = Txt2ImgRequest(**fields)
    assert parsed.model_dump() == request.model_dump()


HIRES = dict(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.6)


def test_hires_schedule_type_alone_changes_the_hires_pass_and_is_written(service):
    same = service.txt2img(Txt2ImgRequest(seed=3, sampler_name="Euler", **HIRES, **SMALL))
    exponential = service.txt2img(
        Txt2ImgRequest(seed=3, sampler_name="Euler", hr_scheduler="Exponential", **HIRES, **SMALL)
    )
    assert not np.array_equal(_pixels(same.images[0]), _pixels(exponential.images[0]))
    assert "Hires schedule type: Exponential" in exponential.infotexts[0]
    assert "Hires sampler" not in exponential.infotexts[0]
    with pytest.raises(InvalidRequest) as info:
        Txt2ImgRequest(hr_scheduler="Sideways", **HIRES, **SMALL)
    assert info.value.field == "hr_scheduler"


def test_options_at_their_defaults_are_left_out_of_the_infotext(service):
    result = service.txt2img(
        Txt2ImgRequest(seed=3, sampler_name="Euler", cfg_scale=6.0, hr_cfg=6.0, s_noise=1.0, **HIRES, **SMALL)
    )
    for key in ("Sigma", "Hires CFG Scale", "Hires sampler", "Hires schedule type", "TI hashes", "Noise multiplier"):
        assert key not in result.infotexts[0]
    # A sampler that does not read an option leaves it out too (DPM++ 2M has no churn and no fresh noise).
    plain = service.txt2img(Txt2ImgRequest(seed=3, s_churn=0.5, s_noise=0.9, **SMALL))
    assert "Sigma" not in plain.infotexts[0]


def test_img2img_noise_multiplier_zero_and_the_setting_are_honoured(service):
    init = Image.linear_gradient("L").resize((64, 64)).convert("RGB")

    def run(**fields):
        request = Img2ImgRequest(init_images=[init], seed=2, denoising_strength=0.7, **fields, **SMALL)
        return service.img2img(request)

    default, zero, half = run(), run(initial_noise_multiplier=0.0), run(initial_noise_multiplier=0.5)
    assert not np.array_equal(_pixels(default.images[0]), _pixels(zero.images[0]))
    assert "Noise multiplier: 0," in zero.infotexts[0] and "Noise multiplier" not in default.infotexts[0]
    from_setting = run(override_settings={"initial_noise_multiplier": 0.5})
    assert np.array_equal(_pixels(from_setting.images[0]), _pixels(half.images[0]))
    assert "Noise multiplier: 0.5" in from_setting.infotexts[0]


def test_hires_fix_doubles_the_size(service):
    for upscaler in ("Latent", "Lanczos", "Nearest"):
        result = service.txt2img(
            Txt2ImgRequest(
                prompt="x",
                seed=1,
                enable_hr=True,
                hr_upscaler=upscaler,
                denoising_strength=0.5,
                hr_second_pass_steps=2,
                **SMALL,
            )
        )
        assert result.images[0].size == (128, 128), upscaler
        assert "Hires upscale: 2" in result.infotexts[0]


def test_img2img_strength_zero_returns_the_input_through_the_vae(service, tiny_model):
    init = Image.radial_gradient("L").resize((64, 64)).convert("RGB")
    result = service.img2img(Img2ImgRequest(init_images=[init], denoising_strength=0.0, seed=1, **SMALL))
    import torch

    from sdstudio.engine.images import pil_to_tensor, tensor_to_pil

    with torch.no_grad():
        round_trip = tensor_to_pil(tiny_model.decode_latents(tiny_model.encode_images(pil_to_tensor([init]))))[0]
    assert np.abs(_pixels(result.images[0]) - _pixels(round_trip)).max() <= 1


def test_img2img_strength_changes_the_image(service):
    init = Image.new("RGB", (64, 64), (120, 60, 30))
    low = service.img2img(Img2ImgRequest(init_images=[init], denoising_strength=0.3, seed=1, **SMALL))
    high = service.img2img(Img2ImgRequest(init_images=[init], denoising_strength=0.9, seed=1, **SMALL))
    assert not np.array_equal(_pixels(low.images[0]), _pixels(high.images[0]))
    assert "Denoising strength: 0.3" in low.infotexts[0]


def _square_mask(size=64, box=(16, 16, 48, 48)) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
@pytest.mark.parametrize("full_res", [False, True])
def test_inpainting_changes_only_the_masked_region(service, fill, full_res):
    init = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    mask = _square_mask()
    result = service.img2img(
        Img2ImgRequest(
            init_images=[init],
            mask=mask,
            mask_blur=2,
            inpainting_fill=fill,
            inpaint_full_res=full_res,
            denoising_strength=0.9,
            seed=3,
            **SMALL,
        )
    )
    out, src = _pixels(result.images[0]), _pixels(init)
    outside = np.ones((64, 64), dtype=bool)
    outside[10:55, 10:55] = False  # mask grown by the blur radius
    assert np.abs(out - src)[outside].max() <= 2
    assert np.abs(out - src)[20:44, 20:44].mean() > 2


def test_inpainting_checkpoint_with_nine_channels(paths, tiny_inpainting_model):
    service = GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: tiny_inpainting_model)
    init = Image.new("RGB", (64, 64), (200, 200, 200))
    result = service.img2img(Img2ImgRequest(init_images=[init], mask=_square_mask(), seed=2, **SMALL))
    txt = service.txt2img(Txt2ImgRequest(seed=2, **SMALL))
    assert result.images[0].size == (64, 64) and txt.images[0].size == (64, 64)
    assert result.info["is_using_inpainting_conditioning"] is True


def test_progress_events_and_previews(service):
    events = []
    service.txt2img(
        Txt2ImgRequest(seed=1, n_iter=2, **SMALL), GenerationControl(on_progress=events.append, preview_every=1)
    )
    assert [(e.job_no, e.step) for e in events] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert all(e.preview is not None for e in events) and events[-1].eta_seconds == 0


def test_interrupt_stops_and_keeps_what_is_finished(service):
    control = GenerationControl()

    def on_progress(event):
        if event.job_no == 1 and event.step == 1:
            control.interrupt()

    result = service.txt2img(
        Txt2ImgRequest(seed=1, n_iter=4, do_not_save_grid=True, **SMALL),
        GenerationControl(cancel=control.cancel, on_progress=on_progress),
    )
    assert result.interrupted
    assert result.seeds == [1, 2]  # the finished image and the partial one, as A1111
    assert len(result.saved_paths) == 2


def test_skip_moves_to_the_next_image(service):
    control = GenerationControl()
    seen = []

    def on_progress(event):
        seen.append((event.job_no, event.step))
        if event.job_no == 0 and event.step == 1:
            control.skip()

    result = service.txt2img(
        Txt2ImgRequest(seed=1, n_iter=2, do_not_save_grid=True, **SMALL),
        GenerationControl(cancel=control.cancel, on_progress=on_progress),
    )
    assert not result.interrupted and result.seeds == [1, 2]
    assert (0, 2) not in seen and (1, 3) in seen


def test_override_settings_are_validated(service):
    with pytest.raises(InvalidRequest) as info:
        service.txt2img(Txt2ImgRequest(override_settings={"CLIP_stop_at_last_layers": "many"}, **SMALL))
    assert info.value.field == "override_settings"


def test_tiling_makes_edges_wrap_and_restores_the_model(service, tiny_model):
    import torch

    plain = service.txt2img(Txt2ImgRequest(seed=4, **SMALL))
    tiled = service.txt2img(Txt2ImgRequest(seed=4, tiling=True, **SMALL))
    assert "Tiling: True" in tiled.infotexts[0]
    assert not np.array_equal(_pixels(plain.images[0]), _pixels(tiled.images[0]))
    assert all(m.padding_mode == "zeros" for m in tiny_model.unet.modules() if isinstance(m, torch.nn.Conv2d))
    again = service.txt2img(Txt2ImgRequest(seed=4, **SMALL))
    assert np.array_equal(_pixels(plain.images[0]), _pixels(again.images[0]))


def test_failing_face_restoration_keeps_the_image_with_a_warning(paths, tiny_model):
    from sdstudio.errors import ModelLoadError

    def broken(image, settings):
        raise ModelLoadError("CodeFormer: no model file in models/Codeformer")

    service = GenerationService(
        SettingsStore(paths, Settings()), paths, lambda name, settings: tiny_model, restore_faces=broken
    )
    result = service.txt2img(Txt2ImgRequest(seed=1, restore_faces=True, **SMALL))
    assert len(result.images) == 1 and len(result.saved_paths) == 1
    assert any("CodeFormer" in w for w in result.warnings)
    # Skipped, so the infotext must not claim it: pasting it back would ask for a restoration never done.
    assert "Face restoration" not in result.infotexts[0]


def test_infotext_names_face_restoration_only_when_it_ran(paths, service, tiny_model):
    inverted = GenerationService(
        SettingsStore(paths, Settings()),
        paths,
        lambda name, settings: tiny_model,
        restore_faces=lambda image, settings: (
            used.append(settings.face_restoration_model) or Image.eval(image, lambda v: 255 - v)
        ),
    )
    used: list[str] = []
    restored = inverted.txt2img(Txt2ImgRequest(seed=1, restore_faces=True, **SMALL))
    assert "Face restoration: CodeFormer" in restored.infotexts[0]
    overridden = inverted.txt2img(
        Txt2ImgRequest(seed=1, restore_faces=True, override_settings={"face_restoration_model": "GFPGAN"}, **SMALL)
    )
    assert used == ["CodeFormer", "GFPGAN"], "the job's override picks the restorer that runs"
    assert "Face restoration: GFPGAN" in overridden.infotexts[0]
    unavailable = service.txt2img(Txt2ImgRequest(seed=1, restore_faces=True, **SMALL))  # no restorer at all
    assert any("face restoration" in w for w in unavailable.warnings)
    assert "Face restoration" not in unavailable.infotexts[0]


def test_batch_hooks_wrap_each_batch_and_add_infotext(paths, tiny_model):
    from contextlib import contextmanager

    events = []

    class Params(dict):
        warnings = ["LoRA detail: 3 keys did not match"]

    @contextmanager
    def hook(model, prompts, negative_prompts):
        events.append(("enter", tuple(prompts)))
        try:
            yield Params({"Lora hashes": "detail: abc"})
        finally:
            events.append(("exit", tuple(prompts)))

    service = GenerationService(
        SettingsStore(paths, Settings()), paths, lambda name, settings: tiny_model, batch_hooks=[hook]
    )
    result = service.txt2img(
        Txt2ImgRequest(prompt="<lora:detail:1> cat", seed=1, n_iter=2, do_not_save_grid=True, **SMALL)
    )
    assert events == [("enter", ("<lora:detail:1> cat",)), ("exit", ("<lora:detail:1> cat",))] * 2
    assert 'Lora hashes: "detail: abc"' in result.infotexts[0]
    assert result.warnings == ["LoRA detail: 3 keys did not match"]


def test_invisible_watermark_is_applied_when_enabled(paths, tiny_model):
    from sdstudio.postprocess.watermark import add_watermark, decode_watermark

    service = GenerationService(
        SettingsStore(paths, Settings(enable_invisible_watermark=True)),
        paths,
        lambda name, settings: tiny_model,
        watermark=add_watermark,
    )
    result = service.txt2img(Txt2ImgRequest(seed=1, width=256, height=256, steps=1))
    expected = np.unpackbits(np.frombuffer(b"StableDiffusionV1", dtype=np.uint8))

    def bits_matching(image):
        return (np.unpackbits(np.frombuffer(decode_watermark(image).raw, dtype=np.uint8)) == expected).mean()

    plain = GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: tiny_model).txt2img(
        Txt2ImgRequest(seed=1, width=256, height=256, steps=1)
    )
    with Image.open(result.saved_paths[0]) as saved:
        # A random model's images are noise, which DWT-DCT survives only mostly.
        assert bits_matching(saved) > 0.85 > bits_matching(plain.images[0])
    small = service.txt2img(Txt2ImgRequest(seed=1, **SMALL))
    assert any("watermark skipped" in w for w in small.warnings) and len(small.saved_paths) == 1


def test_previews_of_non_standard_latents_are_decoded(paths, tiny_components):
    f4_vae = tiny_vae(block_out_channels=(8, 8, 8), sample_size=32)  # 3 levels: 4x down-sampling
    model = tiny_generation_model(tiny_components[0], f4_vae)
    assert not model.has_standard_latents and model.latent_factor == 4
    events = []
    service = GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: model)
    result = service.txt2img(
        Txt2ImgRequest(seed=1, width=32, height=32, steps=2),
        GenerationControl(on_progress=events.append, preview_every=1),
    )
    assert result.images[0].size == (32, 32)
    assert events[-1].preview.size == (32, 32)  # decoded, not a latent-sized approximation
