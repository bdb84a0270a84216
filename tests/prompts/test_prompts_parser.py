"""The prompt parser gives A1111's answers: its doctests, recorded outputs, and inputs that must not crash."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import lark
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdstudio.prompts import parse_composable_prompt, parse_prompt_attention, parser, prompt_schedules
from sdstudio.prompts.parser import (
    MAX_NESTING_DEPTH,
    PromptTooComplex,
    bracket_depth,
    check_nesting,
    split_on_break,
)

# Outputs recorded from AUTOMATIC1111 stable-diffusion-webui v1.10 `modules/prompt_parser.py`
# (parse_prompt_attention, get_learned_conditioning_prompt_schedules([p], steps, hires_steps)[0],
# get_multicond_prompt_list([p])) on prompts generated from bracket/colon/escape/BREAK/AND fragments.
CASES = json.loads((Path(__file__).parent / "data" / "a1111_prompt_parser_cases.json").read_text("utf-8"))

# A1111's own doctests (input -> output), prompt_parser.py.
ATTENTION_DOCTESTS = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ["a ", 1.0],
            ["house", 1.5730000000000004],
            [" ", 1.1],
            ["on", 1.0],
            [" a ", 1.1],
            ["hill", 0.55],
            [", sun, ", 1.1],
            ["sky", 1.4641000000000006],
            [".", 1.1],
        ],
    ),
]

SCHEDULE_DOCTESTS_10_STEPS = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    # A1111's docstring still shows [[5, 'a  c'], [10, 'a {b|d{ c']] from before "|" became
    # alternation syntax; v1.10's own code returns the text unparsed, and so do we.
    ("a [{b|d{:.5] c", [[10, "a [{b|d{:.5] c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[s, "a" if s % 2 else "(b:1.1)"] for s in range(1, 11)]),
    ("[fe|]male", [[s, "female" if s % 2 else "male"] for s in range(1, 11)]),
    ("[fe|||]male", [[s, "female" if s % 4 == 1 else "male"] for s in range(1, 11)]),
]

SCHEDULE_DOCTESTS_HIRES = [  # base 10 steps, hires 10 steps
    ("a [b:.5] c", [[10, "a b c"]]),
    ("a [b:1.5] c", [[5, "a  c"], [10, "a b c"]]),
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION_DOCTESTS)
def test_attention_doctests(text, expected):
    assert parse_prompt_attention(text) == expected


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULE_DOCTESTS_10_STEPS)
def test_schedule_doctests(prompt, expected):
    assert prompt_schedules(prompt, 10) == expected


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULE_DOCTESTS_HIRES)
def test_schedule_doctests_hires(prompt, expected):
    assert prompt_schedules(prompt, 10, hires_steps=10) == expected


def test_spec_example_schedule():
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert prompt_schedules(prompt, 100) == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


def test_attention_matches_recorded_a1111_outputs():
    cases = CASES["parse_prompt_attention"]
    assert len(cases) >= 500
    mismatches = [(text, expected) for text, expected in cases if parse_prompt_attention(text) != expected]
    assert mismatches == []


def test_schedules_match_recorded_a1111_outputs():
    cases = CASES["prompt_schedules"]
    assert len(cases) >= 300
    mismatches = [
        (prompt, steps, hires)
        for prompt, steps, hires, expected in cases
        if prompt_schedules(prompt, steps, hires_steps=hires) != expected
    ]
    assert mismatches == []


def test_composition_matches_recorded_a1111_outputs():
    cases = CASES["get_multicond_prompt_list"]
    mismatches = [
        text for text, expected in cases if [list(part) for part in parse_composable_prompt(text)] != expected
    ]
    assert mismatches == []


def test_emphasis_rules():
    assert parse_prompt_attention("((word))") == [["word", 1.1 * 1.1]]
    assert parse_prompt_attention("[word]") == [["word", 1 / 1.1]]
    assert parse_prompt_attention("(word:1.5)") == [["word", 1.5]]
    assert parse_prompt_attention("(word: 0.5 )") == [["word", 0.5]]
    assert parse_prompt_attention("(word:-1)") == [["word", -1.0]]
    assert parse_prompt_attention("\\(a\\) \\\\") == [["(a) \\", 1.0]]
    assert parse_prompt_attention("a ) b ]") == [["a ) b ]", 1.0]]
    assert parse_prompt_attention("") == [["", 1.0]]


def test_break_markers():
    assert parse_prompt_attention("a BREAK b") == [["a", 1.0], ["BREAK", -1], ["b", 1.0]]
    assert parse_prompt_attention("aBREAK b") == [["aBREAK b", 1.0]]
    assert parse_prompt_attention("BREAK") == [["", 1.0], ["BREAK", -1], ["", 1.0]]
    # Inside brackets BREAK's weight is scaled too and it is no longer a break (as in A1111).
    assert parse_prompt_attention("(a BREAK b)") == [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]


def test_malformed_weight_does_not_crash():
    # A1111 raises ValueError here; sdstudio reads the closer as text inside the open bracket.
    assert parse_prompt_attention("(a:1.2.3)") == [["a:1.2.3)", 1.1]]
    assert parse_prompt_attention("(a:.)") == [["a:.)", 1.1]]


def test_schedule_inputs_a1111_cannot_handle_become_plain_text():
    assert prompt_schedules("a [b:1e999] c", 10) == [[10, "a [b:1e999] c"]]
    assert prompt_schedules("a | b ] :", 10) == [[10, "a | b ] :"]]


def test_schedule_switches_at_the_right_step():
    assert prompt_schedules("a [cat:dog:0.5]", 20) == [[10, "a cat"], [20, "a dog"]]
    assert prompt_schedules("a [cat:dog:7]", 20) == [[7, "a cat"], [20, "a dog"]]
    assert prompt_schedules("[cat::3] x", 20) == [[3, "cat x"], [20, " x"]]
    assert prompt_schedules("[cat:dog:0]", 20) == [[20, "dog"]]
    assert prompt_schedules("[cat:dog:50]", 20) == [[20, "cat"]]
    assert prompt_schedules("[a|b|c]", 4) == [[1, "a"], [2, "b"], [3, "c"], [4, "a"]]


def test_composition():
    assert parse_composable_prompt("a AND b :0.6") == [("a", 1.0), (" b", 0.6)]
    assert parse_composable_prompt("a cat") == [("a cat", 1.0)]
    assert parse_composable_prompt("cat:1.5 AND dog: -0.5") == [("cat", 1.5), (" dog", -0.5)]
    assert parse_composable_prompt("ANDROID AND x") == [("ANDROID", 1.0), (" x", 1.0)]


PROMPT_FRAGMENTS = st.sampled_from(
    ["a", "cat", " ", "(", ")", "[", "]", ":", "|", "\\", "1", "0.5", ".", "-", "BREAK", "AND", "\n", "é", "e9"]
)
PROMPTS = st.one_of(st.text(max_size=40), st.lists(PROMPT_FRAGMENTS, max_size=25).map("".join))


@settings(max_examples=300, deadline=None)
@given(PROMPTS)
def test_attention_never_crashes(text):
    pieces = parse_prompt_attention(text)
    assert pieces and all(isinstance(p, str) and isinstance(w, (int, float)) for p, w in pieces)
    assert all(pieces[i][1] != pieces[i + 1][1] for i in range(len(pieces) - 1))


@settings(max_examples=200, deadline=None)
@given(PROMPTS, st.integers(min_value=1, max_value=30), st.one_of(st.none(), st.integers(1, 30)))
def test_schedules_never_crash(prompt, steps, hires):
    schedule = prompt_schedules(prompt, steps, hires_steps=hires)
    ends = [end for end, _ in schedule]
    assert ends == sorted(set(ends)) and ends[-1] == (steps if hires is None else hires)
    assert all(isinstance(text, str) for _, text in schedule)


@settings(max_examples=200, deadline=None)
@given(PROMPTS)
def test_composition_never_crashes(text):
    parts = parse_composable_prompt(text)
    assert parts and all(isinstance(weight, float) for _, weight in parts)
    assert all(body == body.rstrip() for body, _ in parts)  # trailing whitespace and ":w" are taken off


# --- bounded work on hostile prompts (issue #19) ----------------------------------------------

# A1111's own patterns, which the parser writes out because they are quadratic on long runs of spaces.
A1111_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)
A1111_SUBPROMPT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
SPACED_TEXT = st.lists(st.sampled_from(["a", "BREAK", " ", "\t", "\n", "\u00a0", ":", "0.5", "-1", ".", "é_"])).map(
    "".join
)


@settings(max_examples=500, deadline=None)
@given(SPACED_TEXT)
def test_break_split_is_a1111s_regex_split(text):
    assert split_on_break(text) == A1111_BREAK_SPLIT.split(text)


@settings(max_examples=500, deadline=None)
@given(SPACED_TEXT)
def test_subprompt_weight_is_a1111s_regex(text):
    body, weight = A1111_SUBPROMPT.search(text).groups()
    assert parse_composable_prompt(text) == [(body, float(weight) if weight is not None else 1.0)]


# Prompts whose brackets all pair up into constructs, as real prompts do.
INNER_WORDS = st.sampled_from(["a", "cat", " ", "dog ", "1", "0.5", "-", "é", "\\(", "\\]", "\\\\", " 2", "\n"])
WHEN = st.sampled_from(["3", " 0.5 ", "1.", ".25", "1e1", "-1", "+2", "1.5", " 2", "\t7"])


def paired_prompts(depth: int = 0):
    inner = paired_prompts(depth + 1) if depth < 2 else INNER_WORDS
    construct = st.one_of(
        inner.map(lambda p: f"({p})"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]}:{t[1]})"),
        inner.map(lambda p: f"[{p}]"),
        st.tuples(inner, inner, WHEN).map(lambda t: f"[{t[0]}:{t[1]}:{t[2]}]"),
        st.tuples(inner, WHEN).map(lambda t: f"[{t[0]}:{t[1]}]"),
        st.lists(inner, min_size=2, max_size=3).map(lambda options: "[" + "|".join(options) + "]"),
    )
    return st.lists(st.one_of(INNER_WORDS, construct), max_size=3).map("".join)


def earley_schedules(prompt: str, steps: int, hires_steps: int | None) -> list:
    """The schedules A1111's Earley grammar gives (what sdstudio ran on every prompt before #19)."""
    try:
        nodes = parser._nodes_from_lark(parser._schedule_parser().parse(prompt))
        timing = parser._Timing(steps, hires_steps, False)
        switch_steps, when_by_node = parser._switch_steps(nodes, timing)
    except (lark.exceptions.LarkError, OverflowError, ValueError):
        return [[hires_steps or steps, prompt]]
    return [[step, parser._text_at_step(nodes, step, when_by_node)] for step in switch_steps]


