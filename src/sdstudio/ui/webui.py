"""The web UI page: the tabs, the checkpoint bar, send-to wiring, and mounting on FastAPI.

`build_ui(backend, queue)` makes the Gradio Blocks from the tab modules; everything it
uses comes in as arguments (no global state). `mount_ui` puts it on the same FastAPI
app as the A1111 API, so both submit to one job queue. Nothing here reaches the
internet: analytics are off and the theme uses the fonts Gradio ships.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdstudio.ui.page_assets import PageAssets

# Gradio reads these when imported; setting them here (and in the CLI) keeps the page offline.
OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "GRADIO_SSR_MODE": "False",
}

TAB_IDS = ("txt2img", "img2img", "extras", "pnginfo", "modelmerger", "extra_networks", "settings", "extensions")
QUEUE_TAB_ID = "queue"
"""The Queue tab, on the page when the server's task runner is given (`sdstudio webui` always gives it)."""

UI_CSS = """
.sdstudio-progress { position: relative; height: 22px; border-radius: 6px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); overflow: hidden; margin-bottom: 6px; }
.sdstudio-progress-fill { position: absolute; left: 0; top: 0; bottom: 0; background: var(--color-accent);
  opacity: 0.55; transition: width 0.3s; }
.sdstudio-progress-text { position: relative; padding: 0 8px; font-size: 13px; line-height: 22px; }
/* Token counters sit in the bottom right corner of their prompt box. */
.sdstudio-token-counter { height: 0 !important; min-height: 0 !important; overflow: visible !important;
  padding: 0 !important; border: none !important; z-index: 20; margin-top: calc(-1 * var(--layout-gap, 12px)); }
.sdstudio-token-count { position: relative; float: right; top: -26px; right: 14px;
  font-size: 12px; opacity: 0.75; }
.sdstudio-infotext p { margin: 0 0 4px 0; font-size: 13px; word-break: break-word; }
.sdstudio-status { font-size: 13px; margin-top: 4px; }
.sdstudio-status-error { color: var(--error-text-color, #dc2626); font-weight: 600; }
.sdstudio-status-warning { color: #b45309; }
.sdstudio-status-interrupted { color: #b45309; font-weight: 600; }
#txt2img_generate, #img2img_generate { min-height: 64px; font-size: 18px; }
.sdstudio-bar-label { align-self: center; }
.sdstudio-tool { align-self: end; max-height: 40px; }
"""


# Ctrl+Enter (Cmd+Enter) in a prompt box clicks that tab's Generate, as in A1111; Enter alone
# stays a new line.
UI_HEAD = """
<script>
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || !event.target.closest) return;
  const box = event.target.closest("#txt2img_prompt, #txt2img_neg_prompt, #img2img_prompt, #img2img_neg_prompt");
  if (!box) return;
  const button = document.getElementById(box.id.split("_")[0] + "_generate");
  if (button) { event.preventDefault(); button.click(); }
});
</script>
"""


