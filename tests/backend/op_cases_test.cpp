// The operation table (src/bench/op_cases.h) without a GPU: every entry's test shapes on the CPU
// backend against the FP64 reference backend, with a loose tolerance. The CPU backend is
// itself tested elsewhere (cpu_ops_test.cpp); this catches broken input builders and table bugs
// (inputs that differ between backends, outputs never written, inconsistent shapes or costs)
// before the GPU test (tests/cuda/ops_table_test.cpp) meets them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "bench/op_cases.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"

namespace quartet {
namespace {

using ops::CaseInputs;
using ops::OpEntry;
using ops::OpRun;
using ops::OpShape;

// The CPU backend rounds stored activations to BF16 (2^-9 relative) and computes in FP32 where
// the reference keeps double; anything beyond 2^-6 relative plus 2^-7 of the tensor's largest
// value (sums that cancel) is a bug in the table, not rounding.
ops::Tolerance sanity_tolerance() { return ops::within(0, 0x1p-6, 0x1p-7); }

// Runs every test shape of `entry` on the CPU and the reference backend from shared inputs and
// returns one message per problem found.
std::vector<std::string> cpu_versus_reference_problems(const OpEntry& entry) {
  std::vector<std::string> problems;
  const auto cpu = make_cpu_backend();
  const auto reference = make_cpu_reference_backend();
  for (const OpShape& shape : entry.test_shapes) {
    const std::string name = ops::case_name(entry, shape);
    CaseInputs inputs(ops::case_seed(entry, shape), /*for_comparison=*/true);
    OpRun on_cpu = entry.build(*cpu, shape, inputs);
    on_cpu.run();
    OpRun on_reference = entry.build(*reference, shape, inputs);
    on_reference.run();
    if (on_cpu.outputs.empty()) problems.push_back(name + ": no outputs");
    if (on_cpu.outputs.size() != on_reference.outputs.size()) {
      problems.push_back(name + ": the backends' builds have different outputs");
      continue;
    }
    for (std::size_t i = 0; i < on_cpu.outputs.size(); ++i) {
      const std::string what = name + " " + on_cpu.outputs[i].name;
      const std::vector<double> got = on_cpu.outputs[i].read(), expected = on_reference.outputs[i].read();
      if (got.size() != expected.size()) {
        problems.push_back(what + ": " + std::to_string(got.size()) + " values against " + std::to_string(expected.size()));
        continue;
      }
      if (std::all_of(expected.begin(), expected.end(), [](double v) { return v == 0.0; })) {
        problems.push_back(what + ": every reference value is zero (was the operation run?)");
      }
      const ops::Comparison c = ops::compare_output(sanity_tolerance(), got, expected);
      for (const ops::Mismatch& m : c.first) {
        problems.push_back(what + "[" + std::to_string(m.index) + "]: cpu " + std::to_string(m.got) + ", fp64 reference " +
                           std::to_string(m.expected) + ", bound " + std::to_string(m.bound));
      }
    }
  }
  return problems;
}

std::vector<std::string> entry_names() {
  std::vector<std::string> names;
  for (const OpEntry& e : ops::op_table()) names.push_back(e.name);
  return names;
}

class OpCases : public ::testing::TestWithParam<std::string> {};

TEST_P(OpCases, CpuAgreesWithTheFp64Reference) {
  const std::vector<std::string> problems = cpu_versus_reference_problems(ops::op_entry(GetParam()));
  for (std::size_t i = 0; i < std::min<std::size_t>(problems.size(), 10); ++i) ADD_FAILURE() << problems[i];
  EXPECT_TRUE(problems.empty()) << problems.size() << " problem(s)";
}

TEST_P(OpCases, CostsAndNamesAreConsistent) {
  const OpEntry& entry = ops::op_entry(GetParam());
  std::set<std::string> names;
  for (const auto* shapes : {&entry.test_shapes, &entry.bench_shapes}) {
    for (const OpShape& s : *shapes) {
      EXPECT_TRUE(names.insert(ops::case_name(entry, s)).second) << ops::case_name(entry, s) << " appears twice";
      const ops::OpCost cost = entry.cost(s);
      EXPECT_GT(cost.bytes, 0) << ops::case_name(entry, s);
      EXPECT_TRUE(std::isfinite(cost.bytes) && std::isfinite(cost.flops)) << ops::case_name(entry, s);
    }
  }
  const bool compute_bound = entry.name == "gemm" || entry.name.starts_with("attention");
  for (const OpShape& s : entry.bench_shapes) {
    EXPECT_EQ(entry.cost(s).flops > 0, compute_bound) << ops::case_name(entry, s) << ": FLOPs are for GEMMs and attention";
  }
  // `bench --quick` runs the first benchmark shape: the smaller model's.
  EXPECT_LE(entry.cost(entry.bench_shapes.front()).bytes, entry.cost(entry.bench_shapes.back()).bytes) << entry.name;
}

INSTANTIATE_TEST_SUITE_P(Ops, OpCases, ::testing::ValuesIn(entry_names()),
                         [](const ::testing::TestParamInfo<std::string>& entry) { return entry.param; });

// The harness above fails when the backends do not get the same inputs: an entry whose builder
// ignores the shared inputs (each backend its own values) must be reported.
TEST(OpCasesHarness, ReportsBackendsGivenDifferentInputs) {
  OpEntry broken = ops::op_entry("add_inplace");
  broken.build = [](Backend& be, const OpShape& s, CaseInputs&) {
    Tensor a = be.empty({s.rows, s.cols}, ops::on_backend(be, s.dtype));
    be.fill(a, be.param_dtype() == DType::f64 ? 2.0 : 1.0);
    return OpRun{[] {}, {{"a", [&be, a] { return be.download(a); }, ops::bitwise()}}};
  };
  EXPECT_FALSE(cpu_versus_reference_problems(broken).empty());
}

TEST(OpCasesHarness, ReportsAnOutputNeverWritten) {
  OpEntry broken = ops::op_entry("add_inplace");
  broken.build = [](Backend& be, const OpShape& s, CaseInputs&) {
    Tensor a = be.zeros({s.rows, s.cols}, ops::on_backend(be, s.dtype));
    return OpRun{[] {}, {{"a", [&be, a] { return be.download(a); }, ops::bitwise()}}};
  };
  EXPECT_FALSE(cpu_versus_reference_problems(broken).empty());
}

// Every backend gets the values the first one stored, rounded to the dtype the GPU keeps even
// on the FP64 reference backend.
TEST(OpCasesInputs, EveryBackendGetsTheFirstBackendsValues) {
  const auto cpu = make_cpu_backend();
  const auto reference = make_cpu_reference_backend();
  CaseInputs inputs(42, /*for_comparison=*/true);
  const Tensor on_cpu = inputs.tensor(*cpu, "x", {3, 37}, DType::bf16, ops::normal_values(3.0));
  const Tensor on_reference = inputs.tensor(*reference, "x", {3, 37}, DType::bf16, ops::normal_values(3.0));
  EXPECT_EQ(on_cpu.dtype(), DType::bf16);
  EXPECT_EQ(on_reference.dtype(), DType::f64);
  const std::vector<double> a = cpu->download(on_cpu), b = reference->download(on_reference);
  EXPECT_EQ(a, b);
  for (double v : b) EXPECT_EQ(v, static_cast<double>(round_to_bf16(static_cast<float>(v))));
  EXPECT_EQ(inputs.values("x", 3 * 37, DType::bf16, ops::normal_values(3.0)), a);
  // Another seed, other values; the same seed and name, the same values.
  CaseInputs other(43, true), same(42, true);
  EXPECT_NE(other.values("x", 3 * 37, DType::bf16, ops::normal_values(3.0)), a);
  EXPECT_EQ(same.values("x", 3 * 37, DType::bf16, ops::normal_values(3.0)), a);
  EXPECT_THROW(inputs.values("x", 5, DType::bf16, ops::normal_values(3.0)), Error);
}

TEST(OpCasesCompare, EachKindOfToleranceRejectsWhatItShould) {
  const std::vector<double> expected = {1.0, -2.0, 0.5, 0.0};
  std::vector<double> off = expected;
  off[2] = std::nextafter(0.5, 1.0);
  EXPECT_EQ(ops::compare_output(ops::bitwise(), off, expected).failures, 1);
  EXPECT_TRUE(ops::compare_output(ops::bitwise(), {NAN, 1.0}, {NAN, 1.0}).ok());
  EXPECT_FALSE(ops::compare_output(ops::bitwise(), {0.0}, {-0.0}).ok());

  // One BF16 ulp of 0.5 is 2^-8: within one ulp, not within two.
  std::vector<double> one_ulp = expected, two_ulps = expected;
  one_ulp[2] += 0x1p-8;
  two_ulps[2] += 0x1p-7;
  EXPECT_TRUE(ops::compare_output(ops::within(1, 0), one_ulp, expected).ok());
  const ops::Comparison c = ops::compare_output(ops::within(1, 0), two_ulps, expected);
  ASSERT_EQ(c.failures, 1);
  EXPECT_EQ(c.first[0].index, 2);
  EXPECT_EQ(c.first[0].bound, 0x1p-8);
  EXPECT_FALSE(ops::compare_output(ops::within(1, 0), {NAN}, {1.0}).ok());
  EXPECT_TRUE(ops::compare_output(ops::within(0, 0, 0, {0.25}), {1.25}, {1.0}).ok());
  EXPECT_FALSE(ops::compare_output(ops::within(0, 0, 0, {0.25}), {1.26}, {1.0}).ok());

  // Against the reference: the CPU is 0.01 off, so the GPU may be 0.03 + 2^-10 x 2 off.
  const std::vector<double> reference = {1.0, -2.0};
  const std::vector<double> cpu = {1.01, -2.0};
  EXPECT_TRUE(ops::compare_output(ops::versus_reference(3, 0x1p-10), {1.0, -2.03}, cpu, reference).ok());
  EXPECT_FALSE(ops::compare_output(ops::versus_reference(3, 0x1p-10), {1.0, -2.04}, cpu, reference).ok());
  EXPECT_THROW(ops::compare_output(ops::bitwise(), {1.0}, {1.0, 2.0}), Error);
}

}  // namespace
}  // namespace quartet
