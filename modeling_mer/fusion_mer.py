"""Focus attention (You et al., ACL 2019, as used by Kim & Cho 2023) and the crossmodal transformer built on it.

Masks are boolean with True = valid position, shapes (B, T). Padding never changes a valid position's output:
the focus centre, width and the query mean all use each example's own valid lengths.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

# Keeps the Gaussian's denominator away from 0 when a predicted width underflows (sigmoid -> 0).
MIN_FOCUS_WIDTH = 1e-3
# Keeps logit(r) finite for the relative positions r of padded (or empty) sources.
RELATIVE_POSITION_EPS = 1e-4


def sinusoidal_positions(length, dim, device):
    """(length, dim) sine/cosine position table of Vaswani et al. (2017)."""
    positions = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10_000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies[: dim // 2])
    return table


def masked_mean(states, mask):
    """Mean of (B, T, D) states over valid positions of the (B, T) mask -> (B, D)."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def masked_max(states, mask):
    return states.masked_fill(~mask.unsqueeze(-1), torch.finfo(states.dtype).min).amax(1)


class FocusAttention(nn.Module):
    """Multi-head attention whose scores carry a learned Gaussian bias around a predicted focus centre.

    For query i, key j of one head (docs/method.md §2):
        c_i   = tanh(W_q q_i + W_g mean_valid(q))
        mu_i  = L_k * sigmoid(u_p . c_i),  sig_i = L_k * sigmoid(u_z . c_i)
        f_ij  = -(j - mu_i)^2 / (sig_i^2 / 2)
        attn  = softmax(Q K^T / sqrt(d_k) + f + key padding mask) V
    With `focus_source="key"` the centres are predicted from each key over the query positions and the bias
    is transposed (the paper writes f^T and its figure feeds K into the focus block).

    Two departures from the paper, each off at its paper value (`centre_prior="none"`, `initial_width=0.5`):
        mu_i  = L_k * sigmoid(a_h * logit(r_i) + u_p . c_i)      centre_prior="diagonal"
        sig_i = L_k * sigmoid(logit(initial_width) + u_z . c_i)
    r_i = (i + 1/2) / L_q is query i's relative position and a_h a learned per-head gain (starts at 1), so the
    centres start on the diagonal (query at 30 % of its sequence -> key at 30 %) and the content term learns
    the offsets. In the paper's form every centre starts at L_k / 2 and the content cannot tell the queries
    apart by their relative position (sinusoids give absolute positions), and a width of L_k / 2 makes the bias
    span at most 2 nats, so the gradient has neither a reason nor the leverage to move it (NOTES_focus.md).
    """

    def __init__(self, d_model, num_heads, dropout=0.0, use_focus=True, focus_source="query",
                 centre_prior="none", initial_width=0.5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.use_focus = use_focus
        self.focus_source = focus_source
        self.centre_prior = centre_prior
        self.width_offset = math.log(initial_width / (1.0 - initial_width))  # logit: 0 for the paper's 0.5
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        if use_focus:
            # Per-head focus parameters. All are nn.Parameters: the summarisation code left u_p, u_z untrained.
            shape = (num_heads, self.head_dim, self.head_dim)
            self.focus_local = nn.Parameter(torch.empty(shape))  # W_q
            self.focus_global = nn.Parameter(torch.empty(shape))  # W_g
            self.focus_centre = nn.Parameter(torch.empty(num_heads, self.head_dim))  # u_p
            self.focus_width = nn.Parameter(torch.empty(num_heads, self.head_dim))  # u_z
            if centre_prior == "diagonal":
                self.focus_diagonal_gain = nn.Parameter(torch.ones(num_heads))  # a_h
            self.reset_focus_parameters()

    def reset_focus_parameters(self, initializer_range=0.02):
        """The model's `_init_weights` values, so that a FocusAttention built on its own is usable too."""
        with torch.no_grad():
            # W_q, W_g scaled so c_i starts in tanh's linear range; u_p, u_z small but non-zero so that every
            # focus parameter gets a gradient from the first step (zeros would block W_q and W_g).
            nn.init.normal_(self.focus_local, std=self.head_dim**-0.5)
            nn.init.normal_(self.focus_global, std=self.head_dim**-0.5)
            nn.init.normal_(self.focus_centre, std=initializer_range)
            nn.init.normal_(self.focus_width, std=initializer_range)
            if self.centre_prior == "diagonal":
                nn.init.ones_(self.focus_diagonal_gain)

    def _split_heads(self, states):
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d_h)

    def focus_bias(self, source, source_mask, target_length, target_mask):
        """Gaussian bias (B, H, T_source, T_target) and its centres and widths (B, H, T_source).

        `source` (B, H, T_source, d_h) predicts, for each of its positions, where to look among the
        `target_length` positions of the other side, whose valid length comes from `target_mask`.
        """
        weights = source_mask[:, None, :, None].to(source.dtype)  # (B, 1, T_s, 1)
        source_mean = (source * weights).sum(2) / weights.sum(2).clamp(min=1.0)  # (B, H, d_h)
        context = torch.tanh(
            torch.einsum("bhtd,hde->bhte", source, self.focus_local)
            + torch.einsum("bhd,hde->bhe", source_mean, self.focus_global)[:, :, None]
        )  # (B, H, T_s, d_h)
        valid_length = target_mask.sum(-1).to(torch.float32)[:, None, None]  # (B, 1, 1)
        centre_logits = torch.einsum("bhtd,hd->bht", context, self.focus_centre).float()  # (B, H, T_s)
        if self.centre_prior == "diagonal":
            # r = (rank + 1/2) / L_source from the mask itself, so padding anywhere leaves valid positions alone.
            source_length = source_mask.sum(-1, keepdim=True).clamp(min=1).to(torch.float32)  # (B, 1)
            relative = (source_mask.cumsum(-1).to(torch.float32) - 0.5) / source_length  # (B, T_s)
            relative = relative.clamp(RELATIVE_POSITION_EPS, 1.0 - RELATIVE_POSITION_EPS)
            centre_logits = centre_logits + self.focus_diagonal_gain[:, None].float() * torch.logit(relative)[:, None]
        centres = valid_length * torch.sigmoid(centre_logits)
        width_logits = torch.einsum("bhtd,hd->bht", context, self.focus_width).float() + self.width_offset
        widths = valid_length * torch.sigmoid(width_logits)
        positions = torch.arange(target_length, device=source.device, dtype=torch.float32)
        bias = -(positions - centres[..., None]).square() / (widths.clamp(min=MIN_FOCUS_WIDTH)[..., None].square() / 2)
        return bias, centres, widths

    def forward(self, query_states, key_states, query_mask, key_mask, output_attentions=False):
        query = self._split_heads(self.q_proj(query_states))  # (B, H, T_q, d_h)
        key = self._split_heads(self.k_proj(key_states))  # (B, H, T_k, d_h)
        value = self._split_heads(self.v_proj(key_states))  # (B, H, T_k, d_h)

        centres = widths = None
        bias = torch.zeros(key_mask.shape[0], 1, 1, key_mask.shape[1], device=query.device)  # (B, 1, 1, T_k)
        if self.use_focus:
            if self.focus_source == "query":
                bias, centres, widths = self.focus_bias(query, query_mask, key.shape[2], key_mask)
            else:
                bias, centres, widths = self.focus_bias(key, key_mask, query.shape[2], query_mask)
                bias = bias.transpose(-1, -2)  # (B, H, T_q, T_k)
        bias = bias.masked_fill(~key_mask[:, None, None, :], float("-inf")).to(query.dtype)  # (B, H|1, T_q|1, T_k)

        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim) + bias  # (B, H, T_q, T_k)
            probabilities = scores.softmax(-1)
            attended = F.dropout(probabilities, dropout, self.training) @ value
        else:
            probabilities = None
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout)
        batch, _, query_length, _ = attended.shape
        attended = attended.transpose(1, 2).reshape(batch, query_length, -1)  # (B, T_q, D)
        return self.out_proj(attended), probabilities, centres, widths


