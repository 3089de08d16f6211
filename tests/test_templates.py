"""Context templates: parsing, validation and safe substitution (pure Python, no tokenizer)."""

from __future__ import annotations

import pytest

from search_spaces.presets import PRESETS, resolve_template
from search_spaces.templates import (
    DEFAULT_SHOT_INPUT,
    Template,
    TemplateError,
    check_labels,
    descriptions_block,
    fill,
    fill_split,
    labels_value,
    parse_template,
    placeholders,
)

LABELS = ["negative", "positive"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{text}", Template()),
        ("Review: {text}", Template(input="Review: {text}")),
        ("{text} ({labels})", Template(input="{text} ({labels})")),
        ({"instruction": "Pick one of {labels}."}, Template(instruction="Pick one of {labels}.")),
        ({"shots": 2}, Template(shots=2, input=DEFAULT_SHOT_INPUT)),
        ({"shots": 2, "input": "{text}"}, Template(shots=2, input="{text}")),
        ({"shots": 0}, Template()),
        (
            {"label_descriptions": {"positive": "happy"}, "separator": "\n"},
            Template(label_descriptions={"positive": "happy"}, separator="\n"),
        ),
        ({"demonstration": "{label}: {text}", "shots": 1, "input": "{text}"}, None),
    ],
)
def test_parse_valid(value, expected):
    template = parse_template("t", value)
    assert isinstance(template, Template)
    if expected is not None:
        assert template == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{text.__class__}", "{text.__class__}"),
        ("{text[0]}", "{text[0]}"),
        ("{text!r}", "{text!r}"),
        ("{text:>10}", "{text:>10}"),
        ("{text} {0}", "{0}"),
        ("{text} {}", "{}"),
        ("{text} {foo}", "unknown placeholder {foo}; allowed in input: {text}, {labels}"),
        ("{text} {label_descriptions}", "unknown placeholder {label_descriptions}"),
        ("no placeholder", "exactly once (found 0)"),
        ("{text} and {text}", "exactly once (found 2)"),
        ("{text} {", "malformed braces"),
        ("{text} }", "malformed braces"),
        ("{text", "malformed braces"),
        ({"instruction": "{text}"}, "allowed in instruction"),
        ({"instruction": "{labels.x}"}, "{labels.x}"),
        ({"demonstration": "{text} {labels}", "shots": 1}, "allowed in demonstration"),
        ({"shots": -1}, "templates.t.shots"),
        ({"shots": "many"}, "templates.t.shots"),
        ({"inputs": "{text}"}, "unknown key 'inputs'"),
        ({"label_descriptions": ["a"]}, "templates.t.label_descriptions"),
        (42, "expected a string"),
        (None, "expected a string"),
        ({"input": "{text}\n{bad\nname}"}, "{bad\\nname}"),
    ],
)
def test_parse_errors_are_one_line_and_named(value, fragment):
    with pytest.raises(TemplateError) as info:
        parse_template("t", value)
    message = str(info.value)
    assert message.startswith("templates.t")
    assert "\n" not in message
    assert fragment in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("s", "values", "expected"),
    [
        ("{text}", {"text": "hi"}, "hi"),
        ("{{literal}} {text}", {"text": "hi"}, "{literal} hi"),
        ("a {{{text}}} b", {"text": "x"}, "a {x} b"),
        ("{text}", {"text": "{labels} {text.__class__} {0}"}, "{labels} {text.__class__} {0}"),
        ("{label}={text}", {"text": "t", "label": "{{x}}"}, "{{x}}=t"),
        ("", {}, ""),
    ],
)
def test_fill_is_literal_and_never_reexpands(s, values, expected):
    assert fill(s, values) == expected


def test_fill_missing_value_and_placeholders():
    with pytest.raises(KeyError):
        fill("{text}", {})
    assert placeholders("{a} {{b}} {a} {c}") == ["a", "a", "c"]
    with pytest.raises(ValueError):
        placeholders("{a.b}")


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("{text}", ["", ""]),
        ("Text: {text}\nLabel:", ["Text: ", "\nLabel:"]),
        ("{labels}: {text} ({{x}})", ["negative, positive: ", " ({x})"]),
    ],
)
def test_fill_split(s, expected):
    assert fill_split(s, {"labels": labels_value(LABELS)}, at="text") == expected


@pytest.mark.parametrize(
    ("descriptions", "expected"),
    [
        ({}, "negative\npositive"),
        ({"positive": "happy", "negative": "sad"}, "negative: sad\npositive: happy"),
        ({"positive": "happy"}, "negative\npositive: happy"),
    ],
)
def test_descriptions_block(descriptions, expected):
    assert descriptions_block(Template(label_descriptions=descriptions), LABELS) == expected


def test_check_labels():
    check_labels("x", Template(label_descriptions={"positive": "p"}), LABELS)
    with pytest.raises(TemplateError) as info:
        check_labels("x", Template(label_descriptions={"neutral": "n"}), LABELS)
    assert str(info.value) == (
        "templates.x.label_descriptions: unknown label 'neutral'; labels are: negative, positive"
    )


def test_inline_descriptions():
    assert Template(instruction="{label_descriptions}").inline_descriptions
    assert not Template(instruction="{labels}").inline_descriptions


def test_template_is_frozen_and_rejects_bad_direct_construction():
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type varies across versions
        Template().shots = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        Template(input="{text.__init__}")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_parse_and_resolve(name):
    template = resolve_template(name, {})
    assert template == parse_template(name, PRESETS[name])
    check_labels(name, template, LABELS)


def test_preset_shapes():
    assert resolve_template("plain", {}) == Template()
    assert [resolve_template(n, {}).shots for n in ("one_shot", "two_shot", "four_shot")] == [1, 2, 4]
    assert resolve_template("describe_labels", {}).inline_descriptions


def test_user_template_overrides_preset_and_unknown_lists_names():
    assert resolve_template("task", {"task": "Q: {text}"}) == Template(input="Q: {text}")
    assert resolve_template("mine", {"mine": {"shots": 3}}).shots == 3
    with pytest.raises(TemplateError) as info:
        resolve_template("nope", {"mine": "{text}"})
    message = str(info.value)
    assert message.startswith("templates.nope:")
    assert "mine" in message and "four_shot" in message and "plain" in message
    with pytest.raises(TemplateError, match=r"^templates\.task: unknown placeholder"):
        resolve_template("task", {"task": "{text} {oops}"})
