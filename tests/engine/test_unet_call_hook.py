"""The denoiser hooks' UNet keyword arguments (what ControlNet units add to each guided call)."""

from __future__ import annotations

from typing import Any

import torch
from tiny_models import sdxl_added_conditioning, tiny_controlnet, tiny_unet

from sdstudio.engine.sampling import (
    CFGDenoisedParams,
    CFGDenoiserParams,
    FixedConditioning,
    GuidedUNet,
    UNetCallParams,
)


class ResidualHooks:
    """Hooks that add one ControlNet's residuals (times `scale`) to every call; records the calls."""

    def __init__(self, controlnet: torch.nn.Module | None, scale: float = 1.0, copies: int = 1) -> None:
        self.controlnet, self.scale, self.copies = controlnet, scale, copies
        self.calls: list[UNetCallParams] = []

    def cfg_denoiser(self, params: CFGDenoiserParams) -> None:
        pass

    def cfg_denoised(self, params: CFGDenoisedParams) -> None:
        pass

    def unet_kwargs(self, params: UNetCallParams) -> dict[str, Any]:
        self.calls.append(params)
        if self.controlnet is None:
            return {}
        hint = torch.ones(params.x_in.shape[0], 3, params.x_in.shape[2] * 8, params.x_in.shape[3] * 8)
        down, mid = self.controlnet(
            params.x_in, params.t_in, encoder_hidden_states=params.text, controlnet_cond=hint, return_dict=False
        )
        return {
            "down_block_additional_residuals": tuple(d * self.scale * self.copies for d in down),
            "mid_block_additional_residual": mid * self.scale * self.copies,
        }


class SummedHooks(ResidualHooks):
    """Two hooks' worth of the same residuals given as two dicts merged by the engine's rule."""

    def unet_kwargs(self, params: UNetCallParams) -> dict[str, Any]:
        from sdstudio.engine.sampling import merge_unet_kwargs

        one = super().unet_kwargs(params)
        return merge_unet_kwargs(one, one)


def _guided(unet: torch.nn.Module, hooks: Any) -> torch.Tensor:
    torch.manual_seed(0)
    cond = torch.randn(2, 77, 32)
    conditioning = FixedConditioning(cond, torch.zeros(2, 77, 32))
    guided = GuidedUNet(unet, conditioning, 7.0, hooks=hooks, total_steps=4)
    x = torch.randn(2, 4, 8, 8)
    return guided(x, torch.tensor([500.0]), 1)


def test_no_hook_and_a_hook_adding_nothing_give_identical_output():
    unet = tiny_unet()
    silent = ResidualHooks(None)
    assert torch.equal(_guided(unet, None), _guided(unet, silent))
    call = silent.calls[0]
    assert call.batch == 2 and call.row_order == [0, 1, 0, 1] and call.step == 1 and call.total_steps == 4
    assert call.x_in.shape[0] == 4 and call.text.shape[0] == 4


def test_hook_residuals_change_the_output_and_several_are_summed():
    unet = tiny_unet()
    controlnet = tiny_controlnet(unet)
    plain = _guided(unet, None)
    controlled = _guided(unet, ResidualHooks(controlnet))
    assert (controlled - plain).abs().max() > 1e-3
    doubled = _guided(unet, ResidualHooks(controlnet, copies=2))
    summed = _guided(unet, SummedHooks(controlnet))
    assert torch.allclose(doubled, summed, atol=1e-5)
    assert (doubled - controlled).abs().max() > 1e-3


class AddedConditioningHooks(ResidualHooks):
    """Passes the call's SDXL added conditioning on to the ControlNet, as the ControlNet script does."""

    def unet_kwargs(self, params: UNetCallParams) -> dict[str, Any]:
        hint = torch.ones(params.x_in.shape[0], 3, params.x_in.shape[2] * 8, params.x_in.shape[3] * 8)
        down, mid = self.controlnet(
            params.x_in,
            params.t_in,
            encoder_hidden_states=params.text,
            controlnet_cond=hint,
            added_cond_kwargs=params.unet_kwargs["added_cond_kwargs"],
            return_dict=False,
        )
        return {"down_block_additional_residuals": tuple(down), "mid_block_additional_residual": mid}


def test_hooks_get_the_sdxl_added_conditioning_the_call_passes():
    unet = tiny_unet(**sdxl_added_conditioning(32))
    controlnet = tiny_controlnet(unet)
    torch.manual_seed(0)
    conditioning = FixedConditioning(torch.randn(1, 77, 32), torch.zeros(1, 77, 32))

    def added(step: int, rows: list[int]) -> dict[str, Any]:
        return {"added_cond_kwargs": {"text_embeds": torch.ones(len(rows), 32), "time_ids": torch.ones(len(rows), 6)}}

    outputs = []
    for hooks in (None, AddedConditioningHooks(controlnet)):
        guided = GuidedUNet(unet, conditioning, 7.0, unet_kwargs=added, hooks=hooks, total_steps=2)
        outputs.append(guided(torch.ones(1, 4, 8, 8), torch.tensor([500.0]), 0))
    assert (outputs[1] - outputs[0]).abs().max() > 1e-3
