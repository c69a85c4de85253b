"""Test settings: offline hub, the package's methods registered, shared inputs."""

import os

# A hub miss must fail at once instead of retrying for ~45 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

import peft_interp  # noqa: F401  (registers the methods)

# Tiny models: one thread is faster than two fighting over 2 shared cores (8x on this machine).
torch.set_num_threads(1)
from tests.tiny_models import IMAGE_SIZE

@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.tensor([0, 1, 2, 1])
