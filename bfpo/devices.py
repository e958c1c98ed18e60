"""Where a run's models and tensors live.

A run names its device as a string: ``"auto"`` (accelerate's choice: the first CUDA, XPU or MPS
device there is, else the CPU; ``ACCELERATE_USE_CPU=1`` forces the CPU) or any torch device that
exists on this machine (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``). :func:`resolve` turns it into a
``torch.device`` once, before any model loads; everything the run makes is then made there
(``torch.zeros(..., device=...)``), not made on the CPU and moved each step. ``tests/test_devices.py``
watches the factory calls of a run for ones that name no device.
"""

from __future__ import annotations

import torch

from bfpo.errors import BadInput


def _count(kind: str) -> int:
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None)}.get(kind)
    if kind == "mps":
        return int(torch.backends.mps.is_available())
    return backend.device_count() if backend is not None and backend.is_available() else 0


def resolve(name: str | torch.device | None = "auto", where: str = "device") -> torch.device:
    """The ``torch.device`` a run named by ``name`` (None: "auto"); a device this machine does not have
    is bad input that says what the machine has (``where`` names the setting)."""
    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "auto"):
        from accelerate import PartialState

        return PartialState().device
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise BadInput(f"{where}: {name!r} is not a device (expected auto, cpu, cuda, cuda:N or mps)") from e
    if device.type in ("cpu", "meta"):  # meta: placement checks without memory (tests)
        return device
    have = _count(device.type)
    if have == 0:
        raise BadInput(
            f"{where}: {name!r} asked for, but this machine has no {device.type.upper()} device ({available()})"
        )
    if device.index is not None and device.index >= have:
        raise BadInput(f"{where}: {name!r} does not exist here: {have} {device.type.upper()} device(s), {available()}")
    return device


def available() -> str:
    """The devices of this machine, in words: ``cpu, cuda:0, cuda:1``."""
    names = ["cpu"] + [f"{kind}:{i}" for kind in ("cuda", "xpu") for i in range(_count(kind))]
    return "available: " + ", ".join(names + (["mps"] if _count("mps") else []))


def rng_state(device: torch.device) -> dict:
    """The random state a checkpoint keeps: the CPU generator's and, on CUDA, the device's."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device: torch.device) -> None:
    """Restore :func:`rng_state` (a bare tensor is the CPU state, as older checkpoints kept it)."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def fork_rng(device: torch.device):
    """``torch.random.fork_rng`` over the CPU generator and, on CUDA, the run's device."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
