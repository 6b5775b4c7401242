"""MERTrainer: the joint loss with its parts logged, class-balanced batches, and per-part learning rates."""

import math

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from ..data.sampling import ClassBalancedSampler, LengthGroupedSampler
from .metrics import compute_emotion_metrics

ENCODER_PREFIXES = ("mer.text_encoder.model.", "mer.speech_encoder.model.")


def is_encoder_parameter(name):
    return name.startswith(ENCODER_PREFIXES)


def check_label_smoothing(args):
    """Refuse transformers' `label_smoothing_factor`: `Trainer` smooths only a loss it computes itself, and
    MERTrainer takes the model's joint loss, so the value would be ignored without a word."""
    if args.label_smoothing_factor:
        raise ValueError(f"--label_smoothing_factor {args.label_smoothing_factor} is not used by the MER loss; pass "
                         "--label_smoothing instead (MERConfig.label_smoothing, saved with the model).")


def check_label_ids(dataset, config, name):
    """Label ids outside the model's classes fail here, on the host, once; not as a device assert mid-training."""
    if dataset is None or "label" not in getattr(dataset, "column_names", ()):
        return
    bad = sorted({label for label in dataset["label"] if not 0 <= label < config.num_labels})
    if bad:
        raise ValueError(f"{name} has label id(s) {bad[:5]} outside this model's {config.num_labels} classes "
                         f"{config.id2label}; map the dataset's labels with config.label2id.")


def make_compute_metrics(label_names):
    """Trainer `compute_metrics`: WA, UA, F1s and per-class recall (the confusion matrix is kept out of the logs)."""

    def compute_metrics(evaluation):
        logits = evaluation.predictions[0] if isinstance(evaluation.predictions, tuple) else evaluation.predictions
        metrics = compute_emotion_metrics(np.argmax(logits, -1), evaluation.label_ids, label_names=label_names)
        metrics.pop("confusion_matrix")
        return {key: value for key, value in metrics.items() if value is not None}

    return compute_metrics


class FrozenEncoderWarmup(TrainerCallback):
    """Keeps the encoders frozen for the first `epochs` epochs so the freshly initialised fusion settles first."""

    def __init__(self, model, epochs):
        self.epochs = epochs
        # Only parameters the config leaves trainable are toggled; config-frozen ones stay frozen.
        self.parameters = [p for name, p in model.named_parameters() if is_encoder_parameter(name) and p.requires_grad]

    def on_epoch_begin(self, args, state, control, **kwargs):
        frozen = state.epoch is not None and state.epoch < self.epochs
        for parameter in self.parameters:
            parameter.requires_grad_(not frozen)


class SamplerEpochCallback(TrainerCallback):
    """Sets the epoch on the trainer's epoch-seeded samplers at the start of every epoch.

    accelerate's `DataLoaderShard.set_epoch` only looks two wrappers deep, and the Trainer's own reach
    only one: a sampler inside `SkipBatchSampler(BatchSamplerShard(...))` (a resumed multi-process
    run) never hears the epoch and would replay epoch 0's order. Holding the sampler objects and
    setting them here works whatever wraps them. floor(state.epoch) is the Trainer's epoch index,
    also right after a resume from the middle of an epoch (state.epoch = 1.33 -> epoch 1).
    """

    def __init__(self):
        self.samplers = []

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        epoch = math.floor(state.epoch or 0)
        for sampler in self.samplers:
            sampler.set_epoch(epoch)
        # The epoch also goes to a collator that offers set_epoch: its random crops can then be drawn from
        # (seed, epoch, utterance) and not from a generator whose state a resume cannot restore.
        collate = getattr(train_dataloader, "collate_fn", None)
        if hasattr(collate, "set_epoch"):
            collate.set_epoch(epoch)


