#include "quartet/backend/tensor.h"

#include <fmt/format.h>

#include "quartet/error.h"

namespace quartet {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::u8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::u8: return "u8";
  }
  return "?";
}

std::string shape_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

Tensor::Tensor(std::shared_ptr<void> storage, Shape shape, DType dtype, Device device)
    : storage_(std::move(storage)), shape_(std::move(shape)), dtype_(dtype), device_(device) {}

std::int64_t Tensor::dim(int i) const {
  if (i < 0) i += ndim();
  if (i < 0 || i >= ndim()) throw Error(fmt::format("tensor of shape {} has no dimension {}", shape_string(shape_), i));
  return shape_[static_cast<std::size_t>(i)];
}

Tensor Tensor::reshaped(Shape shape) const {
  if (shape_numel(shape) != numel()) {
    throw Error(fmt::format("cannot view a tensor of shape {} as {}", shape_string(shape_), shape_string(shape)));
  }
  return Tensor(storage_, std::move(shape), dtype_, device_);
}

Tensor Tensor::view(std::int64_t offset, Shape shape) const {
  for (std::int64_t d : shape) {
    if (d < 0) throw Error(fmt::format("cannot view a tensor as shape {}", shape_string(shape)));
  }
  const std::int64_t n = shape_numel(shape);
  if (!defined() || offset < 0 || offset > numel() || n > numel() - offset) {
    throw Error(fmt::format("a view of {} elements at offset {} does not fit in a tensor of shape {}", n, offset,
                            shape_string(shape_)));
  }
  std::shared_ptr<void> at(storage_, static_cast<char*>(storage_.get()) + static_cast<std::size_t>(offset) * dtype_size(dtype_));
  return Tensor(std::move(at), std::move(shape), dtype_, device_);
}

void Tensor::expect(const char* what, const Shape& shape, DType dtype) const {
  if (!defined() || shape_ != shape || dtype_ != dtype) {
    throw Error(fmt::format("{}: expected a {} {} tensor, got {}", what, shape_string(shape), dtype_name(dtype),
                            defined() ? fmt::format("{} {}", shape_string(shape_), dtype_name(dtype_)) : "none"));
  }
}

void throw_tensor_access_error(const Tensor& t, DType wanted) {
  if (!t.defined()) throw Error("access to an undefined tensor");
  throw Error(fmt::format("host access as {} to a {} tensor of shape {} on the {}", dtype_name(wanted),
                          dtype_name(t.dtype()), shape_string(t.shape()), t.device() == Device::cpu ? "CPU" : "GPU"));
}

}  // namespace quartet
