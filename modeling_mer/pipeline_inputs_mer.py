"""Pipeline inputs: whatever a user passes -> one `MERInput` per item (audio source, transcript, a name for errors).

Shipped with every checkpoint beside pipeline_mer.py. Accepts an audio source (+ `text`), `{"audio", "text"}`,
or lists of either; dicts with keys the pipeline does not know are refused rather than silently ignored.
"""

from dataclasses import dataclass

INPUT_KEYS = ("audio", "text")
AUDIO_DICT_KEYS = ("array", "raw", "sampling_rate", "path", "bytes")  # "raw": the ASR pipeline's name


@dataclass
class MERInput:
    """One item after normalisation; `name` labels its errors ("input" or "item 3")."""

    name: str
    audio: object = None
    text: str | None = None


def audio_source(audio):
    """The ASR pipeline's {"raw", "sampling_rate"} spelling, accepted as {"array", "sampling_rate"}."""
    if isinstance(audio, dict) and "raw" in audio and "array" not in audio:
        audio = {("array" if key == "raw" else key): value for key, value in audio.items()}
    return audio


def normalise_batch(inputs, text):
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
    return [normalise_item(item, item_text, f"item {index}")
            for index, (item, item_text) in enumerate(zip(inputs, texts, strict=True))]


def normalise_item(item, text, name):
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
    check_text(text, name)
    return MERInput(name=name, audio=item, text=text)


def check_text(text, name):
    """A transcript is a non-empty string, or None (then it is transcribed or not needed)."""
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise ValueError(f"{name}: text must be a non-empty string (or None to transcribe the audio), got {text!r}.")
