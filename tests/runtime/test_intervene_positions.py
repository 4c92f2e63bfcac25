"""Positions over each sample's real tokens (right padding), as a `[B, S]` mask."""

import pytest
import torch

from expc.runtime.intervene.positions import select_positions
from expc.runtime.sample_error import SampleError
from expc.spec import ir

ATTENTION = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
SAMPLES = torch.tensor([7, 3, 5])


def chosen(positions, **kwargs):
    mask = select_positions(positions, attention_mask=ATTENTION, sample_index=SAMPLES, **kwargs)
    assert mask.dtype == torch.bool and mask.shape == ATTENTION.shape
    return [row.nonzero().flatten().tolist() for row in mask]


def test_all_first_last():
    assert chosen(ir.Positions(kind="all")) == [[0, 1, 2, 3, 4], [0, 1], [0, 1, 2]]
    assert chosen(ir.Positions(kind="first")) == [[0], [0], [0]]
    assert chosen(ir.Positions(kind="last")) == [[4], [1], [2]]


def test_list_counts_negative_indices_from_the_last_real_token():
    assert chosen(ir.Positions(kind="list", indices=(0, -1))) == [[0, 4], [0, 1], [0, 2]]
    assert chosen(ir.Positions(kind="list", indices=(-2,))) == [[3], [0], [1]]


@pytest.mark.parametrize(("indices", "sample"), [((2,), 3), ((-3,), 3), ((4,), 3), ((-5,), 3),
                                                 ((0, 3), 3)])
def test_list_index_a_sample_lacks_names_the_sample(indices, sample):
    with pytest.raises(SampleError) as excinfo:
        chosen(ir.Positions(kind="list", indices=indices))
    assert excinfo.value.sample == sample and excinfo.value.code == "intervention-positions"


def test_field_is_the_data_mask_field_within_real_tokens():
    field = torch.tensor([[0, 1, 0, 1, 1], [0, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert chosen(ir.Positions(kind="field", field="m"), field_mask=field) == \
        [[1, 3, 4], [1], [0]]
