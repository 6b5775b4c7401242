"""MERPipeline: emotion scores from speech + transcript, the task `multimodal-emotion-recognition`.

Shipped with every checkpoint (imports only torch, numpy, transformers, the standard library and
`audio_io_mer`), so `pipeline(model=folder_or_repo, trust_remote_code=True)` works where mer is not installed.

Inputs: `pipe(audio, text="...")`, `pipe({"audio": ..., "text": ...})`, or lists of either (with
`text=[...]` one transcript per item) plus `batch_size=`. Audio is a file path, encoded bytes, a 1-D array
at 16 kHz, or `{"array", "sampling_rate"}` at any rate (resampled; stereo is mixed down). Text-only models
take `pipe(text="...")`; audio-only models ignore text.

`pipe(recording, timeline=True, words=... or asr_model=...)` gives an emotion timeline instead: one entry per
speech segment (timeline_mer).

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

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import ChunkPipeline
from transformers.utils import logging

from .audio_io_mer import load_audio
from .configuration_mer import SAMPLING_RATE, TASK
from .encoders_mer import receptive_field
from .pipeline_inputs_mer import audio_source, normalise_batch, normalise_item
from .processing_mer import text_token_limit
from .timeline_mer import TIMELINE_OPTIONS, emotion_timeline
from .transcription_mer import Transcriber

logger = logging.get_logger(__name__)

DEFAULT_MAX_AUDIO_SECONDS = 30.0
# Per-window values that travel beside the model inputs (through padding, batching and unbatching).
WINDOW_KEYS = ("is_last", "window_samples", "window_start", "transcript", "transcribed")


class MERPipeline(ChunkPipeline):
    """Emotion classification of an utterance from its audio and transcript (see the module docstring)."""

    _load_processor = True  # MERProcessor: tokenizer + feature extractor, from the model folder
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args, **kwargs):
        self._transcriber = Transcriber()  # builds an ASR pipeline on first use, not when parameters are sorted
        super().__init__(*args, **kwargs)
        if self.processor is None or (self.tokenizer is None and self.model.config.uses_text):
            raise ValueError("MERPipeline needs the model's MERProcessor: pass processor=MERProcessor(...) or load "
                             "the pipeline from a folder or repo that holds processor_config.json.")

    def __call__(self, inputs=None, text=None, timeline=False, **kwargs):
        """Classify one input, a list of inputs, or an iterator of inputs (results then stream back lazily).

        `timeline=True`: one recording of any length -> one entry per speech segment (see timeline_mer).
        """
        if timeline:
            return emotion_timeline(self, inputs, text=text, **kwargs)
        given = sorted(set(TIMELINE_OPTIONS) & set(kwargs))
        if given:
            raise ValueError(f"{', '.join(given)} only apply to timelines: pass timeline=True as well.")
        if isinstance(inputs, Iterator):
            if text is not None:
                raise ValueError("With an iterator of inputs, put each transcript in its item: {'audio', 'text'}.")
            stream = (normalise_item(item, None, f"item {index}") for index, item in enumerate(inputs))
            return super().__call__(stream, **kwargs)
        # A list of numbers is one waveform, not a batch of them.
        samples = isinstance(inputs, (list, tuple)) and len(inputs) > 0 and isinstance(inputs[0], (int, float))
        batch = isinstance(inputs, (list, tuple)) and not samples
        batch = batch or (inputs is None and isinstance(text, (list, tuple)))
        items = normalise_batch(inputs, text) if batch else [normalise_item(inputs, text, "input")]
        results = super().__call__(items, **kwargs)
        return results if batch else results[0]

    def _sanitize_parameters(self, top_k=None, return_focus=None, max_audio_seconds=None, asr_model=None):
        preprocess, forward, postprocess = {}, {}, {}
        if asr_model is not None:
            preprocess["asr_model"] = Transcriber.check_source(asr_model)
        if max_audio_seconds is not None:
            preprocess["max_audio_seconds"] = check_max_audio_seconds(max_audio_seconds, self.min_audio_samples)
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

    def preprocess(self, item, max_audio_seconds=DEFAULT_MAX_AUDIO_SECONDS, asr_model=None):
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
            waveform = load_audio(audio_source(item.audio), name=item.name)
        if config.uses_text:
            if text is None:
                text, transcribed = self._transcriber(waveform, item.name, asr_model, self.model.config,
                                                      self.device), True
            text = self._fit_transcript(text, item.name)
        if not config.uses_audio:
            encoded = self.processor(text=[text], max_text_length=self.max_text_tokens)
            yield {**encoded, **_window_info(True, 1, 0, text, transcribed)}
            return
        self._check_min_length(waveform, item.name)
        warn_if_silent_or_clipped(waveform, item.name)
        windows = split_windows(len(waveform), int(max_audio_seconds * SAMPLING_RATE))
        for index, (start, stop) in enumerate(windows):
            encoded = self.processor(text=[text] if config.uses_text else None, audio=[waveform[start:stop]],
                                     sampling_rate=SAMPLING_RATE, max_text_length=self.max_text_tokens)
            yield {**encoded, **_window_info(index == len(windows) - 1, stop - start, start, text, transcribed)}

    @property
    def min_audio_samples(self):
        """The speech encoder's receptive field: fewest samples that give one frame of its conv encoder."""
        return receptive_field(self.model.config.audio_config)

    @property
    def max_text_tokens(self):
        return text_token_limit(self.tokenizer, self.model.config.text_config)

    def _check_min_length(self, waveform, name):
        needed = self.min_audio_samples
        if len(waveform) < needed:
            raise ValueError(f"{name}: the audio is {len(waveform)} samples ({1000 * len(waveform) / SAMPLING_RATE:.1f} "
                             f"ms at 16 kHz), shorter than the speech encoder's receptive field of {needed} samples "
                             f"({1000 * needed / SAMPLING_RATE:.1f} ms). Pass a longer clip (at least "
                             f"{needed} samples), or pad it with silence yourself if that is what you want.")

    def _fit_transcript(self, text, name):
        """Cut an over-long transcript to the encoder's limit here, so the warning can name the item; and warn
        when the tokenizer reads it as unknown tokens only (emoji for an English vocabulary): the scores then rest
        on the audio alone. One tokenization serves both checks."""
        limit = self.max_text_tokens
        content_limit = limit - self.tokenizer.num_special_tokens_to_add()
        try:
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # a slow tokenizer has no offsets: the processor truncates (and warns) instead
            encoded = self.tokenizer(text, add_special_tokens=False)
        ids, unknown = encoded["input_ids"], self.tokenizer.unk_token_id
        if unknown is not None and ids and all(token == unknown for token in ids):
            logger.warning(f"{name}: every token of the transcript {text!r} is unknown to the text encoder's "
                           f"vocabulary ({self.tokenizer.unk_token}); its scores rest on the audio alone.")
        if len(ids) <= content_limit or "offset_mapping" not in encoded:
            return text
        logger.warning(f"{name}: the transcript has {len(ids) + limit - content_limit} tokens; only the first {limit} "
                       "(the text encoder's limit) are used.")
        return text[: encoded["offset_mapping"][content_limit - 1][1]]

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
        frame_seconds = self.model.config.audio_config.inputs_to_logits_ratio / SAMPLING_RATE
        start_seconds = window_start / SAMPLING_RATE
        return {
            "tokens": self.tokenizer.convert_ids_to_tokens(input_ids[index][text_mask].tolist()),
            "token_focus_seconds": (start_seconds + token_focus[text_mask] * frame_seconds).tolist(),
            "frame_seconds": frame_seconds,
            "window_start_seconds": start_seconds,
            "frame_focus_token": frame_focus[frame_mask].tolist(),
        }

    def postprocess(self, windows, top_k=None, return_focus=False):
        scores = average_window_scores(windows)
        if not torch.isfinite(scores).all():
            # Corrupted weights load without complaint and give NaN everywhere; never report NaN as a score.
            raise ValueError(f"The model {self.model.config._name_or_path or '(in memory)'} gave non-finite scores "
                             f"({scores.tolist()}): its weights are damaged or overflowed. Re-download or re-save "
                             "the model folder (model.safetensors), or load it in float32.")
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


