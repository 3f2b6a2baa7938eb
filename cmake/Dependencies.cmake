# Every dependency is a Debian package (scripts/install-deps.sh installs them).
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(fmt REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(ZLIB REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)  # SHA-256 of corpus files (quartet prepare)
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)

# CPU matrix products go through CBLAS. OpenBLAS built with OpenMP is preferred: it shares the
# OpenMP thread pool with our own parallel loops, where the pthread build would run a second
# pool competing for the same cores (measured: a quarter of a training step spent spinning
# and yielding on 2 cores). Any other CBLAS works too.
add_library(quartet_blas INTERFACE)
find_library(QUARTET_OPENBLAS_OPENMP NAMES openblas
  PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
if(QUARTET_OPENBLAS_OPENMP)
  message(STATUS "quartet: BLAS is OpenBLAS (OpenMP threads): ${QUARTET_OPENBLAS_OPENMP}")
  target_link_libraries(quartet_blas INTERFACE ${QUARTET_OPENBLAS_OPENMP})
  find_path(QUARTET_CBLAS_INCLUDE_DIR cblas.h
    PATHS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
else()
  set(BLA_VENDOR OpenBLAS)
  find_package(BLAS)
  if(NOT BLAS_FOUND)
    unset(BLA_VENDOR)
    find_package(BLAS REQUIRED)
  endif()
  message(STATUS "quartet: BLAS is ${BLAS_LIBRARIES}")
  target_link_libraries(quartet_blas INTERFACE BLAS::BLAS)
endif()
find_path(QUARTET_CBLAS_INCLUDE_DIR cblas.h
  PATH_SUFFIXES openblas openblas-openmp openblas-pthread ${CMAKE_LIBRARY_ARCHITECTURE}/openblas-pthread
  REQUIRED)

# The CUDA toolkit is optional (cmake/Cuda.cmake). Its cuRAND headers are also the
# known-answer oracle for our Philox implementation.
find_package(CUDAToolkit QUIET)

if(QUARTET_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(QUARTET_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
