"""Model cards: the ``README.md`` of every saved model folder, in the Hugging Face format (YAML
metadata between ``---`` lines, then text), written with ``huggingface_hub.ModelCard``.

The metadata holds the base model (and its revision), the data sets with a revision each (a hub
revision, a saved dataset's fingerprint or a file's sha256), the method and loss, the whole
config, the final metrics and the command that made the model. ``transformers`` ignores the file:
the folder loads as before.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

METHODS = {
    "bfpo": "BFPO, Bi-Factorial Preference Optimization (Zhang et al., arXiv 2408.15313)",
    "dpo": "DPO, Direct Preference Optimization (Rafailov et al., 2023)",
    "ipo": "IPO (Azar et al., 2023)",
    "pointwise_dpo": "point-wise DPO (ULMA, Cai et al., 2023)",
    "ulma": "ULMA, unified SFT and point-wise preference alignment (Cai et al., 2023)",
    "sft": "supervised fine-tuning",
    "ppo_lagrangian": "Safe RLHF's PPO-Lagrangian (Dai et al., 2023)",
    "reward": "Safe RLHF reward model (Dai et al., 2023)",
    "cost": "Safe RLHF cost model (Dai et al., 2023)",
    "init": "no training: a model initialised from a config with random weights",
}
"""Loss or method name -> what it is, with its paper."""

TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

Made with [bfpo](https://arxiv.org/abs/2408.15313), the runnable companion to *Bi-Factorial Preference
Optimization*. The metadata above holds the whole config, the data sets with their revisions and the
final metrics.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{{ folder }}")
tokenizer = AutoTokenizer.from_pretrained("{{ folder }}")
```

Made by: `{{ command }}`
"""


def revision(path_or_id: str) -> str | None:
    """What pins a data set: a saved dataset folder's fingerprint, a local file's sha256, or None
    for a hub id (loaded at the revision its loader pins)."""
    path = Path(path_or_id)
    if (path / "state.json").is_file():
        return "fingerprint:" + json.loads((path / "state.json").read_text())["_fingerprint"]
    if path.is_file():
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return None


def invocation() -> str:
    """The command line of this process, as ``python -m <module> ...`` when a bfpo module runs it."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith("bfpo."):
        return shlex.join(["python", "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]])
    return shlex.join(sys.argv)


def model_card(
    *,
    method: str,
    base_model: str | None,
    config: dict,
    datasets: list[str | None],
    metrics: dict | None = None,
    base_revision: str | None = None,
    kind: str = "text-generation",
) -> str:
    """The text of a model card (see module doc). ``method`` is a key of :data:`METHODS`."""
    from huggingface_hub import ModelCard, ModelCardData

    sets = [d for d in datasets if d]
    data = ModelCardData(
        base_model=base_model,  # None: left out
        datasets=sets,
        library_name="transformers",
        pipeline_tag=kind,
        tags=["bfpo", method, "safety", "alignment"],
        bfpo={
            "method": method,
            "base_model_revision": base_revision,
            "datasets": [{"name": d, "revision": revision(d)} for d in sets],
            "config": config,
            "final_metrics": metrics or {},
            "command": invocation(),
        },
    )
    start = f", starting from `{base_model}`" if base_model else ""
    card = ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        title=f"{method} from {Path(base_model).name}" if base_model else method,
        description=f"A model made by {METHODS.get(method, method)}{start}.",
        folder="path/to/this/folder",
        command=invocation(),
    )
    return card.content


def train_card(cfg, metrics: dict | None) -> str:
    """The card of a model made by :func:`bfpo.train.train` with the TrainConfig ``cfg``."""
    return model_card(
        method=cfg.loss if cfg.mode != "sft" else "sft",
        base_model=cfg.model,
        base_revision=cfg.revision,
        config=cfg.to_dict(),
        datasets=[cfg.train_data, cfg.buffer_data],
        metrics=metrics,
    )


def init_card(config: dict) -> str:
    """The card of a model initialised from ``config`` (e.g. the model's ``config.to_dict()``)."""
    return model_card(method="init", base_model=None, config=config, datasets=[])


def read(folder: str | Path) -> dict:
    """The metadata of the model card in ``folder``."""
    from huggingface_hub import ModelCard

    return ModelCard.load(Path(folder) / "README.md").data.to_dict()
