# Every dependency is a Debian package (scripts/install-deps.sh installs them).
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(fmt REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(ZLIB REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)

# CPU matrix products go through CBLAS; OpenBLAS is preferred, any CBLAS works.
set(BLA_VENDOR OpenBLAS)
find_package(BLAS)
if(NOT BLAS_FOUND)
  unset(BLA_VENDOR)
  find_package(BLAS REQUIRED)
endif()
find_path(QUARTET_CBLAS_INCLUDE_DIR cblas.h
  PATH_SUFFIXES openblas openblas-pthread x86_64-linux-gnu/openblas-pthread
  REQUIRED)

# The CUDA toolkit is optional. Its cuRAND headers are the known-answer oracle for our
# Philox implementation; CUDA kernels themselves arrive with the CUDA backend.
find_package(CUDAToolkit QUIET)
if(CUDAToolkit_FOUND)
  message(STATUS "quartet: CUDA toolkit ${CUDAToolkit_VERSION} found at ${CUDAToolkit_BIN_DIR}")
else()
  message(STATUS "quartet: no CUDA toolkit found; building the CPU backend only")
endif()

if(QUARTET_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(QUARTET_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
