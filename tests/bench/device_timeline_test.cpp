// The arithmetic of a recorded GPU timeline (bench/device_timeline.h) on a hand-made timeline
// whose busy and idle times are worked out below, and its errors.
#include <gtest/gtest.h>

#include "bench/device_timeline.h"
#include "quartet/error.h"

namespace quartet {
namespace {

constexpr std::uint64_t kMs = 1'000'000;  // the activities' times are in nanoseconds

DeviceActivity kernel(const std::string& name, std::uint64_t start_ms, std::uint64_t end_ms, std::uint32_t stream = 1) {
  return {DeviceActivityKind::kernel, name, start_ms * kMs, end_ms * kMs, stream, 0};
}

// Step 1 (0-51 ms): a [0,10], idle 5, memset [15,17], b [17,27] beside c [20,30] on another
// stream, idle 10, adamw [40,50] and its status copy [50,51]: busy 10 + 2 + 13 + 10 + 1 = 36,
// idle 15. Between the steps: 4. Step 2 (55-80): a [55,60], idle 2, adamw [62,70], idle 5, its
// status copy [75,80]: busy 18, idle 7. A copy to the device after it belongs to no step.
std::vector<DeviceActivity> two_steps() {
  return {kernel("void q::a<1>(float*)", 0, 10),
          {DeviceActivityKind::memset, "memset", 15 * kMs, 17 * kMs, 1, 16},
          kernel("void q::b(int)", 17, 27),
          kernel("q::c()", 20, 30, 2),
          kernel("void q::adamw_kernel(float*, int)", 40, 50),
          {DeviceActivityKind::memcpy, "memcpy device-to-host", 50 * kMs, 51 * kMs, 1, 40},
          kernel("void q::a<1>(float*)", 55, 60),
          kernel("void q::adamw_kernel(float*, int)", 62, 70),
          {DeviceActivityKind::memcpy, "memcpy device-to-host", 75 * kMs, 80 * kMs, 1, 32},
          {DeviceActivityKind::memcpy, "memcpy host-to-device", 85 * kMs, 86 * kMs, 1, 64}};
}

TEST(DeviceTimeline, StepsSpanBusyAndIdle) {
  const TimelineSummary s = summarize_timeline(two_steps(), "adamw_kernel");
  ASSERT_EQ(s.steps.size(), 2u);
  EXPECT_EQ(s.steps[0].start_ns, 0u);
  EXPECT_EQ(s.steps[0].end_ns, 51 * kMs);  // the status copy after adamw is the step's
  EXPECT_EQ(s.steps[0].busy_ns, 36 * kMs);
  EXPECT_EQ(s.steps[0].kernels, 4);
  EXPECT_EQ(s.steps[0].memsets, 1);
  EXPECT_EQ(s.steps[0].memcpys, 1);
  EXPECT_EQ(s.steps[1].start_ns, 55 * kMs);
  EXPECT_EQ(s.steps[1].end_ns, 80 * kMs);
  EXPECT_EQ(s.steps[1].busy_ns, 18 * kMs);
  EXPECT_EQ(s.steps[1].memcpys, 1);  // not the upload after it
  EXPECT_EQ(s.between_steps_idle_ns, 4 * kMs);
}

TEST(DeviceTimeline, EntriesCountCallsTimeAndTheIdleBeforeThem) {
  const TimelineSummary s = summarize_timeline(two_steps(), "adamw_kernel");
  ASSERT_EQ(s.entries.size(), 6u);  // a, memset, b, c, adamw, the status copy; the upload is in no step
  EXPECT_EQ(s.entries[0].name, "q::adamw_kernel");
  EXPECT_EQ(s.entries[0].calls, 2);
  EXPECT_EQ(s.entries[0].busy_ns, 18 * kMs);
  EXPECT_EQ(s.entries[0].idle_before_ns, 12 * kMs);  // 10 in step 1, 2 in step 2
  EXPECT_EQ(s.entries[1].name, "q::a<1>");
  EXPECT_EQ(s.entries[1].busy_ns, 15 * kMs);
  EXPECT_EQ(s.entries[1].idle_before_ns, 0u);  // each starts its step
  EXPECT_EQ(s.entries[2].name, "q::b");
  EXPECT_EQ(s.entries[3].name, "q::c");
  EXPECT_EQ(s.entries[3].idle_before_ns, 0u);  // it starts while b runs
  EXPECT_EQ(s.entries[4].name, "memcpy device-to-host");
  EXPECT_EQ(s.entries[4].kind, DeviceActivityKind::memcpy);
  EXPECT_EQ(s.entries[4].calls, 2);
  EXPECT_EQ(s.entries[4].busy_ns, 6 * kMs);
  EXPECT_EQ(s.entries[4].idle_before_ns, 5 * kMs);
  EXPECT_EQ(s.entries[5].name, "memset");
  EXPECT_EQ(s.entries[5].kind, DeviceActivityKind::memset);
  EXPECT_EQ(s.entries[5].idle_before_ns, 5 * kMs);
}

TEST(DeviceTimeline, JsonGivesMillisecondsPerStep) {
  const nlohmann::json j = timeline_summary_json(summarize_timeline(two_steps(), "adamw_kernel"), 2);
  EXPECT_EQ(j.at("steps"), 2);
  EXPECT_DOUBLE_EQ(j.at("span_ms_per_step").get<double>(), 38.0);  // (51 + 25) / 2
  EXPECT_DOUBLE_EQ(j.at("busy_ms_per_step").get<double>(), 27.0);  // (36 + 18) / 2
  EXPECT_DOUBLE_EQ(j.at("idle_in_step_ms_per_step").get<double>(), 11.0);
  EXPECT_DOUBLE_EQ(j.at("idle_between_steps_ms_per_step").get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(j.at("kernels_per_step").get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(j.at("memsets_per_step").get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j.at("memcpys_per_step").get<double>(), 1.0);
  ASSERT_EQ(j.at("by_busy_time").size(), 2u);  // the top 2
  EXPECT_EQ(j.at("by_busy_time")[1].at("name"), "q::a<1>");
  EXPECT_DOUBLE_EQ(j.at("by_busy_time")[0].at("ms_per_step").get<double>(), 9.0);
  ASSERT_EQ(j.at("by_idle_before").size(), 2u);
  EXPECT_EQ(j.at("by_idle_before")[0].at("name"), "q::adamw_kernel");
  EXPECT_DOUBLE_EQ(j.at("by_idle_before")[0].at("idle_before_ms_per_step").get<double>(), 6.0);
  EXPECT_EQ(j.at("by_idle_before")[1].at("kind"), "memcpy");
  EXPECT_DOUBLE_EQ(j.at("by_idle_before")[1].at("idle_before_ms_per_step").get<double>(), 2.5);
}

// The idle gaps inside steps by size class (bounds 2, 5, 20 and 100 us; a bound belongs to the
// class above it). One step: a [0,10], b [11,20] (gap 1), c [22,30] (gap 2), d [34,40] (gap 4),
// e [38,41] on a second stream (overlaps d: no gap), f [50,55] (gap 9 after e), g [80,90] (gap
// 25), adamw [340,350] (gap 250): idle 291 of a 350 us span, busy 59.
TEST(DeviceTimeline, IdleGapsBySizeClass) {
  constexpr std::uint64_t kUs = 1'000;
  const auto k = [&](const char* name, std::uint64_t start_us, std::uint64_t end_us, std::uint32_t stream = 1) {
    return DeviceActivity{DeviceActivityKind::kernel, name, start_us * kUs, end_us * kUs, stream, 0};
  };
  const TimelineSummary s = summarize_timeline({k("a", 0, 10), k("b", 11, 20), k("c", 22, 30), k("d", 34, 40),
                                                k("e", 38, 41, 2), k("f", 50, 55), k("g", 80, 90),
                                                k("adamw_kernel", 340, 350)},
                                               "adamw_kernel");
  ASSERT_EQ(s.steps.size(), 1u);
  EXPECT_EQ(s.steps[0].busy_ns, 59 * kUs);
  ASSERT_EQ(s.idle_gaps.size(), 5u);
  const std::uint64_t bounds[] = {2 * kUs, 5 * kUs, 20 * kUs, 100 * kUs, 0};
  const std::int64_t gaps[] = {1, 2, 1, 1, 1};
  const std::uint64_t idle_us[] = {1, 2 + 4, 9, 25, 250};
  for (std::size_t c = 0; c < 5; ++c) {
    EXPECT_EQ(s.idle_gaps[c].below_ns, bounds[c]) << "class " << c;
    EXPECT_EQ(s.idle_gaps[c].gaps, gaps[c]) << "class " << c;
    EXPECT_EQ(s.idle_gaps[c].idle_ns, idle_us[c] * kUs) << "class " << c;
  }

  const nlohmann::json j = timeline_summary_json(s, 3);
  ASSERT_EQ(j.at("idle_gaps_in_step").size(), 5u);
  EXPECT_DOUBLE_EQ(j.at("idle_gaps_in_step")[0].at("below_us").get<double>(), 2.0);
  EXPECT_TRUE(j.at("idle_gaps_in_step")[4].at("below_us").is_null());
  EXPECT_DOUBLE_EQ(j.at("idle_gaps_in_step")[4].at("ms_per_step").get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(j.at("idle_gaps_in_step")[1].at("gaps_per_step").get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(j.at("idle_in_step_ms_per_step").get<double>(), 0.291);
}

// Leaving out the first step: the summary is step 2's alone (busy 18 of 25 ms, idle 2 before
// adamw and 5 before the status copy), and nothing of step 1 is counted.
TEST(DeviceTimeline, LeavesOutTheFirstSteps) {
  const TimelineSummary s = summarize_timeline(two_steps(), "adamw_kernel", 1);
  ASSERT_EQ(s.steps.size(), 1u);
  EXPECT_EQ(s.steps[0].start_ns, 55 * kMs);
  EXPECT_EQ(s.steps[0].busy_ns, 18 * kMs);
  EXPECT_EQ(s.between_steps_idle_ns, 0u);
  std::int64_t calls = 0;
  for (const TimelineEntry& e : s.entries) calls += e.calls;
  EXPECT_EQ(calls, 3);  // a, adamw, the status copy
  EXPECT_EQ(s.idle_gaps.back().gaps, 2);  // 2 and 5 ms: both above 100 us
  EXPECT_EQ(s.idle_gaps.back().idle_ns, 7 * kMs);
  EXPECT_THROW(summarize_timeline(two_steps(), "adamw_kernel", 2), Error);  // no step would be left
}

TEST(DeviceTimeline, ChromeTraceHasOneCompleteEventPerActivity) {
  const nlohmann::json t = chrome_trace(two_steps());
  const nlohmann::json& events = t.at("traceEvents");
  ASSERT_EQ(events.size(), 10u);
  EXPECT_EQ(events[3].at("name"), "q::c");
  EXPECT_EQ(events[3].at("ph"), "X");
  EXPECT_EQ(events[3].at("tid"), 2);
  EXPECT_DOUBLE_EQ(events[3].at("ts").get<double>(), 20000.0);  // microseconds from the first start
  EXPECT_DOUBLE_EQ(events[3].at("dur").get<double>(), 10000.0);
  EXPECT_EQ(events[8].at("name"), "memcpy device-to-host");
  EXPECT_EQ(events[8].at("args").at("bytes"), 32);
}

TEST(DeviceTimeline, ShortKernelNames) {
  EXPECT_EQ(short_kernel_name("void q::k<1, 2>(float*, int)"), "q::k<1, 2>");
  EXPECT_EQ(short_kernel_name("void quartet::(anonymous namespace)::tile<0, quartet::(anonymous namespace)::T<0> >("
                              "quartet::(anonymous namespace)::Args, int)"),
            "quartet::(anonymous namespace)::tile<0, quartet::(anonymous namespace)::T<0> >");
  EXPECT_EQ(short_kernel_name("nvjet_sm90_tst_320x128_64x3_1x2_h_bx_coopB_TNT"), "nvjet_sm90_tst_320x128_64x3_1x2_h_bx_coopB_TNT");
}

TEST(DeviceTimeline, RefusesWhatItCannotRead) {
  EXPECT_THROW(summarize_timeline({}, "adamw_kernel"), Error);
  try {
    summarize_timeline(two_steps(), "sgd_kernel");
    FAIL() << "no marker accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sgd_kernel"), std::string::npos) << e.what();
  }
  std::vector<DeviceActivity> unordered = two_steps();
  std::swap(unordered[1], unordered[2]);
  EXPECT_THROW(summarize_timeline(unordered, "adamw_kernel"), Error);
  std::vector<DeviceActivity> backwards = two_steps();
  backwards[2].end_ns = backwards[2].start_ns - 1;
  EXPECT_THROW(summarize_timeline(backwards, "adamw_kernel"), Error);
}

}  // namespace
}  // namespace quartet
