"""Frozen-encoder feature cache: run each frozen encoder once per utterance, train the fusion on stored states.

Layout: `<cache_dir>/<modality>/<encoder fingerprint>/shard-*.arrow`, rows `{key, states (T, D)}`, unpadded.

- The folder is chosen by the *encoder fingerprint*: the encoder's config, a hash of its weights (buffers
  included), the storage dtype, the transformers version and CACHE_FORMAT. Another encoder, other weights or a
  library upgrade is another folder, so stale states are never read.
- A row is found by its *content key*: a hash of exactly what the encoder reads, i.e. the token ids (text), or
  the cropped, feature-extracted waveform (audio). Hashing the content rather than `Dataset._fingerprint` is
  deliberate: corpora such as IEMOCAP store file paths, so the dataset fingerprint does not change when a WAV
  does; and content keys let every fold, split and ablation row share one store (a row that changes only the
  fusion finds every utterance already there). The tokenizer, the feature extractor's normalisation and the
  crop policy are covered because they change the content.

Decisions:
- Crop policy: cached audio is always cropped like evaluation (centre window of `max_audio_seconds`), in
  training too. A random window per epoch would need the encoder per epoch, which is what the cache removes.
  Clips shorter than `max_audio_seconds` (nearly all of IEMOCAP at 15 s) are unaffected.
- Exactness: states are stored in float32 by default; the cached forward then equals the uncached one up to
  the float noise of batch padding. float16 halves the disk (IEMOCAP, wav2vec2-base: ~4 GB -> ~2 GB) for a
  relative error of ~5e-4 on the states; ask for it with `storage_dtype="float16"`.
- Encoders run in eval mode: no dropout and no SpecAugment time masking, which an uncached training step on a
  frozen encoder would still apply. Frozen encoders are feature extractors here, so the cache drops that noise.
- `use_weighted_layer_sum` is refused: its layer weights are trainable and live inside the encoder wrapper, so
  caching would mean storing every hidden layer (13x the disk: ~55 GB for IEMOCAP at base size) and a forward
  that takes stacked layers. Such models train uncached.
"""

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
import transformers
from datasets.arrow_writer import ArrowWriter

from ..data.collator import MERDataCollator

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the encoder wrappers change what they return for the same weights
KEY_COLUMNS = {"text": "text_feature_key", "audio": "audio_feature_key"}
STATE_ARGUMENTS = {"text": "text_encoder_states", "audio": "audio_encoder_states"}
# Config entries that name or describe a checkpoint but do not change what the encoder computes.
UNUSED_CONFIG_KEYS = ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype")


def _encoder(model, modality):
    mer = model.mer if hasattr(model, "mer") else model
    return mer.text_encoder if modality == "text" else mer.speech_encoder


def frozen_modalities(config) -> tuple[str, ...]:
    """The used modalities whose encoder the config freezes, i.e. the ones a cache may serve."""
    frozen = {"text": config.freeze_text_encoder, "audio": config.freeze_audio_encoder}
    return tuple(modality for modality in config.modalities if frozen[modality])


def encoder_fingerprint(model, modality, storage_dtype) -> str:
    encoder = _encoder(model, modality)
    config = {k: v for k, v in encoder.model.config.to_dict().items() if k not in UNUSED_CONFIG_KEYS}
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([CACHE_FORMAT, modality, str(storage_dtype), transformers.__version__, config],
                             sort_keys=True, default=str).encode())
    for name, tensor in encoder.model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy())  # raw bytes, whatever the dtype (bf16 has no numpy type)
    return digest.hexdigest()


def content_key(values: torch.Tensor) -> str:
    array = values.detach().cpu().contiguous().numpy()
    return hashlib.blake2b(str(array.dtype).encode() + array.tobytes(), digest_size=16).hexdigest()


