"""Data-parallel training on 4 simulated CPU devices, reported as JSON for test_mesh.py.

Run in its own process: the device count must be set before jax starts its CPU backend, and it
changes the last bits of single-device results, so the rest of the suite keeps one device.
Usage: python tests/_mesh_run.py CHECKPOINT_ROOT
"""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)

import numpy as np  # noqa: E402
from _synthetic import synthetic_mnist  # noqa: E402

from jaxmnist.config import PRESETS  # noqa: E402
from jaxmnist.devices import data_mesh  # noqa: E402
from jaxmnist.engine import ScanLoop, fit  # noqa: E402
from jaxmnist.errors import DeviceError  # noqa: E402
from jaxmnist.model import chapter_model  # noqa: E402
from jaxmnist.optim import make_optimizer  # noqa: E402
from jaxmnist.runner import train_and_evaluate  # noqa: E402
from jaxmnist.step import init_state, make_train_step  # noqa: E402

# 520 images in batches of 128: the last batch has 8, and 128 does not divide by 3.
DATA = synthetic_mnist(520, 96)
CONFIG = PRESETS["keras"].replace(epochs=2, hidden=64)


def run(devices):
    spec = chapter_model(CONFIG.hidden)
    optimizer = make_optimizer(CONFIG.optimizer, CONFIG.learning_rate)
    init_key, data_key = jax.random.split(jax.random.key(0))
    state = init_state(init_key, spec, CONFIG.init, optimizer)
    mesh = None if devices is None else data_mesh("cpu", devices)
    state, results = fit(state, *DATA[0], config=CONFIG, data_key=data_key, mesh=mesh)
    params = [np.asarray(leaf) for leaf in jax.tree.leaves(state.params)]
    return params, [r.batch_losses for r in results]


def difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def compiled_step_text(devices):
    spec = chapter_model(CONFIG.hidden)
    optimizer = make_optimizer(CONFIG.optimizer, CONFIG.learning_rate)
    step = make_train_step(spec, optimizer)
    mesh = data_mesh("cpu", devices)
    images, labels = DATA[0][0].reshape(520, -1), DATA[0][1].astype(np.int32)
    loop = ScanLoop(step, images, labels, CONFIG, None, mesh)
    state = jax.device_put(
        init_state(jax.random.key(0), spec, CONFIG.init, optimizer),
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
    )
    order = loop.put_order(loop.order(jax.random.key(1), 0))
    lowered = loop.run_fn.lower(state, *loop.data, order, 0, num_steps=2)
    return lowered.compile().as_text()


def resumed(root, first, second):
    """Epoch 1 on `first` devices, then epoch 2 resumed on `second`."""
    directory = f"{root}/{first}-{second}"
    for devices, epochs, resume in ((first, 1, False), (second, 2, True)):
        mesh = None if devices == 1 else data_mesh("cpu", devices)
        result = train_and_evaluate(
            CONFIG.replace(epochs=epochs), DATA, checkpoint_dir=directory, resume=resume, mesh=mesh
        )
    return [np.asarray(leaf) for leaf in jax.tree.leaves(result.state.params)], result


if __name__ == "__main__":
    reference, reference_losses = run(None)
    report = {}
    for devices in (1, 2, 3, 4):
        params, losses = run(devices)
        report[f"params_{devices}"] = difference(params, reference)
        report[f"losses_{devices}"] = float(np.max(np.abs(np.subtract(losses, reference_losses))))
    again, _ = run(4)
    report["repeat_4"] = difference(again, run(4)[0])
    text = compiled_step_text(4)
    report["gradient_all_reduce"] = any(
        "all-reduce(" in line and "f32[784,64]" in line for line in text.splitlines()
    )
    report["per_device_product"] = "f32[32,784]" in text
    report["whole_batch_product"] = "f32[128,784]" in text
    whole = train_and_evaluate(CONFIG, DATA)
    report["test_1"] = whole.test_accuracy
    report["test_4"] = train_and_evaluate(CONFIG, DATA, mesh=data_mesh("cpu", 4)).test_accuracy
    for first, second in ((1, 4), (4, 1)):
        params, result = resumed(sys.argv[1], first, second)
        report[f"resume_{first}_{second}"] = difference(params, reference)
        report[f"resume_{first}_{second}_epochs"] = [h["epoch"] for h in result.history]
    try:
        data_mesh("cpu", 5)
    except DeviceError as error:
        report["too_many"] = str(error)
    print(json.dumps(report))
