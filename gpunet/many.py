"""Many models in one pass: K networks of one shape trained together, each as its own ``gpunet.train`` run.

:func:`train_many` stacks the networks (gpunet/engines/stack.py) and trains them with one set of array
operations a step. Each model keeps what makes its run its own: its initial weights (its network), its
learning rate and decay, weight decay, optimiser hyperparameters and data order; and it ends with the
parameters, optimiser state and history its solo ``gpunet.train`` call would give. Where every model takes
the same data order, the batches are shared, and so are their products with the first layer (and the
per-sample algorithm's Gram matrix).
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from . import defaults
from .checks import check_decay, check_int, check_number
from .engines import per_sample as per_sample_kernel
from .engines import select
from .engines.stack import Stack, refusal
from .memory import DeviceMemoryError, GiB, parameter_count
from .augment import Augment, Augmenter, as_augment
from .network import Network
from .optim import Optimizer, make_optimizer
from .schedules import check_schedule, learning_rate, schedule_named
from .training import (
    DivergenceError, EpochRecord, PER_SAMPLE_CHUNK, _Best, _evaluate, _out_of_memory, _prepare, _prepare_optional,
    _progress_bar, divergence, epoch_order, validation_fraction, validation_pair, validation_rows,
)

Array = Any
__all__ = ["History", "train_many", "models_that_fit"]
# "plain": the stacked path's array operations (NumPy or CuPy); "per-sample": per-sample plain SGD on CuPy through
# per_sample.cu's many-model kernel, one block a model (engines/per_sample.py's ManyChunks). Graph mode with K
# models in one captured epoch is not built yet.
KERNELS = ("auto", "plain", "per-sample")
# The kernels a device run has held to the plain stacked path (tests/test_many.py's gpu tests): "per-sample", and
# "per-sample-dropout" for models with dropout. Auto takes a kernel only from here; naming it runs it.
VERIFIED_MANY: frozenset[str] = frozenset()


class History(list):  # type: ignore[type-arg,unused-ignore]
    """One model's records, one per epoch, as ``gpunet.train`` returns them; ``error`` is the
    :class:`~gpunet.training.DivergenceError` that stopped the model (with ``on_divergence="stop"``), else None.
    (``on_divergence="raise"`` raises it instead, its message starting "model k: ".)"""

    error: DivergenceError | None = None


def train_many(
    nets: Sequence[Network],
    X_train: Array,
    y_train: Array,
    *,
    epochs: int = defaults.EPOCHS,
    batch_size: int = defaults.BATCH_SIZE,
    lr: float | Sequence[float] = defaults.LR,
    lr_decay: float | None | Sequence[float | None] = None,
    lr_schedule: str | None = None,
    lr_step: int | None = None,
    lr_gamma: float | None = None,
    warmup_epochs: int | None = None,
    lr_min: float | None = None,
    lr_div: float | None = None,
    augment: Augment | dict[str, Any] | None = None,
    optimizer: str | Sequence[Optimizer] = defaults.OPTIMIZER,
    weight_decay: float | Sequence[float] = defaults.WEIGHT_DECAY,
    seed: int | Sequence[int] = defaults.SEED,
    shuffle_seed: int | None = None,
    X_test: Array | None = None,
    y_test: Array | None = None,
    validation: float | tuple[Array, Array] | None = None,
    early_stopping: int | None = None,
    callback: Callable[[int, EpochRecord], Any] | None = None,
    on_divergence: str = "raise",
    progress: bool = False,
    start_epoch: int = 1,
    kernels: str = "auto",
) -> list[History]:
    """Train the networks ``nets`` (one shape: sizes, activations, loss, dtype, backend) together, in place, and
    return each one's history: model ``k`` ends as ``gpunet.train(nets[k], X_train, y_train, lr=lr[k], ...)``
    would leave it, to float rounding (the products are batched, so a BLAS may sum them in another order).

    Per model, as a scalar shared by all or a sequence of one value per network: ``lr``, ``lr_decay``,
    ``weight_decay`` and ``seed``, the seed of its data order and validation rows (the network's own seed,
    given when it was built, sets its weights). ``optimizer`` is a name, or one optimiser instance per network,
    all of one kind, which is how each gets its own momentum or betas (``[gpunet.Adam(beta1=b) for b in ...]``);
    each instance ends holding its model's state and step count, as after ``train``. ``shuffle_seed=s`` gives
    every model the order of seed ``s``: the models then share every batch (``seed`` is then not given).

    Shared by all: ``epochs``, ``batch_size``, the learning-rate schedule (``lr_schedule`` and its settings, as
    ``train`` takes them: each model's rate is the schedule's for its own ``lr``), ``augment`` (each model's
    images moved by its own seed's draws), the data, ``validation`` (a fraction, held out per model by its
    seed, or an ``(X_val, y_val)`` pair), ``early_stopping`` (each model stops on its own, restored to its best
    epoch) and ``start_epoch`` (resume every model at an epoch's start, from networks and optimisers restored
    from their checkpoints). ``callback(k, record)`` is called after each epoch of each model; returning True
    stops that model. A model whose loss or parameters stop being finite raises its DivergenceError (with
    ``on_divergence="stop"``: it stops there, its ``History.error`` set, and the others go on). Records are
    ``train``'s; ``seconds`` is the epoch's time for the whole group.

    Models that do not fit in memory together are trained in groups (:func:`models_that_fit`).
    ``kernels``: "plain" (batched array operations, on NumPy or CuPy), "per-sample" (per-sample plain SGD,
    ``batch_size=1``, on CuPy: per_sample.cu's kernel, one thread block a model, for networks with one hidden
    layer) or "auto": "per-sample" where it can run once a device run has verified it (:data:`VERIFIED_MANY`),
    else "plain".
    """
    nets = _check_nets(nets)
    K = len(nets)
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    check_int("start_epoch", start_epoch, 1)
    lrs = [check_number("lr", v, positive=True) for v in _per_model("lr", lr, K)]
    decays = [None if v is None else check_decay("lr_decay", v) for v in _per_model("lr_decay", lr_decay, K)]
    lr_schedule = schedule_named(lr_schedule, lr_decay=next((d for d in decays if d is not None), None),
                                 lr_step=lr_step, lr_gamma=lr_gamma, lr_div=lr_div)
    schedules = [check_schedule(v, epochs, lr_schedule, lr_decay=d, lr_step=lr_step, lr_gamma=lr_gamma,
                                warmup_epochs=warmup_epochs, lr_min=lr_min, lr_div=lr_div)
                 for v, d in zip(lrs, decays)]
    augmentation = as_augment(augment)
    if shuffle_seed is not None:
        if seed != defaults.SEED:
            raise ValueError("give seed= or shuffle_seed=, not both: shuffle_seed is every model's data seed")
        seed = check_int("shuffle_seed", shuffle_seed, 0)
    seeds = [check_int("seed", v, 0) for v in _per_model("seed", seed, K)]
    optimizers = _optimizers(optimizer, weight_decay, K)
    patience = None if early_stopping is None else check_int("early_stopping", early_stopping, 1)
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence must be 'raise' or 'stop'; got {on_divergence!r}")
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNELS))} for models trained together; "
                         f"got {kernels!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False; got {progress!r}")
    reason = refusal(nets, optimizers)
    if reason is not None:
        raise ValueError(f"these networks cannot be trained together: {reason}")

    first = nets[0]
    X, T, labels = _prepare(first, X_train, y_train, "X_train", "y_train")
    test = _prepare_optional(first, X_test, y_test, "X_test", "y_test")
    rows, val = _validation_split(first, (X, T, labels), validation, seeds, patience)
    per_sample = batch_size == 1 and optimizers[0].folds_lr
    kernel = _kernel(kernels, nets, optimizers[0], batch_size)
    chunk = PER_SAMPLE_CHUNK if per_sample else batch_size
    n = X.shape[0] if rows is None else rows.shape[1]
    fit = models_that_fit(first, chunk, type(optimizers[0]), K, shared=_shared(seeds, rows),
                          images=n if augmentation is not None else 0)
    histories = [History() for _ in range(K)]

    def rate(k: int, e: int) -> float:  # model k's rate in epoch e
        return learning_rate(e, epochs, lrs[k], lr_schedule, **schedules[k])

    epoch_lr: list[Callable[[int], float]] = [partial(rate, k) for k in range(K)]
    for lo in range(0, K, fit):
        group = list(range(lo, min(lo + fit, K)))
        data = _Data(first, X, T, rows, augmentation, group, seeds)
        _train_group(group, nets, optimizers, data, val, test, histories, epoch_lr=epoch_lr,
                     seeds=seeds, epochs=epochs, start_epoch=start_epoch, chunk=chunk, per_sample=per_sample, n=n,
                     patience=patience, callback=callback, on_divergence=on_divergence, progress=progress,
                     kernel=kernel)
    return histories


def kernel_refusal(nets: Sequence[Network], optimizer: Optimizer, batch_size: int, auto: bool = False) -> str | None:
    """Why ``kernels="per-sample"`` cannot train these networks (stackable, with ``optimizer``'s kind at
    ``batch_size``), or None; with ``auto``, also what keeps auto off it: no device run has verified it
    (:data:`VERIFIED_MANY`, and select.VERIFIED_ACTIVATIONS for the activations)."""
    first = nets[0]
    on_device = _launcher() is None  # else the launches run elsewhere (the CPU tests): ManyChunks checks the rest
    if on_device and first.backend.name != "cupy":
        return f"it needs the cupy backend; the networks are on {first.backend.name!r}"
    if batch_size != 1 or not optimizer.folds_lr:
        return (f"it runs per-sample plain SGD (batch_size=1, optimizer 'sgd' without weight decay); got "
                f"batch_size={batch_size} with {optimizer!r}")
    reason = per_sample_kernel.supports(first) if on_device else None
    if reason is not None:
        return reason
    if auto:
        dropout = any(net.has_dropout for net in nets)
        needs = {"per-sample", "per-sample-dropout"} if dropout else {"per-sample"}
        missing = sorted(needs - VERIFIED_MANY)
        if missing:
            return (f"no device run has verified {missing[0]!r} for models trained together (many.VERIFIED_MANY); "
                    "kernels='per-sample' runs it when asked")
        unverified = [a for a in (first.activation, first.output) if a not in select.VERIFIED_ACTIVATIONS]
        if unverified:
            return (f"no device run has verified {unverified[0]!r} on the kernels (select.VERIFIED_ACTIVATIONS); "
                    "kernels='per-sample' runs it when asked")
    return None


def _kernel(kernels: str, nets: Sequence[Network], optimizer: Optimizer, batch_size: int) -> bool:
    """Whether the group trains on the per-sample kernel: ``kernels`` "per-sample" (ValueError where it cannot),
    or "auto" where :func:`kernel_refusal` finds nothing."""
    if kernels == "plain":
        return False
    reason = kernel_refusal(nets, optimizer, batch_size, auto=kernels == "auto")
    if kernels == "auto":
        return reason is None
    if reason is not None:
        raise ValueError(f"kernels='per-sample' cannot train these networks: {reason}")
    return True


class _Data:
    """A group's training rows: the prepared ``X`` and ``T`` with each model's rows (``rows``, None: all) as
    orders index them; with augmentation, one copy of each data seed's training rows instead, rewritten each
    epoch as ``train`` rewrites its copy (its draws are those of the seed's rows, in their order)."""

    def __init__(self, net: Network, X: Array, T: Array, rows: np.ndarray | None, augment: Augment | None,
                 group: list[int], seeds: list[int]) -> None:
        self.X, self.T, self.rows, self.augmenters = X, T, rows, []
        self.data_of: Array | None = None
        if augment is None:
            return
        backend = net.backend
        distinct = sorted({seeds[k] for k in group})
        model_of = {seeds[k]: k for k in group}  # a model of each seed: its rows are the seed's
        take = {s: None if rows is None else backend.to_device(rows[model_of[s]]) for s in distinct}
        sources = [X if take[s] is None else X[take[s]] for s in distinct]
        self.augmenters = [Augmenter(augment, src, s, backend) for src, s in zip(sources, distinct)]
        self.X = backend.xp.stack(sources)  # (S, n, n_in): each seed's images, rewritten in place each epoch
        self.T = backend.xp.stack([T if take[s] is None else T[take[s]] for s in distinct])
        self.rows = None  # orders now index each seed's own rows
        self.data_of = backend.to_device(np.array([distinct.index(seeds[k]) for k in group]))

    def epoch(self, epoch: int) -> None:
        for i, augmenter in enumerate(self.augmenters):
            augmenter.apply(epoch, self.X[i])

    def select(self, positions: list[int]) -> None:
        """Keep the models at ``positions`` of the group (the others stopped)."""
        if self.data_of is not None:
            self.data_of = self.data_of[positions]


def _train_group(group: list[int], nets: list[Network], optimizers: list[Optimizer], data: _Data,
                 val: list[Any], test: Any, histories: list[History], *, epoch_lr: list[Callable[[int], float]],
                 seeds: list[int], epochs: int, start_epoch: int, chunk: int, per_sample: bool,
                 n: int, patience: int | None, callback: Any, on_divergence: str, progress: bool,
                 kernel: bool = False) -> None:
    """Train the models ``group`` (indices into everything per model) together to the end; ``kernel``: per-sample
    SGD on the per-sample kernel, one block a model."""
    first = nets[group[0]]
    backend, xp = first.backend, first.backend.xp
    best = {k: _Best(nets[k], optimizers[k], patience) for k in group} if patience is not None else {}
    active = list(group)
    bar = _progress_bar(epochs - start_epoch + 1) if progress else None
    for k in group:  # state a checkpoint wrote under an older convention, with the rate of the next step
        optimizers[k].upgrade_state(epoch_lr[k](start_epoch))
    try:
        stack = _stack(nets, optimizers, active, chunk, _shared([seeds[k] for k in active], data.rows), kernel)
        for epoch in range(start_epoch, epochs + 1):
            start = time.perf_counter()
            epoch_lrs = [epoch_lr[k](epoch) for k in active]
            order = backend.to_device(_orders(active, seeds, data.rows, epoch, n))
            loss_sums = xp.zeros(len(active), dtype=first.dtype)
            # the BLAS threads a call takes: one shared order's wide product gets the machine's, as a product
            # that size gets in train; with own orders, each model's products spread over the host's threads,
            # one BLAS thread each (engines/stack.py)
            widest = select.widest_product(first, chunk) * len(active) if order.ndim == 1 else 0
            try:
                data.epoch(epoch)
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"), backend.products_of_size(widest):
                    stack.run_epoch(data.X, data.T, order, epoch_lrs, chunk, per_sample, loss_sums,
                                    data_of=data.data_of)
                stack.store()
            except backend.out_of_memory_errors as exc:
                raise _out_of_memory(first, chunk * len(active), exc) from None
            losses = backend.to_host(loss_sums).tolist()  # CPU-GPU sync point
            backend.synchronize()
            seconds = time.perf_counter() - start
            stopped = []
            for j, k in enumerate(active):
                record: EpochRecord = {"epoch": epoch, "lr": epoch_lrs[j], "train_loss": losses[j] / n}
                # a group reads its losses once an epoch: the rows named are the epoch's
                error = divergence(nets[k], losses[j], epoch, 0, n, n, epoch_lrs[j])
                if error is not None:
                    if on_divergence == "raise":
                        raise DivergenceError(f"model {k}: {error}", epoch)
                    histories[k].error = DivergenceError(error, epoch)  # the message a solo run would give
                    stopped.append(k)
                    continue
                record.update(_scores(nets[k], test, val[k]))
                record.update(seconds=seconds, samples_per_s=n / seconds if seconds > 0 else math.inf)
                stop = k in best and best[k].update(record)
                histories[k].append(record)
                if (callback is not None and callback(k, record) is True) or stop:
                    stopped.append(k)
            if bar is not None:
                bar.update(1)
            if stopped:
                data.select([j for j, k in enumerate(active) if k not in stopped])
                active = [k for k in active if k not in stopped]
                if not active:
                    break
                stack = _stack(nets, optimizers, active, chunk, stack.wide, kernel)
    finally:
        if bar is not None:
            bar.close()
    for b in best.values():
        b.restore()


def _stack(nets: list[Network], optimizers: list[Optimizer], active: list[int], chunk: int, wide: bool,
           kernel: bool = False) -> Stack:
    """The active models stacked; ``wide`` where they share their batches (and no model drops inputs): their
    first layers side by side, for one product with each batch; ``kernel``: their per-sample chunks on the
    per-sample kernel (:func:`_launcher` runs its launches)."""
    first = nets[active[0]]
    wide = wide and not any(nets[k].dropout[0] for k in active)
    group = [nets[k] for k in active]
    try:
        chunks = per_sample_kernel.ManyChunks(group, _launcher()) if kernel else None
        return Stack(group, [optimizers[k] for k in active], wide, chunks)
    except first.backend.out_of_memory_errors as exc:
        raise _out_of_memory(first, chunk * len(active), exc) from None


def _launcher() -> per_sample_kernel.Launcher | None:
    """What runs the per-sample kernel's launches: None, the device (the CPU tests replace this function with
    one that returns the kernel's NumPy transcription)."""
    return None


def _scores(net: Network, test: Any, val: Any) -> dict[str, Any]:
    """A record's test and validation scores, as ``train`` takes them (one BLAS thread for small products)."""
    scores: dict[str, Any] = {"test_loss": None, "test_accuracy": None}
    size = max(len(test[2]) if test else 0, len(val[2]) if val else 0)
    with net.backend.products_of_size(select.widest_product(net, size)):
        if test:
            scores.update(_evaluate(net, *test))
        if val:
            scores.update({k.replace("test_", "val_"): v for k, v in _evaluate(net, *val).items()})
    return scores


def _orders(active: list[int], seeds: list[int], rows: np.ndarray | None, epoch: int, n: int) -> np.ndarray:
    """The epoch's rows for each active model: ``(n,)`` when they all take the same, else ``(K, n)``."""
    def order(k: int) -> np.ndarray:
        perm = epoch_order(seeds[k], epoch, n)
        return perm if rows is None else rows[k][perm]

    if _shared([seeds[k] for k in active], None if rows is None else rows[active]):
        return order(active[0])
    return np.stack([order(k) for k in active])


def _shared(seeds: Sequence[int], rows: np.ndarray | None) -> bool:
    """Whether models with these data seeds (and training rows) take one data order."""
    return len(set(seeds)) == 1 and (rows is None or bool((rows == rows[0]).all()))


def _validation_split(net: Network, data: tuple[Array, Array, np.ndarray], validation: Any, seeds: list[int],
                      patience: int | None) -> tuple[np.ndarray | None, list[Any]]:
    """Each model's training rows ``(K, n)`` (None: all of them) and validation data, as ``train``'s
    ``validation=`` makes them: a fraction is held out per model by its seed."""
    X, T, labels = data
    K = len(seeds)
    if isinstance(validation, tuple):
        return None, [validation_pair(net, validation)] * K
    fraction = validation_fraction(validation, patience)
    if fraction == 0:
        return None, [None] * K
    splits = {s: validation_rows(len(labels), fraction, s) for s in set(seeds)}
    held = {s: net.backend.to_device(h) for s, (h, _) in splits.items()}
    val = {s: (X[held[s]], T[held[s]], labels[splits[s][0]]) for s in splits}
    return np.stack([splits[s][1] for s in seeds]), [val[s] for s in seeds]


def models_that_fit(net: Network, rows: int, optimizer: type[Optimizer], wanted: int, shared: bool = True,
                    images: int = 0) -> int:
    """How many models shaped like ``net`` fit in memory together, training ``rows`` rows a step with
    ``optimizer``'s state (``shared``: one data order; ``images``: the training rows each model's augmented
    copy holds, 0 without augmentation): at most ``wanted``, at least 1, from the free memory of the network's
    backend (the host's on NumPy), keeping a quarter of it free. DeviceMemoryError where not even one fits."""
    per_model = _bytes_per_model(net, rows, len(optimizer.state_names), shared)
    per_model += images * (net.sizes[0] + net.sizes[-1]) * net.dtype.itemsize
    free = net.backend.free_bytes()
    if free is None:
        return wanted
    fit = int(free * 0.75 // per_model)
    if fit < 1:
        raise DeviceMemoryError(
            f"out of memory: one model of layers {net.sizes} in {net.dtype.name} training {rows} rows a step needs "
            f"about {per_model / GiB:,.2f} GiB and {free / GiB:,.2f} GiB is free on {net.backend.name}; "
            "reduce batch_size= or hidden=, or use dtype='float32'")
    return min(wanted, fit)


def _bytes_per_model(net: Network, rows: int, n_state: int, shared: bool) -> int:
    """A stacked model's bytes: its parameters, gradients and optimiser state in the stack, a copy of its
    parameters outside it, and a step's activations, pre-activations and deltas (and its own batch)."""
    params = parameter_count(net.sizes) * (3 + n_state)
    activations = 4 * rows * sum(net.sizes[1:]) + (0 if shared else rows * (net.sizes[0] + net.sizes[-1]))
    return (params + activations) * net.dtype.itemsize


def _check_nets(nets: Any) -> list[Network]:
    if isinstance(nets, Network) or not hasattr(nets, "__iter__"):
        raise TypeError(f"nets must be a list of gpunet.Network; got {type(nets).__name__}")
    nets = list(nets)
    if not nets:
        raise ValueError("nets must hold at least one network; got none")
    for k, net in enumerate(nets):
        if not isinstance(net, Network):
            raise TypeError(f"nets[{k}] must be a gpunet.Network; got {type(net).__name__}")
    if len({id(net) for net in nets}) < len(nets):
        raise ValueError("nets must be distinct networks: the same one is listed twice")
    return nets


def _per_model(name: str, value: Any, K: int) -> list[Any]:
    """A setting's value for each of K models: a scalar repeated, or a sequence of K."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value] * K
    values = list(value)
    if len(values) != K:
        raise ValueError(f"{name} must be one value or one per network ({K}); got {len(values)} values")
    return values


def _optimizers(optimizer: Any, weight_decay: Any, K: int) -> list[Optimizer]:
    """One optimiser per model: made from a name (each with its weight decay), or the instances given."""
    if isinstance(optimizer, str):
        decays = [check_number("weight_decay", v, positive=False) for v in _per_model("weight_decay", weight_decay, K)]
        return [make_optimizer(optimizer, wd) for wd in decays]
    if isinstance(optimizer, Optimizer):
        raise TypeError("optimizer must be a name or one optimiser instance per network: one instance cannot hold "
                        f"{K} models' state; e.g. [gpunet.{type(optimizer).__name__}() for _ in nets]")
    instances = _per_model("optimizer", optimizer, K)
    for k, opt in enumerate(instances):
        if not isinstance(opt, Optimizer):
            raise TypeError(f"optimizer[{k}] must be a gpunet optimiser; got {type(opt).__name__}")
    if weight_decay != defaults.WEIGHT_DECAY:
        raise ValueError("weight_decay= cannot be combined with optimiser instances; give it to each instance")
    if len({id(o) for o in instances}) < K:
        raise ValueError("each network needs its own optimiser instance: the same one is listed twice")
    return instances
