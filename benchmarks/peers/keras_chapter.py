"""The chapter's Keras program (Deep Learning with Python, ch. 2), timed per epoch.

Run with KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow; the model, compile settings and `fit` call
are the book's. Two changes, neither touching the work done: the data comes from jaxmnist's loader
(the same arrays as keras.datasets.mnist.load_data()), and a callback writes the metrics protocol,
with `verbose=0` (jaxmnist runs with --quiet, so neither side pays for a progress bar).
"""

from __future__ import annotations

import os
import time

from benchmarks.peers._common import Metrics, load_data, parse_args


def _device_problem(backend: str, device: str) -> str | None:
    """Why this backend cannot run on `device` here, or None when it can."""
    if device == "cpu":
        return None
    if backend == "jax":
        import jax

        return None if any(d.platform == "gpu" for d in jax.devices()) else "JAX sees no GPU"
    if backend == "tensorflow":
        import tensorflow as tf

        return None if tf.config.list_physical_devices("GPU") else "TensorFlow sees no GPU"
    return f"--device gpu is not wired for backend {backend}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args("The chapter's Keras MNIST program, timed per epoch.", argv)
    backend = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if args.device == "cpu":
        # Hide any GPU before the framework loads, so "cpu" means the CPU on every machine.
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        os.environ["JAX_PLATFORMS"] = "cpu"
    with Metrics(args.metrics_out) as metrics:
        try:
            import keras
            from keras import layers
        except ImportError as error:
            metrics.skip(f"keras on {backend} is not installed ({error})")
        if problem := _device_problem(backend, args.device):
            metrics.skip(problem)

        x_train, y_train, x_test, y_test = load_data(args.train_samples)
        # No keras.utils.set_random_seed: the chapter sets none, and it would import TensorFlow
        # into the JAX-backend process (seconds of start-up the chapter's program never pays).
        model = keras.Sequential(
            [layers.Dense(args.hidden, activation="relu"), layers.Dense(10, activation="softmax")]
        )
        model.compile(
            optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        steps = -(-len(x_train) // args.batch_size)
        config = {**vars(args), "seed": None, "backend": backend, "keras": keras.__version__}
        metrics.emit("start", system=f"keras-{backend}", device=args.device, config=config)
        model.fit(
            x_train,
            y_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            verbose=0,
            callbacks=[_epoch_timer(metrics, args.epochs, steps)],
        )
        start = time.perf_counter()
        test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
        metrics.emit("test", loss=test_loss, accuracy=test_acc, seconds=time.perf_counter() - start)


def _epoch_timer(metrics: Metrics, epochs: int, steps: int):
    """A keras Callback writing one protocol event per epoch (defined here, once keras loads)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # float() waits for the device, so the time below covers all of the epoch's work.
            loss, accuracy = float(logs["loss"]), float(logs["accuracy"])
            seconds = time.perf_counter() - self.start
            metrics.emit(
                "epoch",
                epoch=epoch + 1,
                epochs=epochs,
                steps=steps,
                seconds=seconds,
                loss=loss,
                accuracy=accuracy,
            )

    return EpochTimer()


if __name__ == "__main__":
    main()
