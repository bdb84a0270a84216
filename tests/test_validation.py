"""Text from a request is made writable before anything encodes it."""

from __future__ import annotations

from sdstudio.validation import writable_strings, writable_text


def test_lone_surrogates_are_replaced_and_real_characters_kept():
    assert writable_text("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert writable_text("猫 \U0001f408 café") == "猫 \U0001f408 café"
    assert writable_text("a\ud800b").encode("utf-8") == "a\ufffdb".encode()


def test_nested_values_are_copied_with_every_string_and_key_repaired():
    body = {"prompt": "x\ud800", "list": ["\udc80", 1, None, {"k\ud800": ("v\ud800",)}], "n": 1.5}
    repaired = writable_strings(body)
    assert repaired == {"prompt": "x\ufffd", "list": ["\ufffd", 1, None, {"k\ufffd": ["v\ufffd"]}], "n": 1.5}
    assert body["prompt"] == "x\ud800", "the caller's value is left as it was"


def test_deep_nesting_costs_no_stack():
    deep: list = ["\ud800"]
    for _ in range(100_000):
        deep = [deep]
    repaired = writable_strings(deep)
    for _ in range(100_000):
        repaired = repaired[0]
    assert repaired == ["\ufffd"]
