"""The chapter's model in PyTorch eager: the program a PyTorch user would write instead.

Dense(hidden, relu) -> Dense(10), Glorot-uniform weights and zero biases (Keras's defaults), Keras's
RMSprop, batch 128 shuffled each epoch, cross-entropy on the logits (Keras's loss on the softmax
output, without its 1e-7 clipping). Metrics accumulate on the device and are read once per epoch.
"""

from __future__ import annotations

import time

from benchmarks._machine import cores
from benchmarks.peers._common import Metrics, load_data, parse_args

LEARNING_RATE, RHO, EPSILON = 1e-3, 0.9, 1e-7  # keras.optimizers.RMSprop() defaults


def _rmsprop_step(params: list, velocities: list) -> None:
    """Keras's RMSprop: v = rho*v + (1-rho)*g^2; p -= lr*g / sqrt(v + eps).

    Written out because torch.optim.RMSprop adds eps outside the square root,
    lr*g / (sqrt(v) + eps), which differs from Keras wherever v is tiny (the first steps, inputs
    that are rarely non-zero).
    """
    for param, velocity in zip(params, velocities, strict=True):
        grad = param.grad
        velocity.mul_(RHO).addcmul_(grad, grad, value=1 - RHO)
        param.addcdiv_(grad, velocity.add(EPSILON).sqrt_(), value=-LEARNING_RATE)


def main(argv: list[str] | None = None) -> None:
    parser_help = "The chapter's MNIST model in PyTorch eager, timed per epoch."
    args = parse_args(parser_help, argv)
    with Metrics(args.metrics_out) as metrics:
        try:
            import torch
            import torch.nn.functional as F
        except ImportError as error:
            metrics.skip(f"torch is not installed ({error})")
        if args.device == "gpu" and not torch.cuda.is_available():
            metrics.skip("PyTorch sees no CUDA GPU")
        device = torch.device("cuda" if args.device == "gpu" else "cpu")
        threads = cores()
        torch.set_num_threads(threads)
        torch.manual_seed(args.seed)

        x_train, y_train, x_test, y_test = (
            torch.from_numpy(a).to(device) for a in load_data(args.train_samples)
        )
        model = torch.nn.Sequential(
            torch.nn.Linear(x_train.shape[1], args.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(args.hidden, 10),
        ).to(device)
        for layer in (model[0], model[2]):
            torch.nn.init.xavier_uniform_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
        params = list(model.parameters())
        velocities = [torch.zeros_like(p) for p in params]

        n, batch = len(x_train), args.batch_size
        steps = -(-n // batch)
        config = {**vars(args), "threads": threads, "torch": torch.__version__}
        metrics.emit("start", system="torch", device=args.device, config=config)
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            order = torch.randperm(n, device=device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for first in range(0, n, batch):
                index = order[first : first + batch]
                images, labels = x_train[index], y_train[index]
                logits = model(images)
                loss = F.cross_entropy(logits, labels)
                for p in params:
                    p.grad = None
                loss.backward()
                with torch.no_grad():
                    _rmsprop_step(params, velocities)
                    loss_sum += loss.detach() * len(index)
                    correct += (logits.argmax(dim=1) == labels).sum()
            # .item() waits for the device, so the time covers all of the epoch's work.
            loss_value, accuracy = loss_sum.item() / n, correct.item() / n
            seconds = time.perf_counter() - start
            metrics.emit(
                "epoch",
                epoch=epoch,
                epochs=args.epochs,
                steps=steps,
                seconds=seconds,
                loss=loss_value,
                accuracy=accuracy,
            )

        start = time.perf_counter()
        with torch.no_grad():
            logits = model(x_test)
            test_loss = F.cross_entropy(logits, y_test).item()
            test_acc = (logits.argmax(dim=1) == y_test).float().mean().item()
        metrics.emit("test", loss=test_loss, accuracy=test_acc, seconds=time.perf_counter() - start)


if __name__ == "__main__":
    main()
