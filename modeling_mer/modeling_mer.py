"""MERModel and MERForSequenceClassification: text + speech encoders fused by focus-attention crossmodal transformers."""

import copy
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import get_cached_module_file, get_relative_import_files
from transformers.utils import HF_MODULES_CACHE, ModelOutput

from .configuration_mer import MERConfig
from .encoders_mer import SpeechEncoder, TextEncoder, receptive_field
from .fusion_mer import (
    CrossmodalTransformer,
    FocusAttention,
    FusionLayer,
    masked_max,
    masked_mean,
    sinusoidal_positions,
)
from .losses_mer import cross_entropy, joint_loss
from .prosody_statistics_mer import ProsodyStatistics
from .spectral_mer import SpectralFeatures

logger = logging.getLogger(__name__)

# Every saved folder maps all entry points, whichever class was saved, so any Auto class loads it.
AUTO_MAP = {
    "AutoConfig": "configuration_mer.MERConfig",
    "AutoModel": "modeling_mer.MERModel",
    "AutoModelForSequenceClassification": "modeling_mer.MERForSequenceClassification",
    "AutoModelForAudioClassification": "modeling_mer.MERForSequenceClassification",
    "AutoProcessor": "processing_mer.MERProcessor",
}
# Shipped files that the model's own imports do not reach but a Hub folder needs (processor, pipeline).
EXTRA_SHIPPED_FILES = ("processing_mer.py", "pipeline_mer.py")
# The pipeline registration `pipeline()` reads from config.json: with it, `pipeline(model=folder_or_repo,
# trust_remote_code=True)` infers the task and both that and `pipeline("multimodal-emotion-recognition", ...)`
# load MERPipeline from the shipped pipeline_mer.py (the same entry Pipeline.save_pretrained would write).
CUSTOM_PIPELINES = {
    "multimodal-emotion-recognition": {
        "impl": "pipeline_mer.MERPipeline",
        "pt": ["AutoModelForSequenceClassification"],
        "type": "multimodal",
    }
}


@dataclass
class MERModelOutput(ModelOutput):
    """Fused embedding F(x) plus every branch's states; attentions and focus only with `output_attentions=True`.

    Attention maps are per layer, (B, heads, T_query, T_key). Focus centres and widths are per layer,
    (B, heads, T_query), measured in key positions: `text_to_audio` (audio frames query text tokens) gives
    token positions, `audio_to_text` gives frame positions (20 ms each).
    """

    embeddings: torch.FloatTensor = None
    branch_embeddings: tuple | None = None
    text_states: torch.FloatTensor | None = None
    audio_states: torch.FloatTensor | None = None
    text_mask: torch.BoolTensor | None = None
    audio_frame_mask: torch.BoolTensor | None = None
    text_to_audio_attentions: tuple | None = None
    audio_to_text_attentions: tuple | None = None
    text_to_audio_focus_centres: tuple | None = None
    text_to_audio_focus_widths: tuple | None = None
    audio_to_text_focus_centres: tuple | None = None
    audio_to_text_focus_widths: tuple | None = None


