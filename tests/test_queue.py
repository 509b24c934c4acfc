"""MemoryQueue against a one-entry-at-a-time FIFO reference, plus state, alignment and validation."""
import io

import pytest
import torch
import torch.nn.functional as F

from nnunet_ssl.blocks.queue import Field, MemoryQueue


class ReferenceQueue:
    """The queue's definition, one entry at a time: entry i goes to row (pointer + i) % size."""

    def __init__(self, size):
        self.size, self.pointer, self.rows = size, 0, [None] * size

    def enqueue(self, entries):
        for entry in entries:
            self.rows[self.pointer] = entry
            self.pointer = (self.pointer + 1) % self.size

    def filled(self):
        return [row for row in self.rows if row is not None]


def batch(b, dim, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, dim, generator=g), torch.rand(b, generator=g)


def assert_matches_reference(queue, reference):
    keys, fields = queue.contents()
    expected = reference.filled()
    assert keys.shape == (len(expected), queue.dim)
    assert int(queue.num_filled) == len(expected)
    assert int(queue.pointer) == reference.pointer
    for row, (key, position) in enumerate(expected):
        assert torch.allclose(keys[row], F.normalize(key, dim=0), atol=1e-6)
        assert fields["position"][row].item() == position.item()


def test_empty_queue_has_no_contents():
    queue = MemoryQueue(8, 4, position=torch.float32)
    keys, fields = queue.contents()
    assert keys.shape == (0, 4) and fields["position"].shape == (0,)
    assert not queue.is_full and int(queue.pointer) == 0


def test_contents_before_full_are_only_the_filled_rows():
    queue = MemoryQueue(10, 3, position=torch.float32)
    k1, p1 = batch(4, 3, 0)
    queue.enqueue(k1, position=p1)
    keys, fields = queue.contents()
    assert keys.shape == (4, 3)
    assert torch.allclose(keys, F.normalize(k1, dim=1))
    assert torch.equal(fields["position"], p1)
    k2, p2 = batch(3, 3, 1)
    queue.enqueue(k2, position=p2)
    keys, fields = queue.contents()
    assert keys.shape == (7, 3) and not queue.is_full
    assert torch.allclose(keys, F.normalize(torch.cat([k1, k2]), dim=1))
    assert torch.equal(fields["position"], torch.cat([p1, p2]))


@pytest.mark.parametrize("size,batch_sizes", [
    (8, [3, 3, 3, 3, 3]),  # B does not divide K
    (10, [4, 4, 4, 4]),
    (7, [1, 2, 3, 4, 5, 6, 7, 8]),  # mixed, including B = K and B > K
    (5, [12]),  # one batch larger than the queue
    (5, [2, 12, 3]),
    (6, [6, 6, 0, 6]),  # B = K, and an empty batch is a no-op
])
def test_matches_one_at_a_time_fifo_reference(size, batch_sizes):
    queue, reference = MemoryQueue(size, 4, position=torch.float32), ReferenceQueue(size)
    for step, b in enumerate(batch_sizes):
        keys, positions = batch(b, 4, step)
        queue.enqueue(keys, position=positions)
        reference.enqueue(list(zip(keys, positions)))
        assert_matches_reference(queue, reference)
    assert queue.is_full == (sum(batch_sizes) >= size)


def test_batch_larger_than_queue_keeps_its_last_entries():
    queue = MemoryQueue(4, 2, position=torch.float32)
    keys = torch.tensor([[float(i), 1.0] for i in range(1, 11)])
    queue.enqueue(keys, position=torch.arange(1, 11).float())
    stored, fields = queue.contents()
    assert queue.is_full and int(queue.num_filled) == 4
    assert sorted(fields["position"].tolist()) == [7.0, 8.0, 9.0, 10.0]
    assert int(queue.pointer) == 10 % 4
    for key, position in zip(stored, fields["position"]):  # still aligned
        assert torch.allclose(key, F.normalize(torch.tensor([position.item(), 1.0]), dim=0))


def test_fields_stay_aligned_after_many_wraps():
    size, dim = 11, 5
    queue = MemoryQueue(size, dim, case=torch.long, position=Field(), centre=Field((3,)))
    normalised = {}
    next_id = 0
    for step, b in enumerate([4, 7, 3, 9, 5, 13, 2, 6]):
        keys = torch.randn(b, dim, generator=torch.Generator().manual_seed(step))
        ids = torch.arange(next_id, next_id + b)
        next_id += b
        for i, key in zip(ids.tolist(), keys):
            normalised[i] = F.normalize(key, dim=0)
        queue.enqueue(keys, case=ids, position=ids.float() / 100, centre=ids[:, None].float().repeat(1, 3) * 2)
        stored, fields = queue.contents()
        assert fields["case"].dtype == torch.long and fields["centre"].shape == (len(stored), 3)
        for row in range(len(stored)):
            i = fields["case"][row].item()
            assert torch.allclose(stored[row], normalised[i], atol=1e-6)
            assert fields["position"][row].item() == pytest.approx(i / 100)
            assert fields["centre"][row].tolist() == [2.0 * i] * 3
        # the survivors are exactly the newest min(size, seen) ids
        assert sorted(fields["case"].tolist()) == list(range(max(0, next_id - size), next_id))


