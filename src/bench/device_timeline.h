// What a recorded GPU timeline (quartet/backend/device_activity.h) says about a training step:
// per step, the span from its first activity's start to its last one's end, the time some
// activity ran (the union of their intervals: concurrent streams overlap) and the rest, idle;
// per kernel, its calls, its time and the idle time just before it started (a kernel that waits
// on its own launch shows there). Plain arithmetic, built and tested without a GPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quartet/backend/device_activity.h"

namespace quartet {

struct TimelineStep {
  std::uint64_t start_ns = 0, end_ns = 0, busy_ns = 0;
  std::int64_t kernels = 0, memsets = 0, memcpys = 0;
};

struct TimelineEntry {
  std::string name;  // a kernel's short_kernel_name; a memset's or copy's name
  DeviceActivityKind kind = DeviceActivityKind::kernel;
  std::int64_t calls = 0;
  std::uint64_t busy_ns = 0;         // summed durations
  std::uint64_t idle_before_ns = 0;  // summed idle time that ended with this entry's starts
};

// Idle gaps inside steps of one size class: many short ones are launch latency between
// dependent kernels (what dependent launches or a CUDA graph remove), a few long ones the host
// or a synchronisation.
struct IdleGapClass {
  std::uint64_t below_ns = 0;  // the class's upper bound; 0: unbounded (the last class)
  std::int64_t gaps = 0;
  std::uint64_t idle_ns = 0;
};

// Upper bounds of the idle-gap classes, in nanoseconds (the last class has none).
inline constexpr std::uint64_t kIdleGapBoundsNs[] = {2'000, 5'000, 20'000, 100'000};

struct TimelineSummary {
  std::vector<TimelineStep> steps;
  std::vector<IdleGapClass> idle_gaps;  // one per bound in kIdleGapBoundsNs, then the unbounded
  std::vector<TimelineEntry> entries;  // longest busy time first
  std::uint64_t between_steps_idle_ns = 0;  // from each step's end to the next one's start
};

// The steps end with the activities whose name contains `step_marker` (the optimizer's kernel of
// a training step) and the device-to-host copies right after it (the step's status read);
// activities after the last step are left out, and so are the first `skip_steps` steps (a
// recording's first step starts late: its first activity waits for the recorder). Error when
// `activities` is empty, not in order of start, or has no more than skip_steps markers.
TimelineSummary summarize_timeline(const std::vector<DeviceActivity>& activities, const std::string& step_marker,
                                   std::size_t skip_steps = 0);

// A kernel's demangled name without its parameter list and leading return type:
// "void ns::k<1, 2>(float*, int)" -> "ns::k<1, 2>".
std::string short_kernel_name(const std::string& demangled);

// Milliseconds per step: span, busy, idle inside steps, idle between them, activities by kind,
// the idle gaps inside steps by size class, and the `top` entries by busy time and by idle time
// before them.
nlohmann::json timeline_summary_json(const TimelineSummary& summary, std::size_t top);

// The Chrome trace-event format (chrome://tracing, Perfetto): one complete event per activity,
// microseconds from the first start, a row per stream.
nlohmann::json chrome_trace(const std::vector<DeviceActivity>& activities);

}  // namespace quartet
