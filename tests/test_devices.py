"""Every path on the run's device (bfpo.devices): models placed where the run says, tensors made there.

Two checks that need no GPU:
- placement: a run whose device is ``meta`` loads every model it holds onto ``meta`` (no memory);
- made in place: while a short run of each path executes on the CPU, a torch function mode watches
  every tensor factory call (``torch.zeros``, ``torch.tensor``, ...) made from the package's code. One
  that names no device makes its tensor on the CPU whatever the run's device: on a GPU it would mix
  devices or be moved every step. There must be none.
"""

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from bfpo import devices, models, ppo, safe_rlhf, sampling, study, train
from bfpo.errors import BadInput

PACKAGE = str(Path(devices.__file__).parent)
FACTORIES = {
    torch.zeros,
    torch.ones,
    torch.full,
    torch.empty,
    torch.arange,
    torch.tensor,
    torch.as_tensor,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.eye,
    torch.linspace,
}


class FactoryWatch(TorchFunctionMode):
    """Records (function, file:line) of each factory call from the package that names no device."""

    def __init__(self):
        super().__init__()
        self.calls = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(PACKAGE):
                where = f"{Path(caller.f_code.co_filename).relative_to(Path(PACKAGE).parent)}:{caller.f_lineno}"
                self.calls.add(f"torch.{func.__name__} at {where}")
        return func(*args, **kwargs)


