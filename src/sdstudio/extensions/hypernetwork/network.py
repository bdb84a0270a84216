"""A1111's hypernetwork: per context width, two small MLPs that reshape what attention's keys and values see.

File format (A1111 `modules/hypernetworks/hypernetwork.py`, v1.10), a pickled dict:

- an int key per context width (768, 1024, 320, 640, 1280...) -> `(k_state_dict, v_state_dict)`, each
  the state dict of an `nn.Sequential` called `linear` (`linear.0.weight`, `linear.0.bias`, ...);
- `layer_structure` (widths as multiples of the context width, starting and ending with 1),
  `activation_func`, `is_layer_norm`, `weight_initialization`, `use_dropout`, `dropout_structure`,
  `activate_output`, `last_layer_dropout`, `optional_info`, `name`, `step`, `sd_checkpoint`,
  `sd_checkpoint_name`;
- beside it, optionally, `NAME.pt.optim`: `optimizer_name`, `hash`, `optimizer_state_dict`.

The layers of one module, for each step i of the layer structure: a Linear from width·ls[i] to
width·ls[i+1]; the activation (not after the last Linear unless `activate_output`, never for
"linear"); a LayerNorm when `is_layer_norm`; a Dropout when `dropout_structure[i+1] > 0`.
Its output is `x + layers(x) · multiplier`.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch

from sdstudio.errors import InvalidRequest, ModelLoadError

# A1111's names for the activations it lists itself; every class of torch.nn.modules.activation
# is also accepted by its lower-cased name.
NAMED_ACTIVATIONS: tuple[tuple[str, str], ...] = (
    ("relu", "ReLU"),
    ("leakyrelu", "LeakyReLU"),
    ("elu", "ELU"),
    ("swish", "Hardswish"),
    ("tanh", "Tanh"),
    ("sigmoid", "Sigmoid"),
)
WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
DEFAULT_LAYER_STRUCTURE = (1.0, 2.0, 1.0)
MAX_PARAMETERS = 2**28  # 1 GiB of float32: A1111's largest usual networks are a tenth of it
DEFAULT_DROPOUT = 0.3  # A1111's dropout where only `use_dropout` is known
SETTINGS_KEYS = (
    "step",
    "name",
    "layer_structure",
    "activation_func",
    "is_layer_norm",
    "weight_initialization",
    "sd_checkpoint",
    "sd_checkpoint_name",
    "activate_output",
    "use_dropout",
    "dropout_structure",
    "last_layer_dropout",
    "optional_info",
)


def activation_classes() -> dict[str, Callable[[], torch.nn.Module]]:
    """Activation name -> class, as A1111 accepts them ("linear" means none)."""
    import torch.nn.modules.activation as activations

    found: dict[str, Callable[[], torch.nn.Module]] = {
        name.lower(): cast(type[torch.nn.Module], cls)
        for name, cls in inspect.getmembers(activations, inspect.isclass)
        if cls.__module__ == activations.__name__ and issubclass(cls, torch.nn.Module)
    }
    found.update({name: getattr(torch.nn, cls) for name, cls in NAMED_ACTIVATIONS})
    found["linear"] = torch.nn.Identity
    return found


def dropout_from_flags(layer_structure: Sequence[float], use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """A1111's dropout per layer for files that only say `use_dropout` (0.3 between hidden layers)."""
    if not use_dropout:
        return [0.0] * len(layer_structure)
    hidden = [DEFAULT_DROPOUT] * (len(layer_structure) - 3)
    return [0.0, *hidden, DEFAULT_DROPOUT if last_layer_dropout else 0.0, 0.0]


