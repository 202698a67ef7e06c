"""Checks of lesson 06's exercises (distillation).

Each ``check_<name>(function)`` runs the student's function on real outputs of the zoo's
networks (LeNet-5 as the teacher, LeNet-300-100 and a fresh 2x800 MLP as students, on MNIST
test images; ResNet-20's stages on CIFAR-10 test images), compares the result with the
library's own function and prints what is wrong.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from . import run
from .. import data, train, zoo
from ..distill.base import build_student
from ..distill.hints_tensors import fsp_matrix
from ..distill.losses import kd_loss


@lru_cache(maxsize=1)
def _logits() -> tuple:
    """(label, student logits, teacher logits, T): LeNet-5 teaches, on 64 MNIST test images."""
    test = data.mnist("test")
    x = test.normalize(test.images[:64])
    with torch.no_grad(), train.seeded(0):
        teacher = zoo.pretrained("lenet5").eval()(x)
        trained = zoo.pretrained("lenet300").eval()(x)
        fresh = build_student("mlp", 800, 2, (1, 28, 28))(x)
    return tuple((f"{name} student, LeNet-5 teacher, 64 test images, T = {t:g}", s, teacher, t)
                 for name, s in (("LeNet-300-100", trained), ("fresh 2x800 MLP", fresh))
                 for t in (1.0, 4.0, 20.0))


def _number(result) -> float | str:
    try:
        value = torch.as_tensor(result)
    except Exception:
        return f"expected a number (a 0-dimensional tensor), got {type(result).__name__}"
    if value.numel() != 1:
        return (f"expected one number for the batch, got a tensor of shape {tuple(value.shape)} "
                "(average over the batch: sum over the classes, mean over the images)")
    return float(value)


def _near(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(abs(b), 1e-8)


# ------------------------------------------------------------------ 1. the KD loss


def check_distillation_loss(function) -> bool | None:
    """``function(student_logits, teacher_logits, T)`` -> T^2 KL(softmax(t/T) || softmax(s/T)),
    summed over the classes and averaged over the batch; the oracle is ``kd_loss``."""

    def judge(label, result, args, kwargs):
        s, t, temp = args
        got = _number(result)
        if isinstance(got, str):
            return got
        want = kd_loss(s, t, temp).item()
        if _near(got, want):
            return None
        p, q = F.softmax(t / temp, -1), F.softmax(s / temp, -1)
        kl_pq = (p * (p.log() - q.log())).sum(-1).mean().item()
        kl_qp = (q * (q.log() - p.log())).sum(-1).mean().item()
        b, c = s.shape
        if temp != 1 and _near(got, kl_pq):
            return f"{got:.5f} is KL alone; kd_loss multiplies it by T^2 = {temp * temp:g}: {want:.5f}"
        if _near(got, temp * temp * kl_qp):
            return ("KL in the wrong direction, KL(q_student || p_teacher); the teacher's soft "
                    f"targets come first: KL(p || q) = sum p (log p - log q): {want:.5f}")
        if _near(got, want * b):
            return f"{got:.5f} is the sum over the {b} images; average over the batch: {want:.5f}"
        if _near(got, want / c):
            return (f"{got:.5f} is averaged over every element (F.kl_div's reduction='mean' "
                    f"divides by the {c} classes too); use 'batchmean': {want:.5f}")
        p1, q1 = F.softmax(t, -1), F.log_softmax(s, -1)
        if temp != 1 and _near(got, temp * temp * (p1 * (p1.log() - q1)).sum(-1).mean().item()):
            return "your softmaxes are at T = 1: divide both sets of logits by T first"
        return f"expected {want:.5f}, got {got:.5f}"

    cases = [(label, (s, t, temp), {}) for label, s, t, temp in _logits()]
    return run("distillation_loss", function, cases, judge,
               "T^2 KL(p_teacher || q_student), batch mean, at T = 1, 4 and 20 for two students, "
               "as kd_loss")


# ------------------------------------------------------------------ 2. its gradient


def check_distillation_gradient(function) -> bool | None:
    """``function(student_logits, teacher_logits, T)`` -> the gradient of ``kd_loss`` with
    respect to the student's logits, by hand: T (q - p) / B; the oracle is autograd."""

    def judge(label, result, args, kwargs):
        s, t, temp = args
        try:
            got = torch.as_tensor(result).detach().to(s.dtype)
        except Exception:
            return f"expected a tensor, got {type(result).__name__}"
        if got.shape != s.shape:
            return f"expected the logits' shape {tuple(s.shape)}, got {tuple(got.shape)}"
        z = s.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(kd_loss(z, t, temp), z)
        scale = want.abs().max().item()

        def same(x):
            return (got - x).abs().max().item() <= 1e-4 * scale + 1e-9

        if same(want):
            return None
        b = s.shape[0]
        if same(-want):
            return "the sign is flipped: the gradient is T (q - p) / B, student minus teacher"
        if same(want * b):
            return f"the gradient is {b} times too large: divide by the batch size B = {b}"
        if temp != 1 and same(want / temp ** 2):
            return ("this is (q - p) / (T B), the gradient of KL alone; kd_loss has T^2 in front: "
                    "T (q - p) / B")
        if temp != 1 and same(want / temp):
            return f"the gradient is T = {temp:g} times too small: T (q - p) / B"
        if temp != 1 and same(want * temp):
            return f"the gradient is T = {temp:g} times too large: T (q - p) / B"
        return (f"largest difference from autograd's gradient {(got - want).abs().max().item():.3g} "
                f"(its entries are up to {scale:.3g})")

    cases = [(label, (s, t, temp), {}) for label, s, t, temp in _logits()]
    return run("distillation_gradient", function, cases, judge,
               "T (q - p) / B equals autograd's gradient of kd_loss at T = 1, 4 and 20")


