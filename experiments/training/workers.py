"""Workers report themselves (host, process, devices) with a heartbeat. Whether a run can
be taken is decided against the live workers, never the web process's own hardware."""

import os
import socket
from datetime import timedelta

from django.utils import timezone

from experiments.models import Worker

LIVE_WITHIN = timedelta(seconds=90)


def local_devices() -> list[dict]:
    import psutil
    import torch

    devices = [
        {
            "type": "cuda",
            "index": i,
            "name": torch.cuda.get_device_name(i),
            "memory_bytes": torch.cuda.get_device_properties(i).total_memory,
        }
        for i in range(torch.cuda.device_count())
    ]
    devices.append(
        {"type": "cpu", "cores": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total}
    )
    return devices


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


def fits(worker: Worker, estimates: dict) -> str | None:
    """None when the worker can take a run with these per-device estimates, else why not.
    The reason goes into the run's error, which every team member reads: it does not name
    the worker (host and PID are for site admins)."""
    estimate = estimates["cuda" if worker.cuda else "cpu"]
    if estimate["needs_cuda"] and not worker.cuda:
        return "needs a CUDA GPU; the worker has CPU only"
    if estimate["total_bytes"] > worker.memory_bytes:
        return (
            f"needs about {estimate['total_gb']:.1f} GB; the worker has "
            f"{worker.memory_bytes / 1e9:.1f} GB"
        )
    return None
