# Numerics must be bit-identical between the CPU reference and the CUDA kernels, so the
# compiler may never fuse a*b+c into an FMA (device code uses __fmul_rn/__fadd_rn, which nvcc
# never contracts) and never reassociate. -ffp-contract=off is applied to every target that
# links quartet_numerics (it is PUBLIC there); -ffast-math must never be used.
add_library(quartet_compile_options INTERFACE)
target_compile_options(quartet_compile_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off -fno-fast-math -Wall -Wextra -Wpedantic -Wshadow -Wno-missing-field-initializers>)

# Fuzzing (tests/fuzz, scripts/fuzz.sh): libFuzzer targets for every reader of untrusted bytes.
# Everything is built with AddressSanitizer and UBSan (a report aborts, so the fuzzer records
# it) plus libFuzzer's coverage; only the fuzz targets link libFuzzer's main. Clang only: GCC
# has no libFuzzer. Use the `fuzz` preset (CUDA, tests and benchmarks off).
option(QUARTET_FUZZ "Build the libFuzzer targets in tests/fuzz (clang only)" OFF)
if(QUARTET_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "QUARTET_FUZZ needs clang (libFuzzer); configure with -DCMAKE_CXX_COMPILER=clang++ "
                        "or the `fuzz` preset (found ${CMAKE_CXX_COMPILER_ID})")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=address,undefined)
endif()
