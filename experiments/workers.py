"""Workers report themselves (host, process, devices) with a heartbeat. Whether a run can
be taken is decided against the live workers, never the web process's own hardware."""

import os
import socket
from datetime import timedelta

from django.utils import timezone

from experiments.models import Worker

LIVE_WITHIN = timedelta(seconds=90)


def local_devices() -> list[dict]:
    """The host's GPUs (index as CUDA numbers them here, name, total and free memory) and
    its CPU. Free memory is what other programs leave: runs of this hub are counted by the
    GPUs they hold (TrainingRun.gpus), not by this figure."""
    import psutil
    import torch

    devices = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        devices.append(
            {
                "type": "cuda",
                "index": host_index(i),
                "name": torch.cuda.get_device_name(i),
                "memory_bytes": total,
                "memory_free_bytes": free,
            }
        )
    devices.append(
        {"type": "cpu", "cores": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total}
    )
    return devices


def host_index(i: int) -> int | str:
    """The host's number (or UUID) of this process's CUDA device i: a worker started with
    CUDA_VISIBLE_DEVICES=2,3 calls physical GPU 2 its device 0. Runs hold GPUs by the host's
    numbering, which every worker of the host shares and a training process is pinned to."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    if not visible or visible == [""] or i >= len(visible):
        return i
    return int(visible[i]) if visible[i].isdigit() else visible[i]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_heartbeat(devices: list[dict] | None = None) -> Worker:
    devices = devices if devices is not None else local_devices()
    gpus = [d for d in devices if d["type"] == "cuda"]
    memory = max(d["memory_bytes"] for d in (gpus or devices))
    worker, _ = Worker.objects.update_or_create(
        name=worker_name(),
        defaults={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "devices": devices,
            "cuda": bool(gpus),
            "memory_bytes": memory,
            "heartbeat_at": timezone.now(),
        },
    )
    return worker


def live_workers():
    return Worker.objects.filter(heartbeat_at__gte=timezone.now() - LIVE_WITHIN)


def gpus_of(worker: Worker) -> list[dict]:
    return [d for d in worker.devices if d.get("type") == "cuda"]


def held_gpus(host: str) -> set[int]:
    """The GPU indices of this host that running runs hold."""
    from experiments.models import TrainingRun

    held: set[int] = set()
    for gpus in TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING, worker__host=host
    ).values_list("gpus", flat=True):
        held.update(gpus or [])
    return held


def _need(worker: Worker, estimates: dict) -> tuple[dict, int]:
    estimate = estimates["cuda" if worker.cuda else "cpu"]
    return estimate, int(estimate.get("gpus") or 1)


def fits(worker: Worker, estimates: dict, who: str = "the worker") -> str | None:
    """None when the worker could take a run with these per-device estimates with all its
    GPUs free, else why not. The reason goes into messages every team member reads: it
    does not name the worker (host and PID are for site admins)."""
    estimate, n = _need(worker, estimates)
    if estimate["needs_cuda"] and not worker.cuda:
        return f"needs a CUDA GPU; {who} has CPU only"
    if worker.cuda:
        gpus = gpus_of(worker) or [{"memory_bytes": worker.memory_bytes}]
        big = [g for g in gpus if g["memory_bytes"] >= estimate["total_bytes"]]
        if len(big) >= n:
            return None
        if n == 1:
            return (
                f"needs about {estimate['total_gb']:.1f} GB; {who} has "
                f"{worker.memory_bytes / 1e9:.1f} GB"
            )
        return (
            f"needs {n} GPUs of about {estimate['total_gb']:.1f} GB each; {who} has "
            f"{len(big)} GPU{'s' if len(big) != 1 else ''} that large"
        )
    cores = next((d.get("cores") for d in worker.devices if d.get("type") == "cpu"), None) or 1
    if n > cores:
        return f"needs {n} processes; {who} has {cores} CPU cores"
    if estimate["total_bytes"] * n > worker.memory_bytes:
        return (
            f"needs about {estimate['total_gb'] * n:.1f} GB; {who} has "
            f"{worker.memory_bytes / 1e9:.1f} GB"
        )
    return None


def any_fits(live: list[Worker], estimates: dict) -> bool:
    """Whether one of these (live) workers could take a run with these estimates."""
    return any(fits(w, estimates) is None for w in live)


def gpus_to_take(worker: Worker, estimates: dict, held: set[int]) -> list[int] | None:
    """The GPUs of this worker a run takes now: the first n that no run holds and that are
    large enough; [] on a CPU worker; None when too few are free (the run waits)."""
    estimate, n = _need(worker, estimates)
    if not worker.cuda:
        return []
    free = [
        g["index"]
        for g in gpus_of(worker)
        if g["index"] not in held and g["memory_bytes"] >= estimate["total_bytes"]
    ]
    return free[:n] if len(free) >= n else None
