#!/usr/bin/env bash
# The environment benchmarks/gpu.sh runs in, from a fresh clone too: the Makefile's own `make .venv/.installed`.
# PYTHON (default python3) makes the venv. If it already has torch (a GPU machine's image: no second torch to
# download), the venv uses that one: --system-site-packages, and a .pth naming PYTHON's own site folders, which
# a venv made from a python that is itself a venv (/opt/torch/.venv, say) would not see otherwise.
# PIP_ARGS="--no-index --find-links .whl" installs the other packages from wheels, without a package index;
# EXTRAS= leaves out the dev tools (ruff, import-linter, psycopg, submitit): fewer wheels to carry there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]] && "$PYTHON" -c "import torch" 2>/dev/null; then
  venv_args=--system-site-packages
  # Its own pip serves too, through the .pth below: no ensurepip needed, which some images leave out.
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then venv_args="$venv_args --without-pip"; fi
  make .venv/bin/python PYTHON="$PYTHON" VENV_ARGS="$venv_args"
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$PYTHON" -c 'import site; print("\n".join([*site.getsitepackages(), site.getusersitepackages()]))' \
    >"$site/_machine_packages.pth"
fi
make .venv/.installed PYTHON="$PYTHON" PIP_ARGS="${PIP_ARGS:-}" EXTRAS="${EXTRAS-dev}"
