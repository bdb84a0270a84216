"""Extra-network tags such as `<lora:NAME:0.8>`: taken out of the prompt and handed to the engine.

Reproduces A1111's `modules/extra_networks.parse_prompt` (tag pattern `<TYPE:ARGS>`, args
split on ":", `key=value` args named) and the LoRA reading of those args from A1111's
built-in Lora extension (`<lora:NAME:TE:UNET:DYN>`, or `te=`, `unet=`, `dyn=`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sdstudio.errors import InvalidRequest

EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class ExtraNetworkParams:
    """The arguments of one tag: `<lora:name:0.5:unet=0.2>` -> items ["name", "0.5", "unet=0.2"]."""

    items: tuple[str, ...]
    positional: tuple[str, ...] = field(init=False)
    named: dict[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        positional: list[str] = []
        named: dict[str, str] = {}
        for item in self.items:
            # A1111 splits at most twice, so "a=b=c" has three parts and stays positional.
            parts = item.split("=", 2)
            if len(parts) == 2:
                named[parts[0]] = parts[1]
            else:
                positional.append(item)
        object.__setattr__(self, "positional", tuple(positional))
        object.__setattr__(self, "named", named)


def extract_extra_networks(text: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """Remove every `<TYPE:ARGS>` tag from `text`; return the clean text and the tags by type."""
    found: dict[str, list[ExtraNetworkParams]] = {}

    def take(match: re.Match[str]) -> str:
        found.setdefault(match.group(1), []).append(ExtraNetworkParams(tuple(match.group(2).split(":"))))
        return ""

    # A tag ends at a ">"; past the last one there is none, and searching there would cost
    # O(n²) for text such as "<a:<a:<a:..." (with the GIL held: the whole server stalls).
    end = text.rfind(">") + 1
    return EXTRA_NETWORK_TAG.sub(take, text[:end]) + text[end:], found


def extract_extra_networks_batch(prompts: list[str]) -> tuple[list[str], dict[str, list[ExtraNetworkParams]]]:
    """Clean every prompt of a batch; the networks applied are the first prompt's (A1111's rule)."""
    cleaned, first = [], None
    for prompt in prompts:
        text, networks = extract_extra_networks(prompt)
        cleaned.append(text)
        if first is None:
            first = networks
    return cleaned, first or {}


@dataclass(frozen=True)
class LoraTag:
    """A `<lora:...>` tag read as A1111's Lora extension does."""

    name: str
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0
    dyn_dim: int | None = None


def read_lora_tag(params: ExtraNetworkParams) -> LoraTag:
    """`<lora:NAME[:TE[:UNET[:DYN]]]>` plus `te=`/`unet=`/`dyn=`; UNET defaults to TE, TE to 1.0."""
    if not params.positional:
        raise InvalidRequest("prompt", "a <lora:...> tag needs a LoRA name first, as in <lora:NAME:0.8>")
    name = params.positional[0]
    tag = f"<lora:{':'.join(params.items)}>"

    def number(value: str, kind: Callable[[str], _Number]) -> _Number:
        try:
            return kind(value)
        except ValueError:
            raise InvalidRequest("prompt", f"{tag}: {value!r} is not a number; write e.g. <lora:{name}:0.8>") from None

    te = number(params.positional[1], float) if len(params.positional) > 1 else 1.0
    te = number(params.named["te"], float) if "te" in params.named else te
    unet = number(params.positional[2], float) if len(params.positional) > 2 else te
    unet = number(params.named["unet"], float) if "unet" in params.named else unet
    dyn = number(params.positional[3], int) if len(params.positional) > 3 else None
    dyn = number(params.named["dyn"], int) if "dyn" in params.named else dyn
    return LoraTag(name=name, te_multiplier=te, unet_multiplier=unet, dyn_dim=dyn)
