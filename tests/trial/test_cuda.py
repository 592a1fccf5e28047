"""The CUDA path of train(): bf16 autocast and channels_last. Skipped on machines without a GPU."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import smoke

from layersearch.lossnet.loss import PerceptualLoss
from layersearch.trial.tasks import build_task
from layersearch.trial.train import layer_config, train

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")


def test_train_on_cuda_uses_bf16_autocast_and_channels_last(monkeypatch):
    cfg = smoke("trainer.device=cuda")
    task = build_task(cfg["task"], cfg["data"], cfg["model"], cfg["metrics"], torch.device("cuda"))
    loss_fn = PerceptualLoss(layer_config(cfg))
    seen = {}
    original = task.loss

    def spy(loss_fn, outputs, targets):
        seen["autocast"] = torch.is_autocast_enabled("cuda")
        seen["dtype"] = torch.get_autocast_dtype("cuda")
        return original(loss_fn, outputs, targets)

    monkeypatch.setattr(task, "loss", spy)
    model, result = train(task, loss_fn, cfg["trainer"])
    assert seen == {"autocast": True, "dtype": torch.bfloat16}
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert conv_weights[0].device.type == "cuda"
    assert all(math.isfinite(v) for v in result.metrics.values())
