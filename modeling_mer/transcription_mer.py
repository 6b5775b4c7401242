"""Transcripts for audio that came without one: a speech recognizer, built on first use and then reused.

Shipped with every checkpoint beside pipeline_mer.py. The recognizer is any transformers
automatic-speech-recognition model (a local folder or Hub id) or a ready ASR pipeline / callable.
"""

from .configuration_mer import SAMPLING_RATE


class Transcriber:
    """Turns a 16 kHz waveform into text with the recognizer named by `asr_model`; holds the last one built."""

    def __init__(self):
        self._source = None
        self._recognizer = None

    @staticmethod
    def check_source(asr_model):
        if isinstance(asr_model, str) or callable(asr_model):
            return asr_model
        raise ValueError("asr_model must be a local folder or Hub id of a speech recognition model, or an "
                         f"automatic-speech-recognition pipeline; got {type(asr_model).__name__}.")

    def _recognizer_for(self, asr_model, device):
        if asr_model is not self._source and not (isinstance(asr_model, str) and asr_model == self._source):
            if isinstance(asr_model, str):
                from transformers import pipeline

                self._recognizer = pipeline("automatic-speech-recognition", model=asr_model, device=device)
            else:
                self._recognizer = asr_model
            self._source = asr_model
        return self._recognizer

    def __call__(self, waveform, name, asr_model, config, device=None):
        if asr_model is None:
            raise ValueError(f"{name}: no transcript (text=None) and no speech recognizer. This model uses "
                             f"modalities={config.modalities}: pass text='...', or asr_model=<a local "
                             "folder or Hub id of an ASR model> to transcribe the audio first.")
        result = self._recognizer_for(asr_model, device)({"raw": waveform, "sampling_rate": SAMPLING_RATE})
        text = (result.get("text") if isinstance(result, dict) else result) or ""
        if not text.strip():
            raise ValueError(f"{name}: the speech recognizer found no words in the audio; pass the transcript "
                             "with text='...'.")
        return text.strip()

    def words(self, waveform, offset_seconds, name, asr_model, device=None):
        """Word timings {"word", "start", "end"} (seconds, shifted by offset_seconds) from the recognizer's
        `return_timestamps="word"` output; a recognizer without word timestamps is a clear error."""
        recognizer = self._recognizer_for(asr_model, device)
        try:
            result = recognizer({"raw": waveform, "sampling_rate": SAMPLING_RATE}, return_timestamps="word")
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name}: the speech recognizer gave no word timestamps ({error}). A timeline needs "
                             "an ASR model that supports return_timestamps='word' (CTC models such as wav2vec2, "
                             "or Whisper), or words=[{'word', 'start', 'end'}, ...] passed by you.") from error
        chunks = result.get("chunks") if isinstance(result, dict) else None
        if chunks is None:
            raise ValueError(f"{name}: the speech recognizer returned no 'chunks' with word timestamps; pass "
                             "words=[{'word', 'start', 'end'}, ...] instead.")
        words = []
        for chunk in chunks:
            start, end = chunk["timestamp"]
            end = start if end is None else end  # Whisper leaves the last word's end open at a chunk's edge
            words.append({"word": chunk["text"].strip(), "start": offset_seconds + float(start),
                          "end": offset_seconds + float(end)})
        return [word for word in words if word["word"]]
