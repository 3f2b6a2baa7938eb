# Numerics must be bit-identical between the CPU reference and the CUDA kernels, so the
# compiler may never fuse a*b+c into an FMA (device code uses __fmul_rn/__fadd_rn, which nvcc
# never contracts) and never reassociate. -ffp-contract=off is applied to every target that
# links quartet_numerics (it is PUBLIC there); -ffast-math must never be used.
add_library(quartet_compile_options INTERFACE)
target_compile_options(quartet_compile_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off -fno-fast-math -Wall -Wextra -Wpedantic -Wshadow -Wno-missing-field-initializers>)
