"""What a generation task keeps when its files were saved on another machine (a cluster worker's disk)."""

from __future__ import annotations

from PIL import Image

from sdstudio.engine.request import GenerationResult
from sdstudio.errors import Unavailable
from sdstudio.server.errors import status_for
from sdstudio.server.routes.generation import generation_output


def test_a_file_saved_elsewhere_is_kept_as_the_tasks_own_copy_and_one_saved_here_is_listed(tmp_path):
    here = tmp_path / "00000-1-a cat.png"
    Image.new("RGB", (8, 8)).save(here)
    elsewhere = tmp_path / "worker-2" / "00001-2-a cat.png"  # a path on the worker's machine, not this one
    images = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 255, 0))]
    result = GenerationResult(images=images, seeds=[1, 2], infotexts=["a", "b"], saved_paths=[here, elsewhere])
    output = generation_output(result)
    assert [image.saved for image in output.images] == [here, None]  # None: the task store writes its own copy
    assert output.images[1].image is images[1]


def test_workers_gone_is_a_503_not_a_500():
    assert status_for(Unavailable("the worker running it stopped twice")) == 503
