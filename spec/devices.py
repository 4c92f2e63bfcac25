"""Whether the `device` a spec asks for exists here — answered without importing torch.

`expc check` must refuse `device = cuda` on a machine without an NVIDIA GPU, as the run
would; it looks for the NVIDIA driver's traces (`/proc/driver/nvidia/version`, the
`/dev/nvidiaN` nodes, `CUDA_VISIBLE_DEVICES`). The run asks torch instead
(`expc.runtime.device`); both phrase the problem with `cuda_problem`, so it reads the same.
"""

from __future__ import annotations

import os
import re

DRIVER_FILE = "/proc/driver/nvidia/version"
DEVICE_HELP = ("`device = auto` uses CUDA when present, else the CPU; or write `device = cpu`",)


def visible_gpus() -> int | None:
    """How many NVIDIA GPUs this process could use, judged from the driver's files; None
    where the files cannot tell (WSL's `/dev/dxg`, a driver without device nodes)."""
    if os.path.exists("/dev/dxg"):
        return None
    if not os.path.exists(DRIVER_FILE):
        return 0
    try:
        nodes = sum(1 for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name))
    except OSError:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return nodes or None
    return len([d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")])


def cuda_problem(name: str, gpus: int | None) -> str | None:
    """What is wrong with the device `name` (`cuda`, `cuda:N`, ...) on a machine with `gpus`
    usable GPUs, or None when it is usable, not a CUDA device, or `gpus` is unknown."""
    kind, _, index = name.partition(":")
    if kind != "cuda" or gpus is None:
        return None
    if gpus == 0:
        return f"device `{name}` asked for, but this machine has no usable CUDA GPU"
    if index.isdigit() and int(index) >= gpus:
        return (f"device `{name}` asked for, but this machine has {gpus} CUDA "
                f"GPU{'s' if gpus != 1 else ''} (cuda:0..cuda:{gpus - 1})")
    return None
