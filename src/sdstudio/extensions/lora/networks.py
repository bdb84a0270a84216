"""LoRA key layouts -> per-module network weights, and the weight change each one makes.

A file's keys are split into (which model, which module, which tensor) by two tables:
`MODEL_PREFIXES` (kohya `lora_unet_`/`lora_te_`/`lora_te1_`/`lora_te2_`, diffusers/peft
`unet.`/`text_encoder.`/`text_encoder_2.`) and `TENSOR_SUFFIXES` (kohya `lora_down`/`lora_up`/
`alpha`, peft `lora_A`/`lora_B`, diffusers `lora.down`/`lora.up`, LyCORIS LoHa `hada_*`,
LoKr `lokr_*`, full `diff`). Adding a layout is adding a row.

The weight change of each network type follows LyCORIS and A1111's
extensions-builtin/Lora/network_{lora,hada,lokr,full}.py:
LoRA  dW = up @ down                          scale alpha / rank
LoHa  dW = (w1a @ w1b) * (w2a @ w2b)         scale alpha / w1b.shape[0]
LoKr  dW = kron(w1 or w1a@w1b, w2 or w2a@w2b) scale alpha / rank of the factorised part (else 1)
full  dW = diff                               scale 1
and the applied change is dW * scale * the tag's multiplier (TE or UNet).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# (key prefix, model it addresses, kohya-style names?)  "te0"/"te1" index the text encoders.
MODEL_PREFIXES: list[tuple[str, str, bool]] = [
    ("lora_unet_", "unet", True),
    ("lora_te1_", "te0", True),
    ("lora_te2_", "te1", True),
    ("lora_te_", "te0", True),
    ("unet.", "unet", False),
    ("text_encoder_2.", "te1", False),
    ("text_encoder.", "te0", False),
    ("base_model.model.", "unet", False),
]

# (key suffix, network type, tensor role); type None = shared by all types.
TENSOR_SUFFIXES: list[tuple[str, str | None, str]] = [
    (".lora_down.weight", "lora", "down"),
    (".lora_up.weight", "lora", "up"),
    (".lora_mid.weight", "lora", "mid"),
    (".lora_A.weight", "lora", "down"),
    (".lora_B.weight", "lora", "up"),
    (".lora.down.weight", "lora", "down"),
    (".lora.up.weight", "lora", "up"),
    (".lora_linear_layer.down.weight", "lora", "down"),
    (".lora_linear_layer.up.weight", "lora", "up"),
    (".hada_w1_a", "loha", "w1a"),
    (".hada_w1_b", "loha", "w1b"),
    (".hada_w2_a", "loha", "w2a"),
    (".hada_w2_b", "loha", "w2b"),
    (".hada_t1", "loha", "t1"),
    (".hada_t2", "loha", "t2"),
    (".lokr_w1", "lokr", "w1"),
    (".lokr_w1_a", "lokr", "w1a"),
    (".lokr_w1_b", "lokr", "w1b"),
    (".lokr_w2", "lokr", "w2"),
    (".lokr_w2_a", "lokr", "w2a"),
    (".lokr_w2_b", "lokr", "w2b"),
    (".lokr_t2", "lokr", "t2"),
    (".diff", "full", "diff"),
    (".diff_b", "full", "diff_b"),
    (".alpha", None, "alpha"),
    (".scale", None, "scale"),
    (".dora_scale", None, "dora_scale"),
]
_SUFFIXES_LONGEST_FIRST = sorted(TENSOR_SUFFIXES, key=lambda row: len(row[0]), reverse=True)

# Roles whose presence means a variant sdstudio does not compute (reported, never guessed).
UNSUPPORTED_ROLES = {
    "mid": "LoCon with Tucker (lora_mid)",
    "t1": "LoHa with Tucker (hada_t1)",
    "t2": "Tucker-decomposed factor (hada_t2/lokr_t2)",
    "dora_scale": "DoRA (dora_scale)",
}


@dataclass
class ModuleNetwork:
    """The tensors one file holds for one module of one model."""

    model: str  # "unet", "te0", "te1"
    key: str  # the module as the file names it (kohya name or dotted path)
    kohya_style: bool
    kind: str | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def alpha(self) -> float | None:
        value = self.tensors.get("alpha")
        return float(value.float().item()) if value is not None else None

    @property
    def unsupported(self) -> str | None:
        """Why this module's network cannot be applied, or None."""
        if self.kind is None:
            return "no weights (only alpha/scale)"
        for role, what in UNSUPPORTED_ROLES.items():
            if role in self.tensors:
                return what
        required = {"lora": ("down", "up"), "loha": ("w1a", "w1b", "w2a", "w2b"), "full": ("diff",)}.get(self.kind, ())
        missing = [r for r in required if r not in self.tensors]
        if self.kind == "lokr":
            if "w1" not in self.tensors and not {"w1a", "w1b"} <= self.tensors.keys():
                missing.append("w1")
            if "w2" not in self.tensors and not {"w2a", "w2b"} <= self.tensors.keys():
                missing.append("w2")
        return f"incomplete {self.kind} weights (missing {', '.join(missing)})" if missing else None

    @property
    def scale(self) -> float:
        """alpha / rank (A1111 NetworkModule.calc_scale): 1 when the file gives no alpha or no rank."""
        if "scale" in self.tensors:
            return float(self.tensors["scale"].float().item())
        alpha, rank = self.alpha, self.rank
        return alpha / rank if alpha is not None and rank else 1.0

    @property
    def rank(self) -> int | None:
        t = self.tensors
        if self.kind == "lora":
            return int(t["down"].shape[0])
        if self.kind == "loha":
            return int(t["w1b"].shape[0])
        if self.kind == "lokr":
            if "w1b" in t:
                return int(t["w1b"].shape[0])
            if "w2b" in t:
                return int(t["w2b"].shape[0])
        return None

    def delta_weight(self, weight_shape: torch.Size) -> torch.Tensor:
        """The module's weight change dW * alpha/rank, in float32, shaped like the weight."""
        t = {k: v.float() for k, v in self.tensors.items()}
        if self.kind == "lora":
            delta = t["up"].flatten(1) @ t["down"].flatten(1)
        elif self.kind == "loha":
            delta = (t["w1a"] @ t["w1b"]) * (t["w2a"] @ t["w2b"])
        elif self.kind == "lokr":
            w1 = t["w1"] if "w1" in t else t["w1a"] @ t["w1b"]
            w2 = t["w2"] if "w2" in t else t["w2a"] @ t["w2b"]
            if len(weight_shape) == 4 and w2.dim() == 4:
                w1 = w1[:, :, None, None]
            delta = torch.kron(w1, w2)
        elif self.kind == "full":
            delta = t["diff"]
        else:  # pragma: no cover - guarded by `unsupported`
            raise ValueError(self.kind)
        if delta.numel() != torch.Size(weight_shape).numel():
            raise ValueError(f"shape {tuple(delta.shape)} does not fit weight {tuple(weight_shape)}")
        return delta.reshape(weight_shape) * self.scale

    def delta_bias(self) -> torch.Tensor | None:
        """Bias change of a full network (`diff_b`), scaled like the weight."""
        bias = self.tensors.get("diff_b")
        return bias.float() * self.scale if bias is not None else None


