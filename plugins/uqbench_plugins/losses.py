"""Training losses of the paper (Eqs. 3-5). Cross-entropy and soft-Dice are independent of patch size; Brier is
summed per image as the authors' code does (which sets how strongly Adam's coupled weight decay acts)."""

from __future__ import annotations

from typing import Any

from uqbench import Loss, Register, hookimpl


def _one_hot(labels: Any, num_classes: int) -> Any:
    from torch.nn import functional as F

    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


class CrossEntropy:
    """Cross-entropy (Eq. 4): mean over voxels of -log p(true class)."""

    name = "ce"

    def __call__(self, logits: Any, labels: Any) -> Any:
        from torch.nn import functional as F

        return F.cross_entropy(logits.float(), labels)


class SoftDice:
    """Soft-Dice (Eq. 3): 1 - mean over classes of 2*sum(R*A) / (sum(R) + sum(A)), per batch."""

    name = "soft-dice"
    eps = 1.0  # keeps classes absent from the batch from dividing by zero

    def __call__(self, logits: Any, labels: Any) -> Any:
        probs = logits.float().softmax(1)
        ref = _one_hot(labels, probs.shape[1])
        inter = (probs * ref).sum((0, 2, 3))
        denom = probs.sum((0, 2, 3)) + ref.sum((0, 2, 3))
        return 1 - ((2 * inter + self.eps) / (denom + self.eps)).mean()


class DiceCE:
    """Cross-entropy plus soft-Dice over the foreground classes of the batch, weighted 1 : 1, as nnU-Net trains
    (DC_and_CE_loss with batch Dice, background left out, smoothing 1e-5); not one of the paper's losses."""

    name = "dice-ce"
    eps = 1e-5

    def __call__(self, logits: Any, labels: Any) -> Any:
        from torch.nn import functional as F

        probs = logits.float().softmax(1)[:, 1:]
        ref = _one_hot(labels, logits.shape[1])[:, 1:]
        inter = (probs * ref).sum((0, 2, 3))
        denom = probs.sum((0, 2, 3)) + ref.sum((0, 2, 3))
        dice = (2 * inter + self.eps) / (denom + self.eps)
        return F.cross_entropy(logits.float(), labels) + 1 - dice.mean()


class Brier:
    """Brier score (Eq. 5): the squared distance between softmax and one-hot labels, summed over the classes and
    voxels of each image and averaged over the batch, as the authors' ``brier_score_loss`` (utils/losses.py of
    toologicbv/cardiacSegUncertainty; its comment reports the voxel mean trained "really bad")."""

    name = "brier"

    def __call__(self, logits: Any, labels: Any) -> Any:
        probs = logits.float().softmax(1)
        return ((probs - _one_hot(labels, probs.shape[1])) ** 2).sum((1, 2, 3)).mean()


@hookimpl
def register_losses(register: Register[Loss]) -> None:
    register(CrossEntropy)
    register(SoftDice)
    register(Brier)
    register(DiceCE)
