"""Context templates: user-supplied text placed around each input before tokenization.

Templates come from the sweep YAML, i.e. they are untrusted user data. They are therefore never passed to
``str.format``/``format_map``: placeholders are located with ``string.Formatter().parse`` (parse only) and
substituted here, by plain concatenation. Substituted values are never re-parsed, so a data text that
itself contains ``{labels}`` stays literal. ``{{`` and ``}}`` are literal braces.

Allowed placeholders, per field:

* ``instruction``: ``{labels}``, ``{label_descriptions}``
* ``demonstration``: ``{text}``, ``{label}`` (used only when ``shots > 0``)
* ``input``: ``{text}`` (exactly once), ``{labels}``
* ``separator`` and the ``label_descriptions`` values are literal text (braces are not interpreted).

Any field with attribute access (``{text.x}``), indexing (``{text[0]}``), a conversion (``{text!r}``), a
format spec (``{text:>10}``), a positional name (``{0}``, ``{}``) or an unknown name is rejected.
This module is pure Python + pydantic (no torch, transformers or ray), so the spec layer can import it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

import pydantic

from search_spaces.errors import UserError

__all__ = [
    "DEFAULT_SHOT_INPUT",
    "Template",
    "TemplateError",
    "check_labels",
    "descriptions_block",
    "fill",
    "fill_split",
    "labels_value",
    "parse_template",
    "placeholders",
]

# Default ``input`` for a structured template with shots > 0 and no explicit ``input``: it mirrors the
# default demonstration so the model sees the same "Text: ...\nLabel:" shape for the example to classify.
DEFAULT_SHOT_INPUT = "Text: {text}\nLabel:"

_ALLOWED: dict[str, tuple[str, ...]] = {
    "instruction": ("labels", "label_descriptions"),
    "demonstration": ("text", "label"),
    "input": ("text", "labels"),
}


class TemplateError(UserError):
    """A template is invalid. The message is one line naming the template (``templates.<name>``) and the fix."""


def _one_line(message: str) -> str:
    return message.replace("\r", "\\r").replace("\n", "\\n")


def _fields(s: str) -> list[tuple[str, str | None]]:
    """``(literal, name)`` pairs of ``s`` with ``{{``/``}}`` already unescaped in ``literal``.

    Raises ``ValueError`` (a plain one; callers add the template name) on malformed braces or any field that is
    not a bare identifier: attribute access, indexing, conversions, format specs, positional fields.
    """
    try:
        parsed = list(string.Formatter().parse(s))
    except ValueError as exc:
        raise ValueError(f"malformed braces ({exc}); write literal braces as {{{{ and }}}}") from None
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            if conversion or spec or not name.isidentifier():
                raise ValueError(
                    f"placeholder {shown} is not allowed: only plain names, no attribute access, indexing, "
                    "conversion, format spec or positional field"
                )
        out.append((literal, name))
    return out


def placeholders(s: str) -> list[str]:
    """Names of the placeholders used in ``s``, in order (repeats kept). Raises ``ValueError`` if malformed."""
    return [name for _, name in _fields(s) if name is not None]


def fill(s: str, values: Mapping[str, str]) -> str:
    """Substitute ``values`` into ``s`` safely: literal ``{{``/``}}`` become braces, values are not re-parsed.

    Raises ``ValueError`` for a malformed field and ``KeyError`` for a name missing from ``values``.
    """
    return "".join(literal + (values[name] if name is not None else "") for literal, name in _fields(s))


def fill_split(s: str, values: Mapping[str, str], at: str) -> list[str]:
    """Like :func:`fill`, but split at every ``{at}`` placeholder instead of substituting it.

    ``fill_split("a {text} b", {}, "text") == ["a ", " b"]``; the result always has one more piece than the
    number of ``{at}`` fields.
    """
    pieces, current = [], []
    for literal, name in _fields(s):
        current.append(literal)
        if name == at:
            pieces.append("".join(current))
            current = []
        elif name is not None:
            current.append(values[name])
    pieces.append("".join(current))
    return pieces


def labels_value(label_names: Sequence[str]) -> str:
    """What ``{labels}`` renders to: the label names joined by ``", "``."""
    return ", ".join(label_names)


def descriptions_block(template: Template, label_names: Sequence[str]) -> str:
    """What ``{label_descriptions}`` (and the stand-alone descriptions part) renders to.

    One line per label in ``label_names`` order: ``"label: description"``, or just ``"label"`` when the
    template gives no description for it (so with no descriptions at all it lists the label names).
    """
    descriptions = template.label_descriptions
    return "\n".join(f"{n}: {descriptions[n]}" if n in descriptions else n for n in label_names)


class Template(pydantic.BaseModel, frozen=True, extra="forbid"):
    """A validated context template; see the module docstring for the placeholders each field accepts.

    Rendered parts, joined by ``separator``: the filled ``instruction`` (if non-empty), the descriptions block
    (if ``label_descriptions`` is non-empty and the instruction does not inline ``{label_descriptions}``),
    ``shots`` filled ``demonstration``s drawn from the training split, then the filled ``input``.
    """

    instruction: str = ""
    label_descriptions: dict[str, str] = {}
    shots: int = pydantic.Field(default=0, ge=0)
    demonstration: str = "Text: {text}\nLabel: {label}"
    input: str = "{text}"
    separator: str = "\n\n"

    @pydantic.model_validator(mode="after")
    def _check_placeholders(self) -> Template:
        for field, allowed in _ALLOWED.items():
            shown = ", ".join("{" + a + "}" for a in allowed)
            try:
                names = placeholders(getattr(self, field))
            except ValueError as exc:
                raise ValueError(f"{exc}; allowed in {field}: {shown}") from None
            for name in names:
                if name not in allowed:
                    raise ValueError(f"unknown placeholder {{{name}}}; allowed in {field}: {shown}")
        count = placeholders(self.input).count("text")
        if count != 1:
            raise ValueError(
                f"input must contain {{text}} exactly once (found {count}), e.g. 'Text: {{text}}'"
            )
        return self

    @property
    def inline_descriptions(self) -> bool:
        """Whether the instruction places the descriptions itself via ``{label_descriptions}``."""
        return "label_descriptions" in placeholders(self.instruction)


def _describe(error: Mapping) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f": unknown key '{loc}'; allowed keys: {', '.join(Template.model_fields)}"
    if error["type"] == "value_error":
        return f": {error['ctx']['error']}"
    return f".{loc}: {error['msg']}" if loc else f": {error['msg']}"


def parse_template(name: str, value: str | dict) -> Template:
    """Parse one entry of the sweep's ``templates:`` mapping.

    A ``str`` is shorthand for ``Template(input=value)``. A ``dict`` is the structured form; when it has
    ``shots > 0`` and no ``input`` key, ``input`` defaults to :data:`DEFAULT_SHOT_INPUT`. Every problem raises
    :class:`TemplateError` with a one-line message starting ``templates.<name>:``.
    """
    if isinstance(value, str):
        data: dict = {"input": value}
    elif isinstance(value, Mapping):
        data = dict(value)
        shots = data.get("shots", 0)
        if "input" not in data and isinstance(shots, int) and shots > 0:
            data["input"] = DEFAULT_SHOT_INPUT
    else:
        raise TemplateError(
            f"templates.{name}: expected a string (the input template) or a mapping, got {type(value).__name__}"
        )
    try:
        return Template(**data)
    except pydantic.ValidationError as exc:
        raise TemplateError(_one_line(f"templates.{name}{_describe(exc.errors()[0])}")) from None


def check_labels(name: str, template: Template, label_names: Sequence[str]) -> None:
    """Raise :class:`TemplateError` if ``template.label_descriptions`` names a label not in ``label_names``."""
    known = set(label_names)
    for label in template.label_descriptions:
        if label not in known:
            raise TemplateError(
                _one_line(
                    f"templates.{name}.label_descriptions: unknown label {label!r}; "
                    f"labels are: {', '.join(label_names)}"
                )
            )