@dataclass
class ParsedLora:
    """A file's networks by (model, module key), plus keys that fit no layout."""

    modules: dict[tuple[str, str], ModuleNetwork]
    unknown_keys: list[str]


def split_key(key: str) -> tuple[str, str, bool, str | None, str] | None:
    """`lora_unet_x.lora_down.weight` -> ("unet", "x", True, "lora", "down"); None for foreign keys."""
    matched = next((row for row in _SUFFIXES_LONGEST_FIRST if key.endswith(row[0])), None)
    if matched is None:
        return None
    suffix, kind, role = matched
    module = key[: -len(suffix)]
    for prefix, model, kohya_style in MODEL_PREFIXES:
        if module.startswith(prefix):
            return model, module[len(prefix) :], kohya_style, kind, role
    if "." in module and not module.startswith("lora_"):
        return "unet", module, False, kind, role  # diffusers UNet-only files have no prefix
    return None


def parse_lora_state_dict(state: dict[str, torch.Tensor]) -> ParsedLora:
    """Group a LoRA state dict by target module (no model needed)."""
    modules: dict[tuple[str, str], ModuleNetwork] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        parts = split_key(key)
        if parts is None:
            unknown.append(key)
            continue
        model, module_key, kohya_style, kind, role = parts
        entry = modules.setdefault((model, module_key), ModuleNetwork(model, module_key, kohya_style))
        if kind is not None:
            entry.kind = entry.kind or kind
        entry.tensors[role] = tensor
    return ParsedLora(modules, unknown)
