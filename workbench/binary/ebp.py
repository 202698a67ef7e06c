"""Expectation BackPropagation (Soudry, Hubara, Meir 2014) of a binary-weight MLP.

EBP is not gradient descent. Each binary weight W in {-1, +1} has a posterior probability
P(W = +1) = (1 + tanh h) / 2, so its mean is m = tanh(h); the neurons are sign units. For an
example x the network's output distribution is approximated by a mean-field forward pass: by the
central limit theorem the input u of every neuron is Gaussian, with

    mu_l      = (m_l <v_{l-1}> + b_l) / sqrt(V_{l-1} + 1)
    sigma^2_l = (sum_j (<W^2><v_j^2> - m^2 <v_j>^2) + 1) / (V_{l-1} + 1)

(first layer: v = x, deterministic, so <v^2> = x^2; hidden layers: v = +-1, <v^2> = 1), and
the sign unit's mean is <v_l> = 2 Phi(mu_l / sigma_l) - 1. The online Bayes update of the
posterior then has the closed form of the paper's Algorithm 1 (binary weights):

    output:  delta_L   = y N(0 | mu_L, sigma_L^2) / Phi(y mu_L / sigma_L)   (y = +-1 per class)
    hidden:  delta_l   = 2 N(0 | mu_l, sigma_l^2) (m_{l+1}^T delta_{l+1}) / sqrt(V_l + 1)
    update:  h_l      += delta_l <v_{l-1}>^T / sqrt(V_{l-1} + 1)

which is d ln P(y | x) / d m with the variances held fixed: no learning rate, no loss. As in the
authors' Matlab code (Binary_EBP_minibatch.m), the bias b is a real number updated by the same
rule with input 1, the fan-in counts the bias (V + 1), the variance gets +1 for it, and a
mini-batch adds the updates of its examples. The network that is returned is the paper's
deterministic EBP-D network: weights sign(h), sign activations, biases kept float.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..method import Choice, Int, Method, Real, Tags, knob
from .core import SignActivation, replace_relus

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
MLP_MODULES = (nn.Linear, nn.ReLU, nn.Flatten, nn.Dropout, nn.Sequential)


def gaussian_density_at_zero(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """N(0 | mu, var)."""
    return torch.exp(-0.5 * mu * mu / var - LOG_SQRT_2PI) / var.sqrt()


def mean_field_forward(means, biases, x, bias_var: float = 1.0):
    """The mean-field pass: for each layer (mu, var) of the neurons' inputs and the mean of its
    inputs <v_{l-1}>. ``means`` are the weight means m = tanh(h) (out x in), ``x`` a batch
    (n x V_0). ``bias_var`` is the variance added for the bias (1 in the authors' code)."""
    mean_v, var_v = x, None
    mus, variances, inputs = [], [], []
    for m, b in zip(means, biases):
        fan = m.shape[1] + 1
        mu = (mean_v @ m.T + b) / math.sqrt(fan)
        if var_v is None:     # deterministic input: <W^2><x^2> - m^2 x^2 = (1 - m^2) x^2
            var = ((mean_v * mean_v) @ (1 - m * m).T + bias_var) / fan
        else:                 # +-1 neurons: 1 - m^2 <v>^2 = var_v + (1 - m^2) <v>^2
            var = (var_v.sum(1, keepdim=True) + (1 - var_v) @ (1 - m * m).T + bias_var) / fan
        inputs.append(mean_v)
        mus.append(mu)
        variances.append(var)
        p = torch.special.ndtr(mu / var.sqrt())
        mean_v, var_v = 2 * p - 1, 4 * p * (1 - p)
    return mus, variances, inputs


def output_delta(mu: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y N(0 | mu, var) / Phi(y mu / sigma), in log space so a confident mistake stays finite
    (the Matlab code patches the inf it gets there)."""
    sigma = var.sqrt()
    t = mu / sigma
    return y / sigma * torch.exp(-0.5 * t * t - LOG_SQRT_2PI - torch.special.log_ndtr(y * t))


def ebp_step(h, biases, x, y, bias_var: float = 1.0):
    """One EBP update of ``h`` and ``biases`` (lists of tensors, changed in place) on the
    batch ``x`` (n x V_0) with targets ``y`` (n x classes, +-1); returns the deltas."""
    means = [torch.tanh(t) for t in h]
    mus, variances, inputs = mean_field_forward(means, biases, x, bias_var)
    delta = output_delta(mus[-1], variances[-1], y)
    deltas = [None] * len(h)
    for layer in reversed(range(len(h))):
        deltas[layer] = delta
        fan = h[layer].shape[1] + 1
        if layer:     # delta of the layer below, with this layer's means before the update
            below = delta @ means[layer] / math.sqrt(fan)
            delta = 2 * gaussian_density_at_zero(mus[layer - 1], variances[layer - 1]) * below
        h[layer] += deltas[layer].T @ inputs[layer] / math.sqrt(fan)
        biases[layer] += deltas[layer].sum(0) / math.sqrt(fan)
    return deltas


def deterministic_forward(h, biases, x):
    """The EBP-D network: weights sign(h), sign hidden units, the last layer's sums."""
    v = x
    for i, (t, b) in enumerate(zip(h, biases)):
        u = v @ torch.where(t >= 0, 1.0, -1.0).to(t.dtype).T + b
        v = u if i == len(h) - 1 else torch.where(u >= 0, 1.0, -1.0).to(u.dtype)
    return v


def targets(labels: torch.Tensor, classes: int, dtype=torch.float64) -> torch.Tensor:
    """+1 for the true class, -1 for the others (one sign output per class)."""
    y = -torch.ones(len(labels), classes, dtype=dtype)
    y[torch.arange(len(labels)), labels] = 1.0
    return y


def initial_h(sizes, init: str, sigma_w: float, g: torch.Generator, weights=None):
    """The authors' init: h uniform with variance sigma_w / V_in; or ("weights") the current
    weights rescaled to that variance, so tanh(h) starts with their signs."""
    h = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        if init == "weights":
            w = weights[i].detach().to(torch.float64)
            h.append(w / w.std().clamp(min=1e-12) * math.sqrt(sigma_w / n_in))
        else:
            h.append((torch.rand(n_out, n_in, generator=g, dtype=torch.float64) - 0.5)
                     * math.sqrt(sigma_w * 12 / n_in))
    return h


def linear_chain(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of an MLP (in order), or [] when the network is not one."""
    if not all(isinstance(m, MLP_MODULES) for m in list(model.modules())[1:]):
        return []
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    return linears if linears and len(relus) == len(linears) - 1 else []


@dataclass
class EBP(Method):
    """Expectation backpropagation of a binary-weight MLP (Linear layers and ReLUs only, e.g.
    lenet300): the network's layer sizes are trained by EBP, from scratch (``init="scratch"``,
    the authors' initialization) or from its current weights' signs (``init="weights"``),
    one example's update at a time summed over a ``batch_size`` mini-batch. The result is
    the same network with every ReLU replaced by a sign activation and every Linear weight
    a * sign(h), a = 1 / sqrt(fan_in + 1) (the scale of the mean-field pass, so the last
    layer's outputs are the paper's mu; it does not change any sign). Every layer is binary,
    first and last included, as in the paper; the biases stay float. EBP sees the raw pixel
    intensities in [0, 1] (the paper used text features); the first layer folds the data's
    normalization back in (``input_affine``), so its weights are +-a times the data's std
    (one value per input channel: still two values per layer on MNIST)."""
    id = "binary.ebp"
    reference = ("Soudry, Hubara, Meir 2014, Expectation Backpropagation: Parameter-Free "
                 "Training of Multilayer Neural Networks with Continuous or Discrete Weights")
    sliders = {"epochs": (1, 20, 1)}
    smoke = {"epochs": 1, "batch_size": 32}
    effects = ("fewer_bytes", "different_outputs")
    requires = "an MLP: Linear layers with a ReLU module between each two"

    epochs: int = knob(3, Int(1, 1000))
    batch_size: int = knob(10, Int(1, 4096))
    sigma_w: float = knob(1.0, Real(1e-6, 100.0))  # initial variance of h, times V_in
    init: str = knob("scratch", Choice(("scratch", "weights")))
    seed: int = knob(0, Int(0, 2**31 - 1))

    def tags(self) -> Tags:
        return replace(super().tags(), needs_data=True, bits_per_weight=1.0)

    def supports(self, model: nn.Module) -> bool:
        return bool(linear_chain(model))

    def check_model(self, model: nn.Module) -> None:
        if any(m.bias is None for m in linear_chain(model)):
            raise ValueError("binary.ebp needs Linear layers with a bias (EBP learns one)")

    def train_h(self, model: nn.Module, data, log=None):
        """EBP's h and biases (float32) for the layer sizes of ``model``, trained on the raw
        pixel intensities in [0, 1] (see ``input_affine``)."""
        linears = linear_chain(model)
        sizes = [linears[0].in_features] + [m.out_features for m in linears]
        g = torch.Generator().manual_seed(self.seed)
        h = [t.float() for t in initial_h(sizes, self.init, self.sigma_w, g,
                                          [m.weight for m in linears])]
        biases = [torch.zeros(n) for n in sizes[1:]]
        images = data.images.flatten(1)
        for epoch in range(self.epochs):
            order = torch.randperm(len(images), generator=g)
            for start in range(0, len(order), self.batch_size):
                index = order[start:start + self.batch_size]
                ebp_step(h, biases, images[index].float() / 255.0,
                         targets(data.labels[index], sizes[-1], torch.float32))
            if log is not None:
                log(epoch, h, biases)
        return h, biases

    def compress(self, model, data=None):
        h, biases = self.train_h(model, data)
        return binary_network(model, h, biases, data)


def binary_network(model: nn.Module, h, biases, data) -> nn.Module:
    """``model`` (changed in place) as the EBP-D network of ``h`` and ``biases``: sign
    activations, weights a * sign(h) with a = 1 / sqrt(fan_in + 1), the data's normalization
    folded into the first layer."""
    scale, shift = input_affine(data)
    replace_relus(model, lambda: SignActivation("htanh"))
    with torch.no_grad():
        for i, (layer, t, b) in enumerate(zip(linear_chain_after(model), h, biases)):
            a = 1 / math.sqrt(layer.in_features + 1)
            signs = torch.where(t >= 0, 1.0, -1.0)
            if i == 0:   # raw = scale * x + shift: fold the data's normalization in
                b = b + signs @ shift
                signs = signs * scale
            layer.weight.copy_(a * signs)
            layer.bias.copy_(a * b)
    return model


def input_affine(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per input feature with raw = scale * x + shift, where x is what the
    network gets (``data.normalize``d images) and raw the intensity in [0, 1]. EBP trains on
    raw intensities: with the normalized ones the background pixels, all at -mean/std, pour
    the noise of undecided signs into every neuron and the sign(h) network fell far below
    the mean-field one (our runs); the first layer takes the normalization back exactly."""
    shape = (1, *data.shape)
    zero = data.normalize(torch.zeros(shape)).flatten()
    one = data.normalize(torch.full(shape, 255.0)).flatten()
    scale = 1 / (one - zero)
    return scale, -zero * scale


def linear_chain_after(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers once the ReLUs are sign activations."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


METHODS = (EBP,)
