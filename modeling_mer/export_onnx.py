"""`mer-export`: the whole classifier as one ONNX graph, from raw 16 kHz audio and token ids to logits and F(x).

    mer-export outputs/demo/model outputs/demo/onnx [--quantize int8]

Training side (never shipped). The graph holds the spectral front end, the masked group norm, both encoders,
the fusion and the head, with dynamic batch, audio-length and token-length axes; the folder also gets the
tokenizer, `mer_onnx.json` (labels, modalities, the encoder's limits) and the standalone predictor
`mer_onnx.py`, which needs only onnxruntime, tokenizers and numpy.

Why `torch.onnx.export` (the dynamo exporter) and not optimum-onnx: optimum-onnx 0.1 requires
transformers < 4.58 (this project needs 5.x), and its exporter serves stock architectures through their
own ONNX configs; ours needs graph-level changes anyway, made here on a copy of the model:
- forward reads no tensor values (no `.tolist()`), so the graph needs no change there; the predictor checks on the host;
- the MFCC BiLSTM runs on packed sequences, which torch.export cannot trace with a dynamic length (it
  unrolls the recurrence): it becomes one custom op, `mer_onnx::bilstm`, translated to ONNX's LSTM with
  `sequence_lens`, which reads each sequence within its own length exactly as packing does;
- attention is traced with the math SDPA kernel: the CPU flash kernel's output strides made a reshape
  a view that the decomposed graph cannot honour;
- the masked group norm of the first conv layer sums over valid frames with matrix products (same values,
  fewer passes over the largest activation; see `_masked_group_norm_by_matmul`).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .configuration_mer import SAMPLING_RATE
from .encoders_mer import receptive_field

OPSET = 18
TEXT_INPUTS = ("input_ids", "attention_mask")
AUDIO_INPUTS = ("input_values", "audio_attention_mask")
OUTPUTS = ("logits", "embeddings")
PREDICTOR_FILE = Path(__file__).resolve().parents[1] / "mer_onnx.py"
QUANTIZATIONS = ("int8",)


# ---------------------------------------------------------------- the BiLSTM as one op with sequence lengths


@torch.library.custom_op("mer_onnx::bilstm", mutates_args=())
def bilstm(states: torch.Tensor, lengths: torch.Tensor, params: list[torch.Tensor], num_layers: int,
           hidden_size: int) -> torch.Tensor:
    """Bidirectional LSTM over (B, T, F) padded `states`, each row read within its length; padding gives 0."""
    packed = pack_padded_sequence(states, lengths.cpu(), batch_first=True, enforce_sorted=False)
    hx = states.new_zeros(2 * num_layers, states.shape[0], hidden_size)
    data, *_ = torch._VF.lstm(packed.data, packed.batch_sizes, (hx, hx), params, True, num_layers, 0.0, False, True)
    output = packed._replace(data=data)
    return pad_packed_sequence(output, batch_first=True, total_length=states.shape[1])[0]


@bilstm.register_fake
def _(states, lengths, params, num_layers, hidden_size):
    return states.new_empty(states.shape[0], states.shape[1], 2 * hidden_size)


def _bilstm_to_onnx(states, lengths, params, num_layers: int, hidden_size: int):
    """ONNX LSTM per layer, gates reordered from torch's (i, f, g, o) to ONNX's (i, o, f, c)."""
    from onnxscript import opset18 as op

    sequence = op.Transpose(states, perm=[1, 0, 2])  # (T, B, F)
    sequence_lens = op.Cast(lengths, to=6)  # int32
    for layer in range(num_layers):
        weights, recurrences, biases = [], [], []
        for direction in range(2):
            w_ih, w_hh, b_ih, b_hh = params[4 * (2 * layer + direction): 4 * (2 * layer + direction) + 4]

            def onnx_gates(tensor):
                i, f, g, o = op.Split(tensor, axis=0, num_outputs=4)
                return op.Concat(i, o, f, g, axis=0)

            weights.append(op.Unsqueeze(onnx_gates(w_ih), [0]))
            recurrences.append(op.Unsqueeze(onnx_gates(w_hh), [0]))
            biases.append(op.Unsqueeze(op.Concat(onnx_gates(b_ih), onnx_gates(b_hh), axis=0), [0]))
        output, _, _ = op.LSTM(sequence, op.Concat(*weights, axis=0), op.Concat(*recurrences, axis=0),
                               op.Concat(*biases, axis=0), sequence_lens, direction="bidirectional",
                               hidden_size=hidden_size)  # (T, 2, B, H)
        sequence = op.Reshape(op.Transpose(output, perm=[0, 2, 1, 3]), [0, 0, -1])  # (T, B, 2H)
    return op.Transpose(sequence, perm=[1, 0, 2])  # (B, T, 2H)


def _encode_mfcc_as_one_op(prosody):
    lstm = prosody.mfcc_lstm

    def encode_mfcc(mfcc, frame_mask):
        states = bilstm(mfcc, frame_mask.sum(-1), list(lstm._flat_weights), lstm.num_layers, lstm.hidden_size)
        return states * frame_mask[..., None].to(states.dtype)  # padding is 0 on both paths

    return encode_mfcc


# ---------------------------------------------------------------- the masked group norm as matrix products


def _masked_group_norm_by_matmul(norm):
    """MaskedGroupNorm.forward with its masked sums as batched matrix products with the frame mask.

    The module's own form multiplies the (B, C, T) conv output by the mask, squares it with Pow and also runs the
    stock group norm for a per-example Where: about ten passes over the largest tensor of the graph (a fifth of
    the int8 base model's time at batch 8 in ONNX Runtime's profiler). Here a sum over valid frames is
    `states @ mask` (one read), and unpadded examples take the masked result too (equal to the stock one up to
    float rounding, ~1e-6).
    """
    def forward(states):
        lengths = norm.frame_lengths
        if lengths is None or lengths.shape[0] != states.shape[0]:
            return nn.GroupNorm.forward(norm, states)
        batch, channels, time = states.shape
        groups = norm.num_groups
        valid = (torch.arange(time, device=states.device)[None, :] < lengths[:, None]).to(states.dtype)
        valid = valid[:, :, None]  # (B, T, 1)
        count = (lengths * (channels // groups)).to(states.dtype)[:, None, None]  # valid elements per group

        def group_sums(values):  # (B, C, T) -> (B, G, 1): the sum over each group's valid frames
            return (values @ valid).view(batch, groups, channels // groups).sum(-1, keepdim=True)

        mean = group_sums(states) / count
        centred = states.view(batch, groups, -1) - mean
        variance = group_sums((centred * centred).view(batch, channels, time)) / count
        normalised = (centred * torch.rsqrt(variance + norm.eps)).view(batch, channels, time)
        if norm.affine:
            normalised = normalised * norm.weight[None, :, None] + norm.bias[None, :, None]
        return normalised

    return forward


# ---------------------------------------------------------------- the graph


class ExportableClassifier(nn.Module):
    """The classifier with the model's own inputs by name, returning (logits, embeddings)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.input_names = exported_input_names(model.config)

    def forward(self, *inputs):
        outputs = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        return outputs.logits, outputs.embeddings


