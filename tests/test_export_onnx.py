"""mer-export: ONNX graph parity with PyTorch (fp32 and int8), and the standalone predictor in a torch-free process.

Exports are slow on a busy 2-core machine (tens of seconds each), so the models here are one layer deep
wherever depth does not matter, and every exported graph is built once per module.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime
import pytest
import torch
from tiny_folders import save_tiny_model, tiny_model, write_wav
from tiny_models import (
    PROJECT_NOT_IMPORTABLE,
    random_batch,
    tiny_audio_config,
    tiny_processor,
    tiny_text_config,
)

from modeling_mer.export_onnx import _encode_mfcc_as_one_op, export_folder, export_model, main, quantize_int8

SETTINGS = {
    "text+audio, prosody": dict(),
    "text+audio, no prosody": dict(use_prosody_branch=False),
    "text only": dict(modalities=("text",)),
    "audio only": dict(modalities=("audio",), mfcc_lstm_layers=2),
    "text+audio, statistics, late fusion": dict(use_prosody_statistics=True, late_fusion=True),
}
SHALLOW = dict(num_crossmodal_layers=1, text_config=tiny_text_config(num_hidden_layers=1),
               audio_config=tiny_audio_config(num_hidden_layers=1))
# Mixed lengths and a batch size other than the export's example (2): no axis may have been traced as a constant.
LENGTHS = (700, 5000, 2222)
TEXTS = ("a", "i am so happy today, it is wonderful", "no way")


def shallow_model(**overrides):
    return tiny_model(**{**SHALLOW, **overrides})


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A saved tiny model, its pipeline and its export folder (fp32 + int8): the main setting, exported once."""
    from transformers import pipeline

    root = tmp_path_factory.mktemp("deployed")
    save_tiny_model(root / "model", **SHALLOW)
    pipe = pipeline("multimodal-emotion-recognition", model=str(root / "model"), trust_remote_code=True)
    return pipe, export_folder((pipe.model, pipe.processor), root / "onnx", quantize="int8")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, deployed):
    root = tmp_path_factory.mktemp("onnx")
    pipe, folder = deployed
    graphs = {"text+audio, prosody": (pipe.model, folder / "model.onnx")}

    def get(name):
        if name not in graphs:
            model = shallow_model(**SETTINGS[name])
            graphs[name] = model, export_model(model, root / f"{len(graphs)}.onnx")
        return graphs[name]

    return get


def feeds_and_reference(model, seed=1):
    batch = random_batch(tiny_processor(), LENGTHS, TEXTS, seed=seed)
    names = ((("input_ids", "attention_mask") if model.config.uses_text else ())
             + (("input_values", "audio_attention_mask") if model.config.uses_audio else ()))
    inputs = {name: batch[name] for name in names}
    with torch.no_grad():
        reference = model(**inputs)
    feeds = {name: value.numpy().astype(np.float32 if name == "input_values" else np.int64)
             for name, value in inputs.items()}
    return feeds, reference


def test_bilstm_op_reads_each_sequence_within_its_length():
    """The custom op (what the graph holds) equals the module's packed BiLSTM, padding included (zeros)."""
    prosody = shallow_model(mfcc_lstm_layers=2).mer.speech_encoder.prosody
    mfcc = torch.randn(3, 20, 8)
    frame_mask = torch.arange(20)[None] < torch.tensor([20, 13, 1])[:, None]
    with torch.no_grad():
        expected = prosody.encode_mfcc(mfcc, frame_mask)
        got = _encode_mfcc_as_one_op(prosody)(mfcc, frame_mask)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[2, 1:].abs().max() == 0  # nothing leaks past a sequence's end


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_fp32_graph_matches_pytorch_on_padded_batches(exported, setting):
    model, path = exported(setting)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [
        name for name in ("input_ids", "attention_mask", "input_values", "audio_attention_mask")
        if (name.startswith(("input_ids", "attention")) and model.config.uses_text)
        or (name.startswith(("input_values", "audio")) and model.config.uses_audio)]
    feeds, reference = feeds_and_reference(model)
    logits, embeddings = session.run(["logits", "embeddings"], feeds)
    assert np.abs(logits - reference.logits.numpy()).max() <= 1e-4
    assert np.abs(embeddings - reference.embeddings.numpy()).max() <= 1e-4
    assert np.abs(reference.logits.numpy()).max() > 1e-2  # the comparison is not between zeros


