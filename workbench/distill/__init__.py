"""Distillation (catalogue section E): a teacher network trains a smaller student.

- ``losses``: the loss functions (``kd_loss``, ``mimic_loss``) and the ``TeacherLoss`` hook
  that any retraining method uses through its ``kd_teacher`` knob;
- ``base``: the students (``mlp``, ``thin``, ``resnet``) and ``Distillation``, the shape
  every method shares (a teacher in, a trained student out);
- ``logits``: students taught by the teacher's outputs or neurons (``distill.mimic``,
  ``distill.kd``, ``distill.neurons``);
- ``hints``: students taught by the teacher's intermediate maps (``distill.fitnets``,
  ``distill.fsp``).
"""
from . import base, hints, logits, losses
from .hints import FSP, FitNets
from .logits import KD, Mimic, Neurons

METHODS = logits.METHODS + hints.METHODS

__all__ = ["FSP", "KD", "METHODS", "FitNets", "Mimic", "Neurons", "base", "hints", "logits",
           "losses"]
