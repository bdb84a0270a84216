"""A1111's prompt syntax: emphasis weights, prompt editing schedules and AND composition.

Every function here returns exactly what A1111's `modules/prompt_parser.py` returns for the
same input (same strings, same floats), so a prompt copied from A1111 or Civitai means the
same thing here. Where A1111 raises on an input (an overflowing step number, a weight such
as `(a:1.2.3)`, nesting deeper than Python's recursion limit) these functions return a plain
reading of the text instead: no prompt can crash a generation.

Both grammars use `lark`; the parsers are built once per process by `functools.lru_cache`
(they are immutable after construction).
"""

from __future__ import annotations

import functools
import re
from typing import Any, cast

import lark

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_MARKER = "BREAK"

# A1111's result shapes, kept as mutable lists so results compare equal to A1111's:
AttentionPiece = list[Any]  # [text: str, weight: float]
ScheduleEntry = list[Any]  # [end_step: int, text: str]

# --- emphasis -------------------------------------------------------------------------------

# One terminal per kind of piece A1111's `re_attention` scanner distinguishes. Priorities make
# the lexer prefer the same alternative A1111's ordered regex does where two could match:
# an escape pair over a lone backslash, an explicit-weight closer over a bare colon.
_ATTENTION_GRAMMAR = r"""
start: _piece*
_piece: ESCAPED | LONE_BACKSLASH | OPEN_ROUND | OPEN_SQUARE | WEIGHT_CLOSE
      | CLOSE_ROUND | CLOSE_SQUARE | TEXT | COLON

ESCAPED.3: /\\[()\[\]\\]/
LONE_BACKSLASH.2: "\\"
OPEN_ROUND: "("
OPEN_SQUARE: "["
WEIGHT_CLOSE.3: /:\s*[+-]?[.\d]+\s*\)/
CLOSE_ROUND: ")"
CLOSE_SQUARE: "]"
TEXT: /[^\\()\[\]:]+/
COLON.1: ":"
"""

_WEIGHT_IN_CLOSER = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
# A1111 splits plain text on BREAK surrounded by word boundaries, eating the whitespace around it.
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


@functools.lru_cache(maxsize=1)
def _attention_parser() -> lark.Lark:
    return lark.Lark(_ATTENTION_GRAMMAR, parser="lalr", lexer="basic")