class StateStore:
    """One encoder's states: append-only arrow shards in `folder`; a shard is renamed into place once complete."""

    def __init__(self, folder: Path, hidden_size: int, storage_dtype: str):
        self.folder = folder
        self.features = datasets.Features({"key": datasets.Value("string"),
                                           "states": datasets.Array2D((None, hidden_size), storage_dtype)})
        self.shards, self.index, self.paths = [], {}, set()
        folder.mkdir(parents=True, exist_ok=True)
        self.refresh()

    def refresh(self):
        """Index shards written since (by another process, e.g. the main one under DDP)."""
        for path in sorted(self.folder.glob("shard-*.arrow")):
            if path not in self.paths:
                self._add_shard(path)

    def _add_shard(self, path):
        self.paths.add(path)
        try:
            shard = datasets.Dataset.from_file(str(path)).with_format("numpy")
            keys = shard["key"]
        except (OSError, ValueError, pa.ArrowException) as err:
            # A shard is renamed into place only when complete, so this is damage from outside (a full disk, a
            # copy cut short, a stray edit). Its rows are simply not indexed: prepare() encodes them again.
            logger.warning("Feature cache shard %s is unreadable (%s: %s); deleting it, its utterances will be "
                           "encoded again.", path, type(err).__name__, err)
            Path(path).unlink(missing_ok=True)
            return
        for row, key in enumerate(keys):
            self.index.setdefault(str(key), (len(self.shards), row))
        self.shards.append(shard.select_columns(["states"]))

    def __contains__(self, key):
        return key in self.index

    def __len__(self):
        return len(self.index)

    def get(self, key) -> np.ndarray:
        shard, row = self.index[key]
        return self.shards[shard][row]["states"]

    def write(self, items):
        """Store `(key, (T, D) array)` pairs as one new shard."""
        name = f"shard-{uuid.uuid4().hex}.arrow"
        partial = self.folder / f".partial-{name}"
        with ArrowWriter(features=self.features, path=str(partial)) as writer:
            for key, states in items:
                writer.write({"key": key, "states": states})
            writer.finalize()
        os.replace(partial, self.folder / name)
        self._add_shard(self.folder / name)


class FeatureCache:
    """Stored outputs of a model's frozen encoders, for the utterances of the datasets given to `prepare`.

    `prepare(dataset)` encodes what the store lacks and returns the dataset with key columns added;
    `data_collator(training)` then builds batches that carry `text_encoder_states` / `audio_encoder_states`.
    """

    def __init__(self, model, processor, cache_dir, max_audio_seconds=None, seed=0, storage_dtype="float32",
                 batch_size=8, text_column="text", audio_column="audio"):
        config = model.config
        self.modalities = frozen_modalities(config)
        if not self.modalities:
            raise ValueError(f"None of the encoders of modalities={config.modalities} is frozen, so none can be "
                             "cached: set freeze_text_encoder / freeze_audio_encoder.")
        if config.use_weighted_layer_sum:
            raise ValueError("The feature cache does not serve use_weighted_layer_sum=True: its layer weights are "
                             "trained, so every hidden layer would have to be stored (13x the disk at base size). "
                             "Train uncached, or set use_weighted_layer_sum=False.")
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.collate_kwargs = dict(max_audio_seconds=max_audio_seconds, modalities=config.modalities, seed=seed,
                                   text_column=text_column, audio_column=audio_column)
        # Deterministic crop: the states must describe the exact samples the prosody branch reads later.
        self.key_collator = MERDataCollator(processor, training=False, **self.collate_kwargs)
        self.stores = {}
        for modality in self.modalities:
            fingerprint = encoder_fingerprint(model, modality, storage_dtype)
            hidden_size = _encoder(model, modality).model.config.hidden_size
            self.stores[modality] = StateStore(Path(cache_dir) / modality / fingerprint, hidden_size, storage_dtype)
        self.encoded = dict.fromkeys(self.modalities, 0)  # utterances run through each encoder (tests, logs)

    @classmethod
    def for_model(cls, model, processor, cache_dir, **kwargs):
        """A cache for the model's frozen encoders, or None (with the reason logged) when none can be cached."""
        if not frozen_modalities(model.config):
            return None
        if model.config.use_weighted_layer_sum:
            logger.info("Frozen encoders but use_weighted_layer_sum=True: training without the feature cache.")
            return None
        return cls(model, processor, cache_dir, **kwargs)

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """Encode the utterances the store lacks; return `dataset` with one key column per cached modality."""
        for store in self.stores.values():
            store.refresh()
        before = dict(self.encoded)
        keys = {modality: [None] * len(dataset) for modality in self.modalities}
        order = (np.argsort(np.asarray(dataset["duration"], dtype=float), kind="stable")
                 if "duration" in dataset.column_names else np.arange(len(dataset)))
        needed = [c for c in (self.collate_kwargs["text_column"], self.collate_kwargs["audio_column"])
                  if c in dataset.column_names]
        columns = dataset.select_columns(needed)
        pending = {modality: [] for modality in self.modalities}
        seen = {modality: set() for modality in self.modalities}  # keys stored or pending: encode each once
        for start in range(0, len(dataset), self.batch_size):  # similar lengths together: little padding
            indices = order[start:start + self.batch_size].tolist()
            batch = self.key_collator([columns[i] for i in indices])
            for modality in self.modalities:
                fresh = self._keys_of(batch, modality, indices, keys[modality], seen[modality])
                pending[modality].extend(self._encode(batch, modality, fresh))
                if len(pending[modality]) >= 256:  # bounded memory: write a shard now and then
                    self.stores[modality].write(pending[modality])
                    pending[modality] = []
        for modality, items in pending.items():
            if items:
                self.stores[modality].write(items)
        encoded = {modality: self.encoded[modality] - before[modality] for modality in self.modalities}
        logger.info("Feature cache %s: %d utterances, newly encoded %s, the rest found stored.",
                    ", ".join(str(store.folder) for store in self.stores.values()), len(dataset), encoded)
        self._log_crops(dataset)
        for modality, column in keys.items():
            name = KEY_COLUMNS[modality]
            dataset = dataset.remove_columns(name) if name in dataset.column_names else dataset
            dataset = dataset.add_column(name, column)
        return dataset

    def _keys_of(self, batch, modality, indices, keys, seen):
        """Fill `keys` for this batch; return the batch positions whose states are neither stored nor pending."""
        values, mask = ((batch["input_ids"], batch["attention_mask"]) if modality == "text"
                        else (batch["input_values"], batch["audio_attention_mask"]))
        fresh = []
        for position, index in enumerate(indices):
            key = content_key(values[position][mask[position].bool()])
            keys[index] = key
            if key not in self.stores[modality] and key not in seen:
                fresh.append((position, key))
                seen.add(key)
        return fresh

    @torch.inference_mode()
    def _encode(self, batch, modality, fresh):
        if not fresh:
            return []
        rows = torch.tensor([position for position, _ in fresh])
        device = next(self.model.parameters()).device
        modes = {module: module.training for module in self.model.modules()}
        self.model.eval()
        try:
            encoder = _encoder(self.model, modality)
            if modality == "text":
                mask = batch["attention_mask"][rows]
                states = encoder(batch["input_ids"][rows].to(device), mask.to(device))
            else:
                mask = batch["audio_attention_mask"][rows]
                length = int(mask.sum(-1).max())  # drop the padding the other rows of the batch needed
                states, mask = encoder(batch["input_values"][rows, :length].to(device), mask[:, :length].to(device))
        finally:
            for module, training in modes.items():
                module.train(training)
        self.encoded[modality] += len(fresh)
        dtype = self.stores[modality].features["states"].dtype
        return [(key, states[i][mask[i].bool().to(states.device)].float().cpu().numpy().astype(dtype))
                for i, (_, key) in enumerate(fresh)]

    def _log_crops(self, dataset):
        seconds = self.collate_kwargs["max_audio_seconds"]
        if "audio" in self.modalities and seconds is not None and "duration" in dataset.column_names:
            cropped = sum(duration > seconds for duration in dataset["duration"] if duration is not None)
            if cropped:
                logger.info("%d clip(s) are longer than %s s: with cached audio states they get the centre "
                            "window in training too (no random crop).", cropped, seconds)

    def data_collator(self, training: bool, augmentation=None) -> "CachedFeatureCollator":
        """Training: random crops and `augmentation` (a WaveformAugmentation) of the raw audio, which only what is
        not cached reads (the prosody branch, a trained speech encoder). With cached audio states neither applies:
        the states were computed from one view (train.py refuses augmentation then)."""
        training = training and "audio" not in self.modalities
        base = MERDataCollator(self.processor, training=training, augmentation=augmentation, **self.collate_kwargs)
        return CachedFeatureCollator(self, base)  # (an evaluation collator ignores `augmentation`)


