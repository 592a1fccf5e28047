"""One training run: callback cadence, failure modes, determinism, and the output folder of `train`."""

from __future__ import annotations

import json
import math
import os
import stat
import time
import warnings
from dataclasses import replace

import imageio.v3 as iio
import pytest
import torch
import yaml
from helpers import fake_gpus, one_error_line, smoke

import layersearch.trial.train as train_module
from layersearch.errors import ConfigValueError
from layersearch.lossnet.loss import LossConfig, PerceptualLoss
from layersearch.lossnet.weights import RandomWeightsWarning, any_random
from layersearch.settings import Settings, TrainerSettings
from layersearch.trial.tasks import build_task
from layersearch.trial.train import (
    DeviceError,
    NonFiniteLossError,
    TrainResult,
    layer_config,
    resolve_device,
    train,
    train_from_config,
    weights_labels,
)


@pytest.fixture(scope="module")
def sr():
    """(config, task, loss) of the smoke SR run, built once: tasks keep their validation data."""
    cfg = smoke()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        task = build_task(cfg.task, cfg.data, cfg.model, cfg.metrics, "cpu")
        loss_fn = PerceptualLoss(layer_config(cfg))
    return cfg, task, loss_fn


def trainer(cfg: Settings, **changes) -> TrainerSettings:
    return replace(cfg.trainer, **changes)


def with_precision(value: str) -> TrainerSettings:
    """The smoke preset's trainer settings with ``trainer.precision=value``."""
    return replace(smoke().trainer, precision=value)


# --- the callback -------------------------------------------------------------------------------------


def test_callback_runs_at_exactly_the_eval_steps(sr):
    cfg, task, loss_fn = sr
    calls: list[tuple[int, dict[str, float]]] = []
    model, result = train(
        task, loss_fn, trainer(cfg, steps=5, eval_every=2), callback=lambda step, m: calls.append((step, m))
    )
    assert [step for step, _ in calls] == [2, 4, 5]
    for _, metrics in calls:
        assert {*task.objectives, "lpips", "psnr_y", "ssim_y", "train/total", "train/content/relu2_2"} <= set(
            metrics
        )
        assert all(math.isfinite(v) for v in metrics.values())
    assert result.steps == 5
    assert [step for step, _ in result.history] == [2, 4, 5]
    assert result.metrics == calls[-1][1]
    assert result.train_seconds > 0 and result.eval_seconds > 0
    assert isinstance(model, torch.nn.Module)


def test_eval_every_larger_than_steps_evaluates_once_at_the_end(sr):
    cfg, task, loss_fn = sr
    calls = []
    train(task, loss_fn, trainer(cfg, steps=3, eval_every=10), callback=lambda step, m: calls.append(step))
    assert calls == [3]


def test_a_raising_callback_stops_the_run_and_keeps_the_timings(sr, monkeypatch):
    cfg, task, loss_fn = sr

    class Prune(Exception):
        pass

    batches = []
    sample = task.sample_batch
    monkeypatch.setattr(task, "sample_batch", lambda *a: batches.append(1) or sample(*a))

    def callback(step, metrics):
        time.sleep(0.2)  # tracking and pruning time, which must not count as training
        raise Prune(step)

    result = TrainResult(metrics={})
    with pytest.raises(Prune):
        train(task, loss_fn, trainer(cfg, steps=6, eval_every=2), callback=callback, result=result)
    assert len(batches) == 2  # no step after the callback raised
    assert result.steps == 2 and [s for s, _ in result.history] == [2]
    assert "lpips" in result.metrics
    assert result.train_seconds > 0 and result.eval_seconds > 0 and result.callback_seconds >= 0.2


