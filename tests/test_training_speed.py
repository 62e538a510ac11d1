"""The speed levers of a CUDA run (experiments/training/speed.py), checked on this CPU machine:
which switches a run gets, the example boundaries the varlen attention reads from position ids,
its plumbing against example-by-example attention, and real-token counting. The kernels
themselves run on the GPU machine (bench/train_throughput.py checks them against SDPA)."""

import collections

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from experiments.forms import hyperparameters_from
from experiments.models import TrainingRun
from experiments.services import run_enqueue
from experiments.training import loading, speed
from experiments.training.runner import train_next_run
from experiments.training.trainer import build_trainer, speed_settings
from finetune_hub.errors import ServiceError
from finetune_hub.storage import artifact_path
from tests.support.training_helpers import make_experiment


@pytest.fixture
def cuda_worker(monkeypatch):
    """What a CUDA worker with the varlen kernels and without liger-kernel would decide."""
    monkeypatch.setattr(speed, "on_cuda", lambda: True)
    monkeypatch.setattr(speed, "varlen_available", lambda: True)
    monkeypatch.setattr(speed, "liger_available", lambda: False)


def test_a_cpu_run_keeps_the_plain_path():
    assert speed.effective({}, technique_is_sft=True) == {
        "packing": False,
        "attention": "sdpa",
        "liger_kernel": False,
        "optim": "adamw_torch",
        "bf16_adapter_inputs": False,
        "qlora_bf16_norms": False,
    }
    # Switched on by hand, a CPU worker still cannot use them.
    forced = {"packing": True, "attention": "varlen", "liger_kernel": True, "fused_adamw": True}
    assert speed.effective(forced, technique_is_sft=True)["attention"] == "sdpa"
    assert not speed.effective(forced, technique_is_sft=True)["packing"]


def test_a_cuda_run_gets_every_lever_by_default(cuda_worker):
    assert speed.effective({}, technique_is_sft=True) == {
        "packing": True,
        "attention": speed.VARLEN,
        "liger_kernel": False,  # not installed on this worker
        "optim": "adamw_torch_fused",
        "bf16_adapter_inputs": True,
        "qlora_bf16_norms": True,
    }
    # DPO does not pack: its batches keep SDPA.
    assert speed.effective({}, technique_is_sft=False)["attention"] == "sdpa"
    assert not speed.effective({}, technique_is_sft=False)["packing"]


def test_each_switch_turns_its_lever_off(cuda_worker, monkeypatch):
    off = speed.effective({"packing": False}, technique_is_sft=True)
    assert not off["packing"] and off["attention"] == "sdpa"
    assert speed.effective({"attention": "sdpa"}, technique_is_sft=True)["attention"] == "sdpa"
    assert speed.effective({"fused_adamw": False}, technique_is_sft=True)["optim"] == "adamw_torch"
    monkeypatch.setattr(speed, "liger_available", lambda: True)
    assert speed.effective({}, technique_is_sft=True)["liger_kernel"]
    assert not speed.effective({"liger_kernel": False}, technique_is_sft=True)["liger_kernel"]
    for switch in ("bf16_adapter_inputs", "qlora_bf16_norms"):
        assert not speed.effective({switch: False}, technique_is_sft=True)[switch]


def test_the_form_reads_auto_on_and_off():
    assert hyperparameters_from({"hp_packing": "auto", "hp_liger_kernel": "off"}) == {
        "liger_kernel": False
    }
    assert hyperparameters_from({"hp_fused_adamw": "on"}) == {"fused_adamw": True}
    with pytest.raises(ServiceError) as caught:
        hyperparameters_from({"hp_packing": "sometimes"})
    assert caught.value.errors[0].field == "hyperparameters.packing"
    assert "auto, on or off" in caught.value.errors[0].message


def test_example_boundaries_come_from_restarting_position_ids():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    cu, longest = speed._boundaries(positions)
    assert cu.tolist() == [0, 3, 5, 9] and cu.dtype == torch.int32 and longest == 4
    rows = torch.arange(5).repeat(2, 1)  # two unpacked rows of 5
    cu, longest = speed._boundaries(rows, 2)
    assert cu.tolist() == [0, 5, 10] and longest == 5
    # One row of position ids shared by a batch of two (transformers' unexpanded form).
    cu, longest = speed._boundaries(torch.arange(4).unsqueeze(0), 2)
    assert cu.tolist() == [0, 4, 8] and longest == 4
    # Same shape, new contents, one after the other: never the last batch's boundaries.
    for positions, expected in (([0, 1, 2, 0, 1], [0, 3, 5]), ([0, 1, 0, 1, 2], [0, 2, 5])):
        assert speed._boundaries(torch.tensor([positions]))[0].tolist() == expected
    # The cache is per tensor: a new batch is never read from the last one's boundaries.
    cu, _ = speed._boundaries(torch.tensor([[0, 1, 0, 1, 2, 3, 4]]))
    assert cu.tolist() == [0, 2, 7]


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, window_size, enable_gqa, scale=None):
    """FlashAttention's varlen contract computed example by example with SDPA on the CPU."""
    assert window_size == (-1, 0) and max_q == max_k
    out = []
    for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))
        out.append(
            F.scaled_dot_product_attention(
                qs, ks, vs, is_causal=True, scale=scale, enable_gqa=enable_gqa
            ).transpose(0, 1)
        )
    return torch.cat(out)