@settings(max_examples=200, deadline=None)
@given(paired_prompts(), st.integers(1, 20), st.one_of(st.none(), st.integers(1, 20)))
def test_the_linear_reader_gives_the_earley_grammars_schedules(prompt, steps, hires):
    """Prompts whose brackets pair up are read in one pass; the result is the Earley parse's."""
    parser._ScheduleReader(prompt).read()  # the one-pass reader takes it (it raises on unpaired brackets)
    assert prompt_schedules(prompt, steps, hires_steps=hires) == earley_schedules(prompt, steps, hires)


def test_many_schedules_are_read_in_linear_time():
    # 135 tags in 2 KB took A1111's Earley parse 27 s; 1,000 take the linear reader milliseconds.
    prompt = " ".join(f"[cat{i}:dog:0.5]" for i in range(1000))
    started = time.perf_counter()
    schedule = prompt_schedules(prompt, 20)
    assert time.perf_counter() - started < 2
    assert schedule == [[10, " ".join(f"cat{i}" for i in range(1000))], [20, " ".join(["dog"] * 1000)]]
    # One stray bracket: too large for the Earley grammar, read leniently (the bracket is text).
    assert prompt_schedules(prompt + " ]", 20)[0] == [10, " ".join(f"cat{i}" for i in range(1000)) + " ]"]


