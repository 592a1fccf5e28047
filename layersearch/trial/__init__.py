"""One short run and its scores: data, tasks, generators, metrics, training, scoring. Imports lossnet only."""
