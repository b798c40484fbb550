"""Time pollux 0.1.0 on the seed-linear tutorial problem, for comparison with lux.

The script makes the calls recorded in the data set's reference.json, on the same data
and with the same preprocessing. It first checks that the training fit reproduces the
recorded per-cycle losses, then times the calls:

    python benches/pollux_reference.py --data DIR            # per-call medians, JSON
    python benches/pollux_reference.py --data DIR --tutorial # the four tutorial fits once

The default mode reports medians of warm calls, each series made after a first call in
the same process. The figures are the block least-squares training fit, the test-star
latent solve, and Adam per step as (t(5500 steps) - t(500 steps)) / 5000. The two Adam
lengths are timed in alternation.

`--tutorial` runs the training fit, the test-star solve, the 10000-step Adam fit and the
2000-step Adam test fit once each, in that order, in a fresh process, and prints the
time of each call. Wrap it in `/usr/bin/time -f %e` for the wall time from process start.

Needs Python >= 3.12 with pollux==0.1.0, jax==0.12.0.1, numpyro==0.22.0 and
xmmutablemap==0.2.2. With xmmutablemap 0.3.1, constructing `PolluxData` raises a TypeError.
"""

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import pollux as plx  # noqa: E402
from pollux.data import OutputData, PolluxData, ShiftScalePreprocessor  # noqa: E402

N_TRAIN = 1024
SEED = 112358
MAX_CYCLES = 50
TOL = 1e-6


def load(folder: Path) -> tuple[PolluxData, PolluxData, dict]:
    """Load the data set and return its preprocessed training and test sets.

    Each column is shifted by its mean and scaled by its population standard deviation
    over all rows, before the split (the data set's README). Also returns the largest
    differences from the preprocessing constants stored with the data set.
    """
    raw = {name: np.load(folder / f"{name}.npy") for name in ("label", "label_err", "flux", "flux_err")}
    outputs = {}
    for name in ("label", "flux"):
        prep = ShiftScalePreprocessor.from_data(raw[name])
        outputs[name] = OutputData(data=raw[name], err=raw[f"{name}_err"], preprocessor=prep)
    data = PolluxData(**outputs).preprocess()

    # Compare with the preprocessing constants stored with the data set
    checks = {}
    for name in ("label", "flux"):
        prep = outputs[name].preprocessor
        checks[f"{name}_shift_max_abs_diff"] = float(np.max(np.abs(np.asarray(prep.loc) - np.load(folder / f"{name}_shift.npy"))))
        checks[f"{name}_scale_max_abs_diff"] = float(np.max(np.abs(np.asarray(prep.scale) - np.load(folder / f"{name}_scale.npy"))))

    return data[:N_TRAIN], data[N_TRAIN:], checks


def make_model() -> plx.Lux:
    return plx.Lux(latent_size=8, label_size=2, flux_size=128, intrinsic_scatter=False)


def fit_iterative(model, train):
    return model.optimize_iterative(
        train, max_cycles=MAX_CYCLES, tol=TOL, rng_key=jax.random.PRNGKey(SEED), progress=False
    )


def solve_test(model, test, train_params):
    return model.optimize_iterative(
        PolluxData(flux=test["flux"]),
        blocks=["latents"],
        fixed_pars=model.output_pars(train_params),
        max_cycles=MAX_CYCLES,
        tol=TOL,
        progress=False,
    )


def fit_adam(model, train, num_steps):
    return model.optimize(
        train,
        rng_key=jax.random.PRNGKey(SEED),
        optimizer=numpyro.optim.Adam(1e-3),
        num_steps=num_steps,
        progress=False,
    )


def fit_adam_test(model, test, svi_params, num_steps):
    return model.optimize(
        PolluxData(flux=test["flux"]),
        rng_key=jax.random.PRNGKey(SEED),
        optimizer=numpyro.optim.Adam(1e-3),
        num_steps=num_steps,
        fixed_pars=model.output_pars(svi_params),
        names=["flux"],
        progress=False,
    )


def block(tree):
    """Wait for every array in a result, so that a timing covers all the work it started."""
    jax.block_until_ready(jax.tree_util.tree_leaves(tree))
    return tree


