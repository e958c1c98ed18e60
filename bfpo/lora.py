"""LoRA through ``peft``: ``trainable: lora`` trains low-rank adapters instead of the model's weights.

LoRA (Hu et al., 2021) replaces a weight W [out, in] by W + (alpha / r) B A, with A [r, in] and
B [out, r] trained and W frozen; B starts at zero, so the adapted model starts as the base model.
With the adapter disabled the model IS the base model, so it also serves as the reference pi_ref of
every preference loss. A run saves the adapter (``adapter_model.safetensors`` and
``adapter_config.json``, which names the base model); ``transformers`` loads such a folder when
``peft`` is installed, and :func:`merge` writes a plain model folder W + (alpha / r) B A.

    python -m bfpo.lora merge runs/x/model runs/x/merged
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bfpo import models
from bfpo.adapters import ADAPTER_CONFIG, _peft, is_adapter, load_merged  # noqa: F401  (re-exported)
from bfpo.errors import BadInput, run_cli

DEFAULT_TARGETS = ("q_proj", "v_proj")  # peft's default for Llama and Mistral


def check_targets(model, targets: list[str]) -> None:
    """Each target names some module (as peft matches it: the last parts of a module's name), else
    one line listing the names there are."""
    names = [n for n, _ in model.named_modules() if n]
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            kinds = sorted({n.split(".")[-1] for n in names if not n.split(".")[-1].isdigit()})
            raise BadInput(f"lora_target_modules: {target!r} matches no module; module names end in {kinds}")


def wrap(model, r: int, alpha: float, dropout: float, targets: list[str]):
    """``model`` with LoRA adapters of rank ``r`` on the modules ``targets``; only they train."""
    peft = _peft()
    check_targets(model, targets)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def disabled(model):
    """A context in which ``model`` (a peft model) computes as its base model: the reference pi_ref."""
    return model.disable_adapter()


def merge(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """A plain model folder from an adapter folder: the base model with W + (alpha / r) B A, its
    tokenizer, and the adapter's model card. Loads without ``peft``."""
    adapter_dir = Path(adapter_dir)
    if not is_adapter(adapter_dir):
        raise BadInput(f"{adapter_dir}: no LoRA adapter here (no {ADAPTER_CONFIG})")
    model = load_merged(adapter_dir)
    tokenizer = models.load_tokenizer(adapter_dir)
    card = adapter_dir / "README.md"
    return models.save(model, tokenizer, output_dir, card.read_text(encoding="utf-8") if card.is_file() else None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bfpo.lora", description="LoRA adapters of bfpo runs.")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="write a plain model folder (base weights + adapter) from an adapter folder")
    m.add_argument("adapter_dir", help="a run's model/ folder trained with trainable: lora")
    m.add_argument("output_dir", help="where to write the merged model (written atomically)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or BFPO_DEBUG=1)")
    args = parser.parse_args(argv)
    return run_cli("bfpo.lora", lambda: print(merge(args.adapter_dir, args.output_dir)), args.debug)


if __name__ == "__main__":
    sys.exit(main())
