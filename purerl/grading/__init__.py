"""Verifiable rewards on real math: extract a response's final answer, compare it with the gold answer.

Extraction (:func:`extract_answer`) tries, in the configured order:

- ``boxed``: the content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces kept whole;
  ``\\boxed 5`` without braces too);
- ``answer_is``: the text after the last "answer is" / "answer:" ("The final answer is $\\frac12$.").

Equivalence (:func:`answers_match`) goes through HuggingFace's ``math-verify`` (fractions, radicals,
decimals, tuples, intervals, matrices, sets, percent, units and ``\\text{}`` / dollar signs stripped),
after a normalised string comparison that settles text answers ("Monday", "(C)") and exact matches
quickly. Every math-verify comparison runs in a worker process under a time limit
(:func:`call_with_timeout`): a pathological expression (``9^{9^{9^9}}``) is graded False with a
warning instead of hanging training.

:func:`grade` returns ``True`` / ``False``, or ``None`` when the response has no final answer.

Bounded work on any text: extraction reads only the last :data:`MAX_RESPONSE_CHARS` characters of a
response (a final answer is at its end), and every extractor is one linear pass (no backtracking
regex, no rescanning per ``\\boxed{``), so a flood of ``\\boxed{``, ``\\(`` or "answer is" costs
milliseconds, not minutes.
"""

from __future__ import annotations

import atexit
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from purerl.grading.worker import Worker, WorkerTimeout

log = logging.getLogger(__name__)

MAX_RESPONSE_CHARS = 20_000
"""Extraction searches only this many characters at the end of a response (about 5 000 tokens of
final text; a boxed answer that opens before them is not seen)."""
EXTRACTORS = ("boxed", "answer_is")
"""The extractors of training rewards and ``purerl grade``, in order."""
EVAL_EXTRACTORS = ("boxed", "answer_is", "last_math")
"""The extractors for evaluation in Qwen2.5-Math's manner: the last resort ``last_math`` too (off for
training rewards unless a config asks for it: a reward for any number in the last sentence is easier
to hack). ``purerl eval`` still grades with :data:`EXTRACTORS` (its reported numbers were measured so)."""


@dataclass(frozen=True)
class GradingConfig:
    """How responses are graded."""

    extract: tuple[str, ...] = EXTRACTORS
    """Extractors to try in order (``boxed``, ``answer_is``, ``last_math``); the first that finds an
    answer wins."""
    timeout: float = 5.0
    """Seconds one comparison may take; past it the response is graded False (with a warning)."""


class GradingTimeout(Exception):
    """A comparison ran past its time limit."""


# ------------------------------------------------------------------------------------ extraction

_BOX = re.compile(r"\\(?:boxed|fbox)\s*(\{)|\\boxed\s+([^\s$]+)")
_BRACE = re.compile(r"(?<!\\)[{}]")
"""A brace that counts: one after a backslash (``\\{``) neither opens nor closes a group."""
_FILL = re.compile(r"[\s$,;]*")
"""What may stand between boxed answers that belong together (``\\boxed{1}, \\boxed{2}``), around one
"and" / "or" / "&"."""


def _brace_pairs(text: str) -> dict[int, int]:
    """``{open: close}`` positions of every balanced pair of braces in ``text``, in one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of every ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x`` in ``text``.

    Linear: braces are matched once for the whole text, not rescanned from every box. A box inside
    another box is part of that box's content, not an answer of its own.
    """
    pairs = _brace_pairs(text)
    found: list[tuple[int, int, str]] = []
    reach = 0  # end of the last box found: a box that starts before it is nested in it
    for m in _BOX.finditer(text):
        if m.start() < reach:
            continue
        if m.group(2) is not None:
            found.append((m.start(), m.end(), m.group(2)))
        elif m.start(1) in pairs:  # an unclosed box is no answer
            close = pairs[m.start(1)]
            found.append((m.start(), close + 1, text[m.end(1) : close]))
        else:
            continue
        reach = found[-1][1]
    return found


