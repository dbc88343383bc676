"""Training, folds: the duplicates' originals in, (training, held-out) positions out. Which duplicates are
held out in cross-validation: every original with at least two duplicates takes part.

An original with fewer (users' FAQs often have many such) has no phrasing to spare: its duplicates always
train. Folds are stratified by original, so with k duplicates per original and k folds each model sees k - 1
phrasings of every original taking part and is tested on the remaining one.
"""

import numpy as np
from sklearn.model_selection import StratifiedKFold

MIN_DUPLICATES_TO_HOLD_OUT = 2


def duplicate_folds(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, held-out) positions into ``labels`` (the duplicates' originals) for each fold; at most
    ``folds`` folds, fewer when the originals taking part have fewer duplicates; none when no original has two."""
    counts = np.bincount(labels)
    taking_part = counts[labels] >= MIN_DUPLICATES_TO_HOLD_OUT
    if not taking_part.any():
        return []
    folds = min(folds, counts[labels[taking_part]].min())
    if folds < 2:
        return []
    candidates = np.flatnonzero(taking_part)
    always = np.flatnonzero(~taking_part)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        (np.sort(np.r_[always, candidates[train]]), candidates[test])
        for train, test in splitter.split(candidates, labels[candidates])
    ]
