"""MLflow records of a study: one experiment per study, one run per trial, one summary run.

``runs`` writes them (`StudyTracker`), ``store`` names them (tags, run names) and checks a tracking store
before anything is created, ``summary_run`` writes the summary run. The rest of layersearch imports from
here, never from those modules.
"""

from .runs import StudyTracker
from .store import (
    MAX_PARAM_CHARS,
    NOTE_TAG,
    PRECISION_TAG,
    RANDOM_NOTE,
    RANDOM_WEIGHTS_TAG,
    RETRY_TAG,
    SUMMARY_TAG,
    TRIAL_TAG,
    TrackingError,
    artifact_location_for,
    check_tracking,
    find_experiment,
    layers_label,
    probe_tracking,
    trial_run_name,
)

__all__ = [
    "MAX_PARAM_CHARS",
    "NOTE_TAG",
    "PRECISION_TAG",
    "RANDOM_NOTE",
    "RANDOM_WEIGHTS_TAG",
    "RETRY_TAG",
    "SUMMARY_TAG",
    "TRIAL_TAG",
    "StudyTracker",
    "TrackingError",
    "artifact_location_for",
    "check_tracking",
    "find_experiment",
    "layers_label",
    "probe_tracking",
    "trial_run_name",
]
