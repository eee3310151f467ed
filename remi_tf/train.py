"""Training with Keras fit: resumable checkpoints, valid Recall@50 model selection, early stopping.

It writes the model directory (remi_tf.model_directory has its layout). In a cluster the chief writes it;
other workers write what Keras's multi-worker conventions have them write (backups to temporary
directories) and follow the chief's model selection.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from remi_tf import collectives, distribute, model_directory
from remi_tf import evaluate as evaluate_lib
from remi_tf.config import RemiConfig
from remi_tf.item_index import FIRST_ITEM_INDEX
from remi_tf.models import RemiModel
from remi_tf.optimizers import LazyAdam

logger = logging.getLogger(__name__)

SELECTION_METRIC = "recall@50"
KEPT_BACKUPS = 2  # the latest backup and the one before it
def compile_model(model: RemiModel, config: RemiConfig) -> int:
    """Compiles with (Lazy)Adam; returns the steps per execution (a divisor of the steps between evaluations)."""
    steps_per_execution = math.gcd(math.gcd(config.steps_per_execution, epoch_steps(config)), config.max_steps)
    optimizer = LazyAdam(config.learning_rate) if config.optimizer == "lazy_adam" else \
        tf.keras.optimizers.Adam(config.learning_rate)
    model.compile(optimizer=optimizer, steps_per_execution=steps_per_execution)
    return steps_per_execution


class ValidationCallback(tf.keras.callbacks.Callback):
    """Evaluates valid Recall@50 after every `eval_every` steps (one Keras epoch), keeps the best
    weights, stops after `patience` evaluations without improvement. Its state lives in
    validation.json so that a resumed run continues the same selection.

    Each evaluation is recorded in this order: its history.csv row, a backup of the training state at its
    step (`backup`), the best checkpoint when improved, validation.json last. A kill between any two leaves
    an evaluation that validation.json records with a backup at its step (or later), so the same command
    resumes: from the backup, evaluating its step again when validation.json lacks it (its training loss
    taken from the row already written).

    The chief evaluates and writes; under multi-worker training the other workers receive its decisions
    (improved, stop: one all-reduce), write the same checkpoint to a temporary directory (saving takes every
    worker) and stop together with it.
    """

    def __init__(self, evaluate_fn: Callable[[], dict], model_dir: str, patience: int, steps_per_epoch: int,
                 chief: bool = True, strategy: tf.distribute.Strategy | None = None,
                 last_step: int | None = None, backup: StepBackup | None = None) -> None:
        super().__init__()
        self.last_step = last_step  # a shorter last epoch ends here (TrainingGuard stops it)
        self.evaluate_fn = evaluate_fn
        self.model_dir = model_dir
        self.patience = patience
        self.steps_per_epoch = steps_per_epoch
        self.chief = chief
        self.strategy = strategy or tf.distribute.get_strategy()
        self.backup = backup
        self.state: dict[str, Any] = {"evaluations": [], "best": None, "best_step": None,
                                      "evaluations_without_improvement": 0}
        self.state = model_directory.read_validation(model_dir) or self.state
        self.stopped_on_resume = False  # the evaluation of a resumed run's restored step stopped it

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Evaluates the restored backup's step when it ends an epoch that validation.json lacks (killed
        between the backup and the record; `backup` precedes this callback, so it has restored it)."""
        step = int(self.model.optimizer.iterations.numpy())
        evaluated = {e["step"] for e in self.state["evaluations"]}
        at_boundary = step % self.steps_per_epoch == 0 or step == self.last_step
        if step and at_boundary and step not in evaluated:
            self._evaluate(step, None, None)
            # Keras trains one more execution before it reads stop_training: that epoch's end is not an evaluation
            self.stopped_on_resume = bool(self.model.stop_training)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = (time.perf_counter(), int(self.model.optimizer.iterations.numpy()))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.stopped_on_resume:
            return
        step = (epoch + 1) * self.steps_per_epoch
        if self.last_step is not None:
            step = min(step, self.last_step)
        start_time, start_step = self.epoch_start
        steps_per_s = (int(self.model.optimizer.iterations.numpy()) - start_step) / (time.perf_counter() - start_time)
        self._evaluate(step, steps_per_s, logs)

    def _evaluate(self, step: int, steps_per_s: float | None, logs: dict | None) -> None:
        """Evaluates the weights at `step`, records it, keeps the best, decides on early stopping. `logs`:
        the epoch's training logs, None for an evaluation on resume (its backup exists)."""
        start = time.perf_counter()
        report = self.evaluate_fn() if self.chief else {}
        validation_s = time.perf_counter() - start
        self.last_report = report
        scalars = {f"val_{key}": value for key, value in report.items() if isinstance(value, float)}
        if logs is not None:
            logs.update(scalars)
        if self.chief:
            self._write_history(step, scalars, logs)
        if logs is not None and self.backup is not None:
            self.backup.back_up_evaluated_step()
        improved = self.chief and (self.state["best"] is None or report[SELECTION_METRIC] > self.state["best"])
        if self.chief:
            self.state["evaluations"] = [e for e in self.state["evaluations"] if e["step"] < step]
            self.state["evaluations"].append({"step": step, **scalars, "train_steps_per_s": steps_per_s,
                                              "validation_s": round(validation_s, 3)})
            if improved:
                self.state.update(best=report[SELECTION_METRIC], best_step=step, evaluations_without_improvement=0)
            else:
                self.state["evaluations_without_improvement"] += 1
        stop = bool(self.patience) and self.state["evaluations_without_improvement"] >= self.patience
        improved, stop = collectives.broadcast_from_chief(self.strategy, [improved, stop], self.chief)
        if improved:
            prefix = model_directory.best_checkpoint_prefix(self.model_dir) if self.chief else \
                os.path.join(distribute.worker_temp_dir(self.model_dir), "ckpt")
            model_directory.weights_checkpoint(self.model).write(prefix)
            if not self.chief:
                tf.io.gfile.rmtree(os.path.dirname(prefix))
        if self.chief:
            speed = "" if steps_per_s is None else f"; training {steps_per_s:.1f} steps/s"
            below_bar = "\n" if self.params.get("verbose") == 1 else ""  # Keras's bar leaves its line open
            print(f"{below_bar}step {step}: valid {SELECTION_METRIC} = {report[SELECTION_METRIC]:.4f} (best "
                  f"{self.state['best']:.4f} at step {self.state['best_step']}){speed}; validation "
                  f"{self._users(report)}{validation_s:.1f} s", flush=True)
            model_directory.write_validation(self.model_dir, self.state)
        if stop:
            if self.chief:
                logger.info(f"early stopping: no improvement in {self.patience} evaluations")
            self.model.stop_training = True

    def _write_history(self, step: int, scalars: dict[str, float], logs: dict | None) -> None:
        """history.csv: the kept rows of the evaluations before `step` and this one's (one row per evaluation,
        keyed by the Keras epoch that ends at its step); on resume (`logs` None) the training columns of the row
        written before the kill."""
        epoch = math.ceil(step / self.steps_per_epoch) - 1
        rows = model_directory.read_history(self.model_dir)
        training = dict(logs) if logs is not None else \
            {key: value for key, value in rows.get(epoch, {}).items() if not key.startswith("val_")}
        kept = {earlier: row for earlier, row in rows.items() if earlier < epoch}
        model_directory.write_history(self.model_dir, {**kept, epoch: {**training, **scalars}})

    @staticmethod
    def _users(report: dict) -> str:
        return f"of {report['num_users']:,} users in " if "num_users" in report else ""