def offline_environment() -> None:
    """Turn off Gradio's analytics and version check and hub telemetry for this process."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ[key] = value


def ui_theme():
    """Gradio's default theme with the fonts it bundles (no Google Fonts request)."""
    import gradio as gr

    return gr.themes.Default(
        spacing_size=gr.themes.sizes.spacing_sm,
        radius_size=gr.themes.sizes.radius_sm,
        text_size=gr.themes.sizes.text_sm,
        font=[gr.themes.LocalFont("Source Sans Pro"), "ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=[gr.themes.LocalFont("IBM Plex Mono"), "ui-monospace", "monospace"],
    )


def build_ui(backend, queue, title: str = "sdstudio", assets: PageAssets | None = None):
    """The whole web UI as a gr.Blocks, over `backend` (a UiBackend) and the shared job queue.

    `assets` are the extensions' page files `mount_ui` puts in the page (read here when not given);
    the Extensions tab names those that could not be read. A backend with the server's task runner
    (`backend.tasks`) adds the Queue tab over the stored tasks.
    """
    offline_environment()
    import gradio as gr

    from sdstudio.ui import checkpoint_merger, extensions, extra_networks, extras, img2img, pnginfo, settings, txt2img
    from sdstudio.ui import queue as queue_ui
    from sdstudio.ui.generation import SIZE_FIELDS, sampler_choices
    from sdstudio.ui.scripts import script_choices

    samplers, schedules = sampler_choices()
    hires_upscalers = _hires_upscalers(backend)
    # Before the page's Blocks opens: an extension's own gr.Blocks must not land inside it unplaced.
    extension_tabs = backend.extension_tabs()
    assets = assets if assets is not None else backend.page_assets()

    # Hourly, drop Gradio's cached copies of images older than a day (previews pile up otherwise).
    with gr.Blocks(title=title, analytics_enabled=False, fill_width=True, delete_cache=(3600, 86400)) as blocks:
        with gr.Row(elem_id="quicksettings", equal_height=False):
            titles = backend.checkpoint_titles()
            gr.HTML("<b>Checkpoint</b>", scale=0, min_width=90, elem_classes="sdstudio-bar-label")
            checkpoint = gr.Dropdown(
                titles,
                value=backend.current_checkpoint(),
                label="Stable Diffusion checkpoint",
                elem_id="setting_sd_model_checkpoint",
                scale=3,
                allow_custom_value=True,
                min_width=300,
                container=False,
            )
            refresh = gr.Button("Refresh", elem_id="refresh_sd_model_checkpoint", size="sm", scale=0, min_width=80)
            gr.HTML("", scale=4)
        with gr.Tabs(elem_id="tabs") as main_tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                t2i = txt2img.build_txt2img_tab(backend, queue, checkpoint, samplers, schedules, hires_upscalers)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                i2i = img2img.build_img2img_tab(backend, queue, checkpoint, samplers, schedules)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                ext = extras.build_extras_tab(backend, queue)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png = pnginfo.build_pnginfo_tab(backend.check_image, lambda: backend.settings.img_max_decode_mp)
            with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger"):
                checkpoint_merger.build_checkpoint_merger_tab(backend, queue, checkpoint)
            with gr.Tab("Extra Networks", id="extra_networks", elem_id="tab_extra_networks"):
                nets = extra_networks.build_extra_networks_tab(backend)
            if backend.tasks is not None:
                with gr.Tab("Queue", id=QUEUE_TAB_ID, elem_id=f"tab_{QUEUE_TAB_ID}") as queue_tab:
                    tasks_view = queue_ui.build_queue_tab(backend.tasks)
                queue_tab.select(
                    tasks_view.refresh,
                    inputs=tasks_view.selected,
                    outputs=tasks_view.outputs,
                    show_progress="hidden",
                    api_visibility="private",
                )
            extensions.build_extension_tabs(backend, extension_tabs)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings.build_settings_tab(backend, queue)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions") as extensions_tab:
                installed = extensions.build_extensions_tab(backend, assets.problems)
        localization = gr.JSON(visible=False, elem_id="sdstudio_localization")

        size_fields = [tab.fields[name] for tab in (t2i, i2i) for name in SIZE_FIELDS]

        settings.wire_checkpoint_choice(backend, queue, checkpoint, size_fields)

        def on_refresh():
            return gr.Dropdown(choices=backend.refresh_checkpoints(), value=backend.current_checkpoint())

        refresh.click(on_refresh, outputs=checkpoint, show_progress="hidden", api_visibility="private")

        def on_page_load():
            # The scripts may have changed since the page was built (Extensions tab, another page).
            return [
                gr.Dropdown(choices=script_choices([entry.title for entry in backend.selectable_scripts(tab.kind)]))
                for tab in (t2i, i2i)
            ]

        script_lists = [tab.scripts.dropdown for tab in (t2i, i2i) if tab.scripts is not None]
        if len(script_lists) == 2:
            blocks.load(on_page_load, outputs=script_lists, show_progress="hidden", api_visibility="private")
        # The page reads the localization setting each time it opens, as A1111 reads it when it builds its page.
        blocks.load(backend.localization, outputs=localization, show_progress="hidden", api_visibility="private").then(
            None, inputs=localization, js="(mapping) => { window.sdstudioLocalize(mapping); }"
        )
        extensions_tab.select(
            lambda: extensions.listing_updates(backend),
            outputs=installed.outputs,
            show_progress="hidden",
            api_visibility="private",
        )
        extra_networks.wire_extra_networks(nets, backend, {"txt2img": t2i.row.prompt, "img2img": i2i.row.prompt})
        _wire_send_to(main_tabs, t2i, i2i, ext, png, backend)
    return blocks


def _hires_upscalers(backend) -> list[str]:
    from sdstudio.engine.request import hires_upscaler_names

    try:
        return hires_upscaler_names(backend.upscaler_names())
    except Exception:  # a broken model folder must not keep the UI from starting
        return hires_upscaler_names()


def _open_gallery_image(gallery_value, index: int | None):
    """The PIL image at `index` of a gallery value (first when out of range), or None."""
    from PIL import Image

    if not gallery_value:
        return None
    index = index if index is not None and 0 <= index < len(gallery_value) else 0
    item = gallery_value[index]
    path = item[0] if isinstance(item, (tuple, list)) else item
    with Image.open(path) as image:
        image.load()
        return image.copy()


def _alwayson_scripts(tab) -> list[Any]:
    return tab.scripts.alwayson if tab.scripts is not None else []


def _paste_targets(tab) -> list[Any]:
    """The components a paste fills on a generation tab: prompts, its request fields, its always-on scripts'."""
    scripts = [component for script in _alwayson_scripts(tab) for component in script.components]
    return [tab.row.prompt, tab.row.negative_prompt, *tab.field_components(), *scripts]


def paste_values(backend, tab, infotext: str, skip: Any) -> list[Any]:
    """One value per `_paste_targets(tab)` component from a pasted infotext (`skip`: leave it as it is)."""
    from sdstudio.ui.paste import alwayson_values, fields_from_parameters, values_for_components

    params = backend.pasted_parameters(infotext)
    fields = fields_from_parameters(params, tab.kind)
    found = backend.script_args_from_infotext(tab.kind, params) if params else {}
    return [
        *values_for_components(fields, ["prompt", "negative_prompt", *tab.field_names()], skip),
        *alwayson_values(_alwayson_scripts(tab), found, params, skip),
    ]


def _wire_send_to(main_tabs, t2i, i2i, ext, png, backend) -> None:
    """ "Send to ..." buttons: image and parameters go to the target tab, which is then shown."""
    import gradio as gr

    from sdstudio.ui.generation import infotext_for_index

    t2i_targets = _paste_targets(t2i)
    i2i_targets = _paste_targets(i2i)
    mode, mode_tabs = i2i.extra["mode"], i2i.extra["mode_tabs"]
    init_image, editor = i2i.extra["init_image"], i2i.extra["inpaint_editor"]

    def to_img2img_values(image, infotext: str, target_mode: str) -> list[Any]:
        image_value = gr.skip() if image is None else image
        editor_value = gr.skip() if image is None else {"background": image, "layers": [], "composite": image}
        return [
            image_value if target_mode == "img2img" else gr.skip(),
            editor_value if target_mode == "inpaint" else gr.skip(),
            target_mode,
            gr.Tabs(selected=target_mode),
            gr.Tabs(selected="img2img"),
            *paste_values(backend, i2i, infotext, gr.skip()),
        ]

    img2img_outputs = [init_image, editor, mode, mode_tabs, main_tabs, *i2i_targets]

    for source in (t2i, i2i):
        out = source.output
        for button, target_mode in ((out.send_to_img2img, "img2img"), (out.send_to_inpaint, "inpaint")):

            def send(gallery_value, index, info, target_mode=target_mode):
                image = _open_gallery_image(gallery_value, index)
                return to_img2img_values(image, infotext_for_index(info or {}, index), target_mode)

            button.click(
                send,
                inputs=[out.gallery, out.selected, out.info],
                outputs=img2img_outputs,
                show_progress="hidden",
                api_visibility="private",
            )

        def send_extras(gallery_value, index):
            image = _open_gallery_image(gallery_value, index)
            return (gr.skip() if image is None else image), gr.Tabs(selected="extras")

        out.send_to_extras.click(
            send_extras,
            inputs=[out.gallery, out.selected],
            outputs=[ext.image, main_tabs],
            show_progress="hidden",
            api_visibility="private",
        )

    def png_to_txt2img(infotext):
        return [gr.Tabs(selected="txt2img"), *paste_values(backend, t2i, infotext, gr.skip())]

    png.send_to_txt2img.click(
        png_to_txt2img,
        inputs=png.infotext,
        outputs=[main_tabs, *t2i_targets],
        show_progress="hidden",
        api_visibility="private",
    )

    def open_path(path):
        from sdstudio.postprocess.image_files import decode_client_image

        if not path:
            return None
        return decode_client_image(Path(path), "image", backend.settings.img_max_decode_mp).convert("RGB")

    for button, target_mode in ((png.send_to_img2img, "img2img"), (png.send_to_inpaint, "inpaint")):

        def png_send(path, infotext, target_mode=target_mode):
            return to_img2img_values(open_path(path), infotext, target_mode)

        button.click(
            png_send,
            inputs=[png.image, png.infotext],
            outputs=img2img_outputs,
            show_progress="hidden",
            api_visibility="private",
        )

    png.send_to_extras.click(
        lambda path: (open_path(path) or gr.skip(), gr.Tabs(selected="extras")),
        inputs=png.image,
        outputs=[ext.image, main_tabs],
        show_progress="hidden",
        api_visibility="private",
    )


# What Gradio's login form needs before anyone has logged in: the page itself (Gradio shows a browser
# without a session the form, not the UI), the login route, and the frontend's own static files.
LOGIN_PAGE_PATHS = (
    "/",
    "/login",
    "/login/",
    "/favicon.ico",
    "/theme.css",
    "/gradio_api/theme.css",
    "/manifest.json",
    "/robots.txt",
)
LOGIN_PAGE_PREFIXES = ("/assets/", "/static/", "/svelte/")


def page_head(assets: PageAssets | None = None) -> str:
    """The page's head: sdstudio's scripts (keys, A1111's page helpers, localization), then the extensions' files."""
    from sdstudio.ui.localization import localization_script
    from sdstudio.ui.page_assets import page_hooks_script

    return UI_HEAD + page_hooks_script() + localization_script() + (assets.head if assets is not None else "")


def mount_ui(api, blocks, auth=None, path: str = "/", assets: PageAssets | None = None):
    """Mount the Blocks on the FastAPI app (after the API routes, which keep precedence); returns Gradio's app.

    `auth` is Gradio's: (user, password) pairs or a `check(user, password) -> bool`. `assets` are
    the enabled extensions' scripts and style sheets (UiBackend.page_assets), put in the page's head.
    """
    import gradio as gr
    from starlette.routing import Mount

    blocks.queue(default_concurrency_limit=None)
    gr.mount_gradio_app(
        api,
        blocks,
        path=path,
        auth=auth or None,
        footer_links=["settings"],
        run_history=False,
        ssr_mode=False,
        mcp_server=False,
        theme=ui_theme(),
        css=UI_CSS,
        head=page_head(assets),
        enable_monitoring=False,
        show_error=True,
        pwa=False,
    )
    return next(route.app for route in reversed(api.routes) if isinstance(route, Mount))


def login_session_check(gradio_app):
    """`has_session(cookies)`: whether a request carries the cookie of a login on `gradio_app`'s form."""
    names = (f"access-token-{gradio_app.cookie_id}", f"access-token-unsecure-{gradio_app.cookie_id}")

    def has_session(cookies) -> bool:
        return any(cookies.get(name) in gradio_app.tokens for name in names if cookies.get(name))

    return has_session


def end_session_streams(gradio_app) -> None:
    """End the pages' heartbeat streams, which otherwise stay open and keep a graceful shutdown waiting."""
    gradio_app.stop_event.set()
