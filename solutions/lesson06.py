"""One possible answer to each exercise of lesson 06 (distillation).

The lesson's cells hold stubs; its checks (``workbench.exercises.lesson06``) compare a
function with the library's. Try the exercise before you read these.
"""
import torch


def distillation_loss(student_logits, teacher_logits, T):
    """T^2 KL(p || q), p = softmax(t / T) the teacher's, q = softmax(s / T) the student's,
    summed over the classes and averaged over the batch."""
    p = torch.softmax(teacher_logits / T, dim=1)
    log_q = torch.log_softmax(student_logits / T, dim=1)
    return T ** 2 * (p * (p.log() - log_q)).sum(dim=1).mean()


def distillation_gradient(student_logits, teacher_logits, T):
    """d kd_loss / d student logits = T^2 x (q - p) / T / B = T (q - p) / B."""
    q = torch.softmax(student_logits / T, dim=1)
    p = torch.softmax(teacher_logits / T, dim=1)
    return T * (q - p) / len(student_logits)


def fsp_matrix(first, second):
    """G[b, i, j] = 1/(h w) sum over positions of first[b, i] * second[b, j]."""
    h, w = first.shape[-2:]
    return first.flatten(2) @ second.flatten(2).transpose(1, 2) / (h * w)
