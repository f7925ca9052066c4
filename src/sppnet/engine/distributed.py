"""Data-parallel training with ``torchrun`` (torch.distributed, DDP).

Launch any training command under torchrun; there is no launcher of our own::

    torchrun --nproc_per_node 4 -m sppnet train classify --data shapes --out run
    torchrun --nproc_per_node 4 -m sppnet train detect --method fast-rcnn ...

torchrun starts N processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env`
turns that into a process group ("cpu:gloo,cuda:nccl": gloo for CPU
tensors, NCCL for CUDA tensors when there is a GPU). Without those variables
(a plain ``python -m sppnet``, or ``--nproc_per_node 1``) everything below is
a no-op and the code runs as one process.

How the work is split (names: N processes, rank r):

* Classification: every epoch has one global order of the images (from the
  seed and the epoch, as with one process) cut into global mini-batches of
  ``train.batch_size``; rank r takes the images r, r + N, ... of each global
  mini-batch (what ``DistributedSampler`` does for a whole epoch, applied to
  every batch) and the gradients are averaged by ``DistributedDataParallel``.
* Fast R-CNN: the ``images_per_batch`` images of iteration i are split the
  same way (rank r takes images r, r + N, ... of the iteration).
* Preprocessing (proposals, SPP-net conv5 feature cache): rank r computes
  the images r, r + N, ... of the set, all wait at a barrier, then every rank
  reads the whole cache.
* Only rank 0 logs and writes run files (config, checkpoints, metrics,
  TensorBoard, curves, weights); the others wait at barriers where they need
  those files.

The learning-rate rule: the global batch stays what the config says, N
processes each compute 1/N of it, so the learning rate does not change with
N; a run on N processes follows the one-process run (same data order, same
augmentation and dropout, same loss normalisation) up to the order of float
summation. To train with a larger global batch, raise the batch size in the
config and scale the learning rate yourself (linear rule: lr x k for a batch
k times larger).

Split-invariant randomness: each image draws its augmentation, RoI sampling
and dropout masks from its own generator (keyed by seed, epoch or iteration,
and its position), never from a stream shared by a whole mini-batch, so what
an image sees does not depend on which process handles it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "init_from_env", "DistributedContext", "is_distributed", "rank", "world", "is_main", "barrier", "wait_for_main",
    "shard", "all_reduce_sum", "all_reduce_mean", "average_gradients", "gather_objects", "wrap_ddp", "zero_loss",
    "main_only", "cleanup", "SampleDropout", "per_sample_dropout",
]

T = TypeVar("T")

# Rank 0 alone runs some long stages (SPP-net and R-CNN SVMs, box regression);
# the other ranks wait for it on this group, whose timeout is long enough for them.
_WAIT_TIMEOUT = timedelta(days=7)
_wait_group = None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def world() -> int:
    """The number of processes (1 without a process group)."""
    return torch.distributed.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the process that logs and writes run files."""
    return rank() == 0


class DistributedContext:
    """What :func:`init_from_env` set up; a context manager that calls
    :meth:`cleanup` on exit. ``owned``: this context created the process
    group (and destroys it); ``quiet``: stdout of ranks > 0 is discarded."""

    def __init__(self, owned: bool, quiet: bool) -> None:
        self.owned = owned
        self.rank, self.world, self.local_rank = rank(), world(), _env_int("LOCAL_RANK") or 0
        self._stdout = contextlib.ExitStack()
        if quiet and self.rank != 0:
            sink = self._stdout.enter_context(open(os.devnull, "w", encoding="utf-8"))
            self._stdout.enter_context(contextlib.redirect_stdout(sink))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def cleanup(self, failed: bool = False) -> None:
        """Restore stdout; destroy the process group if this context made it
        (after a last barrier, unless ``failed``: then the other ranks may be
        inside a collective that this one will never join)."""
        self._stdout.close()
        if self.owned:
            cleanup(barrier_first=not failed)
            self.owned = False

    def __enter__(self) -> DistributedContext:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.cleanup(failed=exc_type is not None)

    def __repr__(self) -> str:
        return f"DistributedContext(rank={self.rank}, world={self.world}, local_rank={self.local_rank}, owned={self.owned})"


