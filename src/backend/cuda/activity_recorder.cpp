// cuda_activity_start/stop (quartet/backend/cuda.h) over CUPTI's activity API. CUPTI is opened
// with dlopen when a recording starts, so that the program neither links it nor needs it to run:
// only the bench's timeline asks for it. Its records carry the device's start and end of each
// kernel, memset and copy as they ran, concurrent kernels included.
#include <cupti.h>
#include <fmt/format.h>
#include <cxxabi.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet {

namespace {

// The CUPTI entry points used, looked up once.
struct Cupti {
  decltype(&cuptiGetVersion) get_version = nullptr;
  decltype(&cuptiGetResultString) result_string = nullptr;
  decltype(&cuptiActivityRegisterCallbacks) register_callbacks = nullptr;
  decltype(&cuptiActivityEnable) enable = nullptr;
  decltype(&cuptiActivityDisable) disable = nullptr;
  decltype(&cuptiActivityFlushAll) flush_all = nullptr;
  decltype(&cuptiActivityGetNextRecord) next_record = nullptr;
  decltype(&cuptiActivityGetNumDroppedRecords) dropped_records = nullptr;
  decltype(&cuptiFinalize) finalize = nullptr;
};

const Cupti& load_cupti() {
  static const Cupti cupti = [] {
    std::vector<std::string> candidates;
    if (const char* path = std::getenv("QUARTET_CUPTI"); path != nullptr && *path != '\0') {
      candidates = {path};
    } else {
      candidates = {"libcupti.so.13", "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so.13",
                    "/usr/local/cuda/lib64/libcupti.so.13", "/usr/local/cuda/lib/libcupti.so.13",
                    "/usr/local/cuda/targets/x86_64-linux/lib/libcupti.so.13"};
    }
    void* handle = nullptr;
    std::string tried;
    for (const std::string& c : candidates) {
      handle = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle != nullptr) break;
      const char* why = dlerror();
      tried += fmt::format("{}{} ({})", tried.empty() ? "" : "; ", c, why != nullptr ? why : "not loadable");
    }
    if (handle == nullptr) {
      throw Error(fmt::format("recording GPU activity needs CUPTI (libcupti.so.13, part of the CUDA toolkit); tried {} "
                              "(set QUARTET_CUPTI to its path)",
                              tried));
    }
    Cupti c;
    const auto bind = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, name));
      if (fn == nullptr) throw Error(fmt::format("CUPTI: the library has no {}", name));
    };
    bind(c.get_version, "cuptiGetVersion");
    bind(c.result_string, "cuptiGetResultString");
    bind(c.register_callbacks, "cuptiActivityRegisterCallbacks");
    bind(c.enable, "cuptiActivityEnable");
    bind(c.disable, "cuptiActivityDisable");
    bind(c.flush_all, "cuptiActivityFlushAll");
    bind(c.next_record, "cuptiActivityGetNextRecord");
    bind(c.dropped_records, "cuptiActivityGetNumDroppedRecords");
    bind(c.finalize, "cuptiFinalize");
    std::uint32_t version = 0;
    if (c.get_version(&version) != CUPTI_SUCCESS) throw Error("CUPTI: the library does not tell its API version");
    // The record layouts read below are this header's; another version's library may write others.
    if (version != CUPTI_API_VERSION) {
      throw Error(fmt::format("CUPTI: the library found has API version {}, this program reads version {}'s records "
                              "(set QUARTET_CUPTI to the libcupti of the CUDA toolkit it was built with)",
                              version, CUPTI_API_VERSION));
    }
    return c;
  }();
  return cupti;
}

void check(const Cupti& cupti, CUptiResult result, const char* what) {
  if (result == CUPTI_SUCCESS) return;
  const char* text = "unknown error";
  cupti.result_string(result, &text);
  throw Error(fmt::format("CUPTI: {} failed: {}", what, text));
}

std::string demangled(const char* name) {
  if (name == nullptr) return "(unnamed kernel)";
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(name);
}

const char* copy_direction(std::uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "memcpy host-to-device";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "memcpy device-to-host";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "memcpy device-to-device";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return "memcpy host-to-host";
    default: return "memcpy";
  }
}

// What the buffer callbacks fill; CUPTI calls them from its own thread.
struct Recording {
  std::mutex mutex;
  bool active = false;
  std::vector<DeviceActivity> activities;
  std::size_t dropped = 0;
  std::size_t untimed = 0;  // records CUPTI could not time (start and end 0)
};
Recording g_recording;

constexpr std::size_t kBufferBytes = 8u << 20;

