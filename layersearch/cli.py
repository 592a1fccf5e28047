"""The `layersearch` command: thin wrappers that compose the config, call one function and print."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from .config import compose_config, config_groups, option_file, to_container
from .errors import LayersearchError, RandomWeightsWarning
from .lossnet.declared import declare_from_settings
from .lossnet.layers import ARCHS, TORCHVISION_ARCHS, check_arch, format_layer_table
from .outputs import RANDOM_BANNER, timestamped_dir
from .progress import check_environment as check_progress_environment
from .settings import Settings, parse_settings
from .trial.metric_registry import RESTORATION, format_table, metric_set

USAGE = """usage: layersearch COMMAND [ARGS]

commands:
  layers [NET] [--config-dir DIR] a loss network's layer names with channels, stride and receptive field
  train [overrides]               one training run with loss=<preset> or loss_file=<exported config>
  score pred_dir=D target_dir=D   score any model's outputs against targets (scale=4 shaves 4 px)
  sweep [overrides]               run or resume an Optuna study of short trials, recorded in MLflow
  export [overrides]              write the best layer config of study.name (studies/<name>/best.yaml)
  ui [overrides] [port=5000]      the MLflow dashboard on 127.0.0.1 for study.name
  dashboard [overrides] [port=8080]  optuna-dashboard on 127.0.0.1 for study.name (history, importances, Pareto)
  confirm [overrides]             retrain study.name's top configs and baselines longer, over seeds: does the winner hold?
  report [overrides]              which layers matter in study.name: studies/<name>/report/index.html
  inspect [overrides]             what each layer keeps of an image (feature/style inversion grid)

Commands that take overrides compose conf/config.yaml with Hydra: key=value, group=option.
  --cfg job          print the composed config and exit
  --config-dir DIR   add your own config groups (searched before the shipped ones)
  --help             list the config groups and their options
