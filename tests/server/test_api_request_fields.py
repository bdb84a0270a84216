"""Every A1111 txt2img/img2img field is acted on, refused by name, or listed as ignored: never dropped silently."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from extensions.conftest import kohya_lora_tensors, write_lora
from tiny_models import write_tiny_checkpoint

from sdstudio.app import open_app
from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest
from sdstudio.server import api_models as m
from sdstudio.server.routes.generation import ROUTE_FIELDS

from .conftest import start_server
from .test_api_generation import A1111_TXT2IMG_BODY, png

SMALL = {"steps": 1, "width": 64, "height": 64, "seed": 1234, "sampler_name": "Euler"}


@pytest.fixture
def server(data_dir_with_model):
    running = start_server(open_app(data_dir_with_model))
    yield running
    running.stop()


def post(client, path: str, **body):
    return client.post(f"/sdapi/v1/{path}", json=body)


def brief(answer) -> str:
    """The answer in a line short enough for a failure message (no base64 images)."""
    return f"{answer.status_code} {answer.text[:300]}"


def refused(answer, field: str, *words: str) -> bool:
    text = answer.json()["errors"] if answer.status_code == 422 else ""
    return field in text and all(word in text for word in words)


def test_scripts_are_refused_by_name_and_empty_script_fields_accepted(server):
    with server.client() as client:
        assert "x/y/z plot" not in client.get("/sdapi/v1/scripts").json()["txt2img"]
        named = post(client, "txt2img", **SMALL, script_name="x/y/z plot", script_args=[1, "Seed", "1,2"])
        assert refused(named, "script_name", "'x/y/z plot' is not installed"), brief(named)
        always_on = post(client, "txt2img", **SMALL, alwayson_scripts={"ADetailer": {"args": [True]}})
        assert refused(always_on, "alwayson_scripts", "'ADetailer' is not installed"), brief(always_on)
        # What clients send when they use no script at all.
        for empty in ({"script_name": "", "script_args": [], "alwayson_scripts": {}}, {"script_name": None}):
            assert post(client, "txt2img", **SMALL, **empty).status_code == 200, empty


def test_disable_extra_networks_removes_lora_tags_without_applying_them(server):
    model = server.app.engine.model_source(None)
    tensors = kohya_lora_tensors(model.unet, model.encoder.text_encoders[0], seed=2, strength=0.5)
    write_lora(server.app.paths.folder("lora"), "shiny", tensors)

    def generate(client, prompt: str, **changes):
        answer = post(client, "txt2img", **SMALL, prompt=prompt, **changes)
        assert answer.status_code == 200, brief(answer)
        image = png(answer.json()["images"][0])
        return np.asarray(image), image.info["parameters"]

    with server.client() as client:
        plain, _ = generate(client, "a red star")
        with_lora, applied_infotext = generate(client, "a red star <lora:shiny:1>")
        disabled, disabled_infotext = generate(client, "a red star <lora:shiny:1>", disable_extra_networks=True)
    assert not np.array_equal(with_lora, plain) and "Lora hashes" in applied_infotext
    assert np.array_equal(disabled, plain), "disable_extra_networks: the tag is removed and the LoRA not applied"
    assert "Lora hashes" not in disabled_infotext
    assert disabled_infotext.startswith("a red star <lora:shiny:1>"), "the infotext keeps the prompt as written"


def test_a_list_of_prompts_gives_one_prompt_per_image(server):
    prompts = ["a red star", "a blue square", "a green circle", "a white cat"]
    negatives = ["blurry", "dark", "ugly", "noisy"]
    with server.client() as client:
        answer = post(client, "txt2img", **SMALL, prompt=prompts, negative_prompt=negatives, batch_size=2, n_iter=2)
        assert answer.status_code == 200, brief(answer)
        info = json.loads(answer.json()["info"])
        # A string negative prompt goes with every prompt of the list.
        shared = post(client, "txt2img", **SMALL, prompt=prompts[:2], negative_prompt="blurry", batch_size=2)
        assert shared.status_code == 200, brief(shared)
        too_few = post(client, "txt2img", **SMALL, prompt=prompts[:3], batch_size=2, n_iter=2)
        wrong_negatives = post(client, "txt2img", **SMALL, prompt="x", negative_prompt=negatives, batch_size=3)
    assert info["all_prompts"] == prompts and info["all_negative_prompts"] == negatives
    assert info["prompt"] == prompts[0]
    texts = info["infotexts"][-4:]
    assert [text.split("\n")[0] for text in texts] == prompts
    assert [text.split("\n")[1] for text in texts] == [f"Negative prompt: {n}" for n in negatives]
    assert json.loads(shared.json()["info"])["all_negative_prompts"] == ["blurry", "blurry"]
    assert refused(too_few, "prompt", "batch_size * n_iter = 4", "got 3"), brief(too_few)
    assert refused(wrong_negatives, "negative_prompt", "= 3", "got 4"), brief(wrong_negatives)


def test_hr_checkpoint_name_runs_the_hires_pass_on_that_checkpoint(server):
    write_tiny_checkpoint(server.app.paths.folder("checkpoint"), "other-tiny.safetensors", seed=1)
    hires = {**SMALL, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 1}

    def image(answer):
        assert answer.status_code == 200, brief(answer)
        return png(answer.json()["images"][0])

    with server.client() as client:
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "random-tiny"}).raise_for_status()
        titles = {item["model_name"]: item["title"] for item in client.get("/sdapi/v1/sd-models").json()}
        same = [image(post(client, "txt2img", **hires, hr_checkpoint_name=n)) for n in ("Use same checkpoint", "")]
        other = image(post(client, "txt2img", **hires, hr_checkpoint_name=titles["other-tiny"]))
        pasted = image(post(client, "txt2img", infotext=other.info["parameters"]))
        missing = post(client, "txt2img", **hires, hr_checkpoint_name="nope")
        # Without the hires fix the field has no effect, as in A1111.
        unused = post(client, "txt2img", **SMALL, hr_checkpoint_name="nope")
    assert same[0].size == other.size == (96, 96)
    assert (
        np.array_equal(np.asarray(same[0]), np.asarray(same[1]))
        and "Hires checkpoint" not in same[0].info["parameters"]
    )
    short_hash = titles["other-tiny"].rsplit("[", 1)[1].rstrip("]")
    assert f"Hires checkpoint: other-tiny [{short_hash}]" in other.info["parameters"]
    assert not np.array_equal(np.asarray(other), np.asarray(same[0])), "the second pass ran on the other model"
    assert np.array_equal(np.asarray(pasted), np.asarray(other)), "its infotext reproduces it"
    assert refused(missing, "hr_checkpoint_name", "'nope'"), brief(missing)
    assert unused.status_code == 200, brief(unused)


def test_infotext_fills_the_fields_the_body_does_not_set(server):
    infotext = (
        "a blue square\nNegative prompt: ugly\n"
        "Steps: 2, Sampler: Euler a, Schedule type: Karras, CFG scale: 5, Seed: 77, Size: 64x72, Clip skip: 2"
    )
    with server.client() as client:
        # cfg_scale sent with its default value still wins over the infotext (A1111: fields set in the body).
        answer = post(client, "txt2img", infotext=infotext, seed=5, cfg_scale=7)
        assert answer.status_code == 200, brief(answer)
        kept = post(client, "txt2img", infotext=infotext, override_settings={"CLIP_stop_at_last_layers": 1})
        assert kept.status_code == 200, brief(kept)
    info = json.loads(answer.json()["info"])
    assert (info["prompt"], info["negative_prompt"]) == ("a blue square", "ugly")
    assert (info["steps"], info["sampler_name"], info["scheduler"]) == (2, "Euler a", "Karras")
    assert (info["width"], info["height"], info["clip_skip"]) == (64, 72, 2)
    assert info["seed"] == 5 and info["cfg_scale"] == 7
    assert answer.json()["parameters"]["prompt"] == "a blue square", "the echoed request has the infotext applied"
    kept_info = json.loads(kept.json()["info"])
    assert kept_info["clip_skip"] == 1 and kept_info["seed"] == 77, "an explicit override wins over the infotext"


def test_seed_enable_extras_and_include_init_images_are_honoured(server):
    with server.client() as client:
        varied = post(client, "txt2img", **SMALL, subseed=9, subseed_strength=0.5, seed_enable_extras=False)
        assert varied.status_code == 200, brief(varied)
        init = varied.json()["images"][0]
        echoed = post(client, "img2img", **SMALL, init_images=[init], include_init_images=True)
        hidden = post(client, "img2img", **SMALL, init_images=[init])
    assert json.loads(varied.json()["info"])["subseed_strength"] == 0
    assert echoed.json()["parameters"]["init_images"] == [init]
    assert hidden.json()["parameters"]["init_images"] is None


@pytest.mark.parametrize(
    "path, body",
    [
        ("/sdapi/v1/txt2img", m.StableDiffusionTxt2ImgProcessingAPI),
        ("/sdapi/v1/img2img", m.StableDiffusionImg2ImgProcessingAPI),
    ],
)
def test_openapi_description_lists_exactly_the_ignored_fields(server, path, body):
    with server.client() as client:
        description = client.get("/openapi.json").json()["paths"][path]["post"]["description"]
    listed = re.findall(r"^- `(\w+)`: (.+)$", description, flags=re.MULTILINE)
    assert listed == [(name, why) for name, why in m.IGNORED_FIELDS.items() if name in body.model_fields]


@pytest.mark.parametrize(
    "body, request_type",
    [(m.StableDiffusionTxt2ImgProcessingAPI, Txt2ImgRequest), (m.StableDiffusionImg2ImgProcessingAPI, Img2ImgRequest)],
)
def test_every_body_field_is_honoured_or_listed_as_ignored(body, request_type):
    fields = set(body.model_fields)
    honoured = fields & set(request_type.model_fields)
    by_route = fields & ROUTE_FIELDS
    ignored = fields & set(m.IGNORED_FIELDS)
    assert fields == honoured | by_route | ignored, fields - honoured - by_route - ignored
    assert not honoured & ignored and not by_route & ignored and not honoured & by_route
    assert set(m.IGNORED_FIELDS) <= set(m.StableDiffusionTxt2ImgProcessingAPI.model_fields) | set(
        m.StableDiffusionImg2ImgProcessingAPI.model_fields
    ), "the ignored list names only A1111 body fields"
    # And the honoured ones do reach the engine request when the body sets them.
    from sdstudio.server.routes.generation import engine_request_fields

    sent = {name: A1111_TXT2IMG_BODY[name] for name in honoured if A1111_TXT2IMG_BODY.get(name) is not None}
    assert set(sent) <= set(engine_request_fields(body(**sent), request_type))


def test_refiner_checkpoint_takes_over_part_way_and_its_infotext_reproduces_the_image(server):
    write_tiny_checkpoint(server.app.paths.folder("checkpoint"), "other-tiny.safetensors", seed=1)
    body = {**SMALL, "steps": 6, "sampler_name": "DPM++ 2M", "prompt": "a red star"}
    with server.client() as client:
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "random-tiny"}).raise_for_status()
        titles = {item["model_name"]: item["title"] for item in client.get("/sdapi/v1/sd-models").json()}
        plain = post(client, "txt2img", **body)
        refined = post(client, "txt2img", **body, refiner_checkpoint=titles["other-tiny"], refiner_switch_at=0.5)
        assert refined.status_code == 200, brief(refined)
        infotext = png(refined.json()["images"][0]).info["parameters"]
        pasted = post(client, "txt2img", infotext=infotext)
        unknown = post(client, "txt2img", **body, refiner_checkpoint="nope", refiner_switch_at=0.5)
        outside = post(client, "txt2img", **body, refiner_checkpoint="/etc/passwd", refiner_switch_at=0.5)
        # What A1111 clients send when they use no refiner.
        unused = post(client, "txt2img", **body, refiner_checkpoint="", refiner_switch_at=0)
    short_hash = titles["other-tiny"].rsplit("[", 1)[1].rstrip("]")
    assert f"Refiner: other-tiny [{short_hash}], Refiner switch at: 0.5" in infotext
    image = np.asarray(png(refined.json()["images"][0]))
    assert not np.array_equal(image, np.asarray(png(plain.json()["images"][0])))
    assert pasted.status_code == 200, brief(pasted)
    assert np.array_equal(np.asarray(png(pasted.json()["images"][0])), image), "pasted infotext: the same image"
    assert refused(unknown, "refiner_checkpoint", "'nope'"), brief(unknown)
    assert refused(outside, "refiner_checkpoint", "not a model in the data dir"), brief(outside)
    assert unused.status_code == 200 and np.array_equal(
        np.asarray(png(unused.json()["images"][0])), np.asarray(png(plain.json()["images"][0]))
    )
