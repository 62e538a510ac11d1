"""A tracked run started through the API, and a small safetensors file to upload to it."""

import torch
from safetensors.torch import save as safetensors_bytes


def start(api, team, **body):
    r = api.post("/api/runs", {"team": team.pk, "project": "outside", **body})
    assert r.status_code == 201, r.content
    return r.json()


def weights() -> bytes:
    return safetensors_bytes({"w": torch.ones(2, 2)})
