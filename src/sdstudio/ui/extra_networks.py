"""The Extra Networks tab: LoRA, embedding and hypernetwork cards; a click adds the card's text to a prompt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdstudio.ui.backend import NetworkCard, UiBackend

CARD_SIZE = 256
KINDS = (("lora", "Lora"), ("embedding", "Textual Inversion"), ("hypernetwork", "Hypernetworks"))


def placeholder_card(name: str):
    """A plain card image with the name on it, for networks without a preview image."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (CARD_SIZE, CARD_SIZE), (48, 52, 64))
    draw = ImageDraw.Draw(image)
    text = name if len(name) <= 28 else name[:27] + "…"
    draw.text((12, CARD_SIZE - 28), text, fill=(235, 235, 240))
    return image


def gallery_items(cards: list[NetworkCard]) -> list[tuple[Any, str]]:
    """(image, caption) pairs for a gallery of cards."""
    return [(str(card.preview) if card.preview else placeholder_card(card.name), card.name) for card in cards]


def insert_into_prompt(prompt: str, text: str) -> str:
    """Append `text` to the prompt, comma-separated, unless it is already there (A1111 toggles it)."""
    prompt = prompt or ""
    if text in prompt:
        return prompt.replace(f", {text}", "").replace(f"{text}, ", "").replace(text, "").strip()
    if not prompt.strip():
        return text
    separator = "" if prompt.rstrip().endswith(",") else ","
    return f"{prompt.rstrip()}{separator} {text}"


@dataclass
class ExtraNetworksTab:
    """The target radio and the per-kind galleries (wired to the prompts by the page)."""

    target: Any
    galleries: dict[str, Any]
    cards: dict[str, Any]  # gr.State per kind: the card list behind the gallery
    refresh: Any


def build_extra_networks_tab(backend: UiBackend) -> ExtraNetworksTab:
    """Build the tab (inside an open gr.Tab)."""
    with gr.Row():
        target = gr.Radio(
            ["txt2img", "img2img"],
            value="txt2img",
            label="Insert into the prompt of",
            elem_id="extra_networks_target",
            scale=3,
        )
        refresh = gr.Button("Refresh", elem_id="extra_networks_refresh", scale=1, size="sm")
    galleries: dict[str, Any] = {}
    states: dict[str, Any] = {}
    with gr.Tabs(elem_id="extra_networks_tabs"):
        for kind, title in KINDS:
            with gr.Tab(title, id=f"extra_networks_{kind}"):
                cards = backend.network_cards(kind)
                folders = ", ".join(f"`{folder}`" for folder in backend.paths.folders(kind))
                gr.Markdown(
                    f"Files in {folders}; preview: a `.png` (or `.preview.png`) beside the file. "
                    "Click a card to add it to the prompt; click again to remove it."
                )
                states[kind] = gr.State([(c.name, c.prompt_text) for c in cards])
                galleries[kind] = gr.Gallery(
                    gallery_items(cards),
                    label=title,
                    show_label=False,
                    columns=6,
                    fit_columns=False,
                    height="auto",
                    allow_preview=False,
                    elem_id=f"extra_networks_{kind}_cards",
                    interactive=False,
                    object_fit="cover",
                )
    return ExtraNetworksTab(target, galleries, states, refresh)


def wire_extra_networks(tab: ExtraNetworksTab, backend: UiBackend, prompts: dict[str, Any]) -> None:
    """Clicking a card toggles its text in the chosen tab's prompt; Refresh rescans the folders."""
    prompt_list = [prompts["txt2img"], prompts["img2img"]]
    for kind, gallery in tab.galleries.items():

        def on_select(cards, target, txt_prompt, img_prompt, evt: gr.SelectData):
            if evt.index is None or not 0 <= evt.index < len(cards):
                return gr.skip(), gr.skip()
            text = cards[evt.index][1]
            if target == "img2img":
                return gr.skip(), insert_into_prompt(img_prompt, text)
            return insert_into_prompt(txt_prompt, text), gr.skip()

        gallery.select(
            on_select,
            inputs=[tab.cards[kind], tab.target, *prompt_list],
            outputs=prompt_list,
            show_progress="hidden",
            api_visibility="private",
        )

    kinds = list(tab.galleries)

    def refresh():
        outputs = []
        for kind in kinds:
            cards = backend.network_cards(kind)
            outputs += [gallery_items(cards), [(c.name, c.prompt_text) for c in cards]]
        return outputs

    outputs = []
    for kind in kinds:
        outputs += [tab.galleries[kind], tab.cards[kind]]
    tab.refresh.click(refresh, outputs=outputs, api_visibility="private")
