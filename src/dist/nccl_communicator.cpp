// The NCCL communicator: collectives over device memory, queued on the CUDA backend's stream
// behind the backward pass (no host wait), in place as the sharded optimizer lays its buffers
// out (NCCL's in-place reduce-scatter and all-gather: a rank's shard at rank * count).
//
// Deterministic: NCCL's sums follow its algorithm and the ring or tree it builds, the same on
// every run of the same machines and world size; NCCL_ALGO and NCCL_PROTO pin the choice
// (docs/multi-gpu.md).
//
// Failure: NCCL's collectives wait for their peers without a timeout, so a PeerWatch keeps the
// rendezvous' connections and, when a rank is lost, ends this process with a message naming it
// (the launcher, torchrun or Slurm then stops the job).
#include <cuda_runtime.h>
#include <nccl.h>

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "quartet/backend/cuda.h"
#include "quartet/dist/communicator.h"
#include "quartet/dist/nccl.h"
#include "quartet/dist/peer_watch.h"
#include "quartet/dist/rendezvous.h"
#include "quartet/error.h"

namespace quartet {

bool nccl_built() { return true; }

namespace {

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress) {
    throw Error(fmt::format("NCCL {} failed: {} ({})", what, ncclGetErrorString(r), ncclGetLastError(nullptr)));
  }
}

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(fmt::format("CUDA {} failed: {}", what, cudaGetErrorString(e)));
}

ncclDataType_t nccl_type(CommType t) {
  switch (t) {
    case CommType::f32: return ncclFloat32;
    case CommType::f64: return ncclFloat64;
    case CommType::bf16: return ncclBfloat16;
    case CommType::u8: return ncclUint8;
  }
  return ncclUint8;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Backend& backend, std::unique_ptr<Rendezvous> rendezvous) {
    stream_ = static_cast<cudaStream_t>(cuda_backend_stream(backend));
    rank_ = rendezvous->rank();
    world_ = rendezvous->world_size();
    ncclUniqueId id{};
    if (rank_ == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    const std::string blob =
        rendezvous->broadcast(rank_ == 0 ? std::string(reinterpret_cast<const char*>(&id), sizeof(id)) : std::string());
    if (blob.size() != sizeof(id)) throw Error("rank 0 sent an NCCL unique id of the wrong size");
    std::memcpy(&id, blob.data(), sizeof(id));
    // Watching before NCCL's own set-up, which also waits for every rank.
    const int rank = rank_;
    watch_ = std::make_unique<PeerWatch>(std::move(rendezvous), [rank](const std::string& why) {
      std::fprintf(stderr, "quartet: error: rank %d: %s; stopping\n", rank, why.c_str());
      std::fflush(stderr);
      std::_Exit(1);  // the main thread may be blocked in a collective that never ends
    });
    nccl_check(ncclCommInitRank(&comm_, world_, id, rank_), "ncclCommInitRank");
    cuda_check(cudaMalloc(&host_sums_, kHostSlots * sizeof(double)), "cudaMalloc");
  }

  ~NcclCommunicator() override {
    if (host_sums_ != nullptr) cudaFree(host_sums_);
    if (comm_ != nullptr) {
      // After a failure the peers may be gone: abort rather than wait for them.
      if (finished_) {
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  std::string name() const override {
    int version = 0;
    ncclGetVersion(&version);
    return fmt::format("NCCL {}", version);
  }

  void all_reduce_sum(void* data, std::size_t count, CommType type) override {
    check_sum(type);
    nccl_check(ncclAllReduce(data, data, count, nccl_type(type), ncclSum, comm_, stream_), "all-reduce");
  }

  void reduce_scatter_sum(void* data, std::size_t shard_count, CommType type) override {
    check_sum(type);
    char* bytes = static_cast<char*>(data);
    void* mine = bytes + static_cast<std::size_t>(rank_) * shard_count * comm_type_size(type);
    nccl_check(ncclReduceScatter(data, mine, shard_count, nccl_type(type), ncclSum, comm_, stream_), "reduce-scatter");
  }

  void all_gather(void* data, std::size_t shard_count, CommType type) override {
    char* bytes = static_cast<char*>(data);
    const void* mine = bytes + static_cast<std::size_t>(rank_) * shard_count * comm_type_size(type);
    nccl_check(ncclAllGather(mine, data, shard_count, nccl_type(type), comm_, stream_), "all-gather");
  }

  void broadcast(void* data, std::size_t count, CommType type, int root) override {
    if (root < 0 || root >= world_) throw Error(fmt::format("broadcast from rank {} of {}", root, world_));
    nccl_check(ncclBroadcast(data, data, count, nccl_type(type), root, comm_, stream_), "broadcast");
  }

  void all_reduce_sum_host(double* values, std::size_t count) override {
    if (count > kHostSlots) throw Error(fmt::format("all_reduce_sum_host: at most {} values, got {}", kHostSlots, count));
    cuda_check(cudaMemcpyAsync(host_sums_, values, count * sizeof(double), cudaMemcpyHostToDevice, stream_), "copy");
    nccl_check(ncclAllReduce(host_sums_, host_sums_, count, ncclFloat64, ncclSum, comm_, stream_), "all-reduce");
    cuda_check(cudaMemcpyAsync(values, host_sums_, count * sizeof(double), cudaMemcpyDeviceToHost, stream_), "copy");
    cuda_check(cudaStreamSynchronize(stream_), "synchronize");
  }

  void finish() override {
    cuda_check(cudaStreamSynchronize(stream_), "synchronize");
    watch_->finish();
    finished_ = true;
  }

 private:
  static constexpr std::size_t kHostSlots = 64;

  static void check_sum(CommType type) {
    if (type != CommType::f32 && type != CommType::f64) {
      throw Error(fmt::format("sums are over f32 or f64 elements, not {}", comm_type_name(type)));
    }
  }

  cudaStream_t stream_ = nullptr;
  int rank_ = 0, world_ = 1;
  ncclComm_t comm_ = nullptr;
  double* host_sums_ = nullptr;
  std::unique_ptr<PeerWatch> watch_;
  bool finished_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Backend& cuda_backend, std::unique_ptr<Rendezvous> rendezvous) {
  return std::make_unique<NcclCommunicator>(cuda_backend, std::move(rendezvous));
}

}  // namespace quartet
