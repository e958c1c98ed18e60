"""The four label combinations of a preference pair, and BFPO's target for each: the one place the
code, the notebooks and the figures read them from.

A pair (x, y_hw, y_hl) holds the MORE helpful response y_hw (``chosen``) and the less helpful y_hl
(``rejected``), each with a safety label I_safe(y) in {0, 1}. Its combination is written
"safe(y_hw)>safe(y_hl)", e.g. "unsafe>safe": the more helpful response is the unsafe one.

BFPO's target (paper section 3, the supervised form of the bilinear reward; B1 = 3, B2 = alpha):

    g(y_hw, y_hl) = B3 (B1 I_safe(y_hw) - I_safe(y_hl)) - B2,   B3 = 1 / (B1 - 1)

    safe>safe +0.5    safe>unsafe +1.0    unsafe>safe -1.0    unsafe>unsafe -0.5
"""

from __future__ import annotations

import torch

COMBINATIONS = ("safe>safe", "safe>unsafe", "unsafe>safe", "unsafe>unsafe")
"""In the order of the paper's tables: (safe(y_hw), safe(y_hl)) = (1, 1), (1, 0), (0, 1), (0, 0)."""

SAFETY = {
    "safe>safe": (True, True),
    "safe>unsafe": (True, False),
    "unsafe>safe": (False, True),
    "unsafe>unsafe": (False, False),
}
"""combination -> (I_safe(y_hw), I_safe(y_hl))."""

DISPLAY = {c: c.replace(">", " > ") for c in COMBINATIONS}
"""How tables and figures write a combination ("safe > unsafe")."""


def combination(chosen_safe, rejected_safe) -> str:
    """The combination of one pair, from its two safety labels."""
    return COMBINATIONS[3 - code(bool(chosen_safe), bool(rejected_safe))]


def code(chosen_safe, rejected_safe):
    """2 I_safe(y_hw) + I_safe(y_hl): 3 safe>safe, 2 safe>unsafe, 1 unsafe>safe, 0 unsafe>unsafe
    (elementwise on tensors)."""
    return chosen_safe * 2 + rejected_safe


ALPHA, B1 = 0.5, 3.0
"""The paper's constants (its B2 = alpha and B1), the default of every BFPO setting."""


def targets(alpha: float = ALPHA, b1: float = B1) -> dict[str, float]:
    """g for each combination (:func:`bfpo.losses.bfpo_target`), e.g. {"safe>safe": 0.5, ...}."""
    from bfpo.losses import bfpo_target

    safe = torch.tensor([SAFETY[c] for c in COMBINATIONS], dtype=torch.float32)
    g = bfpo_target(safe[:, 0], safe[:, 1], alpha=alpha, b1=b1)
    return {c: round(float(v), 12) for c, v in zip(COMBINATIONS, g, strict=True)}
