"""The losses of distillation, as plain functions on logits, and the hook that adds a
teacher's soft targets to any training run.

``kd_loss`` is Hinton et al.'s soft-target term: the KL divergence from the teacher's
distribution to the student's, both softened by the temperature T. Its gradient with respect
to a student logit is (q_i - p_i) / T, so it shrinks as 1/T^2 when T grows (the paper's
section 2); multiplying by T^2 keeps the soft and hard terms in proportion whatever T is, which
is why the mix below can be set once and T moved freely.

``mimic_loss`` is Ba & Caruana's: the student regresses the teacher's logits (the inputs of
the softmax, not its probabilities) with a squared error, so no information is squashed away
by the softmax.

``TeacherLoss`` is a ``train.Hook``: added to ``train.fit`` (or ``TrainingMethod.fit``), it
mixes the hard-label loss with the KD term of a frozen teacher on the same batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..train import Hook


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T): the teacher's "dark knowledge" at temperature T."""
    return F.softmax(logits / temperature, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch; the teacher is
    detached (it is not trained)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1),
                    F.softmax(teacher_logits.detach() / t, dim=-1),
                    reduction="batchmean") * (t * t)


def mimic_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1/2 ||s - t||^2 over the logits (Ba & Caruana's objective)."""
    diff = student_logits - teacher_logits.detach()
    return 0.5 * diff.pow(2).sum(dim=-1).mean()


def frozen(teacher: nn.Module) -> nn.Module:
    """The teacher in eval mode with no gradients: it only answers."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class TeacherLoss(Hook):
    """loss = (1 - weight) * hard-label loss + weight * kd_loss(student, teacher, T).

    The teacher must be frozen (``frozen``) and see the same batch as the student, so crops
    and flips of the training loop reach both."""

    def __init__(self, teacher: nn.Module, temperature: float, weight: float):
        self.teacher, self.temperature, self.weight = teacher, temperature, weight

    def loss(self, model, x, y, logits, loss):
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        soft = kd_loss(logits, teacher_logits, self.temperature)
        return (1.0 - self.weight) * loss + self.weight * soft
