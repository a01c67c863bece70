"""Shared test setup: one torch thread (tiny ops run faster, and the CI machine is shared)."""

import torch

torch.set_num_threads(1)
