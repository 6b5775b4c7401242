"""Focus attention against a naive loop written from DESIGN.md section 2, one head at a time."""

import math

import pytest
import torch

from modeling_mer.fusion_mer import FocusAttention, masked_mean


def naive_focus_attention(module, query_states, key_states, query_mask, key_mask, head):
    """Loop over i, j for one head of one example (batch index 0); returns attention probabilities (T_q, T_k)."""
    d_h = module.head_dim
    rows = slice(head * d_h, (head + 1) * d_h)
    q = query_states[0] @ module.q_proj.weight[rows].T + module.q_proj.bias[rows]  # (T_q, d_h)
    k = key_states[0] @ module.k_proj.weight[rows].T + module.k_proj.bias[rows]
    valid_q = [i for i in range(q.shape[0]) if query_mask[0, i]]
    valid_k = [j for j in range(k.shape[0]) if key_mask[0, j]]
    source, source_valid, target_valid = (q, valid_q, valid_k) if module.focus_source == "query" else (k, valid_k, valid_q)
    source_mean = sum(source[t] for t in source_valid) / len(source_valid)
    length = float(len(target_valid))

    def focus(t):
        c = torch.tanh(module.focus_local[head].T @ source[t] + module.focus_global[head].T @ source_mean)
        mu = length * torch.sigmoid(module.focus_centre[head] @ c)
        sigma = length * torch.sigmoid(module.focus_width[head] @ c)
        return mu, sigma

    probabilities = torch.zeros(q.shape[0], k.shape[0])
    for i in range(q.shape[0]):
        scores = []
        for j in valid_k:
            score = (q[i] @ k[j]) / math.sqrt(d_h)
            if module.use_focus:
                if module.focus_source == "query":
                    mu, sigma = focus(i)
                    score = score - (j - mu) ** 2 / (sigma**2 / 2)
                else:
                    mu, sigma = focus(j)
                    score = score - (i - mu) ** 2 / (sigma**2 / 2)
            scores.append(score)
        weights = torch.softmax(torch.stack(scores), 0)
        for weight, j in zip(weights, valid_k, strict=True):
            probabilities[i, j] = weight
    return probabilities


def make_module(use_focus, focus_source):
    torch.manual_seed(0)
    module = FocusAttention(d_model=8, num_heads=2, dropout=0.0, use_focus=use_focus, focus_source=focus_source)
    if use_focus:
        for parameter in (module.focus_local, module.focus_global):
            torch.nn.init.normal_(parameter, std=0.7)
        for parameter in (module.focus_centre, module.focus_width):
            torch.nn.init.normal_(parameter, std=1.0)  # large enough that centres move away from L/2
    return module.eval()


@pytest.mark.parametrize("use_focus,focus_source", [(True, "query"), (True, "key"), (False, "query")])
def test_focus_attention_matches_naive_loop(use_focus, focus_source):
    module = make_module(use_focus, focus_source)
    torch.manual_seed(1)
    query_states, key_states = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    query_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    key_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7], dtype=torch.bool)
    with torch.no_grad():
        _, probabilities, _, _ = module(query_states, key_states, query_mask, key_mask, output_attentions=True)
        for head in range(2):
            expected = naive_focus_attention(module, query_states, key_states, query_mask, key_mask, head)
            torch.testing.assert_close(probabilities[0, head], expected, atol=1e-5, rtol=1e-5)
        # Masked keys get exactly zero probability.
        assert probabilities[0, :, :, 5:].abs().max() == 0


@pytest.mark.parametrize("focus_source", ["query", "key"])
def test_sdpa_path_equals_explicit_path(focus_source):
    module = make_module(True, focus_source)
    states = torch.randn(2, 6, 8)
    context = torch.randn(2, 9, 8)
    states_mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    context_mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5], dtype=torch.bool)
    with torch.no_grad():
        fast, _, centres, _ = module(states, context, states_mask, context_mask, output_attentions=False)
        explicit, _, _, _ = module(states, context, states_mask, context_mask, output_attentions=True)
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=1e-5)
    # Centres live in [0, L_target] of each example's own valid length.
    target_length = context_mask.sum(-1) if focus_source == "query" else states_mask.sum(-1)
    assert bool((centres <= target_length[:, None, None]).all()) and bool((centres >= 0).all())


def test_focus_parameters_are_trainable():
    module = make_module(True, "query")
    names = {name for name, p in module.named_parameters() if p.requires_grad}
    assert {"focus_local", "focus_global", "focus_centre", "focus_width"} <= names


def test_masked_mean_ignores_padding():
    states = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_mean(states, mask).item() == pytest.approx(2.0)
