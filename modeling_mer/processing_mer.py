"""MERProcessor: one call turns transcripts and 16 kHz waveforms into the model's padded inputs."""

import logging

import numpy as np
from transformers import AutoFeatureExtractor, AutoTokenizer, BatchFeature, ProcessorMixin

from .configuration_mer import SAMPLING_RATE

logger = logging.getLogger(__name__)

# Tokenizers without a recorded limit report a huge sentinel `model_max_length` (int(1e30)).
NO_RECORDED_LIMIT = 100_000
# Without a position table to read, the limit of the BERT/RoBERTa families.
DEFAULT_TEXT_TOKEN_LIMIT = 512
# Text encoders whose position ids start after the padding index, so pad_token_id + 1 positions are unusable.
OFFSET_POSITION_MODEL_TYPES = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text")


def text_token_limit(tokenizer, text_config=None):
    """Tokens the text encoder accepts: its position table (when its config is known), capped by the
    tokenizer's recorded limit; 512 when neither says."""
    limit = DEFAULT_TEXT_TOKEN_LIMIT
    if text_config is not None and getattr(text_config, "max_position_embeddings", None):
        limit = text_config.max_position_embeddings
        if text_config.model_type in OFFSET_POSITION_MODEL_TYPES:
            limit -= (text_config.pad_token_id or 0) + 1
    tokenizer_limit = tokenizer.model_max_length
    if tokenizer_limit < NO_RECORDED_LIMIT:
        limit = min(limit, tokenizer_limit) if text_config is not None else tokenizer_limit
    return limit



class MERProcessor(ProcessorMixin):
    """Wraps a text tokenizer and a `Wav2Vec2FeatureExtractor`.

    Returns `input_ids` and `attention_mask` for the text and `input_values` and `audio_attention_mask`
    (1 = real sample) for the audio, so the two masks never clash in one batch.
    """

    def __init__(self, tokenizer, feature_extractor):
        super().__init__(tokenizer, feature_extractor)

    @classmethod
    def from_encoders_pretrained(cls, text_model, audio_model, **kwargs):
        """Build from the tokenizer of `text_model` and the feature extractor of `audio_model` (Hub ids or folders)."""
        tokenizer = AutoTokenizer.from_pretrained(text_model, **kwargs)
        feature_extractor = AutoFeatureExtractor.from_pretrained(audio_model, **kwargs)
        # The model always receives a frame mask; every feature extractor must produce one.
        feature_extractor.return_attention_mask = True
        return cls(tokenizer=tokenizer, feature_extractor=feature_extractor)

    def __call__(self, text=None, audio=None, sampling_rate=SAMPLING_RATE, return_tensors="pt", padding=True,
                 max_text_length=None, **kwargs):
        """Tokenize `text` (str or list of str) and pad `audio` (1-D array or list of them, at 16 kHz)."""
        if text is None and audio is None:
            raise ValueError("MERProcessor needs `text`, `audio` or both.")
        if kwargs:
            raise TypeError(f"MERProcessor got unexpected arguments {sorted(kwargs)}; "
                            "it takes text, audio, sampling_rate, return_tensors, padding, max_text_length.")
        outputs = {}
        if text is not None:
            outputs.update(self._encode_text(text, return_tensors, padding, max_text_length))
        if audio is not None:
            outputs.update(self._encode_audio(audio, sampling_rate, return_tensors, padding))
        if text is not None and audio is not None:
            n_text, n_audio = len(outputs["input_ids"]), len(outputs["input_values"])
            if n_text != n_audio:
                raise ValueError(f"Got {n_text} transcripts but {n_audio} waveforms; pass one transcript per waveform.")
        return BatchFeature(data=outputs, tensor_type=return_tensors)

    def _encode_text(self, text, return_tensors, padding, max_text_length):
        texts = [text] if isinstance(text, str) else list(text)
        for index, item in enumerate(texts):
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"Transcript {index} is empty or not a string ({item!r}); every utterance needs "
                                 "its transcript (run an ASR model first if you only have audio).")
        max_length = max_text_length or text_token_limit(self.tokenizer)
        # A text shorter than max_length characters cannot exceed max_length tokens: skip the recount then.
        long_items = [i for i, item in enumerate(texts) if len(item) >= max_length - 2]
        for index in long_items:
            n_tokens = len(self.tokenizer(texts[index])["input_ids"])
            if n_tokens > max_length:
                logger.warning("Transcript %d has %d tokens; truncated to the text encoder's limit of %d.",
                               index, n_tokens, max_length)
        encoded = self.tokenizer(texts, padding=padding, truncation=True, max_length=max_length,
                                 return_attention_mask=True, return_tensors=return_tensors)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def _encode_audio(self, audio, sampling_rate, return_tensors, padding):
        if sampling_rate != self.feature_extractor.sampling_rate:
            raise ValueError(f"Audio must be sampled at {self.feature_extractor.sampling_rate} Hz, got sampling_rate="
                             f"{sampling_rate}; resample it first (modeling_mer.audio_io_mer.load_audio does).")
        waveforms = [audio] if _is_single_waveform(audio) else list(audio)
        arrays = []
        for index, waveform in enumerate(waveforms):
            array = np.asarray(waveform, dtype=np.float32)
            if array.ndim != 1 or array.size == 0:
                raise ValueError(f"Waveform {index} has shape {array.shape}; expected a non-empty 1-D mono array.")
            if not np.isfinite(array).all():
                raise ValueError(f"Waveform {index} contains NaN or infinite samples; clean or drop it.")
            arrays.append(array)
        features = self.feature_extractor(arrays, sampling_rate=sampling_rate, padding=padding,
                                          return_attention_mask=True, return_tensors=return_tensors)
        return {"input_values": features["input_values"], "audio_attention_mask": features["attention_mask"]}

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "input_values", "audio_attention_mask"]


def _is_single_waveform(audio):
    """One 1-D waveform (array, tensor or list of samples) rather than a batch of them."""
    if isinstance(audio, list):
        return len(audio) > 0 and np.isscalar(audio[0])
    return getattr(audio, "ndim", None) == 1  # numpy arrays and torch tensors alike


# Writes `auto_map.AutoProcessor` into saved processor configs; without it AutoProcessor and the
# pipeline fall back to the bare tokenizer, whose `token_type_ids` the model does not accept.
MERProcessor.register_for_auto_class()
