"""The pre-flight memory estimate: exact parameter counts against transformers and peft on a
tiny model, and the usual table's orders of magnitude for real configs (no weights loaded)."""

import pytest
from peft import IA3Config, LoHaConfig, LoraConfig, PrefixTuningConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from experiments.training.estimate import (
    count_params,
    estimate,
    ia3_params,
    loha_params,
    lora_params,
    prefix_params,
)

LLAMA_31_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    tie_word_embeddings=False,
)
LLAMA_2_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    tie_word_embeddings=False,
)
SMOLLM2_135M = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    tie_word_embeddings=True,
)
TINY = dict(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
GB = 10**9


def tiny(tied: bool = True) -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=tied))


def total_gb(technique: str, **hyperparameters) -> float:
    config = LlamaConfig(**LLAMA_31_8B)
    result = estimate(config, technique=technique, hyperparameters=hyperparameters)
    return result.total_bytes / GB


@pytest.mark.parametrize(
    "shape, expected",
    [(LLAMA_31_8B, 8.03e9), (LLAMA_2_7B, 6.74e9), (SMOLLM2_135M, 134.5e6)],
)
def test_param_count_of_published_models(shape, expected):
    assert count_params(LlamaConfig(**shape)) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("tied", [True, False])
def test_param_count_matches_the_instantiated_model(tied):
    model = tiny(tied)
    assert count_params(model.config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "targets",
    [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "down_proj"]],
)
def test_lora_params_match_peft(targets):
    model = get_peft_model(tiny(), LoraConfig(r=4, target_modules=targets))
    assert lora_params(model.config, 4, targets) == model.get_nb_trainable_parameters()[0]


def test_all_linear_targets_the_seven_projections():
    model = get_peft_model(tiny(), LoraConfig(r=4, target_modules="all-linear"))
    assert lora_params(model.config, 4, ["all-linear"]) == model.get_nb_trainable_parameters()[0]


def test_prefix_params_match_peft():
    config = PrefixTuningConfig(num_virtual_tokens=5, task_type="CAUSAL_LM")
    model = get_peft_model(tiny(), config)
    assert prefix_params(model.config, 5) == model.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize(
    "targets, feedforward",
    [
        (["k_proj", "v_proj", "down_proj"], ["down_proj"]),  # the default
        (["q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], ["up_proj", "down_proj"]),
        (["k_proj", "v_proj"], []),
    ],
)
def test_ia3_params_match_peft(targets, feedforward):
    """A feed-forward module's vector is its input's size, any other module's its output's
    (k_proj, v_proj, gate_proj, up_proj and down_proj differ in and out on the tiny model,
    so a swap shows)."""
    config = IA3Config(target_modules=targets, feedforward_modules=feedforward)
    model = get_peft_model(tiny(), config)
    expected = model.get_nb_trainable_parameters()[0]
    assert ia3_params(model.config, targets, feedforward) == expected


def test_ia3_feedforward_must_be_targeted():
    with pytest.raises(ValueError, match="ia3_feedforward_modules"):
        ia3_params(LlamaConfig(**TINY), ["k_proj"], ["down_proj"])


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["gate_proj", "down_proj"]])
def test_loha_params_match_peft(targets):
    model = get_peft_model(tiny(), LoHaConfig(r=4, alpha=8, target_modules=targets))
    assert loha_params(model.config, 4, targets) == model.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize(
    "technique, hyperparameters",
    [
        ("ia3", {}),
        ("ia3", {"ia3_target_modules": ["q_proj", "up_proj"], "ia3_feedforward_modules": []}),
        ("loha", {}),
        ("loha", {"lora_r": 8, "lora_target_modules": "all-linear"}),
    ],
)
def test_estimate_counts_what_the_engine_trains(technique, hyperparameters):
    """The estimate's trainable parameters are peft's count of the engine's own config, built
    from the validated hyperparameters (the defaults included)."""
    from experiments.training.hyperparameters import validate
    from experiments.training.loading import peft_config

    params = validate(technique, hyperparameters, context_length=None)
    model = get_peft_model(tiny(), peft_config(technique, params))
    result = estimate(model.config, technique=technique, hyperparameters=params)
    assert result.trainable_params == model.get_nb_trainable_parameters()[0]


def test_llama_8b_lands_in_the_usual_table():
    """The tables' "working batch": 8 sequences of 512 tokens."""
    shape = {"per_device_train_batch_size": 8, "max_length": 512}
    full, lora = total_gb("full", **shape), total_gb("lora", **shape)
    qlora, prefix = total_gb("qlora", **shape), total_gb("prefix", **shape)
    ia3, loha = total_gb("ia3", **shape), total_gb("loha", **shape)
    assert 100 < full < 200  # "about 2x80 GB"
    # "about 40 GB"; ours counts LoRA dropout's copies of the inputs (measured on 13B, issue 15)
    assert 18 < lora < 50
    # IA3 trains vectors. LoHa has twice LoRA's factors but no input dropout, whose copies
    # outweigh them at this batch.
    assert ia3 < min(lora, loha) and max(lora, loha) < full
    assert 6 < qlora < 26
    assert qlora < lora < full
    assert prefix < full


