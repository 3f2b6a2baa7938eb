#!/usr/bin/env python3
"""quartet.torch.Linear against torch.nn.Linear in BF16, and against `quartet bench`'s figure for
the same layers, in one run on one GPU (performance.md, "Protocol").

Linear cases, as `quartet bench --only linear` defines them (src/bench/gpu_bench.cpp): the four
linear layers of a transformer block (d -> 3d, d -> d, d -> 2 ffn, ffn -> d, no bias) at the
shape sets "800M" (d 2048, ffn 5632) and "7B" (d 4096, ffn 11008), 16,384 tokens (4,096 with
--quick), BF16 activations, FP32 master weights, random normal inputs. "fwd" times the four
training forwards (each keeps what its backward needs), "fwdbwd" the four forwards then the four
backwards (dx and dw). Each is timed:

  torch/bf16-nn/<set>/<pass>   torch.nn.Linear under BF16 autocast over FP32 weights (the baseline)
  torch/<recipe>/<set>/<pass>  quartet.torch.Linear(recipe=...) under BF16 autocast (bf16 always)

with ratio_to_bf16 against the baseline and ratio_to_cpp against `quartet bench`'s row
linear/<recipe>/<set>/<pass>, which this script runs first (--quartet names the program) so that
both figures come from the same run of the same GPU. Then a training step (forward, backward,
AdamW) of a Hugging Face LlamaForCausalLM close to the project's 124m preset, in BF16 autocast
(torch/bf16-nn/llama-step) and converted with quartet.torch.convert (torch/<recipe>/llama-step);
skipped, with a message, where transformers is not installed. With --compile, the same models
again through torch.compile (torch/<layer>/llama-step-compiled, each against the compiled
baseline).

Timing: CUDA events around each repetition, after warm-ups; the median (the upper one of an even
count, as quartet bench takes) of at least 20 repetitions, continuing up to 50 until about 3 s
are spent; --reps N takes exactly N. Each repetition is queued behind a GPU sleep that outlasts
the host's issuing of it (twice the last warm-up's host time), so that the events time the
GPU's work as in a training loop, where the host runs ahead; without it the first launch's host
latency (about 0.2 ms through Python against tens of microseconds in C++) lands inside the
timed span. Gradients are dropped before each linear repetition,
untimed, as quartet bench times the layers alone. Each row also has host_ms, the median host
time to issue a repetition: near median_ms, Python bounds the case, not the GPU. Results as a table and, with --json FILE, as
{"device", "commit", "date", "torch_version", ..., "results": [rows]}.

Example (the GPU machine; docs/pytorch.md, "Benchmark"):
  python3 bench/torch_linear_bench.py --quartet build/release/quartet --json torch-bench.json
"""

import argparse
import copy
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

SHAPE_SETS = {"800M": (2048, 5632), "7B": (4096, 11008)}  # name: (d, ffn), performance.md
TOKENS, QUICK_TOKENS = 16384, 4096
BASELINE = "bf16-nn"  # torch.nn.Linear under BF16 autocast: what a PyTorch user runs today
PASSES = ("fwd", "fwdbwd")
WARMUP = 3  # the first calls create cuBLAS handles, the C layers and the allocator's blocks

# A Llama close to the project's 124m preset (bench/pytorch_reference.py's "124m": 12 layers,
# d 640, 10 heads, ffn 1792, the GPT-2 vocabulary, untied head) at its benchmark batch 8 x 1024.
# Every dimension of a converted layer and the tokens per step are multiples of 128, which
# quartet2's rotations need.
LLAMA_124M = dict(vocab_size=50257, hidden_size=640, intermediate_size=1792, num_hidden_layers=12,
                  num_attention_heads=10, num_key_value_heads=10, max_position_embeddings=1024,
                  tie_word_embeddings=False)
LLAMA_BATCH, LLAMA_SEQ = 8, 1024
QUICK_LLAMA_LAYERS, QUICK_LLAMA_BATCH, QUICK_LLAMA_SEQ = 2, 2, 256


class BenchError(Exception):
    """A reason the benchmark cannot run, said to the user as it is."""


# ---- cases (no GPU needed) ----------------------------------------------------------------


