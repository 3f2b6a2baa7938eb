// A tensor is a shape, an element type and a buffer owned by a backend (host memory for the
// CPU backend, device memory for the CUDA backend). The model and the trainer only pass
// tensors to backend operations; they never touch device memory themselves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace quartet {

enum class DType : std::uint8_t { f32, f64, bf16, i32, u8 };
enum class Device : std::uint8_t { cpu, cuda };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

using Shape = std::vector<std::int64_t>;
std::string shape_string(const Shape& shape);
std::int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<void> storage, Shape shape, DType dtype, Device device);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  std::int64_t dim(int i) const;
  std::int64_t numel() const { return shape_numel(shape_); }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  void* raw() { return storage_.get(); }
  const void* raw() const { return storage_.get(); }

  // Typed access for host tensors; throws Error on a dtype or device mismatch.
  template <class T>
  T* data();
  template <class T>
  const T* data() const;

  // The same buffer seen with another shape of the same element count.
  Tensor reshaped(Shape shape) const;
  // Elements [offset, offset + numel(shape)) of this tensor's buffer seen as a tensor of
  // `shape` (same dtype and device; the view keeps the whole buffer alive). Throws Error when
  // the range is outside the tensor.
  Tensor view(std::int64_t offset, Shape shape) const;

  // "name: expected [a, b] f32, got [c, d] bf16" style checks for operation arguments.
  void expect(const char* what, const Shape& shape, DType dtype) const;

 private:
  template <class T>
  void check_access() const;

  std::shared_ptr<void> storage_;
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<double>() { return DType::f64; }
template <>
constexpr DType dtype_of<std::uint16_t>() { return DType::bf16; }
template <>
constexpr DType dtype_of<std::int32_t>() { return DType::i32; }
template <>
constexpr DType dtype_of<std::uint8_t>() { return DType::u8; }

void throw_tensor_access_error(const Tensor& t, DType wanted);

template <class T>
void Tensor::check_access() const {
  if (dtype_ != dtype_of<T>() || device_ != Device::cpu || !storage_) throw_tensor_access_error(*this, dtype_of<T>());
}

template <class T>
T* Tensor::data() {
  check_access<T>();
  return static_cast<T*>(storage_.get());
}

template <class T>
const T* Tensor::data() const {
  check_access<T>();
  return static_cast<const T*>(storage_.get());
}

}  // namespace quartet
