"""Focus attention against a naive loop written from docs/method.md §2, one head at a time."""

import math

import pytest
import torch

from modeling_mer.fusion_mer import FocusAttention, masked_mean, sinusoidal_positions


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
        centre_logit = module.focus_centre[head] @ c
        if module.centre_prior == "diagonal":
            r = (sum(v <= t for v in source_valid) - 0.5) / len(source_valid)  # t's relative place among the valid
            centre_logit = centre_logit + module.focus_diagonal_gain[head] * math.log(r / (1 - r))
        mu = length * torch.sigmoid(centre_logit)
        sigma = length * torch.sigmoid(module.focus_width[head] @ c + module.width_offset)
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


def make_module(use_focus, focus_source, centre_prior="none", initial_width=0.5):
    torch.manual_seed(0)
    module = FocusAttention(d_model=8, num_heads=2, dropout=0.0, use_focus=use_focus, focus_source=focus_source,
                            centre_prior=centre_prior, initial_width=initial_width)
    if use_focus:
        for parameter in (module.focus_local, module.focus_global):
            torch.nn.init.normal_(parameter, std=0.7)
        for parameter in (module.focus_centre, module.focus_width):
            torch.nn.init.normal_(parameter, std=1.0)  # large enough that centres move away from L/2
        if centre_prior == "diagonal":
            torch.nn.init.uniform_(module.focus_diagonal_gain, 0.5, 1.5)  # per-head gains that differ
    return module.eval()


@pytest.mark.parametrize("use_focus,focus_source,centre_prior,initial_width", [
    (True, "query", "none", 0.5), (True, "key", "none", 0.5), (False, "query", "none", 0.5),
    (True, "query", "diagonal", 0.1), (True, "key", "diagonal", 0.2)])
def test_focus_attention_matches_naive_loop(use_focus, focus_source, centre_prior, initial_width):
    module = make_module(use_focus, focus_source, centre_prior, initial_width)
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


@pytest.mark.parametrize("focus_source,centre_prior", [("query", "none"), ("key", "none"), ("query", "diagonal")])
def test_sdpa_path_equals_explicit_path(focus_source, centre_prior):
    module = make_module(True, focus_source, centre_prior)
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


# ------------------------------------------------------------------ the mechanism can learn an alignment

ALIGN_DIM, ALIGN_QUERIES, ALIGN_KEYS, ALIGN_BLOCK, ALIGN_BATCH = 16, 8, 32, 4, 16


def alignment_batch(generator):
    """Query i of a sequence of 3-8 queries must read the key block at its relative place r_i plus an offset
    delta_i in [-0.25, 0.25) that only its content gives (like a word sitting a little early or late in the
    audio). Keys: blocks of 4 positions share a random marker (a word spans several frames); query i's target
    is the marker at p(i) = the centre of the block holding (r_i + delta_i) * L_k. Both sides carry sinusoidal
    positions, as in the model, so plain attention could learn the alignment from Q K^T alone."""
    lengths = torch.randint(3, ALIGN_QUERIES + 1, (ALIGN_BATCH,), generator=generator)
    query_mask = torch.arange(ALIGN_QUERIES)[None] < lengths[:, None]
    relative = (torch.arange(ALIGN_QUERIES)[None] + 0.5) / lengths[:, None]
    offsets = (torch.rand(ALIGN_BATCH, ALIGN_QUERIES, generator=generator) - 0.5) * 0.5
    blocks = ((relative + offsets) * ALIGN_KEYS / ALIGN_BLOCK).floor().clamp(0, ALIGN_KEYS // ALIGN_BLOCK - 1).long()
    block_markers = torch.randn(ALIGN_BATCH, ALIGN_KEYS // ALIGN_BLOCK, generator=generator)
    keys = sinusoidal_positions(ALIGN_KEYS, ALIGN_DIM, "cpu").expand(ALIGN_BATCH, -1, -1).clone()
    keys[..., 0] = block_markers.repeat_interleave(ALIGN_BLOCK, dim=1)
    queries = sinusoidal_positions(ALIGN_QUERIES, ALIGN_DIM, "cpu").expand(ALIGN_BATCH, -1, -1).clone()
    queries[..., 0] = 4 * offsets
    positions = blocks * ALIGN_BLOCK + (ALIGN_BLOCK - 1) / 2  # p(i), a key index
    return queries, keys, query_mask, positions, block_markers.gather(1, blocks)


def train_alignment(steps=300, **focus):
    """Adam, lr 1e-2, `steps` fresh batches; returns the per-step losses and the trained module."""
    torch.manual_seed(0)
    attention = FocusAttention(ALIGN_DIM, num_heads=1, **focus)
    head = torch.nn.Linear(ALIGN_DIM, 1)
    optimizer = torch.optim.Adam([*attention.parameters(), *head.parameters()], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    key_mask = torch.ones(ALIGN_BATCH, ALIGN_KEYS, dtype=torch.bool)
    losses = []
    for _ in range(steps):
        queries, keys, query_mask, _, targets = alignment_batch(generator)
        predictions = head(attention(queries, keys, query_mask, key_mask)[0])[..., 0]
        loss = (predictions - targets).square()[query_mask].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, attention


def steps_to_learn(losses, threshold=0.3, window=20):
    """First step whose mean loss over the last `window` steps is below `threshold` (the markers' variance
    is 1: a model that ignores the keys stays at ~1); len(losses) when never."""
    running = torch.tensor(losses).unfold(0, window, 1).mean(-1)
    below = (running < threshold).nonzero()
    return int(below[0]) + window if len(below) else len(losses)


@pytest.fixture
def one_thread():
    # One thread: tiny matrices, and on a shared CPU several threads only wait on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_focus_learns_a_known_alignment_faster_than_plain_attention(one_thread):
    losses, attention = train_alignment(use_focus=True, centre_prior="diagonal", initial_width=0.1)  # the default
    queries, keys, query_mask, positions, _ = alignment_batch(torch.Generator().manual_seed(123))  # held out
    with torch.no_grad():
        _, _, centres, widths = attention(queries, keys, query_mask, torch.ones(ALIGN_BATCH, ALIGN_KEYS, dtype=bool))
    error = ((centres[:, 0] - positions).abs() / ALIGN_KEYS)[query_mask]
    assert error.mean() < 0.05, f"centres miss p(i) by {error.mean():.3f} of L_k on average"
    # The offsets are learned, not only the diagonal: centres beat r_i * L_k, which ignores the content.
    relative = (torch.arange(ALIGN_QUERIES)[None] + 0.5) / query_mask.sum(-1, keepdim=True)
    diagonal_error = ((relative * ALIGN_KEYS - positions).abs() / ALIGN_KEYS)[query_mask]
    assert error.mean() < 0.5 * diagonal_error.mean()
    assert widths.mean() / ALIGN_KEYS < 0.1  # narrowed onto about one block

    focus_steps = steps_to_learn(losses)
    plain_steps = steps_to_learn(train_alignment(use_focus=False)[0])
    paper_steps = steps_to_learn(train_alignment(use_focus=True, centre_prior="none", initial_width=0.5)[0])
    assert focus_steps < 150, f"the focus took {focus_steps} steps"
    assert focus_steps < plain_steps / 2, (focus_steps, plain_steps)
    assert focus_steps < paper_steps, (focus_steps, paper_steps)