def timed(fn):
    t0 = time.perf_counter()
    out = block(fn())
    return time.perf_counter() - t0, out


def rmses(model, test, params, latents):
    pred = model.predict_outputs(model.output_pars(params), latents=latents)
    return {
        name: float(jnp.sqrt(jnp.mean((pred[name] - test[name].data) ** 2)))
        for name in ("label", "flux")
    }


def rel_diffs(got, want):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return None
    return (np.abs(got - want) / np.abs(want)).tolist()


def verify(model, train, test, ref, folder):
    """Run the training fit and the test solve once and compare them with reference.json.

    These are the first calls in the process, so their times include compilation.
    """
    t_fit, result = timed(lambda: fit_iterative(model, train))
    t_test, test_result = timed(lambda: solve_test(model, test, result.params))

    want = ref["iterative"]["train_loss_per_cycle"]
    diffs = rel_diffs(result.losses_per_cycle, want)
    init_diff = {}
    for name, value in initial_params(model, train).items():
        init_diff[name] = float(np.max(np.abs(value - np.load(folder / f"pollux_init_{name}.npy"))))
    fit_diff = {
        "latents": float(np.max(np.abs(np.asarray(result.params["latents"]) - np.load(folder / "pollux_fit_latents.npy")))),
        "A_label": float(np.max(np.abs(np.asarray(result.params["label"]["data"]["A"]) - np.load(folder / "pollux_fit_A_label.npy")))),
        "A_flux": float(np.max(np.abs(np.asarray(result.params["flux"]["data"]["A"]) - np.load(folder / "pollux_fit_A_flux.npy")))),
    }
    test_rmse = rmses(model, test, result.params, test_result.params["latents"])
    return {
        "cold_fit_s": t_fit,
        "cold_test_solve_s": t_test,
        "n_cycles": result.n_cycles,
        "converged": result.converged,
        "blocks": [[b.name, b.optimizer] for b in result.blocks],
        "train_loss_per_cycle": result.losses_per_cycle,
        "reference_train_loss_per_cycle": want,
        "loss_rel_diff_per_cycle": diffs,
        "losses_bitwise_equal": result.losses_per_cycle == want,
        "init_max_abs_diff": init_diff,
        "fit_max_abs_diff": fit_diff,
        "test_n_cycles": test_result.n_cycles,
        "test_loss_per_cycle": test_result.losses_per_cycle,
        "reference_test_loss_per_cycle": ref["iterative"]["test"]["loss_per_cycle"],
        "test_label_rmse": test_rmse["label"],
        "test_flux_rmse": test_rmse["flux"],
        "reference_test_label_rmse": ref["iterative"]["test"]["label_rmse"],
        "reference_test_flux_rmse": ref["iterative"]["test"]["flux_rmse"],
    }, result


def initial_params(model, train):
    """Draw the starting point of optimize_iterative, by the recipe in reference.json."""
    from functools import partial

    from numpyro.infer import Predictive

    _, init_key = jax.random.split(jax.random.PRNGKey(SEED))
    draw = Predictive(partial(model.default_numpyro_model, names=["label", "flux"]), num_samples=1)(init_key, train)
    return {
        "latents": np.asarray(draw["latents"][0]),
        "A_label": np.asarray(draw["label:A"][0]),
        "A_flux": np.asarray(draw["flux:A"][0]),
    }


def warm_median(fn, repeats):
    """Time `repeats` calls of fn after a first call, and return their median and all times.

    The first call's time is reported as `first_s`. For the training fit and the test
    solve it is not the first call in the process, because `verify` made those.
    """
    first, _ = timed(fn)
    times = [timed(fn)[0] for _ in range(repeats)]
    return {"first_s": first, "warm_median_s": statistics.median(times), "warm_s": times}


