"""MERPipeline: input forms, batching, top_k, long audio, ASR fallback, focus output, bad input, fresh-process loads."""

import copy
import functools
import io
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import torch
from tiny_folders import ASR_WORD, save_tiny_asr, save_tiny_model, tiny_model, waveform, write_wav
from tiny_models import PROJECT_NOT_IMPORTABLE, tiny_processor
from transformers import pipeline

from modeling_mer.audio_io_mer import load_audio
from modeling_mer.configuration_mer import TASK
from modeling_mer.pipeline_mer import MERPipeline, split_windows

TEXT = "i am so happy today, it is wonderful"
RECEPTIVE_FIELD = 60  # tiny_audio_config: kernels (10, 3, 3), strides (5, 4, 4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mer-pipeline")
    return folder, save_tiny_model(folder)


@pytest.fixture(scope="module")
def pipe(checkpoint):
    _, model = checkpoint
    return pipeline(TASK, model=model, processor=tiny_processor(), device=-1)


@functools.cache
def processor():
    return tiny_processor()


def model_scores(model, audio, text, **processor_kwargs):
    batch = processor()(text=[text], audio=[audio], **processor_kwargs)
    with torch.no_grad():
        return model(**batch).logits[0].softmax(-1)


def as_tensor(result, model):
    """Scores in class-id order."""
    by_label = {entry["label"]: entry["score"] for entry in result}
    return torch.tensor([by_label[model.config.id2label[index]] for index in range(model.config.num_labels)])


def test_pipeline_resolves_to_mer_pipeline(pipe):
    assert isinstance(pipe, MERPipeline) and type(pipe.processor).__name__ == "MERProcessor"


def test_saved_config_registers_the_pipeline(checkpoint):
    folder, _ = checkpoint
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"] == {TASK: {"impl": "pipeline_mer.MERPipeline",
                                                 "pt": ["AutoModelForSequenceClassification"], "type": "multimodal"}}
    assert {"pipeline_mer.py", "audio_io_mer.py", "processing_mer.py"} <= {path.name for path in folder.iterdir()}


def test_scores_are_sorted_probabilities_of_the_model(pipe, checkpoint):
    _, model = checkpoint
    audio = waveform(8000)
    result = pipe(audio, text=TEXT)
    scores = [entry["score"] for entry in result]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
    assert {entry["label"] for entry in result} == set(model.config.id2label.values())
    torch.testing.assert_close(as_tensor(result, model), model_scores(model, audio, TEXT), atol=1e-6, rtol=0)


def test_input_forms_agree(pipe, checkpoint, tmp_path):
    _, model = checkpoint
    audio = waveform(8000)
    path = write_wav(tmp_path / "clip.wav", audio)
    expected = model_scores(model, audio, TEXT)
    results = {
        "array": pipe(audio, text=TEXT),
        "tensor": pipe(torch.from_numpy(audio), text=TEXT),
        "list of samples": pipe(audio.tolist(), text=TEXT),
        "input dict": pipe({"audio": audio, "text": TEXT}),
        "array dict": pipe({"array": audio, "sampling_rate": 16_000}, text=TEXT),
        "raw dict": pipe({"raw": audio, "sampling_rate": 16_000}, text=TEXT),
        "path": pipe(str(path), text=TEXT),
        "pathlib": pipe(path, text=TEXT),
        "bytes": pipe(path.read_bytes(), text=TEXT),
        "inputs=": pipe(inputs=audio, text=TEXT),
    }
    for form, result in results.items():
        torch.testing.assert_close(as_tensor(result, model), expected, atol=1e-6, rtol=0, msg=form)


def test_other_rates_are_resampled_and_stereo_mixed(pipe, checkpoint):
    _, model = checkpoint
    audio_8k = waveform(4000, seed=3)
    expected = model_scores(model, load_audio(audio_8k, sampling_rate=8000), TEXT)
    torch.testing.assert_close(as_tensor(pipe({"array": audio_8k, "sampling_rate": 8000}, text=TEXT), model),
                               expected, atol=1e-6, rtol=0)
    left, right = waveform(8000, seed=1), waveform(8000, seed=2)
    stereo = np.stack([left, right])  # (channels, samples)
    torch.testing.assert_close(as_tensor(pipe(stereo, text=TEXT), model),
                               model_scores(model, (left + right) / 2, TEXT), atol=1e-6, rtol=0)


def test_top_k(pipe):
    audio = waveform(8000)
    full = pipe(audio, text=TEXT)
    assert pipe(audio, text=TEXT, top_k=2) == full[:2]
    assert pipe(audio, text=TEXT, top_k=99) == full
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k"):
            pipe(audio, text=TEXT, top_k=bad)


