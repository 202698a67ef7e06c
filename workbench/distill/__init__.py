"""Distillation (catalogue section E): a teacher network trains a smaller student.

``losses`` holds the loss functions and the ``TeacherLoss`` hook that any retraining method
uses through its ``kd_teacher`` knob; ``base`` the students and the shared shape of a
distillation method.
"""
from . import base, losses  # noqa: F401

METHODS: tuple = ()
