"""MERPipeline: emotion scores from speech + transcript, the task `multimodal-emotion-recognition`.

Shipped with every checkpoint (imports only torch, numpy, transformers, the standard library and
`audio_io_mer`), so `pipeline(model=folder_or_repo, trust_remote_code=True)` works where mer is not installed.

Inputs: `pipe(audio, text="...")`, `pipe({"audio": ..., "text": ...})`, or lists of either (with
`text=[...]` one transcript per item) plus `batch_size=`. Audio is a file path, encoded bytes, a 1-D array
at 16 kHz, or `{"array", "sampling_rate"}` at any rate (resampled; stereo is mixed down). Text-only models
take `pipe(text="...")`; audio-only models ignore text.

Output: `[{"label", "score"}, ...]` sorted by score (`top_k` keeps the best k). When the transcript came
from the speech recognizer, or with `return_focus=True`, the output is instead
`{"scores": [...], "transcript": str, "focus": [...]}` so the transcript used is always reported.

Policies:
- Missing transcript (`text=None`): transcribed by the ASR pipeline of `asr_model=` (local folder, Hub id or
  a ready ASR pipeline); without one, a ValueError.
- Long audio: split into equal windows of at most `max_audio_seconds` (default 30 s); each window is
  classified with the whole transcript (a transcript has no timing to split it by) and the class
  probabilities are averaged, weighted by window length.
- Audio shorter than the speech encoder's receptive field (400 samples = 25 ms for wav2vec2-base): a
  ValueError, never silent padding; a fraction of a syllable carries no emotion to report.
- Transcripts longer than the text encoder accepts: the first tokens are kept, with a warning.
Errors name the input ("input", or "item 3" in a list) and say what was expected.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import ChunkPipeline
from transformers.utils import logging

from .audio_io_mer import load_audio
from .configuration_mer import SAMPLING_RATE, TASK

logger = logging.get_logger(__name__)

DEFAULT_MAX_AUDIO_SECONDS = 30.0
INPUT_KEYS = ("audio", "text")
AUDIO_DICT_KEYS = ("array", "raw", "sampling_rate", "path", "bytes")  # "raw": the ASR pipeline's name
# Text encoders whose position ids start after the padding index, so pad_token_id + 1 positions are unusable.
OFFSET_POSITION_MODEL_TYPES = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text")
# Per-window values that travel beside the model inputs (through padding, batching and unbatching).
WINDOW_KEYS = ("is_last", "window_samples", "window_start", "transcript", "transcribed")


@dataclass
class MERInput:
    """One item after normalisation; `name` labels its errors ("input" or "item 3")."""

    name: str
    audio: object = None
    text: str | None = None


class MERPipeline(ChunkPipeline):
    """Emotion classification of an utterance from its audio and transcript (see the module docstring)."""

    _load_processor = True  # MERProcessor: tokenizer + feature extractor, from the model folder
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args, **kwargs):
        self._asr = None
        self._asr_source = None
        super().__init__(*args, **kwargs)
        if self.processor is None or (self.tokenizer is None and self.model.config.uses_text):
            raise ValueError("MERPipeline needs the model's MERProcessor: pass processor=MERProcessor(...) or load "
                             "the pipeline from a folder or repo that holds processor_config.json.")

    def __call__(self, inputs=None, text=None, **kwargs):
        """Classify one input, a list of inputs, or an iterator of inputs (results then stream back lazily)."""
        if isinstance(inputs, Iterator):
            if text is not None:
                raise ValueError("With an iterator of inputs, put each transcript in its item: {'audio', 'text'}.")
            stream = (_normalise_item(item, None, f"item {index}") for index, item in enumerate(inputs))
            return super().__call__(stream, **kwargs)
        # A list of numbers is one waveform, not a batch of them.
        samples = isinstance(inputs, (list, tuple)) and len(inputs) > 0 and isinstance(inputs[0], (int, float))
        batch = isinstance(inputs, (list, tuple)) and not samples
        batch = batch or (inputs is None and isinstance(text, (list, tuple)))
        items = _normalise_batch(inputs, text) if batch else [_normalise_item(inputs, text, "input")]
        results = super().__call__(items, **kwargs)
        return results if batch else results[0]

    def _sanitize_parameters(self, top_k=None, return_focus=None, max_audio_seconds=None, asr_model=None):
        preprocess, forward, postprocess = {}, {}, {}
        if asr_model is not None:
            self._set_asr(asr_model)
        if max_audio_seconds is not None:
            min_seconds = self.min_audio_samples / SAMPLING_RATE
            is_number = isinstance(max_audio_seconds, (int, float)) and not isinstance(max_audio_seconds, bool)
            if not is_number or not max_audio_seconds >= min_seconds:  # `not >=` also catches NaN
                raise ValueError(f"max_audio_seconds must be a number of seconds >= {min_seconds:.3f} (the speech "
                                 f"encoder's receptive field), got {max_audio_seconds!r}.")
            preprocess["max_audio_seconds"] = float(max_audio_seconds)
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
            postprocess["top_k"] = top_k
        if return_focus is not None:
            config = self.model.config
            if return_focus and not (config.uses_text and config.uses_audio and config.use_focus_attention):
                raise ValueError("return_focus=True needs a text + audio model with use_focus_attention=True; this "
                                 f"one has modalities={config.modalities}, "
                                 f"use_focus_attention={config.use_focus_attention}.")
            forward["return_focus"] = postprocess["return_focus"] = bool(return_focus)
        return preprocess, forward, postprocess

    # ------------------------------------------------------------------ preprocess

    def preprocess(self, item, max_audio_seconds=DEFAULT_MAX_AUDIO_SECONDS):
        config = self.model.config
        text, transcribed = item.text, False
        waveform = None
        if config.uses_audio or (config.uses_text and text is None):  # the recognizer needs the audio too
            if item.audio is None and not config.uses_audio:
                raise ValueError(f"{item.name}: no transcript. This text-only model needs text='...' (or audio "
                                 "plus asr_model= to transcribe it).")
            if item.audio is None:
                raise ValueError(f"{item.name}: no audio. This model (modalities={config.modalities}) needs audio: "
                                 "a file path, bytes, a 1-D 16 kHz array or {'array', 'sampling_rate'}.")
            waveform = load_audio(_audio_source(item.audio), name=item.name)
        if config.uses_text:
            if text is None:
                text, transcribed = self._transcribe(waveform, item.name), True
            text = self._fit_transcript(text, item.name)
        if not config.uses_audio:
            encoded = self.processor(text=[text], max_text_length=self.max_text_tokens)
            yield {**encoded, **_window_info(True, 1, 0, text, transcribed)}
            return
        self._check_min_length(waveform, item.name)
        windows = _split_windows(len(waveform), int(max_audio_seconds * SAMPLING_RATE))
        for index, (start, stop) in enumerate(windows):
            encoded = self.processor(text=[text] if config.uses_text else None, audio=[waveform[start:stop]],
                                     sampling_rate=SAMPLING_RATE, max_text_length=self.max_text_tokens)
            yield {**encoded, **_window_info(index == len(windows) - 1, stop - start, start, text, transcribed)}

    @property
    def min_audio_samples(self):
        """The speech encoder's receptive field: fewest samples that give one frame of its conv encoder."""
        audio_config = self.model.config.audio_config
        samples = 1
        for kernel, stride in reversed(list(zip(audio_config.conv_kernel, audio_config.conv_stride, strict=True))):
            samples = (samples - 1) * stride + kernel
        return samples

    @property
    def max_text_tokens(self):
        """Tokens the text encoder accepts: its position table, capped by the tokenizer's recorded limit."""
        text_config = self.model.config.text_config
        limit = getattr(text_config, "max_position_embeddings", None) or 512
        if text_config.model_type in OFFSET_POSITION_MODEL_TYPES:
            limit -= (text_config.pad_token_id or 0) + 1
        tokenizer_limit = self.tokenizer.model_max_length
        return min(limit, tokenizer_limit) if tokenizer_limit < 100_000 else limit  # huge = no recorded limit

    def _check_min_length(self, waveform, name):
        needed = self.min_audio_samples
        if len(waveform) < needed:
            raise ValueError(f"{name}: the audio is {len(waveform)} samples ({1000 * len(waveform) / SAMPLING_RATE:.1f} "
                             f"ms at 16 kHz), shorter than the speech encoder's receptive field of {needed} samples "
                             f"({1000 * needed / SAMPLING_RATE:.1f} ms). Pass a longer clip (at least "
                             f"{needed} samples), or pad it with silence yourself if that is what you want.")

    def _fit_transcript(self, text, name):
        """Cut an over-long transcript to the encoder's limit here, so the warning can name the item."""
        limit = self.max_text_tokens
        content_limit = limit - self.tokenizer.num_special_tokens_to_add()
        try:
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # a slow tokenizer has no offsets: the processor truncates (and warns) instead
            return text
        n_tokens = len(encoded["input_ids"])
        if n_tokens <= content_limit:
            return text
        logger.warning(f"{name}: the transcript has {n_tokens + limit - content_limit} tokens; only the first {limit} "
                       "(the text encoder's limit) are used.")
        return text[: encoded["offset_mapping"][content_limit - 1][1]]

    # ------------------------------------------------------------------ speech recognition

    def _set_asr(self, asr_model):
        if asr_model is self._asr_source or (isinstance(asr_model, str) and asr_model == self._asr_source):
            return
        if isinstance(asr_model, str):
            from transformers import pipeline

            self._asr = pipeline("automatic-speech-recognition", model=asr_model, device=self.device)
        elif callable(asr_model):
            self._asr = asr_model
        else:
            raise ValueError("asr_model must be a local folder or Hub id of a speech recognition model, or an "
                             f"automatic-speech-recognition pipeline; got {type(asr_model).__name__}.")
        self._asr_source = asr_model

    def _transcribe(self, waveform, name):
        if self._asr is None:
            raise ValueError(f"{name}: no transcript (text=None) and no speech recognizer. This model uses "
                             f"modalities={self.model.config.modalities}: pass text='...', or asr_model=<a local "
                             "folder or Hub id of an ASR model> to transcribe the audio first.")
        result = self._asr({"raw": waveform, "sampling_rate": SAMPLING_RATE})
        text = (result.get("text") if isinstance(result, dict) else result) or ""
        if not text.strip():
            raise ValueError(f"{name}: the speech recognizer found no words in the audio; pass the transcript "
                             "with text='...'.")
        return text.strip()

    # ------------------------------------------------------------------ forward and postprocess

    def _forward(self, model_inputs, return_focus=False):
        window = {key: model_inputs.pop(key) for key in WINDOW_KEYS}
        if "input_values" in model_inputs:
            model_inputs["input_values"] = model_inputs["input_values"].to(self.model.dtype)
        outputs = self.model(**model_inputs, output_attentions=return_focus)
        result = {"logits": outputs.logits, **window}
        if return_focus:
            # Batched windows carry lists of values (one per window); single windows carry plain values.
            batched = isinstance(window["is_last"], list)
            starts = window["window_start"] if batched else [window["window_start"]]
            focus = [self._focus(outputs, model_inputs["input_ids"], index, int(start))
                     for index, start in enumerate(starts)]
            result["focus"] = focus if batched else focus[0]
        return result

    def _focus(self, outputs, input_ids, index, window_start):
        """Where example `index` looked, last crossmodal layer, averaged over heads, padding removed."""
        text_mask, frame_mask = outputs.text_mask[index], outputs.audio_frame_mask[index]
        text_to_audio = outputs.text_to_audio_focus_centres[-1][index].float().mean(0)
        audio_to_text = outputs.audio_to_text_focus_centres[-1][index].float().mean(0)
        # Centres are predicted per query position (per key with focus_source="key") in units of the other side.
        if self.model.config.focus_source == "query":
            frame_focus, token_focus = text_to_audio, audio_to_text
        else:
            frame_focus, token_focus = audio_to_text, text_to_audio
        frame_seconds = math.prod(self.model.config.audio_config.conv_stride) / SAMPLING_RATE
        start_seconds = window_start / SAMPLING_RATE
        return {
            "tokens": self.tokenizer.convert_ids_to_tokens(input_ids[index][text_mask].tolist()),
            "token_focus_seconds": (start_seconds + token_focus[text_mask] * frame_seconds).tolist(),
            "frame_seconds": frame_seconds,
            "window_start_seconds": start_seconds,
            "frame_focus_token": frame_focus[frame_mask].tolist(),
        }

    def postprocess(self, windows, top_k=None, return_focus=False):
        # Long audio: class probabilities of the windows, averaged with weights = window lengths.
        weights = torch.tensor([float(window["window_samples"]) for window in windows])
        probabilities = torch.stack([window["logits"][0].float().softmax(-1) for window in windows])
        scores = (probabilities * weights[:, None]).sum(0) / weights.sum()
        order = scores.argsort(descending=True)[: top_k or len(scores)].tolist()
        id2label = self.model.config.id2label
        labelled = [{"label": id2label[index], "score": scores[index].item()} for index in order]
        transcribed = bool(windows[0]["transcribed"])
        if not (return_focus or transcribed):
            return labelled
        details = {"scores": labelled, "transcript": windows[0]["transcript"]}
        if return_focus:
            details["focus"] = [window["focus"] for window in windows]
        return details