@dataclass(frozen=True)
class HypernetworkStructure:
    """How each module is built: what `layer_structure`, `activation_func`... in the file say."""

    layer_structure: tuple[float, ...] = DEFAULT_LAYER_STRUCTURE
    activation_func: str | None = None
    weight_init: str = "Normal"
    add_layer_norm: bool = False
    activate_output: bool = False
    dropout_structure: tuple[float, ...] | None = None

    def check(self) -> None:
        """InvalidRequest naming the field when the structure cannot be built."""
        layers = self.layer_structure
        if len(layers) < 2 or layers[0] != 1 or layers[-1] != 1:
            raise InvalidRequest("layer_structure", f"must start and end with 1, as in 1, 2, 1 (got {list(layers)})")
        if any(not math.isfinite(x) or x <= 0 or x > 64 for x in layers):
            raise InvalidRequest("layer_structure", f"every width must be above 0 and at most 64 (got {list(layers)})")
        if self.activation_func is not None:
            known = ", ".join(["linear", *(name for name, _ in NAMED_ACTIVATIONS)])
            make = activation_classes().get(self.activation_func)
            try:
                if make is None:
                    raise TypeError
                make()
            except TypeError:  # unknown, or a class that needs arguments (multiheadattention)
                raise InvalidRequest(
                    "activation_func", f"{self.activation_func!r} is not known; use one of {known}"
                ) from None
        if self.weight_init not in WEIGHT_INITS:
            raise InvalidRequest("weight_init", f"{self.weight_init!r} is not one of {', '.join(WEIGHT_INITS)}")
        dropout = self.dropout_structure
        if dropout is not None:
            if len(dropout) != len(layers):
                raise InvalidRequest(
                    "dropout_structure",
                    f"needs one value per layer_structure entry ({len(layers)}), got {len(dropout)}",
                )
            if any(not 0 <= p < 1 for p in dropout) or dropout[0] != 0 or dropout[-1] != 0:
                raise InvalidRequest(
                    "dropout_structure", f"values must be in [0, 1), first and last 0, as in 0, 0.3, 0 (got {dropout})"
                )

    def layer_widths(self, width: int) -> list[int]:
        """The widths of the module's layers for context width `width` (A1111 truncates width·multiple)."""
        return [int(width * multiple) for multiple in self.layer_structure]

    def parameter_count(self, width: int) -> int:
        """Weights of one module for context width `width` (Linear and LayerNorm)."""
        sizes = self.layer_widths(width)
        norms = 2 * sum(sizes[1:]) if self.add_layer_norm else 0
        return sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False)) + norms

    def build(self, width: int) -> HypernetworkModule:
        """One module for context width `width`, randomly initialised as `weight_init` says (A1111's init)."""
        module = HypernetworkModule(width, self)
        module.initialise(self.weight_init, self.activation_func)
        return module


class HypernetworkModule(torch.nn.Module):
    """One k or v module: `x + linear(x) * multiplier` (state dict keys `linear.N.weight`, `linear.N.bias`)."""

    def __init__(self, width: int, structure: HypernetworkStructure):
        super().__init__()
        self.width = width
        layers = structure.layer_structure
        last = len(layers) - 2
        activation = None
        if structure.activation_func not in (None, "linear"):
            activation = activation_classes().get(str(structure.activation_func))
            if activation is None:
                raise ModelLoadError(f"unsupported activation function {structure.activation_func!r}")
        parts: list[torch.nn.Module] = []
        for i in range(len(layers) - 1):
            size_out = int(width * layers[i + 1])
            parts.append(torch.nn.Linear(int(width * layers[i]), size_out))
            if activation is not None and (i < last or structure.activate_output):
                try:
                    parts.append(activation())
                except TypeError:
                    raise ModelLoadError(f"activation function {structure.activation_func!r} needs arguments") from None
            if structure.add_layer_norm:
                parts.append(torch.nn.LayerNorm(size_out))
            if structure.dropout_structure is not None and structure.dropout_structure[i + 1] > 0:
                parts.append(torch.nn.Dropout(p=structure.dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*parts)

    def initialise(self, weight_init: str, activation_func: str | None) -> None:
        """A1111's initialisation: Normal(0, 0.01) weights and zero biases, or Xavier/Kaiming with zero biases."""
        from torch.nn import init

        nonlinearity: Literal["leaky_relu", "relu"] = "leaky_relu" if activation_func == "leakyrelu" else "relu"
        with torch.no_grad():
            for layer in self.linear:
                if not isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm)):
                    continue
                weight, bias = layer.weight, layer.bias
                if weight_init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                    init.normal_(weight, mean=0.0, std=0.01)
                elif weight_init == "XavierUniform":
                    init.xavier_uniform_(weight)
                elif weight_init == "XavierNormal":
                    init.xavier_normal_(weight)
                elif weight_init == "KaimingUniform":
                    init.kaiming_uniform_(weight, nonlinearity=nonlinearity)
                elif weight_init == "KaimingNormal":
                    init.kaiming_normal_(weight, nonlinearity=nonlinearity)
                init.zeros_(bias)

    def forward(self, x: torch.Tensor, multiplier: float = 1.0) -> torch.Tensor:
        out: torch.Tensor = x + self.linear(x) * multiplier
        return out