def block_linears(d, ffn):
    """(in_features, out_features) of the four linear layers of a block, as quartet bench sums them."""
    return [(d, 3 * d), (d, d), (d, 2 * ffn), (ffn, d)]


@dataclasses.dataclass(frozen=True)
class LinearCase:
    layer: str  # BASELINE or a quartet recipe
    shape_set: str
    pass_name: str  # "fwd" or "fwdbwd"
    tokens: int

    @property
    def d(self):
        return SHAPE_SETS[self.shape_set][0]

    @property
    def ffn(self):
        return SHAPE_SETS[self.shape_set][1]

    @property
    def name(self):
        return f"torch/{self.layer}/{self.shape_set}/{self.pass_name}"

    @property
    def baseline_name(self):
        return f"torch/{BASELINE}/{self.shape_set}/{self.pass_name}"

    @property
    def cpp_name(self):
        """quartet bench's row for the same layer; None for nn.Linear, which it does not run."""
        return None if self.layer == BASELINE else f"linear/{self.layer}/{self.shape_set}/{self.pass_name}"

    def linears(self):
        return block_linears(self.d, self.ffn)


def parse_names(text, what, allowed=None):
    """A comma-separated list, each entry non-empty (and in `allowed` when given)."""
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise BenchError(f"--{what} '{text}' has an empty entry")
    for n in names:
        if allowed is not None and n not in allowed:
            raise BenchError(f"--{what}: unknown entry '{n}' (expected one of {', '.join(allowed)})")
    return list(dict.fromkeys(names))


def with_bf16(recipes):
    """The recipes to time, quartet's bf16 first, as quartet bench always runs it."""
    return ["bf16"] + [r for r in recipes if r != "bf16"]


def linear_cases(sets, recipes, quick):
    """Every linear case in the order they are timed: per shape set, the baseline first, then
    each recipe (bf16 first), each in fwd then fwdbwd, as quartet bench times its recipes."""
    tokens = QUICK_TOKENS if quick else TOKENS
    return [LinearCase(layer, s, p, tokens) for s in sets for layer in [BASELINE] + with_bf16(recipes) for p in PASSES]


def repetition_limits(reps, quick):
    """(min_reps, max_reps, budget_s) as quartet bench chooses them (gpu_bench.cpp)."""
    if reps:
        return reps, reps, 0.0
    return (3, 5, 0.5) if quick else (20, 50, 3.0)


def median(times):
    """The median as quartet bench takes it: the upper middle value of the sorted times."""
    if not times:
        raise ValueError("median of no repetitions")
    return sorted(times)[len(times) // 2]


def llama_setup(quick):
    """(LlamaConfig keyword arguments, batch, seq) of the training-step case."""
    config = dict(LLAMA_124M)
    if quick:
        config.update(num_hidden_layers=QUICK_LLAMA_LAYERS, max_position_embeddings=QUICK_LLAMA_SEQ)
        return config, QUICK_LLAMA_BATCH, QUICK_LLAMA_SEQ
    return config, LLAMA_BATCH, LLAMA_SEQ


def llama_linear_shapes(config):
    """(in, out) of the layers convert replaces in a Hugging Face Llama block (q, k, v, o, gate,
    up, down; the LM head stays)."""
    d, ffn = config["hidden_size"], config["intermediate_size"]
    kv = d // config["num_attention_heads"] * config["num_key_value_heads"]
    return sorted({(d, d), (d, kv), (d, ffn), (ffn, d)})


# ---- quartet bench ------------------------------------------------------------------------


def cpp_command(binary, sets, recipes, json_path, reps, quick):
    """The `quartet bench` command line that times the same linear cases."""
    command = [binary, "bench", "--only", "linear", "--sets", ",".join(sets), "--recipes", ",".join(recipes),
               "--json", json_path]
    if quick:
        command.append("--quick")
    if reps:
        command += ["--reps", str(reps)]
    return command


def run_cpp_bench(binary, sets, recipes, reps, quick):
    """Runs quartet bench's linear cases; returns its JSON report. Raises BenchError, with the
    program's own message, when it cannot run or fails."""
    if not binary or not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        raise BenchError(f"--quartet {binary!r} is not an executable file: name the quartet program of a CUDA build "
                         "(build/release/quartet; in the GPU bundle, ./quartet)")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "cpp.json")
        command = cpp_command(binary, sets, recipes, path, reps, quick)
        print("running:", " ".join(command), flush=True)
        p = subprocess.run(command, capture_output=True, text=True)
        if p.returncode != 0:
            said = (p.stderr.strip() or p.stdout.strip() or "(no output)").splitlines()[-10:]
            raise BenchError(f"{' '.join(command)} failed (exit status {p.returncode}):\n  " + "\n  ".join(said))
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise BenchError(f"{' '.join(command)} succeeded but its JSON could not be read: {e}") from e