class StepSummaries(tf.keras.callbacks.Callback):
    """TensorBoard summaries at the global step (Keras's TensorBoard callback writes epoch indices): at each
    evaluation the epoch's training and valid scalars, the learning rate, each interest's share of the merged
    valid lists and its routing entropy (per interest: share/k, routing_entropy/k), and the routing heatmaps
    of the first valid users (image `routing`)."""

    HEATMAP_USERS = 4

    def __init__(self, log_dir: str, validation: ValidationCallback, valid_histories: np.ndarray | None = None,
                 valid_user_features: np.ndarray | None = None) -> None:
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.validation = validation
        self.histories = None if valid_histories is None else valid_histories[:self.HEATMAP_USERS]
        self.user_features = None if valid_user_features is None else valid_user_features[:self.HEATMAP_USERS]

    def routing_image(self, histories: np.ndarray) -> tf.Tensor:
        """[1, height, width, 4] the routing heatmaps (remi_tf.plots) of `histories` [users, L], as an image."""
        from remi_tf import plots

        features = None if self.user_features is None else tf.constant(self.user_features)
        _, routing = self.model.interests(tf.constant(histories), features)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "routing.png")
            plots.routing_heatmaps(routing.numpy(), np.asarray(histories >= FIRST_ITEM_INDEX),
                                   [f"valid #{row}" for row in range(len(histories))], path)
            return tf.image.decode_png(tf.io.read_file(path))[tf.newaxis]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        report = getattr(self.validation, "last_report", {})
        with self.writer.as_default(step=step):
            for key, value in (logs or {}).items():
                tf.summary.scalar(key if key.startswith("val_") else f"train_{key}", float(value))
            learning_rate = self.model.optimizer.learning_rate
            if callable(learning_rate):
                learning_rate = learning_rate(self.model.optimizer.iterations)
            tf.summary.scalar("learning_rate", float(tf.convert_to_tensor(learning_rate)))
            for name in ("interest_share", "routing_entropy"):
                for interest, value in enumerate(report.get(name, [])):
                    tf.summary.scalar(f"{name}/{interest}", float(value))
            if self.histories is not None and len(self.histories):
                tf.summary.image("routing", self.routing_image(self.histories))
        self.writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.writer.close()


