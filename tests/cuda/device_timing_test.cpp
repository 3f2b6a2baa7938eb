// The device's clocks, on known work (skipped without a GPU): the activity recorder
// (cuda_activity_start/stop, CUPTI), where a fill before the start is left out and what is
// queued after it is there, in order, with the device's times: fills, a fused 4/6 quantization
// (its amax pass and quantizing pass, and no memset: the passes share per-block maxima instead
// of a zeroed accumulator) and a reference-path quantization (FP32, transposed: a 16-byte memset
// of its atomic scratch, then its kernels); and DeviceMark, the training step's timer.
#include <gtest/gtest.h>

#include <algorithm>

#include "bench/device_timeline.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet {
namespace {

TEST(ActivityRecorder, RecordsTheKernelsAndMemsetsQueuedWhileItRuns) {
  if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
  auto gpu = make_cuda_backend();
  Tensor x = gpu->empty({256, 512}, DType::bf16);
  Tensor x32 = gpu->empty({512, 256}, DType::f32);
  Tensor y = gpu->empty({1 << 20}, DType::f32);
  gpu->fill(y, 1.0);  // before the recording: not in it
  gpu->fill(x32, 0.25);
  const QuantizerSpec four_over_six = QuantizerSpec::defaults(QuantizerKind::four_over_six);
  cuda_activity_start();
  EXPECT_THROW(cuda_activity_start(), Error);  // one recording at a time
  gpu->fill(x, 0.5);
  const QTensor fused = gpu->quantize(x, false, four_over_six, Rotation::none(), {1, 2, 3});
  gpu->fill(y, 2.0);
  const QTensor reference = gpu->quantize(x32, true, four_over_six, Rotation::none(), {1, 2, 4});
  gpu->fill(y, 3.0);
  const std::vector<DeviceActivity> got = cuda_activity_stop();
  EXPECT_THROW(cuda_activity_stop(), Error);  // none running now

  ASSERT_GE(got.size(), 7u);  // three fills, two fused passes, a memset and the reference kernels
  const auto fills = std::count_if(got.begin(), got.end(), [](const DeviceActivity& a) {
    return a.kind == DeviceActivityKind::kernel && a.name.find("fill_kernel") != std::string::npos;
  });
  EXPECT_EQ(fills, 3);
  EXPECT_TRUE(std::any_of(got.begin(), got.end(), [](const DeviceActivity& a) {
    return a.kind == DeviceActivityKind::memset && a.bytes == 16;
  }));
  EXPECT_EQ(std::count_if(got.begin(), got.end(),
                          [](const DeviceActivity& a) {
                            return a.kind == DeviceActivityKind::kernel &&
                                   a.name.find("fused_rowwise_kernel") != std::string::npos;
                          }),
            2);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_LT(got[i].start_ns, got[i].end_ns) << got[i].name;
    if (i > 0) {
      EXPECT_LE(got[i - 1].start_ns, got[i].start_ns);
    }
  }
  // On one stream each fill ends before the next quantization starts, which ends before the
  // next fill.
  EXPECT_NE(got.front().name.find("fill_kernel"), std::string::npos) << got.front().name;
  EXPECT_NE(got.back().name.find("fill_kernel"), std::string::npos) << got.back().name;
  const TimelineSummary s = summarize_timeline(got, "fill_kernel");
  ASSERT_EQ(s.steps.size(), 3u);
  EXPECT_EQ(s.steps[0].kernels, 1);
  // After the first fill: the fused quantization's two passes, then the second fill; no memset.
  EXPECT_EQ(s.steps[1].kernels, 3);
  EXPECT_EQ(s.steps[1].memsets, 0);
  // After the second: the reference path's memset and at least its amax and group kernels.
  EXPECT_EQ(s.steps[2].memsets, 1);
  EXPECT_GE(s.steps[2].kernels, 3);

  // A second recording starts empty.
  cuda_activity_start();
  gpu->fill(y, 3.0);
  const std::vector<DeviceActivity> again = cuda_activity_stop();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_NE(again[0].name.find("fill_kernel"), std::string::npos);
}

// DeviceMark on the GPU (a timing event): the device's time between two marks covers the work
// queued between them, measured by the device however long the host took to queue it.
TEST(DeviceMark, TimesTheWorkBetweenTwoMarks) {
  if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
  auto gpu = make_cuda_backend();
  Tensor y = gpu->empty({1 << 26}, DType::f32);  // 256 MiB: each fill takes tens of microseconds
  auto before = gpu->make_device_mark(), after = gpu->make_device_mark(), unrecorded = gpu->make_device_mark();
  EXPECT_THROW(after->seconds_since(*before), Error);  // neither recorded yet
  before->record();
  for (int i = 0; i < 20; ++i) gpu->fill(y, i);
  after->record();
  const double seconds = after->seconds_since(*before);
  // 20 writes of 256 MiB at no more than 5 TB/s take at least 1 ms; on any GPU under 1 s.
  EXPECT_GT(seconds, 20.0 * 268435456 / 5e12);
  EXPECT_LT(seconds, 1.0);
  EXPECT_THROW(after->seconds_since(*unrecorded), Error);
  auto cpu = make_cpu_backend();
  auto host_mark = cpu->make_device_mark();
  host_mark->record();
  EXPECT_THROW(after->seconds_since(*host_mark), Error);  // another backend's clock
}

}  // namespace
}  // namespace quartet