def test_state_dict_round_trip_restores_keys_fields_and_pointer():
    queue = MemoryQueue(9, 4, position=torch.float32, case=torch.long)
    for step, b in enumerate([5, 7]):  # wrapped once: pointer 3, full
        keys, positions = batch(b, 4, step)
        queue.enqueue(keys, position=positions, case=torch.arange(b) + 10 * step)
    state = queue.state_dict()
    assert set(state) == {"keys", "pointer", "num_filled", "position", "case"}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = MemoryQueue(9, 4, position=torch.float32, case=torch.long)
    restored.load_state_dict(torch.load(buffer))
    assert int(restored.pointer) == int(queue.pointer) == 3
    assert int(restored.num_filled) == int(queue.num_filled) == 9
    (keys_a, fields_a), (keys_b, fields_b) = queue.contents(), restored.contents()
    assert torch.equal(keys_a, keys_b) and all(torch.equal(fields_a[n], fields_b[n]) for n in fields_a)
    # and both continue identically
    keys, positions = batch(4, 4, 99)
    for q in (queue, restored):
        q.enqueue(keys, position=positions, case=torch.arange(4))
    assert torch.equal(queue.keys, restored.keys) and torch.equal(queue.position, restored.position)
    assert int(queue.pointer) == int(restored.pointer) == 7


def test_partially_filled_state_round_trip():
    queue = MemoryQueue(6, 2)
    queue.enqueue(torch.randn(4, 2))
    restored = MemoryQueue(6, 2)
    restored.load_state_dict(queue.state_dict())
    assert restored.contents()[0].shape == (4, 2) and int(restored.pointer) == 4


def test_keys_are_stored_detached_normalised_and_copied():
    queue = MemoryQueue(8, 3)
    keys = (torch.randn(5, 3, generator=torch.Generator().manual_seed(0)) * 7).requires_grad_()
    queue.enqueue(keys * 2)  # a non-leaf with a graph
    stored, fields = queue.contents()
    assert fields == {}
    assert not stored.requires_grad and not queue.keys.requires_grad and stored.grad_fn is None
    assert torch.allclose(stored.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        keys.zero_()  # the queue holds its own copy
    assert torch.allclose(queue.contents()[0].norm(dim=1), torch.ones(5))


def test_already_normalised_keys_are_unchanged():
    keys = F.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), dim=1)
    queue = MemoryQueue(4, 6)
    queue.enqueue(keys)
    assert torch.allclose(queue.contents()[0], keys, atol=1e-7)


def test_inputs_are_cast_to_the_buffer_dtypes():
    queue = MemoryQueue(4, 3, position=torch.float32, case=torch.long)
    queue.enqueue(torch.randn(2, 3).to(torch.bfloat16), position=torch.rand(2, dtype=torch.float64),
                  case=torch.tensor([1, 2], dtype=torch.int32))
    keys, fields = queue.contents()
    assert keys.dtype == torch.float32 and fields["position"].dtype == torch.float32
    assert fields["case"].dtype == torch.long


def test_contents_are_copies_so_enqueue_after_the_loss_does_not_break_backward():
    queue = MemoryQueue(6, 4)
    queue.enqueue(torch.randn(6, 4))
    query = torch.randn(3, 4, requires_grad=True)
    negatives, _ = queue.contents()
    loss = (query @ negatives.T).logsumexp(dim=1).mean()
    queue.enqueue(torch.randn(3, 4))  # in-place write into the buffer between forward and backward
    loss.backward()
    assert query.grad is not None


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_moves_with_to_device(device):
    queue = MemoryQueue(5, 3, position=torch.float32).to(device)
    assert {b.device.type for b in queue.buffers()} == {device}
    queue.enqueue(torch.randn(7, 3), position=torch.rand(7))  # CPU inputs are moved to the queue
    keys, fields = queue.contents()
    assert keys.device.type == device and fields["position"].device.type == device
    assert int(queue.pointer) == 2 and queue.is_full


@pytest.mark.parametrize("size,dim", [(0, 4), (4, 0), (-1, 4), (4.0, 4), (True, 4)])
def test_invalid_sizes_raise(size, dim):
    with pytest.raises(ValueError):
        MemoryQueue(size, dim)


@pytest.mark.parametrize("fields", [
    {"keys": torch.float32}, {"pointer": torch.long}, {"training": torch.float32}, {"forward": torch.float32},
    {"position": 1}, {"position": "float"}, {"position": Field((0,))}, {"position": Field((2,), "float")},
])
def test_invalid_fields_raise(fields):
    with pytest.raises(ValueError):
        MemoryQueue(4, 2, **fields)


def test_misaligned_or_missing_fields_raise():
    queue = MemoryQueue(4, 2, position=torch.float32)
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(3, 2))  # missing field
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(3, 2), position=torch.rand(3), case=torch.ones(3))  # unknown field
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(3, 2), position=torch.rand(2))  # not aligned
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(3, 2), position=torch.rand(3, 1))  # wrong per-entry shape
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(3, 5), position=torch.rand(3))  # wrong key width
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(3), position=torch.rand(3))  # not 2D
    assert int(queue.num_filled) == 0  # nothing was written


def test_repr_names_the_fields():
    text = repr(MemoryQueue(16, 8, position=torch.float32, centre=Field((3,))))
    assert "size=16" in text and "dim=8" in text and "position" in text and "centre=(3,)" in text