@dataclass
class MERSequenceClassifierOutput(ModelOutput):
    """`loss = ce_loss + triplet_weight * triplet_loss (+ auxiliary_loss_weight * auxiliary_loss)`, loss first as
    the Trainer expects; then MERModelOutput's fields."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor = None
    embeddings: torch.FloatTensor = None
    ce_loss: torch.FloatTensor | None = None
    triplet_loss: torch.FloatTensor | None = None
    auxiliary_loss: torch.FloatTensor | None = None
    branch_logits: tuple | None = None
    branch_embeddings: tuple | None = None
    text_states: torch.FloatTensor | None = None
    audio_states: torch.FloatTensor | None = None
    text_mask: torch.BoolTensor | None = None
    audio_frame_mask: torch.BoolTensor | None = None
    text_to_audio_attentions: tuple | None = None
    audio_to_text_attentions: tuple | None = None
    text_to_audio_focus_centres: tuple | None = None
    text_to_audio_focus_widths: tuple | None = None
    audio_to_text_focus_centres: tuple | None = None
    audio_to_text_focus_widths: tuple | None = None


def _hide(vector, hidden):
    """Zero the (B, d) pooled vectors of the examples whose modality is hidden (modality dropout), else as is.
    A hidden text also zeroes the text branch's pooled vector, which after crossmodal attention carries audio:
    the rest of the model must then decide from the other branch alone."""
    return vector if hidden is None else vector.masked_fill(hidden[:, None], 0.0)


def _never_empty(mask):
    """A (B, T) mask whose rows with no valid position get their first one, with tensor ops only (no host
    sync). Attention over no key at all gives NaN, and in training one NaN example makes the whole batch's
    loss and gradients NaN. Rows with a valid position are returned unchanged."""
    first = torch.zeros_like(mask)
    first[:, 0] = True
    return mask | (first & ~mask.any(dim=-1, keepdim=True))


class MERPreTrainedModel(PreTrainedModel):
    config_class = MERConfig
    base_model_prefix = "mer"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, FocusAttention) and module.use_focus:
            # W_q, W_g scaled so c_i starts in tanh's linear range; u_p, u_z small but non-zero so that every
            # focus parameter gets a gradient from the first step (zeros would block W_q and W_g).
            init.normal_(module.focus_local, std=module.head_dim ** -0.5)
            init.normal_(module.focus_global, std=module.head_dim ** -0.5)
            init.normal_(module.focus_centre, std=self.config.initializer_range)
            init.normal_(module.focus_width, std=self.config.initializer_range)
            if module.centre_prior == "diagonal":
                init.ones_(module.focus_diagonal_gain)  # start on the diagonal alignment
        elif isinstance(module, SpectralFeatures):
            for name, value in module.buffer_values().items():
                init.copy_(getattr(module, name), value)
        elif isinstance(module, nn.LSTM):
            for name, parameter in module.named_parameters():
                if "weight" in name:
                    init.xavier_uniform_(parameter)
                else:
                    init.zeros_(parameter)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights and config with the full `auto_map` and the pipeline registration, plus the processor and
        pipeline code files."""
        self.config.auto_map = dict(AUTO_MAP)
        # A copy: transformers' pipeline() replaces the class names in this dict by classes when it loads one.
        self.config.custom_pipelines = copy.deepcopy(CUSTOM_PIPELINES)
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        here = Path(__file__).parent
        for name in EXTRA_SHIPPED_FILES:
            path = here / name
            if not path.exists():
                # Loaded with trust_remote_code, only the model's own files were fetched; re-saving (e.g. after
                # fine-tuning) must still ship the processor and pipeline that auto_map/custom_pipelines name.
                try:
                    path = Path(HF_MODULES_CACHE) / get_cached_module_file(
                        self.config._name_or_path, name, revision=getattr(self.config, "_commit_hash", None))
                except (OSError, ValueError) as error:
                    logger.warning("%s is not next to this model's code and could not be fetched from %r (%s); "
                                   "the saved folder will lack it.", name, self.config._name_or_path, error)
                    continue
            for source in [path, *map(Path, get_relative_import_files(str(path)))]:
                shutil.copyfile(source, Path(save_directory) / source.name)

    def apply_freezing(self):
        """Apply the config's freezing switches (called at build time; call again after changing them)."""
        mer = self.base_model  # the MERModel (itself for MERModel), via base_model_prefix
        if mer.speech_encoder is not None:
            if self.config.freeze_audio_encoder or self.config.freeze_feature_encoder:
                # Also flips the CNN's own `_requires_grad` flag: with only requires_grad_(False), wav2vec2 still
                # marks the CNN output as needing gradients and every step backpropagates through the frozen model.
                mer.speech_encoder.model.freeze_feature_encoder()
            if self.config.freeze_audio_encoder:
                mer.speech_encoder.model.requires_grad_(False)
        if mer.text_encoder is not None and self.config.freeze_text_encoder:
            mer.text_encoder.model.requires_grad_(False)

    def freeze_feature_encoder(self):
        self.config.freeze_feature_encoder = True
        self.apply_freezing()

    def freeze_audio_encoder(self):
        self.config.freeze_audio_encoder = True
        self.apply_freezing()

    def freeze_text_encoder(self):
        self.config.freeze_text_encoder = True
        self.apply_freezing()

    @classmethod
    def from_encoders_pretrained(cls, text_model=None, audio_model=None, **config_kwargs):
        """A model whose encoders carry pretrained weights (Hub ids or local folders); fusion and head are new.

        `config_kwargs` go to `MERConfig` (e.g. `modalities=("text",)`, `id2label=...`).
        """
        encoder_configs = {}
        if text_model is not None:
            encoder_configs["text_config"] = AutoConfig.from_pretrained(text_model)
        if audio_model is not None:
            encoder_configs["audio_config"] = AutoConfig.from_pretrained(audio_model)
        model = cls(MERConfig(**encoder_configs, **config_kwargs))
        mer = model.base_model
        for source, encoder in ((text_model, mer.text_encoder), (audio_model, mer.speech_encoder)):
            if source is None or encoder is None:
                continue
            pretrained = AutoModel.from_pretrained(source).state_dict()
            result = encoder.model.load_state_dict(pretrained, strict=False)
            # Only the unused pooler may be left behind; anything else means a mismatched architecture.
            unexpected = [key for key in result.unexpected_keys if not key.startswith("pooler.")]
            if result.missing_keys or unexpected:
                raise ValueError(f"Weights of {source} do not fit its config: missing {result.missing_keys[:5]}, "
                                 f"unexpected {unexpected[:5]}.")
        model.apply_freezing()
        return model


