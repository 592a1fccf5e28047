"""The built-in training as a trial function: a task's generator trained by train.py, behind the `Trial` handle.

It is one training among others (a user's Python function, a user's command): the sweep and confirm call it
the same way. The task (data, validation set, LPIPS) is built once per process and reused by every trial.
"""

from __future__ import annotations

import dataclasses

from ..outputs import RANDOM_BANNER, save_grid
from ..settings import Settings
from .handle import Trial
from .tasks import Task, build_task, task_class
from .train import precision_used, resolve_device, train

__all__ = ["BuiltinTraining"]


class BuiltinTraining:
    """``training(trial) -> final metrics``: train the configured task's generator with ``trial.loss``.

    Args:
        settings: the settings (``task``, ``data``, ``model``, ``metrics``, ``trainer``); ``trainer.steps``
            and ``trainer.seed`` are replaced by the trial's own, ``trainer.eval_every`` is kept.
    """

    kind = "builtin"
    user_code = False  # an exception in here is a bug in layersearch: it stops the sweep

    def __init__(self, settings: Settings):
        self.settings = settings
        self._task: Task | None = None

    @property
    def label(self) -> str:
        return self.settings.task.target

    def check(self) -> None:
        """Cheap checks before anything is created: the task class imports and the device exists."""
        task_class(self.settings.task)
        resolve_device(self.settings.trainer.device)

    def prepare(self) -> None:
        """Build the task now (LPIPS weights resolved, data read): a start that cannot work fails here."""
        self.check()
        _ = self.task

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the task reports (any can be an objective)."""
        cls = task_class(self.settings.task)
        return tuple(cls.metrics or cls.objectives)

    @property
    def default_objectives(self) -> tuple[str, ...]:
        return tuple(task_class(self.settings.task).objectives)

    @property
    def task(self) -> Task:
        """The task, built on first use (images decoded, validation set degraded, LPIPS loaded)."""
        if self._task is None:
            s = self.settings
            self._task = build_task(s.task, s.data, s.model, s.metrics, resolve_device(s.trainer.device),
                                    s.study.objectives)
        return self._task

    @property
    def device(self):
        return self.task.device if self._task is not None else resolve_device(self.settings.trainer.device)

    def precision(self) -> str:
        """``bf16`` or ``fp32``: what trainer.precision means on this machine (recorded with each result)."""
        return precision_used(self.settings.trainer, self.device)

    def __call__(self, trial: Trial) -> dict[str, float]:
        task = self.task
        trainer = dataclasses.replace(self.settings.trainer, steps=trial.steps, seed=trial.seed)
        model, run = train(task, trial.loss, trainer, callback=lambda step, m: trial.report(step, **m))
        values = dict(run.metrics)
        # Scores per validation image, for paired comparisons blocked by image; a task of the user's that does
        # not score through Task.mean_scores, or names no images, has none (or only positions).
        names = getattr(task, "val_names", None)
        n = len(names) if names is not None else len(next(iter(run.per_image.values()), []))
        per_image = {m: vs for m, vs in run.per_image.items() if len(vs) == n}
        if per_image:
            trial.record_per_image(per_image, names)
        titles, rows = task.preview(model, trainer.preview_images)
        caption = f"trial {trial.number}: " + ", ".join(f"{m}={values[m]:.4f}" for m in trial.objectives if m in values)
        if trial.loss.random_weights or (task.lpips is not None and task.lpips.random_weights):
            caption = f"{RANDOM_BANNER}\n{caption}"
        trial.dir.mkdir(parents=True, exist_ok=True)
        save_grid(trial.dir / "preview.png", titles, rows, caption)
        return values
