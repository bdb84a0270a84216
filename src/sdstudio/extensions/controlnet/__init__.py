"""ControlNet as an extension: preprocessors, units and the sd-webui-controlnet API."""