def test_alternation_gives_one_entry_per_step_and_no_more():
    prompt = "".join(f"[a{i}|b|c]" for i in range(300))
    schedule = prompt_schedules(prompt, 1000)
    assert [end for end, _ in schedule] == list(range(1, 1001))
    assert schedule[1][1] == "b" * 300


def test_nesting_is_bounded_in_both_parsers():
    deepest = "[" * MAX_NESTING_DEPTH + "a:b:3" + "]" * MAX_NESTING_DEPTH
    inner = "[" * (MAX_NESTING_DEPTH - 1)
    assert prompt_schedules(deepest, 10) == [
        [3, inner + "a" + inner.replace("[", "]")],
        [10, inner + "b" + inner.replace("[", "]")],
    ]
    assert parse_prompt_attention("(" * MAX_NESTING_DEPTH + "a")[0][0] == "a"
    too_deep = "[" + deepest + "]"
    with pytest.raises(PromptTooComplex, match="nested more than 100"):
        prompt_schedules(too_deep, 10)
    with pytest.raises(PromptTooComplex, match="more than 100 brackets"):
        parse_prompt_attention("(" * (MAX_NESTING_DEPTH + 1) + "a")
    # 100,000 open brackets (A1111: memory grew by 40 MB/s) are refused at the first one too many.
    started = time.perf_counter()
    for hostile in ("[" * 100_000, "(" * 100_000, "[a:" * 30_000):
        if "[" in hostile:  # without "[" there is nothing to schedule, and nothing is read
            with pytest.raises(PromptTooComplex):
                prompt_schedules(hostile, 10)
        with pytest.raises(PromptTooComplex):
            parse_prompt_attention(hostile)
        with pytest.raises(PromptTooComplex, match="100000 brackets|30000 brackets"):
            check_nesting(hostile)
    assert time.perf_counter() - started < 5


def test_bracket_depth_counts_what_the_emphasis_parser_keeps_open():
    assert bracket_depth("a (b [c] d) e") == 2
    assert bracket_depth("\\(\\(\\[ a") == 0
    assert bracket_depth("))]] ((") == 2  # closers with nothing open close nothing
    assert bracket_depth("(" * 101) == 101


def test_long_runs_of_spaces_are_linear():
    # 50 KB of mostly spaces froze A1111-style regexes (and the server with them) for 83 s.
    text = "a" + " " * 50_000 + "BREAK b" + " " * 50_000 + ": 0.5"
    started = time.perf_counter()
    assert parse_prompt_attention(text) == [["a", 1.0], ["BREAK", -1], ["b" + " " * 50_000 + ": 0.5", 1.0]]
    assert parse_composable_prompt(text) == [(text[: text.index(":")].rstrip(), 0.5)]
    assert prompt_schedules(text + "[x:y:2]", 10)[0] == [2, text + "x"]
    assert time.perf_counter() - started < 2
