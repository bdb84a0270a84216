"""ControlNet as an extension: units, preprocessors (sd-webui-controlnet's names and API)."""
