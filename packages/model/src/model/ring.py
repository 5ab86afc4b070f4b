"""Distributed communication primitives with autograd (used by the losses, §3.3).

* ``Comm``: the process group (or a single process) with rank / world size / peer lookup.
* ``ring_exchange``: one ring step — send a tensor to rank + 1 and receive one from rank − 1 (and,
  optionally, at the same time a second tensor to rank − 1 / from rank + 1, the bidirectional ring).
  Backward sends the gradient of each received tensor back to the rank it came from, so gradients
  reach their owner. Every rank must call it with tensors of the same shape.
* ``all_gather_with_grad``: all-gather of equal-shape tensors; backward sums every rank's gradient of
  the gathered copy and returns this rank's slice (the oracle path).
* ``all_reduce_value``: the globally summed value of a local scalar whose gradient path stays local.

All ranks must run the same sequence of these calls (forward and backward) — they are collectives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

_TAG_FWD, _TAG_BWD = 7101, 7102


@dataclass(frozen=True)
class Comm:
    """A process group view; ``group=None`` → the default group if initialised, else one process."""

    group: object | None
    rank: int
    world_size: int

    @classmethod
    def of(cls, group: object | None = None) -> Comm:
        if group is None and not (dist.is_available() and dist.is_initialized()):
            return cls(None, 0, 1)
        group = group if group is not None else dist.group.WORLD
        rank = dist.get_rank(group)
        if rank < 0:
            raise ValueError("this process is not a member of the given process group")
        return cls(group, rank, dist.get_world_size(group))

    def global_rank(self, group_rank: int) -> int:
        """Global rank (what send/recv take) of a rank in this group."""
        return dist.get_global_rank(self.group, group_rank % self.world_size)

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Plain all-gather (no autograd) of equal-shape tensors → [W, *t.shape]."""
        if self.world_size == 1:
            return t.unsqueeze(0)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t.contiguous(), group=self.group)
        return torch.stack(out)

    def all_reduce(self, t: torch.Tensor, op: object = None) -> torch.Tensor:
        """All-reduce (SUM by default, no autograd) into a new tensor."""
        out = t.detach().clone()
        if self.world_size > 1:
            dist.all_reduce(out, op=op if op is not None else dist.ReduceOp.SUM, group=self.group)
        return out


def _p2p(comm: Comm, sends: list[tuple[torch.Tensor, int, int]], recvs: list[tuple[torch.Tensor, int, int]]):
    """Post sends/recvs (tensor, group-relative peer, tag) together and wait for all of them."""
    ops = [dist.P2POp(dist.isend, t, comm.global_rank(p), comm.group, tag) for t, p, tag in sends]
    ops += [dist.P2POp(dist.irecv, t, comm.global_rank(p), comm.group, tag) for t, p, tag in recvs]
    for work in dist.batch_isend_irecv(ops):
        work.wait()


class _RingExchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, comm: Comm, x_next: torch.Tensor, x_prev: torch.Tensor | None):
        ctx.comm, ctx.has_prev = comm, x_prev is not None
        x_next = x_next.contiguous()
        from_prev = torch.empty_like(x_next)
        sends, recvs = [(x_next, comm.rank + 1, _TAG_FWD)], [(from_prev, comm.rank - 1, _TAG_FWD)]
        from_next = None
        if x_prev is not None:
            x_prev = x_prev.contiguous()
            from_next = torch.empty_like(x_prev)
            sends.append((x_prev, comm.rank - 1, _TAG_BWD))
            recvs.append((from_next, comm.rank + 1, _TAG_BWD))
        _p2p(comm, sends, recvs)
        return from_prev, from_next

    @staticmethod
    def backward(ctx: Any, g_from_prev: torch.Tensor, g_from_next: torch.Tensor | None):
        comm = ctx.comm
        g_from_prev = g_from_prev.contiguous()
        g_x_next = torch.empty_like(g_from_prev)
        sends, recvs = [(g_from_prev, comm.rank - 1, _TAG_FWD)], [(g_x_next, comm.rank + 1, _TAG_FWD)]
        g_x_prev = None
        if ctx.has_prev:
            g_from_next = g_from_next.contiguous()
            g_x_prev = torch.empty_like(g_from_next)
            sends.append((g_from_next, comm.rank + 1, _TAG_BWD))
            recvs.append((g_x_prev, comm.rank - 1, _TAG_BWD))
        _p2p(comm, sends, recvs)
        return None, g_x_next, g_x_prev


def ring_exchange(
    comm: Comm, x_next: torch.Tensor, x_prev: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Send ``x_next`` to rank+1 and ``x_prev`` (optional) to rank−1; return (from rank−1, from rank+1)."""
    if comm.world_size == 1:
        return x_next, x_prev
    return _RingExchange.apply(comm, x_next, x_prev)


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, comm: Comm, x: torch.Tensor):
        ctx.comm = comm
        return comm.all_gather(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        comm = ctx.comm
        g = g.contiguous().clone()
        if dist.get_backend(comm.group) == dist.Backend.NCCL:
            out = torch.empty_like(g[0])
            dist.reduce_scatter_tensor(out, g, group=comm.group)
            return None, out
        dist.all_reduce(g, group=comm.group)
        return None, g[comm.rank]


def all_gather_with_grad(comm: Comm, x: torch.Tensor) -> torch.Tensor:
    """[W, *x.shape] gathered from every rank; gradients of every copy flow back to the owner."""
    if comm.world_size == 1:
        return x.unsqueeze(0)
    return _AllGather.apply(comm, x)


def all_reduce_value(comm: Comm, local: torch.Tensor) -> torch.Tensor:
    """Value = sum of ``local`` over ranks; gradient = gradient of ``local`` alone.

    When every rank backpropagates its result, the gradient each rank receives for its inputs is the
    gradient of the global sum (the other ranks' terms reach it through the ring / gather backward).
    """
    if comm.world_size == 1:
        return local
    total = comm.all_reduce(local.detach())
    return total + (local - local.detach())  # exactly `total` in value on every rank
