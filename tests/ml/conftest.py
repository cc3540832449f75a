"""Settings for the ml tests (which need no Django settings and no database)."""

from __future__ import annotations

import torch

# The CI machines and dev boxes are small and shared: one intra-op thread avoids OpenMP threads
# spinning against other processes, which made the training tests several times slower.
torch.set_num_threads(1)