def cpp_rows_by_case(report):
    return {row["case"]: row for row in report.get("results", []) if "case" in row}


def check_cpp_shapes(cases, cpp_rows):
    """Both sides must time the same shapes: quartet bench's rows name their tokens, d and ffn."""
    for case in cases:
        row = cpp_rows.get(case.cpp_name)
        if row is None or "error" in row:
            continue
        theirs = {k: row.get(k) for k in ("tokens", "d", "ffn")}
        ours = {"tokens": case.tokens, "d": case.d, "ffn": case.ffn}
        if theirs != ours:
            raise BenchError(f"quartet bench timed {case.cpp_name} at {theirs}, this script at {ours}: the shape sets "
                             "have drifted apart (src/bench/gpu_bench.cpp is the source of truth)")


# ---- rows ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    median_ms: float
    reps: int
    host_ms: float = None  # the median host time to issue one repetition (None: not measured)


def ratio(numerator, denominator):
    """numerator / denominator, or None where either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def add_ratio(row, key, value):
    if value is not None:
        row[key] = value


def linear_rows(cases, timings, cpp_rows):
    """One row per case: its median, the ratio to the baseline of the same set and pass, and the
    ratio to quartet bench's median for the same layer. `timings` maps case names to a Timing, or
    to an error message for a case that failed."""
    rows = []
    for case in cases:
        t = timings.get(case.name)
        row = {"case": case.name, "tokens": case.tokens, "d": case.d, "ffn": case.ffn}
        if not isinstance(t, Timing):
            row["error"] = t if t is not None else "not timed"
            rows.append(row)
            continue
        row.update(median_ms=t.median_ms, reps=t.reps)
        if t.host_ms is not None:
            row["host_ms"] = t.host_ms
        base = timings.get(case.baseline_name)
        if isinstance(base, Timing):
            row["bf16_ms"] = base.median_ms
            add_ratio(row, "ratio_to_bf16", ratio(t.median_ms, base.median_ms))
        if case.cpp_name is not None:
            cpp = cpp_rows.get(case.cpp_name)
            if cpp is None:
                row["cpp_error"] = f"quartet bench gave no row {case.cpp_name}"
            elif "median_ms" not in cpp:
                row["cpp_error"] = str(cpp.get("error", f"{case.cpp_name} has no median_ms"))
            else:
                row["cpp_ms"] = cpp["median_ms"]
                add_ratio(row, "ratio_to_cpp", ratio(t.median_ms, cpp["median_ms"]))
        rows.append(row)
    return rows


def llama_rows(timings, config, batch, seq, compiled=False):
    """One row per model of the training-step case ("torch/<layer>/llama-step", or
    "llama-step-compiled" for the models run through torch.compile, whose ratio is to the
    compiled baseline); `timings` maps BASELINE or a recipe to a Timing or an error message (a
    skip reason for all)."""
    tokens = batch * seq
    base = timings.get(BASELINE)
    case = "llama-step-compiled" if compiled else "llama-step"
    rows = []
    for layer, t in timings.items():
        row = {"case": f"torch/{layer}/{case}", "batch": batch, "seq": seq,
               "layers": config["num_hidden_layers"], "d": config["hidden_size"], "ffn": config["intermediate_size"]}
        if isinstance(t, Timing):
            row.update(median_ms=t.median_ms, reps=t.reps, tokens_per_s=tokens / (t.median_ms * 1e-3))
            if t.host_ms is not None:
                row["host_ms"] = t.host_ms
            if isinstance(base, Timing):
                row["bf16_ms"] = base.median_ms
                add_ratio(row, "ratio_to_bf16", ratio(t.median_ms, base.median_ms))
        else:
            row["error"] = t
        rows.append(row)
    return rows


def git_describe():
    """`git describe` of this checkout, or None outside one (the GPU bundle)."""
    try:
        p = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "describe", "--always", "--dirty"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:
        return None
    return p.stdout.strip() or None


def make_report(device, rows, cpp_report, library, commit=None):
    """The JSON document: where and what was measured, then the rows. The commit is this
    checkout's (git describe) or, in a bundle without git, the quartet program's."""
    cpp_report = cpp_report or {}
    return {
        "device": device,
        "commit": commit or cpp_report.get("commit", "unknown"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "quartet_library": library,
        "cpp": {k: cpp_report.get(k) for k in ("device", "commit", "date", "quick")},
        "results": rows,
    }


def format_table(rows):
    """A line per row: case, median, the ratios (blank where not defined), or its error."""
    lines = [f"{'case':<32} {'median_ms':>10} {'host_ms':>8} {'ratio_to_bf16':>14} {'ratio_to_cpp':>13}"]
    for row in rows:
        if "median_ms" not in row:
            lines.append(f"{row['case']:<32} {'-':>10}  {row.get('error', '')}")
            continue
        cells = [f"{row[k]:.3f}" if k in row else "" for k in ("host_ms", "ratio_to_bf16", "ratio_to_cpp")]
        note = f"  (cpp: {row['cpp_error']})" if "cpp_error" in row else ""
        lines.append(f"{row['case']:<32} {row['median_ms']:>10.3f} {cells[0]:>8} {cells[1]:>14} {cells[2]:>13}{note}")
    return "\n".join(lines)


# ---- on the GPU ---------------------------------------------------------------------------


def require_cuda():
    """The benchmark times GPU kernels: without a CUDA device it says so and stops."""
    if not torch.cuda.is_available():
        raise BenchError(f"needs a CUDA device, and torch {torch.__version__} sees none "
                         f"(torch.cuda.is_available() is False; built with CUDA {torch.version.cuda}). "
                         "It times GPU kernels: run it on the GPU machine (docs/pytorch.md, \"Benchmark\")")


def require_quartet_cuda(recipes):
    """libquartet_c must have the CUDA backend and know every recipe asked for."""
    import quartet

    try:
        library = quartet.library()
    except OSError as e:
        raise BenchError(f"cannot load libquartet_c: {e}") from e
    if not library.cuda_built():
        raise BenchError(f"{library.path} was built without CUDA: set QUARTET_C_LIBRARY to a CUDA build's "
                         "libquartet_c.so (python/tools/gpu-bundle.sh)")
    unknown = [r for r in recipes if r not in library.recipes()]
    if unknown:
        raise BenchError(f"--recipes: unknown recipe(s) {', '.join(unknown)} (libquartet_c has "
                         f"{', '.join(library.recipes())})")
    return {"path": str(library.path), "version": library.version()}


# torch.cuda._sleep spins for a number of GPU clock cycles; 2e6 is 1 ms at 2 GHz, longer at the
# lower clocks of a power-limited GPU, which only lengthens an untimed wait.
_SLEEP_CYCLES_PER_MS = 2_000_000
_MAX_SLEEP_MS = 200.0


def time_ms(fn, limits, setup=None):
    """Timing of fn on the current stream: warm-ups, then CUDA events around each repetition until
    min_reps are done and about budget_s seconds are spent (at most max_reps). `setup` runs before
    each repetition, untimed. Each repetition is queued behind a GPU sleep longer than the host
    takes to issue it, so that its kernels run back to back from the start event on. The host
    time to issue a repetition is kept beside: where it nears the GPU time, the Python side, not
    the kernels, bounds the case (and where fn blocks the host, e.g. on a full launch queue, the
    sleep hides less of it)."""
    min_reps, max_reps, budget_s = limits
    warm_host_ms = []
    for _ in range(WARMUP):
        if setup is not None:
            setup()
        issued = time.perf_counter()
        fn()
        warm_host_ms.append((time.perf_counter() - issued) * 1e3)
    # The last warm-up: the first ones also create handles and grow the allocator.
    sleep_cycles = int(min(max(2 * warm_host_ms[-1], 0.5), _MAX_SLEEP_MS) * _SLEEP_CYCLES_PER_MS)
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times, host_times, spent_s = [], [], 0.0
    while len(times) < max_reps and (len(times) < min_reps or spent_s < budget_s):
        if setup is not None:
            setup()
        torch.cuda._sleep(sleep_cycles)
        start.record()
        issued = time.perf_counter()
        fn()
        host_times.append((time.perf_counter() - issued) * 1e3)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
        spent_s += times[-1] * 1e-3
    return Timing(median(times), len(times), median(host_times))


def make_layers(layer, shapes, device="cuda"):
    """The four layers, FP32 weights (bias-free, as quartet bench's), random normal."""
    import quartet.torch as qt

    layers = []
    for k, n in shapes:
        if layer == BASELINE:
            module = torch.nn.Linear(k, n, bias=False, device=device)
        else:
            module = qt.Linear(k, n, bias=False, device=device, recipe=layer)
        with torch.no_grad():
            module.weight.normal_()
        layers.append(module)
    return layers


def make_inputs(shapes, tokens, device="cuda"):
    """BF16 inputs x (which need dx, as quartet bench computes it) and output gradients dy."""
    xs = [torch.randn(tokens, k, device=device, dtype=torch.bfloat16).requires_grad_() for k, _ in shapes]
    dys = [torch.randn(tokens, n, device=device, dtype=torch.bfloat16) for _, n in shapes]
    return xs, dys


def drop_gradients(layers, xs):
    """As zero_grad(set_to_none=True) does, so that no repetition adds into the last one's."""
    for t in xs + [m.weight for m in layers]:
        t.grad = None


def block_step(layers, xs, dys, backward):
    """Gradients dropped, then block_pass."""
    drop_gradients(layers, xs)
    block_pass(layers, xs, dys, backward)


def block_pass(layers, xs, dys, backward):
    """The four training forwards under BF16 autocast (a user's region), then, with `backward`,
    the backward of all four."""
    with torch.autocast(xs[0].device.type, dtype=torch.bfloat16):
        ys = [m(x) for m, x in zip(layers, xs)]
    if backward:
        torch.autograd.backward(ys, dys)


def time_linear_cases(cases, limits):
    """Timing (or an error message) per case name, one shape set and one layer kind at a time."""
    timings = {}
    for shape_set in dict.fromkeys(c.shape_set for c in cases):
        set_cases = [c for c in cases if c.shape_set == shape_set]
        xs, dys = make_inputs(set_cases[0].linears(), set_cases[0].tokens)
        for layer in dict.fromkeys(c.layer for c in set_cases):
            try:
                layers = make_layers(layer, set_cases[0].linears())
                for case in (c for c in set_cases if c.layer == layer):
                    backward = case.pass_name == "fwdbwd"
                    # Dropping the gradients is untimed: quartet bench times the layers alone.
                    timings[case.name] = time_ms(lambda: block_pass(layers, xs, dys, backward), limits,
                                                 setup=lambda: drop_gradients(layers, xs))
                    print(f"  {case.name}: {timings[case.name].median_ms:.3f} ms", flush=True)
                check_quartet_errors()
            except (RuntimeError, ValueError) as e:  # out of memory, a shape a recipe refuses: a row says so
                for case in (c for c in set_cases if c.layer == layer and c.name not in timings):
                    timings[case.name] = f"{type(e).__name__}: {e}"
            layers = None
            torch.cuda.empty_cache()
        xs = dys = None
        torch.cuda.empty_cache()
    return timings


def check_quartet_errors():
    """A non-finite quantizer input is recorded on the GPU, not raised: ask for it."""
    import quartet.torch as qt

    qt.check_errors("cuda")


def training_step(model, optimizer, tokens):
    """One step as a user writes it: forward under BF16 autocast, backward, AdamW, gradients dropped."""
    with torch.autocast(tokens.device.type, dtype=torch.bfloat16):
        loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_training(model, tokens, limits):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    return time_ms(lambda: training_step(model, optimizer, tokens), limits)


def time_llama(recipes, quick, limits, compiled=False):
    """Timing (or an error message) per layer kind of the training-step case; a skip message for
    every kind where transformers is missing. With `compiled`, each model runs through
    torch.compile (Inductor); the warm-ups include the compilation, which is not timed."""
    config, batch, seq = llama_setup(quick)
    kinds = [BASELINE] + with_bf16(recipes)
    try:
        import transformers
    except ImportError as e:
        reason = f"skipped: transformers is not installed ({e})"
        print(f"llama-step {reason}", flush=True)
        return {k: reason for k in kinds}, config, batch, seq
    import quartet.torch as qt

    torch.manual_seed(0)
    qt.manual_seed(0)
    try:
        twin = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).to(device="cuda", dtype=torch.float32)
    except (RuntimeError, ValueError, TypeError) as e:  # a transformers that takes the config otherwise
        reason = f"the Llama could not be built: {type(e).__name__}: {e}"
        print(f"llama-step: {reason}", flush=True)
        return {k: reason for k in kinds}, config, batch, seq
    tokens = torch.randint(0, config["vocab_size"], (batch, seq), device="cuda")
    timings = {}
    for kind in kinds:
        try:
            # A copy per model, so each starts from the same untrained weights (the steps move them).
            model = copy.deepcopy(twin)
            if kind != BASELINE:
                model = qt.convert(model, recipe=kind)
            if compiled:
                model = torch.compile(model)
            timings[kind] = time_training(model, tokens, limits)
            print(f"  torch/{kind}/llama-step{'-compiled' if compiled else ''}: {timings[kind].median_ms:.3f} ms",
                  flush=True)
            check_quartet_errors()
        except (RuntimeError, ValueError) as e:  # Dynamo's and Inductor's errors are RuntimeErrors too
            timings[kind] = f"{type(e).__name__}: {e}"
        model = None
        torch.cuda.empty_cache()
    return timings, config, batch, seq