def _joins(between: str) -> bool:
    """Whether ``between`` is only fill (spaces, dollars, commas, semicolons) around at most one "and",
    "or" or "&": the regex ``^[\\s$,;]*(?:and|or|&)?[\\s$,;]*$`` without its quadratic backtracking."""
    lead = _FILL.match(between).end()
    trail = len(between) - _FILL.match(between[::-1]).end()
    return between[lead : max(lead, trail)] in ("", "and", "or", "&")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed x``) in ``text``.

    Several boxes at the end with only commas, "and" / "or" or dollars between them are one answer,
    joined with ", " (``\\boxed{1}, \\boxed{2}`` -> ``1, 2``, which matches the gold ``1, 2``); any
    other text between two boxes keeps the last one only.

    >>> last_boxed(r"so $\\boxed{\\frac{1}{2}}$, not \\boxed{3}.")
    '3'
    >>> last_boxed(r"x = \\boxed{1}, \\boxed{2}.")
    '1, 2'
    >>> last_boxed(r"\\fbox{\\{1, 2\\}}")
    '\\\\{1, 2\\\\}'
    >>> last_boxed("no box") is None
    True
    """
    boxes = _boxes(text)
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if not _joins(text[box[1] : group[-1][0]]):
            break
        group.append(box)
    return ", ".join(content.strip() for _, _, content in reversed(group))


_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(?::\s*)?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


def answer_is(text: str) -> str | None:
    """The answer after the last "answer is" / "answer:", up to the end of its sentence or line, without
    dollars. The last marker wins, so Minerva's "Final Answer: The final answer is 7.78. I hope it is
    correct." gives ``7.78``.

    >>> answer_is("Thus the final answer is $\\\\frac{3}{4}$.")
    '\\\\frac{3}{4}'
    >>> answer_is("Final Answer: The final answer is 7.78. I hope it is correct.")
    '7.78'
    """
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    line = text[matches[-1].end() :].strip().split("\n")[0]
    boxed = last_boxed(line)
    if boxed is not None:
        return boxed
    ans = _SENTENCE_END.split(line)[0].strip().rstrip(".").strip()
    if ans.startswith("$") and ans.endswith("$"):
        ans = ans.strip("$").strip()
    return ans or None


_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_MATH_OPEN = re.compile(r"\$|\\[(\[]")


def _math_spans(text: str) -> list[str]:
    """The contents of the math spans of ``text`` (``$$...$$``, ``$...$``, ``\\(...\\)``, ``\\[...\\]``,
    each at least one character, the first closer ends it), left to right, in linear time: a lazy
    regex for them rescans to the end from every unclosed ``\\(``; here a closer once missing stays
    missing."""
    spans, pos, missing = [], 0, set()
    while (m := _MATH_OPEN.search(text, pos)) is not None:
        i, pos = m.start(), m.start() + 1
        for opener, closer in _MATH_DELIMITERS:
            if closer in missing or not text.startswith(opener, i):
                continue
            end = text.find(closer, i + len(opener) + 1)  # the content is at least one character
            if end < 0:
                missing.add(closer)
                continue
            spans.append(text[i + len(opener) : end])
            pos = end + len(closer)
            break
    return spans


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def last_math(text: str) -> str | None:
    """A last resort: the last math expression of the final sentence (``$...$``, ``\\(...\\)``,
    ``\\[...\\]``), its right-hand side after the last "=", else the last number of that sentence.
    Qwen2.5-Math's evaluation grades responses without a boxed answer this way too.

    >>> last_math("We add them.\\n\\nTherefore $x = 5$.")
    '5'
    >>> last_math("So there are 12 apples left")
    '12'
    >>> last_math("No idea.") is None
    True
    """
    body = text.strip().rstrip(".").strip()
    if not body:
        return None
    sentences = [s for s in _SENTENCE_END.split(body.replace("\n\n", ". ")) if s.strip()]
    last = sentences[-1] if sentences else body
    maths = _math_spans(last)
    if maths:
        expr = maths[-1].split("=")[-1].strip()
        return expr or None
    numbers = _NUMBER.findall(last)
    return numbers[-1] if numbers else None


_EXTRACTOR_FNS: dict[str, Callable[[str], str | None]] = {
    "boxed": last_boxed,
    "answer_is": answer_is,
    "last_math": last_math,
}


def extract_answer(text: str, methods: Sequence[str] = EXTRACTORS) -> str | None:
    """The final answer of ``text`` by the first method in ``methods`` that finds one, searched for in
    the last :data:`MAX_RESPONSE_CHARS` characters of ``text`` only."""
    for name in methods:
        if name not in _EXTRACTOR_FNS:
            raise ValueError(f"unknown answer extractor {name!r}; choose from {sorted(_EXTRACTOR_FNS)}")
    text = text[-MAX_RESPONSE_CHARS:]
    for name in methods:
        ans = _EXTRACTOR_FNS[name](text)
        if ans:
            return ans
    return None


# ----------------------------------------------------------------------------------- equivalence

_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalize(ans: str) -> str:
    """A light normal form for exact comparison: no spaces, ``\\text{}``, dollars, ``\\left``/``\\right``,
    ``\\!``, ``dfrac``/``tfrac``, trailing period or degree sign.

    >>> normalize(r"\\text{(C)}"), normalize(r"\\dfrac{1}{2}"), normalize("$ 5 $.")
    ('(C)', '\\\\frac{1}{2}', '5')
    """
    s = _TEXT.sub(r"\1", ans)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                     ("dfrac", "frac"), ("tfrac", "frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("$", "")):  # fmt: skip
        s = s.replace(old, new)
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s


_TRAILING = re.compile(r"[\s\\]*")


def _clean(ans: str) -> str:
    """An answer without trailing backslashes and spaces (``185\\ `` -> ``185``): a trailing backslash
    would escape the closing brace of the ``\\boxed{...}`` the comparison wraps it in."""
    return ans[: len(ans) - _TRAILING.match(ans[::-1]).end()]  # from the end: no quadratic backtracking


def _verify(pred: str, gold: str) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    gold_parsed = parse(f"\\boxed{{{gold}}}", extraction_config=configs, parsing_timeout=None)
    pred_parsed = parse(f"\\boxed{{{pred}}}", extraction_config=configs, parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def answers_match(pred: str, gold: str, timeout: float = 5.0) -> bool:
    """Whether the extracted answer ``pred`` equals ``gold`` (string form first, then math-verify)."""
    pred, gold = _clean(pred), _clean(gold)
    if normalize(pred) == normalize(gold):
        return True
    try:
        return call_with_timeout(_verify, (pred, gold), timeout)
    except GradingTimeout:
        log.warning("grading timed out after %.1f s (graded False): pred %r, gold %r", timeout, pred[:80], gold[:80])
        return False


def grade(response: str, gold: str | Sequence[str], config: GradingConfig = GradingConfig()) -> bool | None:
    """Grade ``response`` against ``gold`` (several golds: any of them); None when it has no answer."""
    pred = extract_answer(response, config.extract)
    if pred is None:
        return None
    golds = [gold] if isinstance(gold, str) else list(gold)
    return any(answers_match(pred, str(g), config.timeout) for g in golds)


# ------------------------------------------------------------------------------------ time limit

_worker: Worker | None = None


def _worker_init() -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that its own timeouts are off
    _verify("1", "1")  # import sympy and math-verify now, not inside the first timed call


def start_worker() -> None:
    """Start the grading helper now, in the background (a trainer calls this before loading models, so
    the helper's imports overlap the loading); the first timed comparison would start it anyway."""
    global _worker
    if _worker is None:
        _worker = Worker(warmup=_worker_init)
        atexit.register(_worker.stop)
    _worker.start()


def call_with_timeout(fn: Callable, args: tuple, seconds: float | None):
    """``fn(*args)`` in a worker process that is killed after ``seconds`` (raises :class:`GradingTimeout`).

    A separate process is the only safe limit: sympy spends its time in C (big-integer powers) where
    no signal or thread can interrupt it. The helper is a fresh interpreter (:mod:`purerl.grading.worker`),
    started once and reused; one that dies (out of memory) is replaced and the call counts as timed out.
    """
    if seconds is None or seconds <= 0:
        return fn(*args)
    start_worker()
    try:
        return _worker.call(fn, args, seconds)
    except WorkerTimeout:
        raise GradingTimeout from None
