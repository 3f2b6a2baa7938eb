// The GPU benchmark suite behind `quartet bench` (performance.md, "Protocol"): every case
// against a ceiling measured in the same run (device-to-device copy for the quantizers, cuBLAS
// BF16 for the GEMMs and linear layers). Medians of repeated runs after a warm-up, random
// inputs, several inputs rotated so no case runs from L2.
#include "bench/gpu_bench.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>

#include "bench/gpu_clocks.h"
#include "bench/ops_bench.h"
#include "bench/spin_length.h"
#include "bench/train_bench.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"
#include "quartet/nn/linear.h"

namespace quartet {

namespace {

void sync() {
  if (cudaDeviceSynchronize() != cudaSuccess) throw Error("benchmark: the GPU reported an error");
}

// Median milliseconds of each of `fns` on the device, timed with CUDA events around each
// repetition: two warm-ups, then repetitions until both min_reps are done and about `budget_s`
// seconds are spent (at most max_reps). Each repetition is queued behind a GPU spin that outlasts
// the host's queueing of it (cuda_spin), so that the events time the device's work back to back,
// as in a training loop where the host runs ahead, and not the latency of the first launches.
// Several cases run interleaved, in alternating order, so that a drift of the GPU's clocks over
// the run (power, temperature) weighs on them alike; that suits cases of similar power draw (a
// GEMM and its emulation), not a whole recipe against BF16 (see the linear-layer cases).
std::vector<double> interleaved_median_ms(const std::vector<std::function<void(int)>>& fns, int min_reps, int max_reps,
                                          double budget_s) {
  for (const auto& fn : fns) fn(0);
  sync();
  std::vector<double> spin_ms;
  for (const auto& fn : fns) {
    spin_ms.push_back(spin_ms_for_queueing([&] { fn(0); }));
    sync();
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  if (cudaEventCreate(&start) != cudaSuccess || cudaEventCreate(&stop) != cudaSuccess) {
    throw Error("benchmark: cannot create CUDA events");
  }
  std::vector<std::vector<double>> times(fns.size());
  double spent = 0;
  for (int i = 0; i < max_reps && (i < min_reps || spent < budget_s); ++i) {
    for (std::size_t j = 0; j < fns.size(); ++j) {
      const std::size_t f = i % 2 ? fns.size() - 1 - j : j;
      cuda_spin(spin_ms[f]);
      cudaEventRecord(start, nullptr);
      fns[f](i + 1);
      cudaEventRecord(stop, nullptr);
      sync();
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      times[f].push_back(ms);
      spent += ms * 1e-3;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::vector<double> medians;
  for (auto& t : times) {
    std::sort(t.begin(), t.end());
    medians.push_back(t[t.size() / 2]);
  }
  return medians;
}

double median_ms(const std::function<void(int)>& fn, int min_reps, int max_reps, double budget_s) {
  return interleaved_median_ms({fn}, min_reps, max_reps, budget_s)[0];
}

std::vector<double> random_values(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& x : v) x = normal(gen);
  return v;
}

struct ShapeSet {
  std::string name;
  std::int64_t d, ffn;
};

}  // namespace

nlohmann::json run_gpu_benchmarks(const GpuBenchOptions& o, const std::function<void(const std::string&)>& progress) {
  if (!cuda_available()) throw Error("bench: " + cuda_device_description());
  auto be = make_cuda_backend();
  nlohmann::json rows = nlohmann::json::array();
  // Each row records the clocks when its case has finished (still under its load).
  const GpuClockReader clocks;
  const auto note = [&](nlohmann::json row) {
    if (const auto c = clocks.read()) {
      row["sm_clock_mhz"] = c->sm_mhz;
      row["memory_clock_mhz"] = c->memory_mhz;
    }
    rows.push_back(row);
    if (progress) progress(row.dump());
  };
  const int min_reps = o.reps > 0 ? o.reps : (o.quick ? 3 : 20), max_reps = o.reps > 0 ? o.reps : (o.quick ? 5 : 50);
  const double budget = o.quick ? 0.5 : 3.0;

  // Copy ceiling: bytes read + written per second.
  const std::int64_t copy_n = std::int64_t{1} << 28;  // 512 MiB of bf16
  Tensor src = be->empty({copy_n}, DType::bf16), dst = be->empty({copy_n}, DType::bf16);
  be->fill(src, 1.0);
  const double copy_ms = median_ms([&](int) { be->copy(dst, src); }, min_reps, max_reps, budget);
  const double copy_tbps = 2.0 * static_cast<double>(copy_n) * 2.0 / (copy_ms * 1e-3) / 1e12;
  note({{"case", "copy/device_to_device"}, {"median_ms", copy_ms}, {"tbps", copy_tbps}});

  if (o.wants("quantize")) {
    // Quantizers: a bf16 [16384, 8192] input (268 MB, far above L2), bytes = 2 in + 0.5625 out.
    const std::int64_t qr = o.quick ? 4096 : 16384, qc = 8192;
    std::vector<Tensor> inputs;
    for (int i = 0; i < 2; ++i) {
      inputs.push_back(be->empty({qr, qc}, DType::bf16));
      be->upload(inputs.back(), random_values(qr * qc, 100 + static_cast<std::uint64_t>(i)));
    }
    const double quant_bytes = static_cast<double>(qr * qc) * (2.0 + 0.5 + 1.0 / 16.0);
    const struct {
      QuantizerKind kind;
      int rotation;
    } quantizers[] = {{QuantizerKind::rtn, 0},           {QuantizerKind::four_over_six, 0}, {QuantizerKind::sr, 0},
                      {QuantizerKind::rtn, 16},          {QuantizerKind::sr, 16},           {QuantizerKind::sr, 32},
                      {QuantizerKind::ms_eden_g16, 128}, {QuantizerKind::ms_eden_g128, 128}, {QuantizerKind::mxfp4_quest, 32},
                      {QuantizerKind::mxfp4_rtn, 32}};
    // The quantizers alone (no BF16 copy for an emulated GEMM), then the forward ones as the
    // linear layer runs them on Hopper, with the BF16 operand written too (2 more bytes).
    auto alone = make_cuda_backend(CudaBackendOptions{.fused_dequantize = false});
    for (const auto& q : quantizers) {
      const QuantizerSpec spec = QuantizerSpec::defaults(q.kind);
      const Rotation rot = q.rotation ? Rotation::random(q.rotation, {1, 2, 3}) : Rotation::none();
      for (bool transpose : {false, true}) {
        const double ms = median_ms(
            [&](int i) { alone->quantize(inputs[static_cast<std::size_t>(i % 2)], transpose, spec, rot, {1, 1, static_cast<std::uint32_t>(i)}); },
            min_reps, max_reps, budget);
        const double tbps = quant_bytes / (ms * 1e-3) / 1e12;
        note({{"case", fmt::format("quantize/{}{}/{}", quantizer_name(q.kind), q.rotation ? fmt::format("+rht{}", q.rotation) : "",
                                   transpose ? "transposed" : "rowwise")},
              {"median_ms", ms}, {"tbps", tbps}, {"copy_tbps", copy_tbps}, {"ratio_to_copy", tbps / copy_tbps},
              {"rotation", q.rotation}, {"shape", {qr, qc}}, {"bytes_per_element", 2.5625}});
      }
    }
    {
      // quartet2's output gradient both ways, E (dX) and E^T (dW): one operation that reads the
      // input once against the two calls it stands for, interleaved (the same work either way).
      // Bytes: 2 read once (twice for the calls) and 2 x 0.5625 written, per element.
      const QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::ms_eden_g16);
      const Rotation rot = Rotation::random(128, {1, 2, 3});
      const auto x = [&](int i) -> const Tensor& { return inputs[static_cast<std::size_t>(i % 2)]; };
      const auto rng = [](std::uint32_t stream, int i) { return RandomContext{1, stream, static_cast<std::uint32_t>(i)}; };
      const std::vector<double> ms = interleaved_median_ms(
          {[&](int i) {
             setenv("QUARTET_QUANTIZE_BOTH_WAYS", "fused", 1);  // the one-pass kernel (opt-in)
             alone->quantize_both_ways(x(i), spec, rot, rng(1, i), spec, rot, rng(4, i));
             unsetenv("QUARTET_QUANTIZE_BOTH_WAYS");
           },
           [&](int i) {
             alone->quantize(x(i), false, spec, rot, rng(1, i));
             alone->quantize(x(i), true, spec, rot, rng(4, i));
           }},
          min_reps, max_reps, budget);
      const double fused_bytes = static_cast<double>(qr * qc) * (2.0 + 2.0 * (0.5 + 1.0 / 16.0));
      const double separate_bytes = static_cast<double>(qr * qc) * 2.0 * (2.0 + 0.5 + 1.0 / 16.0);
      note({{"case", "quantize/ms_eden_g16+rht128/both_ways"}, {"median_ms", ms[0]},
            {"tbps", fused_bytes / (ms[0] * 1e-3) / 1e12}, {"copy_tbps", copy_tbps},
            {"ratio_to_copy", fused_bytes / (ms[0] * 1e-3) / 1e12 / copy_tbps}, {"speedup_over_two_calls", ms[1] / ms[0]},
            {"shape", {qr, qc}}, {"bytes_per_element", 3.125}});
      note({{"case", "quantize/ms_eden_g16+rht128/rowwise_then_transposed"}, {"median_ms", ms[1]},
            {"tbps", separate_bytes / (ms[1] * 1e-3) / 1e12}, {"copy_tbps", copy_tbps},
            {"ratio_to_copy", separate_bytes / (ms[1] * 1e-3) / 1e12 / copy_tbps}, {"shape", {qr, qc}},
            {"bytes_per_element", 5.125}});
    }
    if (be->name().find("emulation") != std::string::npos) {
      const std::pair<QuantizerKind, int> with_bf16[] = {
          {QuantizerKind::rtn, 0}, {QuantizerKind::four_over_six, 0}, {QuantizerKind::ms_eden_g16, 128}};
      for (auto [kind, rotation] : with_bf16) {
        const QuantizerSpec spec = QuantizerSpec::defaults(kind);
        const Rotation rot = rotation ? Rotation::random(rotation, {1, 2, 3}) : Rotation::none();
        const double ms = median_ms(
            [&](int i) { be->quantize(inputs[static_cast<std::size_t>(i % 2)], false, spec, rot, {1, 1, static_cast<std::uint32_t>(i)}); },
            min_reps, max_reps, budget);
        const double tbps = static_cast<double>(qr * qc) * 4.5625 / (ms * 1e-3) / 1e12;
        note({{"case", fmt::format("quantize/{}{}/rowwise_with_bf16", quantizer_name(kind), rotation ? fmt::format("+rht{}", rotation) : "")},
              {"median_ms", ms}, {"tbps", tbps},
              {"copy_tbps", copy_tbps}, {"ratio_to_copy", tbps / copy_tbps}, {"shape", {qr, qc}}, {"bytes_per_element", 4.5625}});
      }
    }
    // Requant: FP4 in, FP4 out (0.5625 bytes per element each way).
    const struct {
      QuantizerKind forward, backward;
      int rotation;
    } requants[] = {{QuantizerKind::four_over_six, QuantizerKind::ms_eden_g16, 128}, {QuantizerKind::rtn, QuantizerKind::sr, 32}};
    for (const auto& rq : requants) {
      const QTensor q0 = alone->quantize(inputs[0], false, QuantizerSpec::defaults(rq.forward), Rotation::none(), {});
      const QTensor q1 = alone->quantize(inputs[1], false, QuantizerSpec::defaults(rq.forward), Rotation::none(), {});
      const QuantizerSpec bwd = QuantizerSpec::defaults(rq.backward);
      const Rotation rot = Rotation::random(rq.rotation, {1, 2, 3});
      const double ms = median_ms(
          [&](int i) { alone->requantize_transposed(i % 2 ? q1 : q0, bwd, rot, {1, 3, static_cast<std::uint32_t>(i)}); },
          min_reps, max_reps, budget);
      const double tbps = static_cast<double>(qr * qc) * 2.0 * (0.5 + 1.0 / 16.0) / (ms * 1e-3) / 1e12;
      note({{"case", fmt::format("requant/{}->{}+rht{}/transposed", quantizer_name(rq.forward), quantizer_name(rq.backward), rq.rotation)},
            {"median_ms", ms}, {"tbps", tbps}, {"copy_tbps", copy_tbps}, {"ratio_to_copy", tbps / copy_tbps},
            {"shape", {qr, qc}}, {"bytes_per_element", 1.125}});
    }
    inputs.clear();
  }

  if (o.wants("gemm")) {
    // GEMM: emulated NVFP4 (dequantize + BF16 tensor cores) against cuBLAS BF16, same shape;
    // the linear layers' largest shapes (tokens x out x in).
    // (m, n, k): tokens x out x in for the forward products; the last two are weight gradients
    // of 124m's layers (out x in x tokens): few tiles of out, a long reduction.
    const std::vector<std::array<std::int64_t, 3>> gemm_shapes =
        o.quick ? std::vector<std::array<std::int64_t, 3>>{{4096, 2816, 1024}}
                : std::vector<std::array<std::int64_t, 3>>{{16384, 11008, 4096}, {16384, 4096, 11008}, {16384, 12288, 4096},
                                                            {16384, 6144, 2048},  {16384, 2304, 768},   {16384, 768, 3072},
                                                            {2304, 768, 16384},   {768, 768, 16384}};
    for (const auto& [gm, gn, gk] : gemm_shapes) {
      Tensor a = be->empty({gm, gk}, DType::bf16), b = be->empty({gn, gk}, DType::bf16), out = be->empty({gm, gn}, DType::bf16);
      be->upload(a, random_values(gm * gk, 7));
      be->upload(b, random_values(gn * gk, 8));
      const double flops = 2.0 * static_cast<double>(gm) * static_cast<double>(gn) * static_cast<double>(gk);
      // Quantized once: all but the warm-up dequantize (the quantizer's BF16 copy, where it
      // wrote one, is used up by the first GEMM), so this is the standalone emulated GEMM.
      const QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::rtn);
      const QTensor qa = be->quantize(a, false, spec, Rotation::none(), {}), qb = be->quantize(b, false, spec, Rotation::none(), {});
      // Then the GEMM that reads A in NVFP4 (QUARTET_NVFP4_GEMM=fp4-operand; the copies path on
      // GPUs it does not fit): the cp.async kernel and the warp-specialised TMA kernel, each with
      // its two tiles (128 x 128: more tiles, for the shapes whose waves of 128 x 256 tiles leave
      // many SMs idle).
      struct Fp4Variant {
        const char *name, *kernel, *tile;
      };
      const Fp4Variant fp4_variants[] = {{"gemm_fp4_operand", "cp-async", "128x256"},
                                         {"gemm_fp4_operand_128x128", "cp-async", "128x128"},
                                         {"gemm_fp4_operand_tma", "tma", "128x256"},
                                         {"gemm_fp4_operand_tma_128x128", "tma", "128x128"}};
      std::vector<std::function<void(int)>> runs = {[&](int) { be->gemm(out, a, false, b, false, false); },
                                                    [&](int) { be->gemm_quantized(out, qa, qb, false); }};
      for (const Fp4Variant& v : fp4_variants) {
        runs.push_back([&, v](int) {
          setenv("QUARTET_NVFP4_GEMM", "fp4-operand", 1);
          setenv("QUARTET_FP4_OPERAND_KERNEL", v.kernel, 1);
          setenv("QUARTET_FP4_OPERAND_TILE", v.tile, 1);
          be->gemm_quantized(out, qa, qb, false);
          unsetenv("QUARTET_FP4_OPERAND_TILE");
          unsetenv("QUARTET_FP4_OPERAND_KERNEL");
          unsetenv("QUARTET_NVFP4_GEMM");
        });
      }
      const std::vector<double> medians = interleaved_median_ms(runs, min_reps, max_reps, budget);
      const double bf16_ms = medians[0], ms = medians[1];
      const double bf16_tflops = flops / (bf16_ms * 1e-3) / 1e12;
      note({{"case", fmt::format("gemm_bf16/{}x{}x{}", gm, gn, gk)}, {"median_ms", bf16_ms}, {"tflops", bf16_tflops}});
      const double tflops = flops / (ms * 1e-3) / 1e12;
      note({{"case", fmt::format("gemm/{}x{}x{}", gm, gn, gk)}, {"median_ms", ms}, {"tflops", tflops},
            {"bf16_tflops", bf16_tflops}, {"ratio_to_bf16", tflops / bf16_tflops},
            {"path", be->name()}});  // the backend names its NVFP4 GEMM path (native or emulated)
      for (std::size_t i = 0; i < std::size(fp4_variants); ++i) {
        const double variant_ms = medians[2 + i], variant_tflops = flops / (variant_ms * 1e-3) / 1e12;
        note({{"case", fmt::format("{}/{}x{}x{}", fp4_variants[i].name, gm, gn, gk)}, {"median_ms", variant_ms},
              {"tflops", variant_tflops}, {"bf16_tflops", bf16_tflops}, {"ratio_to_bf16", variant_tflops / bf16_tflops},
              {"ratio_to_copies", variant_tflops / tflops}, {"tile", fp4_variants[i].tile}});
      }
    }

  }
  if (o.wants("linear")) {
    // The linear layers of one transformer block, forward and forward+backward, per recipe.
    const std::int64_t tokens = o.quick ? 4096 : 16384;
    const std::vector<ShapeSet> sets = {{"800M", 2048, 5632}, {"7B", 4096, 11008}};
    for (const ShapeSet& set : sets) {
      if (std::find(o.sets.begin(), o.sets.end(), set.name) == o.sets.end()) continue;
      const std::pair<std::int64_t, std::int64_t> linears[] = {
          {set.d, 3 * set.d}, {set.d, set.d}, {set.d, 2 * set.ffn}, {set.ffn, set.d}};  // (in K, out N)
      struct Layer {
        Tensor x, w, y, dy, dx, dw;
        LinearSaved saved;
      };
      std::vector<Layer> layers;
      for (auto [k, n] : linears) {
        Layer l;
        l.x = be->empty({tokens, k}, DType::bf16);
        l.w = be->empty({n, k}, DType::f32);
        l.y = be->empty({tokens, n}, DType::bf16);
        l.dy = be->empty({tokens, n}, DType::bf16);
        l.dx = be->empty({tokens, k}, DType::bf16);
        l.dw = be->zeros({n, k}, DType::f32);
        be->upload(l.x, random_values(tokens * k, 11));
        be->upload(l.w, random_values(n * k, 12));
        be->upload(l.dy, random_values(tokens * n, 13));
        layers.push_back(std::move(l));
      }
      double bf16_fwd = 0, bf16_fwdbwd = 0, bf16_saved = 0;
      for (const std::string& name : o.recipes) {
        const Recipe r = make_recipe(name);
        const auto forward = [&](int i) {
          for (std::size_t j = 0; j < layers.size(); ++j) {
            linear_forward(*be, r, layers[j].x, layers[j].w, layers[j].y, layers[j].saved,
                           {1, static_cast<std::uint32_t>(j), static_cast<std::uint32_t>(i)});
          }
        };
        const auto forward_backward = [&](int i) {
          forward(i);
          for (std::size_t j = 0; j < layers.size(); ++j) {
            linear_backward(*be, r, layers[j].dy, layers[j].w, layers[j].saved, layers[j].dx, layers[j].dw,
                            {1, static_cast<std::uint32_t>(j), static_cast<std::uint32_t>(i)});
          }
        };
        // Timed in blocks, one recipe after the other, BF16 first. Interleaving each recipe's
        // repetitions with BF16's was tried and distorts the comparison on a power-limited GPU:
        // BF16 ran 7% faster right after the quantizer-heavy recipe than on its own
        // (bench/results/history/h200-30f2e53-interleaved-linear.json), and the recipe slower.
        const double fwd = median_ms(forward, min_reps, max_reps, budget);
        const double fwdbwd = median_ms(forward_backward, min_reps, max_reps, budget);
        // What the forward pass keeps for backward (activations of the four layers).
        double saved = 0;
        for (const Layer& l : layers) saved += static_cast<double>(l.saved.activation_bytes());
        if (name == "bf16") {
          bf16_fwd = fwd;
          bf16_fwdbwd = fwdbwd;
          bf16_saved = saved;
        }
        for (auto [pass, ms, base] : {std::tuple{"fwd", fwd, bf16_fwd}, std::tuple{"fwdbwd", fwdbwd, bf16_fwdbwd}}) {
          nlohmann::json row = {{"case", fmt::format("linear/{}/{}/{}", name, set.name, pass)}, {"median_ms", ms},
                                {"tokens", tokens}, {"d", set.d}, {"ffn", set.ffn}, {"saved_activation_bytes", saved}};
          if (base > 0) {
            row["ratio_to_bf16"] = ms / base;
            row["bf16_ms"] = base;
          }
          if (bf16_saved > 0) row["saved_activation_ratio_to_bf16"] = saved / bf16_saved;
          note(row);
        }
      }
    }
  }
  if (o.wants("ops")) {
    // Every Backend operation at the models' shapes, against the copy ceiling (memory-bound
    // operations) or a large cuBLAS BF16 GEMM measured here (attention, GEMMs).
    const std::int64_t g = o.quick ? 2048 : 8192;
    Tensor a = be->empty({g, g}, DType::bf16), b = be->empty({g, g}, DType::bf16), out = be->empty({g, g}, DType::bf16);
    be->upload(a, random_values(g * g, 21));
    be->upload(b, random_values(g * g, 22));
    const double gemm_ms = median_ms([&](int) { be->gemm(out, a, false, b, false, false); }, min_reps, max_reps, budget);
    const double gemm_tflops = 2.0 * static_cast<double>(g * g) * static_cast<double>(g) / (gemm_ms * 1e-3) / 1e12;
    note({{"case", fmt::format("gemm_bf16/{}x{}x{}", g, g, g)}, {"median_ms", gemm_ms}, {"tflops", gemm_tflops}});
    run_ops_benchmarks(*be, o.quick, min_reps, max_reps, budget, copy_tbps, gemm_tflops, o.ops, note);
  }
  if (o.wants("train")) {
    TrainBenchOptions t;
    t.models = o.train_models;
    t.recipes = o.recipes;
    t.quick = o.quick;
    t.pytorch_script = o.pytorch_script;
    t.trace_dir = o.trace_dir;
    run_train_benchmarks(t, note);
  }
  return rows;
}

}  // namespace quartet
