"""Predict the emotion of an utterance two ways, and plot where the crossmodal attention focused.

    python examples/predict.py --model your-name/mer-iemocap --audio speech.wav --text "I can't believe it."

1. The pipeline (`trust_remote_code=True` loads the model's own code, processor and pipeline).
2. Plain AutoProcessor + AutoModelForSequenceClassification, the same numbers by hand.
3. A PNG: the waveform with, for each token, the audio position it focused on (audio_to_text), and for each
   20 ms frame the token it focused on (text_to_audio).
Without --audio, a synthetic two-second vowel-like signal is used, so the script runs anywhere.
"""

import argparse

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoProcessor, pipeline  # noqa: E402

from modeling_mer.audio_io_mer import load_audio  # noqa: E402  (the loader the pipeline ships with)

TASK = "multimodal-emotion-recognition"
SAMPLING_RATE = 16_000


def synthetic_utterance(seconds=2.0):
    """A voiced-sounding signal: harmonics of a gliding pitch under a syllable-rate envelope."""
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLING_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3 * t)) * np.minimum(1, 4 * t) * np.minimum(1, 4 * (seconds - t))
    return (0.2 * voice * envelope).astype(np.float32)


def predict_with_pipeline(model_id, audio, text):
    classifier = pipeline(TASK, model=model_id, trust_remote_code=True)
    return classifier(audio, text=text, return_focus=True)


def predict_with_auto_classes(model_id, audio, text):
    processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_id, trust_remote_code=True).eval()
    inputs = processor(text=[text], audio=[audio], sampling_rate=SAMPLING_RATE)
    with torch.no_grad():
        probabilities = model(**inputs).logits.softmax(-1)[0]
    return {model.config.id2label[index]: float(p) for index, p in enumerate(probabilities)}


def plot_focus(audio, focus, scores, path):
    """Top: waveform, one marker per token at the audio time it attends to. Bottom: token attended per frame."""
    window = focus[0]  # one window unless the clip is longer than max_audio_seconds
    tokens = window["tokens"]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, constrained_layout=True)
    time = np.arange(len(audio)) / SAMPLING_RATE
    top.plot(time, audio, color="0.6", linewidth=0.5)
    for index, (token, seconds) in enumerate(zip(tokens, window["token_focus_seconds"], strict=True)):
        top.axvline(seconds, color="tab:red", alpha=0.4)
        # Staggered heights keep the labels of nearby centres readable.
        top.text(seconds, audio.max() * (1 - 0.25 * (index % 4)), token, rotation=90, va="top", fontsize=8)
    top.set_ylabel("waveform")
    top.set_title("audio_to_text: where each token looks in the audio   |   "
                  + ", ".join(f"{s['label']} {s['score']:.2f}" for s in scores[:3]))
    frame_times = window["window_start_seconds"] + window["frame_seconds"] * np.arange(len(window["frame_focus_token"]))
    bottom.step(frame_times, window["frame_focus_token"], where="post", color="tab:blue")
    bottom.set_yticks(range(len(tokens)), tokens, fontsize=8)
    bottom.set_ylabel("token attended")
    bottom.set_xlabel("time (s)")
    bottom.set_title("text_to_audio: which token each frame looks at")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained MER model folder or Hub repo id.")
    parser.add_argument("--audio", help="An audio file (any rate; resampled to 16 kHz). Default: a synthetic clip.")
    parser.add_argument("--text", default="this is only a test sentence", help="The utterance's transcript.")
    parser.add_argument("--output", default="focus.png", help="Where to write the focus plot.")
    args = parser.parse_args(argv)

    audio = load_audio(args.audio) if args.audio else synthetic_utterance()
    result = predict_with_pipeline(args.model, audio, args.text)
    print("pipeline:     " + ", ".join(f"{s['label']} {s['score']:.3f}" for s in result["scores"]))
    by_hand = predict_with_auto_classes(args.model, audio, args.text)
    print("auto classes: " + ", ".join(f"{label} {p:.3f}" for label, p in sorted(by_hand.items(), key=lambda x: -x[1])))
    plot_focus(audio, result["focus"], result["scores"], args.output)
    print(f"focus plot: {args.output}")


if __name__ == "__main__":
    main()