def test_batch_equals_one_by_one(pipe):
    lengths = (8000, 1500, 12000, 3000, 700)
    audios = [waveform(n, seed=n) for n in lengths]
    texts = [TEXT, "no", "what on earth were you thinking about", "fine", "oh"]
    singles = [pipe(audio, text=text) for audio, text in zip(audios, texts, strict=True)]
    for batch_size in (1, 3):
        batched = pipe(audios, text=texts, batch_size=batch_size)
        dicts = pipe([{"audio": a, "text": t} for a, t in zip(audios, texts, strict=True)], batch_size=batch_size)
        for single, one, two in zip(singles, batched, dicts, strict=True):
            for result in (one, two):
                assert [entry["label"] for entry in result] == [entry["label"] for entry in single]
                np.testing.assert_allclose([e["score"] for e in result], [e["score"] for e in single], atol=1e-5)


def test_iterator_input_streams_results(pipe):
    items = [{"audio": waveform(n, seed=n), "text": TEXT} for n in (3000, 5000, 800)]
    stream = pipe(iter(items), batch_size=2)
    assert not isinstance(stream, list)
    assert [result[0]["label"] for result in stream] == [pipe(item)[0]["label"] for item in items]


# ------------------------------------------------------------------ long audio


def test_split_windows_are_equal_and_cover_the_clip():
    assert split_windows(10_001, 4000) == [(0, 3334), (3334, 6667), (6667, 10_001)]
    assert split_windows(4000, 4000) == [(0, 4000)]
    assert split_windows(4001, 4000) == [(0, 2000), (2000, 4001)]  # no 1-sample tail window


def test_long_audio_is_windowed_and_scores_averaged_by_window_length(pipe, checkpoint):
    _, model = checkpoint
    audio = waveform(10_001, seed=5)
    result = pipe(audio, text=TEXT, max_audio_seconds=0.25)  # 4000 samples -> 3 windows
    windows = split_windows(len(audio), 4000)
    weights = torch.tensor([float(stop - start) for start, stop in windows])
    per_window = torch.stack([model_scores(model, audio[start:stop], TEXT) for start, stop in windows])
    expected = (per_window * weights[:, None]).sum(0) / weights.sum()
    torch.testing.assert_close(as_tensor(result, model), expected, atol=1e-6, rtol=0)
    # Not the same as one pass over the whole clip: the policy is visible.
    assert not torch.allclose(as_tensor(result, model), model_scores(model, audio, TEXT), atol=1e-4)
    # Batched windows (of several items) give the same answer.
    batched = pipe([audio, waveform(3000)], text=[TEXT, "no"], max_audio_seconds=0.25, batch_size=4)[0]
    np.testing.assert_allclose([e["score"] for e in batched], [e["score"] for e in result], atol=1e-5)


def test_default_window_is_30_seconds(pipe, checkpoint):
    _, model = checkpoint
    audio = waveform(16_000 * 31, seed=6)  # 31 s -> two windows of 15.5 s
    expected = torch.stack([model_scores(model, half, TEXT) for half in np.split(audio, 2)]).mean(0)
    torch.testing.assert_close(as_tensor(pipe(audio, text=TEXT), model), expected, atol=1e-6, rtol=0)


def test_max_audio_seconds_must_cover_the_receptive_field(pipe):
    with pytest.raises(ValueError, match="max_audio_seconds"):
        pipe(waveform(8000), text=TEXT, max_audio_seconds=0.001)


# ------------------------------------------------------------------ bad input (each names the input)


def test_missing_path(pipe, tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match="input: audio file not found.*nope.wav"):
        pipe(str(missing), text=TEXT)
    with pytest.raises(FileNotFoundError, match="item 1: audio file not found"):
        pipe([waveform(4000), str(missing)], text=[TEXT, TEXT], batch_size=2)


def test_empty_file(pipe, tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="input: the audio file .* is empty"):
        pipe(str(tmp_path / "empty.wav"), text=TEXT)


