"""A MoCo-style memory queue of L2-normalised keys with optional aligned per-entry fields.

One class serves every method [style_exemplars "What to absorb" 4]: MLSSCL keeps three instances
(one per view, [spec 2.2, assumption]); PCL-3d's position-aware queue stores ``(key, position)`` per
entry so that positives against the queue can be found with ``|p_i - p_queue| < theta'`` [spec 3.3].
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Field(NamedTuple):
    """Per-entry shape and dtype of an aligned queue field.

    ``Field()`` is one float32 scalar per entry (e.g. a PCL position); ``Field((3,))`` a 3-vector
    (e.g. multi-axis positions); ``Field(dtype=torch.long)`` an integer id (e.g. a case index, to
    mask the query's own subject out of the negatives).
    """

    shape: tuple[int, ...] = ()
    dtype: torch.dtype = torch.float32


class MemoryQueue(nn.Module):
    """First-in-first-out queue of ``size`` keys of width ``dim``, plus aligned fields.

    All state lives in persistent buffers, so ``state_dict`` / ``load_state_dict`` (resume) restore
    it and ``.to(device)`` moves it:

    - ``keys``: (size, dim) float32, L2-normalised rows;
    - one buffer per field, named after it: (size, *field.shape);
    - ``pointer``: () long, the row the next entry goes to;
    - ``num_filled``: () long, how many rows hold real entries (``size`` once full).

    Use it as MoCo does: read ``contents()`` *before* ``enqueue`` so that a batch is never its own
    negative, and enqueue the (stop-grad) target keys after computing the loss::

        queue = MemoryQueue(4096, 128, position=torch.float32)
        negatives, fields = queue.contents()        # (K, 128), {"position": (K,)}, K <= 4096
        loss = loss_fn(q, k, negatives if len(negatives) else None)
        queue.enqueue(k, position=p)

    The queue is empty (K = 0) until the first ``enqueue``; the caller decides what to do then
    (e.g. in-batch negatives for that step).

    Under DDP every rank must hold the same queue: the caller gathers keys and fields from all ranks
    (e.g. ``torch.distributed.all_gather``) and enqueues the gathered batch on every rank. The queue
    itself does no communication. If the queue sits inside a DDP-wrapped module, DDP's default
    ``broadcast_buffers=True`` re-sends it from rank 0 at every forward: harmless when the ranks
    agree, but keep queues outside the wrapped module (or turn that off) to save the traffic.

    Args:
        size: number of entries K. MLSSCL: 4096 per view [assumption, spec 2.5: K <= ~0.7 x the
            number of training scans, so that a subject's own older keys rarely act as negatives].
        dim: key width. MLSSCL: 128 [assumption, spec 2.2: MoCo v2 projector output].
        **fields: aligned per-entry fields by name: a ``Field`` or, for a scalar per entry, just its
            dtype (``position=torch.float32``).
    """

    _reserved = frozenset({"keys", "pointer", "num_filled", "size", "dim", "field_specs"})

    def __init__(self, size: int, dim: int, **fields: Field | torch.dtype):
        super().__init__()
        for name, value in (("size", size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.size = size
        self.dim = dim
        self.field_specs: dict[str, Field] = {}
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_filled", torch.zeros((), dtype=torch.long))
        for name, spec in fields.items():
            spec = _as_field(name, spec)
            if name in self._reserved or hasattr(self, name):
                raise ValueError(f"field name {name!r} is reserved or clashes with an nn.Module attribute")
            self.field_specs[name] = spec
            self.register_buffer(name, torch.zeros((size, *spec.shape), dtype=spec.dtype))

    @property
    def is_full(self) -> bool:
        """Whether every row holds a real entry (synchronises with the device)."""
        return int(self.num_filled) == self.size

    def contents(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The valid entries: ``(keys (K, dim), {field: (K, *shape)})`` with K = ``num_filled``.

        While the queue is not yet full only the filled rows are returned. Rows come in buffer
        order, not age order (the loss does not care). The tensors are copies, so a later
        ``enqueue`` cannot modify tensors saved for backward.
        """
        n = int(self.num_filled)
        return self.keys[:n].clone(), {name: getattr(self, name)[:n].clone() for name in self.field_specs}

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, **fields: torch.Tensor) -> None:
        """Append a batch, overwriting the oldest entries; stores detached, L2-normalised keys.

        Equivalent to enqueueing the B rows one by one: any B works (it need not divide ``size``;
        writes wrap around), and a batch larger than the queue leaves only its last ``size`` rows.

        Args:
            keys: (B, dim); normalised here (so already-normalised keys are unchanged) and cast to
                float32.
            **fields: exactly the fields declared at construction, each (B, *shape), cast to the
                field's dtype.
        """
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (B, {self.dim}), got {tuple(keys.shape)}")
        if set(fields) != set(self.field_specs):
            raise ValueError(f"enqueue needs exactly the fields {sorted(self.field_specs)}, got {sorted(fields)}")
        b = keys.shape[0]
        for name, value in fields.items():
            expected = (b, *self.field_specs[name].shape)
            if tuple(value.shape) != expected:
                raise ValueError(f"field {name!r} must be {expected} to align with the keys, got {tuple(value.shape)}")
        if b == 0:
            return
        kept = min(b, self.size)
        device = self.keys.device
        # row of batch element i is (pointer + i) % size; only the last `kept` elements survive
        rows = (self.pointer + torch.arange(b - kept, b, device=device)) % self.size
        new_keys = F.normalize(keys[b - kept:].detach().to(device=device, dtype=self.keys.dtype), dim=1)
        self.keys.index_copy_(0, rows, new_keys)
        for name, value in fields.items():
            buffer = getattr(self, name)
            buffer.index_copy_(0, rows, value[b - kept:].detach().to(device=device, dtype=buffer.dtype))
        self.pointer.copy_((self.pointer + b) % self.size)
        self.num_filled.clamp_(max=self.size - b).add_(b)  # min(num_filled + b, size) without a sync

    def extra_repr(self) -> str:
        fields = "".join(f", {name}={spec.shape}:{spec.dtype}" for name, spec in self.field_specs.items())
        return f"size={self.size}, dim={self.dim}{fields}"


def _as_field(name: str, spec: Field | torch.dtype) -> Field:
    if isinstance(spec, torch.dtype):
        return Field((), spec)
    if isinstance(spec, Field) and isinstance(spec.dtype, torch.dtype) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in spec.shape):
        return Field(tuple(spec.shape), spec.dtype)
    raise ValueError(f"field {name!r} must be a torch.dtype (one scalar per entry) or a "
                     f"Field(shape, dtype) with positive int sizes, got {spec!r}")