# Audio that is (nearly) all zeros or clipped far past full scale still gets scores; say so, naming the item.
SILENCE_PEAK = 1e-4  # below -80 dBFS everywhere: no speech to hear
CLIPPED_PEAK = 1.5  # the processor does not normalise; peaks this far above 1.0 are not float PCM in [-1, 1]


def warn_if_silent_or_clipped(waveform, name):
    peak = float(np.abs(waveform).max()) if len(waveform) else 0.0
    if peak < SILENCE_PEAK:
        logger.warning(f"{name}: the audio is silent (peak {peak:.1e}); its scores say nothing about the speaker.")
    elif peak > CLIPPED_PEAK:
        logger.warning(f"{name}: the audio peaks at {peak:.1f}, far above full scale 1.0; it is probably integer PCM "
                       "passed as float, or clipped. Divide integer samples by 32768 (int16) first.")


# ---------------------------------------------------------------------- windowing and aggregation

def check_max_audio_seconds(max_audio_seconds, min_samples):
    """The window length in seconds, refused when it is not a number or shorter than the receptive field."""
    min_seconds = min_samples / SAMPLING_RATE
    is_number = isinstance(max_audio_seconds, (int, float)) and not isinstance(max_audio_seconds, bool)
    if not is_number or not max_audio_seconds >= min_seconds:  # `not >=` also catches NaN
        raise ValueError(f"max_audio_seconds must be a number of seconds >= {min_seconds:.3f} (the speech "
                         f"encoder's receptive field), got {max_audio_seconds!r}.")
    return float(max_audio_seconds)


def average_window_scores(windows):
    """Long audio: class probabilities of the windows, averaged with weights = window lengths."""
    weights = torch.tensor([float(window["window_samples"]) for window in windows])
    probabilities = torch.stack([window["logits"][0].float().softmax(-1) for window in windows])
    return (probabilities * weights[:, None]).sum(0) / weights.sum()


def _window_info(is_last, window_samples, window_start, transcript, transcribed):
    return dict(zip(WINDOW_KEYS, (is_last, window_samples, window_start, transcript, transcribed), strict=True))


def split_windows(length, max_samples):
    """Equal windows of at most max_samples: no short tail window that the encoder could not read."""
    count = max(1, math.ceil(length / max_samples))
    bounds = np.linspace(0, length, count + 1).round().astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MERPipeline, pt_model=AutoModelForSequenceClassification,
                                    type="multimodal")
