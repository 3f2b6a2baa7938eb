#include "quartet/train/optimizer.h"

#include <utility>

namespace quartet {

AdamW::AdamW(Backend& backend, LlamaModel& model) : backend_(backend), model_(model) {
  const FlatParameters& flat = model.flat();
  m_ = backend.zeros(flat.values.shape(), flat.values.dtype());
  v_ = backend.zeros(flat.values.shape(), flat.values.dtype());
  const std::vector<Parameter>& params = std::as_const(model).parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const ParameterSegment& seg = flat.segments[i];
    state_.m.push_back(m_.view(seg.offset, params[i].value.shape()));
    state_.v.push_back(v_.view(seg.offset, params[i].value.shape()));
  }
}

void AdamW::step(const AdamWStep& hyper, Tensor& status) {
  FlatParameters& flat = model_.flat();
  backend_.adamw_step(flat.values, flat.values_bf16, flat.grads, m_, v_, flat.segments, hyper, status);
  model_.bf16_weights_written();
}

}  // namespace quartet
