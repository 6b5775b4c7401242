"""Emotion timeline over a long recording: real-time factor, memory, boundaries and accuracy vs isolated clips.

Recording: demo-corpus utterances joined by 0.3-1.5 s pauses with white noise (modeling_mer.data.conversation),
`--minutes` long (default 10), written to a 16 kHz WAV and read back block by block, as a user's file would be.
Model: `--model FOLDER` (e.g. a `train.py examples/configs/demo.yaml` output's model folder), or by default the
demo architecture (MiniLM text encoder, 2-layer 128-wide wav2vec2, prosody branch, focus) with random fusion
weights: speed and memory do not depend on training, accuracy does (then only the agreement line means much).

Printed, side by side in one run:
- real-time factor (wall time / recording length) of VAD alone and of the whole timeline, per detector;
  target <= 0.1 for the whole timeline on CPU;
- peak Python-heap memory (tracemalloc: numpy buffers included, torch's own allocator not) for a recording
  of a quarter of the length vs the full length: flat when the ratio stays near 1;
- segment boundaries within 0.15 s of the truth (target >= 95 %), per-segment accuracy vs the same model's
  accuracy on the isolated utterances (target: no more than 3 points below), and label agreement.

Run from the repository root: PYTHONPATH=. python benchmarks/bench_timeline.py [--model FOLDER] [--minutes 10]
"""

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile
from transformers import pipeline

from modeling_mer.configuration_mer import SAMPLING_RATE, TASK
from modeling_mer.data import load_demo
from modeling_mer.data.conversation import boundary_hits, make_conversation
from modeling_mer.segmentation_mer import AudioStream, detect_speech, silero_available


def demo_architecture_folder(folder):
    from modeling_mer.data.demo import DEMO_LABEL_NAMES
    from modeling_mer.training.arguments import ModelArguments
    from modeling_mer.training.experiment import build_model

    # examples/configs/demo.yaml's model settings.
    args = ModelArguments(text_model="minilm", d_model=64, num_crossmodal_layers=2, num_attention_heads=4,
                          triplet_weight=0.1, freeze_text_encoder=True)
    model, processor = build_model(args, DEMO_LABEL_NAMES)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def conversation_of(dataset, minutes, seed, noise_std):
    rng = np.random.default_rng(seed)
    mean_seconds = float(np.mean(dataset["duration"])) + 0.9  # utterance + mean pause
    count = int(minutes * 60 / mean_seconds)
    return make_conversation(dataset, rng.choice(len(dataset), size=count, replace=count > len(dataset)), seed=seed,
                             noise_std=noise_std)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="A trained MER folder (default: demo architecture, random)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--noise-std", type=float, default=0.003,
                        help="White noise over the recording (0.003 = -50 dBFS, about 15 dB below the demo speech). "
                             "A demo model trained without noise augmentation loses ~17 points to it; 0 isolates "
                             "what segmentation itself costs.")
    parser.add_argument("--skip-memory", action="store_true", help="Skip the quarter-length memory run.")
    args = parser.parse_args()

    dataset = load_demo()
    work = Path(tempfile.mkdtemp(prefix="bench-timeline-"))
    model = args.model or demo_architecture_folder(work / "model")
    pipe = pipeline(TASK, model=str(model), trust_remote_code=True, device=-1)
    conversation = conversation_of(dataset, args.minutes, seed=0, noise_std=args.noise_std)
    wav = work / "talk.wav"
    soundfile.write(wav, conversation.waveform, SAMPLING_RATE, subtype="FLOAT")
    seconds = len(conversation.waveform) / SAMPLING_RATE
    truth = [(u["start"], u["end"]) for u in conversation.utterances]
    print(f"recording: {seconds / 60:.1f} min, {len(truth)} utterances, noise std {args.noise_std}; model: {args.model or 'demo architecture'}")

    detectors = ["energy"] + (["silero"] if silero_available() else [])
    pipe(str(wav), timeline=True, words=conversation.words, vad="energy", segments=truth[:2])  # warm-up
    timelines = {}
    for vad in detectors:
        start = time.perf_counter()
        found = detect_speech(AudioStream(str(wav)), vad=vad)
        vad_seconds = time.perf_counter() - start
        start = time.perf_counter()
        timelines[vad] = pipe(str(wav), timeline=True, words=conversation.words, vad=vad,
                              batch_size=args.batch_size)
        total = time.perf_counter() - start
        hits = boundary_hits([(s / SAMPLING_RATE, e / SAMPLING_RATE) for s, e in found], truth)
        print(f"{vad:>7}: VAD {vad_seconds:6.1f} s = {vad_seconds / seconds:.3f} x real time; whole timeline "
              f"{total:6.1f} s = {total / seconds:.3f} x real time (target <= 0.1); {len(found)} segments, "
              f"boundaries within 0.15 s: {hits}/{len(truth)} = {100 * hits / len(truth):.1f} % (target >= 95)")

    names = pipe.model.config.id2label
    labels = [names[u["label"]] for u in conversation.utterances]
    isolated = [result[0]["label"] for result in pipe([{"audio": u["waveform"], "text": u["text"]}
                                                       for u in conversation.utterances], batch_size=args.batch_size)]
    isolated_accuracy = np.mean([a == b for a, b in zip(isolated, labels, strict=True)])
    for vad, timeline in timelines.items():
        # Each true utterance -> the segment overlapping it most (none: counted wrong).
        correct = agree = 0
        for utterance, truth_label, alone in zip(conversation.utterances, labels, isolated, strict=True):
            overlaps = [min(e["end"], utterance["end"]) - max(e["start"], utterance["start"]) for e in timeline]
            if overlaps and max(overlaps) > 0:
                entry = timeline[int(np.argmax(overlaps))]
                correct += entry["label"] == truth_label
                agree += entry["label"] == alone
        print(f"{vad:>7}: per-segment accuracy {100 * correct / len(labels):.1f} % vs isolated "
              f"{100 * isolated_accuracy:.1f} % (target: >= isolated - 3); same label as isolated: "
              f"{100 * agree / len(labels):.1f} %")

    if not args.skip_memory:
        peaks = {}
        for share in (0.25, 1.0):
            part = work / f"part{share}.wav"
            soundfile.write(part, conversation.waveform[: int(share * len(conversation.waveform))], SAMPLING_RATE,
                            subtype="FLOAT")
            tracemalloc.start()
            pipe(str(part), timeline=True, words=conversation.words, vad="energy", batch_size=args.batch_size)
            peaks[share] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        print(f"peak heap (energy VAD): {peaks[0.25] / 2**20:.1f} MiB for {seconds / 4 / 60:.1f} min, "
              f"{peaks[1.0] / 2**20:.1f} MiB for {seconds / 60:.1f} min: ratio {peaks[1.0] / peaks[0.25]:.2f} "
              f"for 4x the audio (the whole recording as float32 would be {4 * len(conversation.waveform) / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
