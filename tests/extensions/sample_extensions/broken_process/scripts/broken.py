from sdstudio.extensions.scripts import AlwaysVisible, Script


class Broken(Script):
    def title(self):
        return "Broken process"

    def show(self, is_img2img):
        return AlwaysVisible

    def process(self, p):
        raise RuntimeError("boom in process")
