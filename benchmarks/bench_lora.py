"""Per-job cost of LoRA application: peft adapters vs merge-with-backup (A1111's way).

Claim checked: applying a LoRA for one job and removing it afterwards costs little next to
the job itself, and removal restores the base model bit-for-bit. Builds random SD1.5-sized
components from their configs (nothing downloaded) and a kohya-layout LoRA on every
transformer Linear/1x1 conv of the UNet and every attention/MLP Linear of CLIP-L (what a
typical community LoRA touches), then times, per strategy: apply, remove, and one UNet
step with the LoRA on (adapters add low-rank matmuls to each step; merge adds nothing).

    .venv/bin/python benchmarks/bench_lora.py [--size sd15|tiny] [--rank 32] [--steps 20]

Prints a table; "job overhead" = apply + remove + steps x (step with LoRA - base step measured
just before it),
and its ratio to the base job's UNet time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def components(size: str):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    if size == "sd15":
        unet = UNet2DConditionModel(
            sample_size=64,
            cross_attention_dim=768,
            attention_head_dim=8,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
        )
        te = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                hidden_act="quick_gelu",
            )
        )
        latent = 64
    else:
        unet = UNet2DConditionModel(
            sample_size=16,
            cross_attention_dim=128,
            attention_head_dim=8,
            layers_per_block=1,
            block_out_channels=(64, 128, 128),
            down_block_types=("CrossAttnDownBlock2D",) * 3,
            up_block_types=("CrossAttnUpBlock2D",) * 3,
        )
        te = CLIPTextModel(
            CLIPTextConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2)
        )
        latent = 16
    return unet.eval().requires_grad_(False), te.eval().requires_grad_(False), latent


def kohya_lora(unet, te, rank: int) -> dict[str, torch.Tensor]:
    from sdstudio.training.lora_training import text_encoder_lora_targets, unet_lora_targets

    g = torch.Generator().manual_seed(1)
    tensors = {}
    for prefix, model, targets in (
        ("lora_unet_", unet, unet_lora_targets(unet)),
        ("lora_te_", te, text_encoder_lora_targets(te)),
    ):
        for path in targets:
            module = model.get_submodule(path)
            key = prefix + (
                ("text_model." + path) if prefix == "lora_te_" and not hasattr(model, "text_model") else path
            ).replace(".", "_")
            if isinstance(module, torch.nn.Conv2d):
                down, up = (
                    torch.randn(rank, module.in_channels, 1, 1, generator=g),
                    torch.randn(module.out_channels, rank, 1, 1, generator=g),
                )
            else:
                down, up = (
                    torch.randn(rank, module.in_features, generator=g),
                    torch.randn(module.out_features, rank, generator=g),
                )
            tensors[f"{key}.lora_down.weight"] = down * 0.01
            tensors[f"{key}.lora_up.weight"] = up * 0.01
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    return tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="steps of the job the overhead is compared with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--latent", type=int, default=None, help="latent size (default: 64 for sd15 = 512 px, 16 for tiny)"
    )
    args = parser.parse_args()
    from safetensors.torch import save_file

    from sdstudio.extensions.lora import LoraActivation, LoraLibrary

    torch.set_grad_enabled(False)
    unet, te, latent = components(args.size)
    latent = args.latent or latent
    folder = Path(tempfile.mkdtemp())
    tensors = kohya_lora(unet, te, args.rank)
    save_file(tensors, str(folder / "bench.safetensors"))
    modules = sum(1 for k in tensors if k.endswith(".alpha"))
    x = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(2))
    ids = torch.full((1, 77), 49407)
    ids[0, 0] = 49406

    def step() -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        context = te(ids)[0]
        out = unet(x, torch.tensor([500]), encoder_hidden_states=context).sample
        return out, time.perf_counter() - start

    step()  # warm-up
    base_out, _ = step()
    base_step = min(step()[1] for _ in range(args.repeats))
    rows = []
    for strategy in ("adapters", "merge"):
        library = LoraLibrary(folder, strategy=strategy)
        library.load(library.find("bench"))  # file parsing is cached across jobs; time the per-job part
        applies, removes, steps, bases = [], [], [], []
        for _ in range(args.repeats):
            bases.append(step()[1])  # paired with the LoRA step below, so load changes cancel out
            start = time.perf_counter()
            context = library.apply(unet, [te], [LoraActivation("bench")])
            report = context.__enter__()
            applies.append(time.perf_counter() - start)
            out, t = step()
            steps.append(t)
            start = time.perf_counter()
            context.__exit__(None, None, None)
            removes.append(time.perf_counter() - start)
        restored = torch.equal(step()[0], base_out)
        apply_s, remove_s, step_s = min(applies), min(removes), min(steps)
        extra_per_step = min(s - b for s, b in zip(steps, bases))
        paired_base = min(bases)
        overhead = apply_s + remove_s + args.steps * max(0.0, extra_per_step)
        rows.append(
            (
                strategy,
                apply_s,
                remove_s,
                step_s,
                overhead,
                overhead / (args.steps * paired_base),
                restored,
                report.adapter_modules + report.merged_modules,
            )
        )
    print(
        f"LoRA per-job cost, {args.size} UNet + CLIP text encoder, rank {args.rank}, {modules} modules, "
        f"{torch.get_num_threads()} threads, job = {args.steps} steps"
    )
    print(f"base step (TE + UNet, batch 1): {base_step:.3f}s")
    print(
        f"{'strategy':<10}{'apply s':>9}{'remove s':>10}{'step s':>9}"
        f"{'job overhead s':>16}{'ratio to job':>14}{'exact restore':>15}{'modules':>9}"
    )
    for strategy, apply_s, remove_s, step_s, overhead, ratio, restored, count in rows:
        print(
            f"{strategy:<10}{apply_s:>9.3f}{remove_s:>10.3f}{step_s:>9.3f}{overhead:>16.3f}{ratio:>14.3f}{str(restored):>15}{count:>9}"
        )


if __name__ == "__main__":
    main()
