"""The Extensions tab (A1111's: installed list, enable/disable, install from a folder or URL, remove)
and the tabs extensions add through their `ui_tabs` callbacks.

Every change goes through the extension manager (app.extensions), which saves it and reloads
the scripts at once, so jobs and the API use them from the next request. This page was built
at start: the Script dropdown's list follows a page reload, and the controls of scripts added
since sdstudio started appear after a restart (A1111 rebuilds its page for that). A refused
change is a notice naming the problem, never a traceback.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdstudio.errors import SdStudioError
from sdstudio.ui.backend import UiBackend
from sdstudio.ui.jobs import status_html

log = logging.getLogger(__name__)

COLUMNS = ["Extension", "Enabled", "Scripts", "Errors", "Remote", "Version"]
ERRORS_SHOWN = 3  # the latest problems of each extension in the table
RELOAD_NOTE = (
    "Changes take effect at once for new jobs and the API. Reload the page to update the Script dropdowns; "
    "the controls of scripts added since sdstudio started, and their options in Settings, appear after a restart."
)
NO_ACCESS_NOTE = (
    "Installing and changing extensions from the page is off while sdstudio listens on all interfaces "
    "(--listen), as in A1111: use `sdstudio extensions ...` on the machine itself."
)


def extension_rows(backend: UiBackend) -> list[list[str]]:
    """The table's rows: name, enabled, its scripts, its latest errors, git remote and version."""
    return [
        [
            status.name,
            "yes" if status.enabled else "no",
            ", ".join(status.scripts),
            "\n".join(status.errors[-ERRORS_SHOWN:]),
            status.remote,
            status.version,
        ]
        for status in backend.extension_statuses()
    ]


def _changed(message: str) -> str:
    return status_html(f"{message}. {RELOAD_NOTE}", "done")


def _refused(action: str, exc: Exception) -> str:
    """The notice for a refused change: the user's mistake as it is, anything else named but without a traceback."""
    if isinstance(exc, SdStudioError):
        return status_html(str(exc), "error")
    log.exception("extensions: %s failed", action)
    return status_html(f"{action} failed: {type(exc).__name__}: {exc}", "error")


def apply_enabled(backend: UiBackend, enabled: list[str] | None) -> str:
    """Enable the checked extensions and disable the others (saved); the notice to show."""
    try:
        changed = backend.set_enabled_extensions(list(enabled or []))
    except Exception as exc:
        return _refused("Changing extensions", exc)
    if not changed:
        return status_html("No extension was enabled or disabled")
    states = {status.name: status.enabled for status in backend.extension_statuses()}
    parts = [f"{name} {'enabled' if states.get(name) else 'disabled'}" for name in changed]
    return _changed("; ".join(parts))


def install_extension(backend: UiBackend, source: str | None, name: str | None) -> str:
    """Install from a folder or git URL; the notice to show (with the scripts it brought, or its errors)."""
    try:
        status = backend.install_extension(source or "", name)
    except Exception as exc:
        return _refused("Installing", exc)
    scripts = ", ".join(status.scripts) or "no scripts"
    message = _changed(f"Installed {status.name} into {status.path} ({scripts})")
    if status.errors:
        message += status_html(f"{status.name} has problems: {'; '.join(status.errors[-ERRORS_SHOWN:])}", "warning")
    return message


def remove_extension(backend: UiBackend, name: str | None) -> str:
    """Delete an installed extension; the notice to show."""
    try:
        backend.remove_extension(name or "")
    except Exception as exc:
        return _refused("Removing", exc)
    return _changed(f"Removed {name}")


@dataclass
class ExtensionsTab:
    """The tab's components that show the installed list, and how to redraw them."""

    table: Any
    enabled: Any
    remove_name: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.table, self.enabled, self.remove_name]


def listing_updates(backend: UiBackend) -> list[Any]:
    """New values for the table, the enabled checkboxes and the remove dropdown."""
    statuses = backend.extension_statuses()
    names = [status.name for status in statuses]
    return [
        extension_rows(backend),
        gr.CheckboxGroup(choices=names, value=[s.name for s in statuses if s.enabled]),
        gr.Dropdown(choices=names, value=None),
    ]


def page_file_problems_html(problems: Sequence[tuple[str, str]]) -> str:
    """The note naming the extensions' page files (javascript/*.js, style.css) the page was built without."""
    if not problems:
        return ""
    lines = "".join(f"<li>{html.escape(owner)}: {html.escape(message)}</li>" for owner, message in problems)
    return (
        '<div class="sdstudio-status sdstudio-status-warning">'
        f"Some extensions' page files could not be read; the page works without them:<ul>{lines}</ul></div>"
    )