class StepBackup(tf.keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore, resuming at the step after the backup also with steps_per_execution > 1,
    backing up at each evaluation, and keeping the backup before the latest.

    Keras records the batch index given to on_train_batch_begin, which is the first step of an
    execution, and resumes after it: steps_per_execution - 1 steps were trained twice and the run ended
    past max_steps. The backup is taken at the execution's end, so this records that step instead.
    The backup at an epoch's end (an evaluation's step) is ValidationCallback's to take, before it records the
    evaluation (back_up_evaluated_step); the `checkpoint_every` ones that fall there are left to it.
    Keras keeps one backup; this keeps two (its checkpoint manager deletes the oldest only after the new one
    and the `checkpoint` file naming both are written), for check_backup to fall back to.
    """

    def __init__(self, backup_dir: str, save_freq: int | str, steps_per_epoch: int, last_step: int | None) -> None:
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)
        self.steps_per_epoch = steps_per_epoch
        self.last_step = last_step

    def _parameter_servers(self) -> bool:
        return isinstance(self.model.distribute_strategy, tf.distribute.ParameterServerStrategy)

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self._training_state.write_checkpoint_manager._max_to_keep = KEPT_BACKUPS

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self._parameter_servers():
            self._training_state._ckpt_saved_batch.assign(batch)
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Nothing: the evaluation of the epoch backs up (Keras would back up here under parameter servers)."""

    def back_up_evaluated_step(self) -> None:
        """Backs up at an epoch's end (every worker, as Keras's backups), recorded as that epoch's last batch so
        that a resumed run starts at the next epoch (also after a shorter last one: then it trains no more)."""
        if not self._parameter_servers():
            self._training_state._ckpt_saved_batch.assign(self.steps_per_epoch - 1)
        super()._backup(self._current_epoch)

    def _backup(self, epoch: int, batch: int = 0) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.steps_per_epoch and (self.last_step is None or step < self.last_step):
            super()._backup(epoch, batch)  # else an evaluation's step: back_up_evaluated_step takes this backup


