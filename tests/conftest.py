"""The ``device`` fixture: a test that takes it runs on the CPU and, where torch sees one, on CUDA."""

import pytest
import torch

CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="torch sees no CUDA device")])


@pytest.fixture(params=["cpu", CUDA])
def device(request) -> str:
    return request.param
