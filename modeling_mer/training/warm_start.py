"""Warm-starting a fused model from two trained single-modality models (train.py --text_branch_from/--audio_branch_from).

Each side of the fused model starts as the matching unimodal model's: its encoder, its projection to d_model,
its self-attention layer, the prosody statistics (audio), and the crossmodal transformer its own positions
query with. In a unimodal model that transformer attends to its own modality (`text_to_text`); in the fused
model the same weights attend to the other one (`audio_to_text`: text tokens query audio frames). Only the
fusion head (the embedding F(x), the classifier and any branch heads) starts new. The idea: on a small corpus the
fused model otherwise learns both sides and their combination at once, and each single-cue condition ends
below its own unimodal model (README, "Real voices x real words"); starting from models that already decide
alone leaves training only the combining to learn.
"""

from ..configuration_mer import MERConfig
from ..modeling_mer import MERForSequenceClassification

# {modality: {fused model's module prefix: the unimodal model's module prefix}}
BRANCH_MODULES = {
    "text": {"mer.text_encoder.": "mer.text_encoder.", "mer.text_projection.": "mer.text_projection.",
             "mer.audio_to_text.": "mer.text_to_text.", "mer.text_self_attention.": "mer.text_self_attention."},
    "audio": {"mer.speech_encoder.": "mer.speech_encoder.", "mer.audio_projection.": "mer.audio_projection.",
              "mer.text_to_audio.": "mer.audio_to_audio.", "mer.audio_self_attention.": "mer.audio_self_attention.",
              "mer.prosody_statistics.": "mer.prosody_statistics."},
}
FLAGS = {"text": "--text_branch_from", "audio": "--audio_branch_from"}


def branch_sources(model_args):
    """{modality: checkpoint folder} of the warm-start flags that are set."""
    return {modality: source for modality, source in (("text", model_args.text_branch_from),
                                                      ("audio", model_args.audio_branch_from)) if source}


def check_warm_start(model_args):
    """Before any data is read: a warm start needs a fused model built from scratch and unimodal checkpoints of
    the matching modality (reads only their config.json)."""
    sources = branch_sources(model_args)
    if not sources:
        return
    named = " and ".join(f"{FLAGS[modality]} {source}" for modality, source in sources.items())
    if model_args.init_from:
        raise ValueError(f"{named} start a new fused model's branches, but --init_from {model_args.init_from} "
                         "starts from a whole trained model: use one or the other.")
    if model_args.modality_tuple != ("text", "audio"):
        raise ValueError(f"{named} warm-start a fused model, but --modalities is {','.join(model_args.modality_tuple)}:"
                         " pass --modalities text,audio (or fine-tune a unimodal model with --init_from).")
    for modality, source in sources.items():
        try:
            saved = MERConfig.from_pretrained(source)
        except OSError as error:
            raise ValueError(f"{FLAGS[modality]} {source}: no trained MER model there ({error}). Pass the model "
                             f"folder of a {modality}-only run (its output_dir/model).") from error
        if saved.modalities != (modality,):
            raise ValueError(f"{FLAGS[modality]} {source} is a model of modalities={saved.modalities}; it must be a "
                             f"single-modality {modality} model (trained with --modalities {modality}).")


def warm_start_branches(model, sources):
    """Copy each unimodal model's side into the fused `model` (in place); every copied weight must fit."""
    state = model.state_dict()
    for modality, source in sources.items():
        unimodal = MERForSequenceClassification.from_pretrained(source).state_dict()
        for fused_prefix, unimodal_prefix in BRANCH_MODULES[modality].items():
            targets = [key for key in state if key.startswith(fused_prefix)]
            for key in targets:
                origin = unimodal_prefix + key[len(fused_prefix):]
                if origin not in unimodal or unimodal[origin].shape != state[key].shape:
                    found = tuple(unimodal[origin].shape) if origin in unimodal else "absent"
                    raise ValueError(
                        f"{FLAGS[modality]} {source} does not fit this model: {key} has shape {tuple(state[key].shape)}"
                        f" but the checkpoint's {origin} is {found}. Train the fused model with the unimodal "
                        "run's architecture flags (--d_model, --num_crossmodal_layers, --text_model, "
                        "--use_prosody_statistics, ...).")
                state[key].copy_(unimodal[origin])
    return model
