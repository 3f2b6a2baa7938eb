// What the C interface needs from a device beyond the Backend interface: choosing the device
// a call runs on, checking that caller pointers live where the context does, and ordering the
// backend's work after (and before) the caller's work on the caller's stream. A CPU-only build
// gets the version without CUDA (device_bridge_none.cpp), so the CPU libraries never link it.
#pragma once

#include <functional>
#include <memory>

#include "quartet/backend/backend.h"

namespace quartet::c_api {

// Throws Error when the build has no backend for `device` or the index names no device.
std::unique_ptr<Backend> make_device_backend(Device device, int index);

// Throws Error naming `what` when `pointer` is not memory of the context's device (a host
// pointer given to a CUDA context, or memory of another GPU). Host pointers cannot be told
// from other host memory, so on the CPU this checks nothing beyond null.
void check_device_pointer(Device device, int index, const void* pointer, const char* what);

// Runs `work` with `index` as the current device, ordered after the work queued on `stream`
// before the call, and with the caller's later work on `stream` ordered after it. The stream
// must be null on the CPU.
void run_on_stream(Device device, int index, void* stream, const std::function<void()>& work);

}  // namespace quartet::c_api
