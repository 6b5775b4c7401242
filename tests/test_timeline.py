"""timeline_mer: segments scored by the pipeline itself (same scores, each once), text per segment, ASR word
timestamps, streaming reads, accuracy on a conversation vs isolated utterances, bad input before any work."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from tiny_folders import save_tiny_asr, save_tiny_model, tiny_model, write_wav
from tiny_models import PROJECT_NOT_IMPORTABLE, tiny_processor
from transformers import pipeline

from modeling_mer.configuration_mer import TASK
from modeling_mer.data import load_demo
from modeling_mer.data.conversation import make_conversation
from modeling_mer.pipeline_mer import MERPipeline
from modeling_mer.segmentation_mer import AudioStream

SR = 16_000


@pytest.fixture(scope="module")
def conversation():
    return make_conversation(load_demo(), range(7, 1000, 50), seed=2)  # 20 utterances, ~40 s


@pytest.fixture(scope="module")
def pipe():
    # pipeline_class pins this checkout's MERPipeline: a trust_remote_code load elsewhere in the session
    # re-registers the task with a saved folder's copy, whose modules the patches below would miss.
    return pipeline(TASK, model=tiny_model(), processor=tiny_processor(), device=-1, pipeline_class=MERPipeline)


@pytest.fixture(scope="module")
def energy_timeline(pipe, conversation):
    return pipe(conversation.waveform, timeline=True, words=conversation.words, vad="energy", batch_size=4)


def scores_of(result):
    return {entry["label"]: entry["score"] for entry in result}


def test_given_segments_score_like_the_pipeline_on_each_piece(pipe, conversation):
    segments = [(u["start"], u["end"]) for u in conversation.utterances[:6]]
    timeline = pipe(conversation.waveform, timeline=True, segments=segments, words=conversation.words, batch_size=4)
    assert [(e["start"], e["end"]) for e in timeline] == [(round(s * SR) / SR, round(e * SR) / SR) for s, e in segments]
    for entry, utterance in zip(timeline, conversation.utterances, strict=False):
        piece = conversation.waveform[round(entry["start"] * SR): round(entry["end"] * SR)]
        alone = pipe(piece, text=utterance["text"])
        assert entry["text"] == utterance["text"]
        assert entry["label"] == alone[0]["label"] and entry["score"] == pytest.approx(alone[0]["score"], abs=1e-5)
        for label, score in scores_of(alone).items():
            assert scores_of(entry["scores"])[label] == pytest.approx(score, abs=1e-5)
        assert all(entry["start"] <= (w["start"] + w["end"]) / 2 <= entry["end"] for w in entry["words"])


def test_each_segment_is_scored_once_in_batches(pipe, conversation):
    calls = []
    hook = pipe.model.register_forward_hook(lambda module, args, kwargs, output: calls.append(
        kwargs["input_values"].shape[0]), with_kwargs=True)
    try:
        timeline = pipe(conversation.waveform, timeline=True, words=conversation.words, vad="energy", batch_size=8)
    finally:
        hook.remove()
    assert sum(calls) == len(timeline) and max(calls) == 8 and len(calls) == -(-len(timeline) // 8)


def test_segment_text_and_accuracy_match_isolated_utterances(pipe, conversation, energy_timeline):
    utterances = conversation.utterances
    assert [entry["text"] for entry in energy_timeline] == [u["text"] for u in utterances]
    label_names = pipe.model.config.id2label
    isolated = [pipe(u["waveform"], text=u["text"])[0]["label"] for u in utterances]
    truth = [label_names[u["label"]] for u in utterances]
    found = [entry["label"] for entry in energy_timeline]
    accuracy = np.mean([a == b for a, b in zip(found, truth, strict=True)])
    isolated_accuracy = np.mean([a == b for a, b in zip(isolated, truth, strict=True)])
    assert accuracy >= isolated_accuracy - 0.03
    # Stronger than accuracy: the same answers as on the clean, exactly cut utterances.
    assert np.mean([a == b for a, b in zip(found, isolated, strict=True)]) >= 0.9


def test_batch_size_changes_nothing(pipe, conversation, energy_timeline):
    one_by_one = pipe(conversation.waveform, timeline=True, words=conversation.words, vad="energy", batch_size=1)
    assert [e["label"] for e in one_by_one] == [e["label"] for e in energy_timeline]
    np.testing.assert_allclose([e["score"] for e in one_by_one], [e["score"] for e in energy_timeline], atol=1e-5)


def test_a_file_is_read_in_blocks_and_segments(pipe, conversation, tmp_path, monkeypatch):
    path = write_wav(tmp_path / "talk.wav", conversation.waveform)
    reads = []
    original = AudioStream._read_source
    monkeypatch.setattr(AudioStream, "_read_source",
                        lambda self, first, last: reads.append(last - first) or original(self, first, last))
    from_file = pipe(str(path), timeline=True, words=conversation.words, vad="energy", block_seconds=5.0)
    from_array = pipe(conversation.waveform, timeline=True, words=conversation.words, vad="energy",
                      block_seconds=5.0)
    assert [e["label"] for e in from_file] == [e["label"] for e in from_array]
    longest = max(round((e["end"] - e["start"]) * SR) for e in from_file)
    # Never the whole 40 s file at once: one 5 s block, or one segment, at a time.
    assert max(reads) <= max(5 * SR, longest) < len(conversation.waveform) / 4


def test_asr_words_give_each_segment_its_text(pipe, conversation, tmp_path):
    asr = save_tiny_asr(tmp_path / "asr")  # always hears one word, "a", over the whole piece
    segments = [(u["start"], u["end"]) for u in conversation.utterances[:3]]
    timeline = pipe(conversation.waveform, timeline=True, segments=segments, asr_model=str(asr), batch_size=2)
    assert [entry["text"] for entry in timeline] == ["a"] * 3
    for entry in timeline:
        (word,) = entry["words"]
        assert entry["start"] - 1e-6 <= word["start"] <= word["end"] <= entry["end"] + 0.03


def test_one_transcript_for_many_segments_is_refused(pipe, conversation):
    with pytest.raises(ValueError, match=r"one transcript .* cannot be aligned.*words=.*asr_model="):
        pipe(conversation.waveform, timeline=True, text="everything said in the recording", vad="energy")
    # One segment: the transcript is that segment's.
    piece = conversation.utterances[0]
    one = pipe(conversation.waveform, timeline=True, text=piece["text"], segments=[(piece["start"], piece["end"])])
    assert len(one) == 1 and one[0]["text"] == piece["text"]


def test_bad_input_is_refused_before_reading_audio(pipe, tmp_path):
    missing = str(tmp_path / "never-read.wav")  # each check below must fire before the file is opened
    with pytest.raises(ValueError, match="needs word timings.*asr_model="):
        pipe(missing, timeline=True)
    with pytest.raises(ValueError, match="either text= or words="):
        pipe(missing, timeline=True, text="hi", words=[])
    with pytest.raises(ValueError, match="word 0"):
        pipe(missing, timeline=True, words=[{"word": "hi"}])
    with pytest.raises(ValueError, match="vad must be one of"):
        pipe(missing, timeline=True, words=[], vad="webrtc")
    with pytest.raises(ValueError, match="batch_size"):
        pipe(missing, timeline=True, words=[], batch_size=0)
    with pytest.raises(ValueError, match="only apply to timelines"):
        pipe(missing, text="hi", segments=[(0, 1)])
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        pipe(missing, timeline=True, words=[])


def test_silence_gives_an_empty_timeline(pipe):
    quiet = (np.random.default_rng(0).standard_normal(3 * SR) * 1e-3).astype(np.float32)
    assert pipe(quiet, timeline=True, words=[], vad="energy") == []


def test_segments_without_words_are_left_out(pipe, conversation):
    segments = [(u["start"], u["end"]) for u in conversation.utterances[:4]]
    words = [w for u in conversation.utterances[:4] if u is not conversation.utterances[1] for w in u["words"]]
    timeline = pipe(conversation.waveform, timeline=True, segments=segments, words=words)
    assert [e["text"] for e in timeline] == [conversation.utterances[i]["text"] for i in (0, 2, 3)]


def test_audio_only_models_score_every_segment(conversation):
    audio_only = pipeline(TASK, model=tiny_model(modalities=("audio",)), processor=tiny_processor(), device=-1,
                          pipeline_class=MERPipeline)
    segments = [(u["start"], u["end"]) for u in conversation.utterances[:3]]
    timeline = audio_only(conversation.waveform, timeline=True, segments=segments)
    assert len(timeline) == 3 and all(entry["text"] == "" for entry in timeline)
    with torch.no_grad():
        piece = conversation.waveform[round(segments[0][0] * SR): round(segments[0][1] * SR)]
        assert timeline[0]["label"] == audio_only(piece)[0]["label"]


FRESH_PROCESS_SCRIPT = PROJECT_NOT_IMPORTABLE + textwrap.dedent("""
    class RefuseSilero(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "silero_vad":
                raise ImportError("silero_vad is not installed here")

    sys.meta_path.insert(0, RefuseSilero())
    import json
    from transformers import pipeline

    folder, wav, words = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
    pipe = pipeline(model=folder, trust_remote_code=True, device=-1)
    timeline = pipe(wav, timeline=True, words=words)  # vad="auto": energy, as silero is missing
    print(json.dumps({"module": type(pipe).__module__, "timeline": timeline}))
""")


def test_a_saved_checkpoint_makes_timelines_without_mer_or_silero(conversation, tmp_path):
    import json

    folder = tmp_path / "model"
    save_tiny_model(folder)
    assert {"timeline_mer.py", "segmentation_mer.py"} <= {path.name for path in folder.iterdir()}
    utterances = conversation.utterances[:4]
    waveform = conversation.waveform[: round((utterances[-1]["end"] + 0.4) * SR)]
    wav = write_wav(tmp_path / "talk.wav", waveform)
    (tmp_path / "words.json").write_text(json.dumps([w for u in utterances for w in u["words"]]))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(folder), str(wav),
                           str(tmp_path / "words.json")], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules")
    assert [entry["text"] for entry in result["timeline"]] == [u["text"] for u in utterances]
