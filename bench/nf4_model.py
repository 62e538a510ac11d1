"""A random-init Llama-shaped model written directly as a pre-quantized bitsandbytes NF4
checkpoint, one decoder layer at a time: the layout `save_pretrained` writes for a model
loaded with `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)`, so
`AutoModelForCausalLM.from_pretrained(folder)` loads it as a pre-quantized model and a queued
QLoRA run takes it like any local base model. Nothing is downloaded.

Why: Llama-3.1-70B in bf16 is 141 GB, more than one GPU machine's disk (64 GiB) or memory
(128 GiB); in NF4 it is about 39 GB. One bf16 tensor at a time is made (on the GPU when there
is one): a weight matrix of at most 28672 x 8192 (470 MB) in a decoder layer, or the embeddings
and lm_head (128256 x 8192, 2.1 GB each, kept in bf16); the host holds at most two shards of
output (5 GB each) while one is written.

What is written (bitsandbytes' `Linear4bit._save_to_state_dict`, bitsandbytes 0.50):
  - each linear layer of each decoder layer (q/k/v/o, gate/up/down): `<name>.weight` (the
    packed 4-bit values, uint8, shape (numel / 2, 1)), and `QuantState.as_dict(packed=True)`
    under `<name>.weight.`: `absmax` (uint8, double-quantised), `quant_map` (the 16 NF4
    values), `nested_absmax`, `nested_quant_map`, `quant_state.bitsandbytes__nf4` (a JSON
    blob: blocksize, dtype, shape, nested offset);
  - embeddings, norms and lm_head in bf16 (transformers never quantizes lm_head);
  - safetensors shards, `model.safetensors.index.json`, `config.json` with the
    `quantization_config` transformers writes for such a model, `generation_config.json`
    and the tokenizer.
Initialisation: normal(0, initializer_range = 0.02) for every matrix, as Llama's
`_init_weights`; norms ones. Each tensor has its own seed (seed, index), so the bf16 weights
can be regenerated for a check (`--verify`, `bf16_folder`).

    python bench/nf4_model.py --shape llama-3.1-70b --tokenizer .bench-carry/tokenizer \\
        --out /tmp/bench/models/llama-3.1-70b-nf4
    python bench/nf4_model.py --verify          # CPU: tiny shapes, against transformers' own
"""

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shapes import SHAPES  # noqa: E402 (after the path is set)

QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BLOCKSIZE = 64  # bitsandbytes' default for Params4bit (and so for transformers' loading)
SHARD_BYTES = 5 * 10**9
INIT_STD = 0.02


def log(message: str) -> None:
    print(f"[nf4 {time.strftime('%H:%M:%S')}] {message}", flush=True)


def bnb_config():
    from transformers import BitsAndBytesConfig

    # The engine's QLoRA settings (experiments/training/loading.py quantized_load).
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def llama_config(shape: str | dict, tokenizer=None):
    from transformers import LlamaConfig

    fields = SHAPES[shape] if isinstance(shape, str) else shape
    ids = (
        {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        if tokenizer is not None
        else {}
    )
    config = LlamaConfig(**ids, **fields)
    config.architectures = ["LlamaForCausalLM"]
    return config


def tensor_plan(config) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, kind) of every tensor save_pretrained writes, in the model's order, read
    off a model on the meta device (no memory): kind is "nf4", "normal" or "ones"."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    plan = []
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: saved once, as the embeddings
        parts = name.split(".")
        if name.endswith("norm.weight"):
            kind = "ones"
        elif len(parts) >= 3 and parts[-2] in QUANTIZED and parts[-1] == "weight":
            kind = "nf4"
        elif parts[-1] == "weight":
            kind = "normal"
        else:
            raise ValueError(f"unexpected tensor {name}: not a Llama weight this builder knows")
        plan.append((name, tuple(tensor.shape), kind))
    del model
    return plan


def random_weight(shape, kind: str, seed: int, index: int, device) -> torch.Tensor:
    """The bf16 weight of tensor number `index`: the same on every call for a device."""
    if kind == "ones":
        return torch.ones(shape, dtype=torch.bfloat16, device=device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + index)
    out = torch.empty(shape, dtype=torch.bfloat16, device=device)
    return out.normal_(0.0, INIT_STD, generator=generator)


