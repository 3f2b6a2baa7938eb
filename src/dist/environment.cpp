#include "quartet/dist/environment.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string_view>

#include "quartet/error.h"

namespace quartet {

namespace {

// A whole decimal number in [lo, hi], all of the value (no sign games, no trailing text).
int parse_int(const std::string& name, const std::string& value, long lo, long hi, const std::string& expected) {
  long v = 0;
  const char* begin = value.data();
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(begin, end, v);
  if (value.empty() || ec != std::errc() || ptr != end || v < lo || v > hi) {
    throw Error(fmt::format("{}='{}' is not valid: expected {}", name, value, expected));
  }
  return static_cast<int>(v);
}

}  // namespace

std::string DistEnvironment::endpoint() const {
  // An IPv6 literal needs brackets before the port.
  if (master_addr.find(':') != std::string::npos) return fmt::format("[{}]:{}", master_addr, master_port);
  return fmt::format("{}:{}", master_addr, master_port);
}

std::optional<DistEnvironment> read_dist_environment(
    const std::function<std::optional<std::string>(const std::string&)>& get) {
  const std::optional<std::string> rank = get("RANK"), world = get("WORLD_SIZE"), local = get("LOCAL_RANK");
  if (!rank && !world && !local) return std::nullopt;
  const auto require = [](const char* name, const std::optional<std::string>& v) {
    if (!v) {
      throw Error(fmt::format(
          "{} is not set, but some of RANK, WORLD_SIZE, LOCAL_RANK are: a multi-process run needs all three "
          "(torchrun sets them; under Slurm export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS "
          "LOCAL_RANK=$SLURM_LOCALID; see docs/multi-gpu.md)",
          name));
    }
    return *v;
  };
  DistEnvironment env;
  constexpr long kMaxRanks = 1L << 20;
  env.world_size = parse_int("WORLD_SIZE", require("WORLD_SIZE", world), 1, kMaxRanks, "a number of processes >= 1");
  env.rank = parse_int("RANK", require("RANK", rank), 0, env.world_size - 1,
                       fmt::format("a rank in 0..{} (WORLD_SIZE is {})", env.world_size - 1, env.world_size));
  const std::optional<std::string> local_world = get("LOCAL_WORLD_SIZE");
  env.local_world_size = local_world ? parse_int("LOCAL_WORLD_SIZE", *local_world, 1, env.world_size,
                                                 fmt::format("a number of processes on this node in 1..{} (WORLD_SIZE)",
                                                             env.world_size))
                                     : env.world_size;
  env.local_rank = parse_int(
      "LOCAL_RANK", require("LOCAL_RANK", local), 0, env.local_world_size - 1,
      local_world ? fmt::format("a rank on this node in 0..{} (LOCAL_WORLD_SIZE is {})", env.local_world_size - 1,
                                env.local_world_size)
                  : fmt::format("a rank on this node in 0..{} (below WORLD_SIZE)", env.world_size - 1));
  const std::optional<std::string> addr = get("MASTER_ADDR"), port = get("MASTER_PORT");
  if (env.world_size > 1 || addr || port) {
    if (!addr || addr->empty()) {
      throw Error(fmt::format("MASTER_ADDR is not set: with WORLD_SIZE={} every rank needs the address of rank 0's "
                              "rendezvous (e.g. MASTER_ADDR=127.0.0.1 on one node)",
                              env.world_size));
    }
    if (!port) {
      throw Error(fmt::format("MASTER_PORT is not set: with WORLD_SIZE={} every rank needs the port of rank 0's "
                              "rendezvous (e.g. MASTER_PORT=29500)",
                              env.world_size));
    }
    env.master_addr = *addr;
    env.master_port = parse_int("MASTER_PORT", *port, 1, 65535, "a TCP port in 1..65535");
  }
  return env;
}

std::optional<DistEnvironment> dist_environment_from_process() {
  return read_dist_environment([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
}

double dist_timeout_seconds(double fallback_seconds) {
  const char* v = std::getenv("QUARTET_DIST_TIMEOUT");
  if (v == nullptr) return fallback_seconds;
  char* end = nullptr;
  const double seconds = std::strtod(v, &end);
  if (*v == '\0' || *end != '\0' || !(seconds > 0) || !std::isfinite(seconds)) {
    throw Error(fmt::format("QUARTET_DIST_TIMEOUT='{}' is not valid: expected a number of seconds > 0", std::string(v)));
  }
  return seconds;
}

}  // namespace quartet
