"""The two SSL encoders and the speech side's prosody branch ("A-wav2vec 2.0" in Kim & Cho 2023)."""

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModel

from .spectral_mer import SpectralFeatures

# Log powers span about -14..10 and MFCCs about +-50: scale them near unit range before the CNN and BiLSTM
# without per-utterance normalisation, which would erase loudness, an emotion cue.
SPECTRAL_INPUT_SCALE = 0.1


class LayerWeightedSum(nn.Module):
    """Softmax-weighted sum of all hidden layers (SUPERB-style) instead of the last one."""

    def __init__(self, num_layers):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(num_layers))

    def forward(self, hidden_states):
        stacked = torch.stack(hidden_states, dim=0)  # (layers, B, T, D)
        weights = self.layer_weights.softmax(0).to(stacked.dtype)
        return torch.einsum("l,lbtd->btd", weights, stacked)


class TextEncoder(nn.Module):
    """Any `AutoModel` text encoder; returns token states (B, T_text, d_text)."""

    def __init__(self, config, use_weighted_layer_sum=False):
        super().__init__()
        self.model = AutoModel.from_config(config)
        # The pooler is never used; leaving it would give it no gradient and waste a matmul.
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        self.layer_sum = LayerWeightedSum(config.num_hidden_layers + 1) if use_weighted_layer_sum else None

    def forward(self, input_ids, attention_mask):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             output_hidden_states=self.layer_sum is not None, return_dict=True)
        if self.layer_sum is not None:
            return self.layer_sum(outputs.hidden_states)
        return outputs.last_hidden_state


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics use each example's valid time steps only.

    wav2vec2-base-style feature encoders normalise their first conv layer over time, padding included, so a
    padded batch would not reproduce each example alone. The speech encoder sets `frame_lengths` before each
    forward; with no padding, or when the shapes do not match, this is exactly `nn.GroupNorm`. The lengths stay
    set after the forward so that a gradient-checkpointing recompute in backward sees the same ones.
    """

    frame_lengths = None

    @classmethod
    def replacing(cls, group_norm):
        masked = cls(group_norm.num_groups, group_norm.num_channels, group_norm.eps, group_norm.affine)
        masked.load_state_dict(group_norm.state_dict())
        return masked

    def forward(self, states):  # (B, C, T)
        lengths = self.frame_lengths
        if lengths is None or lengths.shape[0] != states.shape[0]:
            return super().forward(states)
        # Unpadded batches take the stock kernel; an exported graph (ONNX) cannot branch on values and always
        # takes the masked path, which gives the same result on unpadded input.
        if not torch.compiler.is_exporting() and bool((lengths == states.shape[-1]).all()):
            return super().forward(states)
        batch, channels, time = states.shape
        grouped = states.view(batch, self.num_groups, channels // self.num_groups, time)
        valid = (torch.arange(time, device=states.device)[None, :] < lengths[:, None]).to(states.dtype)
        valid = valid[:, None, None, :]  # (B, 1, 1, T)
        count = valid.sum((2, 3), keepdim=True) * grouped.shape[2]
        mean = (grouped * valid).sum((2, 3), keepdim=True) / count
        variance = ((grouped - mean).square() * valid).sum((2, 3), keepdim=True) / count
        normalised = ((grouped - mean) / torch.sqrt(variance + self.eps)).view(batch, channels, time)
        if self.affine:
            normalised = normalised * self.weight[None, :, None] + self.bias[None, :, None]
        return normalised


def receptive_field(audio_config):
    """Fewest samples that give one frame of the conv feature encoder (400 = 25 ms for wav2vec2-base)."""
    samples = 1
    for kernel, stride in reversed(list(zip(audio_config.conv_kernel, audio_config.conv_stride, strict=True))):
        samples = (samples - 1) * stride + kernel
    return samples


class ProsodyBranch(nn.Module):
    """Log-mel CNN + MFCC BiLSTM, read by guided attention whose queries are the wav2vec2 frames.

    Output = LayerNorm(wav2vec2 frames + attention(frames -> prosody features)), the skip of the paper's figure.
    """

    def __init__(self, config, audio_config):
        super().__init__()
        hidden = config.prosody_hidden_size
        audio_hidden_size = audio_config.hidden_size
        # Frame the spectra like the conv encoder (window = receptive field, hop = total stride) so that
        # spectral frame t and encoder frame t cover the same samples and share one mask.
        window = receptive_field(audio_config)
        self.spectral = SpectralFeatures(config.num_mel_bins, config.num_mfcc, window_length=window,
                                         hop_length=math.prod(audio_config.conv_stride),
                                         n_fft=1 << (window - 1).bit_length())
        # Kernels span 3 frames but pooling only reduces frequency, so frame t stays aligned with encoder frame t.
        self.spectrogram_cnn = nn.ModuleList([
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
        ])
        self.frequency_pool = nn.MaxPool2d(kernel_size=(1, 2))
        self.spectrogram_projection = nn.Linear(32 * (config.num_mel_bins // 4), hidden)
        self.mfcc_lstm = nn.LSTM(config.num_mfcc, hidden // 2, num_layers=config.mfcc_lstm_layers,
                                 batch_first=True, bidirectional=True)
        self.key_projection = nn.Linear(2 * hidden, hidden)
        self.query_projection = nn.Linear(audio_hidden_size, hidden)
        self.guided_attention = nn.MultiheadAttention(hidden, num_heads=4, batch_first=True)
        self.output_projection = nn.Linear(hidden, audio_hidden_size)
        self.output_norm = nn.LayerNorm(audio_hidden_size)

    def encode_spectrogram(self, log_mel, frame_mask):
        keep = frame_mask[:, None, :, None].to(log_mel.dtype)  # (B, 1, T, 1)
        states = log_mel.unsqueeze(1)  # (B, 1, T, mels)
        for conv in self.spectrogram_cnn:
            # Zero padded frames before every conv, so a valid frame next to padding sees what it would alone.
            states = self.frequency_pool(nn.functional.gelu(conv(states * keep)))
        batch, channels, time, bins = states.shape
        return self.spectrogram_projection(states.permute(0, 2, 1, 3).reshape(batch, time, channels * bins))

    def encode_mfcc(self, mfcc, frame_mask):
        lengths = frame_mask.sum(-1).cpu()
        packed = pack_padded_sequence(mfcc, lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.mfcc_lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=mfcc.shape[1])
        return states

    def forward(self, input_values, frames, frame_mask):
        log_mel, mfcc = self.spectral(input_values)
        num_frames = frames.shape[1]
        # Same framing as the encoder, so the counts agree; fitting guards encoders with padded convolutions.
        log_mel, mfcc = _fit_length(log_mel, num_frames), _fit_length(mfcc, num_frames)
        log_mel = (log_mel * SPECTRAL_INPUT_SCALE).to(frames.dtype)
        mfcc = (mfcc * SPECTRAL_INPUT_SCALE).to(frames.dtype)
        prosody = torch.cat([self.encode_spectrogram(log_mel, frame_mask), self.encode_mfcc(mfcc, frame_mask)], -1)
        keys = self.key_projection(prosody)  # (B, T_a, hidden)
        guided, _ = self.guided_attention(self.query_projection(frames), keys, keys,
                                          key_padding_mask=~frame_mask, need_weights=False)
        return self.output_norm(frames + self.output_projection(guided))


def _fit_length(states, length):
    if states.shape[1] >= length:
        return states[:, :length]
    return nn.functional.pad(states, (0, 0, 0, length - states.shape[1]))


class SpeechEncoder(nn.Module):
    """A wav2vec2-family encoder (+ optional prosody branch); returns frames (B, T_a, d_audio) and their mask."""

    def __init__(self, config, audio_config):
        super().__init__()
        self.model = AutoModel.from_config(audio_config)
        self.min_samples = receptive_field(audio_config)
        first_layer = self.model.feature_extractor.conv_layers[0]
        if isinstance(getattr(first_layer, "layer_norm", None), nn.GroupNorm):
            first_layer.layer_norm = MaskedGroupNorm.replacing(first_layer.layer_norm)
        self.layer_sum = (LayerWeightedSum(audio_config.num_hidden_layers + 1)
                          if config.use_weighted_layer_sum else None)
        self.prosody = ProsodyBranch(config, audio_config) if config.use_prosody_branch else None

    @property
    def first_norm(self):
        """The masked group norm of the first conv layer, or None for layer-norm feature encoders."""
        norm = getattr(self.model.feature_extractor.conv_layers[0], "layer_norm", None)
        return norm if isinstance(norm, MaskedGroupNorm) else None

    def check_lengths(self, audio_attention_mask):
        lengths = audio_attention_mask.sum(-1)
        too_short = (lengths < self.min_samples).nonzero().flatten().tolist()
        if too_short:
            index = too_short[0]
            raise ValueError(
                f"Audio example {index} has {int(lengths[index])} samples, fewer than the speech encoder's receptive "
                f"field of {self.min_samples} samples ({self.min_samples / 16:.0f} ms at 16 kHz); "
                f"{len(too_short)} example(s) are too short. Pad them with silence or drop them."
            )

    def frame_mask(self, audio_attention_mask, num_frames):
        return self.model._get_feature_vector_attention_mask(num_frames, audio_attention_mask).bool()

    def forward(self, input_values, audio_attention_mask):
        if self.first_norm is not None:
            first = self.model.feature_extractor.conv_layers[0].conv
            lengths = audio_attention_mask.sum(-1)
            self.first_norm.frame_lengths = torch.div(lengths - first.kernel_size[0], first.stride[0],
                                                      rounding_mode="floor") + 1
        # The processor gives float32 audio; a model loaded in bf16/fp16 takes it as is.
        outputs = self.model(input_values.to(self.model.dtype), attention_mask=audio_attention_mask,
                             output_hidden_states=self.layer_sum is not None, return_dict=True)
        frames = self.layer_sum(outputs.hidden_states) if self.layer_sum is not None else outputs.last_hidden_state
        frame_mask = self.frame_mask(audio_attention_mask, frames.shape[1])
        return frames, frame_mask

    def add_prosody(self, input_values, frames, frame_mask):
        if self.prosody is None:
            return frames
        return self.prosody(input_values, frames, frame_mask)
