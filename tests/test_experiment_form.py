"""The experiment form draws its hyperparameter fields from the Hyperparameters model: every
field of the model is on the page, with the model's bounds, default and choices, so a
hyperparameter added to the model cannot be missing from the form."""

from html.parser import HTMLParser

import annotated_types
import pytest

from experiments.forms import LAYOUT, SPECS, TECHNIQUE_GROUPS, hyperparameters_from
from experiments.models import Technique
from experiments.training.hyperparameters import Hyperparameters
from finetune_hub.errors import ServiceError


class Fields(HTMLParser):
    """Each hp_ input or select of the page: its tag, attributes and option values."""

    def __init__(self, html: str):
        super().__init__()
        self.fields, self._select = {}, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name") or ""
        if tag in ("input", "select") and name.startswith("hp_"):
            self.fields[name[3:]] = {"tag": tag, **attrs, "options": []}
            self._select = name[3:] if tag == "select" else None
        elif tag == "option" and self._select:
            self.fields[self._select]["options"].append(attrs.get("value"))

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


@pytest.fixture
def page(browser_client):
    r = browser_client.get("/experiments/new/")
    assert r.status_code == 200
    return Fields(r.content.decode()).fields


def bounds(name: str) -> tuple:
    """The model's bounds of a field, as an HTML input states them (an integer over n is at
    least n + 1)."""
    field = Hyperparameters.model_fields[name]
    low = high = None
    step = 1 if field.annotation in (int, int | None) else 0
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            low = rule.ge
        if isinstance(rule, annotated_types.Gt):
            low = rule.gt + step
        if isinstance(rule, annotated_types.Le):
            high = rule.le
        if isinstance(rule, annotated_types.Lt):
            high = rule.lt - step
    return low, high


def test_every_hyperparameter_is_a_field_of_the_form(page):
    assert set(page) == set(Hyperparameters.model_fields)


def test_numbers_carry_the_models_bounds(page):
    numbers = {n for n, f in Hyperparameters.model_fields.items() if f.metadata} - {"reward_run"}
    assert {"learning_rate", "lora_r", "lora_dropout", "max_length"} <= numbers
    for name in numbers:
        field = page[name]
        assert field["type"] == "number", name
        low, high = bounds(name)
        assert (field.get("min"), field.get("max")) == (
            None if low is None else str(low),
            None if high is None else str(high),
        ), name


def test_fixed_choices_are_the_models(page):
    assert page["lr_scheduler_type"]["options"] == [
        "",
        "linear",
        "cosine",
        "constant",
        "constant_with_warmup",
    ]
    assert page["dpo_base"]["options"] == ["", "lora", "full"]


def test_defaults_are_the_models(page):
    defaults = Hyperparameters().model_dump()
    for name in ("max_steps", "lora_r", "warmup_ratio", "num_generations"):
        assert page[name]["placeholder"] == f"default: {defaults[name]}", name
    assert page["lora_target_modules"]["placeholder"] == "default: q_proj,k_proj,v_proj,o_proj"


def test_the_layout_names_only_hyperparameters_and_groups_the_techniques_show():
    assert set(LAYOUT) <= set(Hyperparameters.model_fields)
    shown = {group for groups in TECHNIQUE_GROUPS.values() for group in groups}
    assert {spec.group for spec in SPECS} <= shown
    assert set(TECHNIQUE_GROUPS) == set(Technique.values)


def test_posted_text_becomes_the_models_types():
    post = {
        "hp_lora_r": "8",
        "hp_learning_rate": "1e-4",
        "hp_lr_scheduler_type": "linear",
        "hp_lora_target_modules": "q_proj, v_proj",
        "hp_ia3_feedforward_modules": "none",
        "hp_packing": "off",
        "hp_liger_kernel": "auto",
        "hp_bnb_4bit_use_double_quant": "off",
        "hp_use_dora": "1",
        "hp_seed": "",
    }
    assert hyperparameters_from(post) == {
        "lora_r": 8,
        "learning_rate": 1e-4,
        "lr_scheduler_type": "linear",
        "lora_target_modules": ["q_proj", "v_proj"],
        "ia3_feedforward_modules": [],
        "packing": False,
        "bnb_4bit_use_double_quant": False,
        "use_dora": True,
    }
    assert hyperparameters_from({"hp_lora_target_modules": "all-linear"}) == {
        "lora_target_modules": "all-linear"
    }
    with pytest.raises(ServiceError) as refused:
        hyperparameters_from({"hp_lora_r": "sixteen", "hp_packing": "maybe"})
    assert [e.field for e in refused.value.errors] == [
        "hyperparameters.packing",
        "hyperparameters.lora_r",
    ]
