"""A small, task-agnostic library of context templates, addressable by name from a sweep file.

``resolve_template`` looks a name up in the sweep's own ``templates:`` mapping first, then in
:data:`PRESETS`, so a user template silently overrides a preset of the same name.
Pure Python + pydantic (no torch, transformers or ray).
"""

from __future__ import annotations

from collections.abc import Mapping

from search_spaces.templates import Template, TemplateError, parse_template

__all__ = ["PRESETS", "resolve_template"]

_CLASSIFY = "Classify the text into one of these labels: {labels}."

PRESETS: dict[str, str | dict] = {
    # The bare input: equivalent to tokenizing the text with no context at all.
    "plain": "{text}",
    # A one-sentence task description naming the labels.
    "task": {"instruction": _CLASSIFY},
    # The labels one per line, with the sweep's descriptions when given ("label: description").
    "describe_labels": {"instruction": "Classify the text into one of these labels:\n{label_descriptions}"},
    # k demonstrations from the training split, then the input in the same "Text: ...\nLabel:" shape.
    "one_shot": {"instruction": _CLASSIFY, "shots": 1},
    "two_shot": {"instruction": _CLASSIFY, "shots": 2},
    "four_shot": {"instruction": _CLASSIFY, "shots": 4},
}


def resolve_template(name: str, user_templates: Mapping[str, str | dict]) -> Template:
    """The parsed template called ``name``: from ``user_templates`` if defined there, else from :data:`PRESETS`.

    Raises :class:`TemplateError` (one line) if the name is defined in neither, listing the available names,
    or if the definition is invalid.
    """
    if name in user_templates:
        return parse_template(name, user_templates[name])
    if name in PRESETS:
        return parse_template(name, PRESETS[name])
    available = ", ".join(sorted(set(user_templates) | set(PRESETS)))
    raise TemplateError(f"templates.{name}: unknown template; available: {available}")
