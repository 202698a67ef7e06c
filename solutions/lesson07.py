"""One possible answer to each exercise of lesson 07 (compact architectures).

The lesson's cells hold stubs; its checks (``workbench.exercises.lesson07``) compare a
function with the library's counts on real layers. Try the exercise before you read these.
"""


def separable_macs(c_in, c_out, k, h, w):
    """(depthwise separable, full k x k conv) multiply-adds for an h x w output map."""
    depthwise = h * w * c_in * k * k          # one k x k filter per input channel
    pointwise = h * w * c_in * c_out          # a 1x1 conv mixes the channels
    return depthwise + pointwise, h * w * c_in * c_out * k * k


def fire_params(c_in, s, e1, e3):
    """Weights of squeeze (1x1, c_in -> s), expand 1x1 (s -> e1) and expand 3x3 (s -> e3)."""
    return c_in * s + s * e1 + 9 * s * e3
