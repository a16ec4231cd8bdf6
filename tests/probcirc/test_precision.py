"""The approximate matrix products of the torch path (backend.approximate)."""

import torch

from probcirc import backend


def test_bf16_products_on_the_cpu_stay_close_and_exact_wins():
    """Under approximate("bf16") the sum layers' CPU products keep about 1e-3 of float64; exact()
    inside gives torch's own float32 bytes, and torch's process-wide setting is restored after."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 64, 48, generator=gen), torch.rand(3, 48, 40, generator=gen)
    before = torch.get_float32_matmul_precision()
    with backend.approximate("bf16"):
        fast = backend.bmm(a, b)
        with backend.exact():
            plain = backend.bmm(a, b)
    assert torch.get_float32_matmul_precision() == before
    assert plain.numpy().tobytes() == torch.bmm(a, b).numpy().tobytes()
    reference = torch.bmm(a.double(), b.double())
    assert float(((fast.double() - reference) / reference).abs().max()) < 1e-2
