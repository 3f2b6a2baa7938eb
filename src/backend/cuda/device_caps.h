// What the current device can run, asked of the driver once per process.
#pragma once

namespace quartet::cuda {

// wgmma needs an sm_90 device (the sm_90a code): not Blackwell, whose code has no wgmma.
bool device_has_wgmma();

// The current device's streaming multiprocessors: a persistent grid's natural size.
int multiprocessors();

}  // namespace quartet::cuda
