"""The default settings, defined once: ``Network``, ``train`` and the command line's ``TrainConfig`` all read them.

They are a network that learns out of the box (ReLU hidden layers, a softmax output
trained on cross-entropy, He initialisation, Adam on a cosine schedule, batches of 32): on the 8x8
digits, ``train(Network([64, 100, 10]), X, y)`` reaches over 95% test accuracy, and ``gpunet train``'s
784-1024-10 about 90% on held-out MNIST-format data in 10 epochs (docs/accuracy.md, "The defaults"). The original
article's network (sigmoid layers, squared loss, its initialisation) is
:meth:`gpunet.Network.article`, whose settings are ``ARTICLE``.
"""

from __future__ import annotations

# The network: Network(sizes, activation=ACTIVATION, ...)
HIDDEN = (1024,)  # the command line's hidden layer sizes (Network takes all its sizes from the caller)
ACTIVATION = "relu"
OUTPUT = "softmax"
LOSS = "cross-entropy"
INIT = "he"
SEED = 0
DTYPE = "float32"

# The training: train(net, X, y, optimizer=OPTIMIZER, ...)
OPTIMIZER = "adam"
LR = 0.001
# Half a cosine from lr down towards 0 over the epochs asked for (gpunet/schedules.py): the last epochs settle
# where a constant rate leaves each epoch's accuracy a point up or down, on 1,437 rows as on 60,000 (a fixed
# exponential decay is either too fast for the one or too slow for the other). Giving lr_decay picks the
# exponential schedule instead, lr_step the step one (schedules.schedule_named).
LR_SCHEDULE = "cosine"
LR_DECAY = 1.0  # the exponential schedule's factor when lr_decay is not given: epoch e trains at lr * lr_decay ** (e - 1)
EPOCHS = 30
BATCH_SIZE = 32
WEIGHT_DECAY = 0.0
EARLY_STOPPING_VALIDATION = 0.1  # the share of training rows held out when early stopping has no validation data

# The original article's network: sigmoid layers, squared loss on 0.01/0.99 targets, its initialisation.
ARTICLE = {"activation": "sigmoid", "output": "sigmoid", "loss": "squared", "init": "article"}
