"""Infotext is written and read exactly as A1111 does."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from sdstudio.engine.infotext import (
    RE_PARAM,
    find_parameters,
    format_infotext,
    parse_generation_parameters,
    request_fields_from_infotext,
)
from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest
from sdstudio.postprocess.image_files import quote

A1111_SAMPLE = (
    "masterpiece, (best quality:1.2), 1girl\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3405691582, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.5, Clip skip: 2, Hires upscale: 2, "
    'Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
)


def test_parses_a1111_infotext_into_request_fields():
    fields = request_fields_from_infotext(A1111_SAMPLE)
    request = Txt2ImgRequest(**fields)
    assert request.prompt == "masterpiece, (best quality:1.2), 1girl"
    assert request.negative_prompt == "lowres, bad anatomy"
    assert (request.steps, request.sampler_name, request.scheduler, request.cfg_scale) == (
        28,
        "DPM++ 2M",
        "Karras",
        7.0,
    )
    assert (request.seed, request.width, request.height) == (3405691582, 512, 768)
    assert request.enable_hr and request.hr_scale == 2.0 and request.denoising_strength == 0.5
    assert request.override_settings == {"CLIP_stop_at_last_layers": 2}


def test_quoted_values_and_multiline_prompts_round_trip():
    text = format_infotext(
        "line one,\nline two", "neg: a\nneg b", {"Steps": 3, "Model": "a, b: c", "Note": 'say "hi"', "Empty": None}
    )
    assert 'Model: "a, b: c"' in text and "Empty" not in text
    params = parse_generation_parameters(text)
    assert params["Prompt"] == "line one,\nline two"
    assert params["Negative prompt"] == "neg: a\nneg b"
    assert params["Model"] == "a, b: c" and params["Note"] == 'say "hi"'
    assert quote("plain") == "plain" and quote("a,b") == '"a,b"'


def test_old_combined_sampler_name_is_split():
    params = parse_generation_parameters(
        "cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512"
    )
    assert (params["Sampler"], params["Schedule type"]) == ("DPM++ 2M", "Karras")


def test_a1111_v1_10_sampler_and_schedule_names_are_read():
    def read(sampler, schedule=None):
        line = f"Steps: 20, Sampler: {sampler}, " + (f"Schedule type: {schedule}, " if schedule else "")
        params = parse_generation_parameters("cat\n" + line + "CFG scale: 7, Seed: 1, Size: 512x512")
        return params["Sampler"], params["Schedule type"]

    assert read("DPM++ 2M SDE Heun Karras") == ("DPM++ 2M SDE Heun", "Karras")  # A1111's old combined name
    assert read("DPM++ 2M SDE Heun Exponential") == ("DPM++ 2M SDE Heun", "Exponential")
    assert read("k_dpmpp_2m_sde_heun", "Align Your Steps") == ("DPM++ 2M SDE Heun", "Align Your Steps")
    assert read("Restart", "KL Optimal") == ("Restart", "KL Optimal")
    assert read("ddim_cfgpp", "Beta") == ("DDIM CFG++", "Beta")
    assert read("DDIM", "DDIM") == ("DDIM", "DDIM")  # a sampler and a schedule type of the same name
    assert read("Euler", "simple") == ("Euler", "Simple")


def test_img2img_fields():
    text = (
        "cat\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 64x64, "
        "Denoising strength: 0.4, Mask blur: 8"
    )
    request = Img2ImgRequest(
        init_images=[__import__("PIL.Image").Image.new("RGB", (8, 8))], **request_fields_from_infotext(text, "img2img")
    )
    assert (request.denoising_strength, request.mask_blur_x, request.mask_blur_y) == (0.4, 8, 8)


def test_prompt_only_text_has_no_parameters():
    params = parse_generation_parameters("just a prompt\nwith two lines")
    assert params["Prompt"] == "just a prompt\nwith two lines" and "Steps" not in params


def test_schedule_type_names_what_automatic_resolved_to_as_a1111_writes():
    from sdstudio.engine.samplers import find_sampler, find_schedule_type, infotext_schedule_label

    automatic = find_schedule_type("Automatic")
    assert infotext_schedule_label(find_sampler("DPM++ 2M"), automatic) == "Karras"
    assert infotext_schedule_label(find_sampler("DPM++ 2M SDE"), automatic) == "Exponential"
    assert infotext_schedule_label(find_sampler("Euler a"), automatic) == "Automatic"
    assert infotext_schedule_label(find_sampler("DDIM"), automatic) == "Automatic"
    assert infotext_schedule_label(find_sampler("Euler"), find_schedule_type("Karras")) == "Karras"


A1111_SIGMA_SAMPLE = (
    "a cat\nNegative prompt: easynegative\n"
    "Steps: 20, Sampler: Euler, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: 0.5, "
    "Sigma churn: 0.5, Sigma tmin: 0.1, Sigma tmax: 10, Sigma noise: 0.9, Hires upscale: 2, Hires upscaler: Latent, "
    "Hires sampler: Euler a, Hires CFG Scale: 4, Hires schedule type: Exponential, Noise multiplier: 0.5, "
    'TI hashes: "easynegative: c74b4e810b03, my style: 0123456789ab", Version: v1.10.1'
)


def test_sigma_and_hires_keys_paste_into_request_fields_and_ti_hashes_do_not_get_in_the_way():
    params = parse_generation_parameters(A1111_SIGMA_SAMPLE)
    assert params["TI hashes"] == "easynegative: c74b4e810b03, my style: 0123456789ab"
    assert params["Version"] == "v1.10.1" and params["Negative prompt"] == "easynegative"
    request = Txt2ImgRequest(**request_fields_from_infotext(A1111_SIGMA_SAMPLE))
    assert (request.s_churn, request.s_tmin, request.s_tmax, request.s_noise) == (0.5, 0.1, 10.0, 0.9)
    assert (request.hr_sampler_name, request.hr_scheduler, request.hr_cfg) == ("Euler a", "Exponential", 4.0)
    assert request.enable_hr and request.steps == 20
    # "Noise multiplier" is img2img's: it pastes there only.
    image = __import__("PIL.Image").Image.new("RGB", (8, 8))
    img2img = Img2ImgRequest(init_images=[image], **request_fields_from_infotext(A1111_SIGMA_SAMPLE, "img2img"))
    assert img2img.initial_noise_multiplier == 0.5 and img2img.s_churn == 0.5


INFOTEXT_PIECES = st.sampled_from(
    ["Steps", "a", " ", "  ", "\t", ":", ": ", ",", ", ", '"', '"x, y"', "\\", "-", "/", "_", "1", "é", "\u00a0", "٣"]
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(INFOTEXT_PIECES, max_size=30).map("".join))
def test_parameters_are_found_as_a1111s_regex_finds_them(line):
    assert find_parameters(line) == RE_PARAM.findall(line)


def test_long_runs_of_words_or_spaces_are_read_in_linear_time():
    # A1111's regex takes O(n²) on these, holding the GIL: 20,000 spaces froze the server for 19 s.
    started = time.perf_counter()
    for hostile in ("a" + " " * 200_000 + "b", "a" * 200_000, "ab-" * 70_000 + ": x"):
        parse_generation_parameters(hostile)
    assert time.perf_counter() - started < 2
    assert find_parameters("ab-" * 3 + ": x, Steps: 2") == [("ab-ab-ab-", "x"), ("Steps", "2")]
