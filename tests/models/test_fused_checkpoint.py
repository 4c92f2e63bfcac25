"""`CheckpointPart`, the one description of a parameter read from a fused or transposed
checkpoint tensor: the loader's cut and `expc prune`'s inverse agree for every layout."""

import numpy as np
import torch

from expc.models.fused_checkpoint import consecutive, fused_part, interleaved, whole
from expc.models.loading import take_part

HEADS, D, H = 3, 2, 5


def test_interleaved_parts_are_each_heads_rows_and_cutting_keeps_the_layout():
    """GPT-NeoX's `[head, (q | k | v), d]`: keeping heads 0 and 2 of every part gives the
    fused tensor of a 2-head model with the same layout."""
    stored = torch.randn(HEADS * 3 * D, H)
    parts = interleaved(HEADS, {"q": D, "k": D, "v": D})
    blocks = stored.unflatten(0, (HEADS, 3, D))
    for which, name in enumerate("qkv"):
        torch.testing.assert_close(take_part(fused_part(parts, name, other_dims=(H,)), stored),
                                   blocks[:, which].flatten(0, 1))
    kept_rows = np.array([0, 1, 4, 5])  # heads 0 and 2 of each part
    entries = np.unique(np.concatenate([
        fused_part(parts, n, other_dims=(H,)).stored_entries(0, kept_rows) for n in "qkv"]))
    torch.testing.assert_close(stored[torch.from_numpy(entries)], blocks[[0, 2]].flatten(0, 2))


def test_consecutive_rows_are_views_and_transposed_parts_map_dimensions():
    stored = torch.randn(3 * H, 4)
    part = fused_part(consecutive({"q": H, "k": H, "v": H}), "k", other_dims=(4,))
    assert take_part(part, stored).data_ptr() == stored[H].data_ptr()  # a view, no copy
    conv = fused_part(consecutive({"q": H, "k": H, "v": H}), "v", other_dims=(4,), dim=1,
                      transposed=True)  # GPT-2's c_attn [in, 3 * out]
    torch.testing.assert_close(take_part(conv, stored.T), stored[2 * H:])
    assert conv.stored_dim(0) == 1 and conv.stored_dim(1) == 0
    assert conv.stored_entries(0, np.array([1])).tolist() == [2 * H + 1]
    assert whole((4, 6), transposed=True).stored_entries(1, np.array([3])).tolist() == [3]
    assert whole((4, 6), transposed=True).stored_shape == (6, 4)
    assert take_part(part, stored, dtype=torch.bfloat16).dtype == torch.bfloat16
