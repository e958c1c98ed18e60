"""Training compute, counted in FLOPs from parameter and token counts.

The usual dense-transformer estimate (Kaplan et al. 2020, "Scaling Laws", Sec. 2.1): a forward
pass costs about 2 N FLOPs per token for N parameters, and a backward pass about 2 N for the
activation gradients plus 2 N_trainable for the weight gradients:

    forward                     C = 2 N T
    forward + backward          C = (4 N + 2 N_trainable) T       (= 6 N T when every weight trains)
    sampling with a KV cache    C = 2 N (T_prompt + T_new)        (each token is processed once)

Attention's own T^2 term is left out (it is small for short sequences). The estimate is the same
for every method, so ratios between methods are what it is for: BFPO against Safe RLHF, say.
A :class:`FlopCounter` adds the parts of a run up by name.
"""

from __future__ import annotations

from collections import defaultdict


def forward_flops(n_params: int, tokens: int) -> float:
    """2 N T: one forward pass over ``tokens`` tokens."""
    return 2.0 * n_params * tokens


def train_flops(n_params: int, tokens: int, n_trainable: int | None = None) -> float:
    """(4 N + 2 N_trainable) T: forward and backward; 6 N T when all weights train."""
    n_trainable = n_params if n_trainable is None else n_trainable
    return (4.0 * n_params + 2.0 * n_trainable) * tokens


def generation_flops(n_params: int, prompt_tokens: int, new_tokens: int) -> float:
    """2 N (T_prompt + T_new): sampling with a KV cache processes every token once."""
    return 2.0 * n_params * (prompt_tokens + new_tokens)


class FlopCounter:
    """FLOPs by part (``"reference"``, ``"policy_train"``, ``"rollout"``, ...), summed on demand."""

    def __init__(self):
        self.parts: dict[str, float] = defaultdict(float)

    def forward(self, part: str, n_params: int, tokens: int) -> None:
        self.parts[part] += forward_flops(n_params, tokens)

    def train(self, part: str, n_params: int, tokens: int, n_trainable: int | None = None) -> None:
        self.parts[part] += train_flops(n_params, tokens, n_trainable)

    def generate(self, part: str, n_params: int, prompt_tokens: int, new_tokens: int) -> None:
        self.parts[part] += generation_flops(n_params, prompt_tokens, new_tokens)

    def add(self, other: dict[str, float]) -> None:
        for part, flops in other.items():
            if part != "total":
                self.parts[part] += flops

    def as_dict(self) -> dict[str, float]:
        """Every part, and their ``total``."""
        return {**dict(self.parts), "total": float(sum(self.parts.values()))}


def first_crossing(points: list[tuple[float, float]], level: float) -> float | None:
    """The first x at which the piecewise-linear curve through ``points`` ((x, y), x increasing)
    reaches ``level`` (y >= level); None when it never does. Used for "the FLOPs a method needs to
    reach a harmlessness level": x is cumulative training FLOPs, y the judged rate at that point."""
    for i, (x, y) in enumerate(points):
        if y >= level:
            if i == 0:
                return float(x)
            x0, y0 = points[i - 1]
            return float(x0 + (level - y0) / (y - y0) * (x - x0))
    return None
