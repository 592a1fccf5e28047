"""A command trial in two lines of layersearch: `trial_from_env`, then `report` (no real training).

The made-up quality is the one tests/user_trainings.py computes: deeper layers score worse.
"""

import layersearch

t = layersearch.trial_from_env()
depth = sum(int(name[4]) for name in t.layer_config["content_layers"])
final = 0.1 + 0.01 * depth + 0.001 * t.seed
for step in range(2, t.steps + 1, 2):
    t.report(step, quality=final * (1 + 1 / step))
t.final(quality=final)
