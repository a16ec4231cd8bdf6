"""COLEP: conformal prediction with knowledge rules reasoned over exactly by probabilistic circuits.

Kang et al., "COLEP: Certifiably Robust Learning-Reasoning Conformal
Prediction via Probabilistic Circuits", ICLR 2024. See docs/colep.md.
"""

from .attack import classifier_loss, pgd_l2, sensor_loss
from .conformal import (
    COLEP,
    RSCP,
    CertifiedSets,
    NotCalibratedError,
    SplitCP,
    colep_score_bounds,
    colep_scores,
    conformal_quantile,
    coverage,
    quantile_index,
    set_size,
)
from .knowledge import Knowledge, KnowledgeError, KnowledgeLimitError, digits_knowledge
from .reasoning import ClusterCircuit, Reasoner
from .sensors import (
    MLPClassifier,
    MLPSensors,
    as_probabilities,
    predict_proba,
    random_affine,
    train_classifier,
    train_sensors,
)
from .smoothing import bounds_from_counts, clopper_pearson, gaussian_shift, smooth, smoothed_counts

__all__ = [
    "COLEP",
    "RSCP",
    "SplitCP",
    "CertifiedSets",
    "colep_scores",
    "colep_score_bounds",
    "conformal_quantile",
    "quantile_index",
    "coverage",
    "set_size",
    "Knowledge",
    "KnowledgeError",
    "KnowledgeLimitError",
    "NotCalibratedError",
    "digits_knowledge",
    "ClusterCircuit",
    "Reasoner",
    "MLPSensors",
    "MLPClassifier",
    "as_probabilities",
    "predict_proba",
    "random_affine",
    "train_sensors",
    "train_classifier",
    "pgd_l2",
    "sensor_loss",
    "classifier_loss",
    "clopper_pearson",
    "gaussian_shift",
    "smooth",
    "smoothed_counts",
    "bounds_from_counts",
]
