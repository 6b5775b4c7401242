"""The README.md (model card) pushed with a trained model. Training side: never imported by shipped files."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..configuration_mer import TASK

CITATION = """\
@inproceedings{kim2023focus,
  title     = {Focus-attention-enhanced Crossmodal Transformer with Metric Learning for Multimodal Speech Emotion Recognition},
  author    = {Kim, K. and Cho, N.},
  booktitle = {Proc. INTERSPEECH 2023},
  year      = {2023}
}"""

DESCRIPTION = """\
A multimodal (speech + transcript) emotion classifier, an independent implementation of the method of
Kim & Cho (NCSOFT), *Focus-attention-enhanced Crossmodal Transformer with Metric Learning for
Multimodal Speech Emotion Recognition*, INTERSPEECH 2023. It is not the authors' code; where the paper
leaves a choice open, the choice is documented in the model's config.

- **Text branch:** `{text}` encodes the transcript.
- **Speech branch ("A-wav2vec 2.0"):** `{audio}` encodes the raw 16 kHz waveform; a CNN over the
  log-mel spectrogram and a BiLSTM over MFCCs add prosody and intensity cues, merged into the
  wav2vec 2.0 frames by guided attention (frames as queries) with a skip connection.
- **Fusion:** two crossmodal transformers (text attends to audio, audio attends to text) whose attention
  carries a learned Gaussian *focus* bias (a predicted centre and width per query), then pooling over
  valid positions, a fully connected embedding layer and a classifier.
- **Training objective:** cross-entropy on the logits plus a triplet loss on the embedding (metric
  learning), so that utterances of the same emotion lie close together.
"""

LIMITATIONS = """\
- Trained and evaluated on {dataset} only. Acted or elicited emotion in studio recordings differs from
  spontaneous speech; expect lower accuracy on other speakers, languages, microphones and noise, and
  on emotions outside the label set above.
- The model needs a transcript. Without one, the pipeline can run a speech recognizer (`asr_model=`);
  recognition errors then reach the classifier.
- Emotion categories are a coarse, culturally dependent simplification and annotators often disagree.
  Do not use this model for decisions about people (hiring, surveillance, health, law enforcement).
"""


def _usage(repo: str) -> str:
    return f"""\
With the pipeline (audio: a file path, bytes, a 16 kHz array or `{{"array", "sampling_rate"}}`):

```python
from transformers import pipeline

classifier = pipeline("{TASK}", model="{repo}", trust_remote_code=True)
classifier("speech.wav", text="I can't believe you did that.")
# [{{"label": ..., "score": ...}}, ...] sorted by score
classifier(["a.wav", "b.wav"], text=["first transcript", "second"], batch_size=8)
```

Without a transcript, name a speech recognizer (its transcript is returned with the scores):

```python
classifier("speech.wav", asr_model="openai/whisper-small")
# {{"scores": [...], "transcript": "..."}}
```

With the model and processor:

```python
import soundfile
import torch
from transformers import AutoModelForSequenceClassification, AutoProcessor

processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained("{repo}", trust_remote_code=True)

waveform, rate = soundfile.read("speech.wav", dtype="float32")  # a 16 kHz mono file; the pipeline resamples others
inputs = processor(text=["I can't believe you did that."], audio=[waveform], sampling_rate=16_000, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
print(model.config.id2label[int(logits.argmax(-1))])
```
"""


def hub_repo_id(name: str | None) -> str | None:
    """`name` if it can stand in the card's `base_model` / `datasets` metadata, else None.

    The Hub links those fields to repositories, so they must be `owner/name` ids: a display name ("randomly
    initialised small wav2vec2"), a short alias ("demo", "minilm") or a local path would be a dead link (or
    fail the Hub's metadata check). Such names still appear in the card's text."""
    if not name or "/" not in name or os.path.exists(name) or name.startswith((".", "/", "~")):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def write_model_card(
    output_dir: str | os.PathLike,
    *,
    base_model_text: str,
    base_model_audio: str,
    dataset_name: str,
    protocol: str,
    metrics_table_markdown: str,
    label_names: list[str] | tuple[str, ...],
    license: str = "apache-2.0",
    repo_id: str | None = None,
) -> Path:
    """Write `output_dir/README.md` and return its path.

    `protocol` is prose (splits, folds, model selection); `metrics_table_markdown` a ready Markdown
    table, e.g. per-fold WA/UA. Without `repo_id` the snippets load from a placeholder repo name.
    """
    if not label_names:
        raise ValueError("label_names is empty: the card lists the emotions the model predicts")
    if "|" not in metrics_table_markdown:
        raise ValueError(f"metrics_table_markdown should be a Markdown table, got {metrics_table_markdown!r}")
    data = ModelCardData(
        language="en",
        license=license,
        library_name="transformers",
        pipeline_tag="audio-classification",  # the closest Hub task; the custom pipeline is `TASK`
        tags=["multimodal", "speech-emotion-recognition", "emotion-recognition", "audio", "text", TASK],
        # Only real repo ids (see hub_repo_id); an empty list would be written as `[]`, so None leaves the key out.
        datasets=[hub_repo_id(dataset_name)] if hub_repo_id(dataset_name) else None,
        # Hub metric ids: WA is "accuracy"; UA (mean per-class recall) is macro "recall".
        metrics=["accuracy", "recall"],
        base_model=[name for name in (base_model_text, base_model_audio) if hub_repo_id(name)] or None,
    )
    repo = repo_id or "your-username/mer-model"
    title = repo_id.split("/")[-1] if repo_id else "Multimodal speech emotion recognition"
    labels = ", ".join(f"`{name}`" for name in label_names)
    body = f"""
# {title}

## Model description

{DESCRIPTION.format(text=base_model_text, audio=base_model_audio)}
Labels ({len(label_names)}): {labels}.

## Training and evaluation protocol

Dataset: {dataset_name}.

{protocol.strip()}

## Results

WA: weighted accuracy (overall accuracy). UA: unweighted accuracy (mean per-class recall).

{metrics_table_markdown.strip()}

## Usage

{_usage(repo)}
## Limitations

{LIMITATIONS.format(dataset=dataset_name)}
## License

The weights are released under `{license}`. The base encoders (`{base_model_text}`,
`{base_model_audio}`) and the training data ({dataset_name}) have their own terms; check them before
redistribution or commercial use.

## Citation

```bibtex
{CITATION}
```
"""
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path