# Keys of the first hypernetworks, renamed by A1111 when loading (fix_old_state_dict).
OLD_KEYS = {
    "linear1.weight": "linear.0.weight",
    "linear1.bias": "linear.0.bias",
    "linear2.weight": "linear.1.weight",
    "linear2.bias": "linear.1.bias",
}


@dataclass
class Hypernetwork:
    """A hypernetwork file's content: the k/v modules per context width and the file's fields."""

    name: str
    structure: HypernetworkStructure
    layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = field(default_factory=dict)
    use_dropout: bool = False
    last_layer_dropout: bool = False
    step: int = 0
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    optional_info: str | None = None
    extra: dict[Any, Any] = field(default_factory=dict)  # keys sdstudio does not know, written back as they were

    @classmethod
    def new(cls, name: str, widths: Sequence[int], structure: HypernetworkStructure, use_dropout: bool = False):
        """A freshly initialised hypernetwork with modules for each context width."""
        structure.check()
        for width in widths:
            if min(structure.layer_widths(int(width))) < 1:
                raise InvalidRequest("layer_structure", f"a layer would have no units at width {width}")
        total = sum(2 * structure.parameter_count(int(width)) for width in widths)
        if total > MAX_PARAMETERS:
            raise InvalidRequest(
                "layer_structure",
                f"{total:,} weights for these widths (enable_sizes); at most {MAX_PARAMETERS:,}",
            )
        layers = {int(w): (structure.build(int(w)), structure.build(int(w))) for w in widths}
        dropout = structure.dropout_structure
        net = cls(name, structure, layers, use_dropout=use_dropout)
        net.last_layer_dropout = bool(dropout[-2]) if dropout is not None else False
        net.eval()
        return net

    def modules(self) -> list[HypernetworkModule]:
        """Every k and v module, widths in file order."""
        return [module for pair in self.layers.values() for module in pair]

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable weights of every module."""
        return [p for module in self.modules() for p in module.parameters()]

    def train(self, mode: bool = True) -> None:
        """Train (dropout on, gradients) or evaluate."""
        for module in self.modules():
            module.train(mode)
            module.requires_grad_(mode)

    def eval(self) -> None:
        """Inference: no dropout, no gradients."""
        self.train(False)

    def to(self, device: torch.device | str) -> Hypernetwork:
        """Move every module (in place)."""
        for module in self.modules():
            module.to(device)
        return self

    def tensor_bytes(self) -> int:
        """Bytes held by the modules' weights."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def to_file_dict(self) -> dict[Any, Any]:
        """The dict A1111 pickles: width -> (k, v) state dicts, then the settings."""
        s = self.structure
        saved: dict[Any, Any] = {}
        for width, (k, v) in self.layers.items():
            saved[width] = (_plain_state(k), _plain_state(v))
        dropout = list(s.dropout_structure) if s.dropout_structure is not None else None
        saved.update(
            {
                "step": self.step,
                "name": self.name,
                "layer_structure": list(s.layer_structure),
                "activation_func": s.activation_func,
                "is_layer_norm": s.add_layer_norm,
                "weight_initialization": s.weight_init,
                "sd_checkpoint": self.sd_checkpoint,
                "sd_checkpoint_name": self.sd_checkpoint_name,
                "activate_output": s.activate_output,
                "use_dropout": self.use_dropout,
                "dropout_structure": dropout,
                "last_layer_dropout": bool(dropout[-2]) if dropout else self.last_layer_dropout,
                "optional_info": self.optional_info or None,
            }
        )
        saved.update({k: v for k, v in self.extra.items() if k not in saved})
        return saved

    def save(self, path: Path, replace: bool = True) -> None:
        """Write the A1111 `.pt` atomically; `replace=False`: FileExistsError when the file exists."""
        from sdstudio.config import atomic_path

        with atomic_path(Path(path), replace=replace) as tmp:
            torch.save(self.to_file_dict(), tmp)


