"""System metrics of a training process, charted beside its loss (the run page's "Memory
and system" chart): its CPU use and resident memory, the host's memory, and for each GPU it
sees the memory in use on the device and, where NVML answers (nvidia-ml-py), utilisation."""

import psutil
import torch

EVERY_S = 10.0  # a sample every 10 s: enough for a curve, few points beside the loss


class Sampler:
    def __init__(self):
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first reading is 0: it starts the interval

    def sample(self) -> dict[str, float]:
        out = {
            "system/cpu_percent": self.process.cpu_percent(None),
            "system/ram_gib": self.process.memory_info().rss / 2**30,
            "system/host_ram_percent": psutil.virtual_memory().percent,
        }
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                out[f"system/gpu{i}_memory_gib"] = (total - free) / 2**30
                try:
                    out[f"system/gpu{i}_utilization"] = float(torch.cuda.utilization(i))
                except Exception:  # noqa: BLE001 - no NVML (nvidia-ml-py) or no driver support
                    pass
        return out
