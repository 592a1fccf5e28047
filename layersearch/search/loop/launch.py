"""Starting many workers on one study: processes on this host (`study.workers`, `study.trials_per_device`)
or a SLURM job array (`launcher=slurm`, through submitit).

The parent prepares the study first (schemas, study, baselines, MLflow experiment), so nothing races at
start-up; then every worker runs the ordinary sweep loop against the same storage, reserving trials under
the storage lock until the study has exactly ``study.n_trials`` COMPLETE + PRUNED trials. Passwords never
travel in a file: a worker gets its config through its environment, and a SLURM job reads the storage and
tracking URLs from the environment that sbatch exports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ...lossnet.declared import declare_from_settings
from ...progress import write
from ...settings import Settings, StudySettings, parse_settings, settings_to_dict
from ...trial.tasks import TRIALS_PER_DEVICE_ENV
from ...trial.train import resolve_device
from ..storage import StudyError, journal_path, redact, scrub, sqlite_path, storage_url
from .study import prepare_study, summarize
from .worker import Interrupted, run_worker

__all__ = ["gpu_plan", "n_workers", "run_launched", "wants_launcher", "worker_main"]

WORKER_COMMAND = [sys.executable, "-m", "layersearch.search.loop"]  # runs __main__.py: worker_main
CONFIG_ENV = "LAYERSEARCH_WORKER_CONFIG"  # a worker's settings, as JSON (never written to disk)
STORAGE_ENV = "LAYERSEARCH_STUDY_STORAGE"  # a SLURM job's real storage URL (its pickled config is redacted)
TRACKING_ENV = "LAYERSEARCH_TRACKING_URI"


def _visible_gpus(settings: Settings) -> list[str]:
    """The GPUs this host's workers may use (CUDA_VISIBLE_DEVICES order), none on CPU runs.

    ``trainer.device=cuda:<i>`` means the i-th of them alone (checked here: one line if there is none), so
    that every worker runs on the GPU the user named; each worker then sees it as its only GPU, cuda:0.
    """
    device = settings.trainer.device
    if device == "cpu":
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    ids = ids[:count]
    if device.startswith("cuda:"):
        return [ids[resolve_device(device).index]]
    return ids


def n_workers(study: StudySettings, gpus: list[str]) -> int:
    """``study.workers`` when above 1, else ``study.trials_per_device`` x the visible GPUs (x 1 on CPU)."""
    workers, per_device = study.workers, study.trials_per_device
    if workers < 1 or per_device < 1:
        raise StudyError(f"study.workers and study.trials_per_device must be >= 1, got {workers} and {per_device}")
    return workers if workers > 1 else per_device * max(1, len(gpus))


def gpu_plan(n: int, per_device: int, gpus: list[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each worker: ``per_device`` consecutive workers share a GPU, round robin."""
    if not gpus:
        return [None] * n
    return [gpus[(i // per_device) % len(gpus)] for i in range(n)]


def wants_launcher(settings: Settings) -> bool:
    """True when this process should start workers rather than run trials itself."""
    if os.environ.get(CONFIG_ENV) is not None:
        return False  # we are a worker
    study = settings.study
    return settings.launcher.name == "slurm" or study.workers > 1 or study.trials_per_device > 1


def _with_study(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, study=dataclasses.replace(settings.study, **changes))


def run_launched(settings: Settings, fn=None):
    """Prepare the study, start its workers (local processes or a SLURM array), wait, sum up.

    Args:
        fn: the training function of ``layersearch.sweep(train, ...)``: workers import it by its name.
    """
    if fn is not None:
        from ...trial.python import function_spec

        settings = dataclasses.replace(settings, trial=dataclasses.replace(settings.trial, fn=function_spec(fn)))
    launcher = settings.launcher.name
    gpus = [] if launcher == "slurm" else _visible_gpus(settings)
    n = (settings.launcher.array_size or 1) if launcher == "slurm" else n_workers(settings.study, gpus)
    url = storage_url(settings.study, settings.paths.studies_dir) if n > 1 or launcher == "slurm" else None
    if sqlite_path(url or "") is not None:
        raise StudyError(
            f"study {settings.study.name} is a SQLite file ({sqlite_path(url)}), which is not safe for "
            f"{n} concurrent workers{' on other machines' if launcher == 'slurm' else ''}: use a new study.name "
            "(its default storage is then a journal file) or study.storage=postgresql://..."
        )
    if launcher == "slurm" and journal_path(url or "") is not None and not settings.study.storage:
        write(f"note: the study is the journal file {journal_path(url)}; SLURM jobs on other machines "
              "need it on a shared file system (or use study.storage=postgresql://...)")
    settings = _with_study(settings, storage=url)
    # SLURM jobs prepare their own training where the data and GPUs are; local workers are checked here first.
    prep = prepare_study(settings, prepare_training=launcher != "slurm")
    per_device = settings.study.trials_per_device
    settings = _with_study(settings, workers=1, trials_per_device=1)
    if launcher == "slurm":
        codes = _run_slurm(settings, n)
    else:
        codes = _run_local(settings, n, gpu_plan(n, per_device, gpus))
    result = summarize(prep)
    done = result.counts["complete"] + result.counts["pruned"]
    bad = {i: c for i, c in codes.items() if c != 0}
    for i, code in bad.items():
        what = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        write(f"worker {i} {what}" + ("; the others failed and retried its trial" if done >= prep.n_trials
                                       else ""))
    if done < prep.n_trials and bad:
        first = next(iter(bad.values()))
        raise StudyError(f"the study has {done} of {prep.n_trials} trials and {len(bad)} worker(s) failed "
                         f"(first exit status {first}); see the worker logs; run the same command to resume")
    return result


def _log_dir(settings: Settings) -> Path:
    return Path(settings.paths.studies_dir) / settings.study.name / "logs"


def _cores() -> int:
    """The cores this process may run on (its affinity: a container's or SLURM's share), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_local(settings: Settings, n: int, plan: list[str | None]) -> dict[int, int]:
    """N worker processes on this host; their output goes, passwords removed, to the console and a log."""
    secrets = [str(settings.study.storage), settings.tracking.uri]
    logs = _log_dir(settings)
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    for i in range(n):
        # Each worker its own sampler seed: with one seed, workers draw the same samples from the same history.
        worker = _with_study(settings, seed=settings.study.seed + i)
        env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
        if plan[i] is not None:
            # The worker sees its GPU alone, as cuda:0 (trainer.device=cuda:<i> chose it in _visible_gpus).
            env["CUDA_VISIBLE_DEVICES"] = plan[i]
            env[TRIALS_PER_DEVICE_ENV] = str(plan.count(plan[i]))  # data.on_device=auto's budget is shared
            if settings.trainer.device.startswith("cuda"):
                worker = dataclasses.replace(worker, trainer=dataclasses.replace(worker.trainer, device="cuda"))
        if "OMP_NUM_THREADS" not in os.environ:
            # Workers share the cores instead of each starting one thread per core: GPU workers too, whose
            # scoring (SSIM, PSNR on the host) and data work run on the CPU.
            env["OMP_NUM_THREADS"] = str(max(1, _cores() // n))
        env[CONFIG_ENV] = json.dumps(settings_to_dict(worker))
        procs.append(subprocess.Popen(WORKER_COMMAND, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    gpu = "" if plan[0] is None else f" on GPUs {', '.join(dict.fromkeys(p for p in plan if p))}"
    write(f"started {n} workers{gpu} (pids {', '.join(str(p.pid) for p in procs)}); logs in {logs}")

    def pump(i: int, proc: subprocess.Popen) -> None:
        with open(logs / f"worker-{i}.log", "a") as log_file:
            for line in proc.stdout:
                clean = scrub(line.rstrip("\n"), *secrets)
                log_file.write(clean + "\n")
                log_file.flush()
                write(f"[worker {i}] {clean}")

    pumps = [threading.Thread(target=pump, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in pumps:
        t.start()

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward) if threading.current_thread() is threading.main_thread() else None
    try:
        codes = {i: p.wait() for i, p in enumerate(procs)}
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached the workers too (same process group): let them record the trial.
        for p in procs:
            p.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for t in pumps:
            t.join(timeout=5)
    if any(c == 143 for c in codes.values()) and all(c in (0, 143) for c in codes.values()):
        raise Interrupted("workers stopped by SIGTERM")
    return codes


def _slurm_job(data: dict) -> int:
    """One SLURM array task: the sweep loop with the real URLs from the exported environment.

    ``data`` is the task's settings as `settings_to_dict` wrote them (what submitit pickles), URLs redacted.
    """
    settings = parse_settings(data)
    declare_from_settings(settings)
    settings = _with_study(settings, storage=os.environ.get(STORAGE_ENV, settings.study.storage))
    settings = dataclasses.replace(settings, tracking=dataclasses.replace(
        settings.tracking, uri=os.environ.get(TRACKING_ENV, settings.tracking.uri)))
    os.environ[CONFIG_ENV] = "slurm"
    return run_worker(settings).ran_trials


def _run_slurm(settings: Settings, n: int) -> dict[int, int]:
    """Submit ``n`` workers as one job array with submitit; wait for them when ``launcher.wait``."""
    try:
        import submitit
    except ImportError:
        raise StudyError("launcher=slurm needs submitit: pip install 'layersearch[slurm]'") from None
    launcher = settings.launcher
    folder = Path(launcher.folder or _log_dir(settings).parent / "slurm")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=launcher.cluster)
    executor.update_parameters(
        name=f"layersearch-{settings.study.name}",
        timeout_min=launcher.time_min,
        slurm_partition=launcher.partition,
        gpus_per_node=launcher.gpus_per_job,
        slurm_array_parallelism=n,
    )
    # The pickled job holds redacted URLs only; the real ones travel in the environment sbatch exports.
    os.environ[STORAGE_ENV] = str(settings.study.storage)
    os.environ[TRACKING_ENV] = settings.tracking.uri
    safe = _with_study(settings, storage=redact(settings.study.storage))
    safe = dataclasses.replace(safe, tracking=dataclasses.replace(safe.tracking, uri=redact(safe.tracking.uri)))
    jobs = executor.map_array(_slurm_job, [settings_to_dict(_with_study(safe, seed=safe.study.seed + i))
                                           for i in range(n)])
    write(f"submitted {n} SLURM jobs: {', '.join(j.job_id for j in jobs)} (logs in {folder})")
    if not launcher.wait:
        return {}
    codes = {}
    for i, job in enumerate(jobs):
        try:
            job.result()
            codes[i] = 0
        except Exception as err:  # submitit re-raises the job's error (or its death) here
            write(f"SLURM job {job.job_id}: {scrub(str(err).splitlines()[-1] if str(err) else repr(err))}")
            codes[i] = 1
    return codes


def worker_main() -> int:
    """Entry point of a local worker process: the config comes from the environment, never from a file.

    Exit status as the CLI's: 0 done, 2 bad input (one line), 130/143 interrupted, 1 a bug (traceback).
    """
    import traceback
    import warnings

    from ...errors import LayersearchError

    warnings.simplefilter("ignore")  # the parent already showed the warnings of this config
    try:
        settings = parse_settings(json.loads(os.environ[CONFIG_ENV]))
        declare_from_settings(settings)
        run_worker(settings)
        return 0
    except KeyboardInterrupt as err:
        print("layersearch sweep: interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    except LayersearchError as err:
        print(f"layersearch sweep: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1

