"""The race: which finalists are worse than the best, decided seed round by seed round (irace / F-race style).

Every config is trained with the same seeds and scored on the same validation images, so a *block* is one
(seed, image) pair, or one seed when the training reports means only. After each seed round (every config
still in the race trained with that seed) the configs still in are tested on their common blocks:

1. an omnibus test, do they differ at all (`stats.blocked_anova`, the gate F-race puts before its pairwise
   tests; it keeps a race of equal configs from dropping any at more than the look's level);
2. if it says so, each config against the current best (best mean over the common blocks,
   `stats.blocked_pair`), Holm-adjusted over those comparisons; a config whose adjusted p is below the look's
   level is dropped with the verdict "worse than the best".

No test before ``first_test`` blocks (irace's firstTest) and two seeds (a run's luck is only measured across
seeds). The race looks once per round, so ``alpha`` is split evenly over the rounds at which a test can happen
(Bonferroni over looks): the chance that a race of equal configs drops any config stays <= ``alpha``.

Why not F-race's Friedman and Wilcoxon on ranks: one training run scores all the images, so the images of a
seed share that run's luck and are not independent blocks; rank tests over (seed, image) pairs read seed luck as
a difference (tests/insight/test_race.py measures this). On seeds alone, ranks cannot reject with few blocks
(Wilcoxon's exact two-sided p is >= 0.0625 with 5 seeds) and Friedman's chi-square is approximate there.

The race is replayed from the stored results in seed order, so every confirm process computes the same state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..stats import blocked_anova, blocked_pair, holm

__all__ = ["RaceState", "Verdict", "race"]

BEST, WORSE, OPEN, FAILED = "best", "worse", "open", "failed"


@dataclass(frozen=True)
class Verdict:
    """One config's standing: ``status`` best | worse | open (not distinguishable) | failed."""

    status: str
    versus: str | None = None  # the config it was compared with (the best at the time)
    p_value: float | None = None  # Holm-adjusted, two-sided; None where no test was possible
    difference: float | None = None  # its mean minus the best's over the blocks below
    seeds: int = 0  # seeds the verdict rests on
    images: int = 0  # images per seed (1 = seed means only)
    round: int | None = None  # 0-based seed round at which it was dropped or failed

    @property
    def blocks(self) -> int:
        return self.seeds * self.images


@dataclass
class RaceState:
    """Where the race stands after the rounds the results allow."""

    alive: list[str]  # configs still in the race, in the given order
    verdicts: dict[str, Verdict]
    rounds_done: int  # seed rounds finished by every config in the race at that round
    looks: int  # rounds at which a test can happen (alpha is split over them)
    level: float  # alpha / looks: each look's level
    images: int  # blocks per seed
    finished: bool = False  # every round run, or one config left: the verdicts are final

    @property
    def next_round(self) -> int | None:
        """The 0-based seed round to train next (None when the race is over)."""
        return None if self.finished else self.rounds_done


def _images(scores: Mapping[str, Mapping[int, Sequence[float]]], seeds: Sequence[int]) -> int:
    """Blocks per seed: the images, when every run scored the same number of them; else 1 (seed means)."""
    lengths = {len(v) for by_seed in scores.values() for s, v in by_seed.items() if s in seeds}
    return lengths.pop() if len(lengths) == 1 else 1


def _block(values: Sequence[float], images: int) -> list[float]:
    return [float(v) for v in values] if images > 1 else [float(np.mean(values))]


