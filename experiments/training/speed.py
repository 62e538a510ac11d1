"""What makes a run fast on a CUDA worker, and the figures that say how fast it is.

Each lever has a hyperparameter switch; `None` (the default) means "on where it pays", which
is a CUDA worker. CPU runs keep the plain path (SDPA, no packing, plain AdamW).

- Packing without quadratic masks: TRL packs whole examples (best-fit decreasing) and hands
  the model one padding-free row with position ids that restart at each example. Given to
  SDPA, such a row gets a dense block-diagonal mask over the whole row, so attention grows
  with the square of the row. The `fh_varlen` attention instead gives the row to PyTorch's
  variable-length FlashAttention (`torch.nn.attention.varlen`) with the example boundaries as
  cumulative lengths: each example attends to itself only, in time linear in the row.
- Liger's kernels (RMSNorm, RoPE, SwiGLU) where the `liger-kernel` package is installed; TRL
  already computes the loss through a fused, chunked LM head, so the 128k-vocabulary logits
  are never materialised.
- Fused AdamW (one kernel for all parameters' updates).
- bf16 adapter inputs: peft casts each LoRA input to the adapter's float32 dtype before its
  dropout, and autocast casts it back to bf16 for the product: two full-size float32 copies
  per adapted projection, forward and backward. Under bf16 autocast the cast changes no
  rounding (the product runs in bf16 either way), so it is skipped.
- QLoRA with bf16 norms: peft's `prepare_model_for_kbit_training` casts every parameter that
  is not 4-bit (norms, embeddings, LM head) to float32, which makes the hidden states float32
  between the 4-bit products: twice the bytes through every element-wise op. That upcast
  guards float16 training; a bf16 run has float32's exponent range and keeps them in bf16.
"""

import inspect
import logging
import weakref
from functools import cache

import torch

log = logging.getLogger(__name__)

VARLEN = "fh_varlen"

# Dense bf16 peak of common training GPUs (vendor datasheets, without sparsity), for MFU.
# Matched by substring of torch.cuda.get_device_name(); unknown GPUs report no MFU.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "H800": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "A6000": 155e12,
    "RTX 4090": 165e12,
    "A10": 125e12,
    "L4": 121e12,
}


def on_cuda() -> bool:
    return torch.cuda.is_available()


@cache
def _varlen_function():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def varlen_available() -> bool:
    return on_cuda() and _varlen_function() is not None


def liger_available() -> bool:
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        return False
    return True


def effective(params: dict, *, technique_is_sft: bool) -> dict:
    """The speed settings a run trains with: each switch as set, or its automatic value.
    Written to the run's log, so what ran is never a guess."""
    cuda = on_cuda()
    packing = params.get("packing")
    packing = (cuda and technique_is_sft) if packing is None else packing and cuda
    attention = params.get("attention") or "auto"
    if attention in ("auto", "varlen"):
        # Forced on a worker without CUDA varlen kernels, it falls back to SDPA.
        wanted = packing if attention == "auto" else True
        attention = VARLEN if wanted and varlen_available() else "sdpa"

    def switch(name: str, auto: bool) -> bool:
        """A CUDA-only lever: as set, or `auto` when left to the worker; never off CUDA."""
        value = params.get(name)
        return bool(auto if value is None else value and cuda)

    return {
        "packing": bool(packing),
        "attention": attention,
        "liger_kernel": switch("liger_kernel", cuda and liger_available()),
        "optim": "adamw_torch_fused" if switch("fused_adamw", cuda) else "adamw_torch",
        # Under bf16 autocast only (CUDA): autocast casts the product's inputs.
        "bf16_adapter_inputs": switch("bf16_adapter_inputs", cuda),
        "qlora_bf16_norms": switch("qlora_bf16_norms", cuda),
    }


# ---------------------------------------------------------------------- varlen attention


