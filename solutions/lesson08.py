"""One possible answer to each exercise of lesson 08 (search and accounting).

The lesson's cells hold stubs; its checks (``workbench.exercises.lesson08``) compare a function
with Optuna, ``cost.energy`` and the search bench on real studies. Try the exercise before you
read these.
"""
import math


def pareto_front(points):
    """Indices of the (accuracy, bytes) points that no other point dominates."""
    def dominates(a, b):
        # no worse in both (accuracy up, bytes down) and better in at least one
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def inference_energy(file_bytes, macs, sram_bytes):
    """Microjoules of one inference: the file read once in 32-bit words, then the MACs."""
    words = math.ceil(file_bytes / 4)                 # a partial last word is one more read
    read_pj = 5.0 if file_bytes <= sram_bytes else 640.0
    return (words * read_pj + macs * (3.7 + 0.9)) / 1e6


def trials_to_reach(trials, threshold, budget):
    """Trials spent (from 1, pruned ones included) until one meets both; None if none does."""
    for spent, t in enumerate(trials, start=1):
        if t["state"] == "complete" and t["accuracy"] >= threshold and t["bytes"] <= budget:
            return spent
    return None