void CUPTIAPI buffer_requested(std::uint8_t** buffer, std::size_t* size, std::size_t* max_records) {
  *buffer = static_cast<std::uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer != nullptr ? kBufferBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, std::uint32_t, std::uint8_t* buffer, std::size_t, std::size_t valid) {
  const Cupti& cupti = load_cupti();
  std::vector<DeviceActivity> got;
  CUpti_Activity* record = nullptr;
  while (cupti.next_record(buffer, valid, &record) == CUPTI_SUCCESS) {
    DeviceActivity a;
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
      case CUPTI_ACTIVITY_KIND_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
        a = {DeviceActivityKind::kernel, demangled(k->name), k->start, k->end, k->streamId, 0};
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
        a = {DeviceActivityKind::memset, "memset", m->start, m->end, m->streamId, m->bytes};
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
        a = {DeviceActivityKind::memcpy, copy_direction(m->copyKind), m->start, m->end, m->streamId, m->bytes};
        break;
      }
      default: continue;
    }
    got.push_back(std::move(a));
  }
  const std::size_t untimed = static_cast<std::size_t>(std::count_if(
      got.begin(), got.end(), [](const DeviceActivity& a) { return a.start_ns == 0 || a.end_ns < a.start_ns; }));
  std::size_t dropped = 0;
  cupti.dropped_records(nullptr, 0, &dropped);
  std::free(buffer);
  std::lock_guard<std::mutex> lock(g_recording.mutex);
  if (!g_recording.active) return;  // a late buffer of an earlier recording
  g_recording.dropped += dropped;
  g_recording.untimed += untimed;
  for (DeviceActivity& a : got) {
    if (a.start_ns != 0 && a.end_ns >= a.start_ns) g_recording.activities.push_back(std::move(a));
  }
}

constexpr CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMSET,
                                         CUPTI_ACTIVITY_KIND_MEMCPY};

// Detaches CUPTI from the process (after the device's work and the records are in): the
// measurements after a recording run without it. The next recording attaches it again.
void detach(const Cupti& cupti) {
  for (CUpti_ActivityKind kind : kKinds) cupti.disable(kind);
  cupti.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  cupti.finalize();
}

}  // namespace

void cuda_activity_check() { load_cupti(); }

void cuda_activity_start() {
  const Cupti& cupti = load_cupti();
  {
    std::lock_guard<std::mutex> lock(g_recording.mutex);
    if (g_recording.active) throw Error("cuda_activity_start: a recording is already running");
  }
  // Work queued before the start is not the caller's to see.
  QUARTET_CUDA_CHECK(cudaDeviceSynchronize());
  check(cupti, cupti.register_callbacks(buffer_requested, buffer_completed), "registering the buffer callbacks");
  {
    std::lock_guard<std::mutex> lock(g_recording.mutex);
    g_recording.active = true;
    g_recording.activities.clear();
    g_recording.dropped = 0;
    g_recording.untimed = 0;
  }
  try {
    for (CUpti_ActivityKind kind : kKinds) check(cupti, cupti.enable(kind), "enabling an activity kind");
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(g_recording.mutex);
      g_recording.active = false;
    }
    detach(cupti);
    throw;
  }
}

std::vector<DeviceActivity> cuda_activity_stop() {
  const Cupti& cupti = load_cupti();
  {
    std::lock_guard<std::mutex> lock(g_recording.mutex);
    if (!g_recording.active) throw Error("cuda_activity_stop: no recording is running (call cuda_activity_start first)");
  }
  const cudaError_t synced = cudaDeviceSynchronize();
  // A forced flush returns every buffer through the completion callback before it returns.
  detach(cupti);
  std::size_t dropped_unreturned = 0;
  cupti.dropped_records(nullptr, 0, &dropped_unreturned);
  std::lock_guard<std::mutex> lock(g_recording.mutex);
  g_recording.active = false;
  QUARTET_CUDA_CHECK(synced);
  if (g_recording.dropped + dropped_unreturned > 0) {
    throw Error(fmt::format("CUPTI dropped {} activity records (out of buffer space): the timeline is incomplete",
                            g_recording.dropped + dropped_unreturned));
  }
  if (g_recording.untimed > 0) {
    throw Error(fmt::format("CUPTI could not time {} of the recorded kernels, memsets and copies (start and end 0: it "
                            "ran short of device memory for its records): the timeline is incomplete",
                            g_recording.untimed));
  }
  std::vector<DeviceActivity> out = std::move(g_recording.activities);
  g_recording.activities.clear();
  std::stable_sort(out.begin(), out.end(),
                   [](const DeviceActivity& a, const DeviceActivity& b) { return a.start_ns < b.start_ns; });
  return out;
}

}  // namespace quartet
