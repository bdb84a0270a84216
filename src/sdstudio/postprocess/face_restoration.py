"""Face restoration: GFPGAN and CodeFormer through spandrel, with an offline face detector.

Steps per face, after A1111's modules/face_restoration_utils.py (which uses facexlib):
detect, crop to a 512x512 face image, normalise to [-1, 1], restore, and paste back through
a feathered mask. Differences, because nothing may be downloaded at run time: faces are
found with dlib's HOG frontal-face detector, whose weights are compiled into the `dlib-bin`
wheel, instead of RetinaFace; dlib gives boxes, not the five landmarks facexlib aligns
with, so the crop is a square around the box (with margin, like the loosely cropped FFHQ
faces these networks were trained on) and the paste-back mask covers the detected box
only, so pixels outside it (feathered edge aside) are never changed.

CodeFormer's fidelity weight `w` (A1111 `code_former_weight` / `codeformer_weight`:
0 = strongest restoration, 1 = closest to the input) is passed to the network as A1111
does (`adain=True`); visibility blends the restored image over the original
(A1111 scripts/postprocessing_gfpgan.py / postprocessing_codeformer.py, `Image.blend`).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from sdstudio.config import MODEL_KINDS, DataPaths, SettingsStore
from sdstudio.errors import InvalidRequest, ModelLoadError, NotFound, SdStudioError
from sdstudio.models.memory import ModelMemory
from sdstudio.postprocess.model_files import LoadedModel, SpandrelModels

FACE_SIZE = 512
"""GFPGAN and CodeFormer work on 512x512 face crops."""

CROP_SCALE = 1.9
"""Side of the square crop relative to the detected box (dlib boxes are tight, eyebrows to chin)."""

FEATHER_FRACTION = 0.12
"""Width of the paste-back mask's soft edge, as a fraction of the box size."""


@dataclass(frozen=True)
class FaceRestorerKind:
    """A face restorer row: A1111's name, its face_restorer folder's name, the spandrel architecture expected there."""

    name: str
    folder: str
    architecture: str


FACE_RESTORERS = (
    FaceRestorerKind("CodeFormer", "Codeformer", "CodeFormer"),
    FaceRestorerKind("GFPGAN", "GFPGAN", "GFPGAN"),
)


