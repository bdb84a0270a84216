"""Extras over real HTTP: A1111's single and batch bodies (base64 images, FileData items) in, A1111 answers out."""

from __future__ import annotations

import base64
import io

from PIL import Image, PngImagePlugin

SOURCE_INFOTEXT = "a red circle\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 32x24"

# The body of A1111's test/test_extras.py, sizes made tiny.
A1111_EXTRAS_OPTIONS = {
    "resize_mode": 0,
    "show_extras_results": True,
    "gfpgan_visibility": 0,
    "codeformer_visibility": 0,
    "codeformer_weight": 0,
    "upscaling_resize": 2,
    "upscaling_resize_w": 128,
    "upscaling_resize_h": 128,
    "upscaling_crop": True,
    "upscaler_1": "Lanczos",
    "upscaler_2": "None",
    "extras_upscaler_2_visibility": 0,
}


def png_base64(width: int, height: int, color: str = "red") -> str:
    """A PNG carrying a generation infotext, as base64 (what clients send)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", SOURCE_INFOTEXT)
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def decoded(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def test_single_image_is_decoded_and_upscaled(api_server):
    with api_server.client() as client:
        answer = client.post("/sdapi/v1/extra-single-image", json={**A1111_EXTRAS_OPTIONS, "image": png_base64(32, 24)})
        with_data_url = client.post(
            "/sdapi/v1/extra-single-image",
            json={**A1111_EXTRAS_OPTIONS, "image": "data:image/png;base64," + png_base64(32, 24)},
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"html_info", "image"}
    assert "Postprocess upscale by: 2, Postprocess upscaler: Lanczos" in body["html_info"]
    upscaled = decoded(body["image"])
    assert upscaled.size == (64, 48)
    assert upscaled.getpixel((10, 10)) == (255, 0, 0)
    assert with_data_url.status_code == 200 and decoded(with_data_url.json()["image"]).size == (64, 48)


def test_batch_file_data_items_are_decoded_in_order(api_server):
    image_list = [
        {"data": png_base64(32, 24, "red"), "name": "a.png"},
        {"data": png_base64(24, 16, "blue"), "name": "b"},
    ]
    with api_server.client() as client:
        answer = client.post("/sdapi/v1/extra-batch-images", json={**A1111_EXTRAS_OPTIONS, "imageList": image_list})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"html_info", "images"}
    images = [decoded(b64) for b64 in body["images"]]
    assert [image.size for image in images] == [(64, 48), (48, 32)]
    assert [image.getpixel((5, 5)) for image in images] == [(255, 0, 0), (0, 0, 255)]
    assert "Postprocess upscaler: Lanczos" in body["html_info"]


def test_bad_images_are_422_naming_the_item_and_the_server_keeps_serving(api_server):
    good = {"data": png_base64(16, 16), "name": "good.png"}
    with api_server.client() as client:
        bad_item = client.post(
            "/sdapi/v1/extra-batch-images",
            json={**A1111_EXTRAS_OPTIONS, "imageList": [good, {"data": "not base64!!", "name": "bad.png"}]},
        )
        assert bad_item.status_code == 422, bad_item.text
        assert "imageList[1].data" in bad_item.json()["errors"]
        missing_data = client.post("/sdapi/v1/extra-batch-images", json={"imageList": [{"name": "x.png"}]})
        assert missing_data.status_code == 422 and "imageList.0.data" in missing_data.json()["errors"]
        bad_single = client.post("/sdapi/v1/extra-single-image", json={**A1111_EXTRAS_OPTIONS, "image": "%%%"})
        assert bad_single.status_code == 422 and bad_single.json()["errors"].startswith("image:")
        too_large = client.post(
            "/sdapi/v1/extra-single-image",
            json={**A1111_EXTRAS_OPTIONS, "image": good["data"], "upscaling_resize": 100},
        )
        assert too_large.status_code == 422, too_large.text
        assert "upscaling_resize" in too_large.json()["errors"]
        again = client.post("/sdapi/v1/extra-batch-images", json={**A1111_EXTRAS_OPTIONS, "imageList": [good]})
        assert again.status_code == 200 and len(again.json()["images"]) == 1
