"""What an evaluated model is prompted with and what its answer is compared to, per format,
through the model's chat template when it has one (datasets_app.formats.prompt_text)."""

from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from datasets_app import formats

NO_TEMPLATE = SimpleNamespace(chat_template=None)
CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "On its way."},
        {"role": "user", "content": "When?"},
        {"role": "assistant", "content": "Tomorrow."},
    ]
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.mark.parametrize(
    "fmt, fields, prompt, reference",
    [
        ("instruction", {"instruction": "Sum", "input": "2+2", "output": "4"}, "Sum\n\n2+2", "4"),
        ("instruction", {"instruction": "Say hi", "input": "", "output": "hi"}, "Say hi", "hi"),
        ("completion", {"prompt": "Once", "completion": " upon"}, "Once", " upon"),
        ("classification", {"text": "great!", "label": "pos"}, "great!", "pos"),
        ("preference", {"prompt": "Q", "chosen": "good", "rejected": "bad"}, "Q", "good"),
        ("chat", CHAT, "Be brief.\nWhere is my parcel?\nOn its way.\nWhen?", "Tomorrow."),
    ],
)
def test_without_a_chat_template_the_prompt_is_plain_text(fmt, fields, prompt, reference):
    assert formats.prompt_text(fmt, fields, NO_TEMPLATE) == (prompt, reference)


def test_with_a_chat_template_the_prompt_ends_where_the_answer_starts(tokenizer):
    text, reference = formats.prompt_text("chat", CHAT, tokenizer)
    assert reference == "Tomorrow."
    expected = tokenizer.apply_chat_template(
        CHAT["messages"][:-1], tokenize=False, add_generation_prompt=True
    )
    assert text == expected and text.endswith("<|im_start|>assistant\n")
    assert "Be brief." in text and "On its way." in text and "Tomorrow." not in text
    instruction = {"instruction": "Sum", "input": "2+2", "output": "4"}
    text, reference = formats.prompt_text("instruction", instruction, tokenizer)
    assert reference == "4" and "Sum\n\n2+2" in text and text.endswith("assistant\n")


def test_a_completion_is_never_wrapped_in_a_chat_template(tokenizer):
    fields = {"prompt": "Once upon", "completion": " a time"}
    assert formats.prompt_text("completion", fields, tokenizer) == ("Once upon", " a time")


def test_a_tokenizer_without_the_attribute_gets_plain_text():
    fields = {"instruction": "Say hi", "output": "hi"}
    assert formats.prompt_text("instruction", fields, SimpleNamespace()) == ("Say hi", "hi")


def test_line_endings_and_unicode_forms_are_normalised_everywhere_in_a_record():
    """Windows (CRLF) and old Mac (CR) line endings become LF and text becomes NFC, in plain
    fields and inside chat messages, so the same content hashes the same."""
    from datasets_app import formats

    assert formats.normalise(
        "instruction", {"instruction": "a\r\nb\rc", "output": "e\u0301", "input": "x\r\n"}
    ) == {"instruction": "a\nb\nc", "output": "\u00e9", "input": "x\n"}
    chat = {
        "messages": [
            {"role": "user", "content": "a\r\nb"},
            {"role": "assistant", "content": "c\rd"},
        ]
    }
    assert formats.normalise("chat", chat)["messages"] == [
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "c\nd"},
    ]


@pytest.mark.parametrize(
    "fmt, fields, expected",
    [
        (
            "instruction",
            {"split": "train", "output": "4", "extra": "x", "instruction": "Sum"},
            [("instruction", "Sum"), ("output", "4"), ("input", "")],
        ),
        (
            "completion",
            {"completion": " upon", "id": 7, "prompt": "Once"},
            [("prompt", "Once"), ("completion", " upon")],
        ),
        (
            "classification",
            {"label": " pos\n", "text": "great!", "split": "eval"},
            [("text", "great!"), ("label", "pos")],
        ),
        (
            "preference",
            {"rejected": "bad", "chosen": "good", "prompt": "Q", "score": 1},
            [("prompt", "Q"), ("chosen", "good"), ("rejected", "bad")],
        ),
        (
            "chat",
            {
                "split": "test",
                "messages": [
                    {"content": "hi", "role": "user", "name": "ann"},
                    {"name": "bot", "role": "assistant", "content": "hello"},
                ],
            },
            [
                (
                    "messages",
                    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                )
            ],
        ),
    ],
)
def test_a_normalised_record_has_exactly_its_formats_fields_in_a_fixed_order(fmt, fields, expected):
    """Only the format's fields are kept (the split, ids and extra columns go), in the format's
    order, an absent optional field as "", a label without its spaces, a chat message as role
    and content: the stored record and its hash do not depend on how the file was written."""
    normalised = formats.normalise(fmt, fields)
    assert list(normalised.items()) == expected
    if fmt == "chat":
        assert [list(m) for m in normalised["messages"]] == [["role", "content"]] * 2


@pytest.mark.parametrize(
    "fields, split",
    [
        ({}, None),
        ({"split": None}, None),
        ({"split": ""}, None),
        ({"split": " Validation "}, "eval"),
        ({"split": "DEV"}, "eval"),
        ({"split": "train"}, "train"),
        ({"split": "test"}, "test"),
    ],
)
def test_a_records_split_is_its_alias_and_an_empty_cell_means_none(fields, split):
    assert formats.split_of(fields) == split


def test_the_content_hash_ignores_key_order_keeps_unicode_and_never_changes():
    """Stored versions are compared by these hashes (an identical upload is refused, a diff
    pairs examples by them), so the hash of a record is fixed across releases: its JSON has
    sorted keys at every depth and keeps non-ASCII text as UTF-8."""
    from datasets_app.validation import content_hash

    one = {"b": "café", "a": [{"role": "user", "content": "ü"}]}
    other = {"a": [{"content": "ü", "role": "user"}], "b": "café"}
    assert content_hash(one) == content_hash(other)
    assert content_hash(one) == ("552ed56c58ed3a7bb48786687faf8ba5afe11405d426492d63783a332d1cc58a")


def test_token_lengths_are_measured_on_the_text_the_model_sees(tokenizer):
    """A completion is plain prompt and completion even when the model has a chat template;
    other formats go through the template when there is one, and are plain text without."""
    from datasets_app.validation import render

    completion = {"prompt": "Once", "completion": " upon"}
    assert render("completion", completion, tokenizer) == "Once\n upon"
    instruction = {"instruction": "Say hi", "input": "", "output": "hi"}
    assert render("instruction", instruction, NO_TEMPLATE) == "Say hi\nhi"
    assert render("instruction", instruction, tokenizer) == tokenizer.apply_chat_template(
        formats.to_messages("instruction", instruction), tokenize=False
    )
    assert "<|im_start|>" in render("instruction", instruction, tokenizer)
