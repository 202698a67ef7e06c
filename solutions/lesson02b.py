"""Solutions of lesson 02b's exercises (workbench.exercises.lesson02b)."""
import torch


def round_ste(x):
    return x + (torch.round(x) - x).detach()      # forward round(x), backward identity


def int8_weights(weight):
    w = weight.detach()
    scale = w.flatten(1).abs().amax(1) / 64        # one symmetric scale per output channel
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.view(shape)), -64, 64)
    return scale, q