class CachedFeatureCollator:
    """MERDataCollator's batch plus the cached encoder states, padded like the encoders would have padded them.

    Needs rows of a dataset returned by `FeatureCache.prepare` (they carry the key columns).
    """

    def __init__(self, cache: FeatureCache, base: MERDataCollator):
        self.cache, self.base = cache, base
        speech = _encoder(cache.model, "audio") if "audio" in cache.modalities else None
        self.frame_lengths = speech.model._get_feat_extract_output_lengths if speech is not None else None

    def __call__(self, features):
        batch = self.base(features)
        for modality in self.cache.modalities:
            column = KEY_COLUMNS[modality]
            missing = [i for i, f in enumerate(features) if f.get(column) is None]
            if missing:
                raise ValueError(f"Batch items {missing[:5]} have no {column!r}: pass the datasets through "
                                 "FeatureCache.prepare before training on cached features.")
            store = self.cache.stores[modality]
            states = [torch.from_numpy(np.asarray(store.get(f[column]), dtype=np.float32)) for f in features]
            if modality == "text":
                mask = batch["attention_mask"].bool()
            else:
                frames = self.frame_lengths(batch["audio_attention_mask"].sum(-1))
                mask = torch.arange(int(frames.max()))[None, :] < frames[:, None]  # wav2vec2 frames: right-padded
            lengths = [len(s) for s in states]
            if lengths != mask.sum(-1).tolist():
                raise ValueError(f"Cached {modality} states have lengths {lengths} but this batch needs "
                                 f"{mask.sum(-1).tolist()}: the data changed after FeatureCache.prepare.")
            padded = torch.zeros(*mask.shape, states[0].shape[-1])
            padded[mask] = torch.cat(states)  # the mask orders rows then positions, like the concatenation
            batch[STATE_ARGUMENTS[modality]] = padded
        return batch
