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
