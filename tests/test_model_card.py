"""The model card's metadata parses as the Hub's, and its body carries the table, snippets and citation."""

import pytest
from huggingface_hub import HfApi, ModelCard

from modeling_mer.training.model_card import write_model_card

TABLE = "| fold | WA | UA |\n|---|---|---|\n| 1 | 71.2 | 72.0 |\n| mean | 70.1 | 71.3 |"
KWARGS = dict(
    base_model_text="FacebookAI/roberta-base",
    base_model_audio="facebook/wav2vec2-base",
    dataset_name="IEMOCAP",
    protocol="Leave-one-session-out, 5 folds; model selection on a validation speaker, never the test session.",
    metrics_table_markdown=TABLE,
    label_names=["neutral", "happy", "sad", "angry"],
)


def test_metadata_parses(tmp_path):
    path = write_model_card(tmp_path, repo_id="test-user/mer-iemocap", **KWARGS)
    data = ModelCard.load(path).data
    assert data.pipeline_tag == "audio-classification"
    assert data.library_name == "transformers"
    assert data.license == "apache-2.0"
    assert {"multimodal", "speech-emotion-recognition", "emotion-recognition"} <= set(data.tags)
    assert data.datasets is None  # "IEMOCAP" is no Hub repo id: named in the text only
    assert data.metrics == ["accuracy", "recall"]
    assert data.base_model == ["FacebookAI/roberta-base", "facebook/wav2vec2-base"]
    assert hub_metadata_problems(path) == []


def test_body_has_table_snippets_and_citation(tmp_path):
    text = ModelCard.load(write_model_card(tmp_path, repo_id="test-user/mer-iemocap", **KWARGS)).text
    assert TABLE in text
    assert (
        'pipeline("multimodal-emotion-recognition", model="test-user/mer-iemocap", trust_remote_code=True)'
        in text
    )
    assert (
        'AutoModelForSequenceClassification.from_pretrained("test-user/mer-iemocap", trust_remote_code=True)'
        in text
    )
    assert 'AutoProcessor.from_pretrained("test-user/mer-iemocap", trust_remote_code=True)' in text
    assert "Leave-one-session-out" in text and "`angry`" in text
    assert "author    = {Kim, K. and Cho, N.}" in text and "INTERSPEECH 2023" in text
    for section in (
        "## Model description",
        "## Results",
        "## Usage",
        "## Limitations",
        "## License",
        "## Citation",
    ):
        assert section in text


def test_license_and_placeholder_repo(tmp_path):
    text = (write_model_card(tmp_path, license="cc-by-nc-sa-4.0", **KWARGS)).read_text()
    assert "license: cc-by-nc-sa-4.0" in text
    assert 'model="your-username/mer-model"' in text


@pytest.mark.parametrize("bad", [dict(label_names=[]), dict(metrics_table_markdown="WA 70")])
def test_bad_arguments_are_named(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        write_model_card(tmp_path, **{**KWARGS, **bad})


def test_hub_reads_the_card(hub_endpoint, tmp_path):
    # The Hub derives pipeline_tag and tags from the card: check it through the test Hub's commit path,
    # which also runs huggingface_hub's README validation before upload.
    api = HfApi(endpoint=hub_endpoint, token="test")
    api.create_repo("test-user/card")
    api.upload_file(
        path_or_fileobj=write_model_card(tmp_path, **KWARGS),
        path_in_repo="README.md",
        repo_id="test-user/card",
    )
    info = api.model_info("test-user/card")
    assert info.pipeline_tag == "audio-classification" and "speech-emotion-recognition" in info.tags


def hub_metadata_problems(path):
    """What huggingface_hub's own offline checks find wrong in a card's metadata: it must parse into
    ModelCardData, and every base_model / datasets entry must be a valid `owner/name` repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    data = ModelCard.load(path).data
    problems = []
    for field in ("base_model", "datasets"):
        values = getattr(data, field, None)
        for value in [values] if isinstance(values, str) else values or []:
            try:
                validate_repo_id(value)
                if "/" not in value:
                    problems.append(f"{field}: {value!r} has no owner/")
            except HFValidationError as err:
                problems.append(f"{field}: {value!r} ({err})")
    return problems


def test_metadata_keeps_only_repo_ids(tmp_path):
    """Display names, aliases and local paths stay in the text but never reach the Hub-linked metadata."""
    path = write_model_card(tmp_path, **{**KWARGS, "base_model_text": "sentence-transformers/all-MiniLM-L6-v2",
                                         "base_model_audio": "randomly initialised small wav2vec2",
                                         "dataset_name": str(tmp_path)})
    card = ModelCard.load(path)
    assert card.data.base_model == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert card.data.datasets is None and "datasets:" not in path.read_text().split("---")[1]
    assert "randomly initialised small wav2vec2" in card.text
    assert hub_metadata_problems(path) == []
    with_dataset = write_model_card(tmp_path / "b", **{**KWARGS, "dataset_name": "someone/ravdess"})
    assert ModelCard.load(with_dataset).data.datasets == ["someone/ravdess"]


def test_every_card_the_experiment_writes_passes_the_hub_checks(tmp_path):
    """experiment.save_model's card for the demo defaults (minilm alias, no speech checkpoint, demo corpus)."""
    from types import SimpleNamespace

    from modeling_mer.training import experiment

    class Saver:
        def save_pretrained(self, folder):
            folder.mkdir(parents=True, exist_ok=True)

    final = (SimpleNamespace(model=Saver()), Saver())
    model_args = SimpleNamespace(text_model="minilm", audio_model=None)
    experiment.save_model(final, model_args, SimpleNamespace(corpus="demo"), "speaker split", TABLE,
                          ["neutral", "happy"], tmp_path / "model")
    path = tmp_path / "model" / "README.md"
    assert hub_metadata_problems(path) == []
    assert ModelCard.load(path).data.base_model == ["sentence-transformers/all-MiniLM-L6-v2"]