class MERTrainer(Trainer):
    """`Trainer` for MERForSequenceClassification.

    - logs `ce_loss` and `triplet_loss` beside `loss` (means since the last log);
    - with `triplet_weight > 0`, draws class-balanced batches (P classes x K examples) so every batch has
      positives and negatives to mine;
    - gives the pretrained encoders `args.encoder_learning_rate` and the fusion/head `args.learning_rate`;
    - draws every training order from (seed, epoch) alone, so a run resumed with `resume_from_checkpoint`
      sees the same batches as an uninterrupted one, and all processes of a distributed run agree on the
      order before accelerate hands each its share of the batches.
    The model's forward takes no `**kwargs`, so the Trainer itself scales the loss under gradient accumulation.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_label_smoothing(self.args)
        for name, dataset in (("train_dataset", self.train_dataset), ("eval_dataset", self.eval_dataset)):
            check_label_ids(dataset, self.model.config, name)
        self._loss_parts = {"ce_loss": [], "triplet_loss": []}
        self._sampler_epochs = SamplerEpochCallback()
        self.add_callback(self._sampler_epochs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            for name in self._loss_parts:
                self._loss_parts[name].append(outputs[name].detach())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs, start_time=None):
        if "loss" in logs:  # training logs only
            for name, values in self._loss_parts.items():
                if values:
                    logs[name] = round(self.accelerator.gather(torch.stack(values).mean()[None]).mean().item(), 4)
                    values.clear()
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Return (loss, (logits, embeddings), labels): the embeddings F(x) feed the projection plot."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs)
        loss = outputs.loss.detach() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        return loss, (outputs.logits.detach(), outputs.embeddings.detach()), inputs.get("labels")

    def _get_train_sampler(self, train_dataset=None):
        """The training order; the Trainer's own DataLoader takes it with its batch size, workers and seeding.

        - `triplet_weight > 0`: class-balanced batches (P classes x K examples), so every batch has positives
          and negatives to mine. Under several processes accelerate shards the batches: every process draws
          the same seeded sequence and keeps every world_size-th batch.
        - group_by_length: the project's (seed, epoch)-seeded sampler instead of transformers' one, which
          draws from the global torch RNG: its order in epoch >= 1 depended on everything that had consumed
          random numbers before (dropout, ...), so a run resumed in a later epoch drew another order and
          skipped the wrong batches.
        """
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.model.config.triplet_weight > 0:
            labels = dataset["label"]
            batch_size = self._train_batch_size
            sampler = ClassBalancedSampler(labels, batch_size, num_batches=max(1, len(labels) // batch_size),
                                           seed=self._data_seed)
        elif self.args.train_sampling_strategy == "group_by_length":
            column = self.args.length_column_name
            if not hasattr(dataset, "column_names") or column not in dataset.column_names:
                return super()._get_train_sampler(train_dataset)
            # Grouped per optimizer step, as transformers does: accumulation 2 x batch 4 then sees batch 8's examples.
            step_size = self._train_batch_size * self.args.gradient_accumulation_steps
            sampler = LengthGroupedSampler(dataset[column], batch_size=step_size, seed=self._data_seed)
        else:
            return super()._get_train_sampler(train_dataset)
        self._sampler_epochs.samplers.append(sampler)
        return sampler

    @property
    def _data_seed(self):
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def create_optimizer(self, model=None):
        model = self.model if model is None else model
        if self.optimizer is None:
            decay = set(self.get_decay_parameter_names(model))
            groups = {}
            for name, parameter in model.named_parameters():
                if not parameter.requires_grad:
                    continue
                is_encoder = is_encoder_parameter(name)
                key = (is_encoder, name in decay)
                groups.setdefault(key, {
                    "params": [],
                    "weight_decay": self.args.weight_decay if name in decay else 0.0,
                    "lr": self.args.encoder_learning_rate if is_encoder else self.args.learning_rate,
                })["params"].append(parameter)
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
            optimizer_kwargs.pop("lr", None)  # each group carries its own
            self.optimizer = optimizer_cls(list(groups.values()), **optimizer_kwargs)
        return self.optimizer
