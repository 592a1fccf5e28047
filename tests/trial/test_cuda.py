"""What the CPU suite cannot check: the CUDA path on a real GPU. Skipped without one; `benchmarks/gpu.sh` runs
this file (`pytest -m cuda tests/trial/test_cuda.py`) on a lent GPU. Sizes are the smoke preset's: seconds each.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from helpers import smoke
from optuna.trial import TrialState

from layersearch.cli import main
from layersearch.lossnet.loss import PerceptualLoss
from layersearch.trial import builtin
from layersearch.trial.tasks import build_task
from layersearch.trial.train import (
    DeviceError,
    NonFiniteLossError,
    cuda_has_native_bf16,
    layer_config,
    precision_used,
    resolve_device,
    train,
)

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")


def make(*overrides: str):
    cfg = smoke("trainer.device=cuda", *overrides)
    task = build_task(cfg.task, cfg.data, cfg.model, cfg.metrics, CUDA)
    return cfg, task, PerceptualLoss(layer_config(cfg))


def test_train_on_cuda_uses_bf16_autocast_and_channels_last(monkeypatch):
    cfg, task, loss_fn = make("trainer.precision=auto")
    bf16 = cuda_has_native_bf16(CUDA)  # auto: bf16 from compute capability 8.0 (Ampere) on, else fp32
    assert precision_used(cfg.trainer, CUDA) == ("bf16" if bf16 else "fp32")
    seen = {}
    original = task.loss

    def spy(loss_fn, outputs, targets):
        seen["autocast"] = torch.is_autocast_enabled("cuda")
        seen["dtype"] = torch.get_autocast_dtype("cuda") if bf16 else None
        return original(loss_fn, outputs, targets)

    monkeypatch.setattr(task, "loss", spy)
    model, result = train(task, loss_fn, cfg.trainer)
    assert seen == {"autocast": bf16, "dtype": torch.bfloat16 if bf16 else None}
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert conv_weights[0].device.type == "cuda"
    assert all(math.isfinite(v) for v in result.metrics.values())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_evaluation_runs_in_the_precision_of_the_run(precision):
    cfg, task, loss_fn = make(f"trainer.precision={precision}")
    torch.manual_seed(0)
    model = task.build_generator()
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(
        (module.training, torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda"))))
    _, result = train(task, loss_fn, cfg.trainer, model=model)
    expected = torch.bfloat16 if precision == "bf16" else False
    assert {autocast for training, autocast in seen if not training} == {expected}  # evaluations
    assert {autocast for training, autocast in seen if training} == {expected}
    assert all(math.isfinite(v) for v in result.metrics.values())


def test_the_style_task_trains_in_bf16_with_its_fixed_grams_on_the_gpu():
    cfg, task, loss_fn = make("task=style", "loss=johnson_style", "trainer.precision=bf16")
    model, result = train(task, loss_fn, cfg.trainer)
    grams = [t for name, t in loss_fn.named_buffers() if name.startswith("fixed_gram")]
    assert grams and all(t.device.type == "cuda" and t.dtype == torch.float32 for t in grams)
    assert {"content_lpips", "style_distance", "train/total"} <= set(result.metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert any(k.startswith("train/style/") for k in result.metrics)


def test_a_library_user_moves_a_fixed_style_loss_to_the_gpu():
    loss_fn = PerceptualLoss.from_config({"loss_net": {"arch": "vgg16", "weights": "random"}, "content_layers": {},
                                          "style_layers": {"relu2_2": 1.0}, "style_weight": 1.0})
    loss_fn.set_style_target(torch.rand(1, 3, 64, 64))  # on the CPU
    loss_fn.to("cuda")
    images = torch.rand(2, 3, 64, 64, device="cuda")
    assert torch.isfinite(loss_fn(images, images)).item()


def test_the_deferred_non_finite_check_names_the_first_bad_step_on_cuda(monkeypatch):
    cfg, task, loss_fn = make()
    calls = []
    loss = task.loss

    def poisoned(loss_fn, outputs, targets):
        calls.append(1)
        value = loss(loss_fn, outputs, targets)
        return value * float("nan") if len(calls) in (3, 4) else value

    monkeypatch.setattr(task, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"at step 3 \("):
        # check_every=auto on CUDA: the flag is read at evaluations only (step 4), and names step 3.
        train(task, loss_fn, replace(cfg.trainer, steps=8, eval_every=4, check_every="auto"))
    assert len(calls) == 4


def test_training_images_kept_in_host_memory_still_train_on_the_gpu():
    cfg, task, loss_fn = make("data.on_device=false")
    assert not task.train_on_device and task.train_images[0].device.type == "cpu"
    inputs, targets = task.sample_batch(2, torch.Generator().manual_seed(0))
    assert inputs.is_cuda and targets.is_cuda
    _, result = train(task, loss_fn, cfg.trainer)
    assert all(math.isfinite(v) for v in result.metrics.values())
    _, on_device, _ = make()  # the sample photos are small: auto keeps them on the GPU
    assert on_device.train_on_device and on_device.train_images[0].is_cuda


def test_a_gpu_index_this_process_does_not_see_is_one_line():
    count = torch.cuda.device_count()
    assert resolve_device(f"cuda:{count - 1}") == torch.device(f"cuda:{count - 1}")
    with pytest.raises(DeviceError, match=rf"sees {count} CUDA device\(s\): cuda:0 \("):
        resolve_device(f"cuda:{count}")


def test_an_allocation_failure_fails_only_its_trial_and_the_next_one_runs(tmp_path, monkeypatch):
    import weakref

    monkeypatch.chdir(tmp_path)
    real_train = builtin.train
    held, alive_at_next = [], []

    def train_once_too_big(*args, **kwargs):
        if held:
            alive_at_next.append(held[0]() is not None)
        else:
            activations = torch.ones(64, 1024, 1024, device="cuda")  # held when the next allocation fails
            held.append(weakref.ref(activations))
            too_much = 2 * torch.cuda.get_device_properties(0).total_memory  # a plain cudaMalloc: it just fails
            return activations + torch.empty(too_much, dtype=torch.uint8, device="cuda").sum()
        return real_train(*args, **kwargs)

    monkeypatch.setattr(builtin, "train", train_once_too_big)
    args = ["sweep", "preset=smoke", "search_space.baselines=[]", "trainer.device=cuda", "study.name=oom",
            "study.n_trials=2", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    assert main(args) == 0
    trials = optuna.load_study(study_name="oom", storage=f"sqlite:///{tmp_path}/studies/oom/optuna.db").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"].startswith("out of memory: CUDA out of memory")
    assert alive_at_next[0] is False  # the failed trial's 256 MiB were let go before the next trial started


@pytest.mark.slow  # marked cuda too (module): gpu.sh runs it; two worker processes start, ~30 s
def test_two_trials_per_device_share_one_gpu_each_seeing_it_alone(tmp_path, monkeypatch):
    import user_trainings

    log = tmp_path / "calls.jsonl"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(user_trainings.__file__).parent))
    monkeypatch.setenv("USER_TRAININGS_LOG", str(log))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    args = ["sweep", "preset=smoke", "trial=python", "trial.fn=user_trainings:sees_devices",
            "study.objectives=[quality]", "study.directions=[minimize]", "search_space.baselines=[]",
            "study.name=pinned", "study.n_trials=6", "study.pruner=none", "trainer.device=cuda:0",
            "study.trials_per_device=2", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    assert main(args) == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 6
    assert len({c["pid"] for c in calls}) == 2  # two workers...
    first_visible = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
    # ...on the one GPU named (cuda:0 here), each seeing only it, as cuda:0, knowing it shares it with one more.
    assert {(c["visible"], c["count"], c["device"], c["share"]) for c in calls} == {(first_visible, 1, "cuda", "2")}
    assert all(c["omp"] and int(c["omp"]) >= 1 for c in calls)
