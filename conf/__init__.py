# Makes conf/ importable as `layersearch.conf` once installed, so the config tree ships inside the wheel.
