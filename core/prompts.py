"""AUTOMATIC1111's prompt syntax, read the way AUTOMATIC1111 reads it (no model, no torch).

A prompt goes through three steps, in A1111's order:

1. :func:`extract_extra_networks` takes out ``<kind:name:args>`` tags (``<lora:x:0.8>``,
   ``<hypernet:y>``) and returns them as data; the encoder never sees them. What a tag does is
   someone else's business: this module only finds them.
2. :func:`prompt_schedule` resolves prompt editing (``[from:to:when]``, ``[to:when]``,
   ``[from::when]``) and alternation (``[a|b]``) into one plain prompt per stretch of steps.
3. :func:`parse_prompt_attention` turns each plain prompt into ``(text, weight)`` pieces:
   ``(a)`` ×1.1, ``[a]`` ÷1.1, ``(a:1.5)`` ×1.5, ``\\(`` a literal bracket, and ``BREAK`` as the
   marker ``("BREAK", -1.0)`` that starts a new 75-token chunk.

Step 3 gives exactly A1111's weights, floating-point rounding included (its doctest examples are
tests), because the multipliers are applied in the same order. The work is bounded for any prompt
of ``core.engine.MAX_PROMPT_CHARS``: nothing recurses per bracket in step 3 (4,000 ``(`` take a
millisecond), step 2 gives up on brackets nested deeper than :data:`MAX_SCHEDULE_DEPTH` (the prompt
is then read as plain text, as A1111 does with a prompt its grammar cannot parse), and every weight
must stay within :data:`MAX_WEIGHT`.

Privacy: a prompt, and the LoRA or embedding names inside it, are the user's. Nothing here logs,
and no error message quotes any part of a prompt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from core.errors import InputError

# The marker parse_prompt_attention puts where BREAK stood (A1111's own convention).
BREAK = ("BREAK", -1.0)
# The largest emphasis a token may end up with, either sign (A1111 has no bound; typical prompts
# stay under 2, and anything near this limit already drowns the rest of the prompt).
MAX_WEIGHT = 100.0
# Prompt editing nested deeper than this is read as plain text.
MAX_SCHEDULE_DEPTH = 64

_ROUND = 1.1
_SQUARE = 1 / 1.1

# The tokens of A1111's emphasis language, in the order its tokenizer tries them:
# escapes, a lone backslash, openers, ":number)" (a weighted close), closers, a run of plain text,
# and a lone colon.
_ATTENTION_TOKEN = re.compile(
    r"""
      \\[()\[\]\\]              # \( \) \[ \] \\  -> the character itself
    | \\                        # a lone backslash -> nothing
    | [(\[]                     # an opener
    | :\s*([+-]?[.\d]+)\s*\)    # (text:1.3)
    | [)\]]                     # a closer
    | [^\\()\[\]:]+             # plain text
    | :                         # a colon that is not a weight
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)

# <kind:args> with kind a word, exactly A1111's extra-network tag.
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")

# lark's SIGNED_NUMBER, the "when" of [from:to:when].
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)")
_SCHEDULE_SPECIAL = set("\\[]():|")


# -- extra networks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtraNetwork:
    """One ``<kind:name:args>`` tag. ``repr`` hides the name and arguments (they are the user's)."""

    kind: str
    args: tuple[str, ...] = field(repr=False)

    @property
    def name(self) -> str:
        return self.args[0]

    @property
    def positional(self) -> tuple[str, ...]:
        """Arguments without ``=`` (for ``<lora:name:0.8>``: ``("name", "0.8")``)."""
        return tuple(a for a in self.args if len(a.split("=", 2)) != 2)

    @property
    def named(self) -> dict[str, str]:
        """Arguments written ``key=value``."""
        pairs = (a.split("=", 2) for a in self.args)
        return {p[0]: p[1] for p in pairs if len(p) == 2}


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """The prompt without its ``<kind:args>`` tags, and the tags in order (A1111's parse_prompt)."""
    found: list[ExtraNetwork] = []

    def take(match: re.Match[str]) -> str:
        found.append(ExtraNetwork(match.group(1), tuple(match.group(2).split(":"))))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), found