def poison_loss(task, monkeypatch, bad: float, at_calls: tuple[int, ...]) -> list[int]:
    """Make ``task.loss`` return ``loss * bad`` on the given calls; returns the (growing) list of calls."""
    calls: list[int] = []
    loss = task.loss

    def poisoned(loss_fn, outputs, targets):
        calls.append(len(calls) + 1)
        value = loss(loss_fn, outputs, targets)
        return value * bad if len(calls) in at_calls else value

    monkeypatch.setattr(task, "loss", poisoned)
    return calls


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_loss_stops_at_once_naming_the_step(sr, monkeypatch, bad):
    cfg, task, loss_fn = sr
    calls = poison_loss(task, monkeypatch, bad, at_calls=(3,))
    evaluated = []
    torch.manual_seed(0)
    model = task.build_generator()
    with pytest.raises(NonFiniteLossError, match=r"at step 3 \("):
        train(
            task,
            loss_fn,
            trainer(cfg, steps=6, eval_every=1),
            model=model,
            callback=lambda step, m: evaluated.append(step),
        )
    assert len(calls) == 3
    assert evaluated == [1, 2]
    # The bad step never reached the optimiser.
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_deferred_non_finite_check_still_names_the_first_bad_step(sr, monkeypatch):
    # check_every > 1 is what a GPU run does (no host sync per step): the flag is read later, the step is exact.
    cfg, task, loss_fn = sr
    calls = poison_loss(task, monkeypatch, float("nan"), at_calls=(3, 4))
    evaluated = []
    with pytest.raises(NonFiniteLossError, match=r"at step 3 \("):
        train(task, loss_fn, trainer(cfg, steps=8, eval_every=4, check_every=5),
              callback=lambda step, m: evaluated.append(step))
    assert len(calls) == 4  # read at the evaluation step 4, before step 5 and before any evaluation
    assert evaluated == []


@pytest.mark.parametrize("bad", [0, -1, "often", True])
def test_bad_check_every_is_refused(sr, bad):
    cfg, task, loss_fn = sr
    with pytest.raises(ConfigValueError, match="check_every"):
        train(task, loss_fn, trainer(cfg, steps=1, check_every=bad))


def test_huge_learning_rate_raises_non_finite_loss(sr):
    cfg, task, loss_fn = sr
    with pytest.raises(NonFiniteLossError, match=r"at step \d+ .*lower trainer.lr"):
        train(task, loss_fn, trainer(cfg, steps=6, eval_every=6, lr=1e10))


# --- precision: auto means bf16 on CUDA and on CPUs with bf16 units ------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_the_cpu_follows_its_bf16_units(sr, monkeypatch, native):
    cfg, task, loss_fn = sr
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: native)
    seen = {}
    original = task.loss

    def spy(loss_fn, outputs, targets):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["dtype"] = torch.get_autocast_dtype("cpu")
        seen["channels_last"] = outputs.is_contiguous(memory_format=torch.channels_last)
        return original(loss_fn, outputs, targets)

    monkeypatch.setattr(task, "loss", spy)
    train(task, loss_fn, trainer(cfg, steps=1, precision="auto", channels_last="auto"))
    assert seen["autocast"] is native
    assert seen["channels_last"] is native  # the generator goes channels_last with bf16, not in fp32
    if native:
        assert seen["dtype"] == torch.bfloat16
    assert train_module.precision_used(with_precision("auto"), torch.device("cpu")) == ("bf16" if native else "fp32")
    assert train_module.precision_used(with_precision("fp32"), torch.device("cpu")) == "fp32"


def test_the_cpu_bf16_probes_still_exist_in_torch():
    # cpu_has_native_bf16 asks torch's private probes; if torch renames them, auto would silently mean fp32.
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        assert isinstance(getattr(torch.cpu, name)(), bool), name


@pytest.mark.slow  # torch.compile of generator and loss network takes ~30-60 s on 2 CPU cores
def test_compile_trains_on_the_cpu_like_eager(sr):
    cfg, task, loss_fn = sr
    eager = train(task, loss_fn, trainer(cfg, steps=3, eval_every=3))[1].metrics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        fresh = PerceptualLoss(layer_config(cfg))  # compile=True compiles the loss network in place
    compiled = train(task, fresh, trainer(cfg, steps=3, eval_every=3, compile=True))[1].metrics
    assert set(compiled) == set(eager)
    for key in ("lpips", "psnr_y", "train/total"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-2, abs=1e-4), key


