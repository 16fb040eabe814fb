"""K networks of one shape trained together: their parameters stacked, each step one set of batched array
operations for all K, in plain ``xp`` code on NumPy or CuPy.

Row ``k`` of the stacked buffers is network ``k``'s own flat buffer (gpunet/params.py's layout), so moving a
model in or out is a row copy. Activations are model-major, ``(K, rows, units)``, and each product computes,
slice by slice, the product network ``k`` computes alone. Where every model takes the same batches (one data
order), the stack is ``wide``: the first layer's weights lie side by side, ``(n_in, K, n_1)``, and the batch
``(rows, n_in)`` meets all K of them in one product; the per-sample algorithm's Gram matrix is shared too.

Every elementwise operation is the plain path's (network.py, engines/plain.py, optim.py's rules), with each
model's numbers (learning rate, decay, betas) as one value per model in the parameters' dtype, or as the
Python float all models share: each element sees the number its solo run uses, rounded the same way.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from typing import Any, Callable, Sequence

import numpy as np

from ..activations import ACTIVATIONS, FUSED, LOSSES
from ..optim import OPTIMIZERS, Optimizer
from ..params import layout, views

Array = Any
# Elements the optimiser's rule takes a call on NumPy: a few models at a time, so its passes stay in cache
# (one pass over all K models' buffers at once runs at memory speed, several times slower).
RULE_CHUNK = 1 << 16
# Host threads a NumPy stack spreads each model's products over: NumPy releases the GIL in BLAS calls, so a group
# uses every core where one model's small products use one.
THREADS = max(1, min(os.cpu_count() or 1, 8))


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(THREADS, thread_name_prefix="gpunet-stack")


def in_parallel(xp: Any, tasks: list[Callable[[], None]]) -> None:
    """Run ``tasks`` (independent: each writes its own arrays) on the host's threads on NumPy, in order on
    CuPy (one stream: the device runs them in parallel by itself)."""
    if xp is not np or THREADS == 1 or len(tasks) < 2:
        for task in tasks:
            task()
        return
    for future in [_pool().submit(task) for task in tasks]:
        future.result()


def refusal(nets: Sequence[Any], optimizers: Sequence[Optimizer]) -> str | None:
    """Why these networks and optimisers cannot be stacked, or None."""
    first = nets[0]
    for k, net in enumerate(nets):
        for what, a, b in (("sizes", net.sizes, first.sizes), ("activation", net.activation, first.activation),
                           ("output", net.output, first.output), ("loss", net.loss_name, first.loss_name),
                           ("dtype", net.dtype, first.dtype), ("backend", net.backend.name, first.backend.name)):
            if a != b:
                return f"network {k} has {what} {a}, network 0 has {b}: models trained together share it"
    kinds = {type(o) for o in optimizers}
    if len(kinds) > 1:
        return f"the optimisers must be of one kind; got {', '.join(sorted(c.__name__ for c in kinds))}"
    kind = kinds.pop()
    if kind not in OPTIMIZERS.values():
        return f"models trained together need a built-in optimiser's rule; got {kind.__name__}"
    if len({o.folds_lr for o in optimizers}) > 1:
        return "plain SGD with and without weight decay take different paths; train them in separate calls"
    if len({o.t for o in optimizers}) > 1:
        return f"the optimisers must have taken as many steps; got {[o.t for o in optimizers]}"
    return None


class Stack:
    """The parameters, gradients and optimiser state of ``nets`` (one shape, one backend), stacked: ``P[k]`` is
    network k's flat buffer. :meth:`load` copies the networks and optimisers in, :meth:`store` back out."""

    def __init__(self, nets: Sequence[Any], optimizers: Sequence[Optimizer], wide: bool = False,
                 kernel: Any = None) -> None:
        self.nets, self.optimizers, self.wide = list(nets), list(optimizers), wide
        # per_sample.ManyChunks, or None: :meth:`gram_chunk`'s rows on the per-sample kernel, one block a model
        self.kernel = kernel
        first = self.nets[0]
        self.xp, self.dtype, self.K = first.backend.xp, first.dtype, len(self.nets)
        self.kind = type(self.optimizers[0])
        xp, K = self.xp, self.K
        n_in, n_1 = first.params["W1"].shape
        # wide: the first layer's weights side by side, (n_in, K, n_1), so that a batch all models share meets
        # them in one product, (rows, n_in) @ (n_in, K n_1). Otherwise, and for the other tensors, each model's
        # tensors lie together, (K, size): its products read its own contiguous weights, as its solo run's do.
        self.layout = layout({k: p.shape for k, p in first.params.items() if k != "W1" or not wide})
        self.W1 = {part: xp.zeros((n_in, K, n_1), dtype=self.dtype) for part in ("P", "G", *self.kind.state_names)
                   } if wide else {}
        self.P = xp.zeros((K, self.layout.size), dtype=self.dtype)
        self.G = xp.zeros_like(self.P)
        self.S = {s: xp.zeros_like(self.P) for s in self.kind.state_names}
        first_layer = {"W1": self.W1["P"]} if wide else {}
        self.params = {**first_layer, **self._views(self.P)}
        self.grads = {**({"W1": self.W1["G"]} if wide else {}), **self._views(self.G)}
        self.load()

    def _views(self, flat: Array) -> dict[str, Array]:
        """Each tensor of the layout over all models: ``(K, *shape)``, a view into ``flat``."""
        return {k: flat[:, o : o + int(np.prod(s, dtype=np.int64))].reshape(self.K, *s)
                for k, (o, s) in ((k, (self.layout.offsets[k], self.layout.shapes[k])) for k in self.layout.offsets)}

    def _model(self, k: int, part: str) -> dict[str, Array]:
        """Model k's tensors of ``part`` ("P", "G" or a state name), as views into the stack."""
        flat = {"P": self.P, "G": self.G, **self.S}[part]
        return {**({"W1": self.W1[part][:, k, :]} if self.wide else {}), **views(flat[k], self.layout)}

    def load(self) -> None:
        """Copy every network's parameters and every optimiser's state into the stack. The state must be in
        today's convention (``Optimizer.upgrade_state`` with the rate of each model's next step: train_many
        does it before stacking), as the stack's steps do not upgrade it."""
        for k, (net, opt) in enumerate(zip(self.nets, self.optimizers)):
            unknown = sorted(key for key in opt.state if key.split(".", 1)[0] not in self.kind.state_names)
            if unknown:
                raise ValueError(f"model {k}'s optimiser state holds {unknown[0]!r}, not one of "
                                 f"{self.kind.__name__}'s buffers {list(self.kind.state_names)}")
            for name, view in self._model(k, "P").items():
                view[...] = net.params[name]
            for s in self.kind.state_names:
                for name, view in self._model(k, s).items():
                    held = opt.state.get(f"{s}.{name}")
                    view[...] = 0 if held is None else held

    def store(self) -> None:
        """Copy the stack back into every network's parameters and every optimiser's state (its own arrays)."""
        for k, (net, opt) in enumerate(zip(self.nets, self.optimizers)):
            for name, view in self._model(k, "P").items():
                net.params[name][...] = view
            for s in self.kind.state_names:
                for name, view in self._model(k, s).items():
                    key = f"{s}.{name}"
                    if key in opt.state:
                        opt.state[key][...] = view
                    else:
                        opt.state[key] = self.xp.ascontiguousarray(view)

    def per_model(self, values: Sequence[float], ndim: int, axis: int = 0) -> Array:
        """One value per model in the parameters' dtype, shaped to broadcast along ``axis`` of arrays of ``ndim``
        dimensions: a Python float each, rounded to the dtype as an operation with it rounds it."""
        shape = [1] * ndim
        shape[axis] = self.K
        return self.xp.asarray(np.array(values, dtype=self.dtype).reshape(shape))

    # --- the optimiser ---------------------------------------------------------------------------

    def optimizer_step(self, lrs: Sequence[float]) -> None:
        """One step of every model's optimiser from the gradients in ``G``, each at its own learning rate."""
        for opt in self.optimizers:  # their state lives in the stack, brought up to date by load()
            opt.t += 1
        nw = self.layout.n_weights
        decays = [o.weight_decay for o in self.optimizers]
        coefficients = [o.coefficients(lr) for o, lr in zip(self.optimizers, lrs)]
        W1 = self.W1
        if any(decays) and self.kind.couples_decay:  # g += wd * W, weight matrices only
            if W1:
                W1["G"] += self.per_model(decays, 3, axis=1) * W1["P"]
            self.G[:, :nw] += self.per_model(decays, 2) * self.P[:, :nw]
        if any(decays) and not self.kind.couples_decay:  # AdamW: W *= 1 - lr wd, before the rule
            shrink = [c["shrink"] for c in coefficients]
            if W1:
                W1["P"] *= self.per_model(shrink, 3, axis=1)
            self.P[:, :nw] *= self.per_model(shrink, 2)
        state, rule = self.kind.state_names, self.kind.rule
        by_key = {key: [c[key] for c in coefficients] for key in coefficients[0]}
        if W1:
            n_in, K, n_1 = W1["P"].shape
            # The first layer as rows of K n_1, each coefficient a row of each model's value n_1 times: every
            # operation of the rule runs over long contiguous rows, as the solo rule's over its own arrays.
            wide = {part: a.reshape(n_in, K * n_1) for part, a in W1.items()}
            c1 = {key: self._shared_or(values, lambda v: self.xp.asarray(
                      np.repeat(np.array(v, dtype=self.dtype), n_1).reshape(1, K * n_1)))
                  for key, values in by_key.items()}
            rows = n_in if self.xp is not np else max(1, RULE_CHUNK // (K * n_1 or 1))
            for lo in range(0, n_in, rows):  # a few input rows of every model at a time: in cache
                part = slice(lo, lo + rows)
                rule(wide["P"][part], wide["G"][part], [wide[s][part] for s in state], c1)
        c2 = {key: self._shared_or(values, lambda v: self.per_model(v, 2)) for key, values in by_key.items()}
        step = self.K if self.xp is not np else max(1, RULE_CHUNK // (self.layout.size or 1))
        for lo in range(0, self.K, step):
            part = slice(lo, lo + step)
            rule(self.P[part], self.G[part], [self.S[s][part] for s in state],
                 {k: v[part] if hasattr(v, "shape") else v for k, v in c2.items()})

    @staticmethod
    def _shared_or(values: list[float], per_model: Callable[[list[float]], Array]) -> Any:
        """A coefficient every model shares as the Python float it is (the rule's fastest form, and the solo
        rule's), else ``per_model(values)``."""
        return values[0] if len(set(values)) == 1 else per_model(values)

    def first_layer(self, X: Array) -> Array:
        """Z1 = X W1 for every model, ``(K, rows, n_1)``: one product for a shared ``X`` ``(rows, n_in)`` where
        the stack is ``wide``, else one a model (on the host's threads)."""
        xp, W1, K = self.xp, self.params["W1"], self.K
        if X.ndim == 2 and self.wide:
            n_in, _, n_1 = W1.shape
            wide = xp.matmul(X, W1.reshape(n_in, K * n_1))  # (rows, n_in) @ (n_in, K n_1)
            return xp.ascontiguousarray(wide.reshape(X.shape[0], K, n_1).transpose(1, 0, 2))
        Z = xp.empty((K, X.shape[-2], W1.shape[-1]), dtype=self.dtype)

        def product(k: int) -> None:
            xp.matmul(X if X.ndim == 2 else X[k], self._first(W1, k), out=Z[k])

        in_parallel(xp, [partial(product, k) for k in range(K)])
        return Z

    def _first(self, W: Array, k: int) -> Array:
        """Model k's first-layer tensor ``(n_in, n_1)`` of a stacked one (its weights or their gradients)."""
        return W[:, k, :] if self.wide else W[k]

    def first_layer_product(self, X: Array, D: Array, out: Array) -> Array:
        """X^T D for every model into ``out`` (stacked as the first layer's weights): the first layer's weight
        gradients (D: each model's deltas ``(K, rows, n_1)``); one product for a shared ``X`` where ``wide``."""
        xp, K = self.xp, self.K
        if X.ndim == 2 and self.wide:
            n_in, _, n_1 = out.shape
            wide = xp.ascontiguousarray(D.transpose(1, 0, 2)).reshape(X.shape[0], K * n_1)
            xp.matmul(X.T, wide, out=out.reshape(n_in, K * n_1))
            return out

        def product(k: int) -> None:
            Xk = X if X.ndim == 2 else X[k]
            if self.wide:
                out[:, k, :] = xp.matmul(Xk.T, D[k])
            else:
                xp.matmul(Xk.T, D[k], out=out[k])

        in_parallel(xp, [partial(product, k) for k in range(K)])
        return out

    # --- the algorithm: network.py's forward and backward, K models at once ----------------------

    def dropout_masks(self, rows: int, per_sample: bool = False) -> list[Array | None]:
        """Each layer input's masks for every model, ``(K, rows, units)`` (ones for a model that drops nothing
        there), None where no model drops: each model's ``Network.dropout_masks`` for its own step count."""
        if not any(net.has_dropout for net in self.nets):
            return [None] * self.nets[0].n_layers
        each = [net.dropout_masks(opt.t, rows, per_sample) if net.has_dropout else [None] * net.n_layers
                for net, opt in zip(self.nets, self.optimizers)]
        masks: list[Array | None] = []
        for layer, width in enumerate(self.nets[0].sizes[:-1]):
            got = [m[layer] for m in each]
            if all(m is None for m in got):
                masks.append(None)
                continue
            ones = self.xp.ones((rows, width), dtype=self.dtype)
            masks.append(self.xp.stack([ones if m is None else m for m in got]))
        return masks

    def _activate(self, f: Any, Z: Array) -> Array:
        """``f`` over ``(K, rows, units)``, as the plain path applies it to each model's ``(rows, units)``."""
        return f.forward(Z.reshape(-1, Z.shape[-1])).reshape(Z.shape)

    def forward(self, X: Array, masks: list[Array | None]) -> tuple[list[Array], list[Array], Array, list[Array]]:
        """network.py's ``_forward_dropped`` for every model: [X, A1, ..., AL] (``(K, rows, units)``; X as
        given, ``(rows, n_in)`` when shared), each layer's input as dropped, the logits ZL and the
        pre-activations the derivatives need."""
        net, xp = self.nets[0], self.xp
        As, Ins, Zs, L = [X], [], [None], net.n_layers
        for i in range(1, L + 1):
            Ins.append(As[-1] if masks[i - 1] is None else As[-1] * masks[i - 1])  # inverted dropout
            if i == 1:
                Z = self.first_layer(Ins[-1])
            else:
                Z = xp.matmul(Ins[-1], self.params[f"W{i}"])  # (K, rows, n_{i-1}) @ (K, n_{i-1}, n_i)
            Z += self.params[f"b{i}"][:, None, :]
            f = ACTIVATIONS[net.activation if i < L else net.output]
            Zs.append(None if f.from_output else Z)
            As.append(self._activate(f, Z))
        return As, Ins, Z, Zs

    def per_sample_loss(self, Z: Array, Y: Array, T: Array) -> Array:
        """Each model's loss of each row, ``(K, rows)``."""
        net, K = self.nets[0], self.K
        T = self.xp.broadcast_to(T, Y.shape).reshape(-1, Y.shape[-1])
        return net.per_sample_loss(Z.reshape(-1, Z.shape[-1]), Y.reshape(-1, Y.shape[-1]), T).reshape(K, -1)

    def backward(self, As: list[Array], Ins: list[Array], Zs: list[Array], T: Array, scales: Sequence[float],
                 masks: list[Array | None]) -> None:
        """network.py's ``_backward`` for every model into ``G``: gradients of model k's mean loss times
        ``scales[k]``."""
        net, xp, L = self.nets[0], self.xp, self.nets[0].n_layers
        Y, n = As[-1], As[-1].shape[1]
        # the plain path's Python float scale / n, per model
        scale = self._shared_or([s / n for s in scales], lambda v: self.per_model(v, 3))
        fused = FUSED.get((net.output, net.loss_name))
        Tb = xp.broadcast_to(T, Y.shape)
        if fused:
            delta = self._rows(fused.delta, Y, Tb) * scale
        else:
            out = ACTIVATIONS[net.output]
            dY = self._rows(LOSSES[net.loss_name].grad, Y, Tb) * scale
            delta = self._rows(out.backward, Y if out.from_output else Zs[L], dY)
        hidden = ACTIVATIONS[net.activation]
        for i in range(L, 0, -1):
            A = Ins[i - 1]  # the layer's input as dropped
            if i == 1:
                self.first_layer_product(A, delta, self.grads["W1"])
            else:
                xp.matmul(xp.swapaxes(A, -1, -2), delta, out=self.grads[f"W{i}"])  # dW_i = A^T delta, per model
            delta.sum(axis=1, out=self.grads[f"b{i}"])
            if i > 1:
                dA = xp.matmul(delta, xp.swapaxes(self.params[f"W{i}"], -1, -2))
                if masks[i - 1] is not None:  # d(A * mask)/dA = mask
                    dA *= masks[i - 1]
                delta = self._rows(hidden.backward, As[i - 1] if hidden.from_output else Zs[i - 1], dA)

    @staticmethod
    def _rows(f: Any, A: Array, B: Array) -> Array:
        """``f(A, B)`` on ``(K, rows, units)`` arrays, as the plain path calls it on each model's rows."""
        return f(A.reshape(-1, A.shape[-1]), B.reshape(-1, B.shape[-1])).reshape(A.shape)

    # --- steps and epochs ------------------------------------------------------------------------

    def train_step(self, X: Array, T: Array, lrs: Sequence[float], folds_lr: bool) -> Array:
        """``Network.train_step_unchecked`` for every model: one step on the rows ``X`` (shared ``(rows, n_in)``
        or ``(K, rows, n_in)``) with targets ``T``; returns each model's summed loss before it, ``(K,)``."""
        masks = self.dropout_masks(X.shape[-2])  # keyed by each model's step count before this step
        As, Ins, Z, Zs = self.forward(X, masks)
        loss = self.per_sample_loss(Z, As[-1], T).sum(axis=1)
        if folds_lr:  # plain SGD: lr folded into the gradients, p -= lr g in one pass
            self.backward(As, Ins, Zs, T, lrs, masks)
            for opt in self.optimizers:
                opt.count(1)
            self.P -= self.G
            if self.wide:
                self.W1["P"] -= self.W1["G"]
        else:
            self.backward(As, Ins, Zs, T, [1.0] * self.K, masks)
            self.optimizer_step(lrs)
        return loss

    def gram_chunk(self, X: Array, T: Array, lrs: Sequence[float]) -> Array:
        """engines/plain.py's ``gram_chunk`` for every model: per-sample plain SGD on each row of the chunk in
        order; returns each model's summed loss, ``(K,)``. A shared chunk ``(rows, n_in)`` has one Gram matrix."""
        xp, P = self.xp, self.params
        lrs = list(lrs)
        lr2 = self._shared_or(lrs, lambda v: self.per_model(v, 2))
        lr3 = self._shared_or(lrs, lambda v: self.per_model(v, 3))
        C = X.shape[-2]
        masks = self.dropout_masks(C, per_sample=True)  # row t is step t + t of each model, a batch of one
        X_in = X if masks[0] is None else X * masks[0]  # the inputs as layer 1 sees them: in Z1, G and W1's update
        Z1 = self.first_layer(X_in)
        Z1 += P["b1"][:, None, :]  # (K, C, n_1): every row's x_t W1 + b1, as W1 is now
        G = xp.matmul(X_in, xp.swapaxes(X_in, -1, -2))  # x_t . x_k: (C, C) shared, else (K, C, C)
        G += 1
        G = G * lr3  # lr (X X^T + 1): (K, C, C) for each model's lr, or (C, C) for one lr (and one batch)
        G = G if G.ndim == 3 else G[None]  # (1, C, C): broadcast over the models
        Tk = xp.broadcast_to(T, (self.K, C, T.shape[-1]))
        if self.kernel is not None:  # _rows_in_order's loop, one block a model (one hidden layer, the kernel's)
            D, ZL, Y = self.kernel.run(Z1, G, T, P["W2"], P["b2"], self.P.shape[1], lrs, self.optimizers[0].t)
        else:
            D, ZL, Y = self._rows_in_order(X, X_in, Z1, G, Tk, masks, lr2, lr3)
        lr_1 = self._shared_or(lrs, lambda v: self.per_model(v, 3, axis=1 if self.wide else 0))
        P["W1"] -= lr_1 * self.first_layer_product(X_in, D, xp.empty_like(P["W1"]))
        P["b1"] -= lr2 * D.sum(axis=1)
        for opt in self.optimizers:
            opt.count(C)
        return self.per_sample_loss(ZL, Y, T if T.ndim == 3 else Tk).sum(axis=1)

    def _rows_in_order(self, X: Array, X_in: Array, Z1: Array, G: Array, Tk: Array, masks: list[Array | None],
                       lr2: Any, lr3: Any) -> tuple[Array, Array, Array]:
        """:meth:`gram_chunk`'s rows t = 0, 1, ... in order, every model at once: each row's forward pass from its
        first layer as the earlier rows left it, its step on the later layers; returns (D, ZL, Y), each model's
        delta1, logits and outputs of each row before its step."""
        net, xp, L, P = self.nets[0], self.xp, self.nets[0].n_layers, self.params
        hidden, out = ACTIVATIONS[net.activation], ACTIVATIONS[net.output]
        fused = FUSED.get((net.output, net.loss_name))
        C = Z1.shape[1]
        D = xp.empty_like(Z1)
        ZL = xp.empty((self.K, C, net.sizes[-1]), dtype=self.dtype)
        Y = xp.empty_like(ZL)
        for t in range(C):
            z = Z1[:, t : t + 1] - xp.matmul(G[:, t : t + 1, :t], D[:, :t])  # (K, 1, n_1)
            As, Ins, Zs = [X[..., t : t + 1, :]], [X_in[..., t : t + 1, :]], [None]
            for i in range(1, L + 1):
                if i > 1:
                    m = masks[i - 1]
                    Ins.append(As[-1] if m is None else As[-1] * m[:, t : t + 1])
                    z = xp.matmul(Ins[-1], P[f"W{i}"])
                    z += P[f"b{i}"][:, None, :]
                Zs.append(z)
                As.append(self._activate(out if i == L else hidden, z))
            ZL[:, t], Y[:, t] = z[:, 0], As[-1][:, 0]
            Tt = Tk[:, t : t + 1]
            if fused:
                delta = self._rows(fused.delta, As[-1], Tt)
            else:
                delta = self._rows(out.backward, As[-1] if out.from_output else z,
                                   self._rows(LOSSES[net.loss_name].grad, As[-1], Tt))
            for i in range(L, 1, -1):
                dA = xp.matmul(delta, xp.swapaxes(P[f"W{i}"], -1, -2))  # with W_i before its update
                # (n_{i-1}, 1) @ (1, n_i) per model: an outer product, each entry one multiplication, so the
                # broadcast product is the solo run's to the bit, in one call for every model
                P[f"W{i}"] -= lr3 * (xp.swapaxes(Ins[i - 1], -1, -2) * delta)
                P[f"b{i}"] -= lr2 * delta[:, 0]
                m = masks[i - 1]
                if m is not None:  # d(A * mask)/dA = mask
                    dA *= m[:, t : t + 1]
                delta = self._rows(hidden.backward, As[i - 1] if hidden.from_output else Zs[i - 1], dA)
            D[:, t] = delta[:, 0]
        return D, ZL, Y

    def run_epoch(self, X: Array, T: Array, order: Array, lrs: Sequence[float], rows: int, per_sample: bool,
                  loss_sums: Array, start: int = 0, data_of: Array | None = None) -> None:
        """Train every model on its rows of the epoch: ``order`` is ``(n,)`` when all models share it (their
        batches are one), else ``(K, n)``; ``rows`` a step; each model's losses are added into ``loss_sums``.
        With ``data_of`` ``(K,)``, ``X`` and ``T`` hold several training sets, ``(S, n, width)``, and model k
        takes its rows from set ``data_of[k]`` (augmented images, one set a data seed)."""
        xp, n, folds = self.xp, order.shape[-1], self.optimizers[0].folds_lr
        for lo in range(start, n, rows):
            idx = order[..., lo : lo + rows]
            if data_of is None:
                Xb, Tb = xp.take(X, idx, axis=0), xp.take(T, idx, axis=0)
            elif idx.ndim == 1:  # one order: one set
                Xb, Tb = xp.take(X[0], idx, axis=0), xp.take(T[0], idx, axis=0)
            else:
                Xb, Tb = X[data_of[:, None], idx], T[data_of[:, None], idx]
            loss_sums += self.gram_chunk(Xb, Tb, lrs) if per_sample else self.train_step(Xb, Tb, lrs, folds)
