"""Loading a LoRA adapter folder (``adapter_config.json`` names its base model) as its base model with
the adapter merged in, W + (alpha / r) B A: what :func:`bfpo.models.load_model` needs of LoRA, kept
apart from :mod:`bfpo.lora` (training adapters, the ``merge`` CLI), which builds on :mod:`bfpo.models`.
"""

from __future__ import annotations

from pathlib import Path

from bfpo.errors import BadInput

ADAPTER_CONFIG = "adapter_config.json"


def _peft():
    try:
        import peft
    except ModuleNotFoundError:
        raise BadInput("trainable: lora needs peft; pip install peft (or the extra: pip install '.[lora]')") from None
    return peft


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def load_merged(adapter_dir: str | Path, dtype=None):
    """The base model named by an adapter folder, with the adapter merged in (W + (alpha / r) B A)."""
    peft = _peft()
    return peft.AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), dtype=dtype).merge_and_unload()