def test_unreadable_file_and_bytes(pipe, tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(ValueError, match="input: could not decode the audio"):
        pipe(str(tmp_path / "junk.wav"), text=TEXT)
    with pytest.raises(ValueError, match="item 0: could not decode the audio"):
        pipe([b"RIFF0000WAVEjunk", waveform(4000)], text=[TEXT, TEXT])


def test_audio_shorter_than_the_receptive_field_is_an_error(pipe):
    with pytest.raises(ValueError, match=f"input: the audio is {RECEPTIVE_FIELD - 1} samples.*receptive field "
                                         f"of {RECEPTIVE_FIELD} samples"):
        pipe(waveform(RECEPTIVE_FIELD - 1), text=TEXT)
    with pytest.raises(ValueError, match="item 2: the audio is 10 samples"):
        pipe([waveform(4000), waveform(4000), waveform(10)], text=[TEXT] * 3, batch_size=3)
    assert len(pipe(waveform(RECEPTIVE_FIELD), text=TEXT)) == 4  # exactly the receptive field is enough


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(pipe, bad_value):
    audio = waveform(4000)
    audio[100] = bad_value
    with pytest.raises(ValueError, match="item 1: .*NaN/inf"):
        pipe([waveform(4000), audio], text=[TEXT, TEXT])


def test_sampling_rate_zero(pipe):
    with pytest.raises(ValueError, match="input: sampling_rate must be a positive integer"):
        pipe({"array": waveform(4000), "sampling_rate": 0}, text=TEXT)
    with pytest.raises(ValueError, match="needs 'sampling_rate'"):
        pipe({"array": waveform(4000)}, text=TEXT)


def test_thousands_of_tokens_are_truncated_with_a_warning(pipe, checkpoint, caplog):
    _, model = checkpoint
    audio, long_text = waveform(4000), "happy " * 3000
    with caplog.at_level(logging.WARNING):
        result = pipe([audio, audio], text=["calm", long_text])
    warnings = [record.getMessage() for record in caplog.records if "tokens" in record.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("item 1: the transcript has 3002 tokens"), warnings
    assert "128" in warnings[0]  # the tiny text encoder's position table
    expected = model_scores(model, audio, long_text, max_text_length=128)
    torch.testing.assert_close(as_tensor(result[1], model), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("samples,words", [(np.zeros(8000, np.float32), "silent"),
                                           (40.0 * np.sin(np.arange(8000) / 5.0).astype(np.float32), "far above full scale")])
def test_silent_or_clipped_audio_is_scored_with_a_warning_naming_the_item(pipe, caplog, samples, words):
    with caplog.at_level("WARNING"):
        result = pipe([waveform(8000), samples], text=[TEXT, TEXT], batch_size=2)
    assert len(result) == 2
    assert [record.getMessage() for record in caplog.records if words in record.getMessage()][0].startswith("item 1:")


def test_transcript_of_unknown_tokens_only_is_scored_with_a_warning(pipe, caplog):
    with caplog.at_level("WARNING"):
        pipe(waveform(8000), text="\U0001F621\U0001F621")
    assert any(record.getMessage().startswith("input: every token of the transcript") for record in caplog.records)


def test_corrupted_weights_give_an_error_naming_the_model_not_nan_scores(checkpoint, tmp_path):
    _, model = checkpoint
    damaged = copy.deepcopy(model)
    with torch.no_grad():
        damaged.classifier[-1].weight.fill_(float("nan"))
    damaged.config._name_or_path = str(tmp_path / "damaged-model")
    pipe = pipeline(TASK, model=damaged, processor=tiny_processor(), device=-1)
    with pytest.raises(ValueError, match=r"damaged-model gave non-finite scores.*Re-download or re-save"):
        pipe(waveform(8000), text=TEXT)


def test_input_dict_with_unknown_keys(pipe):
    with pytest.raises(ValueError, match=r"input: unknown key\(s\) \['speaker'\].*'audio' and/or 'text'"):
        pipe({"audio": waveform(4000), "text": TEXT, "speaker": "Ses01F"})
    with pytest.raises(ValueError, match=r"item 1: unknown key\(s\) \['samplerate', 'wave'\]"):
        pipe([{"audio": waveform(4000), "text": TEXT}, {"wave": waveform(4000), "samplerate": 16000}])


def test_bad_transcripts(pipe):
    audio = waveform(4000)
    with pytest.raises(ValueError, match="given twice"):
        pipe({"audio": audio, "text": TEXT}, text=TEXT)
    with pytest.raises(ValueError, match="2 audio items but 1 transcripts"):
        pipe([audio, audio], text=[TEXT])
    with pytest.raises(ValueError, match="2 audio items but a single string"):
        pipe([audio, audio], text=TEXT)
    with pytest.raises(ValueError, match="item 0: text must be a non-empty string"):
        pipe([audio], text=["   "])
    with pytest.raises(ValueError, match="input: text must be a non-empty string"):
        pipe(audio, text=42)


# ------------------------------------------------------------------ missing transcript, unimodal models


def test_missing_audio_for_a_model_that_hears(pipe):
    with pytest.raises(ValueError, match="input: no audio.*needs audio"):
        pipe(text=TEXT)


def test_missing_transcript_without_asr_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match="input: no transcript.*asr_model"):
        pipe(waveform(4000))


def test_missing_transcript_is_transcribed_and_reported(checkpoint, tmp_path):
    _, model = checkpoint
    asr_folder = save_tiny_asr(tmp_path / "asr")
    pipe = pipeline(TASK, model=model, processor=tiny_processor(), asr_model=str(asr_folder), device=-1)
    audio = waveform(8000)
    result = pipe(audio)
    assert result["transcript"] == ASR_WORD
    assert result["scores"] == pipe(audio, text=ASR_WORD)  # given text: no recognizer, a plain list
    mixed = pipe([audio, audio], text=[None, ASR_WORD], batch_size=2)
    assert mixed[0]["scores"] == mixed[1] and mixed[0]["transcript"] == ASR_WORD


def test_asr_model_can_be_given_per_call(checkpoint, tmp_path):
    _, model = checkpoint
    asr = pipeline("automatic-speech-recognition", model=str(save_tiny_asr(tmp_path / "asr")), device=-1)
    pipe = pipeline(TASK, model=model, processor=tiny_processor(), device=-1)
    assert pipe(waveform(8000), asr_model=asr)["transcript"] == ASR_WORD


def test_audio_only_model_needs_no_transcript():
    model = tiny_model(modalities=("audio",))
    pipe = pipeline(TASK, model=model, processor=tiny_processor(), device=-1)
    audio = waveform(8000)
    result = pipe(audio)
    assert isinstance(result, list) and result == pipe(audio, text="ignored")
    batch = tiny_processor()(audio=[audio])
    with torch.no_grad():
        expected = model(**batch).logits[0].softmax(-1)
    torch.testing.assert_close(as_tensor(result, model), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="return_focus=True needs a text \\+ audio model"):
        pipe(audio, return_focus=True)


def test_text_only_model_takes_text_alone():
    model = tiny_model(modalities=("text",))
    pipe = pipeline(TASK, model=model, processor=tiny_processor(), device=-1)
    single = pipe(text=TEXT)
    batch = tiny_processor()(text=[TEXT])
    with torch.no_grad():
        expected = model(**batch).logits[0].softmax(-1)
    torch.testing.assert_close(as_tensor(single, model), expected, atol=1e-6, rtol=0)
    both = pipe(text=[TEXT, "no"], batch_size=2)
    assert [e["label"] for e in both[0]] == [e["label"] for e in single]
    np.testing.assert_allclose([e["score"] for e in both[0]], [e["score"] for e in single], atol=1e-5)
    with pytest.raises(ValueError, match="input: text must be a non-empty string"):
        pipe(text="")
    with pytest.raises(ValueError, match="input: no transcript. This text-only model needs text="):
        pipe()


# ------------------------------------------------------------------ focus output


def test_return_focus_gives_per_token_and_per_frame_centres(pipe, checkpoint):
    _, model = checkpoint
    audio = waveform(8000)
    result = pipe(audio, text=TEXT, return_focus=True)
    assert result["transcript"] == TEXT
    # Attention maps take the explicit (non-SDPA) path: the same scores up to float rounding.
    np.testing.assert_allclose([e["score"] for e in result["scores"]], [e["score"] for e in pipe(audio, text=TEXT)],
                               atol=1e-6)
    (focus,) = result["focus"]
    tokens = tiny_processor().tokenizer.convert_ids_to_tokens(tiny_processor().tokenizer(TEXT)["input_ids"])
    assert focus["tokens"] == tokens
    assert len(focus["token_focus_seconds"]) == len(tokens)
    n_frames = int(model.mer.speech_encoder.model._get_feat_extract_output_lengths(torch.tensor(len(audio))))
    assert len(focus["frame_focus_token"]) == n_frames
    assert all(0 <= s <= len(audio) / 16_000 for s in focus["token_focus_seconds"])
    assert all(0 <= t <= len(tokens) for t in focus["frame_focus_token"])
    assert focus["frame_seconds"] == 80 / 16_000
    # Padding in a batch is stripped: the same centres as alone.
    batched = pipe([waveform(12_000, seed=9), audio], text=["no", TEXT], return_focus=True, batch_size=2)[1]
    np.testing.assert_allclose(batched["focus"][0]["token_focus_seconds"], focus["token_focus_seconds"], atol=1e-4)
    np.testing.assert_allclose(batched["focus"][0]["frame_focus_token"], focus["frame_focus_token"], atol=1e-4)


def test_return_focus_with_focus_predicted_from_keys():
    model = tiny_model(focus_source="key")
    pipe = pipeline(TASK, model=model, processor=processor(), device=-1)
    audio = waveform(8000)
    (focus,) = pipe(audio, text=TEXT, return_focus=True)["focus"]
    n_frames = int(model.mer.speech_encoder.model._get_feat_extract_output_lengths(torch.tensor(len(audio))))
    assert len(focus["token_focus_seconds"]) == len(focus["tokens"]) and len(focus["frame_focus_token"]) == n_frames
    assert all(0 <= s <= len(audio) / 16_000 for s in focus["token_focus_seconds"])


def test_return_focus_per_window_carries_its_start(pipe):
    result = pipe(waveform(10_001), text=TEXT, return_focus=True, max_audio_seconds=0.25)
    starts = [window["window_start_seconds"] for window in result["focus"]]
    assert starts == [0.0, 3334 / 16_000, 6667 / 16_000]
    assert min(result["focus"][2]["token_focus_seconds"]) >= 6667 / 16_000


# ------------------------------------------------------------------ fresh process, project not importable


FRESH_PROCESS_SCRIPT = PROJECT_NOT_IMPORTABLE + textwrap.dedent("""
    import json, sys
    import soundfile
    from transformers import pipeline

    folder, wav = sys.argv[1], sys.argv[2]
    by_folder = pipeline(model=folder, trust_remote_code=True, device=-1)
    by_task = pipeline("multimodal-emotion-recognition", model=folder, trust_remote_code=True, device=-1)
    audio, rate = soundfile.read(wav, dtype="float32")
    print(json.dumps({
        "classes": [type(p).__name__ for p in (by_folder, by_task, by_folder.processor)],
        "modules": [type(p).__module__ for p in (by_folder, by_task, by_folder.model, by_folder.processor)],
        "by_folder": by_folder(wav, text="i am so happy today, it is wonderful"),
        "by_task": by_task([{"audio": {"array": audio, "sampling_rate": rate}, "text": "no"}], batch_size=2),
    }))
""")


def test_fresh_process_loads_the_pipeline_both_ways(checkpoint, pipe, tmp_path):
    folder, _ = checkpoint
    wav = write_wav(tmp_path / "clip.wav", 8000)
    script = tmp_path / "load_pipeline.py"
    script.write_text(FRESH_PROCESS_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    completed = subprocess.run([sys.executable, str(script), str(folder), str(wav)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["classes"] == ["MERPipeline", "MERPipeline", "MERProcessor"]
    assert all(module.startswith("transformers_modules") for module in result["modules"]), result["modules"]
    audio = soundfile.read(io.BytesIO(wav.read_bytes()), dtype="float32")[0]
    for got, expected in ((result["by_folder"], pipe(audio, text=TEXT)), (result["by_task"][0], pipe(audio, text="no"))):
        assert [e["label"] for e in got] == [e["label"] for e in expected]
        np.testing.assert_allclose([e["score"] for e in got], [e["score"] for e in expected], atol=1e-6)


RESAVE_SCRIPT = PROJECT_NOT_IMPORTABLE + textwrap.dedent("""
    import json, sys
    from transformers import AutoModelForSequenceClassification, AutoProcessor, pipeline

    source, target = sys.argv[1], sys.argv[2]
    # Only the model: its remote code folder holds modeling files, not the processor or the pipeline.
    AutoModelForSequenceClassification.from_pretrained(source, trust_remote_code=True).save_pretrained(target)
    AutoProcessor.from_pretrained(source, trust_remote_code=True).save_pretrained(target)
    print(json.dumps(pipeline(model=target, trust_remote_code=True, device=-1)([0.1, -0.1] * 2000, text="no")))
""")


def test_resaving_a_remote_code_model_still_ships_the_pipeline(checkpoint, pipe, tmp_path):
    """Fine-tuning a model loaded with trust_remote_code, then saving it, must keep it pipeline-ready."""
    folder, _ = checkpoint
    script = tmp_path / "resave.py"
    script.write_text(RESAVE_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    completed = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "resaved")], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in ("pipeline_mer.py", "audio_io_mer.py", "processing_mer.py"):
        assert (tmp_path / "resaved" / name).read_text() == (folder / name).read_text(), name
    got = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = pipe(np.array([0.1, -0.1] * 2000, dtype=np.float32), text="no")
    np.testing.assert_allclose([e["score"] for e in got], [e["score"] for e in expected], atol=1e-6)
