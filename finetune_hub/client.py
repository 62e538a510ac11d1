"""A small Python client for runs trained anywhere: a script, Axolotl, LLaMA-Factory or any
Hugging Face Trainer (finetune_hub.callback.FinetuneHubCallback wraps it) reports a run to
finetune_hub, and the run sits beside the queued ones in every table, chart and comparison.

    from finetune_hub.client import Client

    hub = Client("http://hub:8000", token="fth_...")  # or FINETUNE_HUB_URL / FINETUNE_HUB_TOKEN
    with hub.start_run(team=1, project="support-bot", params={"lr": 2e-4}) as run:
        for step in range(100):
            run.log({"loss": loss}, step=step)      # buffered: sent 1,000 points at a time
        run.upload_folder("out/adapter")          # safetensors and config files
    # leaving the block ends the run: succeeded, or failed with the exception's text

Only the standard library: it runs in any training environment. It never imports Django."""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from finetune_hub.model_files import is_artifact_name

BATCH_POINTS = 1000
FLUSH_EVERY_S = 5.0
# What a run's output may hold (the server checks it again): weights as safetensors only.
RETRY_STATUSES = {429, 502, 503, 504}


class FinetuneHubError(Exception):
    """An answer of 4xx or 5xx: the status, the server's detail and its field errors."""

    def __init__(self, status: int, detail: str, errors: list | None = None):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail, self.errors = status, detail, errors or []


class Client:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
    ):
        self.url = (url or os.environ.get("FINETUNE_HUB_URL", "")).rstrip("/")
        self.token = token or os.environ.get("FINETUNE_HUB_TOKEN", "")
        if not self.url or not self.token:
            raise ValueError("Client needs url and token (or FINETUNE_HUB_URL, FINETUNE_HUB_TOKEN)")
        self.timeout, self.retries = timeout, retries

    # ------------------------------------------------------------------ transport

    def request(self, method: str, path: str, body=None, *, data=None, headers=None):
        """One API call; JSON in and out. Retries when the server did not take the request
        (connection refused, 429, 502-504), with backoff; never after it may have been taken."""
        url = f"{self.url}/api{path}"
        head = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body, allow_nan=False).encode()
            head["Content-Type"] = "application/json"
        head.update(headers or {})
        for attempt in range(self.retries + 1):
            if hasattr(data, "seek"):
                data.seek(0)
            req = urllib.request.Request(url, data=data, method=method, headers=head)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as answer:
                    text = answer.read()
                    return json.loads(text) if text else None
            except urllib.error.HTTPError as exc:
                if exc.code in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(min(30.0, 0.5 * 2**attempt))
                    continue
                raise _error(exc) from None
            except urllib.error.URLError as exc:
                refused = isinstance(exc.reason, ConnectionRefusedError)
                if refused and attempt < self.retries:
                    time.sleep(min(30.0, 0.5 * 2**attempt))
                    continue
                raise

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        *,
        team: int,
        project: str | None = None,
        experiment: int | None = None,
        name: str = "",
        params: dict | None = None,
        tags: dict | None = None,
        base_model: str = "",
        batch_points: int = BATCH_POINTS,
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> Run:
        """A running run in an experiment of the team, or in a project (made when missing).
        base_model: what the uploaded weights build on (a name the server resolves), needed
        to evaluate or register an adapter."""
        body = {
            "team": team,
            "name": name,
            "params": _jsonable(params or {}),
            "tags": {k: str(v) for k, v in (tags or {}).items()},
            "base_model": base_model,
        }
        body["experiment" if experiment is not None else "project"] = (
            experiment if experiment is not None else project
        )
        info = self.request("POST", "/runs", body)
        return Run(self, info, batch_points=batch_points, flush_every_s=flush_every_s)

    def run(self, run_id: int) -> dict:
        return self.request("GET", f"/runs/{int(run_id)}")

    def metrics(self, run_id: int, keys: list[str] | None = None, max_points: int = 1000) -> dict:
        query = {"max_points": max_points}
        if keys:
            query["keys"] = ",".join(keys)
        path = f"/runs/{int(run_id)}/metrics?{urllib.parse.urlencode(query)}"
        return self.request("GET", path)["metrics"]


