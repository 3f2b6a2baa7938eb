// CPU reference throughput: quantizers (with their recipe rotation), the RHT alone and the
// reference GEMM. The CPU backend is the reference, not the fast path; these numbers tell
// how long CPU tests and small CPU training runs take, and catch regressions.
#include <benchmark/benchmark.h>

#include <random>

#include "quartet/numerics/gemm.h"
#include "quartet/numerics/quantizer.h"

namespace {

std::vector<float> random_matrix(std::int64_t rows, std::int64_t cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (auto& x : v) x = normal(gen);
  return v;
}

constexpr std::int64_t kRows = 1024, kCols = 4096;

void BM_Quantize(benchmark::State& state) {
  const auto kind = static_cast<quartet::QuantizerKind>(state.range(0));
  const int rotation_size = static_cast<int>(state.range(1));
  const std::vector<float> x = random_matrix(kRows, kCols, 1);
  const quartet::Rotation rotation =
      rotation_size == 0 ? quartet::Rotation::none() : quartet::Rotation::random(rotation_size, {1, 2, 3});
  const quartet::QuantizerSpec spec = quartet::QuantizerSpec::defaults(kind);
  std::uint32_t call = 0;
  for (auto _ : state) {
    auto q = quartet::quantize(quartet::ConstMatrixView(x.data(), kRows, kCols), spec, rotation, {7, 1, call++});
    benchmark::DoNotOptimize(q.codes.data());
  }
  state.SetLabel(std::string(quartet::quantizer_name(kind)) + (rotation_size ? "+RHT-" + std::to_string(rotation_size) : ""));
  state.SetItemsProcessed(state.iterations() * kRows * kCols);
  state.SetBytesProcessed(state.iterations() * kRows * kCols * 4);
}

void quantizer_args(benchmark::internal::Benchmark* b) {
  using K = quartet::QuantizerKind;
  const std::pair<K, int> cases[] = {{K::rtn, 0},           {K::four_over_six, 0}, {K::square16, 0},
                                     {K::sr, 16},           {K::ms_eden_g16, 128}, {K::ms_eden_g128, 128},
                                     {K::mxfp4_quest, 32},  {K::mxfp4_rtn, 32},    {K::mxfp4_sr, 32}};
  for (auto [kind, rot] : cases) b->Args({static_cast<long>(kind), rot});
}

BENCHMARK(BM_Quantize)->Apply(quantizer_args)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Rotate128(benchmark::State& state) {
  std::vector<float> x = random_matrix(kRows, kCols, 2);
  const quartet::Rotation rotation = quartet::Rotation::random(128, {1, 2, 3});
  for (auto _ : state) {
    quartet::rotate_rows(x.data(), kRows, kCols, kCols, rotation);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kRows * kCols);
}
BENCHMARK(BM_Rotate128)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_GemmQuantized(benchmark::State& state) {
  const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const std::vector<float> a = random_matrix(m, k, 3), b = random_matrix(n, k, 4);
  const auto spec = quartet::QuantizerSpec::defaults(quartet::QuantizerKind::rtn);
  const auto qa = quartet::quantize(quartet::ConstMatrixView(a.data(), m, k), spec, quartet::Rotation::none(), {});
  const auto qb = quartet::quantize(quartet::ConstMatrixView(b.data(), n, k), spec, quartet::Rotation::none(), {});
  std::vector<float> out(static_cast<std::size_t>(m * n));
  for (auto _ : state) {
    quartet::gemm_quantized(qa, qb, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(static_cast<double>(2 * m * n * k) * static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemmQuantized)->Args({512, 512, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