class ResumeNotice(tf.keras.callbacks.Callback):
    """Says where a resumed run starts (after BackupAndRestore, which precedes it, restored the backup)."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        if step:
            logger.info(f"resumed from the backup at step {step}")


def check_backup(backup_dir: str) -> None:
    """Reads every tensor of the chief's latest backup (Keras's BackupAndRestore layout). An unreadable
    one (truncated, corrupted) is deleted and the run resumes from the backup before it when that one reads;
    otherwise the run stops with what to do instead of a raw error mid-restore."""
    chief_dir = os.path.join(backup_dir, model_directory.CHIEF_BACKUP)
    latest = tf.train.latest_checkpoint(chief_dir)
    if latest is None:
        return
    reason = _unreadable(latest)
    if reason is None:
        refuse_retired_objects(latest, backup_dir)
        return
    previous = model_directory.backups(chief_dir)[:-1]
    if previous and _unreadable(previous[-1]) is None:
        refuse_retired_objects(previous[-1], backup_dir)
        tf.compat.v1.train.update_checkpoint_state(chief_dir, previous[-1], all_model_checkpoint_paths=previous)
        for path in tf.io.gfile.glob(latest + ".*"):
            tf.io.gfile.remove(path)
        logger.warning(f"{latest}: the latest backup cannot be read ({reason}); resuming from the previous one, "
                       f"{previous[-1]}")
        return
    raise RuntimeError(f"{latest}: the backup of the interrupted run cannot be read ({reason}), nor a previous "
                       f"one; move {backup_dir} aside to train from the start (the best checkpoint in best/ is "
                       "not affected)")


# Objects of a 0.1.0 model that 0.2.0 no longer has (issue 38): a backup holding them was written by 0.1.0
RETIRED_BACKUP_OBJECTS = ("interest_weight_tracker", "mixture_balance_tracker", "interest_mixture", "interest_weights")


def refuse_retired_objects(prefix: str, backup_dir: str) -> None:
    """Raises, naming what to do, when the backup at `prefix` was written by remi-tf 0.1.0 (it holds objects the
    0.2.0 model does not have): its training state is not continued under another object graph."""
    names = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    retired = sorted({part for name in names for part in name.split("/") if part in RETIRED_BACKUP_OBJECTS})
    if retired:
        model_dir = os.path.dirname(os.path.normpath(backup_dir))
        raise RuntimeError(f"{backup_dir} was written by remi-tf 0.1.0 (it holds {', '.join(retired)}, retired in "
                           f"0.2.0), and 0.2.0 does not continue its training: its best checkpoint still serves "
                           f"`remi evaluate`, `remi export` and --warm-start, so train into a new --model-dir with "
                           f"--warm-start {model_dir}, or finish this run with remi-tf 0.1.0")


def _unreadable(prefix: str) -> str | None:
    """Why the checkpoint at `prefix` cannot be read whole, or None when every tensor reads."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