def _window_info(is_last, window_samples, window_start, transcript, transcribed):
    return dict(zip(WINDOW_KEYS, (is_last, window_samples, window_start, transcript, transcribed), strict=True))


def _split_windows(length, max_samples):
    """Equal windows of at most max_samples: no short tail window that the encoder could not read."""
    count = max(1, math.ceil(length / max_samples))
    bounds = np.linspace(0, length, count + 1).round().astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def _audio_source(audio):
    """The ASR pipeline's {"raw", "sampling_rate"} spelling, accepted as {"array", "sampling_rate"}."""
    if isinstance(audio, dict) and "raw" in audio and "array" not in audio:
        audio = {("array" if key == "raw" else key): value for key, value in audio.items()}
    return audio


def _normalise_batch(inputs, text):
    if inputs is None:
        inputs = [None] * len(text)
    if text is None or isinstance(text, str) and len(inputs) == 1:
        texts = [text] * len(inputs)
    elif isinstance(text, (list, tuple)) and len(text) == len(inputs):
        texts = list(text)
    else:
        got = f"{len(text)} transcripts" if isinstance(text, (list, tuple)) else "a single string"
        raise ValueError(f"Got {len(inputs)} audio items but {got}; pass text=[...] with one transcript per item "
                         "(None where the transcript is unknown).")
    if not inputs:
        raise ValueError("Got an empty list of inputs.")
    return [_normalise_item(item, item_text, f"item {index}")
            for index, (item, item_text) in enumerate(zip(inputs, texts, strict=True))]


def _normalise_item(item, text, name):
    """Accept an audio source (+ `text`) or {"audio", "text"}; reject dicts with keys the pipeline does not know."""
    if isinstance(item, dict) and any(key in item for key in INPUT_KEYS):
        unknown = sorted(set(item) - set(INPUT_KEYS))
        if unknown:
            raise ValueError(f"{name}: unknown key(s) {unknown} in the input dict; expected 'audio' and/or 'text'.")
        if text is not None and item.get("text") is not None:
            raise ValueError(f"{name}: the transcript is given twice (in the dict and as text=); pass it once.")
        item, text = item.get("audio"), item["text"] if item.get("text") is not None else text
    elif isinstance(item, dict):
        unknown = sorted(set(item) - set(AUDIO_DICT_KEYS))
        if unknown:
            raise ValueError(f"{name}: unknown key(s) {unknown} in the input dict; expected {{'audio', 'text'}} or "
                             "an audio dict {'array', 'sampling_rate'} (or {'path'} / {'bytes'}).")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise ValueError(f"{name}: text must be a non-empty string (or None to transcribe the audio), got {text!r}.")
    return MERInput(name=name, audio=item, text=text)


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MERPipeline, pt_model=AutoModelForSequenceClassification,
                                    type="multimodal")
