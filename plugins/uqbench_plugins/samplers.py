"""Samplers: how the predictive samples every uncertainty map reads are drawn from a fold's trained model(s).

- ``mc-dropout``: T passes with the dropout modules on (paper section III-B); a one-pass map gets the one
  deterministic pass instead. The default, and the paper's.
- ``ensemble:M``: the softmaxes of M members trained on distinct seed streams (Lakshminarayanan et al. 2017), one
  deterministic pass each; ``ensemble:M:mc`` gives T MC-dropout passes of each member (M x T) to an MC map.
- ``tta``: the 8 flips and 90-degree rotations of the input, each prediction turned back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from uqbench import Forward, Register, Sampler, hookimpl


def _passes(forward: Forward, x: Any, *, passes: int, group: int, member: int, stochastic: bool) -> Iterator[Any]:
    """``passes`` passes of one member over x, ``group`` at a time as one batch of repeated inputs."""
    done = 0
    while done < passes:
        k = min(group, passes - done)
        p = forward(x.repeat(k, 1, 1, 1), member=member, stochastic=stochastic)
        yield p.view(k, x.shape[0], *p.shape[1:])
        done += k


class McDropout:
    """MC dropout: T stochastic passes of the segmenter's model (dropout on, batch norm frozen), in groups of
    ``group`` passes per forward call; a one-pass map gets one deterministic pass."""

    name = "mc-dropout"
    members = 1

    def count(self, requested: int, *, one_pass: bool) -> int:
        return 1 if one_pass else requested

    def draw(self, forward: Forward, x: Any, *, samples: int, one_pass: bool, group: int) -> Iterator[Any]:
        return _passes(forward, x, passes=samples, group=group, member=0, stochastic=not one_pass)


class Ensemble:
    """A deep ensemble of M members (``ensemble:M``), each trained on its own seed stream: one deterministic
    pass of each; with ``ensemble:M:mc`` an MC map gets T MC-dropout passes of each member (M x T samples)."""

    name = "ensemble"
    members = 5  # ensemble without an argument; ensemble:M sets it

    def __init__(self, members: str = "5", mode: str = "") -> None:
        if not members.isdigit() or int(members) < 1:
            raise ValueError(f"the member count M must be a whole number of 1 or more, not {members!r}")
        if mode not in ("", "mc"):
            raise ValueError(f"the second argument may only be 'mc' (members x MC passes), not {mode!r}")
        self.members, self.mc = int(members), mode == "mc"

    def count(self, requested: int, *, one_pass: bool) -> int:
        return self.members * (requested if self.mc and not one_pass else 1)

    def draw(self, forward: Forward, x: Any, *, samples: int, one_pass: bool, group: int) -> Iterator[Any]:
        for m in range(self.members):
            yield from _passes(forward, x, passes=samples // self.members, group=group, member=m,
                               stochastic=self.mc and not one_pass)


def _transform(x: Any, flip: bool, turns: int) -> Any:
    """x flipped left-right (``flip``), then turned ``turns`` quarter turns in its last two dimensions."""
    return (x.flip(-1) if flip else x).rot90(turns, (-2, -1))


def _undo(p: Any, flip: bool, turns: int) -> Any:
    """The inverse of :func:`_transform`."""
    p = p.rot90(-turns, (-2, -1))
    return p.flip(-1) if flip else p


class TestTimeAugmentation:
    """Test-time augmentation: the segmenter's model (dropout off) on the 8 flips and quarter turns of the
    input (the dihedral group of the square), each softmax turned back; the transforms that keep the slice's
    shape are batched ``group`` at a time."""

    __test__ = False  # not a pytest class, whatever its name
    name = "tta"
    members = 1
    turns = True  # refused for a recipe that kept the slices' orientation (uqbench.api.turns_of)
    TRANSFORMS = tuple((flip, turns) for turns in range(4) for flip in (False, True))

    def count(self, requested: int, *, one_pass: bool) -> int:
        return len(self.TRANSFORMS)

    def draw(self, forward: Forward, x: Any, *, samples: int, one_pass: bool, group: int) -> Iterator[Any]:
        import torch

        for shape in (0, 1):  # even turns keep H x W, odd turns give W x H: only equal shapes share a batch
            todo = [t for t in self.TRANSFORMS if t[1] % 2 == shape]
            for i in range(0, len(todo), group):
                chunk = todo[i:i + group]
                p = forward(torch.cat([_transform(x, *t) for t in chunk]))
                parts = p.split(x.shape[0])
                yield torch.stack([_undo(part, *t) for part, t in zip(parts, chunk, strict=True)])


@hookimpl
def register_samplers(register: Register[Sampler]) -> None:
    for cls in (McDropout, Ensemble, TestTimeAugmentation):
        register(cls)
