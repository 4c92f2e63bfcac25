"""How close our captures must be to Hugging Face's, per dtype, both models in that dtype.

float32: 1e-5 absolute, as every parity test here (the same math, summed in other orders).

bfloat16, like for like (both models hold the same bfloat16 weights and compute in
bfloat16): the two differ wherever their kernels round differently — PyTorch's fused
attention against Hugging Face's eager softmax, fused against split projections, the
order of a sum — and each such rounding is as large as bfloat16's own rounding error. So
the tolerance at a site is what bfloat16 does to Hugging Face itself there: if ours were
exactly as accurate as theirs, |ours - theirs| <= |ours - exact| + |theirs - exact| is at
most twice Hugging Face's own error against its float32 forward (`exact`, same inputs),
floored at two bfloat16 steps of the site's largest value (a site bfloat16 barely moves).
A mapping bug (a wrong weight, head order or rotary) errs at the scale of the values
themselves, far above that; a mixture of experts whose rounding flips one token's choice
of expert moves that token by as much in Hugging Face's own bfloat16 forward, so the same
bound holds there.
"""

from __future__ import annotations

import torch

FP32_ATOL = 1e-5
BF16_STEP = torch.finfo(torch.bfloat16).eps  # 2**-7: the spacing of bfloat16 numbers at 1


def assert_site_close(mine: torch.Tensor, theirs: torch.Tensor, exact: torch.Tensor | None,
                      label: str) -> None:
    """`mine` against `theirs` (same dtype); `exact` is Hugging Face's float32 value of a
    bfloat16 comparison (None for float32)."""
    assert mine.dtype == theirs.dtype, (label, mine.dtype, theirs.dtype)
    if exact is None:
        torch.testing.assert_close(mine, theirs, atol=FP32_ATOL, rtol=0, msg=label)
        return
    theirs32 = theirs.float()
    their_error = (theirs32 - exact).abs().max().item()
    tolerance = max(2 * their_error, 2 * BF16_STEP * theirs32.abs().max().item())
    gap = (mine.float() - theirs32).abs().max().item()
    assert gap <= tolerance, f"{label}: |ours - theirs| = {gap:.3g} > {tolerance:.3g} " \
        f"(Hugging Face's own bfloat16 error {their_error:.3g})"
