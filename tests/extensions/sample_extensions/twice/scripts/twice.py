from sdstudio.extensions.scripts import Script, Slider, process_images


class Twice(Script):
    """A selectable script: runs the job twice, the second time with the seed + offset, and returns both."""

    def title(self):
        return "Twice"

    def ui(self, is_img2img):
        return [Slider(label="Seed offset", value=1, minimum=1, maximum=100, step=1)]

    def run(self, p, offset):
        if offset == 13:
            raise ValueError("unlucky offset")
        first = process_images(p.copy())
        again = p.copy()
        again.seed = first.seeds[0] + offset
        second = process_images(again)
        first.images += second.images
        first.infotexts += second.infotexts
        first.seeds += second.seeds
        return first
