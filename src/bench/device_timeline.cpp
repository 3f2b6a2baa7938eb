// The timeline's arithmetic (device_timeline.h).
#include "bench/device_timeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "quartet/error.h"

namespace quartet {

std::string short_kernel_name(const std::string& demangled) {
  std::string name = demangled;
  // The parameter list: from the '(' that matches the final ')'.
  if (!name.empty() && name.back() == ')') {
    int depth = 0;
    for (std::size_t i = name.size(); i-- > 0;) {
      if (name[i] == ')') ++depth;
      if (name[i] == '(' && --depth == 0) {
        name.resize(i);
        break;
      }
    }
  }
  // A return type before the qualified name: the last space outside template brackets and
  // parentheses ("(anonymous namespace)" has one).
  int depth = 0;
  for (std::size_t i = name.size(); i-- > 0;) {
    if (name[i] == '>' || name[i] == ')') ++depth;
    if (name[i] == '<' || name[i] == '(') --depth;
    if (name[i] == ' ' && depth == 0) {
      name.erase(0, i + 1);
      break;
    }
  }
  return name;
}

namespace {

std::string entry_name(const DeviceActivity& a) {
  return a.kind == DeviceActivityKind::kernel ? short_kernel_name(a.name) : a.name;
}

}  // namespace

TimelineSummary summarize_timeline(const std::vector<DeviceActivity>& activities, const std::string& step_marker,
                                   std::size_t skip_steps) {
  if (activities.empty()) throw Error("timeline: no GPU activity was recorded");
  std::vector<std::size_t> markers;
  for (std::size_t i = 0; i < activities.size(); ++i) {
    const DeviceActivity& a = activities[i];
    if (a.end_ns < a.start_ns) {
      throw Error(fmt::format("timeline: activity {} ('{}') ends before it starts", i, a.name));
    }
    if (i > 0 && a.start_ns < activities[i - 1].start_ns) {
      throw Error(fmt::format("timeline: activity {} ('{}') starts before the one listed before it", i, a.name));
    }
    if (a.name.find(step_marker) != std::string::npos) markers.push_back(i);
  }
  if (markers.empty()) {
    throw Error(fmt::format("timeline: no activity is named like '{}', which ends each step", step_marker));
  }
  if (markers.size() <= skip_steps) {
    throw Error(fmt::format("timeline: {} steps recorded, and the first {} are to be left out", markers.size(),
                            skip_steps));
  }
  // The copies to the host right after the marker (the step's status read) are the step's too.
  for (std::size_t& m : markers) {
    while (m + 1 < activities.size() && activities[m + 1].kind == DeviceActivityKind::memcpy &&
           activities[m + 1].name == "memcpy device-to-host") {
      ++m;
    }
  }
  TimelineSummary s;
  for (const std::uint64_t bound : kIdleGapBoundsNs) s.idle_gaps.push_back({bound, 0, 0});
  s.idle_gaps.push_back({0, 0, 0});
  const auto record_gap = [&](std::uint64_t gap) {
    std::size_t c = 0;
    while (c + 1 < s.idle_gaps.size() && gap >= s.idle_gaps[c].below_ns) ++c;
    s.idle_gaps[c].gaps += 1;
    s.idle_gaps[c].idle_ns += gap;
  };
  std::map<std::pair<std::string, DeviceActivityKind>, TimelineEntry> entries;
  std::size_t first = 0;
  std::uint64_t last_step_end = 0;
  std::size_t skipped = 0;
  for (const std::size_t marker : markers) {
    if (marker < first) continue;  // a marker that a step's copies took in
    if (skipped < skip_steps) {
      ++skipped;
      first = marker + 1;
      continue;
    }
    TimelineStep step;
    step.start_ns = activities[first].start_ns;
    std::uint64_t covered = step.start_ns;
    for (std::size_t i = first; i <= marker; ++i) {
      const DeviceActivity& a = activities[i];
      TimelineEntry& e = entries[{entry_name(a), a.kind}];
      e.calls += 1;
      e.busy_ns += a.end_ns - a.start_ns;
      if (a.start_ns > covered) {
        e.idle_before_ns += a.start_ns - covered;
        record_gap(a.start_ns - covered);
      }
      if (a.end_ns > covered) step.busy_ns += a.end_ns - std::max(covered, a.start_ns);
      covered = std::max(covered, a.end_ns);
      (a.kind == DeviceActivityKind::kernel ? step.kernels
                                            : a.kind == DeviceActivityKind::memset ? step.memsets : step.memcpys) += 1;
    }
    step.end_ns = covered;
    if (!s.steps.empty() && step.start_ns > last_step_end) s.between_steps_idle_ns += step.start_ns - last_step_end;
    last_step_end = std::max(last_step_end, step.end_ns);
    s.steps.push_back(step);
    first = marker + 1;
  }
  for (auto& [key, e] : entries) {
    e.name = key.first;
    e.kind = key.second;
    s.entries.push_back(e);
  }
  std::stable_sort(s.entries.begin(), s.entries.end(),
                   [](const TimelineEntry& a, const TimelineEntry& b) { return a.busy_ns > b.busy_ns; });
  return s;
}

nlohmann::json timeline_summary_json(const TimelineSummary& s, std::size_t top) {
  const double steps = static_cast<double>(s.steps.size());
  const auto per_step_ms = [&](double ns) { return ns / 1e6 / steps; };
  double span = 0, busy = 0;
  std::int64_t kernels = 0, memsets = 0, memcpys = 0;
  for (const TimelineStep& step : s.steps) {
    span += static_cast<double>(step.end_ns - step.start_ns);
    busy += static_cast<double>(step.busy_ns);
    kernels += step.kernels;
    memsets += step.memsets;
    memcpys += step.memcpys;
  }
  const auto entry_json = [&](const TimelineEntry& e) {
    return nlohmann::json{{"name", e.name},
                          {"kind", device_activity_kind_name(e.kind)},
                          {"calls_per_step", static_cast<double>(e.calls) / steps},
                          {"ms_per_step", per_step_ms(static_cast<double>(e.busy_ns))},
                          {"idle_before_ms_per_step", per_step_ms(static_cast<double>(e.idle_before_ns))}};
  };
  nlohmann::json by_busy = nlohmann::json::array(), by_idle = nlohmann::json::array();
  for (std::size_t i = 0; i < std::min(top, s.entries.size()); ++i) by_busy.push_back(entry_json(s.entries[i]));
  std::vector<TimelineEntry> idle_order = s.entries;
  std::stable_sort(idle_order.begin(), idle_order.end(),
                   [](const TimelineEntry& a, const TimelineEntry& b) { return a.idle_before_ns > b.idle_before_ns; });
  for (std::size_t i = 0; i < std::min(top, idle_order.size()) && idle_order[i].idle_before_ns > 0; ++i) {
    by_idle.push_back(entry_json(idle_order[i]));
  }
  nlohmann::json gaps = nlohmann::json::array();
  for (const IdleGapClass& c : s.idle_gaps) {
    gaps.push_back({{"below_us", c.below_ns ? nlohmann::json(static_cast<double>(c.below_ns) / 1e3) : nlohmann::json()},
                    {"gaps_per_step", static_cast<double>(c.gaps) / steps},
                    {"ms_per_step", per_step_ms(static_cast<double>(c.idle_ns))}});
  }
  return {{"steps", s.steps.size()},
          {"span_ms_per_step", per_step_ms(span)},
          {"busy_ms_per_step", per_step_ms(busy)},
          {"idle_in_step_ms_per_step", per_step_ms(span - busy)},
          {"idle_between_steps_ms_per_step",
           s.steps.size() > 1 ? static_cast<double>(s.between_steps_idle_ns) / 1e6 / (steps - 1) : 0.0},
          {"kernels_per_step", static_cast<double>(kernels) / steps},
          {"memsets_per_step", static_cast<double>(memsets) / steps},
          {"memcpys_per_step", static_cast<double>(memcpys) / steps},
          {"idle_gaps_in_step", gaps},
          {"by_busy_time", by_busy},
          {"by_idle_before", by_idle}};
}

nlohmann::json chrome_trace(const std::vector<DeviceActivity>& activities) {
  nlohmann::json events = nlohmann::json::array();
  const std::uint64_t origin = activities.empty() ? 0 : activities.front().start_ns;
  for (const DeviceActivity& a : activities) {
    nlohmann::json e = {{"name", entry_name(a)},
                        {"cat", device_activity_kind_name(a.kind)},
                        {"ph", "X"},
                        {"ts", static_cast<double>(a.start_ns - origin) / 1e3},
                        {"dur", static_cast<double>(a.end_ns - a.start_ns) / 1e3},
                        {"pid", 0},
                        {"tid", a.stream},
                        {"args", {{"name", a.name}}}};
    if (a.bytes > 0) e["args"]["bytes"] = a.bytes;
    events.push_back(std::move(e));
  }
  return {{"traceEvents", events}, {"displayTimeUnit", "ns"}};
}

}  // namespace quartet
