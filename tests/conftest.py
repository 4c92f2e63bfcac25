"""Shared test set-up: one torch thread per xdist worker so two workers share two cores."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the spec tests run without torch
        pass
