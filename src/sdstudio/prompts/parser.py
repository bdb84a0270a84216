"""A1111's prompt syntax: emphasis weights, prompt editing schedules and AND composition.

Every function here returns exactly what A1111's `modules/prompt_parser.py` returns for the
same input (same strings, same floats), so a prompt copied from A1111 or Civitai means the
same thing here. Where A1111 raises on an input (an overflowing step number, a weight such
as `(a:1.2.3)`) these functions return a plain reading of the text instead: no prompt can
crash a generation.

Every function's work is bounded, so a hostile prompt cannot stall the server: reading is
linear in the prompt's length (A1111's Earley parse, cubic, only ever sees small prompts),
and brackets nested more than MAX_NESTING_DEPTH deep raise PromptTooComplex (A1111 would
recurse until Python's limit; front ends refuse such prompts with a message naming the field).
The one place results may differ from A1111's: a prompt with more than
EARLEY_SPECIAL_CHARACTERS bracket characters whose brackets do not pair up (or with a `:`
outside brackets), where the constructs are read as if each lone bracket were text; A1111's
parse of such a prompt takes seconds to minutes and sometimes reads a construct as text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import lark

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_MARKER = "BREAK"

MAX_NESTING_DEPTH = 100
"""Most brackets a prompt may have open at once; A1111 has no bound (it recurses, then fails)."""


class PromptTooComplex(ValueError):
    """A prompt past one of the parser's bounds; the message says which."""


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
_BREAK_WORD = re.compile(r"\bBREAK\b")
# What bracket_depth counts: an escape pair (skipped) or a bracket.
_ATTENTION_BRACKET = re.compile(r"\\[()\[\]\\]|[()\[\]]")


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
        for index, part in enumerate(split_on_break(value)):
            if index:
                pieces.append([BREAK_MARKER, -1])
            pieces.append([part, 1.0])

    # The grammar takes any sequence of its terminals, so the lexer's tokens are the parse
    # (read lazily: a prompt nested too deep stops at the first bracket too many).
    for token in _attention_parser().lex(text):
        kind = token.type
        if kind in ("ESCAPED", "LONE_BACKSLASH"):
            # A1111 keeps what follows the backslash; a lone backslash leaves nothing.
            pieces.append([token.value[1:], 1.0])
        elif kind in ("OPEN_ROUND", "OPEN_SQUARE"):
            if len(open_round) + len(open_square) >= MAX_NESTING_DEPTH:
                # Each closing bracket rescales every piece after its opening one: work grows with depth.
                raise PromptTooComplex(f"more than {MAX_NESTING_DEPTH} brackets are open at once")
            (open_round if kind == "OPEN_ROUND" else open_square).append(len(pieces))
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
    # Neighbours of equal weight become one piece (joined once: `+=` per piece is quadratic).
    runs: list[tuple[list[str], float]] = []
    for piece_text, weight in pieces:
        if runs and runs[-1][1] == weight:
            runs[-1][0].append(piece_text)
        else:
            runs.append(([piece_text], weight))
    return [["".join(texts), weight] for texts, weight in runs]


def split_on_break(text: str) -> list[str]:
    """`text` split on the word BREAK, whitespace around it dropped: A1111's `re.split(r"\\s*\\bBREAK\\b\\s*")`.

    Written out because that regex backtracks quadratically on long runs of whitespace, and
    Python's regex engine holds the GIL while it does (the whole server would stall).
    """
    if "BREAK" not in text:
        return [text]
    parts, start = [], 0
    for match in _BREAK_WORD.finditer(text):
        left, right = match.start(), match.end()
        while left > start and text[left - 1].isspace():
            left -= 1
        while right < len(text) and text[right].isspace():
            right += 1
        parts.append(text[start:left])
        start = right
    parts.append(text[start:])
    return parts


def bracket_depth(text: str) -> int:
    """Most brackets open at once as parse_prompt_attention counts them (escaped ones are text)."""
    deepest = open_round = open_square = 0
    for match in _ATTENTION_BRACKET.finditer(text):
        char = match.group()
        if char == "(":
            open_round += 1
        elif char == "[":
            open_square += 1
        elif char == ")":
            open_round = max(0, open_round - 1)
        elif char == "]":
            open_square = max(0, open_square - 1)
        deepest = max(deepest, open_round + open_square)
    return deepest