def exported_input_names(config):
    return (TEXT_INPUTS if config.uses_text else ()) + (AUDIO_INPUTS if config.uses_audio else ())


def exportable_copy(model):
    """A float32 eval copy with the graph-level changes of the module docstring; `model` is left as it was."""
    model = copy.deepcopy(model).float().eval()
    mer = model.mer  # forward reads no tensor values; value checks (texts, audio length) are the predictor's
    if mer.speech_encoder is not None and mer.speech_encoder.prosody is not None:
        mer.speech_encoder.prosody.encode_mfcc = _encode_mfcc_as_one_op(mer.speech_encoder.prosody)
    if mer.speech_encoder is not None and mer.speech_encoder.first_norm is not None:
        mer.speech_encoder.first_norm.forward = _masked_group_norm_by_matmul(mer.speech_encoder.first_norm)
    return ExportableClassifier(model)


def example_inputs(config, batch=2, samples=(4000, 2500), tokens=(9, 5)):
    """Padded example inputs of mixed lengths (lengths differ so no axis is traced as a constant)."""
    generator = torch.Generator().manual_seed(0)
    inputs = []
    if config.uses_text:
        ids = torch.randint(1000, 2000, (batch, max(tokens)), generator=generator)
        mask = (torch.arange(max(tokens))[None] < torch.tensor(tokens)[:, None]).long()
        inputs += [ids * mask, mask]
    if config.uses_audio:
        minimum = receptive_field(config.audio_config)
        samples = tuple(max(n, 4 * minimum) for n in samples)
        mask = (torch.arange(max(samples))[None] < torch.tensor(samples)[:, None]).long()
        inputs += [torch.randn(batch, max(samples), generator=generator) * mask, mask]
    return tuple(inputs)