# ------------------------------------------------------------------ 3. the FSP matrix


@lru_cache(maxsize=1)
def _stage_maps() -> tuple:
    """ResNet-20's three stages on 8 CIFAR-10 test images: (input, pooled to the output's size
    as distill.fsp does, and output)."""
    net = zoo.pretrained("resnet20").eval()
    test = data.cifar10("test")
    x = test.normalize(test.images[:8])
    records = []
    hooks = [stage.register_forward_hook(lambda m, i, o: records.append((i[0], o)))
             for stage in net.stages]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    cases = []
    for k, (first, second) in enumerate(records):
        first = F.adaptive_avg_pool2d(first, second.shape[-2:])
        cases.append((f"ResNet-20 stage {k}: {first.shape[1]} x {second.shape[1]} channels, "
                      f"{second.shape[-2]}x{second.shape[-1]} maps, 8 CIFAR-10 test images",
                      (first, second)))
    return tuple(cases)


def check_fsp_matrix(function) -> bool | None:
    """``function(first, second)`` -> G (B x m x n), G[b, i, j] = 1/(h w) sum over positions of
    first[b, i] * second[b, j]; the oracle is ``hints_tensors.fsp_matrix``."""

    def judge(label, result, args, kwargs):
        first, second = args
        try:
            got = torch.as_tensor(result).detach().to(first.dtype)
        except Exception:
            return f"expected a tensor, got {type(result).__name__}"
        want = fsp_matrix(first, second)
        b, m, n = want.shape
        h, w = second.shape[-2:]
        if got.shape != want.shape:
            if tuple(got.shape) == (m, n):
                return (f"one {m}x{n} matrix for the batch; keep one per image: shape {(b, m, n)}")
            if tuple(got.shape) == (b, n, m) and m != n:
                return (f"shape {(b, n, m)}: transposed; G[b, i, j] pairs channel i of the first "
                        f"map with channel j of the second: {(b, m, n)}")
            return f"expected shape {(b, m, n)}, got {tuple(got.shape)}"
        scale = want.abs().max().item()

        def same(x):
            return (got - x).abs().max().item() <= 1e-4 * scale

        if same(want):
            return None
        if same(want * h * w):
            return f"divide by h w = {h * w}, the number of positions (a mean, not a sum)"
        if m == n and same(want.transpose(1, 2)):
            return ("transposed: G[b, i, j] pairs channel i of the first map with channel j of "
                    "the second")
        return (f"largest difference from the library's G {(got - want).abs().max().item():.3g} "
                f"(its entries are up to {scale:.3g})")

    return run("fsp_matrix", function, [(label, args, {}) for label, args in _stage_maps()], judge,
               "G = F1 F2^T / (h w) per image on the three stages of ResNet-20, as fsp_matrix")