# -- emphasis ---------------------------------------------------------------------------------
def _weight_literal(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(
            "prompt_bad_weight",
            "A weight in the prompt is not a number; write it like (word:1.2).",
        ) from None


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` pieces exactly as A1111's function of that name.

    Runs of equal weight are merged; an empty prompt is ``[("", 1.0)]``; ``BREAK`` outside any
    bracket is the :data:`BREAK` marker. Raises :class:`InputError` for a weight that is not a
    number (``(a:1.2.3)``, which A1111 fails on too) or for emphasis beyond :data:`MAX_WEIGHT`.
    """
    pieces: list[str] = []
    weights: list[float] = []
    # (first piece, end piece, multiplier): A1111 multiplies the pieces a bracket spans when the
    # bracket closes. Recording the ranges and applying them in the same order afterwards gives
    # the same floating-point results without A1111's quadratic re-walks.
    ranges: list[tuple[int, int | None, float]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    for match in _ATTENTION_TOKEN.finditer(text):
        part, weight = match.group(0), match.group(1)
        if part.startswith("\\"):
            pieces.append(part[1:])
            weights.append(1.0)
        elif part == "(":
            round_open.append(len(pieces))
        elif part == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            ranges.append((round_open.pop(), len(pieces), _weight_literal(weight)))
        elif part == ")" and round_open:
            ranges.append((round_open.pop(), len(pieces), _ROUND))
        elif part == "]" and square_open:
            ranges.append((square_open.pop(), len(pieces), _SQUARE))
        else:
            for i, text_part in enumerate(_BREAK.split(part)):
                if i:
                    pieces.append(BREAK[0])
                    weights.append(BREAK[1])
                pieces.append(text_part)
                weights.append(1.0)
    # Brackets left open act on everything after them: all round ones first, then square ones.
    ranges.extend((start, None, _ROUND) for start in round_open)
    ranges.extend((start, None, _SQUARE) for start in square_open)

    if not pieces:
        return [("", 1.0)]
    values = np.array(weights, dtype=np.float64)
    for start, end, multiplier in ranges:
        values[start:end] *= multiplier

    merged: list[tuple[str, float]] = []
    for piece, value in zip(pieces, values.tolist(), strict=True):
        if merged and merged[-1][1] == value:
            merged[-1] = (merged[-1][0] + piece, merged[-1][1])
        else:
            merged.append((piece, value))
    for piece, value in merged:
        if piece and not (math.isfinite(value) and abs(value) <= MAX_WEIGHT):
            raise InputError(
                "prompt_weight_out_of_range",
                "A weight in the prompt is too large; keep emphasis between -{max} and {max}.",
                max=int(MAX_WEIGHT),
            )
    return merged


def is_break(piece: tuple[str, float]) -> bool:
    """Whether a piece from :func:`parse_prompt_attention` is the BREAK marker."""
    return piece[0] == BREAK[0] and piece[1] == BREAK[1]


# -- prompt editing and alternation --------------------------------------------------------------
# The parse tree: a sequence is a list of parts; a part is literal text, a scheduled edit or an
# alternation. Emphasis brackets stay literal text: step 3 reads them.
@dataclass
class _Scheduled:
    before: list[object] | None
    after: list[object]
    when: str
    step: int = 0


@dataclass
class _Alternate:
    options: list[list[object]]


class _TooDeep(Exception):
    pass


class _ScheduleParser:
    """A hand-written reading of A1111's prompt-editing grammar.

    ``prompt`` is a run of plain text, whitespace and bracket constructs; a construct is
    ``(p)``, ``(p:p)``, ``[p]`` (emphasis, kept as text), ``[p:N]``, ``[p:p:N]`` (editing) or
    ``[p|p|...]`` (alternation). At the top level a bracket or colon that starts no construct
    is literal text, and a ``|`` there makes the whole prompt plain text, as in A1111. A
    construct's reading depends only on where it starts, so each start is read once.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.memo: dict[int, tuple[int, list[object]] | None] = {}

    def plain_end(self, i: int) -> int:
        text, n = self.text, len(self.text)
        while i < n:
            char = text[i]
            if char == "\\":
                if i + 1 >= n:
                    return i  # a trailing backslash is not plain text in A1111's grammar
                i += 2
            elif char in _SCHEDULE_SPECIAL:
                return i
            else:
                i += 1
        return i

    def prompt(self, i: int, depth: int) -> tuple[int, list[object]]:
        """Read a run of plain text and constructs from ``i``; stop where neither fits."""
        parts: list[object] = []
        while True:
            end = self.plain_end(i)
            if end > i:
                parts.append(self.text[i:end])
                i = end
            if i < len(self.text) and self.text[i] in "([":
                construct = self.construct(i, depth + 1)
                if construct is not None:
                    i, inner = construct
                    parts.extend(inner)
                    continue
            return i, parts

    def construct(self, i: int, depth: int) -> tuple[int, list[object]] | None:
        if i in self.memo:
            return self.memo[i]
        if depth > MAX_SCHEDULE_DEPTH:
            raise _TooDeep()
        result = self._construct(i, depth)
        self.memo[i] = result
        return result

    def _at(self, i: int) -> str:
        return self.text[i] if i < len(self.text) else ""

    def _construct(self, i: int, depth: int) -> tuple[int, list[object]] | None:
        opener = self.text[i]
        j, first = self.prompt(i + 1, depth)
        if opener == "(":
            if self._at(j) == ")":
                return j + 1, ["(", *first, ")"]
            if self._at(j) != ":":
                return None
            k, second = self.prompt(j + 1, depth)
            if self._at(k) != ")":
                return None
            return k + 1, ["(", *first, ":", *second, ")"]
        # opener == "["
        if self._at(j) == "]":
            return j + 1, ["[", *first, "]"]
        if self._at(j) == "|":
            options = [first]
            while self._at(j) == "|":
                j, option = self.prompt(j + 1, depth)
                options.append(option)
            if self._at(j) != "]":
                return None
            return j + 1, [_Alternate(options)]
        if self._at(j) != ":":
            return None
        k, second = self.prompt(j + 1, depth)
        if self._at(k) == "]":
            when = self._number(second)
            return None if when is None else (k + 1, [_Scheduled(None, first, when)])
        if self._at(k) != ":":
            return None
        m, third = self.prompt(k + 1, depth)
        when = self._number(third)
        if self._at(m) != "]" or when is None:
            return None
        return m + 1, [_Scheduled(first, second, when)]

    @staticmethod
    def _number(parts: list[object]) -> str | None:
        if len(parts) != 1 or not isinstance(parts[0], str):
            return None
        stripped = parts[0].strip()
        return stripped if _NUMBER.fullmatch(stripped) else None

    def parse(self) -> list[object] | None:
        """The whole prompt, or None where A1111's grammar fails (a top-level ``|``)."""
        parts: list[object] = []
        i = 0
        while i < len(self.text):
            i, run = self.prompt(i, 0)
            parts.extend(run)
            if i < len(self.text):
                if self.text[i] not in "[]():":
                    return None  # "|" or a trailing backslash
                parts.append(self.text[i])
                i += 1
        return parts


def _walk(parts: list[object]) -> list[object]:
    """Every node in a sequence, nested ones included (iterative)."""
    nodes: list[object] = []
    stack = [parts]
    while stack:
        for part in stack.pop():
            nodes.append(part)
            if isinstance(part, _Scheduled):
                stack.append(part.after)
                if part.before is not None:
                    stack.append(part.before)
            elif isinstance(part, _Alternate):
                stack.extend(part.options)
    return nodes


def _edit_step(when: str, steps: int) -> int:
    """A1111's reading of "when": with a decimal point a fraction of the steps, else a step."""
    value = float(when)
    if "." in when:
        value *= steps
    if not math.isfinite(value):
        return steps if value > 0 else -1
    return min(steps, int(value))


def _render(parts: list[object], step: int) -> str:
    out: list[str] = []
    stack: list[list[object]] = [list(reversed(parts))]
    while stack:
        pending = stack[-1]
        if not pending:
            stack.pop()
            continue
        part = pending.pop()
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, _Scheduled):
            chosen = (part.before or []) if step <= part.step else part.after
            stack.append(list(reversed(chosen)))
        elif isinstance(part, _Alternate):
            stack.append(list(reversed(part.options[(step - 1) % len(part.options)])))
    return "".join(out)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """``[(last step, prompt), ...]`` as A1111's ``get_learned_conditioning_prompt_schedules``.

    ``steps`` is the number of sampling steps; the prompt of entry ``k`` is used up to and
    including step ``k`` (see :func:`prompt_at_step`). A prompt without editing or alternation
    is ``[(steps, prompt)]``.
    """
    if "[" not in prompt:
        return [(steps, prompt)]
    try:
        parts = _ScheduleParser(prompt).parse()
    except _TooDeep:
        parts = None
    if parts is None:
        return [(steps, prompt)]
    boundaries = {steps}
    for node in _walk(parts):
        if isinstance(node, _Scheduled):
            node.step = _edit_step(node.when, steps)
            if node.step >= 1:
                boundaries.add(node.step)
        elif isinstance(node, _Alternate):
            boundaries.update(range(1, steps + 1))
    return [(step, _render(parts, step)) for step in sorted(boundaries)]


def prompt_at_step(schedule: list[tuple[int, str]], step: int) -> int:
    """The index of the schedule entry A1111 uses at sampling step ``step`` (counted from 0)."""
    for index, (last, _) in enumerate(schedule):
        if step <= last:
            return index
    return 0