class FusionLayer(nn.Module):
    """Attention (with the focus term) -> Add & Norm -> feed-forward -> Add & Norm, as in the paper's figure."""

    def __init__(self, d_model, num_heads, attention_dropout, hidden_dropout, use_focus, focus_source,
                 centre_prior="none", initial_width=0.5):
        super().__init__()
        self.attention = FocusAttention(d_model, num_heads, attention_dropout, use_focus, focus_source,
                                        centre_prior, initial_width)
        self.attention_norm = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Dropout(hidden_dropout), nn.Linear(4 * d_model, d_model)
        )
        self.output_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(self, states, context, states_mask, context_mask, output_attentions=False):
        attended, probabilities, centres, widths = self.attention(
            states, context, states_mask, context_mask, output_attentions
        )
        states = self.attention_norm(states + self.dropout(attended))
        states = self.output_norm(states + self.dropout(self.feed_forward(states)))
        return states, probabilities, centres, widths


class CrossmodalTransformer(nn.Module):
    """D fusion layers whose queries come from one modality and keys/values from another (MulT's L->A, A->L)."""

    def __init__(self, num_layers, d_model, num_heads, attention_dropout, hidden_dropout, use_focus, focus_source,
                 centre_prior="none", initial_width=0.5):
        super().__init__()
        self.layers = nn.ModuleList(
            FusionLayer(d_model, num_heads, attention_dropout, hidden_dropout, use_focus, focus_source,
                        centre_prior, initial_width)
            for _ in range(num_layers)
        )

    def forward(self, states, context, states_mask, context_mask, output_attentions=False):
        attentions, centres, widths = [], [], []
        for layer in self.layers:
            states, layer_attention, layer_centres, layer_widths = layer(
                states, context, states_mask, context_mask, output_attentions
            )
            attentions.append(layer_attention)
            centres.append(layer_centres)
            widths.append(layer_widths)
        return states, attentions, centres, widths
