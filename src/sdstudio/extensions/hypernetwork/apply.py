"""Hypernetworks on a UNet for one job: forward pre-hooks on every attention's to_k and to_v, removed after.

As in A1111 (`apply_hypernetworks`, used by every cross-attention forward including the
self-attention ones, whose context is the hidden state itself): the input of `to_k` goes
through the k module of the hypernetwork's layer for that width, the input of `to_v` through
its v module; several hypernetworks chain in prompt order. The weights of the UNet are never
touched, and the hooks' handles are removed on exit (also on errors), so the next job without
a tag runs the very same modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from sdstudio.extensions.hypernetwork.network import Hypernetwork, HypernetworkModule


@dataclass
class AppliedHypernetworks:
    """What got hooked: (attention path, "k"/"v", width) per hook; positions of networks that matched no layer."""

    hooked: list[tuple[str, str, int]] = field(default_factory=list)
    unmatched: list[int] = field(default_factory=list)


def attention_projections(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Linear, torch.nn.Linear]]:
    """(path, to_k, to_v) of every attention block of the UNet (self- and cross-attention)."""
    found = []
    for path, module in unet.named_modules():
        to_k, to_v = getattr(module, "to_k", None), getattr(module, "to_v", None)
        if isinstance(to_k, torch.nn.Linear) and isinstance(to_v, torch.nn.Linear):
            found.append((path, to_k, to_v))
    return found


def _context_hook(module: HypernetworkModule, multiplier: float):
    """A pre-hook giving the projection `context + layers(context) * multiplier` (in the module's float32)."""
    weight = next(module.parameters())

    def hook(_layer: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        context = args[0]
        if weight.device != context.device:  # offloaded models run where their input is, not where weights rest
            module.to(context.device)
        changed = module(context.to(weight.dtype), multiplier).to(context.dtype)
        return (changed, *args[1:])

    return hook


@contextmanager
def hypernetworks_applied(
    unet: torch.nn.Module, networks: Sequence[tuple[Hypernetwork, float]]
) -> Iterator[AppliedHypernetworks]:
    """Apply `(hypernetwork, multiplier)` pairs to the UNet for the block's duration; exactly undone after."""
    report = AppliedHypernetworks()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        if networks:
            projections = attention_projections(unet)
            device = next(unet.parameters()).device
            for number, (net, multiplier) in enumerate(networks):
                matched = False
                net.to(device)
                for path, to_k, to_v in projections:
                    pair = net.layers.get(to_k.in_features)
                    if pair is None or to_v.in_features != to_k.in_features:
                        continue
                    matched = True
                    for letter, projection, module in (("k", to_k, pair[0]), ("v", to_v, pair[1])):
                        handles.append(projection.register_forward_pre_hook(_context_hook(module, multiplier)))
                        report.hooked.append((path, letter, to_k.in_features))
                if not matched:
                    report.unmatched.append(number)
        yield report
    finally:
        for handle in handles:
            handle.remove()