def _plain_state(module: HypernetworkModule) -> OrderedDict[str, torch.Tensor]:
    """The module's weights as A1111 stores them (CPU tensors, `linear.N.*` keys)."""
    return OrderedDict((key, tensor.detach().cpu().clone()) for key, tensor in module.state_dict().items())


def hypernetwork_from_file_dict(data: Any, fallback_name: str) -> Hypernetwork:
    """Read the dict of an A1111 hypernetwork file (ModelLoadError when it is not one)."""
    if not isinstance(data, dict):
        raise ModelLoadError(f"not a hypernetwork (the file holds a {type(data).__name__}, not a dict)")
    try:
        layer_structure = tuple(float(x) for x in data.get("layer_structure") or DEFAULT_LAYER_STRUCTURE)
        dropout_raw = data.get("dropout_structure")
        use_dropout = bool(data.get("use_dropout", False))
        if dropout_raw is not None and any(dropout_raw):
            use_dropout = True  # A1111: a dropout structure with any dropout in it means use_dropout
        last_layer_dropout = bool(data.get("last_layer_dropout", False))
        dropout = (
            tuple(float(x) for x in dropout_raw)
            if dropout_raw is not None
            else tuple(dropout_from_flags(layer_structure, use_dropout, last_layer_dropout))
        )
        structure = HypernetworkStructure(
            layer_structure=layer_structure,
            activation_func=_optional_str(data.get("activation_func")),
            weight_init=str(data.get("weight_initialization") or "Normal"),
            add_layer_norm=bool(data.get("is_layer_norm", False)),
            activate_output=bool(data.get("activate_output", True)),  # A1111's default for old files
            dropout_structure=dropout,
        )
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"not a readable hypernetwork ({exc})") from None
    if len(layer_structure) < 2 or len(dropout) < len(layer_structure):
        raise ModelLoadError(f"layer_structure {list(layer_structure)} / dropout_structure {list(dropout)} do not fit")
    layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = {}
    for width, pair in data.items():
        if not isinstance(width, int) or isinstance(width, bool):
            continue
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ModelLoadError(f"width {width}: expected a (k, v) pair of state dicts")
        layers[width] = (_module_from_state(width, structure, pair[0]), _module_from_state(width, structure, pair[1]))
    if not layers:
        raise ModelLoadError("not a hypernetwork: it holds no layers (no context-width keys such as 768)")
    known = set(SETTINGS_KEYS)
    net = Hypernetwork(
        name=str(data.get("name") or fallback_name),
        structure=structure,
        layers=layers,
        use_dropout=use_dropout,
        last_layer_dropout=last_layer_dropout,
        step=int(data.get("step") or 0),
        sd_checkpoint=_optional_str(data.get("sd_checkpoint")),
        sd_checkpoint_name=_optional_str(data.get("sd_checkpoint_name")),
        optional_info=_optional_str(data.get("optional_info")),
        extra={k: v for k, v in data.items() if k not in known and not isinstance(k, int)},
    )
    net.eval()
    return net


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _module_from_state(width: int, structure: HypernetworkStructure, state: Any) -> HypernetworkModule:
    if not isinstance(state, dict):
        raise ModelLoadError(f"width {width}: a module's weights are a {type(state).__name__}, not a state dict")
    state = {OLD_KEYS.get(str(k), str(k)): v for k, v in state.items()}
    try:
        module = HypernetworkModule(width, structure)
        module.load_state_dict(state)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelLoadError(f"width {width}: the weights do not fit the file's layer structure ({first})") from None
    return module


def load_hypernetwork_file(path: Path) -> Hypernetwork:
    """Read an A1111 hypernetwork `.pt` through the safe unpickler (nothing in the file runs)."""
    from sdstudio.models.safe_pickle import safe_load

    path = Path(path)
    try:
        return hypernetwork_from_file_dict(safe_load(path), path.stem)
    except ModelLoadError as exc:
        if str(exc).startswith(path.name):
            raise
        raise ModelLoadError(f"{path.name}: {exc}") from None
