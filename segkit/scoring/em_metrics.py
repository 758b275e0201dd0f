"""ISBI 2012 EM scores for binary membrane segmentation: foreground-restricted Rand.

(The pixel error, the other ISBI score, is ``1 - pixel_acc`` of the confusion matrix that
:class:`segkit.scoring.metrics.SegmentationMetrics` keeps; the module logs it from there.)

V_rand (Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image segmentation
algorithms for connectomics") compares the segments (connected regions between membranes) of
a prediction with those of the ground truth, counted only on true foreground (non-membrane)
pixels. The harmonic mean of its split and merge scores is the official ISBI 2012 ranking score.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torchmetrics import Metric


def rand_scores(pred_labels: np.ndarray, true_labels: np.ndarray) -> dict[str, float]:
    """Foreground-restricted Rand scores ``v_rand``, ``rand_split``, ``rand_merge`` in [0, 1].

    Only pixels with ``true_labels > 0`` count (0 is membrane/background). With ``p_ij`` the
    joint distribution of (prediction segment i, true segment j) there, and ``s_i``, ``t_j`` its
    marginals: ``split = sum p_ij^2 / sum t_j^2``, ``merge = sum p_ij^2 / sum s_i^2`` and
    ``v_rand`` their harmonic mean. As in the official ISBI/Fiji script, a prediction pixel
    labelled 0 inside true foreground is a segment of its own (a singleton), so an unassigned
    pixel never merges anything but splits. Without true foreground all three are NaN.

    Example:
        >>> true = np.array([[1, 1, 2, 2]])
        >>> scores = rand_scores(np.array([[5, 5, 5, 5]]), true)  # merges the two true segments
        >>> {k: round(v, 4) for k, v in scores.items()}
        {'v_rand': 0.6667, 'rand_split': 1.0, 'rand_merge': 0.5}
    """
    pred = np.asarray(pred_labels).ravel()
    true = np.asarray(true_labels).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"label images differ in size: {np.shape(pred_labels)} vs {np.shape(true_labels)}")
    foreground = true > 0
    if not foreground.any():
        return {"v_rand": math.nan, "rand_split": math.nan, "rand_merge": math.nan}
    _, true_idx = np.unique(true[foreground], return_inverse=True)
    pred_fg = pred[foreground]
    assigned = pred_fg != 0
    pred_values, pred_idx = np.unique(pred_fg[assigned], return_inverse=True)
    # Sparse contingency table: one code per occupied (truth, prediction) cell.
    codes = true_idx[assigned].astype(np.int64) * max(len(pred_values), 1) + pred_idx
    _, joint = np.unique(codes, return_counts=True)
    singletons = float(np.count_nonzero(~assigned))
    sum_joint2 = float(np.sum(joint.astype(np.float64) ** 2)) + singletons
    sum_pred2 = float(np.sum(np.bincount(pred_idx).astype(np.float64) ** 2)) + singletons
    sum_true2 = float(np.sum(np.bincount(true_idx).astype(np.float64) ** 2))
    split = sum_joint2 / sum_true2
    merge = sum_joint2 / sum_pred2
    return {"v_rand": 2.0 / (1.0 / split + 1.0 / merge), "rand_split": split, "rand_merge": merge}


class EMMetrics(Metric):
    """V_rand of membrane predictions, accumulated over a split.

    ``update`` takes logits ``(N, C, H, W)`` (argmaxed) or class indices ``(N, H, W)`` and
    targets ``(N, H, W)``; a pixel is membrane when its class is ``membrane_class``. Segments are the
    4-connected components of non-membrane pixels (as in the Fiji script; ignored pixels are not
    true foreground). V_rand is computed per image (2D slice) and averaged over images that have
    true foreground, at the argmax and without the official border thinning of the ground truth
    (the official script also takes the best of several probability thresholds), so it is not
    directly a leaderboard number. States are sums, so DDP reduces them exactly.

    Example:
        >>> masks = torch.tensor([[[0, 1, 0], [0, 1, 0]]])  # two cells, one membrane column
        >>> logits = torch.nn.functional.one_hot(masks, 2).permute(0, 3, 1, 2).float()
        >>> metric = EMMetrics()
        >>> metric.update(logits, masks)
        >>> {k: v.item() for k, v in metric.compute().items()}
        {'v_rand': 1.0, 'rand_error': 0.0}
    """

    is_differentiable = False
    full_state_update = False

    v_rand_sum: torch.Tensor
    images: torch.Tensor

    def __init__(self, membrane_class: int = 1, ignore_index: int = 255, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.membrane_class = membrane_class
        self.ignore_index = ignore_index
        self.add_state("v_rand_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        if preds.is_floating_point() and preds.ndim == target.ndim + 1:
            preds = preds.max(dim=1).indices
        pred_membrane = preds == self.membrane_class
        true_membrane = target == self.membrane_class
        valid = target != self.ignore_index
        for pred_mem, true_mem, ok in zip(
            pred_membrane.cpu().numpy(), true_membrane.cpu().numpy(), valid.cpu().numpy()
        ):
            true_segments, count = ndimage.label(ok & ~true_mem)
            if count == 0:
                continue
            pred_segments, _ = ndimage.label(~pred_mem)
            self.v_rand_sum += rand_scores(pred_segments, true_segments)["v_rand"]
            self.images += 1

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        v_rand = self.v_rand_sum / self.images.double()
        return {"v_rand": v_rand, "rand_error": 1.0 - v_rand}