def race(scores: Mapping[str, Mapping[int, Sequence[float]]], configs: Sequence[str], seeds: Sequence[int],
         lower_is_better: bool, alpha: float = 0.05, first_test: int = 5,
         failed: Mapping[str, int] | None = None) -> RaceState:
    """Replay the race over ``seeds`` (in order) on the results there are.

    Args:
        scores: config -> seed -> the run's scores on the primary objective, one per validation image in a
            fixed order (or a single mean); a missing seed is a run not finished yet.
        configs: the configs in the race, in report order (ties for best go to the earlier one).
        failed: config -> the seed whose run failed by itself (diverged): the config leaves the race there.
    """
    failed = dict(failed or {})
    images = _images(scores, seeds)
    # A test needs two seeds and first_test blocks; the race looks once per such round.
    looks = sum(1 for r in range(len(seeds)) if r + 1 >= 2 and (r + 1) * images >= first_test)
    level = alpha / max(1, looks)
    sign = 1.0 if lower_is_better else -1.0
    alive, verdicts = list(configs), {}
    state = RaceState(alive, verdicts, 0, looks, level, images)
    for r, seed in enumerate(seeds):
        for c in list(alive):
            if failed.get(c) == seed:
                alive.remove(c)
                verdicts[c] = Verdict(FAILED, seeds=r, images=images, round=r)
        if any(seed not in scores.get(c, {}) for c in alive):
            return state
        state.rounds_done = r + 1
        if len(alive) < 2 or r + 1 < 2 or (r + 1) * images < first_test:
            continue
        x = np.array([[_block(scores[c][s], images) for s in seeds[:r + 1]] for c in alive])
        means = sign * x.mean(axis=(1, 2))
        best = alive[int(np.argmin(means))]  # argmin takes the first of tied configs
        omnibus = blocked_anova(x).p_value
        if omnibus is None or omnibus >= level:
            continue
        others = [c for c in alive if c != best]
        pairs = [blocked_pair(x[alive.index(c)], x[alive.index(best)]) for c in others]
        adjusted = holm([1.0 if t.p_value is None else t.p_value for _, t in pairs])
        for c, (difference, _), p in zip(others, pairs, adjusted, strict=True):
            if p < level and sign * difference > 0:
                alive.remove(c)
                verdicts[c] = Verdict(WORSE, best, p, difference, r + 1, images, r)
        if len(alive) == 1 and len(verdicts) == len(configs) - 1 and any(v.status == WORSE for v in verdicts.values()):
            break  # the others are out: more seeds for the last one would answer nothing
    state.finished = True
    _final_verdicts(state, scores, seeds[:state.rounds_done], sign)
    return state


def _final_verdicts(state: RaceState, scores: Mapping[str, Mapping[int, Sequence[float]]], seeds: Sequence[int],
                    sign: float) -> None:
    """The survivors: the best by mean over the common blocks, the rest not distinguishable from it."""
    alive, images = state.alive, state.images
    if not alive or not seeds:
        return
    x = np.array([[_block(scores[c][s], images) for s in seeds] for c in alive])
    best = alive[int(np.argmin(sign * x.mean(axis=(1, 2))))]
    state.verdicts[best] = Verdict(BEST, seeds=len(seeds), images=images)
    others = [c for c in alive if c != best]
    pairs = [blocked_pair(x[alive.index(c)], x[alive.index(best)]) for c in others]
    defined = [t.p_value for _, t in pairs]
    adjusted = holm([1.0 if p is None else p for p in defined])
    for c, (difference, _), p, raw in zip(others, pairs, adjusted, defined, strict=True):
        state.verdicts[c] = Verdict(OPEN, best, None if raw is None else p, difference, len(seeds), images)


def scores_of(rows: Mapping[str, Sequence[Mapping]], primary: str) -> tuple[dict, dict, bool]:
    """The race's inputs from confirm's per-seed rows (`queue.per_seed`).

    Returns (config -> seed -> scores, config -> seed of its first failed run, whether every run had per-image
    scores). A run with per-image scores gives one block per image; a run without (the user's training
    reporting means only) gives its mean, and then every config is raced on seed means.
    """
    scores: dict[str, dict[int, list[float]]] = {}
    failed: dict[str, int] = {}
    per_image = True
    for key, config_rows in rows.items():
        for row in config_rows:
            seed = int(row["seed"])
            if "failed" in row:
                failed[key] = min(seed, failed.get(key, seed))
                continue
            values = (row.get("per_image") or {}).get(primary)
            per_image = per_image and bool(values)
            scores.setdefault(key, {})[seed] = [float(v) for v in values] if values else [float(row[primary])]
    if not per_image:
        scores = {k: {s: [float(np.mean(v))] for s, v in by_seed.items()} for k, by_seed in scores.items()}
    return scores, failed, per_image and bool(scores)


def rounds_to_queue(state: RaceState, n_seeds: int, first_test: int, any_results: bool) -> range:
    """The seed rounds the configs still in the race must train before the race can decide anything new.

    Rounds without a possible test go to the queue together (more processes can share them): the first two
    always (a test needs two seeds), then up to the first round with ``first_test`` blocks once the number of
    images is known.
    """
    if state.finished:
        return range(0)
    start = state.rounds_done
    if not any_results:
        return range(start, min(n_seeds, 2))
    first_look = max(1, -(-first_test // state.images) - 1)  # 0-based round with >= first_test blocks
    return range(start, min(n_seeds, max(start, first_look) + 1))