def test_int8_graph_keeps_class_probabilities(deployed, tmp_path):
    pipe, folder = deployed
    model, path = pipe.model, folder / "model.onnx"
    quantized = quantize_int8(path, tmp_path / "int8.onnx")
    assert quantized.stat().st_size < path.stat().st_size
    feeds, reference = feeds_and_reference(model, seed=2)
    session = onnxruntime.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    logits, _ = session.run(["logits", "embeddings"], feeds)
    probabilities = torch.from_numpy(logits).softmax(-1)
    assert (probabilities - reference.logits.softmax(-1)).abs().max() <= 0.05
    # The spectral front end stays float32 (int8 activations flatten power spectra: a trained model lost half its UA).
    import onnx

    graph = onnx.load(str(quantized)).graph
    spectral = {init.name: init.data_type for init in graph.initializer if ".spectral." in init.name}
    assert spectral and set(spectral.values()) == {onnx.TensorProto.FLOAT}, spectral
    assert any(node.op_type == "MatMulInteger" for node in graph.node)  # the rest is quantized


# Runs mer_onnx.py from the export folder where neither the project nor torch nor transformers can be imported.
FRESH_PREDICTOR = PROJECT_NOT_IMPORTABLE.replace('("modeling_mer", "configuration_mer")',
                                                 '("modeling_mer", "configuration_mer", "torch", "transformers")') + \
    textwrap.dedent("""
    import json
    folder, clips, texts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    sys.path.insert(0, folder)
    from mer_onnx import MERONNXPredictor

    results = {}
    for model_file in ("model.onnx", "model_int8.onnx"):
        predict = MERONNXPredictor(folder, model_file)
        results[model_file] = {
            "batched": predict(clips, text=texts, batch_size=3, max_audio_seconds=0.1),
            "single": predict(clips[0], text=texts[0], max_audio_seconds=0.1),
        }
    print(json.dumps(results))
""")


def test_standalone_predictor_matches_the_pipeline_without_torch(deployed, tmp_path):
    pipe, folder = deployed
    assert {"model.onnx", "model_int8.onnx", "mer_onnx.py", "mer_onnx.json", "tokenizer.json"} <= {
        path.name for path in folder.iterdir()}
    # 0.1 s windows: the 5000-sample clip is cut into 4 windows (mixed with 1-window clips in one batch).
    clips = [str(write_wav(tmp_path / f"clip{index}.wav", length, seed=index)) for index, length in enumerate(LENGTHS)]
    expected = pipe(clips, text=list(TEXTS), batch_size=3, max_audio_seconds=0.1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", FRESH_PREDICTOR, str(folder), json.dumps(clips), json.dumps(TEXTS)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    fp32 = results["model.onnx"]
    # Padding in a batch changes nothing beyond float rounding.
    assert [e["label"] for e in fp32["single"]] == [e["label"] for e in fp32["batched"][0]]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(fp32["single"], fp32["batched"][0], strict=True)) <= 1e-6
    for got, want in zip(fp32["batched"], expected, strict=True):
        assert [entry["label"] for entry in got] == [entry["label"] for entry in want]  # same sorted order
        assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want, strict=True)) <= 1e-4
    for got, want in zip(results["model_int8.onnx"]["batched"], expected, strict=True):
        scores = {entry["label"]: entry["score"] for entry in want}
        assert max(abs(entry["score"] - scores[entry["label"]]) for entry in got) <= 0.05


def test_mer_export_names_a_missing_model_folder(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "does not exist" in error and str(tmp_path / "nope") in error