class Run:
    """A tracked run: buffered metric points, parameters, tags, output files, its end."""

    def __init__(self, client: Client, info: dict, *, batch_points: int, flush_every_s: float):
        self.client, self.info, self.id = client, info, info["id"]
        self.batch_points, self.flush_every_s = batch_points, flush_every_s
        self.buffer: list[dict] = []
        self.last_flush = time.monotonic()
        self.ended = False

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if self.ended:
            return
        if exc is None:
            self.end("succeeded")
        else:
            status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            self.end(status, error=f"{kind.__name__}: {exc}")

    def log(self, metrics: dict, step: int = 0) -> None:
        """Buffers finite numeric values; a batch goes when 1,000 points wait or every few
        seconds. NaN and infinite values are skipped (a diverged loss is worth a tag)."""
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            self.buffer.append({"step": int(step), "key": key, "value": value, "timestamp": now})
        if (
            len(self.buffer) >= self.batch_points
            or time.monotonic() - self.last_flush >= self.flush_every_s
        ):
            self.flush()

    def log_system(self, step: int = 0) -> None:
        """System metrics under system/: this process's peak resident memory, and the CUDA
        memory and utilisation of the visible GPUs when torch sees any."""
        values = {}
        try:
            import resource

            values["system/peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
                1 << 20
            )
        except (ImportError, OSError):
            pass
        try:
            import torch

            if torch.cuda.is_available():
                for i in range(torch.cuda.device_count()):
                    values[f"system/gpu{i}_memory_gib"] = torch.cuda.memory_allocated(i) / 2**30
                    values[f"system/gpu{i}_peak_memory_gib"] = (
                        torch.cuda.max_memory_allocated(i) / 2**30
                    )
        except ImportError:
            pass
        self.log(values, step=step)

    def flush(self) -> None:
        while self.buffer:
            batch, self.buffer = self.buffer[: self.batch_points], self.buffer[self.batch_points :]
            self.client.request("POST", f"/runs/{self.id}/metrics", {"points": batch})
        self.last_flush = time.monotonic()

    def log_params(self, params: dict) -> None:
        self.client.request("POST", f"/runs/{self.id}/params", {"params": _jsonable(params)})

    def set_tags(self, tags: dict) -> None:
        body = {"tags": {k: str(v) for k, v in tags.items()}}
        self.client.request("POST", f"/runs/{self.id}/tags", body)

    def upload(self, path: str | Path, name: str | None = None) -> dict:
        """One output file, streamed: .safetensors weights or a config/tokenizer text file."""
        path = Path(path)
        name = name or path.name
        quoted = urllib.parse.quote(name, safe="")
        with open(path, "rb") as fh:
            return self.client.request(
                "PUT",
                f"/runs/{self.id}/artifacts/{quoted}",
                data=fh,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(path.stat().st_size),
                },
            )

    def upload_folder(self, folder: str | Path) -> list[str]:
        """The folder's uploadable files (safetensors weights, configs, tokenizer); returns
        the names sent. Pickled files (.bin, .pt) are not sent: the server refuses them."""
        sent = []
        for path in sorted(Path(folder).iterdir()):
            if path.is_file() and is_artifact_name(path.name):
                self.upload(path)
                sent.append(path.name)
        return sent

    def end(self, status: str = "succeeded", error: str = "") -> dict:
        """Flushes what is buffered and ends the run (succeeded, failed or cancelled)."""
        try:
            self.flush()
        finally:
            self.ended = True
            self.info = self.client.request(
                "POST", f"/runs/{self.id}/end", {"status": status, "error": error[:10_000]}
            )
        return self.info


def _jsonable(params: dict) -> dict:
    """Parameters as JSON: numbers, strings, booleans and None as they are, the rest as
    text (a dtype, a path, an enum)."""
    out = {}
    for key, value in params.items():
        if value is None or isinstance(value, bool | int | str):
            out[str(key)] = value
        elif isinstance(value, float):
            out[str(key)] = value if math.isfinite(value) else str(value)
        elif isinstance(value, list | tuple | dict):
            try:
                json.dumps(value, allow_nan=False)
                out[str(key)] = json.dumps(value)
            except (TypeError, ValueError):
                out[str(key)] = str(value)
        else:
            out[str(key)] = str(value)
    return out


def _error(exc: urllib.error.HTTPError) -> FinetuneHubError:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    return FinetuneHubError(exc.code, body.get("detail", exc.reason), body.get("errors"))
