"""The two pictures of a run: the confusion matrix and a 2-D projection of the embeddings F(x)."""

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion_matrix(matrix, label_names, path, title):
    matrix = np.asarray(matrix, dtype=float)
    row_share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)  # recall per true class
    figure, axis = plt.subplots(figsize=(1.2 * len(label_names) + 2, 1.2 * len(label_names) + 1.5))
    axis.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    for row in range(len(label_names)):
        for column in range(len(label_names)):
            colour = "white" if row_share[row, column] > 0.5 else "black"
            axis.text(column, row, f"{int(matrix[row, column])}\n{row_share[row, column]:.0%}",
                      ha="center", va="center", color=colour, fontsize=9)
    axis.set_xticks(range(len(label_names)), label_names, rotation=30)
    axis.set_yticks(range(len(label_names)), label_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def project_2d(embeddings):
    """PCA to 2-D (deterministic and dependency-free; enough to see whether classes separate)."""
    centred = embeddings - embeddings.mean(0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def plot_embeddings(embeddings, labels, label_names, path, title):
    points = project_2d(np.asarray(embeddings, dtype=np.float64))
    figure, axis = plt.subplots(figsize=(6, 5))
    for index, name in enumerate(label_names):
        chosen = np.asarray(labels) == index
        if chosen.any():
            axis.scatter(points[chosen, 0], points[chosen, 1], s=10, alpha=0.7, label=name)
    axis.legend(markerscale=2)
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def waveform_envelope(source, columns=2000, block_seconds=30.0):
    """(times, low, high): the waveform's min and max per column, read block by block (flat memory)."""
    from ..configuration_mer import SAMPLING_RATE
    from ..segmentation_mer import AudioStream

    stream = AudioStream(source)
    per_column = max(1, len(stream) // columns)
    block = per_column * max(1, int(block_seconds * SAMPLING_RATE) // per_column)  # columns never straddle blocks
    lows, highs = [], []
    for _, samples in stream.blocks(block):
        count = -(-len(samples) // per_column)
        padded = np.pad(samples, (0, count * per_column - len(samples)), mode="edge").reshape(count, per_column)
        lows.append(padded.min(1))
        highs.append(padded.max(1))
    low, high = np.concatenate(lows), np.concatenate(highs)
    return np.arange(len(low)) * per_column / SAMPLING_RATE, low, high


def plot_timeline(source, timeline, label_names, path, title="emotions over time"):
    """The waveform on top; below it each segment's class probabilities as stacked bars over its span,
    with the top label written in (a timeline entry is {"start", "end", "label", "scores", ...})."""
    times, low, high = waveform_envelope(source)
    colours = plt.get_cmap("tab10")
    figure, (wave, emotions) = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True,
                                            gridspec_kw={"height_ratios": [1, 1.4]})
    wave.fill_between(times, low, high, color="0.35", linewidth=0)
    wave.set_ylabel("waveform")
    for entry in timeline:
        wave.axvspan(entry["start"], entry["end"], color="tab:blue", alpha=0.08)
        by_label = {score["label"]: score["score"] for score in entry["scores"]}
        bottom = 0.0
        for index, name in enumerate(label_names):
            height = by_label.get(name, 0.0)
            emotions.bar(entry["start"], height, width=entry["end"] - entry["start"], bottom=bottom, align="edge",
                         color=colours(index), edgecolor="white", linewidth=0.5)
            bottom += height
        emotions.text((entry["start"] + entry["end"]) / 2, 1.02, entry["label"], ha="center", va="bottom",
                      fontsize=7, rotation=90 if entry["end"] - entry["start"] < 2 else 0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(index)) for index in range(len(label_names))]
    emotions.legend(handles, label_names, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    emotions.set_ylim(0, 1.25)
    emotions.set_ylabel("class probability")
    emotions.set_xlabel("time (s)")
    wave.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