# --- determinism ----------------------------------------------------------------------------------------


def test_same_seed_same_metrics_other_seed_differs(sr):
    cfg, task, loss_fn = sr
    runs = [
        train(task, loss_fn, trainer(cfg, steps=3, eval_every=3, seed=seed))[1].metrics for seed in (0, 0, 1)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize(
    "changes", [{"steps": 0}, {"batch_size": 0}, {"eval_every": -1}, {"precision": "fp16"}]
)
def test_bad_trainer_settings_raise(sr, changes):
    cfg, task, loss_fn = sr
    with pytest.raises(ValueError):
        train(task, loss_fn, trainer(cfg, **changes))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:<index>"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")


def test_a_cuda_index_this_process_does_not_see_is_one_line(monkeypatch):
    fake_gpus(monkeypatch, ["GPU A", "GPU B"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(DeviceError) as caught:
        resolve_device("cuda:2")
    assert str(caught.value) == ("trainer.device=cuda:2 but this process sees 2 CUDA device(s): cuda:0 (GPU A), "
                                 "cuda:1 (GPU B); CUDA_VISIBLE_DEVICES=3,5 numbers them from 0")
    for bad in ("cuda:x", "cuda:-1", "cudax"):
        with pytest.raises(DeviceError, match="not a device name"):
            resolve_device(bad)


def test_train_with_a_missing_gpu_index_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    from layersearch.cli import main

    fake_gpus(monkeypatch, ["GPU A"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(train_module, "build_task", lambda *a: pytest.fail("built the task"))
    assert main(["train", "preset=smoke", "trainer.device=cuda:1", f"out_dir={tmp_path / 'run'}"]) == 2
    assert one_error_line(capsys) == ("layersearch train: trainer.device=cuda:1 but this process sees 1 CUDA "
                                      "device(s): cuda:0 (GPU A)")


@pytest.mark.parametrize(("capability", "auto"), [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_on_a_gpu_follows_its_compute_capability(monkeypatch, capability, auto):
    # V100 (7.0) and T4 (7.5) have no bf16 tensor cores: auto trains them in fp32, Ampere and later in bf16.
    fake_gpus(monkeypatch, ["GPU A"], capability)
    cuda = torch.device("cuda")
    assert train_module.precision_used(with_precision("auto"), cuda) == auto
    assert train_module.precision_used(with_precision("fp32"), cuda) == "fp32"


def test_explicit_bf16_on_an_old_gpu_warns_once_and_is_used(monkeypatch):
    fake_gpus(monkeypatch, ["Tesla T4"], (7, 5))
    monkeypatch.setattr(train_module, "_WARNED_SLOW_BF16", set())
    with pytest.warns(UserWarning, match=r"trainer.precision=bf16 on Tesla T4 \(compute capability 7.5 < 8.0\)"):
        assert train_module.precision_used(with_precision("bf16"), torch.device("cuda")) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device: a sweep's trials do not repeat it
        assert train_module.precision_used(with_precision("bf16"), torch.device("cuda")) == "bf16"
    fake_gpus(monkeypatch, ["NVIDIA H200"], (9, 0))
    monkeypatch.setattr(train_module, "_WARNED_SLOW_BF16", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train_module.precision_used(with_precision("bf16"), torch.device("cuda")) == "bf16"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_evaluation_runs_in_the_precision_of_the_run(sr, precision):
    # A fp32 run must not be scored through a bf16 generator (or the other way round): the record says fp32.
    cfg, task, loss_fn = sr
    torch.manual_seed(0)
    model = task.build_generator()
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(
        (module.training, torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))))
    train(task, loss_fn, trainer(cfg, steps=2, eval_every=2, precision=precision), model=model)
    evaluations = {autocast for training, autocast in seen if not training}
    trainings = {autocast for training, autocast in seen if training}
    assert evaluations == trainings == {torch.bfloat16 if precision == "bf16" else False}
    assert task.precision == precision
    titles, rows = task.preview(model, 1)  # previews too; the images come out in float32 either way
    assert seen[-1] == (False, torch.bfloat16 if precision == "bf16" else False)
    assert rows[0][1].dtype == torch.float32


# --- train_from_config: the output folder ---------------------------------------------------------------


def test_train_from_config_writes_the_output_folder(tmp_path):
    out = tmp_path / "runs" / "sr"
    cfg = smoke(f"out_dir={out}")
    old_umask = os.umask(0o022)
    try:
        outcome = train_from_config(cfg)
    finally:
        os.umask(old_umask)
    assert outcome.out_dir == out
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "preview.png"]
    assert [p.name for p in out.parent.iterdir()] == ["sr"]  # no staging folder left
    # Readable like any file the user writes (umask 022), not mkstemp's private 0600.
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "metrics.json").stat().st_mode) == 0o644

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "sr_x4"
    assert metrics["random_weights"] is True
    # The device this run used (cuda on a GPU host), not the CPU's answer.
    device = resolve_device(cfg.trainer.device)
    assert metrics["precision"] == outcome.precision == train_module.precision_used(cfg.trainer, device)
    assert metrics["weights"] == {"loss_net": "vgg16/random", "lpips": "alex/random"}
    assert metrics["weights"] == outcome.labels
    assert set(metrics["baseline"]) == {"lpips", "psnr_y", "ssim_y"}
    assert metrics["metrics"] == pytest.approx(outcome.metrics)
    assert {"lpips", "psnr_y", "ssim_y", "train/total"} <= set(metrics["metrics"])
    assert [h["step"] for h in metrics["history"]] == [2, 4] and metrics["steps"] == 4
    assert metrics["seconds"]["train"] > 0

    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written == layer_config(cfg).to_dict()
    assert LossConfig.load(out / "config.yaml") == layer_config(cfg)  # the folder's config trains again

    preview = iio.imread(out / "preview.png")
    assert preview.ndim == 3 and preview.shape[0] > 50 and preview.shape[1] > 50


def test_train_from_config_with_a_loss_file_and_an_empty_out_dir(tmp_path):
    loss_file = tmp_path / "pixel.yaml"
    loss_file.write_text(yaml.safe_dump({"content_layers": {}, "content_weight": 0.0, "pixel_weight": 1.0}))
    out = tmp_path / "empty"
    out.mkdir()  # an existing empty folder is fine
    outcome = train_from_config(smoke(f"loss_file={loss_file}", f"out_dir={out}", "trainer.steps=2"))
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["pixel_weight"] == 1.0 and written["content_layers"] == {}
    metrics = json.loads((out / "metrics.json").read_text())
    # No loss network is used; the metric's random weights still label the run.
    assert metrics["weights"] == {"loss_net": "none", "lpips": "alex/random"} == outcome.labels
    assert metrics["random_weights"] is True
    assert "train/pixel" in metrics["metrics"]


def test_a_failed_write_leaves_no_folder(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(train_module, "save_grid", broken)
    out = tmp_path / "run"
    with pytest.raises(OSError, match="disk full"):
        train_from_config(smoke(f"out_dir={out}", "trainer.steps=1"))
    assert list(tmp_path.iterdir()) == []  # neither out_dir nor a .run.* staging folder


def test_non_empty_out_dir_is_refused_before_training(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    monkeypatch.setattr(train_module, "build_task", lambda *a: pytest.fail("built the task"))
    with pytest.raises(FileExistsError, match="not empty"):
        train_from_config(smoke(f"out_dir={out}"))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_weights_labels(sr):
    cfg, task, _ = sr
    pixel = LossConfig.from_mapping({"content_layers": {}, "pixel_weight": 1.0})
    assert weights_labels(pixel, task) == {"loss_net": "none", "lpips": "alex/random"}
    assert weights_labels(layer_config(cfg), task)["loss_net"] == "vgg16/random"
    # The one random-weights rule: any network that made the result (None: the loss used no network).
    assert any_random("imagenet", "imagenet") is False
    assert any_random(None, "random") is True
    assert any_random("random", "imagenet") is True
    assert any_random(None, "/weights/alexnet.pth") is False