def per_call(model, train, test, ref, folder, repeats):
    check, result = verify(model, train, test, ref, folder)
    if not np.allclose(check["train_loss_per_cycle"], check["reference_train_loss_per_cycle"], rtol=1e-12, atol=0):
        print(json.dumps({"verification_failed": check}, indent=2))
        sys.exit("per-cycle losses differ from reference.json; not timing")

    fit = warm_median(lambda: fit_iterative(model, train), repeats)
    test_solve = warm_median(lambda: solve_test(model, test, result.params), repeats)
    adam = adam_pairs(model, train, repeats)
    return {
        "verification": check,
        "iterative_fit": fit,
        "test_solve": test_solve,
        **adam,
    }


def adam_pairs(model, train, repeats, short=500, long=5500):
    """Estimate Adam's time per step as (t(long) - t(short)) / (long - short), from warm calls.

    The two lengths are timed in alternation, one pair at a time, so that a slow spell
    of the machine affects both. The main figure is the difference of the two medians.
    The median of the per-pair differences is reported as a check on it.
    """
    first_short, _ = timed(lambda: fit_adam(model, train, short))
    first_long, _ = timed(lambda: fit_adam(model, train, long))
    shorts, longs = [], []
    for _ in range(repeats):
        shorts.append(timed(lambda: fit_adam(model, train, short))[0])
        longs.append(timed(lambda: fit_adam(model, train, long))[0])
    steps = long - short
    per_step = (statistics.median(longs) - statistics.median(shorts)) / steps
    return {
        f"adam_{short}_steps": {"first_s": first_short, "warm_median_s": statistics.median(shorts), "warm_s": shorts},
        f"adam_{long}_steps": {"first_s": first_long, "warm_median_s": statistics.median(longs), "warm_s": longs},
        "adam_per_step_s": per_step,
        "adam_per_step_pairwise_median_s": statistics.median((b - a) / steps for a, b in zip(shorts, longs)),
        "adam_per_call_overhead_s": statistics.median(shorts) - short * per_step,
    }


def tutorial(model, train, test, ref):
    t_imported = time.perf_counter() - T_START
    t_fit, result = timed(lambda: fit_iterative(model, train))
    t_test, test_result = timed(lambda: solve_test(model, test, result.params))
    t_adam, (svi_params, svi_results) = timed(lambda: fit_adam(model, train, 10_000))
    t_adam_test, (svi_test_params, svi_test_results) = timed(
        lambda: fit_adam_test(model, test, svi_params, 2000)
    )
    exact = rmses(model, test, result.params, test_result.params["latents"])
    adam = rmses(model, test, svi_params, svi_test_params["latents"])
    losses = np.asarray(svi_results.losses)
    steps = ref["svi"]["loss_at_steps"]
    return {
        "since_script_start_s": time.perf_counter() - T_START,
        "imports_and_data_s": t_imported,
        "iterative_fit_s": t_fit,
        "test_solve_s": t_test,
        "adam_10000_s": t_adam,
        "adam_test_2000_s": t_adam_test,
        "n_cycles": result.n_cycles,
        "final_loss": result.losses_per_cycle[-1],
        "losses_match_reference": bool(
            np.allclose(result.losses_per_cycle, ref["iterative"]["train_loss_per_cycle"], rtol=1e-12, atol=0)
        ),
        "exact_test_rmse": exact,
        "adam_final_loss": float(losses[-1]),
        "adam_loss_at_steps": {k: float(losses[int(k) - 1]) for k in steps},
        "reference_adam_loss_at_steps": steps,
        "adam_test_final_loss": float(np.asarray(svi_test_results.losses)[-1]),
        "adam_test_rmse": adam,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the seed-linear data set, with reference.json")
    parser.add_argument("--repeats", type=int, default=7, help="number of warm calls per figure")
    parser.add_argument("--tutorial", action="store_true", help="make the four tutorial fits once each and time them")
    args = parser.parse_args()

    ref = json.loads((args.data / "reference.json").read_text())
    train, test, prep_checks = load(args.data)
    model = make_model()

    env = {
        "python": sys.version.split()[0],
        "pollux": plx.__version__,
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "numpy": np.__version__,
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "preprocessing": prep_checks,
    }
    if args.tutorial:
        out = {"env": env, "tutorial": tutorial(model, train, test, ref)}
    else:
        out = {"env": env, **per_call(model, train, test, ref, args.data, args.repeats)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