@dataclass(frozen=True)
class FaceBox:
    """A detected face, in image pixels (right/bottom exclusive)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


class FaceDetector(Protocol):
    """Finds faces in an (H, W, 3) uint8 RGB array."""

    def detect(self, rgb: np.ndarray) -> list[FaceBox]: ...


class DlibFaceDetector:
    """dlib's HOG + linear SVM frontal face detector; its model is built into the dlib-bin wheel."""

    MAX_SIDE = 1024  # larger images are searched at this size (faces below ~80 px there are missed)

    def __init__(self):
        self._detector = None

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Boxes of the frontal faces found, largest first."""
        import dlib

        if self._detector is None:
            self._detector = dlib.get_frontal_face_detector()
        height, width = rgb.shape[:2]
        factor = min(1.0, self.MAX_SIDE / max(height, width))
        search = rgb
        if factor < 1.0:
            search = np.asarray(
                Image.fromarray(rgb).resize((round(width * factor), round(height * factor)), Image.Resampling.BILINEAR)
            )
        upsample = 1 if max(search.shape[:2]) < 640 else 0  # finds smaller faces in small images
        boxes = []
        for rect in self._detector(np.ascontiguousarray(search), upsample):
            left = max(0, int(round(rect.left() / factor)))
            top = max(0, int(round(rect.top() / factor)))
            right = min(width, int(round((rect.right() + 1) / factor)))
            bottom = min(height, int(round((rect.bottom() + 1) / factor)))
            if right > left and bottom > top:
                boxes.append(FaceBox(left, top, right, bottom))
        return sorted(boxes, key=lambda b: b.width * b.height, reverse=True)


@dataclass
class FaceRestoreResult:
    """The restored image, the faces found, and a note for the user when nothing was done."""

    image: Image.Image
    faces: list[FaceBox] = field(default_factory=list)
    note: str | None = None


@dataclass(frozen=True)
class FaceRestorerInfo:
    """A face restorer as listed (A1111 /sdapi/v1/face-restorers: name, cmd_dir)."""

    name: str
    cmd_dir: str
    model_path: str | None

    def to_api_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cmd_dir": self.cmd_dir}


class FaceRestorers:
    """GFPGAN and CodeFormer over the model files in models/GFPGAN and models/Codeformer."""

    def __init__(
        self,
        paths: DataPaths,
        settings: SettingsStore,
        device: str = "cpu",
        detector: FaceDetector | None = None,
        memory: ModelMemory | None = None,
        spandrel_registry: Any = None,
    ):
        self.paths = paths
        self.settings_store = settings
        self.detector = detector or DlibFaceDetector()
        self.models = SpandrelModels("face_restorer", device, memory, spandrel_registry)

    @property
    def device(self) -> str:
        """The torch device models run on ("auto" resolved on first use)."""
        return self.models.device

    def list(self) -> list[FaceRestorerInfo]:
        """Every face restorer with its folder and the model file it would use (None if missing)."""
        rows = []
        for kind in FACE_RESTORERS:
            folder, files = self._model_files(kind)
            rows.append(FaceRestorerInfo(kind.name, str(folder), str(files[0]) if files else None))
        return rows

    def _model_files(
        self, kind: FaceRestorerKind
    ) -> tuple[Path, builtins.list[Path]]:  # `list` here is the method above
        folder = self.paths.folder("face_restorer", kind.folder)
        return folder, MODEL_KINDS["face_restorer"].files_in(folder)

    def kind(self, name: str, field_name: str = "face_restorer") -> FaceRestorerKind:
        """The face restorer called `name` (case-insensitive)."""
        for kind in FACE_RESTORERS:
            if kind.name.lower() == str(name).lower():
                return kind
        raise NotFound(
            f"{field_name}: unknown face restorer {name!r}; available: {', '.join(k.name for k in FACE_RESTORERS)}"
        )

    def load_model(self, name: str) -> LoadedModel:
        """The spandrel model for a face restorer: the first file in its folder of the right architecture."""
        kind = self.kind(name)
        folder, files = self._model_files(kind)
        if not files:
            raise NotFound(
                f"{kind.name}: no model file in {folder}; put the {kind.name} .pth or .safetensors file there"
            )
        problems = []

        def right_architecture(loaded: LoadedModel) -> None:
            if loaded.architecture != kind.architecture:
                raise ModelLoadError(f"{loaded_path.name}: a {loaded.architecture} model, not {kind.architecture}")

        for loaded_path in files:
            try:
                return self.models.load(loaded_path, check=right_architecture)
            except SdStudioError as exc:
                problems.append(str(exc))
        raise ModelLoadError(f"{kind.name}: no usable model in {folder} ({'; '.join(problems)})")

    def restore(
        self, image: Image.Image, name: str, visibility: float = 1.0, codeformer_weight: float | None = None
    ) -> FaceRestoreResult:
        """Restore every detected face; visibility blends the result over the original (A1111 Image.blend)."""
        if not 0.0 <= visibility <= 1.0:
            raise InvalidRequest("visibility", f"must be between 0 and 1, got {visibility}")
        weight = self.settings_store.current.code_former_weight if codeformer_weight is None else codeformer_weight
        if not 0.0 <= weight <= 1.0:
            raise InvalidRequest("codeformer_weight", f"must be between 0 and 1, got {weight}")
        kind = self.kind(name)
        original = image.convert("RGB")
        if visibility == 0.0:
            return FaceRestoreResult(original, note=f"{kind.name} visibility is 0; image unchanged")
        rgb = np.asarray(original)
        faces = self.detector.detect(rgb)
        if not faces:
            return FaceRestoreResult(original, note="no face found; image unchanged")
        model = self.load_model(kind.name)
        restored = rgb.astype(np.float32)
        for face in faces:
            restored = self._restore_face(restored, face, model, kind, weight)
        result = Image.fromarray(np.clip(np.rint(restored), 0, 255).astype(np.uint8), "RGB")
        if visibility < 1.0:
            result = Image.blend(original, result, visibility)
        return FaceRestoreResult(result, faces=faces)

    # -- one face ----------------------------------------------------------------------

    def _restore_face(
        self, image: np.ndarray, face: FaceBox, model: LoadedModel, kind: FaceRestorerKind, weight: float
    ) -> np.ndarray:
        import cv2

        to_crop = crop_transform(face)
        crop = cv2.warpAffine(
            image, to_crop, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        restored_crop = self._run_network(crop, model, kind, weight)
        height, width = image.shape[:2]
        from_crop = cv2.invertAffineTransform(to_crop)
        pasted = cv2.warpAffine(
            restored_crop, from_crop, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        mask = feathered_box_mask(face, width, height)[..., None]
        return image * (1.0 - mask) + pasted * mask

    def _run_network(self, crop: np.ndarray, model: LoadedModel, kind: FaceRestorerKind, weight: float) -> np.ndarray:
        import torch

        descriptor = model.descriptor
        tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).unsqueeze(0)
        tensor = (tensor / 255.0 - 0.5) / 0.5  # GFPGAN/CodeFormer take [-1, 1] (A1111 normalize(0.5, 0.5))
        tensor = tensor.to(device=self.device, dtype=descriptor.dtype)
        with torch.inference_mode():
            if kind.architecture == "CodeFormer":
                output = descriptor.model(tensor, weight=weight)[0]
            else:
                output = descriptor.model(tensor, return_rgb=False)[0]
            output = (output.float().clamp(-1, 1) + 1.0) / 2.0
            return output[0].permute(1, 2, 0).cpu().numpy() * 255.0

    def unload(self) -> None:
        """Drop the loaded models."""
        self.models.unload()


def crop_transform(face: FaceBox) -> np.ndarray:
    """2x3 affine matrix mapping image pixels to the 512x512 square crop around a face box."""
    center_x = (face.left + face.right) / 2.0
    center_y = (face.top + face.bottom) / 2.0
    side = max(face.width, face.height) * CROP_SCALE
    scale = FACE_SIZE / side
    return np.array(
        [[scale, 0.0, FACE_SIZE / 2.0 - scale * center_x], [0.0, scale, FACE_SIZE / 2.0 - scale * center_y]],
        dtype=np.float64,
    )


def feathered_box_mask(face: FaceBox, width: int, height: int) -> np.ndarray:
    """(H, W) float mask: 1 inside the face box shrunk by the feather width, fading to 0 at the box edge."""
    feather = max(1.0, FEATHER_FRACTION * min(face.width, face.height))
    ys = np.arange(height, dtype=np.float32) + 0.5
    xs = np.arange(width, dtype=np.float32) + 0.5
    ramp_y = np.clip(np.minimum(ys - face.top, face.bottom - ys) / feather, 0.0, 1.0)
    ramp_x = np.clip(np.minimum(xs - face.left, face.right - xs) / feather, 0.0, 1.0)
    return np.outer(ramp_y, ramp_x)
