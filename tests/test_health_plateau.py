"""Pretraining length from label-free health curves: the doubling rule on smoothed per-epoch curves."""
import pytest

from nnunet_ssl.benchmark.report import pretraining_table
from nnunet_ssl.blocks.health import doubling_plateau, health_curves, health_plateau, trailing_mean
from nnunet_ssl.integration.pretrainer import plateau_message


def _history(margins, retrieval=None, collapse=5.0, chance=0.2):
    """Epochs whose 1 - loss/collapse equals ``margins`` (and retrieval gain ``retrieval``)."""
    rows = []
    for i, m in enumerate(margins):
        row = {"epoch": i + 1, "loss": collapse * (1 - m), "loss_collapse": collapse}
        if retrieval is not None:
            row |= {"top1_retrieval": chance + retrieval[i] * (1 - chance), "top1_chance": chance}
        rows.append(row)
    return rows


def test_curves_are_the_collapse_margin_and_the_retrieval_gain():
    curves = health_curves(_history([0.0, 0.25], retrieval=[0.5, 1.0]))
    assert curves["collapse_margin"] == pytest.approx([0.0, 0.25])
    assert curves["retrieval_gain"] == pytest.approx([0.5, 1.0])
    assert health_curves([{"epoch": 1, "loss": 0.3}]) == {}  # no reference value: nothing to read
    # reconstruction: the margin to what learning nothing scores (MAE: predict 0; Genesis: return the input)
    assert health_curves([{"loss": 0.3, "loss_predict_zero": 1.2}]) == {"baseline_margin": [pytest.approx(0.75)]}
    assert health_curves([{"loss": 0.1, "loss_return_input": 0.4}]) == {"baseline_margin": [pytest.approx(0.75)]}
    # both logged: the margin to the stricter one, not to a noisy input that is easy to beat
    both = [{"loss": 0.5, "loss_return_input": 10.0, "loss_predict_zero": 1.0},
            {"loss": 0.2, "loss_return_input": 0.4, "loss_predict_zero": 1.0}]
    assert health_curves(both) == {"baseline_margin": [pytest.approx(0.5), pytest.approx(0.5)]}


def test_trailing_mean_and_doubling_rule():
    assert trailing_mean([3.0, 0.0, 3.0, 6.0]) == pytest.approx([3.0, 1.5, 2.0, 3.0])
    assert doubling_plateau({1: 0.1, 2: 0.3, 4: 0.305, 8: 0.31}, 0.01) == 2
    assert doubling_plateau({1: 0.1, 2: 0.3, 3: 0.5}, 0.01) is None  # 1 -> 2 still rises, 4 not run
    # a flat stretch the curve climbs out of again is no plateau: 2 -> 4 rises after 1 -> 2 did not
    assert doubling_plateau({1: 0.1, 2: 0.1, 4: 0.3, 8: 0.305}, 0.01) == 4
    assert doubling_plateau({1: 0.1, 2: 0.1, 4: 0.3}, 0.01) is None


def test_plateau_is_the_latest_curve_plateau_and_none_while_one_still_rises():
    flat_after_4 = [0.1, 0.2, 0.3, 0.4] + [0.4] * 12  # smoothed: 0.1, 0.15, 0.2, 0.3, 0.367, 0.4, ...
    result = health_plateau(_history(flat_after_4))
    # epoch 5 (smoothed 0.367) -> 10 (0.4) adds 0.033; epoch 6 (0.4) -> 12 (0.4) adds 0
    assert result["per_curve"] == {"collapse_margin": 6} and result["plateau_epoch"] == 6
    assert result["still_rising"] == [] and result["epochs"] == 16
    rising = [0.02 * i for i in range(16)]  # +0.02 per epoch: every doubling adds more than 0.01
    result = health_plateau(_history(flat_after_4, retrieval=rising))
    assert result["per_curve"] == {"collapse_margin": 6, "retrieval_gain": None}
    assert result["plateau_epoch"] is None and result["still_rising"] == ["retrieval_gain"]
    assert "still rising at the end (retrieval_gain" in plateau_message(result)
    assert "stopped rising at epoch 6 of 16" in plateau_message(health_plateau(_history(flat_after_4)))
    assert "no plateau check" in plateau_message(health_plateau([{"epoch": 1, "loss": 0.3}]))
    short = health_plateau(_history([0.1, 0.2, 0.3, 0.4, 0.5]))  # 5 epochs: the window 3 cannot double
    assert short["too_short"] and "5 epoch(s) are too few to tell" in plateau_message(short)


def test_pretraining_table_shows_the_plateau():
    common = {"steps": 400, "batch_size": 16, "minutes": 2.0, "final_metrics": {"loss": 3.0}}
    table = pretraining_table([
        {"method": "pcl", **common, "plateau": health_plateau(_history([0.1, 0.2, 0.3, 0.4] + [0.4] * 12))},
        {"method": "simclr", **common, "plateau": health_plateau(_history([0.02 * i for i in range(16)]))},
        {"method": "mae", **common, "plateau": health_plateau([{"epoch": 1, "loss": 0.3}])},
        {"method": "gcl", **common, "plateau": health_plateau(_history([0.1, 0.2]))}])
    rows = table.splitlines()
    assert "| pcl | 400 | 16 | 2.0 | epoch 6 of 16 | 3 |" in rows
    assert "| simclr | 400 | 16 | 2.0 | still rising | 3 |" in rows
    assert "| mae | 400 | 16 | 2.0 | — | 3 |" in rows
    assert "| gcl | 400 | 16 | 2.0 | too short to tell | 3 |" in rows
