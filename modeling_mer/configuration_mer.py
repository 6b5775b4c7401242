"""MERConfig: two SSL encoders, a prosody branch, focus-attention crossmodal fusion and the joint loss."""

from transformers import AutoConfig, PretrainedConfig

# The facts every other module imports from here (one definition each).
SAMPLING_RATE = 16_000  # the wav2vec2 family was pretrained on 16 kHz audio; the processor resamples to it
IEMOCAP_4CLASS_LABELS = ("neutral", "happy", "sad", "angry")  # the 4-class protocol's order = label ids
TASK = "multimodal-emotion-recognition"  # the pipeline task name, registered by pipeline_mer
# The paper does not give its margin. 0.3 on squared L2 between L2-normalised embeddings (range [0, 4]) is a
# little wider than FaceNet's 0.2 for the same distance: with 4 classes, and not thousands of identities, the
# clusters can afford to sit further apart. Every result in the README was trained with it.
DEFAULT_TRIPLET_MARGIN = 0.3

MODALITIES = (("text", "audio"), ("text",), ("audio",))
FOCUS_SOURCES = ("query", "key")
# "none" is the paper's centre (content only, every centre starts at L_k / 2); "diagonal" adds each position's
# relative place in its own sequence, so centres start on the proportional alignment (NOTES_focus.md).
FOCUS_CENTRE_PRIORS = ("none", "diagonal")
POOLINGS = ("mean", "max")
TRIPLET_MININGS = ("batch_hard", "batch_all", "semi_hard")
# Encoders whose output frames come from the wav2vec2 convolutional feature encoder.
SPEECH_ENCODER_TYPES = ("wav2vec2", "hubert", "wavlm", "wav2vec2-conformer", "data2vec-audio", "unispeech-sat", "sew")


def _build_sub_config(value, default_model_type, field):
    """Sub-configs are never None: dicts are rebuilt through the config registry (AutoConfig.for_model)."""
    if value is None:
        return AutoConfig.for_model(default_model_type)
    if isinstance(value, PretrainedConfig):
        return value
    if isinstance(value, dict):
        value = dict(value)
        model_type = value.pop("model_type", default_model_type)
        return AutoConfig.for_model(model_type, **value)
    raise ValueError(f"{field} must be a config, a dict or None, got {type(value).__name__}.")