def init_from_env(quiet_workers: bool = False, timeout: timedelta | None = None) -> DistributedContext:
    """Join the process group torchrun describes in the environment
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``).

    Backend "cpu:gloo,cuda:nccl" (gloo only when CUDA is absent); on a GPU
    machine each process uses the GPU ``LOCAL_RANK``. Without torchrun's
    variables, or with ``WORLD_SIZE=1``, nothing is initialised: one process.
    A process group that already exists is used as it is (and not destroyed
    by :meth:`DistributedContext.cleanup`). ``quiet_workers``: discard the
    stdout of ranks > 0 while the context is open (the CLI's "rank 0 prints";
    stderr, where errors go, is kept). Use as ``with init_from_env(): ...``.
    """
    global _wait_group
    size = _env_int("WORLD_SIZE")
    owned = False
    if torch.distributed.is_available() and not torch.distributed.is_initialized() and size is not None and size > 1:
        process_rank = _env_int("RANK")
        if process_rank is None:
            raise ValueError("WORLD_SIZE is set but RANK is not: launch with torchrun")
        local_rank = _env_int("LOCAL_RANK") or 0
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
        torch.distributed.init_process_group(backend=backend, rank=process_rank, world_size=size,
                                             **({"timeout": timeout} if timeout is not None else {}))
        _wait_group = torch.distributed.new_group(backend="gloo", timeout=_WAIT_TIMEOUT)
        owned = True
    elif size is not None and size > 1 and not torch.distributed.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    return DistributedContext(owned, quiet_workers)


def cleanup(barrier_first: bool = True) -> None:
    """Destroy the process group, if there is one (after a last barrier)."""
    global _wait_group
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if barrier_first and torch.distributed.get_world_size() > 1:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    _wait_group = None


def barrier() -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if is_distributed():
        torch.distributed.barrier()


def wait_for_main() -> None:
    """A barrier that waits as long as rank 0 needs: rank 0 calls it when a
    stage it runs alone is done, the other ranks call it to wait for that.
    (Uses the long-timeout group made by :func:`init_from_env`; with a
    process group set up elsewhere, the default group and its timeout.)"""
    if is_distributed():
        torch.distributed.barrier(group=_wait_group)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: positions rank, rank + N, ... (all of them for one process)."""
    return list(items[rank()::world()])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; returns it."""
    if is_distributed():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over the ranks, in place; returns it."""
    if is_distributed():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        tensor /= world()
    return tensor


def average_gradients(parameters: Iterator[nn.Parameter] | Sequence[nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over the ranks (one all-reduce
    of their concatenation): the manual equivalent of DDP, for a model that
    is not wrapped (call it between ``backward()`` and ``step()``)."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_mean(flat)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset: offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * world()
    torch.distributed.all_gather_object(values, value)
    return values


def wrap_ddp(module: nn.Module) -> nn.Module:
    """``DistributedDataParallel(module)`` in a process group, else ``module``.

    DDP averages the gradients over the ranks during ``backward()``: a loss
    that is the local sum times N / (global count) gives the gradient of the
    global-batch mean. Every rank must call the wrapper's forward and
    backward the same number of times; a rank without data returns
    :func:`zero_loss` so that it still joins the all-reduce."""
    if not is_distributed():
        return module
    parameter = next(module.parameters(), None)
    if parameter is not None and parameter.device.type == "cuda":
        return nn.parallel.DistributedDataParallel(module, device_ids=[parameter.device.index])
    return nn.parallel.DistributedDataParallel(module)


def zero_loss(module: nn.Module) -> torch.Tensor:
    """A zero that depends on every trainable parameter of ``module``: its
    backward gives zero gradients and fires DDP's hooks for all of them."""
    total = None
    for parameter in module.parameters():
        if parameter.requires_grad:
            term = parameter.sum() * 0
            total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def main_only(log: Callable[[str], Any]) -> Callable[[str], Any]:
    """``log`` on rank 0; a function that drops its message on the others."""
    return log if is_main() else (lambda message: None)


# ---------------------------------------------------------------- split-invariant dropout


class SampleDropout(nn.Module):
    """Dropout whose mask for sample b of a batch is drawn from
    ``generators[b]`` (set before each forward), so a sample's mask does not
    depend on which other samples share its batch or its process. Same
    inverted scaling as ``nn.Dropout``; without generators it falls back to
    ``F.dropout`` (the global RNG)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.generators: Sequence[torch.Generator] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.generators is None:
            return F.dropout(x, self.p, True)
        if len(self.generators) != x.shape[0]:
            raise ValueError(f"SampleDropout got {len(self.generators)} generators for a batch of {x.shape[0]}")
        if self.p >= 1:
            return x * 0
        keep = torch.stack([torch.rand(x.shape[1:], generator=g) >= self.p for g in self.generators])
        return x * keep.to(device=x.device, dtype=x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@contextlib.contextmanager
def per_sample_dropout(model: nn.Module) -> Iterator[Callable[[Sequence[torch.Generator] | None], None]]:
    """Replace every ``nn.Dropout`` of ``model`` by a :class:`SampleDropout`
    while the context is open (restored on exit; dropout has no weights, so
    ``state_dict`` is unchanged). Yields ``set_generators(list)``: call it
    with one generator per sample before each training forward; each
    dropout layer then draws its masks from them, layer after layer."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                replacement = SampleDropout(child.p)
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped.append((parent, name, child))
    layers = [getattr(parent, name) for parent, name, _ in swapped]

    def set_generators(generators: Sequence[torch.Generator] | None) -> None:
        for layer in layers:
            layer.generators = generators

    try:
        yield set_generators
    finally:
        for parent, name, original in swapped:
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)
