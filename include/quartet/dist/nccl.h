// The NCCL communicator (GPU runs): collectives over device memory, queued on the CUDA
// backend's stream. NCCL's unique id travels over the rendezvous; its connections then carry
// a PeerWatch (dist/peer_watch.h), which stops this process with a message when another rank
// is lost, since a rank blocked in an NCCL collective would otherwise wait forever.
#pragma once

#include <memory>

namespace quartet {

class Backend;
class Communicator;
class Rendezvous;

// True when this build has the NCCL communicator.
bool nccl_built();
// Throws Error when the build has no NCCL (or no CUDA backend), naming why.
std::unique_ptr<Communicator> make_nccl_communicator(Backend& cuda_backend, std::unique_ptr<Rendezvous> rendezvous);

}  // namespace quartet
