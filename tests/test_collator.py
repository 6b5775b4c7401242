"""MERDataCollator with the real MERProcessor (tiny tokenizer vocabulary written here)."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import BertTokenizerFast, Wav2Vec2FeatureExtractor

from modeling_mer.data.collator import MERDataCollator, crop_waveform
from modeling_mer.processing_mer import MERProcessor

WORDS = ["i", "am", "so", "happy", "sad", "today", "no"]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return MERProcessor(tokenizer=BertTokenizerFast(vocab_file=str(vocab)),
                        feature_extractor=Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True))


def _wav_bytes(seconds, rate=16000, channels=1):
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.3 * np.sin(2 * np.pi * 200 * t)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate, format="WAV")
    return buffer.getvalue()


def _rows():
    return [
        {"audio": {"bytes": _wav_bytes(0.5), "path": None}, "text": "i am so happy", "label": 1},
        {"audio": {"bytes": _wav_bytes(0.25, rate=44100, channels=2), "path": "x.wav"}, "text": "sad", "label": 2},
        {"audio": {"array": np.full(4000, 0.1), "sampling_rate": 8000}, "text": "no", "label": 0},
    ]


def test_batch_has_model_inputs_masks_and_labels(processor):
    batch = MERDataCollator(processor)(_rows())
    assert set(batch) == {"input_ids", "attention_mask", "input_values", "audio_attention_mask", "labels"}
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 2, 0]
    # Audio at 16 kHz: 0.5 s, 0.25 s (from 44.1 kHz stereo) and 0.5 s (from 8 kHz); padded to the longest.
    assert batch["input_values"].shape == (3, 8000)
    assert batch["audio_attention_mask"].sum(dim=1).tolist() == [8000, 4000, 8000]
    assert batch["audio_attention_mask"][1, 4000:].sum() == 0
    assert batch["input_values"][1, 4000:].abs().sum() == 0
    # Text: [CLS] i am so happy [SEP] = 6 tokens; "sad" and "no" are 3.
    assert batch["attention_mask"].sum(dim=1).tolist() == [6, 3, 3]
    assert batch["input_ids"].shape == (3, 6)


def test_text_only_rows_give_text_inputs_only(processor):
    rows = [{"text": "i am sad", "label": 2}, {"text": "today", "label": 0}]
    batch = MERDataCollator(processor)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    # And a text-only model can ignore the audio of a multimodal corpus.
    batch = MERDataCollator(processor, modalities=("text",))(_rows())
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    audio_only = MERDataCollator(processor, modalities=("audio",))(_rows())
    assert set(audio_only) == {"input_values", "audio_attention_mask", "labels"}


def test_unlabelled_rows_and_mixed_rows(processor):
    rows = [{k: v for k, v in r.items() if k != "label"} for r in _rows()]
    assert "labels" not in MERDataCollator(processor)(rows)
    rows[0]["label"] = 1
    with pytest.raises(ValueError, match="label every item or none"):
        MERDataCollator(processor)(rows)
    with pytest.raises(ValueError, match=r"items \[0\] have no 'audio'"):
        MERDataCollator(processor, modalities=("text", "audio"))([{"text": "no", "label": 0}])


def test_bad_audio_names_the_item(processor):
    rows = _rows()
    rows[1]["audio"] = {"bytes": b"not audio at all", "path": None}
    rows[1]["id"] = "Ses01F_impro01_F000"
    with pytest.raises(ValueError, match=r"item 1 \(Ses01F_impro01_F000\).*could not decode"):
        MERDataCollator(processor)(rows)


def test_cropping_policy(processor):
    ramp = np.arange(100, dtype=np.float32)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(crop_waveform(ramp, 40, training=False, rng=rng), ramp[30:70])
    np.testing.assert_array_equal(crop_waveform(ramp, 200, training=True, rng=rng), ramp)
    starts = {int(crop_waveform(ramp, 40, training=True, rng=rng)[0]) for _ in range(200)}
    assert min(starts) >= 0 and max(starts) <= 60 and len(starts) > 30  # random windows, inside the clip

    long_row = {"audio": {"array": np.arange(48000) / 48000.0, "sampling_rate": 16000}, "text": "no", "label": 0}
    evaluation = MERDataCollator(processor, max_audio_seconds=1.0)([long_row])
    assert evaluation["input_values"].shape == (1, 16000)
    again = MERDataCollator(processor, max_audio_seconds=1.0)([long_row])
    torch.testing.assert_close(evaluation["input_values"], again["input_values"])  # deterministic
    training = MERDataCollator(processor, max_audio_seconds=1.0, training=True, seed=1)
    crops = []
    for epoch in range(3):
        training.set_epoch(epoch)
        crops.append(training([long_row])["input_values"])
    assert crops[0].shape == (1, 16000)
    assert not torch.equal(crops[0], crops[1]) or not torch.equal(crops[1], crops[2])  # a new view each epoch
    # Within an epoch the crop depends only on (seed, epoch, utterance): a resumed run that skips batches
    # without collating them still crops every later utterance the same way.
    torch.testing.assert_close(training([long_row])["input_values"], crops[2], rtol=0, atol=0)
    with pytest.raises(ValueError, match="max_audio_seconds"):
        MERDataCollator(processor, max_audio_seconds=0)
