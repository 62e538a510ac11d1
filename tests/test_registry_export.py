"""A registered version leaves finetune_hub as files other tools load: the adapter export
loads with plain peft in a fresh interpreter and answers as serving does; the merged export
loads with plain transformers and equals the served model. Each peft adapter kind."""

import pytest

from inference import generation
from registry import services

ADAPTER_KINDS = pytest.mark.parametrize("adapter_kind", ["lora", "ia3", "loha"])
BASE = "/api/registry/models/triage"


@pytest.mark.single_db
@ADAPTER_KINDS
def test_exported_adapter_loads_with_plain_peft_and_matches_serving(
    api, model, versions, owner, tmp_path, tiny_model, adapter_kind
):
    import subprocess
    import sys
    import zipfile

    import torch

    from registry.serving import server

    r = api.get(f"{BASE}/versions/1/export", kind="adapter")
    assert r.status_code == 200
    archive = tmp_path / "adapter.zip"
    archive.write_bytes(b"".join(r.streaming_content))
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "out")
        names = zf.namelist()
    assert any(n.endswith("manifest.json") for n in names)
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    folder = next((tmp_path / "out").iterdir())
    config = __import__("json").loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == adapter_kind.upper()
    ids = [[1, 5, 9, 14, 3]]
    # A fresh interpreter, isolated from this project: only transformers and peft.
    script = (
        "import sys, json, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        "from peft import PeftModel\n"
        f"m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({tiny_model!r}), "
        f"{str(folder)!r}).eval()\n"
        f"print(json.dumps(m(torch.tensor({ids})).logits[0, -1, :50].tolist()))\n"
        "assert not any(k.split('.')[0] in ('finetune_hub', 'experiments', 'registry', "
        "'evaluation') for k in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    plain = torch.tensor(__import__("json").loads(out.stdout.strip().splitlines()[-1]))
    served, _ = server._model_for(versions[0])
    with torch.no_grad():
        ours = served(torch.tensor(ids)).logits[0, -1, :50]
    torch.testing.assert_close(plain, ours, rtol=0, atol=1e-5)
    # ... and the adapter matters: the base model alone gives other logits
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        base_logits = base(torch.tensor(ids)).logits[0, -1, :50]
    assert (plain - base_logits).abs().max() > 1e-3

    # Through /generate: the production alias answers as base + adapter, not as the base.
    services.alias_promote(
        model=model, alias="production", version=versions[0], by=owner, reason="t"
    )
    answer = api.post(
        f"{BASE}/aliases/production/generate",
        {"prompt": "Triage: late parcel", "max_new_tokens": 12},
    ).json()["output"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.padding_side = "left"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Triage: late parcel"}],
        tokenize=False,
        add_generation_prompt=True,
    )

    def greedy(m):
        return generation.generate(m, tokenizer, [prompt], max_new_tokens=12, batch_size=1)[0][0]

    assert answer == greedy(served) and answer != greedy(base)


@ADAPTER_KINDS
def test_merged_export_loads_with_plain_transformers(
    api, model, versions, tmp_path, tiny_model, adapter_kind
):
    import zipfile

    import torch
    from transformers import AutoModelForCausalLM

    from registry.serving import server

    r = api.get(f"{BASE}/versions/2/export", kind="merged")
    assert r.status_code == 200
    archive = tmp_path / "merged.zip"
    archive.write_bytes(b"".join(r.streaming_content))
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "merged")
        manifest = __import__("json").loads(
            zf.read(next(n for n in zf.namelist() if n.endswith("manifest.json")))
        )
    folder = next((tmp_path / "merged").iterdir())
    assert "model.safetensors" in manifest["files"]
    merged = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    served, _ = server._model_for(versions[1])
    ids = torch.tensor([[2, 7, 11]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, served(ids).logits, rtol=0, atol=1e-4)
        # the adapter went into the weights: the merged model is not the base
        assert (merged(ids).logits - base(ids).logits).abs().max() > 1e-3
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert not [k for k in weights.keys() if f"{adapter_kind}_" in k or "hada_" in k]
    assert api.get(f"{BASE}/versions/2/export", kind="weights").status_code == 422