def parse_prompt_attention(text: str) -> list[AttentionPiece]:
    """Split `text` into [piece, weight] pairs as A1111's parse_prompt_attention does.

    `(x)` multiplies by 1.1, `[x]` divides by 1.1, `(x:w)` multiplies by w, `\\(` `\\)` `\\[`
    `\\]` `\\\\` are literal, unclosed brackets apply to the end of the text, a `BREAK` in plain
    text becomes ["BREAK", -1], and neighbouring pieces of equal weight are merged. Weights are
    multiplied in A1111's order (innermost bracket first), so the floats are identical.
    """
    pieces: list[AttentionPiece] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    def add_plain(value: str) -> None:
        for index, part in enumerate(_BREAK_SPLIT.split(value)):
            if index:
                pieces.append([BREAK_MARKER, -1])
            pieces.append([part, 1.0])

    # Every piece is a terminal inlined into `start`, so the tree's children are all tokens.
    for token in cast(list[lark.Token], _attention_parser().parse(text).children):
        kind = token.type
        if kind in ("ESCAPED", "LONE_BACKSLASH"):
            # A1111 keeps what follows the backslash; a lone backslash leaves nothing.
            pieces.append([token.value[1:], 1.0])
        elif kind == "OPEN_ROUND":
            open_round.append(len(pieces))
        elif kind == "OPEN_SQUARE":
            open_square.append(len(pieces))
        elif kind == "WEIGHT_CLOSE" and open_round:
            weight = _parse_weight(token.value)
            if weight is None:
                # A1111 raises on "(a:1.2.3)"; read the malformed closer as plain text instead.
                add_plain(token.value)
            else:
                scale_from(open_round.pop(), weight)
        elif kind == "CLOSE_ROUND" and open_round:
            scale_from(open_round.pop(), ROUND_MULTIPLIER)
        elif kind == "CLOSE_SQUARE" and open_square:
            scale_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            add_plain(token.value)

    # Unclosed brackets: A1111 applies them at the end, round ones (outermost first) then square.
    for start in open_round:
        scale_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_MULTIPLIER)

    if not pieces:
        return [["", 1.0]]
    merged = [pieces[0]]
    for piece in pieces[1:]:
        if piece[1] == merged[-1][1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return merged


def _parse_weight(closer: str) -> float | None:
    """The number in a `:w)` closer, or None where it is not a number (e.g. `1.2.3`, `.`)."""
    match = _WEIGHT_IN_CLOSER.fullmatch(closer)
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


# --- prompt editing (schedules) -------------------------------------------------------------

# A1111's schedule grammar (modules/prompt_parser.py). It is ambiguous on purpose — stray
# brackets and colons fall back to literal text — and lark's Earley parser resolves the
# ambiguity; keeping the same rule structure keeps the same resolution, hence identical output.
_SCHEDULE_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
           | "(" prompt ":" prompt ")"
           | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@functools.lru_cache(maxsize=1)
def _schedule_parser() -> lark.Lark:
    return lark.Lark(_SCHEDULE_GRAMMAR)


class _Timing:
    """How a `when` number becomes a step, with A1111's hires-fix offsets (`hires_steps`)."""

    def __init__(self, base_steps: int, hires_steps: int | None, use_old_scheduling: bool):
        self.old = use_old_scheduling
        if hires_steps is None or use_old_scheduling:
            self.steps, self.int_offset, self.float_offset = base_steps, 0, 0.0
        else:
            # In the hires pass, "12" means step 12 of the whole job and "1.5" half-way through hires.
            self.steps, self.int_offset, self.float_offset = hires_steps, base_steps, 1.0

    def step_of(self, number: str) -> int:
        """The last step (1-based) at which the `from` part still applies."""
        value = float(number)
        if self.old:
            value = value * self.steps if value < 1 else value
        elif "." in number:
            value = (value - self.float_offset) * self.steps
        else:
            value = value - self.int_offset
        return min(self.steps, int(value))


def _switch_steps(tree: lark.ParseTree, timing: _Timing) -> tuple[list[int], dict[int, int]]:
    """Steps at which the text changes (always incl. the last), and each scheduled node's step."""
    steps = {timing.steps}
    when_by_node: dict[int, int] = {}
    for node in tree.iter_subtrees():
        if node.data == "scheduled":
            when = timing.step_of(str(node.children[-2]))
            when_by_node[id(node)] = when
            if when >= 1:
                steps.add(when)
        elif node.data == "alternate":
            steps.update(range(1, timing.steps + 1))
    return sorted(steps), when_by_node


def _text_at_step(node: lark.ParseTree | lark.Token | None, step: int, when_by_node: dict[int, int]) -> str:
    """The prompt text the tree stands for at `step` (A1111's AtStep transformer)."""
    if node is None:
        return ""
    if isinstance(node, lark.Token):
        text: str = node.value  # lark types Token.value as Any; it is the matched string
        return text
    if node.data == "scheduled":
        before, after = node.children[0], node.children[1]
        chosen = before if step <= when_by_node[id(node)] else after
        return _text_at_step(chosen, step, when_by_node)
    if node.data == "alternate":
        choice = node.children[(step - 1) % len(node.children)]
        return _text_at_step(choice, step, when_by_node)
    return "".join(_text_at_step(child, step, when_by_node) for child in node.children)


def prompt_schedules(
    prompt: str, steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[ScheduleEntry]:
    """[[end_step, text], ...] for one prompt: A1111's get_learned_conditioning_prompt_schedules.

    `[from:to:when]`, `[to:when]`, `[from::when]` switch text after step `when` (a fraction
    of `steps` when written with a dot), `[a|b]` alternates every step. Text applies up to
    and including its end step. Input A1111 cannot parse is one schedule: [[steps, prompt]].
    """
    timing = _Timing(steps, hires_steps, use_old_scheduling)
    if "[" not in prompt:
        # Without "[" there is nothing to schedule and the text comes back unchanged; skipping
        # the Earley parse (slow on long prompts) gives the same answer.
        return [[timing.steps, prompt]]
    try:
        tree = _schedule_parser().parse(prompt)
        switch_steps, when_by_node = _switch_steps(tree, timing)
        return [[step, _text_at_step(tree, step, when_by_node)] for step in switch_steps]
    except (lark.exceptions.LarkError, OverflowError, ValueError, RecursionError):
        # LarkError: A1111 returns the prompt as is. The others A1111 raises (a `when` like 1e999,
        # nesting deeper than the recursion limit); sdstudio reads the text literally instead.
        return [[timing.steps, prompt]]


# --- AND composition ------------------------------------------------------------------------

_AND_SPLIT = re.compile(r"\bAND\b")
# A subprompt's optional trailing ":weight"; the text keeps leading but not trailing whitespace.
_SUBPROMPT_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def parse_composable_prompt(text: str) -> list[tuple[str, float]]:
    """Split on `AND` into (subprompt, weight) pairs as A1111's get_multicond_prompt_list.

    `a AND b :0.6` -> [("a", 1.0), (" b", 0.6)]. A trailing `:number` sets a part's weight
    even without AND (A1111 does the same). Composable diffusion (Liu et al. 2022) then adds
    weight * (cond_i - uncond) for each part in the denoiser.
    """
    parts = []
    for subprompt in _AND_SPLIT.split(text):
        match = _SUBPROMPT_WEIGHT.search(subprompt)
        if match is None:  # cannot happen (the pattern matches any string); kept for safety
            parts.append((subprompt, 1.0))
            continue
        body, weight = match.groups()
        parts.append((body, float(weight) if weight is not None else 1.0))
    return parts
