"""A refused start leaves nothing behind: no study, no trial, no MLflow experiment, no file (issue 18).

Each refusal here once created the study (and enqueued its baselines) before it was noticed; now every key
is checked, the stores are opened or probed, the training is prepared (weights resolved, data read) and
only then is anything created.
"""

from __future__ import annotations

import optuna
import pytest
from helpers import one_error_line

from layersearch.cli import main

SMOKE = ["preset=smoke", "study.name=refused"]

REFUSALS = {
    "tracking database without artifacts": (["tracking.uri=postgresql://u:secret@127.0.0.1:9/mlflow"],
                                            "set tracking.artifacts"),
    "loss-network ImageNet weights offline": (["loss_net.weights=imagenet"], "could not fetch ImageNet weights for vgg16"),
    "LPIPS ImageNet weights offline": (["metrics.lpips.weights=imagenet"], "could not fetch ImageNet weights for alexnet"),
    "missing data folder": (["data=folder", "data.train_dir=nowhere", "data.val_dir=nowhere"], "nowhere"),
    "unreachable tracking server": (["tracking.uri=http://127.0.0.1:1"], "cannot reach tracking server"),
    "a function that does not import": (["trial=python", "trial.fn=no_such_module_xyz:train", "study.objectives=[lpips]"],
                                        "does not import"),
    "a command that is not found": (["trial=command", "trial.cmd=no-such-program-xyz", "study.objectives=[lpips]"],
                                    "not found on PATH"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_a_refused_sweep_creates_no_file(tmp_path, monkeypatch, capsys, case):
    overrides, message = REFUSALS[case]
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *SMOKE, *overrides]) == 2
    line = one_error_line(capsys)
    assert message in line, line
    assert "secret" not in line
    assert not list(tmp_path.rglob("*")), list(tmp_path.rglob("*"))  # no study file, no MLflow store, no folder


def test_a_refused_resume_changes_nothing(tmp_path, monkeypatch, capsys):
    # An existing study, resumed with other objectives: refused before its MLflow experiment or trials change.
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["sweep", *SMOKE, "study.n_trials=1", f"tracking.uri={uri}"]) == 0
    db = tmp_path / "studies/refused/optuna.db"
    before = [(t.number, t.state) for t in optuna.load_study(study_name="refused", storage=f"sqlite:///{db}").trials]
    stamp = (db.stat().st_mtime_ns, (tmp_path / "mlflow.db").stat().st_mtime_ns)
    capsys.readouterr()
    assert main(["sweep", *SMOKE, "study.n_trials=3", "study.objectives=[psnr_y]", f"tracking.uri={uri}"]) == 2
    assert "was run with objectives ['lpips', 'psnr_y'], not ['psnr_y']" in one_error_line(capsys)
    after = [(t.number, t.state) for t in optuna.load_study(study_name="refused", storage=f"sqlite:///{db}").trials]
    assert after == before
    assert (db.stat().st_mtime_ns, (tmp_path / "mlflow.db").stat().st_mtime_ns) == stamp
