"""Push a trained MER model to the Hub: weights, config (auto_map + pipeline registration), processor, code, card.

Training side: never imported by the shipped files. Everything is staged in a temporary folder through the
model's and processor's own `save_pretrained` (which write the auto_map, the `custom_pipelines` entry and
copy the shipped code), the model card is written there, and the folder goes up in one commit. Staging
keeps a Trainer output folder's checkpoints, optimizer states and logs off the Hub, and avoids
`push_to_hub`'s habit of replacing README.md with a generic card.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from ..modeling_mer import MERForSequenceClassification, MERModel, MERPreTrainedModel
from ..processing_mer import MERProcessor
from .model_card import write_model_card

SPACE_FOLDER = Path(__file__).resolve().parents[2] / "examples" / "space"  # app.py, requirements.txt, README.md
CARD_FIELDS = ("base_model_text", "base_model_audio", "dataset_name", "protocol", "metrics_table_markdown")


def push_model_to_hub(
    folder_or_model,
    repo_id: str,
    processor: MERProcessor | None = None,
    model_card_kwargs: dict | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload MER model",
) -> str:
    """Push a model folder (or a model object + its processor) to `repo_id`; returns the commit URL.

    `model_card_kwargs` go to `model_card.write_model_card` (base_model_text, base_model_audio, dataset_name,
    protocol, metrics_table_markdown; label_names default to the config's labels). Without them, the folder's
    own README.md is pushed if it has one.
    """
    model, processor, source = _load(folder_or_model, processor)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="mer-push-") as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        _write_card(staging, model, repo_id, model_card_kwargs, source)
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=staging, repo_id=repo_url.repo_id, commit_message=commit_message)
    return commit.commit_url


def _load(folder_or_model, processor):
    """(model, processor, source folder or None); a folder is loaded with the class it was saved from."""
    if isinstance(folder_or_model, MERPreTrainedModel):
        if processor is None:
            raise ValueError("Pushing a model object needs its processor: pass processor=MERProcessor(...).")
        return folder_or_model, processor, None
    folder = Path(folder_or_model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json; pass the folder a trained model was saved to.")
    architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    model_class = MERModel if architectures == ["MERModel"] else MERForSequenceClassification
    model = model_class.from_pretrained(folder)
    if processor is None:
        if not (folder / "processor_config.json").is_file():
            raise FileNotFoundError(f"{folder} holds no processor_config.json; save the MERProcessor there or "
                                    "pass processor=.")
        processor = MERProcessor.from_pretrained(folder)
    return model, processor, folder


def _write_card(staging, model, repo_id, model_card_kwargs, source):
    if model_card_kwargs is None:
        readme = source / "README.md" if source is not None else None
        if readme is None or not readme.is_file():
            raise ValueError(f"No model card: pass model_card_kwargs with {', '.join(CARD_FIELDS)} (see "
                             "modeling_mer.training.model_card.write_model_card), or put a README.md in the model folder.")
        Path(staging, "README.md").write_text(readme.read_text(encoding="utf-8"), encoding="utf-8")
        return
    missing = [field for field in CARD_FIELDS if field not in model_card_kwargs]
    if missing:
        raise ValueError(f"model_card_kwargs lacks {missing}; the card needs {', '.join(CARD_FIELDS)}.")
    labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
    write_model_card(staging, **{"label_names": labels, "repo_id": repo_id, **model_card_kwargs})


def push_space(space_id: str, model_id: str, token: str | None = None, private: bool = False,
               space_folder: Path = SPACE_FOLDER) -> str:
    """Publish examples/space as a Gradio Space that serves `model_id`; returns the commit URL.

    The model id goes into the Space's files (model_id.txt, which app.py reads when MER_MODEL is unset), so
    the Space works without setting a variable in its settings.
    """
    space_folder = Path(space_folder)
    if not (space_folder / "app.py").is_file():
        raise FileNotFoundError(f"{space_folder} holds no app.py; pass space_folder= pointing at a checkout's "
                                "examples/space (it is not part of the installed package).")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="mer-space-") as staging:
        for name in ("app.py", "requirements.txt", "README.md"):
            Path(staging, name).write_bytes((space_folder / name).read_bytes())
        Path(staging, "model_id.txt").write_text(model_id + "\n", encoding="utf-8")
        repo_url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=staging, repo_id=repo_url.repo_id, repo_type="space",
                                   commit_message=f"Space for {model_id}")
    return commit.commit_url
