"""Where a trained model's focus looks on held-out utterances: the demo corpus's test session (5), never trained on.

Prints, per direction and layer, the focus statistics of modeling_mer.training.focus_stats (centre spread and
width as fractions of the other side's length, Spearman(query index, centre)), averaged over utterances and
heads, next to the same numbers for the untrained model of the same config (what the initialisation gives), so
that what training changed shows side by side. Optionally writes the predict.py plot of one utterance.

    HF_HUB_OFFLINE=1 python benchmarks/focus_alignment.py /tmp/focus_demo/runs/full_model/fold_5 \
        --plot docs/focus_demo.png
"""

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from modeling_mer import MERForSequenceClassification
from modeling_mer.data.demo import load_demo
from modeling_mer.processing_mer import MERProcessor
from modeling_mer.training.focus_stats import STATISTICS, focus_statistics

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))


def held_out(session=5):
    dataset = load_demo()
    return dataset.select([i for i, s in enumerate(dataset["session"]) if s == session])


def decode(example):
    audio, rate = sf.read(io.BytesIO(example["audio"]["bytes"]), dtype="float32")
    assert rate == 16_000, rate
    return audio


def average_statistics(model, processor, dataset, batch_size=16):
    totals, count = {}, 0
    for start in range(0, len(dataset), batch_size):
        rows = dataset.select(range(start, min(start + batch_size, len(dataset))))
        inputs = processor(text=list(rows["text"]), audio=[decode(row) for row in rows])
        with torch.no_grad():
            statistics = focus_statistics(model(**inputs, output_attentions=True))
        for direction, layers in statistics.items():
            for index, layer in enumerate(layers):
                for name in STATISTICS:
                    key = (direction, index, name)
                    totals[key] = totals.get(key, 0.0) + layer[name] * len(rows)
        count += len(rows)
    return {key: value / count for key, value in totals.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="A trained MER model folder (with its processor).")
    parser.add_argument("--plot", help="Write the predict.py focus plot of the first held-out utterance here.")
    parser.add_argument("--processor", help="Processor folder, when `model` is a checkpoint without one.")
    parser.add_argument("--limit", type=int, default=200, help="Held-out utterances to use.")
    args = parser.parse_args()
    model = MERForSequenceClassification.from_pretrained(args.model).eval()
    processor = MERProcessor.from_pretrained(args.processor or args.model)
    dataset = held_out()
    dataset = dataset.select(range(min(args.limit, len(dataset))))
    torch.manual_seed(0)
    untrained = MERForSequenceClassification(model.config).eval()
    trained_stats = average_statistics(model, processor, dataset)
    initial_stats = average_statistics(untrained, processor, dataset)
    config = model.config
    print(f"{len(dataset)} held-out utterances (session 5); focus_centre_prior={config.focus_centre_prior}, "
          f"focus_initial_width={config.focus_initial_width}; trained (untrained)")
    for direction in ("text_to_audio", "audio_to_text"):
        for layer in range(config.num_crossmodal_layers):
            print(f"{direction} layer {layer}: " + "  ".join(
                f"{name} {trained_stats[(direction, layer, name)]:+.3f} ({initial_stats[(direction, layer, name)]:+.3f})"
                for name in STATISTICS))
    for name, parameter in model.named_parameters():
        if name.endswith("focus_diagonal_gain"):
            print(f"{name}: {np.round(parameter.detach().numpy(), 3).tolist()}")
    if args.plot:
        from predict import focus_maps, plot_focus  # examples/predict.py

        example = dataset[0]
        audio = decode(example)
        inputs = processor(text=[example["text"]], audio=[audio])
        with torch.no_grad():
            output = model(**inputs, output_attentions=True)
        probabilities = output.logits.softmax(-1)[0]
        scores = sorted(({"label": config.id2label[i], "score": float(p)} for i, p in enumerate(probabilities)),
                        key=lambda s: -s["score"])
        scores[0]["label"] = f'"{example["text"]}" ({example["id"]}): {scores[0]["label"]}'
        plot_focus(audio, focus_maps(model, processor, inputs, output), scores, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
