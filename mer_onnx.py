"""Standalone ONNX Runtime predictor for an exported MER model (`mer-export MODEL OUT` copies it to OUT).

Needs only onnxruntime, tokenizers and numpy (+ soundfile to read files); no torch, no transformers, no mer.

    from mer_onnx import MERONNXPredictor
    classify = MERONNXPredictor("outputs/demo/onnx")            # model_file="model_int8.onnx" for int8
    classify("utterance.wav", text="I can't believe you did that")
    # [{'label': 'angry', 'score': 0.91}, {'label': 'neutral', 'score': 0.05}, ...]
    classify([{"audio": "a.wav", "text": "..."}, {"audio": waveform_16k, "text": "..."}], batch_size=8)

    python mer_onnx.py outputs/demo/onnx a.wav --text "..."     # prints JSON

Same outputs as the transformers pipeline (`[{"label", "score"}, ...]` sorted by score), with the same policies:
audio longer than `max_audio_seconds` is cut into equal windows, each classified with the whole transcript, whose
class probabilities are averaged weighted by window length; audio shorter than the speech encoder's receptive
field is an error. Audio is a file path, a 1-D float array at 16 kHz or {"array", "sampling_rate"} at 16 kHz
(resample other rates first: this file carries no resampler; the pipeline's `load_audio` does).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

DEFAULT_MAX_AUDIO_SECONDS = 30.0
FEATURE_EPSILON = 1e-7  # Wav2Vec2FeatureExtractor's zero-mean unit-variance epsilon


class MERONNXPredictor:
    def __init__(self, folder, model_file="model.onnx", providers=("CPUExecutionProvider",), session_options=None):
        folder = Path(folder)
        settings_path = folder / "mer_onnx.json"
        if not settings_path.exists():
            raise FileNotFoundError(f"{folder} has no mer_onnx.json; export the model with `mer-export MODEL {folder}`.")
        self.settings = json.loads(settings_path.read_text())
        self.id2label = {int(index): label for index, label in self.settings["id2label"].items()}
        self.uses_text = "text" in self.settings["modalities"]
        self.uses_audio = "audio" in self.settings["modalities"]
        self.sampling_rate = self.settings["sampling_rate"]
        self.session = onnxruntime.InferenceSession(str(folder / model_file), sess_options=session_options,
                                                    providers=list(providers))
        self.tokenizer = None
        if self.uses_text:
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.tokenizer.enable_truncation(self.settings["max_text_tokens"])
            self.tokenizer.no_padding()  # padded here, to the longest item of each batch

    # ------------------------------------------------------------------ inputs

    def _waveform(self, audio, name):
        if isinstance(audio, (str, Path)):
            import soundfile

            if not Path(audio).exists():
                raise FileNotFoundError(f"{name}: audio file not found: {audio}")
            audio, rate = soundfile.read(str(audio), dtype="float32", always_2d=True)
            audio = {"array": audio.mean(axis=1), "sampling_rate": rate}  # stereo mixed down, as load_audio does
        if isinstance(audio, dict):
            if audio.get("sampling_rate") != self.sampling_rate:
                raise ValueError(f"{name}: audio at {audio.get('sampling_rate')} Hz; this predictor takes "
                                 f"{self.sampling_rate} Hz only. Resample it first.")
            audio = audio["array"]
        waveform = np.asarray(audio, dtype=np.float32)
        if waveform.ndim != 1 or waveform.size == 0 or not np.isfinite(waveform).all():
            raise ValueError(f"{name}: expected a non-empty, finite 1-D 16 kHz waveform, got shape {waveform.shape}.")
        needed = self.settings["min_audio_samples"]
        if waveform.size < needed:
            raise ValueError(f"{name}: the audio is {waveform.size} samples, shorter than the speech encoder's "
                             f"receptive field of {needed} samples; pass a longer clip.")
        return waveform

    def _windows(self, item, name, max_audio_seconds):
        """(text, waveform window, window length) per window of one item."""
        text = item.get("text")
        if self.uses_text and (not isinstance(text, str) or not text.strip()):
            raise ValueError(f"{name}: this model needs a non-empty transcript (text='...'), got {text!r}.")
        if not self.uses_audio:
            return [(text, None, 1)]
        if item.get("audio") is None:
            raise ValueError(f"{name}: no audio; this model uses modalities={self.settings['modalities']}.")
        waveform = self._waveform(item["audio"], name)
        bounds = _split_windows(waveform.size, int(max_audio_seconds * self.sampling_rate))
        return [(text, waveform[start:stop], stop - start) for start, stop in bounds]

    def _feeds(self, windows):
        """Padded model inputs for a list of (text, waveform) windows, as MERProcessor builds them."""
        feeds = {}
        if self.uses_text:
            encodings = self.tokenizer.encode_batch([text for text, _ in windows])
            length = max(len(encoding.ids) for encoding in encodings)
            ids = np.full((len(windows), length), self.settings["pad_token_id"], dtype=np.int64)
            mask = np.zeros((len(windows), length), dtype=np.int64)
            for row, encoding in enumerate(encodings):
                ids[row, : len(encoding.ids)] = encoding.ids
                mask[row, : len(encoding.ids)] = 1
            feeds.update(input_ids=ids, attention_mask=mask)
        if self.uses_audio:
            length = max(waveform.size for _, waveform in windows)
            values = np.full((len(windows), length), self.settings["padding_value"], dtype=np.float32)
            mask = np.zeros((len(windows), length), dtype=np.int64)
            for row, (_, waveform) in enumerate(windows):
                if self.settings["do_normalize"]:
                    waveform = (waveform - waveform.mean()) / np.sqrt(waveform.var() + FEATURE_EPSILON)
                values[row, : waveform.size] = waveform
                mask[row, : waveform.size] = 1
            feeds.update(input_values=values, audio_attention_mask=mask)
        return feeds

    # ------------------------------------------------------------------ running

    def run(self, feeds):
        """Raw (logits, embeddings) for ready model inputs (numpy arrays named as in the graph)."""
        return self.session.run(["logits", "embeddings"], feeds)

    def __call__(self, inputs=None, text=None, batch_size=1, top_k=None, max_audio_seconds=DEFAULT_MAX_AUDIO_SECONDS):
        # A list of numbers is one waveform; a list of paths, arrays or dicts is a batch.
        samples = isinstance(inputs, (list, tuple)) and len(inputs) > 0 and isinstance(inputs[0], (int, float))
        single = not isinstance(inputs, (list, tuple)) or samples
        if inputs is None and isinstance(text, (list, tuple)):
            single, inputs, text = False, [None] * len(text), list(text)
        if single:
            items = [_as_item(inputs, text)]
        else:
            texts = list(text) if isinstance(text, (list, tuple)) else [text] * len(inputs)
            if len(texts) != len(inputs):
                raise ValueError(f"Got {len(inputs)} audio items but {len(texts)} transcripts.")
            items = [_as_item(item, item_text) for item, item_text in zip(inputs, texts, strict=True)]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        minimum = self.settings.get("min_audio_samples", 1) / self.sampling_rate
        if not max_audio_seconds >= minimum:
            raise ValueError(f"max_audio_seconds must be >= {minimum:.3f} s (the receptive field), "
                             f"got {max_audio_seconds!r}.")
        # Every window of every item is checked before any inference, then windows run in batches.
        windows = []
        for index, item in enumerate(items):
            name = "input" if single else f"item {index}"
            windows += [(index, *window) for window in self._windows(item, name, max_audio_seconds)]
        probabilities = np.empty((len(windows), len(self.id2label)), dtype=np.float64)
        for start in range(0, len(windows), batch_size):
            chunk = windows[start: start + batch_size]
            logits, _ = self.run(self._feeds([(text, waveform) for _, text, waveform, _ in chunk]))
            probabilities[start: start + len(chunk)] = _softmax(logits.astype(np.float64))
        results = []
        owners = np.array([owner for owner, *_ in windows])
        weights = np.array([float(length) for *_, length in windows])
        for index in range(len(items)):
            rows = owners == index
            scores = (probabilities[rows] * weights[rows, None]).sum(0) / weights[rows].sum()
            order = np.argsort(-scores, kind="stable")[: top_k or len(scores)]
            results.append([{"label": self.id2label[int(k)], "score": float(scores[k])} for k in order])
        return results[0] if single else results


def _as_item(item, text):
    if isinstance(item, dict) and ("audio" in item or "text" in item):
        return {"audio": item.get("audio"), "text": item.get("text") if item.get("text") is not None else text}
    return {"audio": item, "text": text}


def _softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _split_windows(length, max_samples):
    """Equal windows of at most max_samples (as the pipeline cuts them): no short tail window."""
    count = max(1, math.ceil(length / max_samples))
    bounds = np.linspace(0, length, count + 1).round().astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Emotions of audio files with an exported MER ONNX model.")
    parser.add_argument("folder", help="The folder mer-export wrote.")
    parser.add_argument("audio", nargs="*", help="16 kHz audio files.")
    parser.add_argument("--text", action="append", default=None, help="One transcript per file, in order.")
    parser.add_argument("--model-file", default="model.onnx", help="model.onnx or model_int8.onnx.")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    predictor = MERONNXPredictor(args.folder, args.model_file)
    texts = args.text or [None] * len(args.audio)
    audio = args.audio or [None] * len(texts)
    print(json.dumps(predictor(audio, text=texts, batch_size=args.batch_size), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