def test_dpo_full_carries_a_reference_copy_and_lora_does_not():
    assert total_gb("dpo", dpo_base="full") > total_gb("full")
    assert total_gb("dpo", dpo_base="lora") < total_gb("full")


def test_gradient_checkpointing_and_batch_move_activations():
    assert total_gb("lora", gradient_checkpointing=True) < total_gb("lora")
    assert total_gb("lora", per_device_train_batch_size=16) > total_gb("lora")


def test_only_qlora_needs_cuda():
    config = LlamaConfig(**SMOLLM2_135M)
    qlora = estimate(config, technique="qlora", hyperparameters={}, device="cpu")
    lora = estimate(config, technique="lora", hyperparameters={}, device="cpu")
    assert qlora.needs_cuda and not lora.needs_cuda
    assert (
        lora.overhead_bytes < estimate(config, technique="lora", hyperparameters={}).overhead_bytes
    )


def test_as_dict_adds_human_sizes():
    data = estimate(LlamaConfig(**LLAMA_31_8B), technique="lora", hyperparameters={}).as_dict()
    assert data["total_gb"] == round(data["total_bytes"] / GB, 1)
    assert data["total_human"] == f"{data['total_gb']:.1f} GB"
    assert data["weights_human"].endswith(" GB") and data["gradients_human"].endswith(" MB")


@pytest.mark.parametrize(
    "technique, hyperparameters, message",
    [
        ("rlhf", {}, "unknown technique"),
        ("lora", {"lora_r": 0}, "lora_r"),
        ("lora", {"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ("full", {"max_length": -1}, "max_length"),
        ("lora", {"lora_target_modules": ["lm_head"]}, "lora_target_modules"),
        ("loha", {"lora_r": 0}, "lora_r"),
        ("ia3", {"ia3_target_modules": ["lm_head"]}, "ia3_target_modules"),
        ("ia3", {"ia3_feedforward_modules": ["up_proj"]}, "ia3_feedforward_modules"),
        ("dpo", {"dpo_base": "prefix"}, "dpo_base"),
        ("prefix", {"gradient_checkpointing": True}, "gradient checkpointing"),
    ],
)
def test_invalid_inputs_raise(technique, hyperparameters, message):
    with pytest.raises(ValueError, match=message):
        estimate(LlamaConfig(**TINY), technique=technique, hyperparameters=hyperparameters)


def test_the_estimate_assumes_what_training_defaults_to():
    """A field the form leaves out is estimated at the value training will use."""
    from experiments.training.estimate import defaults
    from experiments.training.hyperparameters import Hyperparameters

    trained = Hyperparameters().model_dump()
    for name, value in defaults("lora").items():
        if name in trained:
            assert value == trained[name], name
    assert total_gb("lora") > total_gb("lora", max_length=512)  # 1024 tokens by default


def test_lora_dropout_keeps_a_copy_of_each_targeted_input_and_its_mask():
    """peft's lora_dropout (> 0) keeps, per targeted module, the dropped-out input (16-bit on
    CUDA) and its 1-byte mask: counted per layer, once with gradient checkpointing."""
    config = LlamaConfig(**LLAMA_31_8B)
    tokens = 8 * 512
    shape = {"per_device_train_batch_size": 8, "max_length": 512}

    def activations(**hp):
        return estimate(config, technique="lora", hyperparameters=shape | hp).activations_bytes

    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    attention = 4 * h  # q, k, v and o all read h features (8B: 32 heads x 128 = h)
    extra = activations() - activations(lora_dropout=0.0)
    assert extra == layers * tokens * attention * 3
    every = activations(lora_target_modules="all-linear") - activations(
        lora_target_modules="all-linear", lora_dropout=0.0
    )
    assert every == layers * tokens * (attention + 2 * h + inter) * 3
    checkpointed = activations(gradient_checkpointing=True) - activations(
        gradient_checkpointing=True, lora_dropout=0.0
    )
    assert checkpointed == tokens * attention * 3  # only the recomputed layer keeps them
    assert (
        estimate(config, technique="ia3", hyperparameters=shape).activations_bytes
        == estimate(
            config, technique="ia3", hyperparameters=shape | {"lora_dropout": 0.0}
        ).activations_bytes
    )  # no dropout in IA3
