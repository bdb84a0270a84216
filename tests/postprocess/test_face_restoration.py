"""Face restoration: offline detection, restore inside the face box only, no face -> unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from postprocess_networks import draw_face, noise_image, save_codeformer, save_esrgan, save_gfpgan

from sdstudio.errors import InvalidRequest, ModelLoadError, NotFound
from sdstudio.postprocess.face_restoration import DlibFaceDetector, FaceRestorers, feathered_box_mask


def _changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(before).astype(int) - np.asarray(after).astype(int)).max(axis=-1) > 0


@pytest.mark.parametrize("size", [160, 256, 320])
def test_drawn_face_is_detected_where_it_is(size):
    faces = DlibFaceDetector().detect(np.asarray(draw_face(size)))
    assert len(faces) == 1
    face = faces[0]
    center = ((face.left + face.right) / 2 / size, (face.top + face.bottom) / 2 / size)
    assert 0.4 < center[0] < 0.6 and 0.45 < center[1] < 0.7  # the drawn face is centred, a little low
    assert 0.3 < face.width / size < 0.8


def test_no_face_returns_image_unchanged_with_note(paths, settings_store):
    restorers = FaceRestorers(paths, settings_store)
    image = noise_image(96, 80)
    result = restorers.restore(image, "GFPGAN")
    assert result.faces == [] and "no face" in result.note
    assert np.array_equal(np.asarray(result.image), np.asarray(image))


def test_missing_model_is_one_line_error(paths, settings_store):
    with pytest.raises(NotFound) as missing:
        FaceRestorers(paths, settings_store).restore(draw_face(), "CodeFormer")
    message = str(missing.value)
    assert "Codeformer" in message and "\n" not in message


def test_wrong_model_in_folder_is_refused(paths, settings_store):
    save_esrgan(paths.folder("face_restorer", "GFPGAN") / "GFPGANv1.4.pth")
    with pytest.raises(ModelLoadError, match="ESRGAN model, not GFPGAN"):
        FaceRestorers(paths, settings_store).restore(draw_face(), "GFPGAN")


def test_unknown_restorer_and_bad_values(paths, settings_store):
    restorers = FaceRestorers(paths, settings_store)
    with pytest.raises(NotFound, match="available: CodeFormer, GFPGAN"):
        restorers.restore(draw_face(), "RestoreFormer")
    with pytest.raises(InvalidRequest, match="codeformer_weight"):
        restorers.restore(draw_face(), "CodeFormer", codeformer_weight=1.5)


def test_listing_as_a1111(paths, settings_store):
    rows = FaceRestorers(paths, settings_store).list()
    assert [r.name for r in rows] == ["CodeFormer", "GFPGAN"]
    assert rows[0].to_api_dict() == {"name": "CodeFormer", "cmd_dir": str(paths.folder("face_restorer", "Codeformer"))}


def test_feathered_mask_is_zero_outside_the_box():
    from sdstudio.postprocess.face_restoration import FaceBox

    box = FaceBox(10, 20, 60, 80)
    mask = feathered_box_mask(box, 100, 100)
    outside = np.ones_like(mask, dtype=bool)
    outside[20:80, 10:60] = False
    assert mask[outside].max() == 0.0
    assert mask[50, 35] == 1.0 and 0 < mask[21, 35] < 1


class _NegativeFaces(FaceRestorers):
    """Face restoration with a stand-in network (the photographic negative of the crop), so the
    detect / crop / paste / blend path is tested in a second; the real networks are tested below."""

    def load_model(self, name):
        return None

    def _run_network(self, crop, model, kind, weight):
        return 255.0 - crop


def test_restore_changes_pixels_only_inside_the_face_box(paths, settings_store):
    image = draw_face(256)
    restorers = _NegativeFaces(paths, settings_store)
    result = restorers.restore(image, "GFPGAN")
    assert result.note is None and len(result.faces) == 1
    face = result.faces[0]
    changed = _changed(image, result.image)
    inside = np.zeros_like(changed)
    inside[face.top : face.bottom, face.left : face.right] = True
    assert changed[inside].mean() > 0.9
    assert not changed[~inside].any()
    core = np.asarray(result.image)[(face.top + face.bottom) // 2, (face.left + face.right) // 2].astype(int)
    original = np.asarray(image)[(face.top + face.bottom) // 2, (face.left + face.right) // 2].astype(int)
    assert np.abs(core - (255 - original)).max() <= 2  # full strength in the middle of the box
    half = restorers.restore(image, "GFPGAN", visibility=0.5)
    expected = Image.blend(image, result.image, 0.5)
    assert np.abs(np.asarray(half.image).astype(int) - np.asarray(expected).astype(int)).max() <= 1


@pytest.mark.slow
def test_gfpgan_changes_pixels_only_inside_the_face_box(paths, settings_store):
    """A random-weight GFPGAN (published `params_ema` layout) restores the drawn face in place."""
    save_gfpgan(paths.folder("face_restorer", "GFPGAN") / "GFPGANv1.4.pth")
    image = draw_face(256)
    result = FaceRestorers(paths, settings_store).restore(image, "GFPGAN")
    assert result.note is None and len(result.faces) == 1
    face = result.faces[0]
    changed = _changed(image, result.image)
    inside = np.zeros_like(changed)
    inside[face.top : face.bottom, face.left : face.right] = True
    assert changed[inside].mean() > 0.5  # the face was really replaced
    assert not changed[~inside].any()  # and nothing outside its box (the feather lies inside it)


@pytest.mark.slow
def test_codeformer_weight_changes_result_inside_face_only(paths, settings_store):
    save_codeformer(paths.folder("face_restorer", "Codeformer") / "codeformer.pth")
    restorers = FaceRestorers(paths, settings_store)
    image = draw_face(256)
    strong = restorers.restore(image, "CodeFormer", codeformer_weight=0.0)
    faithful = restorers.restore(image, "CodeFormer", codeformer_weight=1.0)
    face = strong.faces[0]
    outside = np.ones(image.size[::-1], dtype=bool)
    outside[face.top : face.bottom, face.left : face.right] = False
    for result in (strong, faithful):
        assert not _changed(image, result.image)[outside].any()
    assert _changed(strong.image, faithful.image).any()  # the fidelity weight reaches the network
