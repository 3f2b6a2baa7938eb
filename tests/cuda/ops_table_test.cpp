// Every operation of the table (src/bench/op_cases.h) on the CUDA backend against the CPU
// backend, from identical inputs, at every test shape of its entry, with the entry's tolerance;
// the same GPU case twice gives the same bits; and the table leaves no operation out. Every
// test but the last skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/op_cases.h"
#include "quartet/backend/cuda.h"

namespace quartet {
namespace {

using ops::CaseInputs;
using ops::CompareKind;
using ops::OpEntry;
using ops::OpRun;
using ops::OpShape;

std::vector<std::string> entry_names() {
  std::vector<std::string> names;
  for (const OpEntry& e : ops::op_table()) names.push_back(e.name);
  return names;
}

std::string describe(const ops::Comparison& c, const std::string& got_name, const std::string& expected_name) {
  std::ostringstream s;
  s << std::setprecision(9) << c.failures << " element(s) outside the tolerance";
  if (!c.criterion.empty()) s << " (" << c.criterion << ")";
  for (const ops::Mismatch& m : c.first) {
    s << "\n  [" << m.index << "] " << got_name << " " << m.got << ", " << expected_name << " " << m.expected << ", |diff| "
      << std::abs(m.got - m.expected) << " > bound " << m.bound;
  }
  return s.str();
}

bool needs_reference(const OpRun& run) {
  return std::any_of(run.outputs.begin(), run.outputs.end(),
                     [](const ops::OpOutput& o) { return o.tolerance.kind == CompareKind::versus_reference; });
}

class OpsTable : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
    gpu = make_cuda_backend();
    cpu = make_cpu_backend();
    reference = make_cpu_reference_backend();
  }

  // Builds the case on `be` from the shared inputs and runs it once.
  static OpRun run_on(Backend& be, const OpEntry& entry, const OpShape& shape, CaseInputs& inputs) {
    OpRun run = entry.build(be, shape, inputs);
    run.run();
    be.raise_pending_errors();
    return run;
  }

  std::unique_ptr<Backend> gpu, cpu, reference;
};

TEST_P(OpsTable, GpuMatchesTheCpuWithinTheEntrysTolerance) {
  const OpEntry& entry = ops::op_entry(GetParam());
  for (const OpShape& shape : entry.test_shapes) {
    const std::string name = ops::case_name(entry, shape);
    CaseInputs inputs(ops::case_seed(entry, shape), /*for_comparison=*/true);
    const OpRun on_cpu = run_on(*cpu, entry, shape, inputs);  // first: the values every backend gets
    const OpRun on_gpu = run_on(*gpu, entry, shape, inputs);
    OpRun on_reference;
    if (needs_reference(on_cpu)) on_reference = run_on(*reference, entry, shape, inputs);
    ASSERT_EQ(on_cpu.outputs.size(), on_gpu.outputs.size()) << name;
    for (std::size_t i = 0; i < on_cpu.outputs.size(); ++i) {
      const ops::OpOutput& expected = on_cpu.outputs[i];
      const bool versus_reference = expected.tolerance.kind == CompareKind::versus_reference;
      const std::vector<double> reference_values = versus_reference ? on_reference.outputs[i].read() : std::vector<double>{};
      const ops::Comparison c = ops::compare_output(expected.tolerance, on_gpu.outputs[i].read(), expected.read(), reference_values);
      EXPECT_TRUE(c.ok()) << name << " " << expected.name << ": "
                          << describe(c, "gpu", versus_reference ? "fp64 reference" : "cpu");
    }
  }
}

// Built twice from the same inputs (fresh buffers each time), a GPU case gives the same bits:
// no atomics, no reductions whose order depends on scheduling, no reads of uninitialised memory.
TEST_P(OpsTable, GpuIsDeterministic) {
  const OpEntry& entry = ops::op_entry(GetParam());
  for (const OpShape& shape : entry.test_shapes) {
    const std::string name = ops::case_name(entry, shape);
    CaseInputs inputs(ops::case_seed(entry, shape), /*for_comparison=*/true);
    const OpRun first = run_on(*gpu, entry, shape, inputs);
    const OpRun second = run_on(*gpu, entry, shape, inputs);
    for (std::size_t i = 0; i < first.outputs.size(); ++i) {
      const ops::Comparison c = ops::compare_output(ops::bitwise(), second.outputs[i].read(), first.outputs[i].read());
      EXPECT_TRUE(c.ok()) << name << " " << first.outputs[i].name << ": " << describe(c, "second run", "first run");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpsTable, ::testing::ValuesIn(entry_names()),
                         [](const ::testing::TestParamInfo<std::string>& entry) { return entry.param; });

// The operations of the Backend interface that the model and the optimizer call, written out
// here so that an entry missing from the table fails (quantization has its own tests in
// cuda_backend_test.cpp).
TEST(OpsTableCoverage, EveryBackendOperationHasAnEntry) {
  const std::vector<std::string> operations = {
      "embedding_forward", "embedding_backward", "rmsnorm_forward",          "residual_rmsnorm_forward",
      "rmsnorm_backward",  "rmsnorm_backward_accumulate_dx", "swiglu_forward", "swiglu_backward",
      "add_inplace",       "cross_entropy",      "attention_forward",        "attention_backward",
      "gemm",              "adamw_step",         "sum_of_squares"};
  const std::vector<std::string> names = entry_names();
  for (const std::string& op : operations) {
    EXPECT_EQ(std::count(names.begin(), names.end(), op), 1) << op << ": expected exactly one table entry";
  }
  for (const std::string& name : names) {
    EXPECT_NE(std::find(operations.begin(), operations.end(), name), operations.end())
        << name << ": a table entry this test does not list";
  }
  for (const OpEntry& e : ops::op_table()) {
    EXPECT_FALSE(e.test_shapes.empty()) << e.name;
    EXPECT_FALSE(e.bench_shapes.empty()) << e.name;
  }
}

}  // namespace
}  // namespace quartet
