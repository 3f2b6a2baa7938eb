// The NCCL communicator: collectives over device memory, queued behind the CUDA backend's work
// (no host wait), in place as the sharded optimizer lays its buffers out (NCCL's in-place
// reduce-scatter and all-gather: a rank's shard at rank * count).
//
// Every collective runs on a stream of its own (one stream: NCCL's operations on a communicator
// must not run concurrently, and one stream keeps them in issue order, the same on every rank).
// An event orders it after the backend's work queued before it. The backend's stream waits for
// it at once, except for the gradient buckets (reduce_range_to_owners): those overlap the rest
// of the backward pass, and the backend's stream waits for them in wait_range_reductions, before
// the optimizer reads the gradients.
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

#include <algorithm>
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
    // Non-blocking: no implicit ordering with a legacy default stream, only the events'.
    cuda_check(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    cuda_check(cudaEventCreateWithFlags(&work_queued_, cudaEventDisableTiming), "cudaEventCreate");
    cuda_check(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming), "cudaEventCreate");
  }

  ~NcclCommunicator() override {
    if (host_sums_ != nullptr) cudaFree(host_sums_);
    if (work_queued_ != nullptr) cudaEventDestroy(work_queued_);
    if (comm_done_ != nullptr) cudaEventDestroy(comm_done_);
    if (comm_ != nullptr) {
      // After a failure the peers may be gone: abort rather than wait for them.
      if (finished_) {
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
    if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
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
    after_queued_work();
    nccl_check(ncclAllReduce(data, data, count, nccl_type(type), ncclSum, comm_, comm_stream_), "all-reduce");
    backend_waits();
  }

  void reduce_scatter_sum(void* data, std::size_t shard_count, CommType type) override {
    check_sum(type);
    char* bytes = static_cast<char*>(data);
    void* mine = bytes + static_cast<std::size_t>(rank_) * shard_count * comm_type_size(type);
    after_queued_work();
    nccl_check(ncclReduceScatter(data, mine, shard_count, nccl_type(type), ncclSum, comm_, comm_stream_),
               "reduce-scatter");
    backend_waits();
  }

  // One in-place ncclReduce per shard the range touches, rooted at the shard's owner, in one
  // group. A ring reduce moves about as many bytes per link as the reduce-scatter's share of
  // the range; the buckets are far larger than NCCL's latency-bound sizes.
  void reduce_range_to_owners(void* data, std::size_t begin, std::size_t end, std::size_t shard_count,
                              CommType type) override {
    check_sum(type);
    const std::size_t total = shard_count * static_cast<std::size_t>(world_);
    if (begin > end || end > total) {
      throw Error(fmt::format("reduce_range_to_owners: range [{}, {}) outside the buffer of {} shards of {} elements",
                              begin, end, world_, shard_count));
    }
    if (begin == end) return;
    char* bytes = static_cast<char*>(data);
    const std::size_t element = comm_type_size(type);
    after_queued_work();
    nccl_check(ncclGroupStart(), "group start");
    for (int r = 0; r < world_; ++r) {
      const std::size_t lo = std::max(begin, static_cast<std::size_t>(r) * shard_count);
      const std::size_t hi = std::min(end, static_cast<std::size_t>(r + 1) * shard_count);
      if (lo >= hi) continue;
      void* part = bytes + lo * element;
      nccl_check(ncclReduce(part, part, hi - lo, nccl_type(type), ncclSum, r, comm_, comm_stream_), "reduce");
    }
    nccl_check(ncclGroupEnd(), "group end");
    // No wait here: the backward pass goes on while the bucket travels.
  }

  void wait_range_reductions() override { backend_waits(); }

  void gather_to_first(const void* mine, void* all, std::size_t shard_count, CommType type) override {
    const std::size_t shard_bytes = shard_count * comm_type_size(type);
    after_queued_work();
    if (rank_ == 0 && shard_bytes > 0 && all != mine) {
      cuda_check(cudaMemcpyAsync(all, mine, shard_bytes, cudaMemcpyDeviceToDevice, comm_stream_), "copy");
    }
    nccl_check(ncclGroupStart(), "group start");
    if (rank_ == 0) {
      for (int r = 1; r < world_; ++r) {
        void* into = static_cast<char*>(all) + static_cast<std::size_t>(r) * shard_bytes;
        nccl_check(ncclRecv(into, shard_count, nccl_type(type), r, comm_, comm_stream_), "receive");
      }
    } else {
      nccl_check(ncclSend(mine, shard_count, nccl_type(type), 0, comm_, comm_stream_), "send");
    }
    nccl_check(ncclGroupEnd(), "group end");
    backend_waits();
  }

  void all_gather(void* data, std::size_t shard_count, CommType type) override {
    char* bytes = static_cast<char*>(data);
    const void* mine = bytes + static_cast<std::size_t>(rank_) * shard_count * comm_type_size(type);
    after_queued_work();
    nccl_check(ncclAllGather(mine, data, shard_count, nccl_type(type), comm_, comm_stream_), "all-gather");
    backend_waits();
  }

  void broadcast(void* data, std::size_t count, CommType type, int root) override {
    if (root < 0 || root >= world_) throw Error(fmt::format("broadcast from rank {} of {}", root, world_));
    after_queued_work();
    nccl_check(ncclBroadcast(data, data, count, nccl_type(type), root, comm_, comm_stream_), "broadcast");
    backend_waits();
  }

  void all_reduce_sum_host(double* values, std::size_t count) override {
    if (count > kHostSlots) throw Error(fmt::format("all_reduce_sum_host: at most {} values, got {}", kHostSlots, count));
    after_queued_work();
    cuda_check(cudaMemcpyAsync(host_sums_, values, count * sizeof(double), cudaMemcpyHostToDevice, comm_stream_), "copy");
    nccl_check(ncclAllReduce(host_sums_, host_sums_, count, ncclFloat64, ncclSum, comm_, comm_stream_), "all-reduce");
    cuda_check(cudaMemcpyAsync(values, host_sums_, count * sizeof(double), cudaMemcpyDeviceToHost, comm_stream_), "copy");
    cuda_check(cudaStreamSynchronize(comm_stream_), "synchronize");
  }

  void finish() override {
    cuda_check(cudaStreamSynchronize(stream_), "synchronize");
    cuda_check(cudaStreamSynchronize(comm_stream_), "synchronize");
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

  // The communication stream waits for the backend's work queued so far.
  void after_queued_work() {
    cuda_check(cudaEventRecord(work_queued_, stream_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(comm_stream_, work_queued_, 0), "cudaStreamWaitEvent");
  }
  // The backend's work queued from now on waits for the collectives queued so far.
  void backend_waits() {
    cuda_check(cudaEventRecord(comm_done_, comm_stream_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(stream_, comm_done_, 0), "cudaStreamWaitEvent");
  }

  cudaStream_t stream_ = nullptr;       // the backend's
  cudaStream_t comm_stream_ = nullptr;  // the collectives'
  cudaEvent_t work_queued_ = nullptr, comm_done_ = nullptr;
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
