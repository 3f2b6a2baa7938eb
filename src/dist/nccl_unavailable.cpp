// The NCCL communicator's entry points in a build without it (no CUDA backend, or no NCCL
// found at configure time).
#include "quartet/dist/communicator.h"
#include "quartet/dist/nccl.h"
#include "quartet/dist/rendezvous.h"
#include "quartet/error.h"

namespace quartet {

bool nccl_built() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(Backend&, std::unique_ptr<Rendezvous>) {
  throw Error(
      "this build of quartet has no NCCL communicator, so it cannot train on several GPUs: build with the CUDA "
      "toolkit and NCCL (nccl.h, libnccl) found, or train several CPU processes with --device cpu");
}

}  // namespace quartet