class MERModel(MERPreTrainedModel):
    """Encoders + fusion; returns the fused embedding F(x) and the per-branch states."""

    def __init__(self, config: MERConfig):
        super().__init__(config)
        d_model = config.d_model
        self.text_encoder = TextEncoder(config.text_config, config.use_weighted_layer_sum) if config.uses_text else None
        self.speech_encoder = SpeechEncoder(config, config.audio_config) if config.uses_audio else None
        if config.uses_text:
            # A kernel-1 Conv1d over time (the paper's projection) is this Linear.
            self.text_projection = nn.Linear(config.text_config.hidden_size, d_model)
        if config.uses_audio:
            self.audio_projection = nn.Linear(config.audio_config.hidden_size, d_model)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)

        def crossmodal():
            return CrossmodalTransformer(config.num_crossmodal_layers, d_model, config.num_attention_heads,
                                         config.attention_dropout, config.hidden_dropout,
                                         config.use_focus_attention, config.focus_source,
                                         config.focus_centre_prior, config.focus_initial_width)

        def self_attention():
            return FusionLayer(d_model, config.num_attention_heads, config.attention_dropout, config.hidden_dropout,
                               use_focus=False, focus_source=config.focus_source)

        if config.uses_text and config.uses_audio:
            self.text_to_audio = crossmodal()  # queries: audio frames; keys/values: text tokens
            self.audio_to_text = crossmodal()  # queries: text tokens; keys/values: audio frames
        elif config.uses_text:
            self.text_to_text = crossmodal()  # unimodal ablation: same depth, attending to itself
        else:
            self.audio_to_audio = crossmodal()
        if config.uses_text:
            self.text_self_attention = self_attention()
        if config.uses_audio:
            self.audio_self_attention = self_attention()
        pooled_vectors = len(config.modalities)
        self.prosody_statistics = None
        if config.uses_audio and config.use_prosody_statistics:
            self.prosody_statistics = ProsodyStatistics(config, receptive_field(config.audio_config),
                                                        config.audio_config.inputs_to_logits_ratio)
            pooled_vectors += 1
        self.embedding = nn.Linear(pooled_vectors * d_model, config.embedding_size)
        self.post_init()
        self.apply_freezing()

    def _embed(self, states, projection):
        states = projection(states) * math.sqrt(self.config.d_model)
        states = states + sinusoidal_positions(states.shape[1], states.shape[2], states.device).to(states.dtype)
        return self.embedding_dropout(states)

    def _pool(self, states, mask):
        return masked_mean(states, mask) if self.config.pooling == "mean" else masked_max(states, mask)

    def _check_inputs(self, input_ids, attention_mask, input_values, audio_attention_mask):
        """Checks on what is known without reading tensor values (presence, shapes), so no host sync; returns
        the two masks, filled in when absent. Value checks (empty transcripts, too-short audio, label ids)
        happen where the data is still on the host: MERProcessor, the pipeline, the corpus loaders."""
        needed = {"text": ("input_ids", input_ids), "audio": ("input_values", input_values)}
        for modality in self.config.modalities:
            name, value = needed[modality]
            if value is None:
                raise ValueError(f"This model uses modalities={self.config.modalities} and needs `{name}`; "
                                 "build the inputs with MERProcessor.")
        if input_ids is not None and input_values is not None and input_ids.shape[0] != input_values.shape[0]:
            raise ValueError(f"input_ids holds {input_ids.shape[0]} transcripts but input_values holds "
                             f"{input_values.shape[0]} waveforms; the batch sizes must match.")
        if self.config.uses_text and attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.config.uses_audio:
            if input_values.dim() != 2:
                raise ValueError(f"input_values must be (batch, samples) mono 16 kHz audio, got {tuple(input_values.shape)}.")
            if audio_attention_mask is None:
                audio_attention_mask = torch.ones_like(input_values, dtype=torch.long)
        return attention_mask, audio_attention_mask

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        input_values=None,
        audio_attention_mask=None,
        output_attentions=False,
        return_dict=None,
        text_encoder_states=None,
        audio_encoder_states=None,
    ):
        r"""
        Always returns a ModelOutput; `return_dict` is accepted for compatibility with callers that pass it.
        text_encoder_states / audio_encoder_states: precomputed outputs of frozen encoders (the training feature
            cache); when given, that encoder is skipped. The prosody branch still reads `input_values`.

        No check here reads tensor values (that would stall a GPU every step and break `torch.compile`'s
        graph). Inputs built by MERProcessor or the pipeline are already checked; for inputs that bypass them:
        an example whose transcript has no tokens, or whose audio is shorter than the speech encoder's
        receptive field (no frames), attends to its first (padding) position instead and gets a finite but
        meaningless prediction; label ids outside `[0, num_labels)` fail in `cross_entropy`.
        """
        attention_mask, audio_attention_mask = self._check_inputs(input_ids, attention_mask, input_values,
                                                                  audio_attention_mask)
        pooled, output = [], MERModelOutput()
        if self.config.uses_text:
            text_mask = _never_empty(attention_mask.bool())
            if text_encoder_states is None:
                text_encoder_states = self.text_encoder(input_ids, attention_mask)
            text = self._embed(text_encoder_states, self.text_projection)  # (B, T_text, d_model)
            output.text_mask = text_mask
        if self.config.uses_audio:
            if audio_encoder_states is None:
                frames, frame_mask = self.speech_encoder(input_values, audio_attention_mask)
            else:
                frames = audio_encoder_states
                frame_mask = self.speech_encoder.frame_mask(audio_attention_mask, frames.shape[1])
            frame_mask = _never_empty(frame_mask)
            frames = self.speech_encoder.add_prosody(input_values, frames, frame_mask)
            audio = self._embed(frames, self.audio_projection)  # (B, T_audio, d_model)
            output.audio_frame_mask = frame_mask

        hidden_text = hidden_audio = None
        if self.training and self.config.modality_dropout > 0:
            hidden_text, hidden_audio = self._hidden_modalities(text.shape[0], text.device)
            text = text.masked_fill(hidden_text[:, None, None], 0.0)
            audio = audio.masked_fill(hidden_audio[:, None, None], 0.0)

        if self.config.uses_text and self.config.uses_audio:
            audio_fused, *t2a = self.text_to_audio(audio, text, frame_mask, text_mask, output_attentions)
            text_fused, *a2t = self.audio_to_text(text, audio, text_mask, frame_mask, output_attentions)
            if output_attentions:
                (output.text_to_audio_attentions, output.text_to_audio_focus_centres,
                 output.text_to_audio_focus_widths) = (tuple(x) for x in t2a)
                (output.audio_to_text_attentions, output.audio_to_text_focus_centres,
                 output.audio_to_text_focus_widths) = (tuple(x) for x in a2t)
        elif self.config.uses_text:
            text_fused, *_ = self.text_to_text(text, text, text_mask, text_mask)
        else:
            audio_fused, *_ = self.audio_to_audio(audio, audio, frame_mask, frame_mask)

        if self.config.uses_text:
            output.text_states = self.text_self_attention(text_fused, text_fused, text_mask, text_mask)[0]
            pooled.append(_hide(self._pool(output.text_states, text_mask), hidden_text))
        if self.config.uses_audio:
            output.audio_states = self.audio_self_attention(audio_fused, audio_fused, frame_mask, frame_mask)[0]
            pooled.append(_hide(self._pool(output.audio_states, frame_mask), hidden_audio))
            if self.prosody_statistics is not None:
                pooled.append(_hide(self.prosody_statistics(input_values, frame_mask), hidden_audio))
        output.branch_embeddings = tuple(pooled)
        output.embeddings = self.embedding(torch.cat(pooled, dim=-1))  # F(x): (B, embedding_size)
        return output

    def _hidden_modalities(self, batch, device):
        """Modality dropout: (B,) masks of the examples whose text, or whose audio, is hidden this step.
        Drawn on the device (no host sync); an example never loses both."""
        dropped = torch.rand(batch, device=device) < self.config.modality_dropout
        text_side = torch.rand(batch, device=device) < 0.5
        return dropped & text_side, dropped & ~text_side


