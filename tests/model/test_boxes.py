import torch
from torch.testing import assert_close

from model.boxes import assign_targets, cell_centres, decode_boxes, encode_boxes, pad_boxes, split_grid


def random_boxes(n: int, size: float = 416.0) -> torch.Tensor:
    xy = torch.rand(n, 2) * (size - 40)
    wh = torch.rand(n, 2) * 30 + 4
    return torch.cat([xy, xy + wh], dim=1)


def test_encode_decode_round_trip():
    boxes = random_boxes(200)
    stride = 32
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    cells = (centre / stride).floor() + 0.5  # the responsible cell of each box
    deltas = encode_boxes(boxes, cells, stride)
    assert torch.isfinite(deltas).all()
    assert_close(decode_boxes(deltas, cells, stride), boxes, atol=1e-3, rtol=0)


def test_decode_follows_the_design_formula():
    deltas = torch.tensor([[0.3, -0.2, 0.5, -1.0]])
    i, j, s = 3, 5, 32
    box = decode_boxes(deltas, torch.tensor([[i + 0.5, j + 0.5]]), s)[0]
    xc = s * (torch.tanh(torch.tensor(0.3)) + i + 0.5)
    yc = s * (torch.tanh(torch.tensor(-0.2)) + j + 0.5)
    w, h = s * torch.exp(torch.tensor(0.5)), s * torch.exp(torch.tensor(-1.0))
    assert_close(box, torch.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2]))


def test_cell_centres_are_row_major():
    centres = cell_centres(2, 3)
    assert centres.tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5]]


def test_assign_puts_each_box_in_the_cell_holding_its_centre():
    boxes = torch.tensor([[40.0, 70.0, 60.0, 90.0]])  # centre (50, 80) -> column 1, row 2 at stride 32
    targets = assign_targets(*pad_boxes([boxes], [torch.tensor([7])]), 4, 4, 32, neighbours=False)
    assert targets.positive.sum() == 1
    index = 2 * 4 + 1
    assert targets.positive[0, index]
    assert targets.labels[0, index] == 7
    assert (targets.labels[0, torch.arange(16) != index] == -1).all()
    decoded = decode_boxes(targets.deltas[0, index], cell_centres(4, 4)[index], 32)
    assert_close(decoded, boxes[0], atol=1e-3, rtol=0)


def test_smaller_box_wins_a_shared_cell():
    big = torch.tensor([0.0, 0.0, 60.0, 60.0])  # centre (30, 30): cell 0
    small = torch.tensor([20.0, 20.0, 30.0, 30.0])  # centre (25, 25): cell 0
    for order in ([big, small], [small, big]):
        labels = torch.tensor([1, 2]) if order[0] is big else torch.tensor([2, 1])
        targets = assign_targets(*pad_boxes([torch.stack(order)], [labels]), 2, 2, 32)
        assert targets.labels[0, 0] == 2


def test_neighbours_are_the_two_nearest_cells_and_decode_to_the_box():
    # centre (50, 75) at stride 32: cell (1, 2), right of its cell's middle in x, above it in y
    boxes = torch.tensor([[[40.0, 65.0, 60.0, 85.0]]])
    targets = assign_targets(boxes, torch.tensor([[7]]), 4, 4, 32)
    cells = sorted(targets.positive[0].nonzero().flatten().tolist())
    assert cells == sorted([2 * 4 + 1, 2 * 4 + 2, 1 * 4 + 1])
    for index in cells:
        assert targets.labels[0, index] == 7
        decoded = decode_boxes(targets.deltas[0, index], cell_centres(4, 4)[index], 32)
        assert_close(decoded, boxes[0, 0], atol=1e-2, rtol=0)


def test_a_centre_claim_beats_a_smaller_neighbour_claim():
    big = torch.tensor([0.0, 0.0, 60.0, 60.0])  # centre (30, 30): cell 0
    small = torch.tensor([36.0, 2.0, 44.0, 10.0])  # centre (40, 6): cell 1, neighbour cell 0
    targets = assign_targets(*pad_boxes([torch.stack([small, big])], [torch.tensor([3, 9])]), 2, 2, 32)
    assert targets.labels[0, 0] == 9 and targets.labels[0, 1] == 3


def test_padding_and_boxes_outside_never_train():
    boxes = torch.tensor([[[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 9.0, 9.0]]])
    targets = assign_targets(boxes, torch.tensor([[2, 4, -1]]), 2, 2, 32)
    assert set(targets.labels[targets.positive].tolist()) == {2}


def test_assign_handles_images_without_objects():
    padded = pad_boxes(
        [torch.zeros(0, 4), random_boxes(3, 64)], [torch.zeros(0, dtype=torch.long), torch.tensor([0, 1, 2])]
    )
    targets = assign_targets(*padded, 2, 2, 32)
    assert not targets.positive[0].any()
    assert targets.positive[1].sum() >= 1
    assert torch.isfinite(targets.deltas).all()


def test_split_grid_shapes():
    raw = torch.randn(2, 25, 3, 4)
    out = split_grid(raw, 32)
    assert out.boxes_xyxy.shape == (2, 12, 4)
    assert out.objectness.shape == (2, 12)
    assert out.class_logits.shape == (2, 12, 20)
    assert_close(out.objectness[1, 5], raw[1, 4, 1, 1])  # cell 5 = row 1, column 1
