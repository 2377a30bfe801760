"""Deterministic global batch plans, split across ranks.

Why a plan instead of a shuffling DataLoader: the batch composition of epoch ``e`` must be the
same whether training ran straight through or was resumed, and every rank must agree on the
global batch (the loss sees all of it). So the order is a pure function of (seed, epoch), and
rank ``r`` of ``W`` takes rows ``[r·B/W, (r+1)·B/W)`` of each global batch.
"""

from __future__ import annotations

import numpy as np


def epoch_order(n_items: int, seed: int, epoch: int) -> np.ndarray:
    """Permutation of ``range(n_items)`` for one epoch, from (seed, epoch) only."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n_items)


def global_batches(
    n_items: int, global_batch: int, seed: int, epoch: int, *, drop_last: bool = True
) -> list[np.ndarray]:
    """The epoch's global batches (index arrays into the item list)."""
    if global_batch <= 0:
        raise ValueError("global batch size must be positive")
    order = epoch_order(n_items, seed, epoch)
    n_full = n_items // global_batch
    batches = [order[i * global_batch:(i + 1) * global_batch] for i in range(n_full)]
    if not drop_last and n_items % global_batch:
        batches.append(order[n_full * global_batch:])
    return batches


def steps_per_epoch(n_items: int, global_batch: int, *, drop_last: bool = True) -> int:
    """Number of optimiser steps in one epoch."""
    if drop_last:
        return n_items // global_batch
    return -(-n_items // global_batch)


def rank_slice(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's equal share of a global batch (the global size must divide evenly)."""
    if len(batch) % world_size:
        raise ValueError(
            f"global batch of {len(batch)} does not split evenly over {world_size} ranks"
        )
    per_rank = len(batch) // world_size
    return batch[rank * per_rank:(rank + 1) * per_rank]
