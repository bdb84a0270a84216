"""The model-memory owner: LRU within a budget, per-kind limits, and one truth for what is loaded."""

from __future__ import annotations

import gc
import weakref

import torch

from sdstudio.models.memory import ModelMemory, module_bytes


def linear(size: int) -> torch.nn.Linear:
    """A module of `size` float32 weights (no bias)."""
    return torch.nn.Linear(size, 1, bias=False)


def test_least_recently_used_goes_first_when_over_budget():
    memory = ModelMemory(budget_bytes=3 * 400)  # room for three 100-weight models
    for name in "abc":
        memory.get_or_load(name, "upscaler", lambda: linear(100))
    memory.get("a")  # a is now the most recent; b the oldest
    memory.get_or_load("d", "upscaler", lambda: linear(100))
    assert memory.keys() == ["c", "a", "d"]
    assert memory.resident_bytes() == 1200


def test_a_model_larger_than_the_budget_is_still_loaded_alone():
    memory = ModelMemory(budget_bytes=400)
    memory.get_or_load("small", "lora", lambda: linear(50))
    big = memory.get_or_load("big", "checkpoint", lambda: linear(1000))
    assert memory.keys() == ["big"] and memory.get("big") is big


def test_kind_limit_frees_the_old_model_before_loading_the_new():
    memory = ModelMemory(limits={"checkpoint": 1})
    first = weakref.ref(memory.get_or_load("a", "checkpoint", lambda: linear(10)))
    seen_during_load = []

    def load_second():
        gc.collect()
        seen_during_load.append(first() is None)
        return linear(10)

    memory.get_or_load("b", "checkpoint", load_second)
    assert seen_during_load == [True], "two checkpoints were never held at once"
    assert memory.keys("checkpoint") == ["b"]


def test_budget_is_read_at_each_load_and_release_frees():
    budget = {"bytes": 0}
    memory = ModelMemory(budget_bytes=lambda: budget["bytes"])
    for name in "abc":
        memory.get_or_load(name, "upscaler", lambda: linear(100))
    assert len(memory.keys()) == 3
    budget["bytes"] = 400
    memory.get_or_load("d", "upscaler", lambda: linear(100))
    assert memory.keys() == ["d"]
    dropped = weakref.ref(memory.peek("d"))
    assert memory.release("d") and dropped() is None
    assert memory.report() == {"budget": 400, "resident": 0, "models": []}


def test_module_bytes_counts_tied_weights_once():
    shared = torch.nn.Parameter(torch.zeros(10))
    a, b = torch.nn.Module(), torch.nn.Module()
    a.weight = shared
    b.weight = shared
    assert module_bytes(a, b, None) == 40
    assert module_bytes({"x": torch.zeros(4, dtype=torch.float16), "y": "not a tensor"}) == 8