def build_extensions_tab(backend: UiBackend, page_file_problems: Sequence[tuple[str, str]] = ()) -> ExtensionsTab:
    """Build the tab (inside an open gr.Tab) and wire its buttons; `page_file_problems` are shown as a note."""
    statuses = backend.extension_statuses()
    names = [status.name for status in statuses]
    access = backend.extension_access
    with gr.Tabs(elem_id="extensions_tabs"):
        with gr.Tab("Installed", id="extensions_installed", elem_id="extensions_installed_tab"):
            gr.Markdown(RELOAD_NOTE if access else NO_ACCESS_NOTE, elem_id="extensions_note")
            gr.HTML(
                page_file_problems_html(page_file_problems),
                visible=bool(page_file_problems),
                elem_id="extensions_page_file_problems",
            )
            with gr.Row():
                apply = gr.Button(
                    "Apply and reload",
                    variant="primary",
                    elem_id="extensions_apply",
                    interactive=access,
                    size="md",
                    scale=0,
                )
                refresh = gr.Button("Refresh list", elem_id="extensions_refresh", size="md", scale=0)
            enabled = gr.CheckboxGroup(
                names,
                value=[status.name for status in statuses if status.enabled],
                label="Enabled extensions",
                elem_id="extensions_enabled",
                interactive=access,
            )
            result = gr.HTML("", elem_id="extensions_result")
            table = gr.Dataframe(
                value=extension_rows(backend),
                headers=COLUMNS,
                datatype="str",
                interactive=False,
                wrap=True,
                elem_id="extensions_table",
            )
            with gr.Row():
                remove_name = gr.Dropdown(
                    names, value=None, label="Extension to remove", elem_id="extensions_remove_name", scale=2
                )
                remove = gr.Button("Remove", variant="stop", elem_id="extensions_remove", interactive=access, scale=0)
        with gr.Tab("Install from path or URL", id="extensions_install_tab", elem_id="extensions_install_tab"):
            source = gr.Textbox(
                label="Folder or git repository URL",
                placeholder="/path/to/extension, file:///path/to/repo.git or https://…",
                elem_id="extensions_install_source",
                interactive=access,
            )
            name = gr.Textbox(
                label="Local directory name (empty: from the source)",
                elem_id="extensions_install_name",
                interactive=access,
            )
            install = gr.Button("Install", variant="primary", elem_id="extensions_install", interactive=access)
            install_result = gr.HTML("", elem_id="extensions_install_result")

    tab = ExtensionsTab(table, enabled, remove_name)

    def with_listing(action: Callable[..., str]) -> Callable[..., list[Any]]:
        def run(*values):
            return [action(backend, *values), *listing_updates(backend)]

        run.__name__ = action.__name__
        return run

    apply.click(with_listing(apply_enabled), inputs=enabled, outputs=[result, *tab.outputs], api_visibility="private")
    remove.click(
        with_listing(remove_extension), inputs=remove_name, outputs=[result, *tab.outputs], api_visibility="private"
    )
    install.click(
        with_listing(install_extension),
        inputs=[source, name],
        outputs=[install_result, *tab.outputs],
        api_visibility="private",
    )
    refresh.click(lambda: listing_updates(backend), outputs=tab.outputs, api_visibility="private")
    return tab


# -- tabs from extensions (on_ui_tabs) ----------------------------------------------------------------


def build_extension_tabs(backend: UiBackend, tabs: list[tuple[str, Any, str, str]]) -> list[str]:
    """One gr.Tab per (owner, builder, title, elem_id) the ui_tabs callbacks gave (inside the open gr.Tabs).

    `builder` is called inside the tab (or, an A1111-style gr.Blocks, rendered there). One that
    raises is reported under its extension's name and its tab left out; the page goes on.
    Returns the titles of the tabs built.
    """
    built = []
    for owner, builder, title, elem_id in tabs:
        with gr.Tab(title, elem_id=f"tab_{elem_id}") as tab:
            try:
                if isinstance(builder, gr.Blocks):
                    builder.render()
                else:
                    builder()
            except Exception as exc:  # an extension's bug must not keep the page from being built
                tab.visible = False
                backend.report_extension(
                    owner, f"ui_tabs: the tab {title!r} failed to build and is left out: {type(exc).__name__}: {exc}"
                )
                continue
        built.append(title)
    return built
