"""Where the numbers are computed: device choice, CPU threads, precision, and torchrun ranks."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plc.errors import PlcError

if TYPE_CHECKING:
    import torch

# Measured on a 2-core CPU: two 1-thread processes do twice the work of one 2-thread process, so
# protocols run `make -j2` and set PLC_THREADS=1; interactive use gets torch's default.
THREADS_ENV = "PLC_THREADS"


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; on CPU fp32 (bf16 matmuls are 2.5× slower on CPUs without them)."""
        import torch

        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def resolve_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PlcError(f"--device {name} asked for, but no CUDA device is available")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise PlcError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def device_memory(name: str = "auto") -> int | None:
    """Bytes of memory of the CUDA device `name` resolves to (this process's under torchrun);
    None for the CPU, whose jobs are not fitted."""
    import torch

    dev = resolve_device(name)
    if dev.type != "cuda":
        return None
    index = dev.index if dev.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
    return int(torch.cuda.get_device_properties(index).total_memory)


def rank() -> int:
    """This process's torchrun rank (0 outside torchrun), read without importing torch: only rank 0
    writes files and prints results."""
    return int(os.environ.get("RANK", "0"))


def setup(device: str = "auto", threads: int | None = None) -> Runtime:
    """Configure torch for this process and join the torchrun process group if there is one."""
    import torch

    threads = threads or int(os.environ.get(THREADS_ENV, "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    # Denormals in tiny models' activations made CPU steps 1.6× slower.
    torch.set_flush_denormal(True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world_size > 1:
        import torch.distributed as dist

        if dev.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, rank(), world_size)
