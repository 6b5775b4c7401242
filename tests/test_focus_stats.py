"""Focus statistics against direct numpy/scipy computations, and the callback that logs them."""

import types

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from tiny_models import random_batch, tiny_config, tiny_processor
from transformers import TrainerControl, TrainerState, TrainingArguments

from modeling_mer import MERForSequenceClassification
from modeling_mer.training.focus_stats import FocusStatsCallback, focus_statistics, spearman


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 5, 30), rng.normal(size=30).round(1)  # many ties on both sides
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_of_a_constant_is_zero():
    assert spearman(np.arange(5), np.full(5, 2.0)) == 0.0


def test_focus_statistics_are_fractions_of_each_examples_valid_length():
    # Example 0: 4 valid tokens over 10 valid frames, centres 1, 3, 5, 7 (head 0) and 8, 6, 4, 2 (head 1);
    # token 5 is padding with a wild centre that must not count. Example 1: 3 tokens over 20 frames.
    text_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    frame_mask = torch.zeros(2, 20, dtype=torch.bool)
    frame_mask[0, :10] = frame_mask[1] = True
    centres = torch.zeros(2, 2, 5)
    centres[0, 0] = torch.tensor([1.0, 3, 5, 7, 99])
    centres[0, 1] = torch.tensor([8.0, 6, 4, 2, 99])
    centres[1, 0, :3] = torch.tensor([10.0, 10, 10])
    centres[1, 1, :3] = torch.tensor([2.0, 12, 4])
    widths = torch.full((2, 2, 5), 2.0)
    output = types.SimpleNamespace(text_mask=text_mask, audio_frame_mask=frame_mask,
                                   audio_to_text_focus_centres=(centres,), audio_to_text_focus_widths=(widths,))
    (layer,) = focus_statistics(output)["audio_to_text"]
    relative = [np.array([1, 3, 5, 7]) / 10, np.array([8, 6, 4, 2]) / 10, np.array([10, 10, 10]) / 20,
                np.array([2, 12, 4]) / 20]
    assert layer["centre_spread"] == pytest.approx(np.mean([r.std() for r in relative]))
    assert layer["centre_mean"] == pytest.approx(np.mean([r.mean() for r in relative]))
    assert layer["width"] == pytest.approx(np.mean([0.2, 0.2, 0.1, 0.1]))
    assert layer["spearman"] == pytest.approx(np.mean([1.0, -1.0, 0.0, 0.5]))
    assert "text_to_audio" not in focus_statistics(output)  # no centres given for that direction


def test_callback_logs_every_layer_and_direction_into_the_log_history():
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config())
    model.train()
    batch = dict(random_batch(tiny_processor()), labels=torch.tensor([0, 1]))
    state = TrainerState(global_step=7, epoch=1.0)
    FocusStatsCallback().on_evaluate(TrainingArguments(output_dir="unused", report_to=[]), state, TrainerControl(),
                                     model=model, eval_dataloader=[batch])
    assert model.training  # put back as it was
    (record,) = state.log_history
    assert record["step"] == 7
    for direction in ("text_to_audio", "audio_to_text"):
        for layer in range(model.config.num_crossmodal_layers):
            for name in ("centre_spread", "centre_mean", "width", "spearman"):
                assert np.isfinite(record[f"focus/{direction}/layer_{layer}/{name}"])
    # At initialisation the default focus sits on the diagonal: tokens' centres follow their order, and the
    # widths start at focus_initial_width of the frames.
    assert record["focus/audio_to_text/layer_0/spearman"] > 0.9
    assert record["focus/audio_to_text/layer_0/width"] == pytest.approx(model.config.focus_initial_width, rel=0.2)