class MERForSequenceClassification(MERPreTrainedModel):
    """MERModel + classifier, trained with cross-entropy + triplet_weight * triplet loss on F(x)."""

    def __init__(self, config: MERConfig):
        super().__init__(config)
        self.mer = MERModel(config)
        self.classifier = nn.Sequential(
            nn.GELU(), nn.Dropout(config.hidden_dropout), nn.Linear(config.embedding_size, config.num_labels)
        )
        self.branch_classifiers = None
        if config.has_branch_heads:
            # One linear head per pooled branch vector, in MERModel's order: text, audio, prosody statistics.
            branches = len(config.modalities) + int(config.uses_audio and config.use_prosody_statistics)
            self.branch_classifiers = nn.ModuleList(
                nn.Sequential(nn.Dropout(config.hidden_dropout), nn.Linear(config.d_model, config.num_labels))
                for _ in range(branches)
            )
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        input_values=None,
        audio_attention_mask=None,
        labels=None,
        output_attentions=False,
        return_dict=None,
        text_encoder_states=None,
        audio_encoder_states=None,
    ):
        fused = self.mer(input_ids, attention_mask, input_values, audio_attention_mask, output_attentions,
                         text_encoder_states=text_encoder_states, audio_encoder_states=audio_encoder_states)
        logits = self.classifier(fused.embeddings)
        branch_logits = None
        if self.branch_classifiers is not None:
            branch_logits = tuple(head(vector) for head, vector in zip(self.branch_classifiers, fused.branch_embeddings, strict=True))
            if self.config.late_fusion:
                logits = logits + torch.stack(branch_logits).sum(0)
        loss = ce_loss = triplet_loss = auxiliary_loss = None
        if labels is not None:
            smoothing = self.config.label_smoothing
            loss, ce_loss, triplet_loss = joint_loss(logits, fused.embeddings, labels, self.config.triplet_weight,
                                                     self.config.triplet_margin, self.config.triplet_mining, smoothing)
            if self.config.auxiliary_loss_weight > 0:
                branch_losses = [cross_entropy(branch, labels, smoothing) for branch in branch_logits]
                auxiliary_loss = torch.stack(branch_losses).mean()
                loss = loss + self.config.auxiliary_loss_weight * auxiliary_loss
        return MERSequenceClassifierOutput(loss=loss, logits=logits, ce_loss=ce_loss, triplet_loss=triplet_loss,
                                           auxiliary_loss=auxiliary_loss, branch_logits=branch_logits,
                                           **{key: value for key, value in fused.items()})


MERModel.register_for_auto_class("AutoModel")
MERForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