class MERConfig(PretrainedConfig):
    r"""
    Configuration of a multimodal emotion recognition model (Kim & Cho, INTERSPEECH 2023).

    Args:
        text_config: config of any `AutoModel` text encoder (RoBERTa, BERT, DeBERTa, MiniLM). Default: roberta-base shape.
        audio_config: config of a wav2vec2-family speech encoder (wav2vec2, HuBERT, WavLM). Default: wav2vec2-base shape.
        modalities: `("text", "audio")` for fusion, `("text",)` or `("audio",)` for the unimodal ablations.
        d_model: width of the fusion transformers (MulT used 30-40; we default wider, it costs ~1 % of the encoders).
        num_crossmodal_layers: depth D of each crossmodal transformer.
        num_attention_heads: heads of every fusion attention block; must divide `d_model`.
        attention_dropout, hidden_dropout, embedding_dropout: fusion dropouts (MulT: 0.25 attention dropout).
        use_focus_attention: add the Gaussian focus bias of You et al. (2019) to crossmodal attention.
        focus_source: predict the focus centres from the `"query"` positions (default) or the `"key"` positions
            (the paper's figure feeds K into the focus block; then the bias is transposed).
        focus_centre_prior: `"diagonal"` (default) starts each centre at its source position's relative place,
            `L_k * sigmoid(a * logit(r_i) + u_p . c_i)` with a learned per-head gain `a`; `"none"` is the paper's
            `L_k * sigmoid(u_p . c_i)`, whose centres stay at L_k / 2 in training.
        focus_initial_width: focus width at initialisation as a fraction of the other sequence's valid length,
            `sig_i = L_k * sigmoid(logit(focus_initial_width) + u_z . c_i)`. The paper's form is 0.5, a bias of at
            most 2 nats that barely shapes attention; the default 0.1 focuses on about a word.
            `focus_centre_prior="none", focus_initial_width=0.5` is exactly the paper's focus attention.
        use_prosody_branch: add the log-mel CNN + MFCC BiLSTM branch with guided attention on the speech side.
        num_mel_bins, num_mfcc, prosody_hidden_size, mfcc_lstm_layers: prosody branch sizes.
        use_prosody_statistics: also give the head utterance-level pitch, voicing, energy and MFCC statistics
            (mean and spread over frames) as one more pooled vector: what a classic acoustic baseline sees.
        pooling: `"mean"` or `"max"` over each branch's valid positions.
        modality_dropout: probability, per training example, that one of the two modalities (either, at even
            odds) is hidden: its sequence enters the fusion as zeros and its pooled vectors are zeroed, so that
            neither branch can lean on the other and each learns to decide alone. Bimodal models only; 0 = off.
        auxiliary_loss_weight: weight of an extra cross-entropy on each branch's own pooled vector (text, audio,
            prosody statistics), each through its own linear head; the loss becomes
            `CE + triplet_weight * triplet + auxiliary_loss_weight * mean(branch CEs)`. 0 = off.
        late_fusion: add the branch heads' logits to the fused classifier's logits (a product of the branches'
            experts beside the crossmodal embedding), at training and inference. Builds the branch heads.
        label_smoothing: epsilon of label-smoothed cross-entropy (Szegedy et al. 2016) in the fused and the branch
            losses: the target puts 1 - epsilon on the label and epsilon spread evenly over all classes. 0 = off.
        embedding_size: size of the fused embedding F(x) used by the classifier and the triplet loss.
        triplet_weight: lambda of `loss = CE + lambda * triplet`; 0 disables metric learning.
        triplet_margin: margin of the triplet loss (squared L2 on L2-normalised embeddings, so in [0, 4]).
        triplet_mining: `"batch_hard"`, `"batch_all"` or `"semi_hard"`.
        use_weighted_layer_sum: use a learned softmax-weighted sum of all encoder hidden layers instead of the last one.
        freeze_feature_encoder, freeze_audio_encoder, freeze_text_encoder: freezing switches applied at build time.
    """

    model_type = "mer"
    sub_configs = {"text_config": AutoConfig, "audio_config": AutoConfig}

    def __init__(
        self,
        text_config=None,
        audio_config=None,
        modalities=("text", "audio"),
        d_model=128,
        num_crossmodal_layers=4,
        num_attention_heads=4,
        attention_dropout=0.25,
        hidden_dropout=0.1,
        embedding_dropout=0.1,
        use_focus_attention=True,
        focus_source="query",
        focus_centre_prior="diagonal",
        focus_initial_width=0.1,
        use_prosody_branch=True,
        num_mel_bins=64,
        num_mfcc=40,
        prosody_hidden_size=128,
        mfcc_lstm_layers=2,
        use_prosody_statistics=False,
        pooling="mean",
        modality_dropout=0.0,
        auxiliary_loss_weight=0.0,
        late_fusion=False,
        label_smoothing=0.0,
        embedding_size=128,
        triplet_weight=0.1,
        triplet_margin=DEFAULT_TRIPLET_MARGIN,
        triplet_mining="batch_hard",
        use_weighted_layer_sum=False,
        freeze_feature_encoder=True,
        freeze_audio_encoder=False,
        freeze_text_encoder=False,
        initializer_range=0.02,
        **kwargs,
    ):
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(IEMOCAP_4CLASS_LABELS))
        self.text_config = _build_sub_config(text_config, "roberta", "text_config")
        self.audio_config = _build_sub_config(audio_config, "wav2vec2", "audio_config")
        self.modalities = tuple(modalities)
        self.d_model = d_model
        self.num_crossmodal_layers = num_crossmodal_layers
        self.num_attention_heads = num_attention_heads
        self.attention_dropout = attention_dropout
        self.hidden_dropout = hidden_dropout
        self.embedding_dropout = embedding_dropout
        self.use_focus_attention = use_focus_attention
        self.focus_source = focus_source
        self.focus_centre_prior = focus_centre_prior
        self.focus_initial_width = focus_initial_width
        self.use_prosody_branch = use_prosody_branch
        self.num_mel_bins = num_mel_bins
        self.num_mfcc = num_mfcc
        self.prosody_hidden_size = prosody_hidden_size
        self.mfcc_lstm_layers = mfcc_lstm_layers
        self.use_prosody_statistics = use_prosody_statistics
        self.pooling = pooling
        self.modality_dropout = modality_dropout
        self.auxiliary_loss_weight = auxiliary_loss_weight
        self.late_fusion = late_fusion
        self.label_smoothing = label_smoothing
        self.embedding_size = embedding_size
        self.triplet_weight = triplet_weight
        self.triplet_margin = triplet_margin
        self.triplet_mining = triplet_mining
        self.use_weighted_layer_sum = use_weighted_layer_sum
        self.freeze_feature_encoder = freeze_feature_encoder
        self.freeze_audio_encoder = freeze_audio_encoder
        self.freeze_text_encoder = freeze_text_encoder
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        if not self.label2id:  # transformers 5 no longer derives it from id2label
            self.label2id = {name: index for index, name in self.id2label.items()}
        self._validate_values()

    @property
    def uses_text(self) -> bool:
        return "text" in self.modalities

    @property
    def uses_audio(self) -> bool:
        return "audio" in self.modalities

    @property
    def has_branch_heads(self) -> bool:
        """Whether each pooled branch vector gets its own classifier (for the auxiliary loss or late fusion)."""
        return self.auxiliary_loss_weight > 0 or self.late_fusion

    def _validate_values(self):
        def fail(field, value, allowed):
            raise ValueError(f"MERConfig.{field}={value!r} is invalid: expected {allowed}.")

        if self.modalities not in MODALITIES:
            fail("modalities", self.modalities, f"one of {MODALITIES}")
        for field in ("d_model", "num_crossmodal_layers", "num_attention_heads", "embedding_size",
                      "num_mel_bins", "num_mfcc", "prosody_hidden_size", "mfcc_lstm_layers"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(field, value, "a positive integer")
        if self.d_model % self.num_attention_heads:
            fail("num_attention_heads", self.num_attention_heads, f"a divisor of d_model={self.d_model}")
        if self.num_mfcc > self.num_mel_bins:
            fail("num_mfcc", self.num_mfcc, f"at most num_mel_bins={self.num_mel_bins}")
        if self.prosody_hidden_size % 2:
            fail("prosody_hidden_size", self.prosody_hidden_size, "an even number (the BiLSTM splits it in two)")
        for field in ("attention_dropout", "hidden_dropout", "embedding_dropout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                fail(field, value, "a probability in [0, 1)")
        dropout = self.modality_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            fail("modality_dropout", dropout, "a probability in [0, 1)")
        if dropout > 0 and self.modalities != ("text", "audio"):
            fail("modality_dropout", dropout, f"0 for a unimodal model (modalities={self.modalities}); it hides one "
                 "of two modalities")
        weight = self.auxiliary_loss_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            fail("auxiliary_loss_weight", weight, "a number >= 0")
        smoothing = self.label_smoothing
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
            fail("label_smoothing", smoothing, "a number in [0, 1), e.g. 0.1")
        for field in ("use_focus_attention", "use_prosody_branch", "use_prosody_statistics", "use_weighted_layer_sum",
                      "late_fusion"):
            if not isinstance(getattr(self, field), bool):
                fail(field, getattr(self, field), "True or False")
        if self.focus_source not in FOCUS_SOURCES:
            fail("focus_source", self.focus_source, f"one of {FOCUS_SOURCES}")
        if self.focus_centre_prior not in FOCUS_CENTRE_PRIORS:
            fail("focus_centre_prior", self.focus_centre_prior,
                 f"one of {FOCUS_CENTRE_PRIORS} ('none' is the paper's form)")
        width = self.focus_initial_width
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0.0 < width < 1.0:
            fail("focus_initial_width", width, "a fraction of the key length in (0, 1), e.g. 0.1 (the paper's is 0.5)")
        if self.pooling not in POOLINGS:
            fail("pooling", self.pooling, f"one of {POOLINGS}")
        if self.triplet_mining not in TRIPLET_MININGS:
            fail("triplet_mining", self.triplet_mining, f"one of {TRIPLET_MININGS}")
        if not isinstance(self.triplet_weight, (int, float)) or self.triplet_weight < 0:
            fail("triplet_weight", self.triplet_weight, "a number >= 0")
        if not isinstance(self.triplet_margin, (int, float)) or self.triplet_margin <= 0:
            fail("triplet_margin", self.triplet_margin, "a number > 0")
        if self.uses_audio and self.audio_config.model_type not in SPEECH_ENCODER_TYPES:
            fail("audio_config.model_type", self.audio_config.model_type,
                 f"a wav2vec2-family speech encoder, one of {SPEECH_ENCODER_TYPES}")
        if self.num_labels < 2:
            fail("num_labels", self.num_labels, "at least 2 classes (set id2label)")
        # label2id is what the pipeline and the trainer's label checks read; a map that disagrees with id2label
        # would score one class under another's name.
        expected = {name: int(index) for index, name in self.id2label.items()}
        given = {name: int(index) for name, index in self.label2id.items()}
        if given != expected:
            wrong = {name: index for name, index in given.items() if expected.get(name) != index}
            missing = sorted(set(expected) - set(given))
            raise ValueError(
                f"MERConfig.label2id={dict(self.label2id)!r} contradicts id2label={dict(self.id2label)!r} "
                f"(disagreeing entries: {wrong}, missing names: {missing}). Pass only id2label (label2id is "
                "derived from it), or a label2id that is its exact inverse."
            )


MERConfig.register_for_auto_class()
