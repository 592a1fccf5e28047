"""A local worker process of a sweep: ``python -m layersearch.search.loop`` (`launch.WORKER_COMMAND`)."""

import sys

from .launch import worker_main

sys.exit(worker_main())
