"""A Hydra app (``@hydra.main``) training the Lightning SR module, searched by layersearch as a command trial.

Nothing in it is written for layersearch but one line: ``callbacks_from_env(...)`` adds the
`layersearch.lightning.Reporter` when the app runs inside a sweep and nothing when it runs on its own.
The sweep hands the sampled loss over as Hydra overrides of ``model.perceptual``:

    layersearch sweep trial=command loss_net=efficientnet_lite0 search_space=sr_lite0 \\
        study.objectives=[haarpsi,psnr_y] study.name=hydra_sr \\
        trial.cmd='python examples/hydra_app/train.py {overrides:model.perceptual} trainer.max_steps={steps} seed={seed} hydra.run.dir={trial_dir}/hydra'

On its own: ``python examples/hydra_app/train.py model.perceptual.pixel_weight=0.5``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from layersearch import PerceptualLoss
from layersearch.lightning import callbacks_from_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lightning"))  # the module of examples/lightning
from sr_module import SRModule, loaders, quiet_lightning, trainer  # noqa: E402


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    quiet_lightning()
    pl.seed_everything(cfg.seed, verbose=False)
    loss = PerceptualLoss.from_config(OmegaConf.to_container(cfg.model.perceptual, resolve=True))
    module = SRModule(loss, lr=cfg.model.lr, channels=cfg.model.channels)
    fit = trainer(cfg.trainer.max_steps, callbacks_from_env("val_haarpsi", ["val_psnr_y"]),
                  root=str(Path.cwd()), eval_every=cfg.trainer.eval_every)
    fit.fit(module, *loaders(cfg.seed))
    # lightning-hydra-template's "optimized_metric": what Hydra's own sweepers would read.
    return float(fit.callback_metrics["val_haarpsi"])


if __name__ == "__main__":
    main()
