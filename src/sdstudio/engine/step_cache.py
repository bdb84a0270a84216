"""A step cache for the UNet: DeepCache's uniform schedule on its shallowest branch (Ma et al. 2023).

Adjacent denoising steps change the UNet's deep, high-level features little. Every `interval`-th
UNet call runs in full and keeps what each deep part returned; the calls between run only the
shallowest branch: `conv_in`, the last layer of the last up block (fed the fresh `conv_in`
feature through its skip connection and the kept output of the layer before it) and `conv_out`.
Everything else returns what it returned at the last full call. DeepCache's own package
rewrites the blocks' `forward` methods and needs a diffusers pipeline; here the deep parts are
wrapped in their module lists for one pass and always put back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class _CacheState:
    """The call count of the pass and what each wrapped part returned at the last full call."""

    interval: int
    calls: int = 0
    outputs: dict[int, Any] = field(default_factory=dict)

    @property
    def reuse(self) -> bool:
        """Whether this call reuses the kept outputs (the first call of a pass never does)."""
        return (self.calls - 1) % self.interval != 0 and bool(self.outputs)


class _Kept(torch.nn.Module):
    """Stands in for one deep part while the cache is on: runs it on full calls, returns its output otherwise."""

    def __init__(self, part: torch.nn.Module, key: int, state: _CacheState) -> None:
        super().__init__()
        self.part = part
        self.key = key
        self.state = state

    def __getattr__(self, name: str) -> Any:
        # The UNet asks its blocks what they are (has_cross_attention, resnets) to decide how to call them.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.part, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.state.reuse:
            return self.state.outputs[self.key]
        output = self.part(*args, **kwargs)
        self.state.outputs[self.key] = output
        return output


def _deep_parts(unet: Any) -> list[tuple[torch.nn.ModuleList, int]]:
    """(module list, index) of every part a cached call skips: all down blocks, the mid block (as its own
    entry), every up block but the last, and all layers of the last up block but its final resnet/attention."""
    parts = [(unet.down_blocks, i) for i in range(len(unet.down_blocks))]
    parts += [(unet.up_blocks, i) for i in range(len(unet.up_blocks) - 1)]
    last = unet.up_blocks[-1]
    parts += [(last.resnets, i) for i in range(len(last.resnets) - 1)]
    attentions = getattr(last, "attentions", None)
    if attentions is not None:
        parts += [(attentions, i) for i in range(len(attentions) - 1)]
    return parts


@contextmanager
def step_cache(unet: Any, interval: int) -> Iterator[None]:
    """Run the block with the step cache on `unet` (a diffusers UNet2DConditionModel); off for interval <= 1."""
    if interval <= 1:
        yield
        return
    state = _CacheState(interval)
    parts = _deep_parts(unet)
    originals: list[tuple[Any, str, torch.nn.Module]] = []

    def count_call(module: torch.nn.Module, args: Any) -> None:
        state.calls += 1

    hook = unet.register_forward_pre_hook(count_call)
    try:
        for key, (container, index) in enumerate(parts):
            originals.append((container, str(index), container[index]))
            container[index] = _Kept(container[index], key, state)
        originals.append((unet, "mid_block", unet.mid_block))
        unet.mid_block = _Kept(unet.mid_block, len(parts), state)
        yield
    finally:
        hook.remove()
        for container, name, module in reversed(originals):
            if isinstance(container, torch.nn.ModuleList):
                container[int(name)] = module
            else:
                setattr(container, name, module)