def train(model: RemiModel, config: RemiConfig,
          train_data: tf.data.Dataset | tf.keras.utils.experimental.DatasetCreator,
          valid_histories: np.ndarray, valid_targets: Sequence[np.ndarray], model_dir: str, verbose: int = 1,
          strategy: tf.distribute.Strategy | None = None, chief: bool = True,
          valid_user_features: np.ndarray | None = None) -> dict:
    """Trains `model` (built under `strategy`'s scope) for `config.max_steps` steps (fewer if early
    stopping triggers).

    Re-running with the same `model_dir` after a kill (of any task of a cluster) resumes from the last
    backup. `remi train` seeds the initial weights and the in-memory sampler with config.seed: the same
    command on one process trains the same model (on CPU, to the last bit in the test); clusters,
    streaming input (reading order across files and threads) and resumed runs are not bit-reproducible.
    `valid_user_features`: [valid users, C] raw profile values, for a model with user features.

    Returns:
      validation.json's state: the valid evaluations and the best step (the chief's; empty elsewhere).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if verbose == 1 and isinstance(strategy, tf.distribute.ParameterServerStrategy):
        verbose = 2  # Keras has no per-step progress bar under parameter servers: one line per epoch
    os.makedirs(model_dir, exist_ok=True)
    steps_per_epoch = epoch_steps(config)
    epochs = math.ceil(config.max_steps / steps_per_epoch)
    # Batch hooks stop a shorter last epoch at max_steps; Keras runs none under parameter servers, where the
    # last epoch is whole (max_steps rounds up to a multiple of eval_every there).
    batch_hooks = not isinstance(strategy, tf.distribute.ParameterServerStrategy)
    done = finished(model_dir, config)
    if chief and done is None:  # a finished directory is left as it was
        check_resumable(model_dir)
        model_directory.write_config(model_dir, config)
    with strategy.scope():
        steps_per_execution = compile_model(model, config)
    if done is not None:
        logger.info(done)
        return model_directory.read_validation(model_dir) or {}

    def evaluate_valid() -> dict:
        return evaluate_lib.evaluate(model, valid_histories, valid_targets, batch_size=config.eval_batch_size,
                                     user_features=valid_user_features)

    guard = TrainingGuard(config.max_steps)
    validation, callbacks = training_callbacks(config, model_dir, evaluate_valid, steps_per_execution, chief,
                                               strategy, batch_hooks, guard, valid_histories, valid_user_features)
    history = model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                        verbose=verbose if chief else 0)
    losses = history.history.get("loss", [])
    if guard.diverged or not all(math.isfinite(value) for value in losses):
        raise RuntimeError(f"{model_dir}: training diverged (the loss is not finite) after step "
                           f"{int(model.optimizer.iterations.numpy())}; the best checkpoint of an earlier evaluation, "
                           f"if any, stays in {model_directory.path(model_dir, model_directory.BEST_DIR)}. Lower "
                           f"learning_rate (now {config.learning_rate}) and train into a new --model-dir")
    return validation.state


def training_callbacks(config: RemiConfig, model_dir: str, evaluate_valid: Callable[[], dict], steps_per_execution: int,
                       chief: bool, strategy: tf.distribute.Strategy, batch_hooks: bool, guard: TrainingGuard,
                       valid_histories: np.ndarray, valid_user_features: np.ndarray | None
                       ) -> tuple[ValidationCallback, list[tf.keras.callbacks.Callback]]:
    """The validation callback and every callback of `train`'s fit, in their order: the guard (with batch hooks),
    the backup (it restores before the validation looks at the step), the validation (before the summaries, so
    that its metrics reach the TensorBoard logs of the same epoch), the resume notice, the chief's summaries."""
    steps_per_epoch = epoch_steps(config)
    # Keras backs up parameter-server training only at epoch ends (it skips batch hooks there): at every
    # evaluation only, instead of every checkpoint_every steps too.
    backup = StepBackup(model_directory.backup_dir(model_dir), "epoch" if not batch_hooks else
                        max(1, config.checkpoint_every // steps_per_execution), steps_per_epoch,
                        config.max_steps if batch_hooks else None)
    validation = ValidationCallback(evaluate_valid, model_dir, config.patience, steps_per_epoch, chief, strategy,
                                    config.max_steps if batch_hooks else None, backup)
    if chief:
        check_backup(backup.backup_dir)
    callbacks = [*([guard] if batch_hooks else []), backup, validation, ResumeNotice()]
    if chief:
        logs_dir = model_directory.path(model_dir, model_directory.LOGS_DIR)
        callbacks.append(StepSummaries(logs_dir, validation, valid_histories, valid_user_features))
    return validation, callbacks


def epoch_steps(config: RemiConfig) -> int:
    """Steps between valid evaluations: eval_every, or max_steps when that is smaller (one evaluation at
    the end). A max_steps that is not a multiple of it ends with a shorter epoch and its evaluation."""
    return min(config.eval_every, config.max_steps)


def finished(model_dir: str, config: RemiConfig) -> str | None:
    """Why the run in `model_dir` has nothing left to train (stopped early, or max_steps reached), or None.
    `remi train` checks this before writing anything into the directory."""
    state = model_directory.read_validation(model_dir)
    if state is None:
        return None
    if config.patience and state["evaluations_without_improvement"] >= config.patience:
        return f"{model_dir}: training already stopped early; nothing to resume (the directory is left as it was)"
    evaluations = state["evaluations"]
    if evaluations and evaluations[-1]["step"] >= config.max_steps:
        return (f"{model_dir}: training already finished at step {evaluations[-1]['step']} (max_steps "
                f"{config.max_steps}); nothing to resume, the directory is left as it was (raise max_steps to "
                "train on)")
    return None


def check_resumable(model_dir: str) -> None:
    """Stops a run that would train `model_dir`'s earlier run again from step 0 (its history rows and
    evaluations twice): validation.json records evaluations, and no backup is left to resume from (deleted
    by hand). Called before anything is written."""
    evaluations = (model_directory.read_validation(model_dir) or {"evaluations": []})["evaluations"]
    if evaluations and model_directory.latest_backup(model_dir) is None:
        step = evaluations[-1]["step"]
        raise ValueError(f"{model_dir}: holds a run evaluated up to step {step} but no backup/ to continue it from, "
                         "so it would start again at step 0: train into a new --model-dir, with --warm-start "
                         f"{model_dir} to start from its best checkpoint")


class TrainingGuard(tf.keras.callbacks.Callback):
    """Stops training at max_steps (so that a shorter last epoch ends there) and at the first execution whose
    loss is NaN or infinite (Keras's TerminateOnNaN, remembering that it did, so that `train` fails instead of
    ending as if finished)."""

    def __init__(self, max_steps: int) -> None:
        super().__init__()
        self.max_steps = max_steps
        self.diverged = False

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = True
            self.model.stop_training = True
        if int(self.model.optimizer.iterations.numpy()) >= self.max_steps:
            self.model.stop_training = True
