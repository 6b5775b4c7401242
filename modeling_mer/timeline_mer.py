"""An emotion timeline over a recording of any length: one entry per speech segment, scored by MERPipeline.

Shipped with every checkpoint beside pipeline_mer.py, which calls `emotion_timeline` for
`pipe(audio, timeline=True, ...)`. Nothing here scores anything: each segment becomes an ordinary
`{"audio", "text"}` item and goes through the pipeline's own preprocess / _forward / postprocess, in batches
of `batch_size`, streamed (segments are read from the recording only as the pipeline asks for them).

Entry: {"start", "end" (seconds), "text", "label", "score", "scores": [{"label", "score"}, ...]} plus
"words" when word timings are known.

Policies:
- Segments: `segments=[(start, end), ...]` in seconds when given, else voice-activity detection (`vad=`,
  see segmentation_mer).
- Text: `words=[{"word", "start", "end"}, ...]` are shared out among the segments (most overlap, else nearest);
  or `asr_model=` transcribes each segment with word timestamps. A single `text=` is accepted only when the
  recording has one segment: a transcript without timings cannot be split between segments.
- A segment no word fell in (a cough, a laugh, noise) has nothing for a text model to read: it is left out
  of the timeline, with a warning that counts them. Audio-only models score every segment.
"""

from __future__ import annotations

from transformers.utils import logging

from .configuration_mer import SAMPLING_RATE
from .pipeline_inputs_mer import check_text
from .segmentation_mer import (
    BLOCK_SECONDS,
    VAD_CHOICES,
    AudioStream,
    assign_words,
    check_segments,
    check_words,
    detect_speech,
    join_words,
    resolve_vad,
)

logger = logging.get_logger(__name__)

TIMELINE_OPTIONS = ("segments", "words", "vad", "vad_settings", "block_seconds")


def emotion_timeline(pipe, audio, text=None, segments=None, words=None, asr_model=None, vad="auto",
                     vad_settings=None, batch_size=8, block_seconds=BLOCK_SECONDS, max_audio_seconds=None,
                     name="input"):
    """The timeline of `audio` (a path, bytes, an array or {"array", "sampling_rate"}); see the module docstring."""
    config = pipe.model.config
    if not config.uses_audio:
        raise ValueError("A timeline needs a model that hears audio; this one has modalities="
                         f"{config.modalities}. Split the transcript yourself and call the pipeline on each part.")
    if isinstance(audio, (list, tuple)) and audio and not isinstance(audio[0], (int, float)):
        raise ValueError("timeline=True takes one recording at a time; call it once per recording.")
    if vad not in VAD_CHOICES:
        raise ValueError(f"vad must be one of {VAD_CHOICES}, got {vad!r}.")
    if text is not None and words is not None:
        raise ValueError(f"{name}: pass either text= or words=, not both (the words already give the text).")
    check_text(text, name)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if config.uses_text and text is None and words is None and asr_model is None:
        raise ValueError(f"{name}: this model reads transcripts (modalities={config.modalities}); a timeline "
                         "needs word timings, words=[{'word', 'start', 'end'}, ...], or asr_model=<an ASR model "
                         "with word timestamps> to transcribe each segment.")
    if asr_model is not None:
        pipe._transcriber.check_source(asr_model)
    words = check_words(words, name) if words is not None else None
    if segments is None:
        resolve_vad(vad)  # silero asked for but not installed: say so before reading the recording

    stream = AudioStream(audio, name)
    if segments is not None:
        bounds = check_segments(segments, stream.seconds, pipe.min_audio_samples, name)
    else:
        bounds = detect_speech(stream, vad, vad_settings, block_seconds)
        bounds = [(start, end) for start, end in bounds if end - start >= pipe.min_audio_samples]
    if text is not None and len(bounds) > 1:
        raise ValueError(f"{name}: one transcript (text=) for a recording with {len(bounds)} speech segments cannot "
                         "be aligned to them. Pass words=[{'word', 'start', 'end'}, ...] with each word's time in "
                         "seconds, or asr_model=<an ASR model with word timestamps>, or segments=[(start, end)] "
                         "if the recording is one utterance.")
    if not bounds:
        logger.warning(f"{name}: no speech found in {stream.seconds:.1f} s of audio; the timeline is empty.")
        return []

    per_segment = assign_words(words, bounds) if words is not None else [None] * len(bounds)
    kept = []
    for (start, end), segment_words in zip(bounds, per_segment, strict=True):
        if config.uses_text and segment_words is not None and not join_words(segment_words):
            continue
        kept.append((start, end, segment_words))
    if len(kept) < len(bounds):
        logger.warning(f"{name}: {len(bounds) - len(kept)} of {len(bounds)} speech segments hold no word and are "
                       "left out of the timeline (a text model has nothing to read there).")

    def segment_text(start, end, segment_words):
        if text is not None:
            return text, None
        if segment_words is None and config.uses_text:  # transcribed here, segment by segment
            segment_words = pipe._transcriber.words(stream.read(start, end), start / SAMPLING_RATE,
                                                    f"{name}, segment at {start / SAMPLING_RATE:.2f} s", asr_model,
                                                    pipe.device)
        joined = join_words(segment_words) if segment_words is not None else ""
        return joined, segment_words

    entries = []

    def items():
        for start, end, segment_words in kept:
            joined, segment_words = segment_text(start, end, segment_words)
            entry = {"start": start / SAMPLING_RATE, "end": end / SAMPLING_RATE, "text": joined}
            if segment_words is not None:
                entry["words"] = segment_words
            if config.uses_text and not joined:
                logger.warning(f"{name}: the recognizer heard no word in {entry['start']:.2f}-{entry['end']:.2f} s; "
                               "that segment is left out.")
                continue
            entries.append(entry)
            yield {"audio": stream.read(start, end), "text": joined if config.uses_text else None}

    options = {"batch_size": batch_size}
    if max_audio_seconds is not None:
        options["max_audio_seconds"] = max_audio_seconds
    timeline = []
    # The pipeline pulls items lazily, so `entries` grows just ahead of the results it is zipped with.
    for index, result in enumerate(pipe(items(), **options)):
        entry = entries[index]
        timeline.append({"start": entry["start"], "end": entry["end"], "text": entry["text"],
                         "label": result[0]["label"], "score": result[0]["score"], "scores": result,
                         **({"words": entry["words"]} if "words" in entry else {})})
    return timeline
