"""The rules every report prints under its claims, in words, with the thresholds the code uses."""

from __future__ import annotations

from ..config import MONITOR_PER_CLASS
from . import stability
from .collapse import RULE
from .verdict import ALPHA, POWER

RULES = [
    "collapsed, as the paper means it: a degenerate solution, with the loss at its minimum and "
    "an output that carries nothing. Each trial is judged on three signals that hold on any "
    f"dataset. Loss at its minimum: the final loss (below) at most {RULE.loss_gap} above "
    "-1 + 4/B (for the cosine loss; the cross-entropy has no such bound and goes without this "
    "signal): the affine-free BN on z keeps each channel's batch variance at 1, so the most "
    "nearly constant batch is identical outputs but for one image, and -1 + 4/B is its loss "
    "when that image differs between the two views. Degenerate output: std(z)·√d at most "
    "√(2/√B), the geometric midpoint between that batch's 2/√B (0.25 at B = 64, 0.09 at the "
    f"paper's 512) and the isotropic 1, or at least {RULE.share:.0%} of z's variance on the "
    "test images along one direction (BN in eval mode). Learned nothing: the linear accuracy "
    f"at most {RULE.gain_z:.3f} standard errors (one-sided 5%) above the same network's at "
    "random init, the two taken as binomial proportions over the test images. A trial "
    "collapsed when every "
    "signal it has says so; it did not when its loss is above the minimum and its output is "
    "not degenerate (a network that learned nothing without reaching the degenerate solution "
    "failed to train, as Table 1b's fixed predictor); any other mix is a disagreement. A "
    "collapse claim is reproduced when every trial agrees with it, not reproduced when every "
    "trial says the opposite, and inconclusive otherwise, with the signals that disagree. Its "
    "evidence ends with each threshold's value at which the verdict would change",
    "unstable (X unstable, against reference Y): a trial diverged (a non-finite loss ended "
    f"it), its last epoch's mean loss ended more than {stability.RULE.rise} above its lowest "
    "epoch's, or its step noise over the second half of training (the root mean square of "
    "successive step losses' differences over √2, which a slow trend does not inflate) is more "
    f"than {stability.RULE.noise_factor:g} times Y's for the same seed. Reproduced when any "
    "trial is unstable, not reproduced when every trial is measured stable, else inconclusive; "
    "its evidence gives the rate's exact binomial interval and each threshold's value at which "
    "the verdict would change",
    "the final loss (the collapse rule's, the loss comparisons'): the median of the last "
    f"{stability.FINAL_WINDOW:.0%} of SGD steps (at least {stability.MIN_STEPS}), where the "
    "loss ended; runs that predate the per-step loss give their last epoch's mean, and the "
    "evidence says which",
    "comparisons use the mean linear accuracy over a row's trials (seeds) and a t interval of "
    "the difference X − Y: paired by seed when both rows ran the same seeds, else Welch's. "
    f"The {ALPHA} one-sided error rate is split evenly over the table's k comparison claims "
    "(Bonferroni), so each interval is two-sided at 1 − 0.1/k and each of its ends is a "
    f"one-sided test at {ALPHA}/k",
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
    "the family each count controls: a table's comparison claims (Bonferroni within the "
    f"table). The index also counts the whole study's comparison claims under Holm's procedure "
    f"at one-sided {ALPHA} (each claim's p-value from the same t test as its interval). A "
    "collapse claim is a vote of its trials, outside that family: its evidence gives the "
    "collapse rate's exact binomial interval, each end a one-sided 95% bound",
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
    "a comparison needs at least 2 trials of each row; with one it is inconclusive",
    "a comparison is inconclusive unless X (and, for similar, Y too) learned: its linear "
    "accuracy lies above the same network's at random init (paired by seed, one-sided at "
    f"{ALPHA}); chance-level accuracy alone says nothing (paper, footnote 4)",
    "a row the profile cannot test is not trained and its claims are inconclusive: a batch "
    "larger than the training set, or fewer SGD steps than the profile's optim.min_steps",
    "power: each comparison's evidence gives the true difference its own test (the same t "
    f"test, paired where paired, at {ALPHA}/k) detects {POWER:.0%} of the time (exact, from the "
    "noncentral t); a table's power line and the index give the range of these over its "
    "comparisons of accuracy, so no figure claims more than a claim's own test",
]
