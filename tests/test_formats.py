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