def _boundaries(position_ids: torch.Tensor, batch: int = 1, cached: dict = {}):  # noqa: B006
    """Cumulative example lengths (int32) and the longest example, from position ids that
    restart at 0 for each example. Computed once per forward pass, not once per layer: the
    layers (and a checkpointed recompute) are handed the same position_ids tensor. The cache
    holds a weak reference to that very tensor, so a new batch, even one that reuses the
    freed memory of the last at the same shape, is never read from it."""
    ref = cached.get("ref")
    if ref is None or ref() is not position_ids or cached.get("batch") != batch:
        rows = position_ids if position_ids.shape[0] == batch else position_ids.expand(batch, -1)
        flat = rows.reshape(-1)
        starts = torch.nonzero(flat == 0).reshape(-1)
        if starts.numel() == 0 or int(starts[0]) != 0:
            starts = torch.cat([starts.new_zeros(1), starts])
        total = starts.new_full((1,), flat.numel())
        cu = torch.cat([starts, total]).to(torch.int32)
        cached.update(
            ref=weakref.ref(position_ids), batch=batch, value=(cu, int((cu[1:] - cu[:-1]).max()))
        )
    return cached["value"]


def _on_varlen_device(query: torch.Tensor) -> bool:
    return query.is_cuda


@cache
def _varlen_call_style() -> dict:
    """The keyword that asks for a causal mask, and whether grouped-query attention is native:
    torch.nn.attention.varlen changed both between PyTorch releases."""
    parameters = inspect.signature(_varlen_function()).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in parameters else {"is_causal": True}
    return {"causal": causal, "gqa": "enable_gqa" in parameters, "scale": "scale" in parameters}


def varlen_attention(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
):
    """transformers' attention interface: query (batch, heads, seq, dim). Padded batches (an
    attention mask), dropout, sliding windows and soft-capping go to SDPA unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (
        attention_mask is not None
        or position_ids is None
        or dropout
        or sliding_window
        or softcap
        or not _on_varlen_device(query)
    ):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            position_ids=position_ids,
            **kwargs,
        )
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    style = _varlen_call_style()
    # FlashAttention takes half precision only: QLoRA's float32 layer norms (peft's
    # prepare_model_for_kbit_training) hand it float32 states, computed here in bf16.
    dtype = query.dtype if query.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    q = query.transpose(1, 2).reshape(batch * length, heads, dim).to(dtype)
    k = key.transpose(1, 2).reshape(batch * length, kv_heads, dim).to(dtype)
    v = value.transpose(1, 2).reshape(batch * length, kv_heads, dim).to(dtype)
    extra = dict(style["causal"])
    if kv_heads != heads:
        if style["gqa"]:
            extra["enable_gqa"] = True
        else:
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
    if style["scale"] and scaling is not None:
        extra["scale"] = scaling
    cu, longest = _boundaries(position_ids, batch)
    out = _varlen_function()(q, k, v, cu, cu, longest, longest, **extra)
    return out.view(batch, length, heads, dim).to(query.dtype), None


def varlen_mask(*args, attention_mask=None, **kwargs):
    """transformers' mask interface for `fh_varlen`: no mask at all for unpadded rows (the
    attention reads example boundaries from position ids), SDPA's mask for padded ones."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register_varlen_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN, varlen_attention)
    AttentionMaskInterface.register(VARLEN, varlen_mask)


# ---------------------------------------------------------------------- adapter inputs


def keep_adapter_inputs_in_compute_dtype(model) -> int:
    """Turns off peft's cast of adapter inputs to the adapter's float32 dtype (peft's own
    switch, the one `peft.helpers.disable_input_dtype_casting` sets), for the rest of the
    model's life. Only under autocast: without it a bf16 input meets a float32 weight.
    Returns how many adapted layers it changed."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)


# ---------------------------------------------------------------------- figures


def peak_flops(device_name: str) -> float | None:
    for name, flops in sorted(PEAK_BF16_FLOPS.items(), key=lambda item: -len(item[0])):
        if name in device_name:
            return flops
    return None


def mfu(n_params: int, tokens_per_second: float, device_name: str, gpus: int = 1) -> float | None:
    """Model FLOP utilisation by the usual 6N FLOPs per trained token, against the dense bf16
    peak of the `gpus` GPUs the tokens were trained on (tokens/s is the run's, all ranks
    together); None on a GPU not in the table."""
    peak = peak_flops(device_name)
    return 6 * n_params * tokens_per_second / (peak * gpus) if peak else None