def check_nesting(text: str) -> None:
    """Raise PromptTooComplex when more than MAX_NESTING_DEPTH brackets of `text` are open at once."""
    depth = bracket_depth(text)
    if depth > MAX_NESTING_DEPTH:
        raise PromptTooComplex(f"has {depth} brackets open at once; at most {MAX_NESTING_DEPTH} are accepted")


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
# ambiguity. Earley costs O(n³) in the grammar's characters, so it only reads the prompts the
# linear `_ScheduleReader` below cannot: small ones whose brackets do not pair up.
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

EARLEY_SPECIAL_CHARACTERS = 32
"""Most `[]():|` characters a prompt with unpaired brackets (or a `:` outside brackets) may have
to be read by the Earley grammar (up to about 0.3 s at this size). Larger ones are read by
`_ScheduleReader(lenient=True)`, which agrees with Earley on most such prompts but not all
(Earley sometimes reads a whole construct next to a stray bracket or colon as text)."""


@functools.lru_cache(maxsize=1)
def _schedule_parser() -> lark.Lark:
    return lark.Lark(_SCHEDULE_GRAMMAR)


@dataclass
class _Scheduled:
    """`[before:after:when]`; `before` is empty for `[after:when]`."""

    before: list[_Node]
    after: list[_Node]
    when: str


@dataclass
class _Alternate:
    """`[a|b|...]`: one option per step, in turn."""

    options: list[list[_Node]]


_Node = str | _Scheduled | _Alternate  # text kept as written, or a construct that changes with the step

# lark's common.SIGNED_NUMBER as lark compiles it (ASCII digits; "1e3", "1.5", ".5", "1.").
_SCHEDULE_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.(?:[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)"
)
_SCHEDULE_WHITESPACE = re.compile(r"\s+")
_SCHEDULE_TEXT = re.compile(r"[^\\\[\]():|]+")  # text with nothing the grammar reads in it
_SCHEDULE_SPECIALS = "[]():|"


class _NotPaired(Exception):
    """A bracket of the prompt opens or closes no construct of the grammar (internal)."""


class _Unreadable(Exception):
    """A1111's grammar cannot read the prompt at all: a `|` outside `[...]`, a lone backslash (internal)."""