def export_model(model, path, opset=OPSET):
    """Write `model` (a MERForSequenceClassification) to `path` as ONNX; returns the path."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    wrapper = exportable_copy(model)
    config = model.config
    batch = torch.export.Dim("batch", min=1)
    tokens = torch.export.Dim("tokens", min=1)
    samples = torch.export.Dim("samples", min=receptive_field(config.audio_config) if config.uses_audio else 1)
    axes = {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens},
            "input_values": {0: batch, 1: samples}, "audio_attention_mask": {0: batch, 1: samples}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        program = torch.onnx.export(
            wrapper, example_inputs(config), dynamo=True, opset_version=opset, input_names=list(wrapper.input_names),
            output_names=list(OUTPUTS), dynamic_shapes=(tuple(axes[name] for name in wrapper.input_names),),
            custom_translation_table={torch.ops.mer_onnx.bilstm.default: _bilstm_to_onnx}, verbose=False,
        )
    program.save(str(path), external_data=False)
    return path


def quantize_int8(source, target):
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized per batch at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Matrix products only: they hold nearly all the weights. Conv stays float: ONNX Runtime's ConvInteger made
    # the base-shape graph 3x slower (0.81 vs 2.54 utt/s at batch 8), and the feature encoder's convolutions
    # rewritten as im2col + MatMul gained nothing measurable. Per-channel weights and reduce_range gained nothing
    # either on this AVX-512 VNNI CPU (within the machine's noise), so the defaults stay.
    # The spectral front end stays float: its mel-filter and DCT products read power spectra spanning ~10
    # orders of magnitude, which per-batch int8 activations flatten (demo test UA 86.0 -> 43.0 with them).
    graph = onnx.load(str(source)).graph
    constants = {initializer.name for initializer in graph.initializer}
    spectral = [node.name for node in graph.node if node.op_type == "MatMul"
                and any(name in constants and ".spectral." in name for name in node.input)]
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     nodes_to_exclude=spectral)
    return Path(target)


def predictor_settings(model, processor):
    """What the standalone predictor needs besides the graph and the tokenizer (written to mer_onnx.json)."""
    config = model.config
    settings = {
        "id2label": {str(index): label for index, label in config.id2label.items()},
        "modalities": list(config.modalities),
        "sampling_rate": SAMPLING_RATE,
        "input_names": list(exported_input_names(config)),
    }
    if config.uses_audio:
        extractor = processor.feature_extractor
        settings.update(min_audio_samples=receptive_field(config.audio_config),
                        do_normalize=bool(extractor.do_normalize), padding_value=float(extractor.padding_value))
    if config.uses_text:
        from .processing_mer import text_token_limit

        tokenizer = processor.tokenizer
        limit = text_token_limit(tokenizer, config.text_config)  # the pipeline's limit, one definition
        settings.update(max_text_tokens=int(limit), pad_token_id=int(tokenizer.pad_token_id or 0),
                        pad_token=tokenizer.pad_token)
    return settings


def export_folder(model_source, output_dir, quantize=None):
    """The deployable folder: model.onnx (+ model_int8.onnx), processor files, mer_onnx.json, mer_onnx.py.

    `model_source`: a trained model folder (or Hub id), or a (model, processor) pair. Returns the folder.
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None, got {quantize!r}.")
    if isinstance(model_source, tuple):
        model, processor = model_source
    else:
        model, processor = _load(model_source)
    if processor.__class__.__name__ != "MERProcessor" or not hasattr(processor, "tokenizer"):
        raise ValueError("export_folder needs the model's MERProcessor (tokenizer + feature extractor) to write "
                         "beside the graph; save one in the model folder (MERProcessor.save_pretrained).")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    export_model(model, output_dir / "model.onnx")
    if quantize == "int8":
        quantize_int8(output_dir / "model.onnx", output_dir / "model_int8.onnx")
    processor.save_pretrained(output_dir)
    model.config.save_pretrained(output_dir)
    (output_dir / "mer_onnx.json").write_text(json.dumps(predictor_settings(model, processor), indent=2) + "\n")
    shutil.copyfile(PREDICTOR_FILE, output_dir / "mer_onnx.py")
    return output_dir


def _load(source):
    from transformers import AutoModelForSequenceClassification, AutoProcessor

    path = Path(str(source))
    if not path.is_dir() and (path.is_absolute() or str(source).startswith((".", "~")) or path.suffix):
        raise FileNotFoundError(f"Model folder {source} does not exist; pass a trained model folder "
                                "(e.g. outputs/demo/model) or a Hub repo id.")
    model = AutoModelForSequenceClassification.from_pretrained(str(source), trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(str(source), trust_remote_code=True)
    return model, processor


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mer-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="A trained MER model folder or Hub repo id.")
    parser.add_argument("output_dir", help="Folder to write model.onnx, the tokenizer and mer_onnx.py to.")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                        help="Also write model_int8.onnx (ONNX Runtime dynamic quantization; ~2-3x faster on CPU).")
    args = parser.parse_args(argv)
    try:
        folder = export_folder(args.model, args.output_dir, args.quantize)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"mer-export: error: {error}", file=sys.stderr)
        return 2
    print(f"mer-export: wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
