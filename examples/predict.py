"""Predict the emotion of an utterance two ways, and plot where the crossmodal attention focused.

    python examples/predict.py --model your-name/mer-iemocap --audio speech.wav --text "I can't believe it."

1. The pipeline (`trust_remote_code=True` loads the model's own code, processor and pipeline).
2. Plain AutoProcessor + AutoModelForSequenceClassification, the same numbers by hand.
3. A PNG: the waveform; each token's attention over the audio as a heat map, with its focus centre and width
   (audio_to_text); and for each 20 ms frame the token it focused on (text_to_audio).
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
from modeling_mer.configuration_mer import SAMPLING_RATE, TASK  # noqa: E402


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
    return classifier(audio, text=text, top_k=None)  # [{"label", "score"}], best first


def predict_with_auto_classes(model_id, audio, text):
    """The same prediction by hand, plus where the crossmodal attention looked (for the plot)."""
    processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_id, trust_remote_code=True).eval()
    inputs = processor(text=[text], audio=[audio], sampling_rate=SAMPLING_RATE)
    with torch.no_grad():
        output = model(**inputs, output_attentions=model.config.use_focus_attention)
    probabilities = output.logits.softmax(-1)[0]
    scores = {model.config.id2label[index]: float(p) for index, p in enumerate(probabilities)}
    maps = focus_maps(model, processor, inputs, output) if model.config.use_focus_attention else None
    return scores, maps


def focus_maps(model, processor, inputs, output, layer=-1):
    """audio_to_text attention (tokens x frames, mean over heads) with each token's focus centre and width, and
    the token each frame's focus centre points at (text_to_audio), of one crossmodal layer, in seconds."""
    text_mask, frame_mask = output.text_mask[0], output.audio_frame_mask[0]
    centres = {d: output[f"{d}_focus_centres"][layer][0].mean(0) for d in ("text_to_audio", "audio_to_text")}
    widths = {d: output[f"{d}_focus_widths"][layer][0].mean(0) for d in ("text_to_audio", "audio_to_text")}
    # Centres are per query position in units of the other side; with focus_source="key" the roles swap.
    token_side, frame_side = ("audio_to_text", "text_to_audio") if model.config.focus_source == "query" else (
        "text_to_audio", "audio_to_text")
    frame_seconds = float(np.prod(model.config.audio_config.conv_stride)) / SAMPLING_RATE
    attention = output.audio_to_text_attentions[layer][0].mean(0)[text_mask][:, frame_mask]  # (tokens, frames)
    return {
        "tokens": processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0][text_mask].tolist()),
        "attention": attention.numpy(),
        "token_centre_seconds": (centres[token_side][text_mask] * frame_seconds).numpy(),
        "token_width_seconds": (widths[token_side][text_mask] * frame_seconds).numpy(),
        "frame_focus_token": centres[frame_side][frame_mask].numpy(),
        "frame_seconds": frame_seconds,
    }


def plot_focus(audio, maps, scores, path):
    """Three panels on one time axis: the waveform; the audio_to_text attention of every token (one row each,
    so labels never overlap) with its focus centre (dot) and width (bar); and the token each frame focuses on."""
    tokens = maps["tokens"]
    height = max(6.0, 3.0 + 0.22 * len(tokens))
    figure, (wave, heat, frames) = plt.subplots(
        3, 1, figsize=(11, height), sharex=True, constrained_layout=True,
        gridspec_kw={"height_ratios": [1, max(2, 0.2 * len(tokens)), 1.2]})
    duration = len(audio) / SAMPLING_RATE
    wave.plot(np.arange(len(audio)) / SAMPLING_RATE, audio, color="0.5", linewidth=0.5)
    wave.set_ylabel("waveform")
    wave.set_title(", ".join(f"{s['label']} {s['score']:.2f}" for s in scores[:3]))
    n_frames = maps["attention"].shape[1]
    image = heat.imshow(maps["attention"], aspect="auto", cmap="magma", interpolation="nearest",
                        extent=(0, n_frames * maps["frame_seconds"], len(tokens) - 0.5, -0.5))
    # The Gaussian bias is exp(-2 (t - mu)^2 / sig^2): +-sig/2 is one standard deviation of the focus.
    heat.errorbar(maps["token_centre_seconds"], np.arange(len(tokens)), xerr=maps["token_width_seconds"] / 2,
                  fmt="o", color="tab:cyan", markersize=3, elinewidth=1, capsize=2, label="focus centre +- width/2")
    heat.set_yticks(range(len(tokens)), tokens, fontsize=8)
    heat.set_ylabel("token (audio_to_text)")
    heat.legend(loc="upper right", fontsize=8)
    figure.colorbar(image, ax=heat, label="attention", pad=0.01)
    frame_times = maps["frame_seconds"] * np.arange(len(maps["frame_focus_token"]))
    frames.step(frame_times, maps["frame_focus_token"], where="post", color="tab:blue")
    frames.set_yticks(range(len(tokens)), tokens, fontsize=6 if len(tokens) > 20 else 8)
    frames.set_ylim(len(tokens) - 0.5, -0.5)
    frames.set_ylabel("token focused\n(text_to_audio)")
    frames.set_xlabel("time (s)")
    frames.set_xlim(0, duration)
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
    print("pipeline:     " + ", ".join(f"{s['label']} {s['score']:.3f}" for s in result))
    by_hand, maps = predict_with_auto_classes(args.model, audio, args.text)
    print("auto classes: " + ", ".join(f"{label} {p:.3f}" for label, p in sorted(by_hand.items(), key=lambda x: -x[1])))
    if maps is None:
        print("no focus plot: the model has use_focus_attention=False")
        return
    plot_focus(audio, maps, result, args.output)
    print(f"focus plot: {args.output}")


if __name__ == "__main__":
    main()
