import numpy as np
from tilemore_operators.qc_calibration import regret


def test_regret_is_the_psnr_lost_by_each_weight_vectors_picks():
    # two instances, two candidates, two features; feature 0 tracks the truth, feature 1 lies
    feats = np.array([[[0.1, 0.9], [0.9, 0.1]],
                      [[0.8, 0.2], [0.2, 0.8]]])
    scores = np.array([[30.0, 28.0],
                       [25.0, 27.0]])
    losses = regret(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), feats, scores)
    assert losses[0] == 0.0  # the truthful feature always picks the best
    assert losses[1] == 2.0  # the lying one always picks the worse, 2 dB each time
    assert losses.shape == (3,)