def quantize_nf4(weight: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """The tensors bitsandbytes' Linear4bit saves for `name` (…weight), on the CPU."""
    import bitsandbytes.functional as F

    packed, state = F.quantize_4bit(
        weight,
        blocksize=BLOCKSIZE,
        compress_statistics=True,  # double quantisation
        quant_type="nf4",
        quant_storage=torch.uint8,
    )
    out = {name: packed}
    for key, value in state.as_dict(packed=True).items():
        out[f"{name}.{key}"] = value
    # Own copies on the CPU: safetensors refuses tensors that share memory.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in out.items()}


class ShardWriter:
    """Writes shards in a background thread (disk while the GPU makes the next layers), at
    most one shard waiting, then names them model-0000i-of-0000n and writes the index."""

    def __init__(self, folder: Path, shard_bytes: int):
        self.folder, self.shard_bytes = folder, shard_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.files: list[tuple[str, list[str]]] = []
        self.total_bytes = 0
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.write_s = 0.0

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, tensor in tensors.items():
            self.pending[name] = tensor
            size = tensor.numel() * tensor.element_size()
            self.pending_bytes += size
            self.total_bytes += size
        if self.pending_bytes >= self.shard_bytes:
            self.flush()

    def _write(self, tensors: dict, path: Path) -> None:
        from safetensors.torch import save_file

        try:
            started = time.monotonic()
            save_file(tensors, str(path), metadata={"format": "pt"})
            self.write_s += time.monotonic() - started
        except BaseException as exc:  # reported by the next join
            self.error = exc

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise self.error

    def flush(self) -> None:
        if not self.pending:
            return
        self.join()
        path = self.folder / f"shard-{len(self.files) + 1:05d}.tmp"
        self.files.append((path.name, list(self.pending)))
        tensors, self.pending, self.pending_bytes = self.pending, {}, 0
        self.thread = threading.Thread(target=self._write, args=(tensors, path), daemon=True)
        self.thread.start()

    def finish(self, parameters: int) -> int:
        self.flush()
        self.join()
        n = len(self.files)
        weight_map = {}
        for i, (tmp, names) in enumerate(self.files, start=1):
            final = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            (self.folder / tmp).rename(self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        if n > 1:
            metadata = {"total_parameters": parameters, "total_size": self.total_bytes}
            index = {"metadata": metadata, "weight_map": weight_map}
            (self.folder / "model.safetensors.index.json").write_text(
                json.dumps(index, indent=2, sort_keys=True) + "\n"
            )
        return n


def write_config(config, out: Path, *, quantized: bool) -> None:
    from transformers import GenerationConfig

    config.dtype = torch.bfloat16
    if quantized:
        config.quantization_config = bnb_config().to_dict()
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)


def build(
    shape: str | dict,
    tokenizer_dir: Path | None,
    out: Path,
    *,
    quantized: bool = True,
    seed: int = 0,
    device: str | None = None,
    shard_bytes: int = SHARD_BYTES,
) -> Path:
    """Writes the model to `out` (through `out`.partial, renamed at the end: a folder with a
    config.json is complete). `quantized=False` writes the same weights in bf16, for checks."""
    if (out / "config.json").exists():
        log(f"{out} exists: kept")
        return out
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = None
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = llama_config(shape, tokenizer)
    plan = tensor_plan(config)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    writer = ShardWriter(partial, shard_bytes)
    started, layer, params = time.monotonic(), None, 0
    for index, (name, shape_, kind) in enumerate(plan):
        parts = name.split(".")
        if parts[:2] == ["model", "layers"] and parts[2] != layer:
            layer = parts[2]
            if int(layer) % 10 == 0:
                log(
                    f"layer {layer}/{config.num_hidden_layers}: {writer.total_bytes / 1e9:.1f} GB "
                    f"so far, {time.monotonic() - started:.0f} s"
                )
        weight = random_weight(shape_, kind, seed, index, device)
        params += weight.numel()
        if kind == "nf4" and quantized:
            writer.add(quantize_nf4(weight, name))
        else:
            writer.add({name: weight.to("cpu", copy=True).contiguous()})
        del weight
    shards = writer.finish(params)
    write_config(config, partial, quantized=quantized)
    if tokenizer is not None:
        tokenizer.save_pretrained(partial)
    partial.rename(out)
    log(
        f"wrote {out}: {params / 1e9:.2f} B parameters, {writer.total_bytes / 1e9:.2f} GB in "
        f"{shards} shard(s), {time.monotonic() - started:.0f} s "
        f"({writer.write_s:.0f} s of it writing, in the background)"
    )
    return out


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------- verification


def _read_all(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


def _blob(tensor: torch.Tensor) -> dict:
    return json.loads(bytes(tensor.tolist()).decode())


def verify(
    shape: dict, work: Path, tokenizer_dir: Path | None, shard_bytes: int, device: str
) -> None:
    """On the CPU (bitsandbytes >= 0.48 quantizes there) or a GPU: the pre-quantized folder against
    the same bf16 weights quantized by transformers itself (from_pretrained with a
    BitsAndBytesConfig, then save_pretrained): the same keys, shapes and dtypes, bit-equal
    4-bit values and constants, the same quantization_config; then both loaded, the engine's
    way too, and a forward pass compared."""
    import warnings

    import bitsandbytes as bnb
    import transformers
    from transformers import AutoModelForCausalLM

    log(f"verify: transformers {transformers.__version__}, bitsandbytes {bnb.__version__}")
    place = {"": 0 if device == "cuda" else "cpu"}
    ours = build(shape, tokenizer_dir, work / "nf4", shard_bytes=shard_bytes, device=device)
    plain = build(
        shape, tokenizer_dir, work / "bf16", quantized=False, device=device, shard_bytes=10**12
    )
    reference = AutoModelForCausalLM.from_pretrained(
        plain, dtype=torch.bfloat16, quantization_config=bnb_config(), device_map=place
    )
    reference.save_pretrained(work / "reference")
    ref, got = _read_all(work / "reference"), _read_all(ours)
    assert sorted(ref) == sorted(got), (sorted(set(ref) - set(got)), sorted(set(got) - set(ref)))
    for name, expected in ref.items():
        actual = got[name]
        assert (expected.shape, expected.dtype) == (actual.shape, actual.dtype), name
        if name.endswith("quant_state.bitsandbytes__nf4"):
            a, b = _blob(expected), _blob(actual)
            offset_a, offset_b = a.pop("nested_offset"), b.pop("nested_offset")
            assert a == b and abs(offset_a - offset_b) < 1e-6, (name, a, b)
        else:
            assert torch.equal(expected, actual), name
    log(f"verify: {len(ref)} tensors, the same names, shapes, dtypes and values as transformers'")
    config = json.loads((ours / "config.json").read_text())["quantization_config"]
    ref_config = json.loads((work / "reference" / "config.json").read_text())["quantization_config"]
    assert config == ref_config, (config, ref_config)
    log(f"verify: quantization_config as transformers writes it: {config}")

    # Loaded as a pre-quantized model, plainly and the engine's way (its own config given).
    loaded = AutoModelForCausalLM.from_pretrained(ours, device_map=place)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine_way = AutoModelForCausalLM.from_pretrained(
            ours,
            use_safetensors=True,
            dtype=torch.bfloat16,
            quantization_config=bnb_config(),
            device_map=place,
        )
    said = [str(w.message) for w in caught if "quantization_config" in str(w.message)]
    log(f"verify: the engine's load (its own BitsAndBytesConfig passed) warned: {said}")
    linear = loaded.model.layers[0].mlp.down_proj
    assert isinstance(linear, bnb.nn.Linear4bit), type(linear)
    assert isinstance(engine_way.model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    assert getattr(loaded, "is_loaded_in_4bit", False)
    # Dequantized weights against the bf16 originals: NF4's error, nothing more.
    original = AutoModelForCausalLM.from_pretrained(plain, dtype=torch.bfloat16, device_map=place)
    worst = 0.0
    for i, layer in enumerate(loaded.model.layers):
        for part in ("self_attn", "mlp"):
            for name, module in getattr(layer, part).named_children():
                if not isinstance(module, bnb.nn.Linear4bit):
                    continue
                w = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
                o = getattr(getattr(original.model.layers[i], part), name).weight
                assert w.shape == o.shape, (name, w.shape, o.shape)
                rel = float((w.float() - o.detach().float()).norm() / o.detach().float().norm())
                worst = max(worst, rel)
    assert worst < 0.15, worst
    log(f"verify: dequantized / original relative error at most {worst:.3f} (NF4: about 0.1)")
    ids = torch.randint(0, shape["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(1))
    ids = ids.to(device)
    with torch.no_grad():
        a = loaded(input_ids=ids).logits.float()
        b = reference(input_ids=ids).logits.float()
        c = engine_way(input_ids=ids).logits.float()
        d = original(input_ids=ids).logits.float()
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), (a - b).abs().max()
    assert torch.allclose(a, c, atol=1e-3, rtol=1e-3), (a - c).abs().max()
    close = torch.nn.functional.cosine_similarity(a.flatten(), d.flatten(), dim=0)
    log(
        f"verify: forward logits {tuple(a.shape)}: pre-quantized == quantized by transformers "
        f"(max diff {(a - b).abs().max():.2e}), engine-way load equal, cosine with the bf16 "
        f"model {close:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--tokenizer", default=str(ROOT / ".bench-carry/tokenizer"))
    parser.add_argument("--out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-gb", type=float, default=SHARD_BYTES / 1e9)
    parser.add_argument("--verify", action="store_true", help="check on small shapes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    tokenizer = Path(args.tokenizer) if args.tokenizer else None
    if args.verify:
        small = [
            dict(SHAPES["tiny"], tie_word_embeddings=False),  # lm_head in bf16
            SHAPES["tiny"],  # tied: no lm_head tensor
            dict(  # the 70B's proportions (GQA 8:1, head_dim 128, inter 3.5 h), 3 layers
                hidden_size=1024,
                intermediate_size=3584,
                num_hidden_layers=3,
                num_attention_heads=8,
                num_key_value_heads=1,
                head_dim=128,
                vocab_size=49152,
                rope_theta=500000.0,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
            ),
        ]
        for i, shape in enumerate(small):
            with tempfile.TemporaryDirectory(prefix="nf4-verify-") as work:
                # Shards of about 1 MB for the small ones: the index path is exercised.
                shard_bytes = 10**6 if i == 0 else 10**8
                verify(shape, Path(work), tokenizer, shard_bytes, args.device)
        log("verify: all passed")
        return
    if not args.out:
        parser.error("--out is required (or --verify)")
    build(
        args.shape,
        tokenizer,
        Path(args.out),
        seed=args.seed,
        shard_bytes=int(args.shard_gb * 1e9),
        device=args.device,
    )


if __name__ == "__main__":
    main()