def device_description():
    p = torch.cuda.get_device_properties(torch.cuda.current_device())
    return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}"


# ---- the program --------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quartet", required=True,
                        help="the quartet program of a CUDA build, run for its `bench --only linear` figures")
    parser.add_argument("--sets", default="800M,7B", help="comma-separated shape sets: 800M, 7B (default: both)")
    parser.add_argument("--recipes", default="quartet2",
                        help="comma-separated quartet recipes (default: quartet2; bf16 is always included)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--reps", type=int, default=0,
                        help="exactly this many timed repetitions per case after the warm-ups (default: 20 to 50)")
    parser.add_argument("--quick", action="store_true",
                        help="4,096 tokens, few repetitions, a 2-layer Llama: a smoke test, not a measurement")
    parser.add_argument("--no-llama", action="store_true", help="leave out the Llama training-step case")
    parser.add_argument("--compile", action="store_true",
                        help="also time the Llama training step through torch.compile (rows llama-step-compiled; "
                             "PyTorch 2.4+, whose custom operators the compiled layer calls)")
    args = parser.parse_args(argv)
    if args.reps < 0:
        parser.error(f"--reps must be positive, got {args.reps}")
    if args.compile and args.no_llama:
        parser.error("--compile times the Llama training step, which --no-llama leaves out")
    return args


def run(args):
    sets = parse_names(args.sets, "sets", allowed=list(SHAPE_SETS))
    recipes = with_bf16(parse_names(args.recipes, "recipes"))
    require_cuda()
    library = require_quartet_cuda(recipes)
    limits = repetition_limits(args.reps, args.quick)

    cpp_report = run_cpp_bench(args.quartet, sets, recipes, args.reps, args.quick)
    cpp_rows = cpp_rows_by_case(cpp_report)
    cases = linear_cases(sets, recipes, args.quick)
    check_cpp_shapes(cases, cpp_rows)
    rows = linear_rows(cases, time_linear_cases(cases, limits), cpp_rows)
    if not args.no_llama:
        rows += llama_rows(*time_llama(recipes, args.quick, limits))
        if args.compile:
            rows += llama_rows(*time_llama(recipes, args.quick, limits, compiled=True), compiled=True)

    report = make_report(device_description(), rows, cpp_report, library, commit=git_describe())
    print(f"{report['device']}; commit {report['commit']}; torch {report['torch_version']}")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except BenchError as e:
        print(f"torch_linear_bench: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
