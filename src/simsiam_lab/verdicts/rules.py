"""The rules every report prints under its claims, in words, with the thresholds the code uses."""

from __future__ import annotations

from ..config import MONITOR_PER_CLASS
from . import stability
from .collapse import RULE
from .verdict import ALPHA, POWER

RULES = [
    "collapsed, as the paper means it: a degenerate solution, with the loss at its minimum and "
    "an output that carries nothing. Each trial is judged on three signals that hold on any "
    f"dataset. Loss at its minimum: the final loss (below) at most {RULE.loss_gap} above its "
    "lowest. Where z ends in an affine-free BN that lowest is -1 + 4/B for the cosine loss: "
    "the BN keeps each channel's batch variance at 1, so the most nearly constant batch is "
    "identical outputs but for one image, and -1 + 4/B is its loss when that image differs "
    "between the two views; a head without that BN (Table 3a, or with its affine) has no "
    "floor, and the lowest is -1; the cross-entropy has no lowest derived and goes without "
    "this signal. Degenerate output: std(z)·√d at most √(2/√B), the geometric midpoint "
    "between the BN floor 2/√B (0.25 at B = 64, 0.09 at the paper's 512) and the isotropic 1, "
    f"or at least {RULE.share:.0%} of z's variance on the test images along one direction (BN "
    "in eval mode). Learned nothing: the linear accuracy at most "
    f"{RULE.gain_z:.3f} standard errors (one-sided 5%) above the same network's at random "
    "init, the two taken as binomial proportions over the test images. A trial collapsed when "
    "every signal it has says so; it did not when its output is not degenerate and its loss is "
    "above the minimum (or, without a loss signal, it learned something: the cross-entropy); a "
    "network that learned nothing without reaching the degenerate solution failed to train, "
    "as Table 1b's fixed predictor; any other mix is a disagreement. A collapse claim is an "
    "exact test of the collapse rate against one half over looks of 3, 5, 8 and 12 trials, "
    "one-sided 0.05 at each end over all the looks (5 of 5 shows it above, 0 of 5 below; 3 "
    "trials can show neither): reproduced when the claim's side is shown with each "
    "disagreeing trial counted against it, not reproduced when the other side is shown with "
    "them counted for it, else inconclusive, and more trials are asked for until the budget "
    "is spent or no outcome of the rest could decide it. Its evidence ends with each "
    "threshold's value at which the verdict would change",
    "unstable (X unstable, against reference Y; §4.4: 'the training is unstable and the loss "
    "oscillates'): a trial diverged (a non-finite loss ended it), its last epoch's mean loss "
    f"ended more than {stability.RULE.rise} above its lowest epoch's, or it oscillates. Step "
    "noise is the root mean square of successive step losses' differences over √2, over the "
    "second half of training (a slow trend does not inflate it). Where no trial diverged or "
    "rose, the claim is a test of the step-noise ratio X/Y (log, paired by seed, in looks as a "
    f"comparison, one-sided {ALPHA}) against {stability.RULE.noise_factor:g}, the smallest "
    "ratio read as oscillating (this project's choice: the paper describes a failure to "
    "converge, not a few percent more scatter): reproduced when the ratio is shown above it, "
    "not reproduced when below. Where some did, it is the exact rate test of unstable trials "
    "against one half, as a collapse claim",
    "the final loss (the collapse rule's, the loss comparisons'): the median of the last "
    f"{stability.FINAL_WINDOW:.0%} of SGD steps (at least {stability.MIN_STEPS}), where the "
    "loss ended; runs that predate the per-step loss give their last epoch's mean, and the "
    "evidence says which",
    "comparisons use the linear accuracy, paired by seed over the seeds both rows trained: the "
    "differences X − Y are read in looks, at 3, 5, 8 and 12 seeds a row (the budget), as a "
    "group-sequential paired t interval whose ends sit at the look's boundary of a Lan–DeMets "
    "Pocock-like alpha-spending design, so that over all the looks each end errs at most "
    "its share of the error rate (the t boundaries from one seeded simulation; a Monte-Carlo "
    "test of the whole procedure, looks and futility included, is in tests/test_sequential.py). "
    f"The {ALPHA} one-sided error rate is split evenly over the study's planned comparison "
    "claims (Bonferroni, fixed before any run). A claim stops at the first look that decides "
    "it; as futile once the seeds it would need at its estimate and SD exceed 8 budgets (from "
    "the second look); or when the budget is spent; otherwise `simsiam seeds` asks for the "
    "next look's seeds",
    "X loss_above Y (§4.2's 'the loss remains high'): X's final loss above Y's, decided as "
    "'better' on the final loss (margin 0), without the learned condition below: the claim is "
    "about a failure to train",
    "X better than Y (margin m, 0 unless the claim states one): reproduced when the interval "
    "lies above m, not reproduced when it lies below m, else inconclusive. X not worse than Y "
    "(non-inferiority margin m): reproduced above −m, not reproduced below −m. X similar to Y "
    "(equivalence margin m, two one-sided tests): reproduced when the interval lies inside "
    "(−m, m), not reproduced when it lies wholly outside [−m, m]. Each comparison's evidence "
    "ends with its verdict at every margin ('by margin: inconclusive below 0.93, reproduced "
    "above'), so a reader sees how much the verdict hangs on the margin chosen",
    "the headline's family: the study's tested comparison claims (rows trained and learned, "
    f"margin testable), under Holm's procedure at one-sided {ALPHA}, each claim's sequential "
    "test run at Holm's levels on its own seeds; untested claims are listed apart, not counted "
    "as failures. Collapse and instability claims are rate tests of their own at one-sided "
    f"{ALPHA} each end, outside that family",
    "improving (the kNN monitor keeps rising, §4.1): the least-squares slope of each trial's "
    "kNN monitor over the second half of training, in points an epoch, and a t interval of "
    f"their mean over the trials, two-sided at {1 - 2 * ALPHA:.0%}: reproduced when it lies above "
    "0, not reproduced when below, else inconclusive. Like a collapse claim it is tested on its "
    f"own, at one-sided {ALPHA}, outside the comparisons' family",
    "the kNN monitor (the curves' third panel, the improving claims): the weighted kNN of the "
    "test split against the training split, every monitor.knn_every epochs; on the streaming "
    f"path, of a fixed subset, {MONITOR_PER_CLASS['test']} test against "
    f"{MONITOR_PER_CLASS['train']} training images a class, decoded once and the same for every "
    "run; the evaluation's kNN and linear probe always use the whole splits",
    "a comparison needs 3 seeds that both rows trained (the first look); with fewer it is "
    "inconclusive, and waits for them",
    "not testable at this scale: a `similar` claim whose margin lies inside the narrowest "
    "interval the budget can give, since two linear probes differ by at least their own "
    "binomial noise (√2 times one probe's SE on the test images) whatever the seeds; its "
    "evidence says how many seeds or test images would make it testable. Every comparison's "
    "evidence prints that instrument, the probe's SE and the paired seed SD, beside its margin",
    "a comparison is inconclusive unless X (and, for similar, Y too) learned: its linear "
    "accuracy lies above the same network's at random init (paired by seed, one-sided at "
    f"{ALPHA}); chance-level accuracy alone says nothing (paper, footnote 4)",
    "a row the profile cannot test is not trained and its claims are inconclusive: a batch "
    "larger than the training set, or fewer SGD steps than the profile's optim.min_steps",
    "power: each comparison's evidence gives the true difference its design detects "
    f"{POWER:.0%} of the time on the whole budget (the last look's boundary, noncentral t, at "
    "the paired SD seen); a table's power line and the index give the range of these over "
    "its comparisons of accuracy",
]