def _on(module: torch.nn.Module, device: str) -> list[str]:
    """Names of the parameters and buffers of ``module`` that are not on ``device``."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, t in tensors if t.device.type != device]


def test_the_watch_sees_a_tensor_made_without_a_device():
    """The check itself: gae as it was (buffers made with torch.zeros(B, T)) is caught."""

    def old_gae(rewards):
        return torch.zeros(*rewards.shape) + rewards

    old_gae.__code__ = old_gae.__code__.replace(co_filename=str(Path(PACKAGE) / "ppo.py"))
    with FactoryWatch() as watch:
        old_gae(torch.ones(2, 3, device="cpu"))
    assert watch.calls == {"torch.zeros at bfpo/ppo.py:" + str(old_gae.__code__.co_firstlineno + 1)}


def test_every_model_of_a_ppo_run_is_placed_on_the_run_device(ppo_config, tmp_path):
    m, state = ppo._load(ppo_config(tmp_path / "meta", device="meta"))
    held = {
        "actor": state.actor,
        "reference": m.ref,
        **m.scorers,
        **{f"{k} critic": c for k, c in state.critics.items()},
    }
    for name, model in held.items():
        assert not _on(model, "meta"), f"{name}: {_on(model, 'meta')[:3]} stay off the run's device"
    assert m.device == state.device == torch.device("meta")


def test_score_models_judged_policies_and_evaluated_models_load_on_the_run_device(
    tiny_world, score_models, monkeypatch
):
    model, _, device = safe_rlhf.load_score_model(
        safe_rlhf.ScoreConfig(model=str(tiny_world / "init"), output_dir="-", train_data="-", device="meta")
    )
    assert device == torch.device("meta") and not _on(model, "meta")
    model, _ = study.load(tiny_world / "init", device="meta")  # the study's judging loads its models here
    assert not _on(model, "meta")
    seen = {}

    def spy(path, revision=None, dtype=None, device=None):
        seen["device"] = device
        raise OSError("stop here")

    from bfpo.evaluation import run as eval_run

    monkeypatch.setattr(eval_run.models, "load_model", spy)
    with pytest.raises(FileNotFoundError, match="stop here"):
        eval_run.evaluate(tiny_world / "init", ["ethics_virtue"], limit=2, device="meta")
    assert seen["device"] == torch.device("meta")


def test_no_path_makes_a_tensor_off_the_run_device(ppo_config, tiny_world, score_models, tmp_path):
    """PPO-Lagrangian (start cost, rollouts, GAE, the PTX term), a reward model, a BFPO run with its
    reference pass (padded and packed), sampling, the gold judge and a multiple-choice task."""
    from bfpo import toyworld as tw
    from bfpo.evaluation import run as eval_run

    root, _ = score_models
    with FactoryWatch() as watch:
        ppo.ppo_lagrangian(ppo_config(tmp_path / "ppo", iterations=2, ptx_data=str(tiny_world / "sft"), device="cpu"))
        safe_rlhf.train_score_model(
            safe_rlhf.ScoreConfig(
                model=str(tiny_world / "init"),
                output_dir=str(tmp_path / "reward"),
                train_data=str(tiny_world / "pairs"),
                max_steps=2,
                max_length=64,
                progress=False,
                device="cpu",
            )
        )
        safe_rlhf.cost_calibration(root / "cost" / "model", [{"prompt": "hi", "response": "ok", "safe": True}], 64)
        for padding_free in (False, True):
            train.train(
                train.TrainConfig(
                    model=str(tiny_world / "init"),
                    train_data=str(tiny_world / "pairs"),
                    buffer_data=str(tiny_world / "buffer"),
                    buffer_ratio=0.25,
                    output_dir=str(tmp_path / f"bfpo{padding_free}"),
                    max_steps=2,
                    max_length=64,
                    progress=False,
                    num_threads=1,
                    padding_free=padding_free,
                    device="cpu",
                )
            )
        model, tok = study.load(tiny_world / "init", device="cpu")
        tw.evaluate_model(model, tok, samples_per_prompt=1, split="test", seed=0, per_topic=1)
        eval_run.evaluate(tiny_world / "init", ["ethics_virtue"], limit=2, progress=False, device="cpu")
    assert not watch.calls, sorted(watch.calls)


def test_sampling_follows_the_prompts_device():
    """bfpo.sampling makes its buffers beside ``input_ids``: a meta model and meta prompts stay on meta."""
    with FactoryWatch() as watch:
        tok = models.train_tokenizer(["a b c d e f"], vocab_size=64)
        model = models.tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
        ids = torch.ones(2, 3, dtype=torch.long, device="cpu")
        new = sampling.sample(model, ids, torch.ones_like(ids), 3, 1.0, tok.pad_token_id, tok.eos_token_id)
    assert new.device == ids.device and not {c for c in watch.calls if "sampling" in c}


@pytest.mark.parametrize(
    "name, problem",
    [("cuda:7", "no CUDA device|does not exist"), ("tpu:0", "not a device|no TPU"), ("gpu", "not a device")],
)
def test_a_device_this_machine_lacks_is_one_clear_line(name, problem):
    if name == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(BadInput, match=problem) as err:
        devices.resolve(name)
    assert "\n" not in str(err.value) and "available: cpu" in str(err.value) or "not a device" in str(err.value)


def test_configs_refuse_a_missing_device_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="device"):
        ppo.PPOConfig(actor="a", reward_model="r", cost_model="c", output_dir="o", prompts="p", device="cuda:3")
    with pytest.raises(ValueError, match="device"):
        safe_rlhf.ScoreConfig(model="m", output_dir="o", train_data="t", device="cuda:3")
    with pytest.raises(ValueError, match="device"):
        train.TrainConfig(model="m", train_data="t", output_dir="o", device="cuda:3")


def test_auto_is_accelerates_choice_and_the_cpu_state_round_trips():
    assert devices.resolve("auto") == devices.resolve(None)
    assert devices.resolve("auto").type == ("cuda" if torch.cuda.is_available() else devices.resolve("auto").type)
    state = devices.rng_state(torch.device("cpu"))
    a = torch.rand(3, device="cpu")
    devices.set_rng_state(state, torch.device("cpu"))
    assert torch.equal(a, torch.rand(3, device="cpu"))
    devices.set_rng_state(state["cpu"], torch.device("cpu"))  # a bare tensor, as older checkpoints kept it
    assert torch.equal(a, torch.rand(3, device="cpu"))
