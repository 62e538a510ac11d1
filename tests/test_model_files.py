"""What a model folder may hold is one rule (finetune_hub.model_files): the tracked-run
upload, the client, the pickle check before a folder is loaded and the hub download all
follow it, so a suffix added or dropped there changes every one of them."""

import pytest

from experiments.run_files import file_name_checked
from finetune_hub import model_files
from finetune_hub.client import Run
from finetune_hub.errors import ServiceError
from finetune_hub.storage import assert_no_pickles
from inference import base_models

PICKLES = sorted(model_files.PICKLE_SUFFIXES)
ACCEPTED = list(model_files.ARTIFACT_SUFFIXES)


@pytest.mark.parametrize("suffix", PICKLES)
def test_every_pickle_suffix_is_refused_by_the_upload_and_the_loader(suffix, tmp_path):
    with pytest.raises(ServiceError) as refused:
        file_name_checked(f"weights{suffix}")
    assert refused.value.status == 422
    assert suffix in str(refused.value)  # the refusal names what it refuses
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / f"weights{suffix.upper()}").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"nested/weights\{suffix.upper()}"):
        assert_no_pickles(tmp_path)


@pytest.mark.parametrize("suffix", ACCEPTED)
def test_every_artifact_suffix_is_accepted_and_downloaded(suffix):
    assert file_name_checked(f"model{suffix}") == f"model{suffix}"
    assert f"*{suffix}" in base_models.HUB_PATTERNS
    assert not model_files.is_pickle(f"model{suffix}")


def test_the_client_sends_what_the_server_accepts(tmp_path, monkeypatch):
    for suffix in ACCEPTED + PICKLES + [".py", ".sh"]:
        (tmp_path / f"f{suffix}").write_bytes(b"{}")
    uploaded = []
    run = Run.__new__(Run)  # no server: only which files it would send
    monkeypatch.setattr(run, "upload", lambda path, name=None: uploaded.append(path.name))
    assert run.upload_folder(tmp_path) == sorted(uploaded)
    assert sorted(uploaded) == sorted(f"f{suffix}" for suffix in ACCEPTED)


def test_adapter_and_tokenizer_rules(tmp_path):
    assert not model_files.is_adapter(tmp_path)
    assert model_files.tokenizer_source(tmp_path, "base") == "base"
    (tmp_path / model_files.ADAPTER_CONFIG).write_text('{"peft_type": "IA3"}')
    (tmp_path / model_files.TOKENIZER_CONFIG).write_text("{}")
    assert model_files.is_adapter(tmp_path)
    assert model_files.adapter_type(tmp_path) == "IA3"
    assert model_files.tokenizer_source(tmp_path, "base") == tmp_path
    assert model_files.tokenizer_source(None, "base") == "base"
