"""Collating sample dicts into batches that leave a DataLoader worker as one shared-memory block.

torch's default collate gives every field of a batch its own tensor. A DataLoader worker puts each
into its own shared-memory block, and the main process fetches each block's file descriptor in a
round trip with that worker (torch's default `file_descriptor` sharing strategy): with the twenty
array fields of a sample, those round trips, not decoding, bounded the training loader. Here every
numeric numpy field is stacked straight into one byte buffer (allocated in shared memory inside a
worker) and the batch holds typed views of it: a batch crosses as one block, as a batch of bare
images would. Values, dtypes, shapes and key order equal `default_collate`'s (other fields: strings,
nested dicts, tensors, numbers, go through it); the batch is a plain dict.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import default_collate

__all__ = ["collate_samples"]

_ALIGN = 64  # bytes; every field starts at a multiple of this in the buffer


def _unpack(order: tuple[str, ...], plain: dict, buffer: torch.Tensor, layout: dict) -> dict:
    """The batch dict: `layout[key] = (byte offset, torch dtype, shape)` of each packed field."""
    views = {}
    for key, (start, dtype, shape) in layout.items():
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        views[key] = buffer[start : start + nbytes].view(dtype).view(shape)
    return {key: views[key] if key in views else plain[key] for key in order}


class _PackedBatch(dict):
    """A batch dict whose packed fields are views of one byte buffer; pickles (to the main
    process) as the buffer and the layout, and unpickles as a plain dict of views."""

    def __init__(self, parts: tuple):
        super().__init__(_unpack(*parts))
        self._parts = parts

    def __reduce__(self):
        return _unpack, self._parts


def collate_samples(samples: list) -> dict:
    """`default_collate` for a list of sample dicts, with every numeric numpy array field stacked
    into one buffer (shared memory inside a worker) that the batch's tensors view."""
    elem = samples[0]
    if not isinstance(elem, Mapping):
        return default_collate(samples)
    fields = [k for k, v in elem.items() if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"]
    if not fields:
        return default_collate(samples)
    plain = default_collate([{k: v for k, v in s.items() if k not in fields} for s in samples]) if len(fields) < len(elem) else {}
    layout, size = {}, 0
    for key in fields:
        shape = (len(samples), *elem[key].shape)
        layout[key] = (size, torch.from_numpy(np.empty(0, elem[key].dtype)).dtype, shape)
        size += math.ceil(math.prod(shape) * elem[key].itemsize / _ALIGN) * _ALIGN
    in_worker = torch.utils.data.get_worker_info() is not None
    # in a worker the buffer is made in shared memory (as default_collate does), not copied there
    storage = torch.UntypedStorage._new_shared(size) if in_worker else torch.UntypedStorage(size)
    buffer = torch.empty(0, dtype=torch.uint8).set_(storage)
    parts = (tuple(elem), plain, buffer, layout)
    batch = _PackedBatch(parts) if in_worker else _unpack(*parts)
    for key in fields:
        np.stack([s[key] for s in samples], out=batch[key].numpy())
    return batch