class _ScheduleReader:
    """A1111's schedule grammar read in one pass, O(length · nesting depth).

    Strict (the default): every `(` and `[` must open a construct the grammar knows, every `)`
    and `]` close one, and there is no `:` outside brackets; otherwise `_NotPaired`. On such
    prompts the grammar's one reading that keeps every construct is the one A1111's Earley
    parser picks (checked against it on generated prompts, tests/prompts/test_prompts_parser.py).
    Lenient: a bracket that pairs with nothing and a `:` outside brackets are read as text, the
    rest as in strict mode; it stands in for Earley on large prompts strict mode refuses.
    Nesting deeper than MAX_NESTING_DEPTH raises PromptTooComplex either way.
    """

    def __init__(self, text: str, lenient: bool = False):
        self.text = text
        self.lenient = lenient
        self.pos = 0
        # What a construct read from a position gave: lenient reading goes back to a lone
        # bracket and reads on, and must not read the constructs after it again.
        self.read_at: dict[int, tuple[list[_Node], int]] = {}
        self.unpaired_at: set[int] = set()

    def read(self) -> list[_Node]:
        """The prompt's nodes; `_NotPaired` / `_Unreadable` when it cannot be read this way."""
        text = self.text
        nodes: list[_Node] = []
        while self.pos < len(text):
            nodes += self.prompt(0)
            if self.pos >= len(text):
                break
            char = text[self.pos]
            if char == "|" and self.lenient:
                raise _Unreadable
            if not self.lenient:
                # A stray ")", "]" or "|"; or a ":" outside brackets, next to which the Earley
                # parse sometimes reads a construct as text: "([b:3]):" stays as it is.
                raise _NotPaired
            nodes.append(char)
            self.pos += 1
        return _compact(nodes)

    def prompt(self, depth: int) -> list[_Node]:
        """Text and constructs up to the next `:`, `|`, `)` or `]` of this level."""
        text = self.text
        nodes: list[_Node] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char in ":|)]":
                break
            if char == "\\":
                if self.pos + 1 >= len(text) or text[self.pos + 1] == "\n":
                    raise _Unreadable if self.lenient else _NotPaired
                nodes.append(text[self.pos : self.pos + 2])
                self.pos += 2
            elif char in "([":
                nodes += self.construct(depth + 1)
            else:
                match = _SCHEDULE_TEXT.match(text, self.pos)
                assert match is not None  # `char` is none of the grammar's characters
                nodes.append(match.group())
                self.pos = match.end()
        return nodes

    def construct(self, depth: int) -> list[_Node]:
        """The `(...)` or `[...]` opening here; lenient and at the top level, a lone bracket is text."""
        if depth > MAX_NESTING_DEPTH:
            raise PromptTooComplex(f"brackets are nested more than {MAX_NESTING_DEPTH} deep")
        start, char = self.pos, self.text[self.pos]
        try:
            if start in self.unpaired_at:
                raise _NotPaired
            if start in self.read_at:
                nodes, self.pos = self.read_at[start]
                return nodes
            self.pos += 1
            nodes = self.emphasis(depth) if char == "(" else self.square(depth)
            self.read_at[start] = (nodes, self.pos)
            return nodes
        except _NotPaired:
            self.unpaired_at.add(start)
            if not (self.lenient and depth == 1):
                raise
            self.pos = start + 1
            return [char]

    def take(self, allowed: str) -> str:
        """The next character, which must be one of `allowed`."""
        if self.pos >= len(self.text) or self.text[self.pos] not in allowed:
            raise _NotPaired
        self.pos += 1
        return self.text[self.pos - 1]

    def emphasis(self, depth: int) -> list[_Node]:
        """After `(`: `(a)` or `(a:b)`, kept as written."""
        nodes: list[_Node] = ["(", *self.prompt(depth)]
        if self.take(":)") == ":":
            nodes += [":", *self.prompt(depth)]
            self.take(")")
        nodes.append(")")
        return nodes

    def square(self, depth: int) -> list[_Node]:
        """After `[`: `[a]` (kept as written), `[a|b...]`, `[to:when]` or `[from:to:when]`."""
        first = self.prompt(depth)
        separator = self.take(":|]")
        if separator == "]":
            return ["[", *first, "]"]
        if separator == "|":
            options = [first, self.prompt(depth)]
            while self.take("|]") == "|":
                options.append(self.prompt(depth))
            return [_Alternate(options)]
        when = self.when()
        if when is not None:
            return [_Scheduled([], first, when)]
        second = self.prompt(depth)
        self.take(":")
        when = self.when()
        if when is None:
            raise _NotPaired
        return [_Scheduled(first, second, when)]

    def when(self) -> str | None:
        """The number of `[ws]number[ws]]` here (all of it taken), or None (nothing taken)."""
        text = self.text
        space = _SCHEDULE_WHITESPACE.match(text, self.pos)
        number = _SCHEDULE_NUMBER.match(text, space.end() if space else self.pos)
        if number is None:
            return None
        space = _SCHEDULE_WHITESPACE.match(text, number.end())
        end = space.end() if space else number.end()
        if end >= len(text) or text[end] != "]":
            return None
        self.pos = end + 1
        return number.group()


def _compact(nodes: list[_Node]) -> list[_Node]:
    """Neighbouring texts joined into one (fewer pieces to join at every step)."""
    out: list[_Node] = []
    texts: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            texts.append(node)
            continue
        if texts:
            out.append("".join(texts))
            texts = []
        if isinstance(node, _Scheduled):
            out.append(_Scheduled(_compact(node.before), _compact(node.after), node.when))
        else:
            out.append(_Alternate([_compact(option) for option in node.options]))
    if texts:
        out.append("".join(texts))
    return out


def _nodes_from_lark(node: lark.ParseTree | lark.Token | None) -> list[_Node]:
    """The Earley parse tree as nodes (its depth is bounded by EARLEY_SPECIAL_CHARACTERS)."""
    if node is None:
        return []
    if isinstance(node, lark.Token):
        return [str(node.value)]
    if node.data == "scheduled":
        before, after = node.children[0], node.children[1]
        return [_Scheduled(_nodes_from_lark(before), _nodes_from_lark(after), str(node.children[-2]))]
    if node.data == "alternate":
        return [_Alternate([_nodes_from_lark(child) for child in node.children])]
    return [piece for child in node.children for piece in _nodes_from_lark(child)]


