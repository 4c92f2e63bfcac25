"""RowBlocks keeps appended rows exactly, across block boundaries and shape changes."""

import torch

from expc.runtime.aggregate.packing import RowBlocks, padded_cat


def test_rows_across_many_blocks_come_back_in_order():
    torch.manual_seed(0)
    batches = [torch.randn(b, 3) for b in (2, 5, 1, 4, 4, 3)]  # 12-byte rows
    store = RowBlocks(block_bytes=12 * 6)  # six rows a block: batches straddle the edges
    for rows in batches:
        store.append(rows)
    assert len(store) == 19
    assert torch.equal(store.packed(), torch.cat(batches))
    assert len(store) == 19 and torch.equal(store.packed(), torch.cat(batches))  # stable


def test_a_batch_larger_than_a_block_gets_a_block_of_its_own():
    store = RowBlocks(block_bytes=4)
    big = torch.arange(40.0).view(10, 4)
    store.append(big[:3])
    store.append(big[3:])
    assert torch.equal(store.packed(), big)


def test_changing_trailing_dims_are_zero_padded_like_padded_cat():
    chunks = [torch.ones(2, 3, 4), torch.full((1, 3, 6), 2.0), torch.full((2, 3, 4), 3.0)]
    store = RowBlocks()
    for chunk in chunks:
        store.append(chunk)
    assert torch.equal(store.packed(), padded_cat(chunks))


def test_appending_after_packing_and_replacing_keeps_every_row():
    store = RowBlocks(block_bytes=8)
    assert store.packed() is None and len(store) == 0
    store.append(torch.tensor([[1.0], [2.0]]))
    store.packed()
    store.append(torch.tensor([[3.0]]))
    assert store.packed().flatten().tolist() == [1.0, 2.0, 3.0]
    store.replace(torch.tensor([[9.0]]))
    store.append(torch.tensor([[8.0]]))
    assert store.packed().flatten().tolist() == [9.0, 8.0]
    store.replace(None)
    assert store.packed() is None and len(store) == 0


def test_the_unfilled_tail_of_a_block_is_never_part_of_the_result():
    store = RowBlocks(block_bytes=1024)
    store.append(torch.zeros(3, 2, dtype=torch.float64))
    assert store.packed().shape == (3, 2)
    store.append(torch.ones(1, 2))  # another dtype: a new block, joined as float64
    packed = store.packed()
    assert packed.shape == (4, 2) and packed[3].tolist() == [1.0, 1.0]
