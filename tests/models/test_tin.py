"""TIN's shift op in PyTorch (mmcv's compiled ``tin_shift`` is absent from CPU builds)."""
from __future__ import annotations

import pytest
import torch

from omnisource.models.tin import linear_sampler, tin_shift


def _kernel_loop(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """mmcv's CUDA kernel, transcribed loop by loop: ``out[t + s] = in[t]`` inside the clip."""
    n, t, c, hw = x.shape
    gc = c // shift.shape[1]
    out = torch.zeros_like(x)
    for b in range(n):
        for j in range(c):
            s = int(shift[b, j // gc])
            for i in range(t):
                if 0 <= i + s < t:
                    out[b, i + s, j] = x[b, i, j]
    return out


def test_hand_computed_shift():
    x = torch.arange(1.0, 5.0).view(1, 4, 1, 1).repeat(1, 1, 2, 1)   # frames 1..4, two channels
    out = tin_shift(x, torch.tensor([[1, -2]], dtype=torch.int32))
    assert out[0, :, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]          # group 0: one frame later
    assert out[0, :, 1, 0].tolist() == [3.0, 4.0, 0.0, 0.0]          # group 1: two frames earlier
    assert torch.equal(tin_shift(x, torch.zeros(1, 2, dtype=torch.int32)), x)
    assert not tin_shift(x, torch.tensor([[4, -4]])).any()           # shifted out of the clip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_kernel_loop(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 6, 8, 5, generator=g)
    shift = torch.randint(-7, 8, (3, 4), generator=g, dtype=torch.int32)
    assert torch.equal(tin_shift(x, shift), _kernel_loop(x, shift))


def test_backward_moves_gradients_back_and_gradcheck():
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    shift = torch.tensor([[1, -1], [2, 0]], dtype=torch.int32)
    assert torch.autograd.gradcheck(lambda t: tin_shift(t, shift), (x,))
    grad = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    (gx,) = torch.autograd.grad(tin_shift(x, shift), x, grad)
    assert torch.equal(gx, _kernel_loop(grad, -shift))   # the kernel's backward: shift by -s


def test_linear_sampler_interpolates_and_is_differentiable_in_the_offset():
    x = torch.arange(1.0, 6.0, dtype=torch.float64).view(1, 5, 1, 1, 1).repeat(1, 1, 2, 1, 1)
    out = linear_sampler(x, torch.tensor([[0.25, -1.5]], dtype=torch.float64))
    # group 0: 0.75 * (no shift) + 0.25 * (one frame later)
    assert out[0, :, 0, 0, 0].tolist() == pytest.approx([0.75, 1.75, 2.75, 3.75, 4.75])
    # group 1: 0.5 * (two earlier) + 0.5 * (one earlier)
    assert out[0, :, 1, 0, 0].tolist() == pytest.approx([2.5, 3.5, 4.5, 2.5, 0.0])
    data = torch.randn(2, 4, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    off = torch.tensor([[0.3, -0.6], [1.2, 0.1]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_sampler, (data, off))