def _schedule_nodes(prompt: str) -> list[_Node] | None:
    """The prompt read by A1111's grammar; None where A1111 cannot read it (it is then plain text)."""
    try:
        return _ScheduleReader(prompt).read()
    except (_NotPaired, _Unreadable):
        pass
    if sum(prompt.count(char) for char in _SCHEDULE_SPECIALS) <= EARLEY_SPECIAL_CHARACTERS:
        try:
            return _compact(_nodes_from_lark(_schedule_parser().parse(prompt)))
        except lark.exceptions.LarkError:
            return None
    try:
        return _ScheduleReader(prompt, lenient=True).read()
    except _Unreadable:
        return None


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


def _switch_steps(nodes: list[_Node], timing: _Timing) -> tuple[list[int], dict[int, int]]:
    """Steps at which the text changes (always incl. the last), and each scheduled node's step."""
    steps = {timing.steps}
    when_by_node: dict[int, int] = {}
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if isinstance(node, _Scheduled):
            when = timing.step_of(node.when)
            when_by_node[id(node)] = when
            if when >= 1:
                steps.add(when)
            pending += node.before + node.after
        elif isinstance(node, _Alternate):
            steps.update(range(1, timing.steps + 1))
            pending += [child for option in node.options for child in option]
    return sorted(steps), when_by_node


def _text_at_step(nodes: list[_Node], step: int, when_by_node: dict[int, int]) -> str:
    """The prompt text the nodes stand for at `step` (A1111's AtStep transformer)."""
    pieces = []
    for node in nodes:
        if isinstance(node, str):
            pieces.append(node)
        elif isinstance(node, _Scheduled):
            chosen = node.before if step <= when_by_node[id(node)] else node.after
            pieces.append(_text_at_step(chosen, step, when_by_node))
        else:
            pieces.append(_text_at_step(node.options[(step - 1) % len(node.options)], step, when_by_node))
    return "".join(pieces)


def prompt_schedules(
    prompt: str, steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[ScheduleEntry]:
    """[[end_step, text], ...] for one prompt: A1111's get_learned_conditioning_prompt_schedules.

    `[from:to:when]`, `[to:when]`, `[from::when]` switch text after step `when` (a fraction
    of `steps` when written with a dot), `[a|b]` alternates every step. Text applies up to
    and including its end step; there is at most one entry per step. Input A1111 cannot parse
    is one schedule: [[steps, prompt]]. Brackets nested more than MAX_NESTING_DEPTH deep raise
    PromptTooComplex.
    """
    timing = _Timing(steps, hires_steps, use_old_scheduling)
    if "[" not in prompt:
        # Without "[" there is nothing to schedule and the text comes back unchanged.
        return [[timing.steps, prompt]]
    nodes = _schedule_nodes(prompt)
    if nodes is None:
        return [[timing.steps, prompt]]
    try:
        switch_steps, when_by_node = _switch_steps(nodes, timing)
    except (OverflowError, ValueError):
        # A1111 raises on a `when` such as 1e999; sdstudio reads the text literally instead.
        return [[timing.steps, prompt]]
    return [[step, _text_at_step(nodes, step, when_by_node)] for step in switch_steps]


# --- AND composition ------------------------------------------------------------------------

_AND_SPLIT = re.compile(r"\bAND\b")
# A1111's subprompt pattern is r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$": the text keeps
# leading but not trailing whitespace, and a last ":number" is the weight. That regex is
# quadratic on long runs of whitespace, so it is written out; this is the ":number" part.
_SUBPROMPT_WEIGHT = re.compile(r"\s*([-+]?(?:\d+\.?|\d*\.\d+))")


def parse_composable_prompt(text: str) -> list[tuple[str, float]]:
    """Split on `AND` into (subprompt, weight) pairs as A1111's get_multicond_prompt_list.

    `a AND b :0.6` -> [("a", 1.0), (" b", 0.6)]. A trailing `:number` sets a part's weight
    even without AND (A1111 does the same). Composable diffusion (Liu et al. 2022) then adds
    weight * (cond_i - uncond) for each part in the denoiser.
    """
    parts = []
    for subprompt in _AND_SPLIT.split(text):
        body = subprompt.rstrip()  # str.isspace is what the regex's \s matches
        colon = body.rfind(":")
        weight = _SUBPROMPT_WEIGHT.fullmatch(body, colon + 1) if colon >= 0 else None
        if weight is None:
            parts.append((body, 1.0))
        else:
            parts.append((body[:colon].rstrip(), float(weight.group(1))))
    return parts
