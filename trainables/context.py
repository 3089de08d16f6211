"""Render a :class:`~search_spaces.templates.Template` around each input text and tokenize it to a budget.

Contracts:

* Parts, joined by ``template.separator``: the filled instruction, the label-descriptions block (when given
  and not inlined), ``template.shots`` demonstrations, then the filled input.
* Demonstrations are drawn ONLY from the training rows given to the constructor, never from validation or
  test texts. The draw is deterministic in ``(seed, split, index)`` (``random.Random`` seeded with a string,
  which is stable across processes). Training rows whose text equals the example's text are never used (in
  every split), and for ``split="train"`` the row at ``index`` itself is excluded too. When fewer candidates
  than ``shots`` exist, all candidates are used.
* The text is never cut to make room for context. Over budget, whole demonstrations are dropped first (the
  one farthest from the input first), then context tokens before the text are cut from the left (keeping the
  tokens nearest the text), then tokens after it from the right. A text longer than the budget on its own
  loses all context and is cut from the right. Every example where anything was cut counts in ``truncated``.
* Pieces are tokenized separately (``add_special_tokens=False``) and concatenated, so token boundaries
  between pieces may differ slightly from tokenizing the rendered string in one go. One common case is
  handled: if the tokenizer attaches a preceding space to the next word (byte-level BPE, e.g. GPT-2) and the
  input part before ``{text}`` ends with a space, that space is tokenized with the text.
* The special tokens are derived from the tokenizer once (no ``build_inputs_with_special_tokens`` in
  transformers 5); output ids are ``head + context + text + context + tail`` and never exceed ``max_length``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from search_spaces.templates import (
    Template,
    check_labels,
    descriptions_block,
    fill,
    fill_split,
    labels_value,
)

__all__ = ["ContextEncoder", "EncodedSplit", "special_tokens"]

SPLITS = ("train", "validation", "test")


@dataclass
class EncodedSplit:
    """Token ids for one split.

    ``input_ids`` include the tokenizer's special tokens and each has ``len <= max_length``; ``truncated`` is
    the number of examples where context was cut or dropped, or the text itself was cut, to fit.
    """

    input_ids: list[list[int]]
    truncated: int


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """``(head, tail)``: the ids the tokenizer puts before and after a single sequence ([CLS]/[SEP], BOS, ...).

    Found by locating the plain ids of a probe word inside its ids with special tokens.
    """
    for probe in ("hello", "a", "1"):
        plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = tokenizer(probe, add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if plain and full[start : start + len(plain)] == plain:
                return list(full[:start]), list(full[start + len(plain) :])
    raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}")


def _space_goes_with_next_word(encode) -> bool:
    """Whether ``"x: y"`` tokenizes as ``"x:" + " y"`` but not as ``"x: " + "y"`` (byte-level BPE)."""
    whole = encode("Label: hello")
    return encode("Label:") + encode(" hello") == whole and encode("Label: ") + encode("hello") != whole


class ContextEncoder:
    """Render and tokenize texts with a context template; see the module docstring for the contracts.

    ``train_texts``/``train_labels`` (label indices into ``label_names``) are the only demonstration source.
    For ``encode(..., split="train")`` pass the same training texts, so that ``index`` names the same row.
    ``name`` only labels errors about the template (``templates.<name>...``).
    """

    def __init__(
        self,
        tokenizer,
        template: Template,
        *,
        label_names: Sequence[str],
        train_texts: Sequence[str],
        train_labels: Sequence[int],
        max_length: int,
        seed: int,
        name: str = "template",
    ) -> None:
        if len(train_texts) != len(train_labels):
            raise ValueError(f"{len(train_texts)} training texts but {len(train_labels)} labels")
        bad = [y for y in train_labels if not 0 <= y < len(label_names)]
        if bad:
            raise ValueError(f"training label {bad[0]} is outside 0..{len(label_names) - 1}")
        check_labels(name, template, label_names)
        self.tokenizer, self.template, self.seed = tokenizer, template, seed
        self.label_names = list(label_names)
        self.train_texts, self.train_labels = list(train_texts), list(train_labels)
        self.max_length = max_length
        self._head, self._tail = special_tokens(tokenizer)
        self._budget = max_length - len(self._head) - len(self._tail)
        if self._budget <= 0:
            raise ValueError(f"max_length={max_length} leaves no room next to the tokenizer's special tokens")

        labels = labels_value(self.label_names)
        block = descriptions_block(template, self.label_names)
        self._fixed_parts: list[str] = []  # rendered parts before the demonstrations
        if template.instruction:
            self._fixed_parts.append(
                fill(template.instruction, {"labels": labels, "label_descriptions": block})
            )
        if template.label_descriptions and not template.inline_descriptions:
            self._fixed_parts.append(block)
        self._before, self._after = fill_split(template.input, {"labels": labels}, at="text")

        self._sep = self._encode(template.separator)
        self._fixed = [i for part in self._fixed_parts for i in self._encode(part) + self._sep]
        before, self._lead = self._before, ""
        if before.endswith(" ") and _space_goes_with_next_word(self._encode):
            before, self._lead = before[:-1], " "
        self._before_ids, self._after_ids = self._encode(before), self._encode(self._after)
        self._demo_ids: dict[int, list[int]] = {}  # train index -> demonstration ids + separator ids
        self._rows_by_text: dict[str, list[int]] = {}
        for i, text in enumerate(self.train_texts):
            self._rows_by_text.setdefault(text, []).append(i)

    def _encode(self, s: str) -> list[int]:
        return list(self.tokenizer(s, add_special_tokens=False)["input_ids"]) if s else []

    def _demonstration(self, row: int) -> str:
        label = self.label_names[self.train_labels[row]]
        return fill(self.template.demonstration, {"text": self.train_texts[row], "label": label})

    def demonstrations(self, text: str, *, index: int, split: str) -> list[int]:
        """Training row indices of the demonstrations for one example, farthest from the input first."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        n, k = len(self.train_texts), self.template.shots
        if k == 0 or n == 0:
            return []
        excluded = set(self._rows_by_text.get(text, ()))
        if split == "train":
            excluded.add(index)
        rng = random.Random(f"{self.seed}:{split}:{index}")
        drawn = rng.sample(range(n), min(n, k + len(excluded)))
        return [row for row in drawn if row not in excluded][:k]

    def render(self, text: str, *, index: int, split: str) -> str:
        """The full rendered string for one example (for display and logging), without any truncation."""
        demos = [self._demonstration(r) for r in self.demonstrations(text, index=index, split=split)]
        parts = [*self._fixed_parts, *demos, self._before + text + self._after]
        return self.template.separator.join(parts)

    def encode(self, texts: Sequence[str], *, split: Literal["train", "validation", "test"]) -> EncodedSplit:
        """Token ids for ``texts`` (``texts[i]`` is example ``index=i`` of ``split``), each within max_length."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not texts:
            return EncodedSplit([], 0)
        text_ids = self.tokenizer([self._lead + t for t in texts], add_special_tokens=False)["input_ids"]
        demos = [self.demonstrations(t, index=i, split=split) for i, t in enumerate(texts)]
        missing = sorted({r for rows in demos for r in rows} - self._demo_ids.keys())
        if missing:
            encoded = self.tokenizer([self._demonstration(r) for r in missing], add_special_tokens=False)
            for row, ids in zip(missing, encoded["input_ids"], strict=True):
                self._demo_ids[row] = list(ids) + self._sep
        out, truncated = [], 0
        for ids, rows in zip(text_ids, demos, strict=True):
            assembled, cut = self._assemble(list(ids), [self._demo_ids[r] for r in rows])
            out.append(assembled)
            truncated += cut
        return EncodedSplit(out, truncated)

    def _assemble(self, text: list[int], demos: list[list[int]]) -> tuple[list[int], bool]:
        """``head + prefix + text + suffix + tail`` within the budget, and whether anything was cut."""
        budget, suffix = self._budget, self._after_ids
        fixed_len = len(self._fixed) + len(self._before_ids) + len(text) + len(suffix)
        total = fixed_len + sum(len(d) for d in demos)
        cut = total > budget
        while total > budget and demos:  # drop whole demonstrations, farthest from the input first
            total -= len(demos.pop(0))
        if total <= budget:
            prefix = self._fixed + [i for d in demos for i in d] + self._before_ids
        elif len(text) >= budget:  # the text alone fills the budget: no context, text cut from the right
            prefix, text, suffix = [], text[:budget], []
        else:
            room = budget - len(text)
            prefix = self._fixed + self._before_ids
            keep = max(0, room - len(suffix))
            prefix, suffix = prefix[len(prefix) - keep :], suffix[:room]
        return self._head + prefix + text + suffix + self._tail, cut