"""


class UsageError(LayersearchError):
    """Bad command-line arguments."""


def parse_overrides(args: list[str]) -> tuple[list[str], list[str], bool, bool]:
    """Split args into (overrides, config dirs, print-config?, help?)."""
    overrides, dirs, show_cfg, show_help = [], [], False, False
    it = iter(args)
    for arg in it:
        if arg in ("-h", "--help"):
            show_help = True
        elif arg in ("--cfg", "-c"):
            what = next(it, None)
            if what != "job":
                raise UsageError(f"--cfg takes 'job', got {what!r}")
            show_cfg = True
        elif arg == "--config-dir" or arg.startswith("--config-dir="):
            value = arg.split("=", 1)[1] if "=" in arg else next(it, None)
            if not value or not os.path.isdir(value):
                raise UsageError(f"--config-dir {value!r} is not a directory")
            dirs.append(value)
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}; overrides look like key=value")
        else:
            overrides.append(arg)
    return overrides, dirs, show_cfg, show_help


def groups_help(command: str) -> str:
    lines = [f"usage: layersearch {command} [--cfg job] [--config-dir DIR] [key=value ...] [group=option ...]",
             "", "config groups (group=option):"]
    lines += [f"  {group:<14} {', '.join(options)}" for group, options in config_groups().items()]
    lines += ["", "e.g. layersearch train preset=smoke trainer.steps=20 loss=esrgan"]
    return "\n".join(lines)


def with_config(command: str, run: Callable[[Settings], int]) -> Callable[[list[str]], int]:
    """Wrap a command body that takes the settings with --help, --cfg job and --config-dir.

    The composed config is parsed into `Settings` here, once; the body and everything below it read those.
    """

    def wrapped(args: list[str]) -> int:
        overrides, dirs, show_cfg, show_help = parse_overrides(args)
        if show_help:
            print(groups_help(command))
            return 0
        cfg = compose_config(overrides, dirs)
        if show_cfg:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(cfg))
            return 0
        settings = parse_settings(to_container(cfg))
        declare_from_settings(settings)  # loss networks of the user's own, by name from here on
        return run(settings)

    return wrapped


def cmd_layers(args: list[str]) -> int:
    usage = ("usage: layersearch layers [NET] [--config-dir DIR] [loss_net.key=value ...]   (default vgg16)\n"
             f"networks: {', '.join(ARCHS)}; or your own, declared in DIR/loss_net/NET.yaml "
             "(docs: Your own loss network)")
    if args and args[0] in ("-h", "--help"):
        print(usage)
        return 0
    overrides, dirs, _, _ = parse_overrides(args)
    names = [o for o in overrides if "=" not in o]
    if len(names) > 1:
        raise UsageError(f"layers takes one network ({', '.join(ARCHS)} or one of your own), got {' '.join(names)}")
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("loss_net=")]
    arch = names[0] if names else chosen[0] if chosen else "vgg16"
    overrides = [o for o in overrides if "=" in o and not o.startswith("loss_net=")]
    if arch in ARCHS and not dirs and not overrides:
        source = "torchvision's module path" if arch in TORCHVISION_ARCHS else "its module path"
        print(f"{arch}: stride and receptive field in pixels; module: {source} (class). "
              f"Other networks: {', '.join(a for a in ARCHS if a != arch)}")
        print(format_layer_table(arch))
        return 0
    if option_file("loss_net", arch, dirs) is None:
        raise UsageError(f"unknown loss network {arch!r}: not built in ({', '.join(ARCHS)}) and no "
                         f"loss_net/{arch}.yaml in {', '.join(dirs) or 'a --config-dir'}")
    settings = parse_settings(to_container(compose_config([f"loss_net={arch}", *overrides], dirs)))
    declare_from_settings(settings)
    net = check_arch(settings.loss_net.arch)
    print(f"{net}: its layers are module paths (layersearch uses them as written); stride in pixels at a "
          "224 px probe, receptive field measured by the input gradient; token layers drop their prefix tokens")
    print(format_layer_table(net))
    return 0


def run_train(settings: Settings) -> int:
    from .trial.train import train_from_config

    outcome = train_from_config(settings)
    rows = {"trained": outcome.metrics}
    if outcome.baseline:
        rows["bicubic"] = outcome.baseline
    columns = [k for k in outcome.metrics if not k.startswith("train/")]
    if outcome.random_weights:
        print(RANDOM_BANNER)
    print(f"weights: loss net {outcome.labels['loss_net']}, LPIPS {outcome.labels['lpips']}; trained in {outcome.precision}")
    print(format_table(rows, columns))
    print(f"wrote {outcome.out_dir}/metrics.json, preview.png, config.yaml")
    return 0


def run_score(settings: Settings) -> int:
    from .trial.score import score_folders

    if not settings.pred_dir or not settings.target_dir:
        raise UsageError("score needs pred_dir=... and target_dir=...")
    lpips = settings.metrics.lpips
    names = metric_set(RESTORATION, settings.study.objectives, settings.metrics.names)
    result = score_folders(
        settings.pred_dir, settings.target_dir, settings.scale, lpips.net, lpips.weights,
        out=Path(settings.out_dir or timestamped_dir(settings.paths.outputs_dir, "score")) / "scores.json",
        names=names,
    )
    if result["random_weights"]:
        print(RANDOM_BANNER)
    print(f"{result['n_images']} images, LPIPS {result['weights']['lpips']}, shave {settings.scale}px")
    print(format_table({"mean": result["mean"]}, names))
    if result["unmatched"]:
        print(f"ignored {len(result['unmatched'])} files without a partner: {', '.join(result['unmatched'][:5])}")
    print(f"wrote {result['out']}")
    return 0


def run_sweep(settings: Settings) -> int:
    from .search import run_sweep

    result = run_sweep(settings)
    print(format_result(result))
    if result.best_rows:
        print(f"next: layersearch export study.name={result.study_name}   "
              f"and   layersearch ui study.name={result.study_name}")
    return 0


def format_result(result) -> str:
    c = result.counts
    lines = []
    if result.random_weights:
        lines.append(RANDOM_BANNER)
    repeats = f" (+ {c['repeats']} baseline seed repeats)" if c.get("repeats") else ""
    lines.append(f"study {result.study_name}: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
                 f"{repeats} ({result.storage})")
    if result.best_rows:
        title = "Pareto front" if len(result.objectives) > 1 else "best"
        lines.append(f"{title} (and the literature baselines):")
        lines.append(format_table(result.best_rows, [m for m, _ in result.objectives]))
        lines += result.noise_lines
    if result.ran_trials and result.seconds_total > 0:
        outside = 1 - result.seconds_in_training / result.seconds_total
        lines.append(f"ran {result.ran_trials} trials in {result.seconds_total:.0f} s; "
                     f"{100 * outside:.1f}% of it outside the trials' training runs (setup, Optuna, MLflow)")
    return "\n".join(lines)


def run_export(settings: Settings) -> int:
    if settings.export.source == "confirm":
        from .insight.confirm import export_confirmed as export_study
    else:
        from .search.results import export_study

    paths = export_study(settings)
    for path in paths:
        print(f"wrote {path}")
    if len(paths) == 1 and paths[0].suffix in (".yaml", ".yml", ".json"):
        print(paths[0].read_text(), end="")
    return 0


def run_ui(settings: Settings) -> int:
    from .search.dashboards import run_ui as serve
    from .search.storage import check_study_name

    check_study_name(settings.study.name)
    port = settings.port
    return serve(settings.tracking.uri, settings.study.name, port=5000 if port is None else port)


def run_dashboard(settings: Settings) -> int:
    from .search.dashboards import serve_dashboard

    return serve_dashboard(settings.study, settings.paths.studies_dir, port=settings.port)


def run_confirm(settings: Settings) -> int:
    from .insight import confirm

    result = confirm.run_confirm(settings)
    if result.summary is None:
        print(f"{result.pending} of {result.jobs} runs are still queued or running elsewhere; no results written yet")
        return 0
    print("\n".join(confirm.summary_lines(result.summary)))
    for path in result.paths:
        print(f"wrote {path}")
    return 0


def run_report(settings: Settings) -> int:
    from .insight.report import build_report

    result = build_report(settings)
    if result.random_weights:
        print(RANDOM_BANNER)
    for note in result.notes:
        print(note)
    if result.mlflow_run:
        print(f"logged to MLflow run {result.mlflow_run} (artifacts/report)")
    print(f"wrote {result.out_dir}/index.html, report.md, layers.csv and {len(result.files) - 3} more files "
          f"in {result.seconds:.1f} s")
    return 0


def run_inspect(settings: Settings) -> int:
    from .insight.inspect import inspect_layers

    result = inspect_layers(settings)
    if result.random_weights:
        print(RANDOM_BANNER)
    columns = [f"{kind} {m}" for kind in ("feature", "style") for m in result.metrics]
    rows = {r["layer"]: {f"{kind} {m}": r[kind][m] for kind in ("feature", "style") for m in result.metrics}
            for r in result.layers}
    print(format_table(rows, columns))
    for line in result.notes:
        print(line)
    print(f"wrote {result.out_dir}/inspect.png, inspect.json in {result.seconds:.0f} s")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "layers": cmd_layers,
    "train": with_config("train", run_train),
    "score": with_config("score", run_score),
    "sweep": with_config("sweep", run_sweep),
    "export": with_config("export", run_export),
    "ui": with_config("ui", run_ui),
    "dashboard": with_config("dashboard", run_dashboard),
    "confirm": with_config("confirm", run_confirm),
    "report": with_config("report", run_report),
    "inspect": with_config("inspect", run_inspect),
}


_SHOWN: set[tuple[type, str]] = set()


def _warning_line(message, category, filename, lineno, file=None, line=None):
    # One line per warning, without the source line: users see what happened, not where in our code. Each
    # warning once per process: the "once" filter alone is not enough, since CPython forgets what it showed
    # whenever any code changes the warning filters (a sweep does, once per trial).
    if os.environ.get("LAYERSEARCH_DEBUG"):
        print(f"warning: {message} ({filename}:{lineno})", file=sys.stderr if file is None else file)
        return
    if (category, str(message)) in _SHOWN:
        return
    _SHOWN.add((category, str(message)))
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def _quiet_libraries() -> None:
    """MLflow's INFO lines and its per-run "View run ... at" links repeat what our own lines say.

    Environment variables, so that they hold before mlflow is imported and in the worker and server
    processes we start. ``LAYERSEARCH_DEBUG=1`` keeps everything.
    """
    if os.environ.get("LAYERSEARCH_DEBUG"):
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"layersearch: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    warnings.showwarning = _warning_line
    warnings.simplefilter("always" if os.environ.get("LAYERSEARCH_DEBUG") else "once", RandomWeightsWarning)
    _quiet_libraries()
    try:
        check_progress_environment()
        return COMMANDS[command](args)
    except KeyboardInterrupt as err:
        # Ctrl-C: 130; SIGTERM (search.loop.Interrupted, e.g. SLURM preemption): 143. Rerunning resumes.
        print(f"layersearch {command}: interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    except BrokenPipeError:
        # The reader went away (`layersearch layers NET | head`): not an error of ours. Python would report
        # the pipe again when it flushes stdout at exit, so stdout goes to /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a command killed by SIGPIPE
    except LayersearchError as err:
        # The user's input was wrong: one line, exit 2 (LAYERSEARCH_DEBUG=1 shows where it was noticed).
        if os.environ.get("LAYERSEARCH_DEBUG"):
            raise
        message = " ".join(str(err).split())
        print(f"layersearch {command}: {message}", file=sys.stderr)
        return 2
    except Exception:
        # Anything else is a bug in layersearch: show all of it.
        traceback.print_exc()
        print(f"layersearch {command}: internal error (a bug; the traceback above says where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
