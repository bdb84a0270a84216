"""A1111's token merging (ToMe for Stable Diffusion, Bolya & Hoffman 2023) through the `tomesd` library.

Before a pass's self-attention, tokens that are alike are merged (by bipartite soft matching)
and unmerged after it, so the attention of the largest latent resolution runs on fewer tokens.
A1111 applies it with `use_rand=False` (the same image for the same seed) and merges in
self-attention only; so does this. The UNet is patched for one pass and always restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sdstudio.config import Settings

if TYPE_CHECKING:
    from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest


def token_merging_ratio(
    request: Txt2ImgRequest | Img2ImgRequest, settings: Settings, override_settings: dict[str, Any], for_hr: bool
) -> float:
    """The ratio a pass runs with, chosen as A1111's `get_token_merging_ratio` chooses it.

    txt2img: `token_merging_ratio`; its hires pass `token_merging_ratio_hr`, else the first pass's.
    img2img: `token_merging_ratio` when the job overrides it, else `token_merging_ratio_img2img`,
    else `token_merging_ratio`.
    """
    from sdstudio.engine.request import Img2ImgRequest

    if isinstance(request, Img2ImgRequest):
        if "token_merging_ratio" in override_settings:
            return settings.token_merging_ratio
        return settings.token_merging_ratio_img2img or settings.token_merging_ratio
    if for_hr:
        return settings.token_merging_ratio_hr or settings.token_merging_ratio
    return settings.token_merging_ratio


@contextmanager
def merged_tokens(unet: Any, ratio: float) -> Iterator[None]:
    """Run the block with token merging at `ratio` on `unet` (a diffusers UNet); nothing when ratio is 0."""
    if ratio <= 0:
        yield
        return
    import tomesd

    tomesd.apply_patch(unet, ratio=ratio, use_rand=False, merge_attn=True, merge_crossattn=False, merge_mlp=False)
    try:
        yield
    finally:
        tomesd.remove_patch(unet)  # the blocks' classes back, its hook removed
        for module in unet.modules():  # and the record it leaves on each patched module
            if "_tome_info" in vars(module):
                del module._tome_info