def test_packed_row_attends_within_each_example_only(tiny_model, monkeypatch):
    """A packed row through fh_varlen gives each example the logits it has alone: no token
    attends across an example boundary, and grouped-query heads line up."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(speed, "_varlen_function", lambda: reference_varlen)
    monkeypatch.setattr(speed, "_on_varlen_device", lambda query: True)
    speed._varlen_call_style.cache_clear()
    monkeypatch.setattr(
        speed,
        "_varlen_call_style",
        lambda: {"causal": {"window_size": (-1, 0)}, "gqa": True, "scale": True},
    )
    speed.register_varlen_attention()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=speed.VARLEN)
    lengths = [7, 2, 11]
    ids = torch.randint(3, 1000, (1, sum(lengths)))
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions).logits[0]
        model.set_attn_implementation("sdpa")
        alone = torch.cat([model(input_ids=part).logits[0] for part in ids.split(lengths, dim=1)])
        # Without the boundaries (SDPA, one causal row), the later examples differ.
        leaky = model(input_ids=ids).logits[0]
    # FlashAttention computes in bf16 (a float32 model's states are cast): bf16 tolerance.
    error = (packed - alone).abs().max().item()
    leak = (leaky[lengths[0] :] - alone[lengths[0] :]).abs().max().item()
    assert error < 5e-3 < leak


@pytest.mark.single_db
@pytest.mark.django_db(transaction=True)
def test_tokens_per_second_counts_real_tokens_only(team, owner, tiny_model, cpu_worker):
    """One epoch over padded batches: the tokens the run counts are the examples' tokens,
    not the padded batch sizes."""
    experiment = make_experiment(
        team, owner, tiny_model, num_train_epochs=1, max_steps=-1, per_device_train_batch_size=8
    )
    run = run_enqueue(experiment=experiment, by=owner)
    trainer = build_trainer(run, artifact_path(run.folder), TrainerCallback())
    real = sum(len(row["input_ids"]) for row in trainer.train_dataset)
    trainer.train()
    assert trainer.state.num_input_tokens_seen == real


@pytest.mark.single_db
@pytest.mark.django_db(transaction=True)
def test_a_cpu_run_trains_with_the_speed_settings_it_reports(team, owner, tiny_model, cpu_worker):
    experiment = make_experiment(team, owner, tiny_model, packing=True, liger_kernel=True)
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=owner).pk)
    assert run.status == "succeeded", run.error + run.log_tail
    assert "Speed settings: {'packing': False, 'attention': 'sdpa'" in run.log_tail


class Float32Copies(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the float32 tensors of at least `size` elements that ops write."""

    def __init__(self, size):
        super().__init__()
        self.size, self.ops = size, collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                if tensor.numel() >= self.size:
                    self.ops[func.__name__] += 1
        return out


def test_bf16_adapter_inputs_drop_the_float32_copies_and_change_no_result(tiny_model):
    """A bf16 base with float32 LoRA adapters under bf16 autocast, as a CUDA run trains:
    without peft's input cast no activation-sized float32 tensor is written in the forward or
    backward pass, and the loss and adapter gradients are the same (the product runs in bf16
    either way)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    ids = torch.randint(3, 1000, (2, 24))
    results = {}
    for keep in (False, True):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear")
        model = get_peft_model(model, config)
        q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
        assert q_proj.lora_A.default.weight.dtype == torch.float32
        if keep:
            assert speed.keep_adapter_inputs_in_compute_dtype(model) == 14  # 7 per layer
        model.train()
        torch.manual_seed(1)
        copies = Float32Copies(ids.numel() * 32)  # tokens x hidden size
        with copies, torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}
        results[keep] = (loss.item(), grads, copies.ops)

    cast, kept = results[False][2], results[True][2]
    # peft's cast: each of the 14 adapted projections drops out a float32 copy of its input.
    assert cast["bernoulli_.float"] == 14 and kept["bernoulli_.float"] == 0
    assert kept["_to_copy.default"] < cast["_to_copy.default"]
    # What stays float32 either way is the model's own: RMSNorm's statistics and the loss.
    assert kept["pow.Tensor_Scalar"] == cast["pow.Tensor_Scalar"] > 0
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-3)
    for name, grad in results[False][1].items():
        # bf16 rounding of the dropout scale (CPU's dropout scales in the input's dtype).
        scale = grad.abs().max().item()
        torch.testing.assert_close(results[True][1][name], grad, rtol=2e-2, atol=2e-2 * scale)


@pytest.mark.django_db
@pytest.mark.parametrize("bf16_norms", [True, False])
def test_qlora_upcasts_norms_to_float32_only_when_switched_off(
    team, owner, tiny_model, monkeypatch, bf16_norms
):
    """peft's k-bit preparation (every non-4-bit parameter to float32) runs only with
    `qlora_bf16_norms: off`; on, the loaded base keeps its dtype. The 4-bit load itself needs
    CUDA, so the quantisation config is left out here."""
    import peft

    monkeypatch.setattr(loading, "quantized_load", lambda params: {})
    monkeypatch.setattr(loading, "device", lambda: "cuda")  # loads in bf16, as a CUDA worker
    prepared = []

    def prepare(model, **kwargs):
        prepared.append(model)
        for parameter in model.parameters():
            parameter.data = parameter.data.float()
        return model

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", prepare)
    experiment = make_experiment(team, owner, tiny_model, "qlora", qlora_bf16_norms=bf16_norms)
    run = TrainingRun(experiment=experiment)  # never queued: no worker here has CUDA
    fast = {**speed_settings(run), "attention": "sdpa"}
    assert fast["qlora_bf16_norms"] is False  # a CPU machine: automatic or forced, off
    model, _ = loading.load_model(run, {**fast, "qlora_bf16_norms": bf16_norms})
    norm = model.model.norm.weight
    assert (len(prepared), norm.dtype) == (
        (0, torch.bfloat16) if bf16_norms else (1, torch.float32)
    )
